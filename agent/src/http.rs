//! The HTTP side of idem's clients: URLs of tenant hosts, a client that reaches
//! `*.localhost` on loopback (RFC 6761) without any DNS set-up, the service's
//! problem+json errors turned into readable messages, and a patient send for calls a busy
//! service asks to retry (503 with `Retry-After`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::de::DeserializeOwned;
use url::Url;

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is not a URL: {1}")]
    Url(String, String),
    #[error("could not reach {0}: {1}")]
    Unreachable(String, String),
    /// The service answered with an error: its status, problem type, title and detail, and
    /// how long it asked to wait before trying again (`Retry-After` in seconds), if it did.
    #[error("{status} {title}: {detail}")]
    Refused {
        status: u16,
        /// The problem's `type` (`about:blank` for most, or none from a body that is no
        /// problem document).
        kind: String,
        title: String,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("unexpected answer: {0}")]
    Answer(String),
}

/// Parses a tenant URL; `http` or `https` only.
pub fn parse_url(raw: &str) -> Result<Url, Error> {
    let url = Url::parse(raw.trim()).map_err(|e| Error::Url(raw.to_owned(), e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Error::Url(
            raw.to_owned(),
            "use http(s)://host[:port]".into(),
        ));
    }
    Ok(url)
}

/// Why `url` must not be used to enroll, if it must not: plain `http` to anything but this
/// machine (`localhost`, `*.localhost`, a loopback address) would carry `secrets` (what the
/// enrollment sends or receives, e.g. "the device credential") across the network in clear.
pub fn plain_http_refused(url: &Url, secrets: &str) -> Option<String> {
    if url.scheme() != "http" {
        return None;
    }
    let local = match url.host() {
        Some(url::Host::Domain(name)) => {
            let name = name.to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    };
    (!local).then(|| {
        format!(
            "{url} is plain http: {secrets} would cross the network in clear; use https (or \
             --insecure-http on a test network)"
        )
    })
}

/// The problem type of a login refused because its right password is a temporary one: the
/// user chooses a new one (`POST /api/v1/agent/password`) to log in.
pub const PASSWORD_CHANGE_REQUIRED: &str = "tag:idem.invalid,2026:password-change-required";

/// How many times `send_patiently` sends a request the service refuses as busy, in all.
pub const BUSY_ATTEMPTS: usize = 3;
/// The longest `send_patiently` waits between two sends, whatever `Retry-After` says: a
/// person is waiting at the login screen.
pub const BUSY_WAIT_MAX: Duration = Duration::from_secs(2);

/// A client for one tenant URL.
pub struct Client {
    inner: reqwest::Client,
}

/// A successful answer's body.
pub struct Answer {
    body: Vec<u8>,
}

impl Answer {
    /// The body as it came.
    pub fn bytes(&self) -> &[u8] {
        &self.body
    }

    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Answer(e.to_string()))
    }
}

impl Client {
    /// A client for `url`; names under `localhost` go to the loopback address.
    pub fn for_url(url: &Url) -> Result<Client, Error> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(host) = url.host_str() {
            let host = host.to_ascii_lowercase();
            if host == "localhost" || host.ends_with(".localhost") {
                let port = url.port_or_known_default().unwrap_or(80);
                builder = builder.resolve(&host, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
            }
        }
        let inner = builder
            .build()
            .map_err(|e| Error::Unreachable(url.to_string(), e.to_string()))?;
        Ok(Client { inner })
    }

