//! Outgoing mail. The development mailer writes each message as an RFC 5322 file under
//! `$IDEM_DATA_DIR/mail/`; a message that carries a one-time code has it on a line of its own,
//! `Code: <code>`.

use std::path::PathBuf;

use chrono::Utc;

/// A message to send.
pub struct Message {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// The development mailer.
#[derive(Clone, Debug)]
pub struct Mailer {
    dir: PathBuf,
    from: String,
}

impl Mailer {
    /// Mail holds one-time codes: the directory is the service user's alone (0700).
    pub fn development(dir: PathBuf, from: String) -> std::io::Result<Mailer> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Mailer { dir, from })
    }

    pub fn directory(&self) -> &std::path::Path {
        &self.dir
    }

    /// Writes `message` to a new file (via a temporary name, so a reader never sees half).
    pub async fn send(&self, message: Message) -> std::io::Result<PathBuf> {
        let id = uuid::Uuid::now_v7();
        let now = Utc::now();
        let text = format!(
            "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {}\r\nMessage-ID: <{id}@idem>\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
            self.from,
            message.to,
            message.subject,
            now.to_rfc2822(),
            message.body.replace('\n', "\r\n"),
        );
        let name = format!("{}-{id}.eml", now.format("%Y%m%dT%H%M%S"));
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let path = self.dir.join(name);
        tokio::fs::write(&tmp, text).await?;
        tokio::fs::rename(&tmp, &path).await?;
        Ok(path)
    }
}
