//! A contract-checking proxy, for clients the harness does not drive itself (the desktop
//! agent speaks HTTP with its own client): it forwards every request to a running idemd as
//! it came (Host header included), and holds each exchange to the OpenAPI document on the
//! way: a JSON request body against its operation's request schema, the answer as
//! [`crate::contract::check`] does for the harness's own calls. What does not match is kept,
//! for the test to assert there is nothing, rather than failing a request the client under
//! test would then report in its own words.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::contract;

/// The largest body passed through.
const LIMIT: usize = 16 << 20;

/// A running proxy in front of an idemd.
pub struct ContractProxy {
    pub port: u16,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Seen {
    exchanges: Mutex<Vec<String>>,
    violations: Mutex<Vec<String>>,
}

struct Upstream {
    port: u16,
    http: reqwest::Client,
    seen: Arc<Seen>,
}

impl ContractProxy {
    /// Listens on a new loopback port and forwards to idemd's `upstream` port.
    pub async fn start(upstream: u16) -> ContractProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Seen::default());
        let state = Arc::new(Upstream {
            port: upstream,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            seen: seen.clone(),
        });
        let app = axum::Router::new().fallback(forward).with_state(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        ContractProxy { port, seen, task }
    }

    /// The URL of tenant `label` through the proxy.
    pub fn url(&self, label: &str) -> String {
        format!("http://{label}.localhost:{}", self.port)
    }

    /// Each exchange passed through, as `METHOD path -> status`.
    pub fn exchanges(&self) -> Vec<String> {
        self.seen.exchanges.lock().unwrap().clone()
    }

    /// What did not match the document.
    pub fn violations(&self) -> Vec<String> {
        self.seen.violations.lock().unwrap().clone()
    }
}

impl Drop for ContractProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs a check of the contract module, keeping its failure instead of unwinding.
fn keep(seen: &Seen, check: impl FnOnce()) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(check)) {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a check failed".to_owned());
        seen.violations.lock().unwrap().push(message);
    }
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

async fn forward(State(upstream): State<Arc<Upstream>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(sent) = axum::body::to_bytes(body, LIMIT).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "too large for the proxy").into_response();
    };
    let (method, path) = (parts.method.clone(), parts.uri.path().to_owned());
    let seen = &upstream.seen;
    if media_type(&parts.headers).starts_with("application/json") && !sent.is_empty() {
        match serde_json::from_slice::<Value>(&sent) {
            Ok(body) => keep(seen, || contract::check_request(&method, &path, &body)),
            Err(e) => keep(seen, || {
                panic!("{method} {path} sent a body that is not JSON: {e}")
            }),
        }
    }

    let target = format!(
        "http://127.0.0.1:{}{}",
        upstream.port,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut headers = parts.headers.clone();
    headers.remove(CONNECTION);
    headers.remove(CONTENT_LENGTH);
    let answer = match upstream
        .http
        .request(method.clone(), target)
        .headers(headers)
        .body(sent)
        .send()
        .await
    {
        Ok(answer) => answer,
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("idemd did not answer: {e}"),
            )
                .into_response();
        }
    };
    let status = answer.status();
    let mut headers = answer.headers().clone();
    let Ok(received) = answer.bytes().await else {
        return (StatusCode::BAD_GATEWAY, "idemd's answer broke off").into_response();
    };
    let content_type = media_type(&headers);
    check_answer(
        seen,
        &method,
        &path,
        status.as_u16(),
        &content_type,
        &received,
    );
    seen.exchanges
        .lock()
        .unwrap()
        .push(format!("{method} {path} -> {}", status.as_u16()));

    headers.remove(TRANSFER_ENCODING);
    headers.remove(CONNECTION);
    headers.remove(CONTENT_LENGTH);
    let mut response = Response::new(Body::from(received));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Holds an answer to the document as the harness's own calls are held.
fn check_answer(
    seen: &Seen,
    method: &axum::http::Method,
    path: &str,
    status: u16,
    content_type: &str,
    received: &Bytes,
) {
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    let body = match media_type {
        "application/x-ndjson" => Value::String(String::from_utf8_lossy(received).into_owned()),
        "application/json" | "application/problem+json" if !received.is_empty() => {
            match serde_json::from_slice(received) {
                Ok(body) => body,
                Err(e) => {
                    let what = format!("{method} {path} answered {status} with invalid JSON: {e}");
                    return keep(seen, || panic!("{what}"));
                }
            }
        }
        _ => Value::Null,
    };
    keep(seen, || {
        contract::check(method, path, status, content_type, &body)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Json;
    use axum::routing::{get, post};
    use serde_json::json;

    /// An upstream that answers as told, right or wrong.
    async fn upstream() -> u16 {
        let app = axum::Router::new()
            .route(
                "/api/v1/agent/enroll",
                post(|| async {
                    (
                        StatusCode::CREATED,
                        Json(json!({"device_id": uuid::Uuid::now_v7(), "device_token": "t"})),
                    )
                }),
            )
            .route(
                "/api/v1/agent/branding",
                get(|| async { Json(json!({"unexpected": true})) }),
            )
            .route(
                "/api/v1/agent/devices/{id}",
                axum::routing::delete(|| async { StatusCode::NO_CONTENT }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        port
    }

    #[tokio::test]
    async fn what_the_document_does_not_allow_is_kept_and_the_rest_passes() {
        let proxy = ContractProxy::start(upstream().await).await;
        let http = reqwest::Client::new();
        let at = |path: &str| format!("http://127.0.0.1:{}{path}", proxy.port);

        // Within the document: a request and its answer.
        let enrolled = http
            .post(at("/api/v1/agent/enroll"))
            .json(&json!({"enrollment_token": "x", "hostname": "WS-01"}))
            .send()
            .await
            .unwrap();
        assert_eq!(enrolled.status(), 201);
        let answer: Value = enrolled.json().await.unwrap();
        assert_eq!(answer["device_token"], "t", "the answer comes through");
        assert_eq!(proxy.violations(), Vec::<String>::new());

        // A request body of the wrong shape, a JSON body where none is taken, an answer the
        // document does not describe: each kept, each exchange still answered.
        let wrong = http
            .post(at("/api/v1/agent/enroll"))
            .json(&json!({"enrollment_token": 5, "hostname": "WS-01"}))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 201);
        let deleted = http
            .delete(at(&format!(
                "/api/v1/agent/devices/{}",
                uuid::Uuid::now_v7()
            )))
            .json(&json!({"why": "test"}))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 204);
        let branding = http.get(at("/api/v1/agent/branding")).send().await.unwrap();
        assert_eq!(branding.status(), 200);

        let violations = proxy.violations();
        assert_eq!(violations.len(), 3, "{violations:#?}");
        assert!(violations[0].contains("the request of POST /api/v1/agent/enroll"));
        assert!(violations[1].contains("has a JSON body the document does not describe"));
        assert!(violations[2].contains("GET /api/v1/agent/branding"));
        let exchanges = proxy.exchanges();
        assert_eq!(exchanges.len(), 4, "{exchanges:#?}");
        assert_eq!(exchanges[1], "POST /api/v1/agent/enroll -> 201");
        assert!(exchanges[2].starts_with("DELETE /api/v1/agent/devices/"));
        assert!(exchanges[2].ends_with(" -> 204"));
        assert_eq!(exchanges[3], "GET /api/v1/agent/branding -> 200");
    }
}
