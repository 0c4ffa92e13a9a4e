//! Mail over SMTP: idemd configured with `IDEM_SMTP_URL` sends the onboarding code to a relay
//! on loopback (a minimal SMTP sink in this test), and nothing secret reaches its log: not
//! the code, not the session token, not the device key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::authenticator::{self, Keyring};
use harness::Platform;
use reqwest::Method;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A mail as the sink received it: envelope recipients and the raw message.
struct Received {
    rcpt: Vec<String>,
    data: String,
}

/// Accepts SMTP sessions and hands each message over; just enough of RFC 5321 for a client.
async fn smtp_sink() -> (u16, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                let mut rcpt = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                        "HELO" | "MAIL" | "RSET" | "NOOP" => b"250 ok\r\n",
                        "RCPT" => {
                            rcpt.push(line[8..].trim().to_owned());
                            b"250 ok\r\n"
                        }
                        "DATA" => {
                            write.write_all(b"354 go on\r\n").await.unwrap();
                            let mut data = String::new();
                            while let Ok(Some(line)) = lines.next_line().await {
                                if line == "." {
                                    break;
                                }
                                data.push_str(&line);
                                data.push('\n');
                            }
                            let _ = tx.send(Received {
                                rcpt: std::mem::take(&mut rcpt),
                                data,
                            });
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"502 not here\r\n",
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, rx)
}

/// Everything the process logs, captured.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn next_code(mail: &mut mpsc::UnboundedReceiver<Received>, to: &str) -> String {
    let received = tokio::time::timeout(Duration::from_secs(30), mail.recv())
        .await
        .expect("the mail arrives")
        .unwrap();
    assert_eq!(received.rcpt, [format!("<{to}>")]);
    assert!(
        received.data.contains(&format!("To: {to}")),
        "{}",
        received.data
    );
    received
        .data
        .lines()
        .find_map(|l| l.strip_prefix("Code: "))
        .expect("a line of its own: Code: <code>")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn onboarding_codes_go_out_by_smtp_and_never_into_the_log() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let (port, mut mail) = smtp_sink().await;
    let platform = Platform::start_with(|settings| {
        settings.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
        settings.mail_from = Some("idem@platform.example".into());
    })
    .await;

    platform.signup("acme", "Acme", "alice@acme.example").await;
    let code = next_code(&mut mail, "alice@acme.example").await;
    assert_eq!(code.len(), 8);
    assert!(
        !platform.dir.join("mail").exists(),
        "nothing goes to the development mailer"
    );

    // A code asked for again arrives the same way; the first one then no longer works.
    authenticator::request_code(&platform.url("acme"), "alice@acme.example")
        .await
        .unwrap();
    let second = next_code(&mut mail, "alice@acme.example").await;
    let mut phone = Keyring::default();
    let stale = authenticator::enroll(
        &mut phone,
        &platform.url("acme"),
        "alice@acme.example",
        &code,
        "phone",
    )
    .await;
    if code != second {
        assert!(stale.is_err());
    }
    let device = authenticator::enroll(
        &mut phone,
        &platform.url("acme"),
        "alice@acme.example",
        &second,
        "phone",
    )
    .await
    .unwrap();
    let token = platform.login(&phone, "acme").await;
    let (status, _) =
        Platform::call(platform.as_user(&token, Method::GET, "acme", "/api/v1/me")).await;
    assert_eq!(status, 200);
    // An unknown email is answered the same, and no mail goes out for it.
    authenticator::request_code(&platform.url("acme"), "nobody@acme.example")
        .await
        .unwrap();
    platform.server.shutdown().await;
    assert!(mail.try_recv().is_err(), "no mail for an unknown email");

    let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("mail goes out through SMTP"), "{log}");
    assert!(
        log.contains("/api/v1/onboarding/complete"),
        "requests are logged"
    );
    let keys = std::fs::read_to_string(platform.dir.join("root.key")).unwrap();
    for secret in [code.as_str(), &second, &token, keys.trim()] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
    let keyring = serde_json::to_string(&device.device_id).unwrap();
    assert!(
        log.contains(keyring.trim_matches('"')),
        "device ids are fine to log"
    );
}