    /// POSTs JSON to `path` under `base`; any 4xx or 5xx is an error with the problem's text.
    pub async fn post_json(
        &self,
        base: &Url,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Answer, Error> {
        self.send(reqwest::Method::POST, base, path, None, Some(body))
            .await
    }

    /// Sends a request to `path` under `base`, with a bearer credential and a JSON body if
    /// given; any 4xx or 5xx is an error with the problem's text.
    pub async fn send(
        &self,
        method: reqwest::Method,
        base: &Url,
        path: &str,
        bearer: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, Error> {
        let url = base
            .join(path)
            .map_err(|e| Error::Url(path.to_owned(), e.to_string()))?;
        let mut request = self.inner.request(method, url.clone());
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Error::Unreachable(url.to_string(), e.to_string()))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response
            .bytes()
            .await
            .map_err(|e| Error::Unreachable(url.to_string(), e.to_string()))?
            .to_vec();
        if status.is_client_error() || status.is_server_error() {
            let problem: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let text = |key: &str| {
                problem
                    .get(key)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            return Err(Error::Refused {
                status: status.as_u16(),
                kind: text("type"),
                title: text("title"),
                detail: text("detail"),
                retry_after,
            });
        }
        Ok(Answer { body })
    }

    /// Like `send`, but a 503 (the service is busy, e.g. its password-hashing queue is full,
    /// which it answers before doing anything) is sent again after the wait the service asks
    /// for (1 s if it names none; at most `BUSY_WAIT_MAX`), up to `BUSY_ATTEMPTS` sends in all.
    /// Only for requests that a 503 leaves undone, so that sending again is safe.
    pub async fn send_patiently(
        &self,
        method: reqwest::Method,
        base: &Url,
        path: &str,
        bearer: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, Error> {
        let mut sent = 1;
        loop {
            match self.send(method.clone(), base, path, bearer, body).await {
                Err(Error::Refused {
                    status: 503,
                    retry_after,
                    ..
                }) if sent < BUSY_ATTEMPTS => {
                    let wait = retry_after.unwrap_or(Duration::from_secs(1));
                    tokio::time::sleep(wait.min(BUSY_WAIT_MAX)).await;
                    sent += 1;
                }
                answer => return answer,
            }
        }
    }
}

/// A scripted HTTP peer for the clients' tests.
#[cfg(test)]
pub(crate) mod peer {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use url::Url;

    /// A peer that reads one request per connection and answers it with the next of
    /// `answers` (raw HTTP, then closes), or closes without a word for a `None` (an answer
    /// lost after the request arrived). Keeps each request as it came, head and body.
    pub async fn scripted(answers: Vec<Option<&'static str>>) -> (Url, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let kept = requests.clone();
        tokio::spawn(async move {
            for answer in answers {
                let (mut socket, _) = listener.accept().await.unwrap();
                // Read the head and the body its Content-Length announces.
                let mut request = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = socket.read(&mut chunk).await.unwrap();
                    request.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (name, value) = l.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                kept.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&request).to_string());
                if let Some(answer) = answer {
                    socket.write_all(answer.as_bytes()).await.unwrap();
                    socket.shutdown().await.unwrap();
                }
            }
        });
        (url, requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_this_machine_only() {
        let refused = |url: &str| plain_http_refused(&parse_url(url).unwrap(), "it").is_some();
        for local in [
            "http://localhost:8080",
            "http://contoso-acme.LOCALHOST:8080",
            "http://127.0.0.1:8080",
            "http://127.8.9.10",
            "http://[::1]:8080",
        ] {
            assert!(!refused(local), "{local}");
        }
        for remote in [
            "http://contoso-acme.idem.example",
            "http://10.0.0.5:8080",
            "http://localhost.example.com",
            "http://[2001:db8::1]",
        ] {
            assert!(refused(remote), "{remote}");
        }
        assert!(!refused("https://contoso-acme.idem.example"));
    }

    /// A peer that answers each connection with the next of `answers` (then closes it), and
    /// counts the requests it got.
    async fn serve(
        answers: Vec<&'static str>,
    ) -> (Url, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        peer::scripted(answers.into_iter().map(Some).collect()).await
    }

    const BUSY: &str = "HTTP/1.1 503 Service Unavailable\r\nretry-after: 0\r\n\
        content-type: application/problem+json\r\nconnection: close\r\ncontent-length: 45\r\n\r\n\
        {\"title\":\"Busy\",\"detail\":\"try again shortly\"}";
    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
        connection: close\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
    const REFUSED: &str = "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/problem+json\r\n\
        connection: close\r\ncontent-length: 2\r\n\r\n{}";

    async fn login(url: &Url) -> Result<Answer, Error> {
        Client::for_url(url)
            .unwrap()
            .send_patiently(
                reqwest::Method::POST,
                url,
                "/api/v1/agent/login",
                Some("token"),
                Some(&serde_json::json!({"username": "u", "password": "p"})),
            )
            .await
    }

    #[tokio::test]
    async fn a_busy_service_is_asked_again_after_its_retry_after() {
        let (url, count) = serve(vec![BUSY, BUSY, OK]).await;
        let answer = login(&url).await.unwrap();
        assert_eq!(answer.json::<serde_json::Value>().unwrap()["ok"], true);
        assert_eq!(count.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_service_busy_every_time_is_an_error_after_the_last_attempt() {
        let (url, count) = serve(vec![BUSY; BUSY_ATTEMPTS + 1]).await;
        match login(&url).await {
            Err(Error::Refused {
                status: 503,
                detail,
                retry_after,
                ..
            }) => {
                assert_eq!(detail, "try again shortly");
                assert_eq!(retry_after, Some(Duration::ZERO));
            }
            other => panic!("expected the last 503, got {:?}", other.map(|a| a.body)),
        }
        assert_eq!(count.lock().unwrap().len(), BUSY_ATTEMPTS);
    }

    #[tokio::test]
    async fn other_refusals_are_not_sent_again() {
        let (url, count) = serve(vec![REFUSED, OK]).await;
        assert!(matches!(
            login(&url).await,
            Err(Error::Refused { status: 401, .. })
        ));
        assert_eq!(count.lock().unwrap().len(), 1);
    }
}
