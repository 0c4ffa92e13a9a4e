//! Liveness, readiness and metrics.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eventlog::EventLog;

use std::sync::atomic::Ordering;

use crate::app::{AppState, Shared};
use crate::problem::Problem;

/// The projection lag beyond which the service reports not ready.
pub const MAX_READY_LAG: u64 = 10_000;

/// What liveness and readiness say once the log stopped taking writes.
const LOG_STOPPED: &str = "the event log stopped taking writes after a failed write to its \
                           journal; restart idemd, whose recovery settles it";

/// Alive: the process answers, and its log takes writes. A log that stopped after a failed
/// journal write takes none until it is reopened, so the process is reported dead: a
/// supervisor's restart is the remedy (recovery decides whether the failed write happened).
pub async fn healthz(State(state): State<Shared>) -> Response {
    match log_stopped(&state) {
        false => "ok\n".into_response(),
        true => (StatusCode::SERVICE_UNAVAILABLE, format!("{LOG_STOPPED}\n")).into_response(),
    }
}

/// Whether the log takes no more writes; logs the reason once (it names files, and stays out
/// of answers).
fn log_stopped(state: &AppState) -> bool {
    let Some(failure) = state.log.write_failure() else {
        return false;
    };
    if !state.log_failure_logged.swap(true, Ordering::Relaxed) {
        tracing::error!(%failure, "{LOG_STOPPED}");
    }
    true
}

/// Whether the service takes traffic, and why not (the same body with 503).
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct Readiness {
    ready: bool,
    /// False once a write to the log failed: the service must be restarted.
    log_writable: bool,
    /// The log's last position.
    head: u64,
    /// How far the furthest-behind projection is from `head`.
    lag: u64,
    max_lag: u64,
    projections: Vec<projections::ProjectorStatus>,
    /// Whether the key mirror has every deletion; null without a mirror.
    key_mirror_current: Option<bool>,
    /// The public fingerprint of the root key that wraps new data keys.
    root_key_id: String,
    /// True while a root key rotation is unfinished (`idemd rotate-root-key` takes it up).
    root_key_rotating: bool,
}

/// Ready: every projector running and not failing, lag bounded. Quarantined tenants are listed
/// in the body (and counted in /metrics) without making the service unready; so is a key
/// mirror whose last refresh failed (`key_mirror_current`: false; null without a mirror).
pub async fn readyz(State(state): State<Shared>) -> Response {
    let status = state.projections.status();
    let log_writable = !log_stopped(&state);
    let ready = log_writable && status.is_ready(MAX_READY_LAG);
    let body = Readiness {
        ready,
        log_writable,
        head: status.head,
        lag: status.lag(),
        max_lag: MAX_READY_LAG,
        key_mirror_current: state.key_mirror.as_ref().map(|m| !m.is_behind()),
        root_key_id: state.root_keys.current().id(),
        root_key_rotating: state.root_keys.is_rotating(),
        projections: status.projectors,
    };
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

/// Marks a request that came in on the metrics listener (`IDEM_METRICS_BIND`).
#[derive(Clone, Copy, Debug)]
pub struct OnMetricsListener;

/// Prometheus text; with `IDEM_METRICS_TOKEN_FILE`, only for a request bearing its token as
/// the file holds it now (401 with `WWW-Authenticate: Bearer` otherwise). With
/// `IDEM_METRICS_BIND`, only on that listener: the listen address answers 404.
pub async fn metrics(
    State(state): State<Shared>,
    listener: Option<axum::Extension<OnMetricsListener>>,
    headers: HeaderMap,
) -> Response {
    if state.config.metrics_bind.is_some() && listener.is_none() {
        return Problem::not_found("the metrics are served on their own listener").into_response();
    }
    if let Some(gate) = &state.config.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        if !gate.admits(given) {
            let mut refusal =
                Problem::unauthorized("the metrics need the bearer token this service was given")
                    .into_response();
            refusal.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"metrics\""),
            );
            return refusal;
        }
    }
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
        "idem_log_writable",
        "1 while the log takes writes; 0 once a failed journal write stopped them.",
        &[(None, u64::from(state.log.write_failure().is_none()))],
    );
    if let Some(mirror) = &state.key_mirror {
        gauge(
            &mut out,
            "idem_key_mirror_current",
            "1 while the key mirror is up to date; 0 after a failed refresh (it may still \
             hold a deleted tenant's key), until a retry succeeds.",
            &[(None, u64::from(!mirror.is_behind()))],
        );
    }
    gauge(
        &mut out,
        "idem_http_connections",
        "HTTP connections open (long-polls and idle keep-alive connections included).",
        &[(None, state.connections.open() as u64)],
    );
    gauge(
        &mut out,
        "idem_http_connections_max",
        "HTTP connections served at once (IDEM_MAX_CONNECTIONS); more wait to be accepted.",
        &[(None, state.connections.limit() as u64)],
    );
    let per_address = state.connections.per_address();
    gauge(
        &mut out,
        "idem_http_connections_per_address_max",
        "HTTP connections one client address may hold (IDEM_MAX_CONNECTIONS_PER_ADDRESS).",
        &[(None, per_address.cap() as u64)],
    );
    gauge(
        &mut out,
        "idem_http_connection_addresses",
        "Client addresses holding connections now (trusted proxies not counted).",
        &[(None, per_address.addresses() as u64)],
    );
    let _ = writeln!(
        out,
        "# HELP idem_http_connections_refused_total Connections refused with a 503 as their \
         address held IDEM_MAX_CONNECTIONS_PER_ADDRESS already.\n\
         # TYPE idem_http_connections_refused_total counter\n\
         idem_http_connections_refused_total {}",
        per_address.refused()
    );
    let (histories, weight) = state.histories.held();
    gauge(
        &mut out,
        "idem_history_cache_tenants",
        "Tenants whose folded state is held in memory for their next command.",
        &[(None, histories as u64)],
    );
    gauge(
        &mut out,
        "idem_history_cache_bytes",
        "Estimated size of those states (encoded), bounded by the cache's budget.",
        &[(None, weight as u64)],
    );
    gauge(
        &mut out,
        "idem_root_key_rotating",
        "1 while a root key rotation is unfinished (run idemd rotate-root-key again).",
        &[(None, u64::from(state.root_keys.is_rotating()))],
    );
    match state.operator_log.latest(&state.log).await {
        Ok(latest) => {
            let seconds = |at: Option<chrono::DateTime<chrono::Utc>>| {
                at.map_or(0, |at| u64::try_from(at.timestamp()).unwrap_or(0))
            };
            gauge(
                &mut out,
                "idem_last_backup_timestamp_seconds",
                "Unix time of the last idemd backup the operator log records; 0 if none.",
                &[(None, seconds(latest.backup))],
            );
            gauge(
                &mut out,
                "idem_last_root_key_rotation_timestamp_seconds",
                "Unix time of the last root key rotation the operator log records; 0 if none.",
                &[(None, seconds(latest.rotation))],
            );
        }
        // Left out rather than shown as 0, which would read as "never".
        Err(e) => tracing::error!(error = %e, "the operator log could not be read for /metrics"),
    }
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
    crate::process_stats::render(&mut out);
    if let Some(pipe) = crate::log_pipe::LogPipe::installed() {
        let _ = writeln!(
            out,
            "# HELP idem_log_lines_dropped_total Log lines dropped because the log's queue was \
             full (its reader, journald or a pipe, fell behind).\n\
             # TYPE idem_log_lines_dropped_total counter\nidem_log_lines_dropped_total {}",
            pipe.dropped()
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
