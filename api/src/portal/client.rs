//! The portals' client of the API: each page reads and each form writes through the API's own
//! router, in process, with the browser's session as a bearer token. A page can therefore
//! show or change only what the same session could through the HTTP contract: one place
//! decides authorization, validation and isolation, and the portals cannot drift from it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

use crate::app::{Shared, api_routes};

/// The API's router, built once; each call lends it the state.
fn routes() -> &'static Router<Shared> {
    static ROUTES: OnceLock<Router<Shared>> = OnceLock::new();
    ROUTES.get_or_init(api_routes)
}

/// A call's answer.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The JSON body (`Null` when empty or not JSON).
    pub body: Value,
    /// The body as it came (the audit export is NDJSON).
    pub raw: Bytes,
}

/// A refused or failed call, as the API explained it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: StatusCode,
    pub detail: String,
    /// Field name → message, from a 422.
    pub fields: BTreeMap<String, String>,
}

impl Failure {
    pub fn of(answer: &Answer) -> Failure {
        let detail = answer
            .body
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or("the request was refused")
            .to_owned();
        let fields = answer
            .body
            .get("errors")
            .and_then(Value::as_array)
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| {
                        Some((
                            e.get("field")?.as_str()?.to_owned(),
                            e.get("message")?.as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Failure {
            status: answer.status,
            detail,
            fields,
        }
    }

    /// A failure of the page itself, not of the API.
    pub fn local(status: StatusCode, detail: &str) -> Failure {
        Failure {
            status,
            detail: detail.to_owned(),
            fields: BTreeMap::new(),
        }
    }
}

/// Calls the API on behalf of one browser request.
#[derive(Clone)]
pub struct Client {
    state: Shared,
    host: HeaderValue,
    token: Option<String>,
    /// The browser's address, for the routes that limit calls per address.
    peer: Option<std::net::SocketAddr>,
    /// Headers sent with every call besides the host and the session.
    extra: HeaderMap,
}

impl Client {
    /// A client for the request's host, with its session token if it has one.
    pub fn new(state: Shared, headers: &HeaderMap, token: Option<String>) -> Client {
        let host = headers
            .get(header::HOST)
            .cloned()
            .unwrap_or(HeaderValue::from_static("invalid"));
        Client {
            state,
            host,
            token,
            peer: None,
            extra: HeaderMap::new(),
        }
    }

    /// The same, sending `name: value` with every call.
    pub fn with_header(mut self, name: &'static str, value: HeaderValue) -> Client {
        self.extra.insert(name, value);
        self
    }

    /// The same, calling on behalf of the browser at `peer`.
    pub fn from_peer(mut self, peer: std::net::SocketAddr) -> Client {
        self.peer = Some(peer);
        self
    }

    pub fn state(&self) -> &Shared {
        &self.state
    }

    /// One call: `body` is `(content type, bytes)`.
    pub async fn call(&self, method: Method, path: &str, body: Option<(&str, Bytes)>) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.host.clone());
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in &self.extra {
            request = request.header(name, value);
        }
        let request = match body {
            Some((content_type, bytes)) => request
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(bytes)),
            None => request.body(Body::empty()),
        };
        let failed = |detail: &str| Answer {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            headers: HeaderMap::new(),
            body: serde_json::json!({"detail": detail}),
            raw: Bytes::new(),
        };
        let Ok(mut request) = request else {
            return failed("the page built a request the API cannot take");
        };
        if let Some(peer) = self.peer {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
        }
        let router = routes().clone().with_state(self.state.clone());
        let Ok(response) = router.oneshot(request).await;
        let (parts, body) = response.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
            return failed("the API's answer could not be read");
        };
        Answer {
            status: parts.status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers: parts.headers,
            raw: bytes,
        }
    }

    /// A read: its JSON, or why not.
    pub async fn get(&self, path: &str) -> Result<Value, Failure> {
        let answer = self.call(Method::GET, path, None).await;
        if answer.status.is_success() {
            Ok(answer.body)
        } else {
            Err(Failure::of(&answer))
        }
    }

    /// A write with a JSON body (or none): its answer, or why not.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, Failure> {
        let body = body.map(|v| ("application/json", Bytes::from(v.to_string())));
        self.send_raw(method, path, body).await
    }

    /// A write with a body of any type (the branding upload's multipart form).
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Bytes)>,
    ) -> Result<Answer, Failure> {
        let answer = self.call(method, path, body).await;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(Failure::of(&answer))
        }
    }
}

/// A path segment, percent-encoded (customer names and ids are safe already; this is for
/// anything a person typed).
pub fn segment(raw: &str) -> String {
    url::form_urlencoded::byte_serialize(raw.as_bytes()).collect()
}
