//! Test support for the end-to-end tests: a real `idemd` on a loopback port and a throwaway
//! data directory, requests addressed to tenant hosts (`{label}.localhost`), the development
//! mailer's codes, and logging in with the software authenticator exactly as a person would.
//!
//! Support code for tests only: a failed step panics with what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::authenticator::{self, Device, Keyring};
use api::{Server, Settings};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};

/// A running idemd with its data directory.
pub struct Platform {
    pub server: Server,
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    http: reqwest::Client,
}

fn settings(dir: &Path, port: u16) -> Settings {
    Settings {
        bind: Some(format!("127.0.0.1:{port}")),
        data_dir: Some(dir.to_path_buf()),
        ..Settings::default()
    }
}

impl Platform {
    /// A new platform on a fresh data directory.
    pub async fn start() -> Platform {
        Platform::start_with(|_| {}).await
    }

    /// The same with some settings changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> Platform {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let mut settings = settings(&dir, 0);
        adjust(&mut settings);
        let server = Server::start(settings.resolve().unwrap()).await.unwrap();
        Platform {
            server,
            dir,
            _temp: Some(temp),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Stops the service gracefully and starts it again on the same data directory (on a new
    /// port: the old one may have been handed to another test meanwhile).
    pub async fn restart(self) -> Platform {
        self.server.shutdown().await;
        let server = Server::start(settings(&self.dir, 0).resolve().unwrap())
            .await
            .unwrap();
        Platform { server, ..self }
    }

    /// Stops the service gracefully and starts it again on the same data directory and the
    /// same port, as a restarted server would be (clients keep their URLs). Only for test
    /// binaries whose tests do not run beside others that could take the port meanwhile.
    pub async fn restart_in_place(self) -> Platform {
        let port = self.port();
        self.server.shutdown().await;
        let server = Server::start(settings(&self.dir, port).resolve().unwrap())
            .await
            .unwrap();
        Platform { server, ..self }
    }

    pub fn port(&self) -> u16 {
        self.server.addr.port()
    }

    /// The public URL of tenant `label`.
    pub fn url(&self, label: &str) -> String {
        format!("http://{label}.localhost:{}", self.port())
    }

    /// A request to `path` on host `label` (`""` for the apex), sent to the loopback port.
    pub fn request(&self, method: Method, label: &str, path: &str) -> RequestBuilder {
        let host = if label.is_empty() {
            format!("localhost:{}", self.port())
        } else {
            format!("{label}.localhost:{}", self.port())
        };
        self.http
            .request(method, format!("http://127.0.0.1:{}{path}", self.port()))
            .header("host", host)
    }

    /// The same with a session token.
    pub fn as_user(&self, token: &str, method: Method, label: &str, path: &str) -> RequestBuilder {
        self.request(method, label, path).bearer_auth(token)
    }

    /// The newest onboarding code mailed to `email`.
    pub fn code_for(&self, email: &str) -> String {
        let mut names: Vec<_> = std::fs::read_dir(self.dir.join("mail"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .rev()
            .find_map(|path| {
                let text = std::fs::read_to_string(path).unwrap();
                let to = text.lines().find_map(|l| l.strip_prefix("To: "))?;
                if !to.trim().eq_ignore_ascii_case(email) {
                    return None;
                }
                text.lines()
                    .find_map(|l| l.trim_end().strip_prefix("Code: "))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("no code was mailed to {email}"))
    }

    /// Seed step 1: signs up an MSP; answers the signup's body.
    pub async fn signup(&self, name: &str, display_name: &str, admin_email: &str) -> Value {
        let answer = self
            .request(Method::POST, "", "/api/v1/signup")
            .json(&json!({"name": name, "display_name": display_name, "admin_email": admin_email}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201, "signup of {name}");
        answer.json().await.unwrap()
    }

    /// Onboards `email` on tenant `label` with a new device in `keyring`: asks for a code,
    /// reads it from the development mailer, enrolls.
    pub async fn enroll(&self, keyring: &mut Keyring, label: &str, email: &str) -> Device {
        authenticator::request_code(&self.url(label), email)
            .await
            .unwrap();
        let code = self.code_for(email);
        authenticator::enroll(keyring, &self.url(label), email, &code, "test phone")
            .await
            .unwrap()
    }

    /// Asks host `label` for a portal login challenge; answers its id and QR URI.
    pub async fn challenge(&self, label: &str) -> (String, String) {
        let answer = self
            .request(Method::POST, label, "/api/v1/login/challenges")
            .json(&json!({"purpose": "portal"}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201);
        let body: Value = answer.json().await.unwrap();
        (
            body["id"].as_str().unwrap().to_owned(),
            body["qr"].as_str().unwrap().to_owned(),
        )
    }

    /// Waits for challenge `id` on `label`: the poll's answer.
    pub async fn poll(&self, label: &str, id: &str, wait: u64) -> Value {
        let answer = self
            .request(
                Method::GET,
                label,
                &format!("/api/v1/login/challenges/{id}?wait={wait}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        answer.json().await.unwrap()
    }

    /// Logs in on host `label` the way a person does: the browser asks for a challenge and
    /// waits, the authenticator approves its QR code. Answers the session token.
    pub async fn login(&self, keyring: &Keyring, label: &str) -> String {
        let (id, qr) = self.challenge(label).await;
        let waiting = {
            let request = self.request(
                Method::GET,
                label,
                &format!("/api/v1/login/challenges/{id}?wait=30"),
            );
            tokio::spawn(async move { request.send().await.unwrap() })
        };
        authenticator::approve(keyring, &qr).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["status"], "approved", "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// Sends `request` and answers its status and JSON body (`Null` if none).
    pub async fn call(request: RequestBuilder) -> (u16, Value) {
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        (status, body(answer).await)
    }
}

/// A response's JSON body, `Null` if it has none.
pub async fn body(answer: Response) -> Value {
    let bytes = answer.bytes().await.unwrap();
    if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    }
}
