//! The `idemd` commands' side of the control socket: one JSON request to the running service,
//! its answer, or why there was none.

use std::path::Path;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket: the service is stopped (or runs on another data
    /// directory).
    #[error("idemd is not running on this data directory (nothing answers at {0})")]
    NotRunning(String),
    /// The service answered with a problem.
    #[error("{title}: {detail}")]
    Refused {
        status: u16,
        title: String,
        detail: String,
    },
    #[error("talking to idemd at {0}: {1}")]
    Transport(String, String),
}

/// Sends `body` to `route` (e.g. `/v1/backup`) on the control socket at `socket`.
pub async fn call(socket: &Path, route: &str, body: &Value) -> Result<Value, ClientError> {
    let shown = socket.display().to_string();
    let transport =
        |e: &dyn std::fmt::Display| ClientError::Transport(shown.clone(), e.to_string());
    if !socket.exists() {
        return Err(ClientError::NotRunning(shown));
    }
    let client = reqwest::Client::builder()
        .unix_socket(socket)
        .build()
        .map_err(|e| transport(&e))?;
    // The host is a placeholder: the socket decides where the request goes.
    let answer = client
        .post(format!("http://idemd{route}"))
        .json(body)
        .send()
        .await
        .map_err(|e| {
            if e.is_connect() {
                ClientError::NotRunning(shown.clone())
            } else {
                transport(&e)
            }
        })?;
    let status = answer.status();
    let value: Value = answer.json().await.map_err(|e| transport(&e))?;
    if status.is_success() {
        return Ok(value);
    }
    let text = |field: &str| {
        value
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let mut detail = text("detail");
    if let Some(errors) = value.get("errors").and_then(Value::as_array) {
        for error in errors {
            let field = error.get("field").and_then(Value::as_str).unwrap_or("");
            let message = error.get("message").and_then(Value::as_str).unwrap_or("");
            detail.push_str(&format!("\n  {field}: {message}"));
        }
    }
    Err(ClientError::Refused {
        status: status.as_u16(),
        title: text("title"),
        detail,
    })
}
