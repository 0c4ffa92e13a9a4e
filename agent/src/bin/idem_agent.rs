//! `idem-agent`: the desktop agent of a workstation. Enroll it into a customer tenant with a
//! token from the portal, then `run` it as a service: it follows the tenant's directory and
//! keeps the local accounts in step. `login` checks a user's password as the login screen
//! would; `elevate` shows a QR code for a technician's phone and prepares the shared admin
//! account.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agent::accounts::{FileAccounts, LinuxAccounts, LocalAccounts};
use agent::desktop::{self, Agent, Login};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "idem-agent", version, about)]
struct Cli {
    /// Where the agent keeps its state (credential, cursor, cache; created 0600).
    #[arg(
        long,
        env = "IDEM_AGENT_STATE",
        default_value = "/var/lib/idem-agent",
        global = true
    )]
    state_dir: PathBuf,
    /// The system root whose etc/passwd, etc/shadow and etc/group hold the local accounts.
    #[arg(long, env = "IDEM_AGENT_ROOT", default_value = "/", global = true)]
    root: PathBuf,
    /// Keep the local accounts in this JSON file instead (tests, demos).
    #[arg(long, env = "IDEM_AGENT_ACCOUNTS_FILE", global = true)]
    accounts_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enrolls this workstation: URL is the customer tenant's, TOKEN from its portal.
    Enroll {
        url: String,
        /// Tokens are base64url: one in 64 starts with `-`, and is still the token.
        #[arg(allow_hyphen_values = true)]
        token: String,
        #[arg(long)]
        hostname: Option<String>,
        /// Allow a plain http URL to another machine (a test network): the device credential
        /// and the passwords checked at the login screen then cross it in clear.
        #[arg(long)]
        insecure_http: bool,
    },
    /// Follows the directory until stopped, retrying with backoff when the service is away.
    Run,
    /// Applies what changed since the last sync, once.
    Sync,
    /// Checks USER's password (read from standard input) as the login screen would. A
    /// temporary password is changed on the spot: the new one is read next, then again.
    Login { user: String },
    /// Changes USER's password: the current one, the new one and the new one again, a line
    /// each on standard input; the user is then logged in with the new one.
    Passwd { user: String },
    /// Passwordless login: shows a QR code the user approves with their own phone, then opens
    /// their local account (created or taken over, with a fresh password nobody types).
    Passwordless,
    /// Elevated access: shows a QR code to approve, then prepares the shared admin account.
    Elevate,
    /// What the agent knows.
    Status,
}

fn accounts(cli: &Cli) -> Box<dyn LocalAccounts> {
    match &cli.accounts_file {
        Some(file) => Box::new(FileAccounts::new(file)),
        None => Box::new(LinuxAccounts::new(&cli.root)),
    }
}

/// Opens the agent for a command of the login screen, ending first an elevation past its
/// time (as `run` does at each sync), so that a workstation whose `run` is stopped does not
/// keep a password shown to a technician.
fn open_at_the_screen(cli: &Cli) -> Result<Agent<Box<dyn LocalAccounts>>, desktop::AgentError> {
    let mut agent = Agent::open(&cli.state_dir, accounts(cli))?;
    agent.expire_elevation(std::time::SystemTime::now())?;
    Ok(agent)
}

