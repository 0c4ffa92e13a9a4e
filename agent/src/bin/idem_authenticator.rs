//! `idem-authenticator`: enroll this machine as a user's authenticator device on a tenant
//! host, and approve QR login challenges with it, as the mobile app would.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use agent::authenticator::{self, Keyring};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "idem-authenticator", version, about)]
struct Cli {
    /// The file holding the enrolled devices' keys (created 0600).
    #[arg(long, env = "IDEM_AUTHENTICATOR_KEYS", global = true)]
    keys: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Emails a one-time onboarding code to EMAIL (if it may onboard on that tenant).
    RequestCode {
        /// The tenant's URL, e.g. http://acme.localhost:8080
        url: String,
        email: String,
    },
    /// Enrolls a new device for EMAIL. Without --code, asks for a code by email first and
    /// reads it from standard input.
    Enroll {
        url: String,
        email: String,
        #[arg(long)]
        code: Option<String>,
        /// How the device shows in the portal.
        #[arg(long, default_value = "idem-authenticator")]
        device_name: String,
    },
    /// Approves the login challenge of a QR code (`idem://approve?...`).
    Approve { qr: String },
    /// Lists the enrolled devices.
    Devices,
}

fn default_keys() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".config/idem/authenticator.json")
}

async fn run(cli: Cli) -> Result<(), authenticator::Error> {
    let keys = cli.keys.unwrap_or_else(default_keys);
    match cli.command {
        Command::RequestCode { url, email } => {
            authenticator::request_code(&url, &email).await?;
            eprintln!("If {email} may onboard there, a code is on its way.");
        }
        Command::Enroll {
            url,
            email,
            code,
            device_name,
        } => {
            let mut keyring = Keyring::load(&keys)?;
            let code = match code {
                Some(code) => code,
                None => {
                    authenticator::request_code(&url, &email).await?;
                    eprint!("A code was sent to {email}. Code: ");
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .map_err(|e| authenticator::Error::Usage(e.to_string()))?;
                    line
                }
            };
            let device =
                authenticator::enroll(&mut keyring, &url, &email, &code, &device_name).await?;
            keyring.save(&keys)?;
            println!(
                "enrolled device {} for {} on {}",
                device.device_id, device.email, device.host
            );
        }
        Command::Approve { qr } => {
            let keyring = Keyring::load(&keys)?;
            let device = authenticator::approve(&keyring, &qr).await?;
            println!("approved as {} ({})", device.email, device.host);
        }
        Command::Devices => {
            for device in Keyring::load(&keys)?.devices {
                println!("{}\t{}\t{}", device.host, device.email, device.device_id);
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idem-authenticator: {e}");
            ExitCode::FAILURE
        }
    }
}
