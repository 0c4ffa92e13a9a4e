//! Liveness, readiness and metrics.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use eventlog::EventLog;

use crate::app::Shared;

/// The projection lag beyond which the service reports not ready.
pub const MAX_READY_LAG: u64 = 10_000;

/// Alive: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: every projector running and not failing, lag bounded. Quarantined tenants are listed
/// in the body (and counted in /metrics) without making the service unready.
pub async fn readyz(State(state): State<Shared>) -> Response {
    let status = state.projections.status();
    let ready = status.is_ready(MAX_READY_LAG);
    let body = serde_json::json!({
        "ready": ready,
        "head": status.head,
        "lag": status.lag(),
        "max_lag": MAX_READY_LAG,
        "projections": status.projectors,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

/// Writes one gauge family: its help, its type, and a sample per labelled value.
fn gauge(out: &mut String, name: &str, help: &str, samples: &[(Option<&str>, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (projection, value) in samples {
        match projection {
            Some(p) => {
                let _ = writeln!(out, "{name}{{projection=\"{p}\"}} {value}");
            }
            None => {
                let _ = writeln!(out, "{name} {value}");
            }
        }
    }
}

/// Prometheus text.
pub async fn metrics(State(state): State<Shared>) -> Response {
    let status = state.projections.status();
    let per = |value: &dyn Fn(&projections::ProjectorStatus) -> u64| {
        status
            .projectors
            .iter()
            .map(|p| (Some(p.projection), value(p)))
            .collect::<Vec<_>>()
    };
    let mut out = String::new();
    gauge(
        &mut out,
        "idem_log_head_position",
        "Position of the newest durable event.",
        &[(None, state.log.head_position())],
    );
    gauge(
        &mut out,
        "idem_projection_checkpoint",
        "Last log position applied, per projection.",
        &per(&|p| p.checkpoint),
    );
    gauge(
        &mut out,
        "idem_projection_lag",
        "Positions between the log head and the checkpoint.",
        &per(&|p| status.head.saturating_sub(p.checkpoint)),
    );
    gauge(
        &mut out,
        "idem_projection_quarantined_tenants",
        "Tenants whose projection stopped at a bad event.",
        &per(&|p| p.quarantined.len() as u64),
    );
    state.metrics.render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
