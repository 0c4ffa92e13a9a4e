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
    /// Allows `request-code` and `enroll` over plain http to another machine (a test
    /// network): the onboarding code would cross it in clear.
    #[arg(long, global = true)]
    insecure_http: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Emails a one-time onboarding code to EMAIL (if it may onboard on that tenant).
    RequestCode {
        /// The tenant's URL, such as `http://acme.localhost:8080`
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

/// Refuses `url` for onboarding if it is plain http to another machine, unless told.
fn check_transport(url: &str, insecure_http: bool) -> Result<(), authenticator::Error> {
    let refused = agent::http::parse_url(url).ok().and_then(|parsed| {
        agent::http::plain_http_refused(
            &parsed,
            "the onboarding code, which enrolls a device as the email's user,",
        )
    });
    match refused {
        Some(why) if !insecure_http => Err(authenticator::Error::Usage(why)),
        _ => Ok(()),
    }
}

async fn run(cli: Cli) -> Result<(), authenticator::Error> {
    let keys = cli.keys.unwrap_or_else(default_keys);
    if let Command::RequestCode { url, .. } | Command::Enroll { url, .. } = &cli.command {
        check_transport(url, cli.insecure_http)?;
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[tokio::test]
    async fn onboarding_over_plain_http_to_another_machine_needs_insisting() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.json");
        let keys = keys.to_str().unwrap();
        // Nothing listens on port 1, and 0.0.0.0 (not a loopback address) reaches this
        // machine: the outcome is known at once, without any network.
        let run_with = |args: &[&str]| {
            let mut all = vec!["idem-authenticator", "--keys", keys];
            all.extend_from_slice(args);
            run(Cli::try_parse_from(all).unwrap())
        };
        for command in [
            &["request-code", "http://0.0.0.0:1", "a@b.example"][..],
            &[
                "enroll",
                "http://0.0.0.0:1",
                "a@b.example",
                "--code",
                "123456",
            ][..],
        ] {
            let refused = run_with(command).await.unwrap_err().to_string();
            assert!(refused.contains("in clear"), "{command:?}: {refused}");
            // Insisting, or a loopback address, gets as far as the network.
            let mut insisting = command.to_vec();
            insisting.push("--insecure-http");
            let mut loopback = command.to_vec();
            loopback[1] = "http://127.0.0.1:1";
            for args in [insisting, loopback] {
                let failed = run_with(&args).await.unwrap_err().to_string();
                assert!(failed.contains("could not reach"), "{args:?}: {failed}");
            }
        }
        assert!(!dir.path().join("keys.json").exists());
    }
}
