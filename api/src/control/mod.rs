//! The operator's control socket: `control.sock` in the data directory, where the `idemd`
//! commands reach the running service (it holds the log exclusively): `signup` (also while
//! public signup is closed), `backup`, `rebuild`, `retry-quarantined`, `export`, `verify`,
//! `state` and `rotate-root-key`. HTTP over a Unix
//! socket, JSON in and out, errors as problem+json like the public API.
//!
//! Who may use it: the socket is created 0600 and every connection's peer credentials are
//! checked, so only the service's own user (and root) get an answer. It is not a network
//! interface and has no other authentication.

pub mod client;

use std::path::{Path, PathBuf};

use axum::extract::connect_info::Connected;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::IncomingStream;
use axum::{Json, Router};
use projections::Projection;
use serde::Deserialize;
use tokio::net::UnixListener;

use crate::app::{Shared, StartError};
use crate::config::Config;
use crate::operator;
use crate::operator_identity::OperatorIdentity;
use crate::problem::Problem;
use crate::routes::body;
use crate::routes::signup::{SignupRequest, create_msp};

/// The socket's file name in the data directory.
pub const SOCKET: &str = "control.sock";

/// Where the service at `config` listens for operator commands.
pub fn socket_path(config: &Config) -> PathBuf {
    config.data_dir.join(SOCKET)
}

/// Binds the control socket, owner-only. A socket file left by a service that died is
/// replaced: the event log's lock, taken before this, proves no other service uses this data
/// directory.
pub fn bind(path: &Path) -> Result<UnixListener, StartError> {
    let err = |e: std::io::Error| StartError::Control(path.display().to_string(), e);
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    // Narrowed to 0600 once bound. (Not through the umask: it is the whole process's, and
    // other threads create files.) A connection in between meets the peer check below.
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(err)?;
    Ok(listener)
}

/// The connecting process's user and process id, from the socket's peer credentials.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    uid: Option<u32>,
    pid: Option<i32>,
}

impl Peer {
    /// Who asked, for the operator log (only asked of a peer `same_user` let through).
    fn identity(&self) -> OperatorIdentity {
        OperatorIdentity::of_peer(self.uid.unwrap_or(u32::MAX), self.pid)
    }
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        let credentials = stream.io().peer_cred().ok();
        Peer {
            uid: credentials.map(|c| c.uid()),
            pid: credentials.and_then(|c| c.pid()),
        }
    }
}

/// The operator's routes.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/signup", post(signup))
        .route("/v1/backup", post(backup))
        .route("/v1/rebuild", post(rebuild))
        .route("/v1/retry-quarantined", post(retry_quarantined))
        .route("/v1/verify", post(verify))
        .route("/v1/export", post(export))
        .route("/v1/state", post(state_at))
        .route("/v1/rotate-root-key", post(rotate_root_key))
        .fallback(crate::routes::not_found)
        .layer(middleware::from_fn(same_user))
        .with_state(state)
}

/// Whether a peer of user `peer` may use the socket of a service running as `own`.
fn allowed(peer: Option<u32>, own: u32) -> bool {
    matches!(peer, Some(uid) if uid == own || uid == 0)
}

/// Answers only the service's own user and root.
async fn same_user(ConnectInfo(peer): ConnectInfo<Peer>, request: Request, next: Next) -> Response {
    match allowed(peer.uid, rustix::process::geteuid().as_raw()) {
        true => next.run(request).await,
        false => Problem::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "the control socket answers the service's own user and root only",
        )
        .into_response(),
    }
}

