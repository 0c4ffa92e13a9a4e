//! The HTTP handlers, one module per part of the contract.

pub mod health;
pub mod onboarding;
pub mod signup;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::response::Response;
use eventlog::Committed;

use crate::app::{AppState, READ_YOUR_WRITES};
use crate::problem::Problem;

/// An 8-digit one-time code from the operating system's CSPRNG (through rand's thread RNG).
pub fn one_time_code() -> String {
    format!("{:08}", rand::random_range(0..100_000_000u32))
}

/// JSON bodies: malformed or of the wrong shape is a 400 naming what is wrong.
pub fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Problem> {
    body.map(|Json(value)| value)
        .map_err(|rejection| Problem::bad_request(rejection.body_text()))
}

/// The answer to a write: once the projections have reached it (read-your-writes), with its
/// log position in `Idem-Position`.
pub async fn written(
    state: &AppState,
    committed: Option<&Committed>,
    mut response: Response,
) -> Response {
    if let Some(committed) = committed {
        state
            .projections
            .wait_for(committed.position, READ_YOUR_WRITES)
            .await;
        if let Ok(value) = committed.position.to_string().parse() {
            response.headers_mut().insert("idem-position", value);
        }
    }
    response
}

/// Any path the contract does not have.
pub async fn not_found() -> Problem {
    Problem::not_found("no such route")
}