async fn run(cli: Cli) -> Result<(), desktop::AgentError> {
    match &cli.command {
        Command::Enroll {
            url,
            token,
            hostname,
            insecure_http,
        } => {
            if let Some(why) = agent::http::parse_url(url).ok().and_then(|parsed| {
                agent::http::plain_http_refused(
                    &parsed,
                    "the device credential and the passwords checked at the login screen",
                )
            }) && !insecure_http
            {
                return Err(desktop::AgentError::Refused(why));
            }
            let hostname = hostname.clone().unwrap_or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "workstation".into())
            });
            let state = desktop::enroll(&cli.state_dir, url, token, &hostname).await?;
            println!("enrolled as device {}", state.device_id);
        }
        Command::Run => {
            let mut agent = Agent::open(&cli.state_dir, accounts(&cli))?;
            agent
                .run(
                    Duration::from_secs(30),
                    |agent, applied| {
                        if applied > 0 {
                            eprintln!(
                                "applied {applied} changes (cursor {:?})",
                                agent.state.cursor
                            );
                        }
                    },
                    |e, pause| {
                        eprintln!(
                            "sync failed ({e}); retrying in {:.1} s",
                            pause.as_secs_f64()
                        )
                    },
                )
                .await
        }
        Command::Sync => {
            let mut agent = Agent::open(&cli.state_dir, accounts(&cli))?;
            let mut total = 0;
            loop {
                let applied = agent.sync_once(Duration::ZERO).await?;
                total += applied;
                if applied == 0 {
                    break;
                }
            }
            println!("applied {total} changes; cursor {:?}", agent.state.cursor);
        }
        Command::Login { user } => {
            let mut agent = open_at_the_screen(&cli)?;
            let mut input = std::io::stdin().lock();
            let password = read_secret(&format!("Password for {user}: "), &mut input)?;
            let login = match agent.login(user, &password).await {
                Err(desktop::AgentError::PasswordChangeRequired(why)) => {
                    eprintln!("{why}");
                    let new_password = new_secret(&mut input)?;
                    agent
                        .change_password(user, &password, &new_password)
                        .await?
                }
                other => other?,
            };
            welcome(&login);
        }
        Command::Passwd { user } => {
            let mut agent = open_at_the_screen(&cli)?;
            let mut input = std::io::stdin().lock();
            let password = read_secret(&format!("Current password of {user}: "), &mut input)?;
            let new_password = new_secret(&mut input)?;
            let login = agent
                .change_password(user, &password, &new_password)
                .await?;
            println!("password changed");
            welcome(&login);
        }
        Command::Passwordless => {
            let mut agent = open_at_the_screen(&cli)?;
            let shown = |url: &str| show_challenge("The user approves with their own phone:", url);
            let opened = agent
                .login_passwordless(shown, Duration::from_secs(120))
                .await?;
            println!(
                "welcome: {} ({}, passwordless)",
                opened.account, opened.action
            );
        }
        Command::Elevate => {
            let mut agent = open_at_the_screen(&cli)?;
            let (account, password) = agent
                .elevate(
                    |url| {
                        show_challenge(
                            "A technician of this customer approves with their phone:",
                            url,
                        )
                    },
                    Duration::from_secs(120),
                )
                .await?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let minutes = agent
                .state
                .elevated
                .as_ref()
                .map_or(0, |e| e.expires.saturating_sub(now).div_ceil(60));
            println!(
                "elevated access: account {account}, password {password} (replaced in {minutes} min)"
            );
        }
        Command::Status => {
            let agent = Agent::open(&cli.state_dir, accounts(&cli))?;
            print!("{}", agent.status());
        }
    }
    Ok(())
}

fn welcome(login: &Login) {
    match login {
        Login::Online { account, action } => println!("welcome: {account} ({action})"),
        Login::Offline { account } => println!("welcome: {account} (offline)"),
    }
}

/// A password from standard input (at a terminal, after `prompt`, not echoed).
fn read_secret(
    prompt: &str,
    input: &mut impl BufRead,
) -> Result<zeroize::Zeroizing<String>, desktop::AgentError> {
    agent::terminal::secret(prompt, input).map_err(|e| desktop::AgentError::Refused(e.to_string()))
}

/// A new password, read twice: both must be the same.
fn new_secret(input: &mut impl BufRead) -> Result<zeroize::Zeroizing<String>, desktop::AgentError> {
    let first = read_secret("New password: ", input)?;
    let again = read_secret("The new password again: ", input)?;
    if first != again {
        return Err(desktop::AgentError::Refused(
            "the new password and its repetition differ: nothing was changed".into(),
        ));
    }
    Ok(first)
}

