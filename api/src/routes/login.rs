//! Logging in and out on a tenant host: QR challenges approved by an enrolled authenticator
//! (`/api/v1/login/challenges`), the SSO hand-off's landing (`/sso`), `/api/v1/logout` and
//! `/api/v1/me`.

use std::time::Instant;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use domain::authz::{self, Action, Principal};
use domain::event::SessionMethod;
use domain::ids::{DeviceId, TenantId, UserId};
use domain::session::{self, NewSession};
use projections::TenantRow;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::{AppState, Shared};
use crate::auth::{self, Caller};
use crate::challenges::{Poll, Refusal};
use crate::client_addr::ClientAddr;
use crate::command;
use crate::host;
use crate::metrics::Counter;
use crate::problem::Problem;
use crate::routes::params::Params;
use crate::routes::{body, no_content, written};

/// The longest a client may wait in one poll.
const MAX_WAIT_SECONDS: u64 = 60;

/// A QR challenge, to show as a QR code (`qr`) and poll until approved.
#[derive(Serialize, JsonSchema)]
pub struct Challenge {
    id: Uuid,
    /// The `idem://approve` URL the authenticator scans.
    qr: String,
    /// The host the approval is bound to.
    host: String,
    nonce: String,
    #[schemars(extend("enum" = ["portal", "desktop", "elevate"]))]
    purpose: String,
    expires_at: String,
    /// A portal challenge's secret for polling it (`Idem-Poll-Secret`); agents poll with
    /// their credential instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    poll_secret: Option<String>,
}

/// A portal challenge's state; once approved, the session token (once).
#[derive(Serialize, JsonSchema)]
pub struct ChallengeAnswer {
    #[schemars(extend("enum" = ["pending", "expired", "denied", "approved"]))]
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

/// The caller of `GET /api/v1/me`.
#[derive(Serialize, JsonSchema)]
pub struct Me {
    user: MeUser,
    tenant: MeTenant,
    /// On this host: `admin`, `technician`, `auditor` or `user`.
    roles: Vec<&'static str>,
    session: MeSession,
}

#[derive(Serialize, JsonSchema)]
pub struct MeUser {
    id: Uuid,
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    username: Option<String>,
    /// The tenant the user belongs to (their MSP on a customer host).
    tenant_id: Uuid,
}

#[derive(Serialize, JsonSchema)]
pub struct MeTenant {
    id: Uuid,
    #[schemars(extend("enum" = ["msp", "customer"]))]
    kind: String,
    name: String,
    display_name: String,
    url: String,
}

#[derive(Serialize, JsonSchema)]
pub struct MeSession {
    id: Uuid,
    #[schemars(extend("enum" = ["qr", "sso"]))]
    method: String,
    expires_at: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "LoginChallengeRequest")]
