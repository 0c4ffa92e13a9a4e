//! Outgoing mail: SMTP through a relay (`IDEM_SMTP_URL`, sent with lettre), or the
//! development mailer, which writes each message as an RFC 5322 file under
//! `$IDEM_DATA_DIR/mail/`. A message that carries a one-time code has it on a line of its own,
//! `Code: <code>`. Neither logs a message's body.

use std::path::PathBuf;

use chrono::Utc;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// A message to send.
pub struct Message {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("writing the message file: {0}")]
    File(#[from] std::io::Error),
    #[error("building the message: {0}")]
    Build(String),
    #[error("sending over SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

/// Where mail goes.
#[derive(Clone)]
pub enum Mailer {
    /// Files in a directory only the service can read.
    Development { dir: PathBuf, from: String },
    /// An SMTP relay.
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: String,
        /// The relay's host and port, for the start-up log (never its credentials).
        relay: String,
    },
}

impl Mailer {
    /// Mail holds one-time codes: the directory is the service user's alone (0700).
    pub fn development(dir: PathBuf, from: String) -> std::io::Result<Mailer> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Mailer::Development { dir, from })
    }

    /// Checks an `IDEM_SMTP_URL` at start, so that a typo stops the service, not a signup.
    pub fn check_smtp_url(url: &str) -> Result<(), String> {
        AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// An SMTP mailer for `url`: `smtp://host:port` (plain; add `?tls=required` for
    /// STARTTLS), `smtps://host:port` (TLS), with `user:password@` if the relay wants it.
    pub fn smtp(url: &str, from: String) -> Result<Mailer, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| e.to_string())?
            .build();
        let relay = url
            .split_once("://")
            .map(|(_, rest)| rest.rsplit('@').next().unwrap_or(rest))
            .unwrap_or(url)
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned();
        Ok(Mailer::Smtp {
            transport,
            from,
            relay,
        })
    }

    /// Says where mail goes, at start.
    pub fn announce(&self) {
        match self {
            Mailer::Development { dir, .. } => tracing::warn!(
                directory = %dir.display(),
                "development mailer: messages are written as files, not sent (set IDEM_SMTP_URL to send)"
            ),
            Mailer::Smtp { relay, .. } => tracing::info!(%relay, "mail goes out through SMTP"),
        }
    }

    /// Hands `message` over without letting the caller wait on the relay: over SMTP it is
    /// sent in the background, so that how long an answer takes does not tell whether a mail
    /// went out (onboarding must not reveal which emails exist). Failures are logged.
    pub async fn post(&self, message: Message) {
        match self {
            Mailer::Development { .. } => {
                if let Err(e) = self.send(message).await {
                    tracing::error!(error = %e, "could not write a mail");
                }
            }
            Mailer::Smtp { .. } => {
                let mailer = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = mailer.send(message).await {
                        tracing::error!(error = %e, "could not send a mail");
                    }
                });
            }
        }
    }

    /// Sends `message`.
    pub async fn send(&self, message: Message) -> Result<(), MailError> {
        match self {
            Mailer::Development { dir, from } => {
                write_file(dir, from, message).await?;
                Ok(())
            }
            Mailer::Smtp {
                transport, from, ..
            } => {
                let build = |e: &dyn std::fmt::Display| MailError::Build(e.to_string());
                let email = lettre::Message::builder()
                    .from(from.parse().map_err(|e| build(&e))?)
                    .to(message.to.parse().map_err(|e| build(&e))?)
                    .subject(message.subject)
                    .header(ContentType::TEXT_PLAIN)
                    .body(message.body)
                    .map_err(|e| build(&e))?;
                transport.send(email).await?;
                Ok(())
            }
        }
    }
}

/// Writes `message` to a new file (via a temporary name, so a reader never sees half).
async fn write_file(
    dir: &std::path::Path,
    from: &str,
    message: Message,
) -> std::io::Result<PathBuf> {
    let id = uuid::Uuid::now_v7();
    let now = Utc::now();
    let text = format!(
        "From: {from}\r\nTo: {}\r\nSubject: {}\r\nDate: {}\r\nMessage-ID: <{id}@idem>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
        message.to,
        message.subject,
        now.to_rfc2822(),
        message.body.replace('\n', "\r\n"),
    );
    let name = format!("{}-{id}.eml", now.format("%Y%m%dT%H%M%S"));
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    tokio::fs::write(&tmp, text).await?;
    tokio::fs::rename(&tmp, &path).await?;
    Ok(path)
}
