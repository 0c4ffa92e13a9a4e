//! The HTTP side of idem's clients: URLs of tenant hosts, a client that reaches
//! `*.localhost` on loopback (RFC 6761) without any DNS set-up, and the service's
//! problem+json errors turned into readable messages.

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
    /// The service answered with an error: its status, title and detail.
    #[error("{status} {title}: {detail}")]
    Refused {
        status: u16,
        title: String,
        detail: String,
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
                title: text("title"),
                detail: text("detail"),
            });
        }
        Ok(Answer { body })
    }
}