/// `POST /v1/signup`: a new MSP tenant, whether or not public signup is open.
///
/// Its actor is `operator` alone, not who ran it: the event is in the new tenant's own
/// stream, which its admins read in their audit, and the deployment's Unix users are none of
/// their business.
async fn signup(
    State(state): State<Shared>,
    request: Result<Json<SignupRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    create_msp(&state, body(request)?, crate::operator_log::ACTOR).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupRequest {
    /// A new directory, on the service's machine.
    to: PathBuf,
}

/// `POST /v1/backup`: a consistent copy of the log into a new directory, while the service
/// goes on (see `RocksLog::backup`), then the key mirror brought up to date.
async fn backup(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Result<Json<BackupRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let request = body(request)?;
    if !request.to.is_absolute() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid backup directory",
            "the backup directory must be an absolute path (the service may run elsewhere than the command)",
        ));
    }
    let done = operator::backup_log(
        &state.log,
        state.key_mirror.as_ref(),
        &request.to,
        &peer.identity(),
    )
    .await?;
    tracing::info!(to = %request.to.display(), head = done.head, events = done.events, keys = done.mirrored_keys, "backup written");
    Ok(Json(done).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RebuildRequest {
    /// Projection names (`directory`, `audit`), rebuilt one after the other.
    projections: Vec<String>,
}

/// `POST /v1/rebuild`: each projection rebuilt from the log into a new generation while the
/// current one is served, and swapped in once caught up; answers once all are.
async fn rebuild(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Result<Json<RebuildRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let request = body(request)?;
    if request.projections.is_empty() {
        return Err(Problem::invalid(
            "projections",
            "name at least one projection",
        ));
    }
    let mut which = Vec::new();
    for name in &request.projections {
        match Projection::from_name(name) {
            Some(projection) if !which.contains(&projection) => which.push(projection),
            Some(_) => {}
            None => {
                return Err(Problem::invalid(
                    "projections",
                    &format!("no projection {name:?}: directory or audit"),
                ));
            }
        }
    }
    let mut done = Vec::new();
    for projection in which {
        let started = std::time::Instant::now();
        let generation = state
            .projections
            .rebuild(projection)
            .await
            .map_err(|e| match e {
                // Another rebuild of it is running.
                projections::Error::Config(detail) => {
                    Problem::new(StatusCode::CONFLICT, "Refused", detail)
                }
                other => Problem::internal(&other),
            })?;
        tracing::info!(%projection, generation, "rebuilt online");
        operator::record_rebuilt(&state.log, projection, generation, &peer.identity()).await?;
        done.push(operator::Rebuilt {
            projection: projection.name().to_owned(),
            generation,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    Ok(Json(done).into_response())
}

/// `POST /v1/retry-quarantined`: every quarantined tenant retried now; answers how many stay
/// quarantined, per projection.
async fn retry_quarantined(State(state): State<Shared>) -> Result<Response, Problem> {
    let left = state.projections.retry_quarantined().await?;
    tracing::info!(?left, "quarantined tenants retried");
    let left: Vec<operator::StillQuarantined> = left
        .into_iter()
        .map(|(projection, quarantined)| operator::StillQuarantined {
            projection: projection.name().to_owned(),
            quarantined,
        })
        .collect();
    Ok(Json(left).into_response())
}

/// `POST /v1/rotate-root-key`: a new root key wraps every tenant's data key, while the
/// service goes on (see `crate::root_key`); then the key mirror brought up to date.
async fn rotate_root_key(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
) -> Result<Response, Problem> {
    let done = operator::rotate_with(
        &state.log,
        &state.root_keys,
        &state.config.root_key_file,
        state.key_mirror.as_ref(),
        &peer.identity(),
    )
    .await?;
    Ok(Json(done).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    /// A tenant's id or host label; every tenant if absent.
    tenant: Option<String>,
}

/// `POST /v1/verify`: the tenants' hash chains, walked on the live log.
async fn verify(
    State(state): State<Shared>,
    request: Result<Json<VerifyRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let request = body(request)?;
    let checks = operator::verify_log(&state.log, request.tenant.as_deref(), false).await?;
    Ok(Json(checks).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportRequest {
    tenant: String,
    #[serde(default = "first_seq")]
    from_seq: u64,
}

fn first_seq() -> u64 {
    1
}

/// `POST /v1/export`: a page of a tenant's log as NDJSON lines (`operator::ExportPage`).
async fn export(
    State(state): State<Shared>,
    request: Result<Json<ExportRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let request = body(request)?;
    let stream = operator::tenant_stream(&state.log, &request.tenant).await?;
    let page = operator::export_page(&state.log, stream, request.from_seq.max(1)).await?;
    Ok(Json(page).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateRequest {
    tenant: String,
    at: chrono::DateTime<chrono::Utc>,
}

/// `POST /v1/state`: a tenant as it stood at a time, replayed from its log.
async fn state_at(
    State(state): State<Shared>,
    request: Result<Json<StateRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let request = body(request)?;
    let stream = operator::tenant_stream(&state.log, &request.tenant).await?;
    Ok(Json(operator::state_of(&state.log, stream, request.at).await?).into_response())
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn only_the_services_own_user_and_root_may_connect() {
        assert!(allowed(Some(1000), 1000));
        assert!(allowed(Some(0), 1000));
        assert!(allowed(Some(0), 0));
        assert!(!allowed(Some(1001), 1000));
        assert!(!allowed(Some(65534), 0));
        assert!(!allowed(None, 1000), "unknown credentials are refused");
    }
}
