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

/// Ready: every projector running, none failing or quarantining a tenant, lag bounded.
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

/// Prometheus text.
pub async fn metrics(State(state): State<Shared>) -> Response {
    let status = state.projections.status();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP idem_log_head_position Position of the newest durable event.\n\
         # TYPE idem_log_head_position gauge\nidem_log_head_position {}",
        state.log.head_position()
    );
    let _ = writeln!(
        out,
        "# HELP idem_projection_checkpoint Last log position applied, per projection.\n\
         # TYPE idem_projection_checkpoint gauge"
    );
    for p in &status.projectors {
        let _ = writeln!(
            out,
            "idem_projection_checkpoint{{projection=\"{}\"}} {}",
            p.projection, p.checkpoint
        );
    }
    let _ = writeln!(
        out,
        "# HELP idem_projection_lag Positions between the log head and the checkpoint.\n\
         # TYPE idem_projection_lag gauge"
    );
    for p in &status.projectors {
        let _ = writeln!(
            out,
            "idem_projection_lag{{projection=\"{}\"}} {}",
            p.projection,
            status.head.saturating_sub(p.checkpoint)
        );
    }
    let _ = writeln!(
        out,
        "# HELP idem_projection_quarantined_tenants Tenants whose projection stopped at a bad event.\n\
         # TYPE idem_projection_quarantined_tenants gauge"
    );
    for p in &status.projectors {
        let _ = writeln!(
            out,
            "idem_projection_quarantined_tenants{{projection=\"{}\"}} {}",
            p.projection,
            p.quarantined.len()
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