pub struct ChallengeRequest {
    #[schemars(extend("enum" = ["portal"]))]
    purpose: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    device_id: Uuid,
    /// The device's Ed25519 signature of the challenge (base64url).
    signature: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct WaitQuery {
    /// Seconds to wait for the approval (at most 60).
    wait: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
pub struct HandoffQuery {
    /// The hand-off's one-time token.
    token: Option<String>,
}

/// The header that carries a portal challenge's poll secret on its polls.
pub const POLL_SECRET_HEADER: &str = "idem-poll-secret";

fn limited(result: Result<(), std::time::Duration>) -> Result<(), Problem> {
    result.map_err(Problem::too_many)
}

/// The host name a challenge is bound to (and that approvals sign): `{label}.{base domain}`.
fn host_name(state: &AppState, tenant: &TenantRow) -> String {
    format!("{}.{}", tenant.host_label, state.config.base_domain)
}

/// `POST /api/v1/login/challenges` `{purpose: "portal"}` → 201 `{id, qr, expires_at,
/// poll_secret}`.
pub async fn create_challenge(
    State(state): State<Shared>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    request: Result<Json<ChallengeRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let tenant = host::tenant(&state, &headers).await?;
    let request = body(request)?;
    if request.purpose != "portal" {
        return Err(Problem::invalid(
            "purpose",
            "must be \"portal\" (desktop and elevation challenges are the agent's)",
        ));
    }
    limited(
        state
            .limits
            .challenges_per_address
            .take(&client.to_string(), Instant::now()),
    )?;
    new_challenge(&state, &tenant, "portal", None)
}

/// Creates a challenge on `tenant`'s host for `purpose` (asked by `agent` for the desktop
/// ones): 201 `{id, qr, host, nonce, expires_at}`, and `poll_secret` for a portal one.
pub fn new_challenge(
    state: &AppState,
    tenant: &TenantRow,
    purpose: &'static str,
    agent: Option<Uuid>,
) -> Result<Response, Problem> {
    let now = Utc::now();
    state.challenges.purge(now);
    let id = Uuid::now_v7();
    let mut nonce = [0u8; 24];
    rand::fill(&mut nonce);
    let nonce = URL_SAFE_NO_PAD.encode(nonce);
    let expires_at = now + session::CHALLENGE_LIFETIME;
    let host = host_name(state, tenant);
    // Only the creator of a portal challenge learns it (an agent polls with its credential).
    let poll_secret = agent.is_none().then(auth::new_token);
    state
        .challenges
        .create(
            id,
            tenant.id,
            host.clone(),
            nonce.clone(),
            purpose,
            agent,
            poll_secret.clone(),
            expires_at,
            now,
        )
        .ok_or_else(|| Problem::too_many(std::time::Duration::from_secs(10)))?;
    state.metrics.count(Counter::Challenges, purpose);
    let origin = state.config.tenant_url(&tenant.host_label);
    let qr = format!(
        "idem://approve?host={host}&id={id}&nonce={nonce}&origin={}",
        percent(&origin)
    );
    let body = Challenge {
        id,
        qr,
        host,
        nonce,
        purpose: purpose.into(),
        expires_at: expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        poll_secret,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Percent-encodes a URL for a query parameter (RFC 3986 unreserved characters stay).
fn percent(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Who signed an approval: the user of the enrolled device, and their MSP when the host is a
/// customer's. Refused unless the signature checks with that device's key and the user may
/// log in here.
async fn approver(
    state: &AppState,
    tenant: &TenantRow,
    device: Uuid,
    message: &str,
    signature: &str,
    purpose: &str,
) -> Result<(Uuid, Option<Uuid>), Problem> {
    let read = state.read();
    let unknown = || Problem::unauthorized("unknown device");
    // A directory user's phone on their own tenant, or an MSP user's on the MSP or a customer.
    let (owner, msp) = match tenant.msp_id {
        Some(msp) => match read.authenticator(tenant.id, device).await? {
            Some(found) => (found, None),
            None => (
                read.authenticator(msp, device).await?.ok_or_else(unknown)?,
                Some(msp),
            ),
        },
        None => (
            read.authenticator(tenant.id, device)
                .await?
                .ok_or_else(unknown)?,
            None,
        ),
    };
    let (user, public_key) = owner;
    session::verify_signature(&public_key, message.as_bytes(), signature)?;
    match msp.or(if tenant.msp_id.is_none() {
        Some(tenant.id)
    } else {
        None
    }) {
        // Elevation decides (and records) for itself whether the technician may.
        Some(_) if purpose == "elevate" => {}
        Some(msp_id) => {
            let principal = auth::msp_principal(state, msp_id, user)
                .await?
                .ok_or_else(unknown)?;
            // Those who reach the tenant, and its auditors (who may only read its audit log).
            let scope = auth::scope(tenant);
            authz::authorize(&principal, Action::ReadOwnProfile, scope)
                .or_else(|_| authz::authorize(&principal, Action::ReadAudit, scope))
                .map_err(|_| Problem::unauthorized("the user has no access to this tenant"))?;
        }
        None => {
            read.user(tenant.id, user)
                .await?
                .filter(|u| u.enabled)
                .ok_or_else(|| Problem::unauthorized("the user is disabled"))?;
        }
    }
    Ok((user, msp))
}

/// `POST /api/v1/login/challenges/{id}/approve` `{device_id, signature}` → 204.
pub async fn approve(
    State(state): State<Shared>,
    ClientAddr(client): ClientAddr,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Result<Json<ApproveRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let tenant = host::tenant(&state, &headers).await?;
    let id = Uuid::parse_str(&id).map_err(|_| Problem::not_found("no such challenge"))?;
    let request = body(request)?;
    let now_instant = Instant::now();
    limited(
        state
            .limits
            .approvals_per_address
            .take(&client.to_string(), now_instant)
            .and_then(|()| {
                state
                    .limits
                    .approvals_per_device
                    .take(&request.device_id.to_string(), now_instant)
            }),
    )?;
    let now = Utc::now();
    let approving = match state.challenges.begin_approval(id, tenant.id, now) {
        Ok(found) => found,
        Err(refusal) => {
            let problem = match refusal {
                Refusal::Unknown => Problem::not_found("no such challenge"),
                Refusal::Expired => Problem::new(
                    StatusCode::GONE,
                    "Expired",
                    "the challenge has expired; ask for a new one",
                ),
                Refusal::Used => Problem::new(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "the challenge is already approved",
                ),
                Refusal::Withdrawn => withdrawn(),
            };
            state
                .metrics
                .count(Counter::Approvals, problem.status.as_str());
            return Err(problem);
        }
    };
    let message = session::approval_message(&approving.host, id, &approving.nonce);
    let outcome = async {
        let (user, msp) = approver(
            &state,
            &tenant,
            request.device_id,
            &message,
            &request.signature,
            approving.purpose,
        )
        .await?;
        match (approving.purpose, approving.agent) {
            ("desktop", Some(agent)) => {
                crate::routes::agent::approve_desktop(&state, &tenant, agent, user, msp).await
            }
            ("elevate", Some(agent)) => {
                crate::routes::agent::approve_elevation(&state, &tenant, agent, user, msp).await
            }
            _ => {
                let token = auth::new_token();
                let decision = session::start(&NewSession {
                    session_id: Uuid::now_v7(),
                    user: UserId(user),
                    msp: msp.map(TenantId),
                    device: Some(DeviceId(request.device_id)),
                    method: SessionMethod::Qr,
                    token: token.clone(),
                    now,
                });
                let committed = command::record(
                    &state,
                    TenantId(tenant.id),
                    &format!("user:{user}"),
                    now,
                    decision,
                )
                .await?;
                state.metrics.count(Counter::Sessions, "qr");
                Ok::<_, Problem>((token, committed))
            }
        }
    }
    .await;
    match outcome {
        Ok((grant, committed)) => {
            // What the waiting client gets must hold the moment it gets it.
            state
                .projections
                .wait_for(committed.position, crate::app::READ_YOUR_WRITES)
                .await;
            if !state.challenges.approved(id, grant) {
                // Withdrawn while the approval was recorded: the grant is dropped unseen.
                let problem = withdrawn();
                state
                    .metrics
                    .count(Counter::Approvals, problem.status.as_str());
                return Err(problem);
            }
            state.metrics.count(Counter::Approvals, "approved");
            tracing::info!(challenge = %id, device = %request.device_id, "challenge approved");
            Ok(no_content(&state, Some(&committed)).await)
        }
        Err(problem) => {
            state.challenges.release(id);
            state
                .metrics
                .count(Counter::Approvals, problem.status.as_str());
            tracing::info!(challenge = %id, device = %request.device_id, status = problem.status.as_u16(), "approval refused");
            Err(problem)
        }
    }
}

/// The answer to an approval of a withdrawn challenge (see [`crate::challenges`]).
fn withdrawn() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "Conflict",
        "the challenge was withdrawn: a second party asked for its answer; ask for a new code",
    )
}

/// `GET /api/v1/login/challenges/{id}?wait=S` → `{status, token?}`; the token once, with the
/// session cookie for browsers. A second party's poll withdraws the challenge (see
/// [`crate::challenges`]): every poll of it answers `denied`.
pub async fn poll(
    State(state): State<Shared>,
    Path(id): Path<String>,
    query: Result<Params<WaitQuery>, Problem>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let tenant = host::tenant(&state, &headers).await?;
    let Params(query) = query?;
    let id = Uuid::parse_str(&id).map_err(|_| Problem::not_found("no such challenge"))?;
    // An agent's challenge is answered to that agent only (`/api/v1/agent/challenges/{id}`).
    if !matches!(state.challenges.owner(id, tenant.id), Some(("portal", _))) {
        return Err(Problem::not_found("no such challenge"));
    }
    let wait = query.wait.unwrap_or(0).min(MAX_WAIT_SECONDS);
    let until = Utc::now()
        + chrono::Duration::seconds(i64::try_from(wait).unwrap_or(MAX_WAIT_SECONDS as i64));
    let secret = headers
        .get(POLL_SECRET_HEADER)
        .and_then(|v| v.to_str().ok());
    let answer = tokio::select! {
        answer = state.challenges.poll(id, tenant.id, secret, until) => {
            answer.ok_or_else(|| Problem::not_found("no such challenge"))?
        }
        // Stopping: the page asks again, of the next process.
        () = state.stopped() => Poll::Pending,
    };
    let (status, token) = match answer {
        Poll::Pending => ("pending", None),
        Poll::Expired => ("expired", None),
        Poll::Denied => ("denied", None),
        Poll::Approved(token) => ("approved", token),
    };
    let cookie = token
        .as_deref()
        .and_then(|token| auth::session_cookie(&state, token));
    let mut response = Json(ChallengeAnswer { status, token }).into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// `GET /sso?token=…` on a customer host: opens the hand-off made by
/// `POST /api/v1/customers/{name}/sso`, sets this host's session cookie and goes to the admin
/// portal. One use, 60 seconds, and only while the user still reaches the customer.
pub async fn open_handoff(
    State(state): State<Shared>,
    query: Result<Params<HandoffQuery>, Problem>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let tenant = host::tenant(&state, &headers).await?;
    let Params(query) = query?;
    let refused = || Problem::unauthorized("the sign-in link is invalid, used or expired");
    let token = query.token.ok_or_else(refused)?;
    let now = Utc::now();
    let handoff = state
        .challenges
        .redeem(&session::token_digest(&token), tenant.id, now)
        .ok_or_else(refused)?;
    let principal = auth::msp_principal(&state, handoff.msp, handoff.user)
        .await?
        .ok_or_else(refused)?;
    authz::authorize(&principal, Action::OpenCustomer, auth::scope(&tenant))
        .map_err(|_| Problem::unauthorized("your access to this tenant has been revoked"))?;
    let session_token = auth::new_token();
    let committed = command::record(
        &state,
        TenantId(tenant.id),
        &format!("user:{}", handoff.user),
        now,
        session::start(&NewSession {
            session_id: Uuid::now_v7(),
            user: UserId(handoff.user),
            msp: Some(TenantId(handoff.msp)),
            device: None,
            method: SessionMethod::Sso,
            token: session_token.clone(),
            now,
        }),
    )
    .await?;
    state.metrics.count(Counter::Sessions, "sso");
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/admin")]).into_response();
    if let Some(cookie) = auth::session_cookie(&state, &session_token) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(written(&state, Some(&committed), response).await)
}

/// `POST /api/v1/logout` → 204; the session is over on every instance once projected.
pub async fn logout(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let tenant = host::tenant(&state, &headers).await?;
    let caller = auth::caller(&state, &method, &headers, &tenant).await?;
    let committed = command::record(
        &state,
        TenantId(tenant.id),
        &caller.actor,
        Utc::now(),
        session::end(caller.session.session_id),
    )
    .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, auth::cleared_cookie(&state));
    Ok(written(&state, Some(&committed), response).await)
}

/// The roles a caller holds on the host's tenant, for `/me` and the portals.
pub fn roles(caller: &Caller, tenant: &TenantRow) -> Vec<&'static str> {
    let mut roles = Vec::new();
    match &caller.principal {
        Principal::MspUser {
            admin,
            delegated,
            auditor_of,
            ..
        } => {
            if *admin {
                roles.push("admin");
            } else if tenant.msp_id.is_none() || delegated.contains(&TenantId(tenant.id)) {
                roles.push("technician");
            }
            if auditor_of.contains(&TenantId(tenant.id)) {
                roles.push("auditor");
            }
        }
        Principal::CustomerUser { .. } => roles.push("user"),
        _ => {}
    }
    roles
}

/// `GET /api/v1/me` → `{user, tenant, roles}`.
pub async fn me(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let tenant = host::tenant(&state, &headers).await?;
    let caller = auth::caller(&state, &method, &headers, &tenant).await?;
    let home = caller.session.msp_id.unwrap_or(tenant.id);
    let user = state
        .read()
        .user(home, caller.session.user_id)
        .await?
        .ok_or_else(|| Problem::unauthorized("the user no longer exists"))?;
    let body = Me {
        user: MeUser {
            id: user.id,
            email: user.email,
            first_name: user.first_name,
            last_name: user.last_name,
            username: user.username,
            tenant_id: home,
        },
        tenant: MeTenant {
            id: tenant.id,
            kind: tenant.kind.clone(),
            name: tenant.name.clone(),
            display_name: tenant.display_name.clone(),
            url: state.config.tenant_url(&tenant.host_label),
        },
        roles: roles(&caller, &tenant),
        session: MeSession {
            id: caller.session.session_id,
            method: caller.session.method.clone(),
            expires_at: caller.session.expires_at.clone(),
        },
    };
    Ok(Json(body).into_response())
}
