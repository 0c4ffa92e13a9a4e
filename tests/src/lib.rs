//! Test support for the end-to-end tests: a real `idemd` on a loopback port and a throwaway
//! data directory, requests addressed to tenant hosts (`{label}.localhost`), the development
//! mailer's codes, and logging in with the software authenticator exactly as a person would.
//!
//! Support code for tests only: a failed step panics with what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod browser;
pub mod contract;
pub mod proxy;

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

/// The HTTP client of the tests: redirects are for them to follow or not.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A stopped platform: its data directory, kept until this is dropped.
pub struct Stopped {
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    http: reqwest::Client,
}

impl Stopped {
    /// A data directory made elsewhere (a restore, say), to start idemd on.
    pub fn in_dir(dir: PathBuf) -> Stopped {
        Stopped {
            dir,
            _temp: None,
            http: client(),
        }
    }

    /// Starts idemd again on the data directory with settings changed by `adjust`: the running
    /// platform, or why idemd refused to start (and the directory, to try again).
    pub async fn start_with(
        self,
        adjust: impl FnOnce(&mut Settings),
    ) -> Result<Platform, (api::StartError, Stopped)> {
        let mut settings = settings(&self.dir, 0);
        adjust(&mut settings);
        match Server::start(settings.resolve().unwrap()).await {
            Ok(server) => Ok(Platform {
                server,
                dir: self.dir,
                _temp: self._temp,
                http: self.http,
            }),
            Err(e) => Err((e, self)),
        }
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
            http: client(),
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

    /// Stops the service gracefully, keeping its data directory.
    pub async fn stop(self) -> Stopped {
        self.server.shutdown().await;
        Stopped {
            dir: self.dir,
            _temp: self._temp,
            http: self.http,
        }
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

    /// A portal page at `path` on `label`'s host, as a browser holding `token`'s session
    /// cookie gets it.
    pub async fn page(&self, token: &str, label: &str, path: &str) -> String {
        text(
            self.request(Method::GET, label, path)
                .header("cookie", format!("idem_session={token}")),
        )
        .await
    }

    /// The mails the development mailer wrote to `email`, newest first, as written.
    pub fn mails_to(&self, email: &str) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(self.dir.join("mail"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .rev()
            .map(|path| std::fs::read_to_string(path).unwrap())
            .filter(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("To: "))
                    .is_some_and(|to| to.trim().eq_ignore_ascii_case(email))
            })
            .collect()
    }

    /// The newest onboarding code mailed to `email`.
    pub fn code_for(&self, email: &str) -> String {
        self.mails_to(email)
            .iter()
            .find_map(|text| {
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

    /// The MSP `acme` ("Acme") signed up with `admin_email` as its admin, her phone enrolled
    /// and her session on its host: answers the phone and the session.
    pub async fn acme(&self, admin_email: &str) -> (Keyring, String) {
        self.signup("acme", "Acme", admin_email).await;
        let mut phone = Keyring::default();
        self.enroll(&mut phone, "acme", admin_email).await;
        let session = self.login(&phone, "acme").await;
        (phone, session)
    }

    /// The set-up most tests start from: the MSP `acme` ("Acme") signed up with `admin_email`
    /// as its admin, her phone enrolled, and its customer `contoso` (host `contoso-acme`).
    /// Answers the phone and her session on the MSP's host.
    pub async fn acme_with_contoso(&self, admin_email: &str) -> (Keyring, String) {
        let (phone, msp) = self.acme(admin_email).await;
        self.add_customer(&msp, "contoso", "Contoso").await;
        (phone, msp)
    }

    /// Creates customer `name` of the MSP `acme` as `msp` (a session on its host); fails the
    /// test unless it is created.
    pub async fn add_customer(&self, msp: &str, name: &str, display_name: &str) {
        let (status, body) = Platform::call(
            self.as_user(msp, Method::POST, "acme", "/api/v1/customers")
                .json(&json!({"name": name, "display_name": display_name})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
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

    /// Calls `path` on host `label` with `token`'s session and an optional JSON body: the
    /// status and JSON body. The request is built at once, so the answer borrows nothing.
    pub fn call_as(
        &self,
        token: &str,
        method: Method,
        label: &str,
        path: &str,
        body: Option<Value>,
    ) -> impl Future<Output = (u16, Value)> + use<> {
        let mut request = self.as_user(token, method, label, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Platform::call(request)
    }

    /// The audit export (NDJSON text) of host `label`'s tenant as `token` may read it.
    /// Each line is checked against the document's line schema ([`contract::check_lines`]).
    pub async fn audit_export(&self, token: &str, label: &str) -> String {
        let path = "/api/v1/audit/events";
        let answer = self
            .as_user(token, Method::GET, label, path)
            .send()
            .await
            .unwrap();
        let (status, content_type) = (answer.status().as_u16(), content_type(&answer));
        let text = answer.text().await.unwrap();
        contract::check_lines(&Method::GET, path, status, &content_type, &text);
        text
    }

    /// The audit export of host `label`'s tenant as `token` may read it: one JSON value per
    /// NDJSON line.
    pub async fn audit_events(&self, token: &str, label: &str) -> Vec<Value> {
        self.audit_export(token, label)
            .await
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The service's `/metrics` text.
    pub async fn metrics(&self) -> String {
        text(self.request(Method::GET, "", "/metrics")).await
    }

    /// The value of the unlabelled gauge `name` in `/metrics`, if the service shows it.
    pub async fn gauge(&self, name: &str) -> Option<u64> {
        self.metrics()
            .await
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map(|value| value.parse().unwrap())
    }

    /// Sends `request` and answers its status and JSON body (`Null` if none), after checking
    /// the answer against the OpenAPI document ([`contract`]).
    pub async fn call(request: RequestBuilder) -> (u16, Value) {
        let (client, request) = request.build_split();
        let request = request.unwrap();
        let (method, path) = (request.method().clone(), request.url().path().to_owned());
        let answer = client.execute(request).await.unwrap();
        let (status, content_type) = (answer.status().as_u16(), content_type(&answer));
        let body = body(answer).await;
        contract::check(&method, &path, status, &content_type, &body);
        (status, body)
    }
}

/// A response's `Content-Type` (empty if it has none).
fn content_type(answer: &Response) -> String {
    answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The body of `request`'s answer as text, whatever its status.
pub async fn text(request: RequestBuilder) -> String {
    request.send().await.unwrap().text().await.unwrap()
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

/// A real PNG (RGB, 8 bits, a vertical gradient from `top` to `bottom`) that browsers decode:
/// stored (uncompressed) deflate blocks, with the CRCs and checksum the format asks for.
pub fn gradient_png(width: u32, height: u32, top: [u8; 3], bottom: [u8; 3]) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0); // filter: none
        for _ in 0..width {
            for c in 0..3 {
                let (a, b) = (u32::from(top[c]), u32::from(bottom[c]));
                let value = (a * (height - 1 - y) + b * y) / (height - 1).max(1);
                raw.push(u8::try_from(value).unwrap());
            }
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = u16::try_from(block.len()).unwrap();
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &header);
    chunk(&mut png, b"IDAT", &zlib);
    chunk(&mut png, b"IEND", &[]);
    png
}