/// Shows a challenge: who approves it, its QR code, then its text on a line of its own (for
/// the software authenticator, or a phone that cannot scan).
fn show_challenge(who: &str, url: &str) {
    use std::io::IsTerminal;
    println!("{who}");
    if let Some(code) = agent::qr::terminal_qr(url, std::io::stdout().is_terminal()) {
        println!("{code}");
    }
    println!("{url}");
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idem-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn an_enrollment_token_starting_with_a_hyphen_is_the_token() {
        let cli = Cli::try_parse_from([
            "idem-agent",
            "enroll",
            "http://contoso-acme.localhost:8080",
            "-B3xYz_token",
            "--hostname",
            "WS-001",
        ])
        .unwrap();
        match cli.command {
            Command::Enroll {
                token, hostname, ..
            } => {
                assert_eq!(token, "-B3xYz_token");
                assert_eq!(hostname.as_deref(), Some("WS-001"));
            }
            _ => panic!("not enroll"),
        }
    }

    #[test]
    fn a_new_password_is_read_twice_and_must_be_the_same_both_times() {
        let mut input = "old-one\nnew-one-9\r\nnew-one-9\n".as_bytes();
        assert_eq!(*read_secret("", &mut input).unwrap(), "old-one");
        assert_eq!(*new_secret(&mut input).unwrap(), "new-one-9");
        let refused = new_secret(&mut "new-one-9\nnew-one-8\n".as_bytes()).unwrap_err();
        assert!(refused.to_string().contains("differ"), "{refused}");
        // The input ends before the repetition: an error, never an empty password.
        let refused = new_secret(&mut "new-one-9\n".as_bytes()).unwrap_err();
        assert!(refused.to_string().contains("no password"), "{refused}");
        assert!(read_secret("", &mut "".as_bytes()).is_err());
    }

    #[tokio::test]
    async fn enrolling_over_plain_http_to_another_machine_needs_insisting() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().to_str().unwrap().to_owned();
        // Nothing listens on port 1, and 0.0.0.0 (not a loopback address) reaches this
        // machine: the outcome is known at once, without any network.
        let enroll = |url: &str, extra: &[&str]| {
            let mut args = vec!["idem-agent", "--state-dir", &state, "enroll", url, "token"];
            args.extend_from_slice(extra);
            run(Cli::try_parse_from(args).unwrap())
        };
        let refused = enroll("http://0.0.0.0:1", &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("in clear"), "{refused}");
        // Insisting, or a loopback address, gets as far as the network.
        for (url, extra) in [
            ("http://0.0.0.0:1", &["--insecure-http"][..]),
            ("http://127.0.0.1:1", &[][..]),
        ] {
            let failed = enroll(url, extra).await.unwrap_err().to_string();
            assert!(failed.contains("could not reach"), "{url}: {failed}");
        }
        assert!(!dir.path().join("state.json").exists());
    }

    #[tokio::test]
    async fn a_command_of_the_login_screen_ends_an_elevation_past_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let accounts_file = dir.path().join("accounts.json");
        // An enrolled workstation (of a service nobody runs) whose `run` stopped while an
        // elevation lived: its password is still the shared account's, a session is open.
        std::fs::create_dir_all(&state_dir).unwrap();
        let state = serde_json::json!({
            "url": "http://127.0.0.1:1", "device_id": uuid::Uuid::nil(),
            "device_token": "token", "cursor": 3, "users": {}, "desktop_login": null,
            "shared_account": "idem-admin", "branding_version": 0, "offline": {},
            "elevated": {"account": "idem-admin", "expires": 1, "elevation_seq": 2},
        });
        std::fs::write(state_dir.join("state.json"), state.to_string()).unwrap();
        let mut shared = FileAccounts::new(&accounts_file);
        shared.create("idem-admin", "").unwrap();
        shared
            .set_password("idem-admin", "shown-to-a-technician")
            .unwrap();
        shared.open_session("idem-admin").unwrap();

        let args = |command: &str| {
            let (state_dir, accounts_file) = (state_dir.to_str(), accounts_file.to_str());
            Cli::try_parse_from([
                "idem-agent",
                "--state-dir",
                state_dir.unwrap(),
                "--accounts-file",
                accounts_file.unwrap(),
                command,
            ])
            .unwrap()
        };
        // A new elevation cannot reach the service; the old one has ended all the same.
        let failed = run(args("elevate")).await.unwrap_err().to_string();
        assert!(failed.contains("could not reach"), "{failed}");
        assert!(
            !shared
                .check_password("idem-admin", "shown-to-a-technician")
                .unwrap()
        );
        assert_eq!(shared.sessions("idem-admin").unwrap(), 0);
        let agent = open_at_the_screen(&args("status")).unwrap();
        assert_eq!(agent.state.elevated, None);
        let ended: Vec<&str> = agent
            .state
            .elevations_ended
            .iter()
            .map(|e| e.reason.as_str())
            .collect();
        assert_eq!(ended, ["expired"], "once, kept for the service");
        assert!(
            agent
                .status()
                .contains("no (1 ended elevation(s) to report)")
        );
    }
}
