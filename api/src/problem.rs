//! Errors as `application/problem+json` (RFC 9457): the one place where any error becomes an
//! HTTP answer. A 500 logs its detail and answers without it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::decision::DomainError;
use serde::Serialize;

/// One field's problem, in a 422.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

/// The problem type of a 403 to a workstation login whose password is right but temporary:
/// the agent asks the user for a new one and sends it to `POST /api/v1/agent/password`.
pub const PASSWORD_CHANGE_REQUIRED: &str = "tag:idem.invalid,2026:password-change-required";

/// An error answer.
#[derive(Debug)]
pub struct Problem {
    /// The problem type: `about:blank` (the status says it all) unless a client must tell
    /// this problem from others of its status.
    pub kind: &'static str,
    pub status: StatusCode,
    pub title: &'static str,
    pub detail: String,
    pub errors: Vec<FieldProblem>,
    /// Seconds to wait, for a 429 or a 503.
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank",
            status,
            title,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// Too many calls: wait `wait` before the next.
    pub fn too_many(wait: std::time::Duration) -> Problem {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Problem {
            retry_after: Some(seconds.max(1)),
            ..Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                format!("try again in {} seconds", seconds.max(1)),
            )
        }
    }

    /// The service cannot take this now (503): come back in `seconds`.
    pub fn busy(detail: impl Into<String>, seconds: u64) -> Problem {
        Problem {
            retry_after: Some(seconds.max(1)),
            ..Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Busy", detail)
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "Not found", detail)
    }

    /// One invalid field (422).
    pub fn invalid(field: &str, message: &str) -> Problem {
        Problem {
            errors: vec![FieldProblem {
                field: field.to_owned(),
                message: message.to_owned(),
            }],
            ..Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid input",
                format!("{field}: {message}"),
            )
        }
    }

    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "Not authenticated", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "Forbidden", detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "Malformed request", detail)
    }

    /// A failure of ours: logged in full, answered without detail.
    pub fn internal(error: &dyn std::fmt::Display) -> Problem {
        let id = uuid::Uuid::now_v7();
        tracing::error!(error_id = %id, %error, "internal error");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            format!("something went wrong on our side (error id {id})"),
        )
    }
}

impl From<DomainError> for Problem {
    fn from(error: DomainError) -> Problem {
        match error {
            DomainError::Invalid(fields) => Problem {
                kind: "about:blank",
                status: StatusCode::UNPROCESSABLE_ENTITY,
                title: "Invalid input",
                detail: "some fields are invalid".into(),
                errors: fields
                    .into_iter()
                    .map(|f| FieldProblem {
                        field: f.field.to_owned(),
                        message: f.message,
                    })
                    .collect(),
                retry_after: None,
            },
            DomainError::NotFound(what) => Problem::not_found(format!("no such {what}")),
            DomainError::Conflict(detail) => Problem::new(StatusCode::CONFLICT, "Conflict", detail),
            DomainError::Unauthenticated(detail) => {
                Problem::new(StatusCode::UNAUTHORIZED, "Not authenticated", detail)
            }
            other @ DomainError::Corrupt(_) => Problem::internal(&other),
        }
    }
}

/// A read model that fails is our failure: a logged 500.
impl From<projections::Error> for Problem {
    fn from(error: projections::Error) -> Problem {
        Problem::internal(&error)
    }
}

/// A stored event that does not decode: the log is damaged or newer than this build.
impl From<domain::event::DecodeError> for Problem {
    fn from(error: domain::event::DecodeError) -> Problem {
        Problem::internal(&error)
    }
}

/// The event log failing where no caller mistake can explain it (the write path maps its
/// conflicts itself): a logged 500.
impl From<eventlog::Error> for Problem {
    fn from(error: eventlog::Error) -> Problem {
        Problem::internal(&error)
    }
}

/// An operator command run by the service: a tenant that does not exist is a 404 naming it,
/// a refusal the operator can fix a 409 saying why, anything else a logged 500.
impl From<crate::operator::OperatorError> for Problem {
    fn from(error: crate::operator::OperatorError) -> Problem {
        match error {
            crate::operator::OperatorError::Usage(detail) => Problem::not_found(detail),
            crate::operator::OperatorError::Refused(detail) => {
                Problem::new(axum::http::StatusCode::CONFLICT, "Refused", detail)
            }
            other => Problem::internal(&other),
        }
    }
}

/// The password-hashing pool: full is a 503 to retry shortly; gone or panicked, a logged 500.
impl From<crate::hashing::HashingError> for Problem {
    fn from(error: crate::hashing::HashingError) -> Problem {
        match error {
            crate::hashing::HashingError::Busy => Problem::busy(error.to_string(), 1),
            crate::hashing::HashingError::Failed => Problem::internal(&error),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "<[FieldProblem]>::is_empty")]
    errors: &'a [FieldProblem],
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let json = self.body_json();
        let mut response = (self.status, json).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl Problem {
    /// The answer's body: the problem document.
    fn body_json(&self) -> Vec<u8> {
        let body = Body {
            kind: self.kind,
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            errors: &self.errors,
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// This problem as a whole HTTP/1.1 answer that closes its connection, for a refusal sent
    /// before any request is read (`serve`'s per-address cap), where no router runs.
    pub fn into_http1_bytes(self) -> Vec<u8> {
        let status = self.status;
        let retry_after = self.retry_after;
        let json = self.body_json();
        let mut head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            json.len()
        );
        if let Some(seconds) = retry_after {
            head.push_str(&format!("retry-after: {seconds}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&json);
        bytes
    }
}

/// A client error answered in plain text: what axum's own extractors send.
pub fn is_plain_refusal(response: &Response) -> bool {
    response.status().is_client_error()
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/plain"))
}

/// The API's answers are problems, including the refusals axum's own extractors make in plain
/// text before a handler runs (a path segment that is not UTF-8, say): those become problems
/// with the same status, their text as the detail.
pub async fn from_plain_refusal(response: Response) -> Response {
    if !is_plain_refusal(&response) {
        return response;
    }
    let status = response.status();
    let (mut parts, body) = response.into_parts();
    let detail = match axum::body::to_bytes(body, 4096).await {
        Ok(text) => String::from_utf8_lossy(&text).into_owned(),
        Err(_) => String::new(),
    };
    let problem = Problem::new(
        status,
        status.canonical_reason().unwrap_or("Refused"),
        detail,
    )
    .into_response();
    let (problem_parts, problem_body) = problem.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &problem_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, problem_body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::HashingError;

    #[test]
    fn a_problem_sent_before_any_request_is_a_whole_http_answer_that_closes() {
        let bytes = Problem::busy("too many connections", 5).into_http1_bytes();
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        assert_eq!(lines.next(), Some("HTTP/1.1 503 Service Unavailable"));
        let headers: Vec<&str> = lines.collect();
        assert!(headers.contains(&"content-type: application/problem+json"));
        assert!(headers.contains(&"connection: close"));
        assert!(headers.contains(&"retry-after: 5"));
        assert!(headers.contains(&format!("content-length: {}", body.len()).as_str()));
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 503);
        assert_eq!(problem["detail"], "too many connections");
    }

    #[test]
    fn a_full_hashing_queue_is_a_503_to_retry_and_a_failed_pool_a_500_without_detail() {
        let busy = Problem::from(HashingError::Busy).into_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            busy.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let failed = Problem::from(HashingError::Failed);
        assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!failed.detail.contains("hashing"), "{}", failed.detail);
    }
}
