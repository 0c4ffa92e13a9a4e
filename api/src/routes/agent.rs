//! The desktop agent's routes on its customer's host: enrollment with a one-time token, the
//! directory change feed (long-polling, woken per tenant by `feed`), password logins checked
//! against the sealed verifiers, and the login screen's branding. Agents authenticate with the
//! device credential enrollment gave them (`Authorization: Bearer`), valid on their tenant's
//! host only and refused the moment the device is revoked. Admins list and revoke devices.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::authz::{self, Action, Principal};
use domain::customer::{self, CustomerCommand};
use domain::decision::DomainError;
use domain::event::{
    AttemptOutcome, DesktopLoginMethod, DesktopLoginRecorded, ElevationEnd, ElevationEnded,
    LocalAccountAction,
};
use domain::ids::{DeviceId, TenantId, UserId};
use domain::session::token_digest;
use domain::validate;
use projections::TenantRow;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::{AppState, Shared};
use crate::auth;
use crate::client_addr::ClientAddr;
use crate::command;
use crate::host;
use crate::problem::{PASSWORD_CHANGE_REQUIRED, Problem};
use crate::routes::params::Params;
use crate::routes::{body, no_content, written};

/// The longest a feed request may wait.
const MAX_WAIT_SECONDS: u64 = 60;
/// Feed entries per page at most.
const MAX_PAGE: usize = 1000;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time token an admin or technician issued.
    enrollment_token: String,
    /// The workstation's name, as the device list shows it.
    hostname: String,
}

/// An enrolled agent's credential: shown this once, kept only as a digest.
#[derive(Serialize, JsonSchema)]
pub struct Enrollment {
    device_id: Uuid,
    /// The agent's bearer credential, valid on its tenant's host until the device is revoked.
    device_token: String,
}

/// A workstation login the service accepted.
#[derive(Serialize, JsonSchema)]
pub struct AcceptedLogin {
    user_id: Uuid,
    username: String,
    first_name: String,
    last_name: String,
    /// The version the password that succeeded has: an offline login may use it only while
    /// the feed still shows this version.
    password_version: u32,
    /// The tenant's log seq the check saw: an agent whose feed already shows a later
    /// change disabling the user does not open the account.
    seq: u64,
    local_account: LocalAccount,
}

/// What the workstation does with the local account.
#[derive(Serialize, JsonSchema)]
pub struct LocalAccount {
    username: String,
    /// `create` a new account, or `takeover` the existing one of that name.
    #[schemars(with = "String", extend("enum" = ["create", "takeover"]))]
    action: LocalAccountAction,
}

/// The login screen's branding for an agent, with image paths it can fetch with its
/// credential.
#[derive(Serialize, JsonSchema)]
pub struct AgentBranding {
    version: u32,
    text: Option<String>,
    background: Option<String>,
    logo: Option<String>,
}

/// An agent challenge's state; once approved, what the approval grants (once).
#[derive(Serialize, JsonSchema)]
pub struct AgentChallengeAnswer {
    #[schemars(extend("enum" = ["pending", "expired", "denied", "approved"]))]
    status: String,
    #[serde(flatten)]
    grant: Grant,
}

/// What an approved agent challenge grants: the user of a passwordless login, or the shared
/// account and the technician of an elevation.
#[derive(Default, Serialize, Deserialize, JsonSchema)]
pub struct Grant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<DesktopUser>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account: Option<SharedAccountGrant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    technician: Option<Technician>,
}

/// The directory user who approved a passwordless login.
#[derive(Serialize, Deserialize, JsonSchema)]
pub struct DesktopUser {
    id: Uuid,
    username: String,
    first_name: Option<String>,
    last_name: Option<String>,
    password_version: u32,
}

/// The shared local admin account an elevation opens.
#[derive(Serialize, Deserialize, JsonSchema)]
pub struct SharedAccountGrant {
    username: String,
    /// Minutes the password the agent now sets stays the account's (the tenant's setting).
    elevation_minutes: u32,
    /// The tenant log seq that records this approval: the agent names it when it reports
    /// the elevation's end, so that the audit pairs the two from the service's own record.
    elevation_seq: u64,
}

/// The technician who approved an elevation.
#[derive(Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "ApprovingTechnician")]
pub struct Technician {
    id: Uuid,
    email: Option<String>,
}

/// An agent's report that an elevation at its workstation ended.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ElevationEndedRequest {
    /// Made by the agent; a report sent again (the agent crashed before it knew the first
    /// was recorded) keeps its id, and the service records it once.
    report_id: Uuid,
    /// The shared account whose password the elevation showed.
    account: String,
    /// The `elevation_seq` of the approval (`account.elevation_seq` in the challenge's
    /// answer), if the agent kept it: the service then records the technician it recorded
    /// approving that elevation, and refuses (422) a seq that is not an elevation approved
    /// for this workstation.
    #[serde(default)]
    elevation_seq: Option<u64>,
    /// `expired`: its password lived its time; `replaced`: a newer elevation replaced it.
    #[schemars(with = "String", extend("enum" = ["expired", "replaced"]))]
    reason: ElevationEnd,
    /// When, by the workstation's clock (at most five minutes ahead of the service's).
    #[schemars(with = "String", extend("format" = "date-time"))]
    ended_at: DateTime<Utc>,
}

#[derive(Deserialize, JsonSchema)]
pub struct ChangesQuery {
    /// The `next` of the previous answer; absent or empty for a snapshot.
    after: Option<String>,
    /// Seconds to wait for a change when there is none (at most 60).
    wait: Option<u64>,
    /// Most changes in the answer (1 to 1000).
    limit: Option<usize>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    username: String,
    #[schemars(extend("writeOnly" = true))]
    password: String,
    /// Whether the workstation already has a local account of that name (any case): it is
    /// then taken over rather than created.
    #[serde(default)]
    local_account_exists: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChangeRequest {
    username: String,
    /// The password the user has now (a temporary one an administrator set, or their own).
    #[schemars(extend("writeOnly" = true))]
    password: String,
    /// At least the deployment's minimum length (8 unless it sets more), and not `password`.
    #[schemars(extend(
        "writeOnly" = true,
        "minLength" = validate::LEAST_MIN_PASSWORD_CHARS,
        "maxLength" = validate::MAX_PASSWORD_CHARS,
        "pattern" = validate::password_pattern()
    ))]
    new_password: String,
    /// As in a login: whether the workstation already has a local account of that name.
    #[serde(default)]
    local_account_exists: bool,
}

/// An enrolled agent calling on its tenant's host.
pub struct AgentCaller {
    pub tenant: std::sync::Arc<TenantRow>,
    pub device: Uuid,
}

/// The agent of a request: 401 without a valid, unrevoked device credential for this host.
pub async fn agent(state: &AppState, headers: &HeaderMap) -> Result<AgentCaller, Problem> {
    let tenant = host::tenant(state, headers).await?;
    let refused = || Problem::unauthorized("not an enrolled device of this tenant");
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(refused)?;
    let digest = token_digest(token);
    let (owner, device) = match state.cache.agent(&digest) {
        Some(found) => found,
        None => {
            let generation = state.cache.generation();
            let found = state
                .read()
                .agent_by_credential(&digest)
                .await?
                .ok_or_else(refused)?;
            state.cache.keep_agent(&digest, found, generation);
            found
        }
    };
    let principal = Principal::Agent {
        tenant: TenantId(owner),
        device: DeviceId(device),
    };
    authz::authorize(&principal, Action::AgentWork, auth::scope(&tenant)).map_err(|_| refused())?;
    Ok(AgentCaller { tenant, device })
}

/// `POST /api/v1/agent/enroll` `{enrollment_token, hostname}` → 201 `{device_id,
/// device_token}`: the token is used up; only the credential's digest is recorded.
pub async fn enroll(
    State(state): State<Shared>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    request: Result<Json<EnrollRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let tenant = host::tenant(&state, &headers).await?;
    if tenant.msp_id.is_none() {
        return Err(Problem::not_found(
            "agents enroll on a customer tenant's host",
        ));
    }
    let request = body(request)?;
    let address = client.to_string();
    state
        .limits
        .enrollments_per_address
        .take(&address, Instant::now())
        .map_err(Problem::too_many)?;
    let device = DeviceId(Uuid::now_v7());
    let credential = auth::new_token();
    let now = Utc::now();
    let committed = command::on_customer(
        &state,
        TenantId(tenant.id),
        &format!("agent:{device}"),
        CustomerCommand::EnrollAgent {
            token_digest: token_digest(&request.enrollment_token),
            device_id: device,
            hostname: request.hostname.clone(),
            credential_digest: token_digest(&credential),
            now,
        },
    )
    .await?;
    state.limits.enrollments_per_address.refund(&address);
    Ok(written(
        &state,
        committed.as_ref(),
        (
            StatusCode::CREATED,
            Json(Enrollment {
                device_id: device.0,
                device_token: credential,
            }),
        )
            .into_response(),
    )
    .await)
}

/// `GET /api/v1/agent/changes?after=C&wait=S&limit=N` → `{changes, next, snapshot}`. The
/// cursor is the tenant's log seq; an empty or unknown cursor gets a snapshot first. With
/// `wait`, an empty answer waits (up to 60 s) until the tenant's next projected change.
pub async fn changes(
    State(state): State<Shared>,
    query: Result<Params<ChangesQuery>, Problem>,
    // The whole request rather than a `HeaderMap`, which would clone every header: a commit
    // answers every agent of the tenant, and each comes straight back with a new request.
    request: axum::extract::Request,
) -> Result<Response, Problem> {
    let agent = agent(&state, request.headers()).await?;
    let Params(query) = query?;
    // Let go of the request's head while waiting: its bytes are a slice of the connection's
    // read buffer (8 KiB), which would otherwise stay allocated for the whole wait, up to a
    // minute, beside the buffer hyper has already taken for the agent's next request.
    drop(request);
    let after =
        match query.after.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(text.parse::<u64>().map_err(|_| {
                Problem::invalid("after", "must be the `next` of an earlier answer")
            })?),
        };
    let limit = query.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let wait = Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT_SECONDS));
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribed before the first read, so a commit between the read and the wait wakes us.
    let mut projected = state.feed.watch(agent.tenant.id);
    let key = (agent.tenant.id, after, limit);
    loop {
        let generation = *projected.borrow_and_update();
        let (body, empty) = state
            .feed
            .page(key, generation, async {
                let page = state
                    .read()
                    .changes(agent.tenant.id, after, limit)
                    .await?
                    .ok_or_else(|| Problem::not_found("no such tenant"))?;
                let empty = page.changes.is_empty() && !page.snapshot;
                let body: Arc<[u8]> = serde_json::to_vec(&page)
                    .map_err(|e| Problem::internal(&e))?
                    .into();
                Ok::<_, Problem>((body, empty))
            })
            .await?;
        // The page's bytes are shared by every agent it is answered to, never copied.
        let answer = || {
            (
                [(header::CONTENT_TYPE, "application/json")],
                axum::body::Bytes::from_owner(body.clone()),
            )
                .into_response()
        };
        if !empty || tokio::time::Instant::now() >= deadline {
            return Ok(answer());
        }
        tokio::select! {
            // Woken by a commit, or timed out: look again (and answer if still nothing).
            _ = tokio::time::timeout_at(deadline, projected.changed()) => {}
            // Stopping: answer the empty page now; the agent comes back to the next process.
            () = state.stopped() => return Ok(answer()),
        }
    }
}

/// Records a login attempt at the workstation. The agent's credential was just checked, which
/// is all the domain asks of this event, so it is appended without a fold and group-committed
/// with its neighbours; the answer waits for it to be durable, not projected.
async fn record(
    state: &AppState,
    agent: &AgentCaller,
    attempt: DesktopLoginRecorded,
) -> Result<(), Problem> {
    command::record(
        state,
        TenantId(agent.tenant.id),
        &format!("agent:{}", agent.device),
        Utc::now(),
        domain::decision::Decision::event(attempt),
    )
    .await?;
    Ok(())
}

/// A password a workstation sent, checked: the user it is right for, the version it is, the
/// tenant's log seq the check saw, and the workstation's name.
struct Checked {
    user: customer::DirectoryUser,
    version: u32,
    seq: u64,
    workstation: String,
}

/// The attempt's record, but for its outcome.
fn attempt(
    agent: &AgentCaller,
    username: &str,
    outcome: AttemptOutcome,
    user: Option<UserId>,
    local_account: Option<LocalAccountAction>,
) -> DesktopLoginRecorded {
    DesktopLoginRecorded {
        device_id: DeviceId(agent.device),
        username: username.trim().to_owned(),
        user_id: user,
        method: DesktopLoginMethod::Password,
        outcome,
        local_account,
    }
}

/// Checks `username`'s `password` for a login or a change at the agent's workstation: within
/// the per-device-and-username limit, only on a tenant whose desktop login takes passwords.
/// A refusal is recorded (who, which device, why, never the password) and answered 401,
/// the same for an unknown user, a disabled one and a wrong password.
async fn check_password(
    state: &AppState,
    agent: &AgentCaller,
    username: &str,
    password: zeroize::Zeroizing<String>,
) -> Result<Checked, Problem> {
    let key = format!("{}:{}", agent.device, username.to_lowercase());
    state
        .limits
        .logins_per_account
        .take(&key, Instant::now())
        .map_err(Problem::too_many)?;
    match (
        agent.tenant.desktop_login_enabled,
        agent.tenant.desktop_login_method.as_deref(),
    ) {
        (true, Some("password")) => {}
        _ => {
            return Err(Problem::forbidden(
                "desktop login with a password is not enabled on this tenant",
            ));
        }
    }
    // Only what this check needs leaves the turn: the user, with their sealed verifier, and
    // the workstation's name.
    let wanted = username.trim().to_owned();
    let device = DeviceId(agent.device);
    let (found, seq, workstation) =
        command::with_history(state, TenantId(agent.tenant.id), |history| {
            command::fold_customer(history).map(|t| {
                let workstation = t.agents.get(&device).map(|a| a.hostname.clone());
                let user = t.user_by_username(&wanted).cloned();
                (user, history.seq, workstation.unwrap_or_default())
            })
        })
        .await?
        .map_err(Problem::from)?;
    let refuse = |outcome, user: Option<UserId>| async move {
        record(state, agent, attempt(agent, username, outcome, user, None)).await?;
        Err::<Checked, _>(Problem::unauthorized("wrong username or password"))
    };
    let Some(user) = found else {
        return refuse(AttemptOutcome::UnknownUser, None).await;
    };
    if !user.enabled {
        return refuse(AttemptOutcome::Disabled, Some(user.id)).await;
    }
    let Some((sealed, version)) = user.password.clone() else {
        return refuse(AttemptOutcome::WrongPassword, Some(user.id)).await;
    };
    let data_key = crate::routes::customer::data_key(state, &agent.tenant).await?;
    let tenant_id = TenantId(agent.tenant.id);
    let user_id = user.id;
    let verified = state
        .hashing
        .run(agent.tenant.id, agent.device, move |memory| {
            customer::verify_password(&data_key, tenant_id, user_id, &sealed, &password, memory)
        })
        .await?
        .map_err(Problem::from)?;
    if !verified {
        return refuse(AttemptOutcome::WrongPassword, Some(user.id)).await;
    }
    Ok(Checked {
        user,
        version,
        seq,
        workstation,
    })
}

/// The answer to a login the service accepted, recorded first as `Succeeded` (under the
/// username as `typed`).
async fn accepted(
    state: &AppState,
    agent: &AgentCaller,
    typed: &str,
    checked: Checked,
    local_account_exists: bool,
) -> Result<Json<AcceptedLogin>, Problem> {
    let user = checked.user;
    let action = if local_account_exists {
        LocalAccountAction::Takeover
    } else {
        LocalAccountAction::Create
    };
    let succeeded = AttemptOutcome::Succeeded;
    record(
        state,
        agent,
        attempt(agent, typed, succeeded, Some(user.id), Some(action)),
    )
    .await?;
    Ok(Json(AcceptedLogin {
        user_id: user.id.0,
        username: user.username.clone(),
        first_name: user.first_name,
        last_name: user.last_name,
        password_version: checked.version,
        seq: checked.seq,
        local_account: LocalAccount {
            username: user.username,
            action,
        },
    }))
}

/// `POST /api/v1/agent/login` `{username, password, local_account_exists?}` → 200 `{user_id,
/// username, password_version, seq, local_account: {username, action}}`, or 401. Every attempt is
/// recorded as an event (who, which device, outcome), never the password. A right password
/// an administrator set as temporary is a 403 of type [`PASSWORD_CHANGE_REQUIRED`]: the
/// account opens only through [`change_password`].
pub async fn login(
    State(state): State<Shared>,
    headers: HeaderMap,
    request: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let agent = agent(&state, &headers).await?;
    let request = body(request)?;
    let password = zeroize::Zeroizing::new(request.password);
    let checked = check_password(&state, &agent, &request.username, password).await?;
    if checked.user.must_change_password {
        let outcome = AttemptOutcome::PasswordChangeRequired;
        let user = Some(checked.user.id);
        record(
            &state,
            &agent,
            attempt(&agent, &request.username, outcome, user, None),
        )
        .await?;
        return Err(Problem {
            kind: PASSWORD_CHANGE_REQUIRED,
            ..Problem::forbidden("the password is a temporary one: choose a new password to log in")
        });
    }
    let exists = request.local_account_exists;
    Ok(accepted(&state, &agent, &request.username, checked, exists)
        .await?
        .into_response())
}

/// `POST /api/v1/agent/password` `{username, password, new_password, local_account_exists?}`
/// → 200, the same answer as a login with the new password: a user changes their password at
/// a workstation, proving the one they have (a temporary one, or their own), and is logged in
/// with the new one. The check is a login's (same limit, same records, 401 alike); the new
/// password meets the tenant's policy and differs from the old (422 `new_password`
/// otherwise, before anything is checked). Records `PasswordChanged` and the login.
pub async fn change_password(
    State(state): State<Shared>,
    headers: HeaderMap,
    request: Result<Json<PasswordChangeRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let agent = agent(&state, &headers).await?;
    let request = body(request)?;
    let password = zeroize::Zeroizing::new(request.password);
    let new_password = zeroize::Zeroizing::new(request.new_password);
    state
        .config
        .password_policy
        .check(&new_password)
        .map_err(|e| Problem::invalid("new_password", &e.message))?;
    if *new_password == *password {
        return Err(Problem::invalid(
            "new_password",
            "must differ from the current password",
        ));
    }
    let mut checked = check_password(&state, &agent, &request.username, password).await?;
    let user_id = checked.user.id;
    let data_key = crate::routes::customer::data_key(&state, &agent.tenant).await?;
    let verifier = crate::routes::customer::seal_password(
        &state,
        data_key,
        agent.tenant.id,
        agent.device,
        user_id,
        new_password,
    )
    .await?;
    let committed = command::on_customer(
        &state,
        TenantId(agent.tenant.id),
        &format!("agent:{}", agent.device),
        CustomerCommand::ChangeOwnPassword {
            user_id,
            device_id: DeviceId(agent.device),
            verifier,
            replaces_version: checked.version,
        },
    )
    .await?;
    checked.version += 1;
    if let Some(seq) = committed
        .as_ref()
        .and_then(|c| c.events.last())
        .map(|e| e.seq)
    {
        checked.seq = seq;
    }
    let how = format!("It was changed at the workstation {}.", checked.workstation);
    let (email, username) = (checked.user.email.clone(), checked.user.username.clone());
    let exists = request.local_account_exists;
    let answer = accepted(&state, &agent, &request.username, checked, exists).await?;
    if committed.is_some() {
        let tenant = &agent.tenant;
        crate::routes::customer::mail_password_changed(&state, tenant, &email, &username, &how)
            .await;
    }
    Ok(written(&state, committed.as_ref(), answer.into_response()).await)
}

/// `GET /api/v1/agent/branding` → `{version, text, background, logo}` with image URLs the agent
/// can fetch with its credential.
pub async fn branding(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let agent = agent(&state, &headers).await?;
    let t = &agent.tenant;
    let url = |which: &str, set: bool| {
        set.then(|| format!("/api/v1/agent/branding/{which}?v={}", t.branding_version))
    };
    Ok(Json(AgentBranding {
        version: t.branding_version,
        text: t.branding_text.clone(),
        background: url("background", t.branding_background.is_some()),
        logo: url("logo", t.branding_logo.is_some()),
    })
    .into_response())
}

/// `GET /api/v1/agent/branding/{background|logo}`.
pub async fn branding_image(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(which): Path<String>,
) -> Result<Response, Problem> {
    let agent = agent(&state, &headers).await?;
    crate::routes::branding::image_response(&state, &agent.tenant, &which, &headers).await
}

/// `GET /api/v1/agent/devices`: the tenant's enrolled agents (admins and technicians).
pub async fn devices(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (tenant, _) =
        crate::routes::customer::context(&state, &method, &headers, Action::ManageAgents).await?;
    let devices = state.read().devices_of(tenant.id).await?;
    Ok(Json(
        devices
            .into_iter()
            .filter(|d| d.kind == "agent")
            .collect::<Vec<_>>(),
    )
    .into_response())
}

/// `DELETE /api/v1/agent/devices/{id}` → 204: the agent is refused from its next request on.
pub async fn revoke_device(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let (tenant, caller) =
        crate::routes::customer::context(&state, &method, &headers, Action::ManageAgents).await?;
    let device = Uuid::parse_str(&id).map_err(|_| Problem::not_found("no such device"))?;
    let committed = command::on_customer(
        &state,
        TenantId(tenant.id),
        &caller.actor,
        CustomerCommand::RevokeAgent {
            device_id: DeviceId(device),
        },
    )
    .await?;
    Ok(no_content(&state, committed.as_ref()).await)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AgentChallengeRequest")]
pub struct ChallengeRequest {
    /// `desktop`: a directory user's passwordless login; `elevate`: a technician's elevated
    /// access through the shared account.
    #[schemars(extend("enum" = ["desktop", "elevate"]))]
    purpose: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct WaitQuery {
    /// Seconds to wait for an approval (at most 60).
    wait: Option<u64>,
}

/// `POST /api/v1/agent/challenges` `{purpose: "desktop" | "elevate"}` → 201 a QR challenge for
/// a passwordless login (a directory user's phone) or elevated access (a technician's phone).
pub async fn create_challenge(
    State(state): State<Shared>,
    headers: HeaderMap,
    request: Result<Json<ChallengeRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let agent = agent(&state, &headers).await?;
    let request = body(request)?;
    let purpose = match request.purpose.as_str() {
        "desktop" => "desktop",
        "elevate" => "elevate",
        _ => {
            return Err(Problem::invalid(
                "purpose",
                "must be \"desktop\" or \"elevate\"",
            ));
        }
    };
    if purpose == "desktop" {
        passwordless_desktop_login(&agent.tenant)?;
    }
    if purpose == "elevate" && agent.tenant.shared_account.is_none() {
        return Err(DomainError::Conflict(
            "no shared admin account is configured for elevated access".into(),
        )
        .into());
    }
    state
        .limits
        .challenges_per_address
        .take(&format!("agent:{}", agent.device), Instant::now())
        .map_err(Problem::too_many)?;
    crate::routes::login::new_challenge(&state, &agent.tenant, purpose, Some(agent.device))
}

/// `GET /api/v1/agent/challenges/{id}?wait=S` → `{status, user?, account?}`, to the agent that
/// asked only; the answer once.
pub async fn poll_challenge(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Params<WaitQuery>, Problem>,
) -> Result<Response, Problem> {
    let agent = agent(&state, &headers).await?;
    let Params(query) = query?;
    let missing = || Problem::not_found("no such challenge");
    let id = Uuid::parse_str(&id).map_err(|_| missing())?;
    match state.challenges.owner(id, agent.tenant.id) {
        Some((purpose, Some(owner))) if purpose != "portal" && owner == agent.device => {}
        _ => return Err(missing()),
    }
    let wait = query.wait.unwrap_or(0).min(MAX_WAIT_SECONDS);
    let until = Utc::now() + chrono::Duration::seconds(wait as i64);
    let answer = tokio::select! {
        answer = state.challenges.poll(id, agent.tenant.id, None, until) => answer.ok_or_else(missing)?,
        () = state.stopped() => crate::challenges::Poll::Pending,
    };
    use crate::challenges::Poll;
    let (status, grant) = match answer {
        Poll::Pending => ("pending", Grant::default()),
        Poll::Expired => ("expired", Grant::default()),
        Poll::Denied => ("denied", Grant::default()),
        Poll::Approved(None) => ("approved", Grant::default()),
        Poll::Approved(Some(grant)) => (
            "approved",
            serde_json::from_str(&grant).map_err(|e| Problem::internal(&e))?,
        ),
    };
    Ok(Json(AgentChallengeAnswer {
        status: status.into(),
        grant,
    })
    .into_response())
}

/// Passwordless desktop logins need the tenant's desktop login enabled with that method, as
/// password logins need it with theirs.
fn passwordless_desktop_login(tenant: &TenantRow) -> Result<(), Problem> {
    match (
        tenant.desktop_login_enabled,
        tenant.desktop_login_method.as_deref(),
    ) {
        (true, Some("passwordless")) => Ok(()),
        _ => Err(Problem::forbidden(
            "passwordless desktop login is not enabled on this tenant",
        )),
    }
}

/// A directory user approved a passwordless login at `agent`'s workstation: recorded, and the
/// user (as JSON) for the agent. The tenant's setting is checked again: it may have changed
/// since the code was shown.
pub async fn approve_desktop(
    state: &AppState,
    tenant: &TenantRow,
    agent: Uuid,
    user: Uuid,
    msp: Option<Uuid>,
) -> Result<(String, eventlog::Committed), Problem> {
    if msp.is_some() || tenant.msp_id.is_none() {
        return Err(Problem::unauthorized(
            "a passwordless login is approved by the user's own phone",
        ));
    }
    passwordless_desktop_login(tenant)?;
    let row = state
        .read()
        .user(tenant.id, user)
        .await?
        .ok_or_else(|| Problem::unauthorized("unknown user"))?;
    let username = row.username.clone().unwrap_or_default();
    let attempt = DesktopLoginRecorded {
        device_id: DeviceId(agent),
        username: username.clone(),
        user_id: Some(UserId(user)),
        method: DesktopLoginMethod::Passwordless,
        outcome: AttemptOutcome::Succeeded,
        local_account: None,
    };
    let committed = record_event(
        state,
        tenant,
        agent,
        CustomerCommand::RecordDesktopLogin(attempt),
    )
    .await?;
    let grant = Grant {
        user: Some(DesktopUser {
            id: user,
            username,
            first_name: row.first_name,
            last_name: row.last_name,
            password_version: row.password_version,
        }),
        ..Grant::default()
    };
    let grant = serde_json::to_string(&grant).map_err(|e| Problem::internal(&e))?;
    Ok((grant, committed))
}

/// A technician approved elevated access at `agent`'s workstation: allowed if they reach the
/// tenant (admin or delegated); recorded either way; the shared account for the agent.
pub async fn approve_elevation(
    state: &AppState,
    tenant: &TenantRow,
    agent: Uuid,
    user: Uuid,
    msp: Option<Uuid>,
) -> Result<(String, eventlog::Committed), Problem> {
    let Some(msp) = msp else {
        return Err(Problem::unauthorized(
            "elevated access is approved by a technician of the tenant's MSP",
        ));
    };
    let account = tenant
        .shared_account
        .clone()
        .ok_or_else(|| Problem::from(DomainError::Conflict("no shared admin account".into())))?;
    let principal = auth::msp_principal(state, msp, user)
        .await?
        .ok_or_else(|| Problem::unauthorized("unknown user"))?;
    let allowed = authz::authorize(&principal, Action::OpenCustomer, auth::scope(tenant)).is_ok();
    let record = domain::event::ElevationRecorded {
        device_id: DeviceId(agent),
        msp_id: TenantId(msp),
        technician_id: UserId(user),
        account: account.clone(),
        outcome: if allowed {
            AttemptOutcome::Succeeded
        } else {
            AttemptOutcome::Denied
        },
    };
    let committed = record_event(
        state,
        tenant,
        agent,
        CustomerCommand::RecordElevation(record),
    )
    .await?;
    if !allowed {
        return Err(Problem::forbidden(
            "only the MSP's admins and the technicians delegated to this tenant may elevate",
        ));
    }
    let email = state.read().user(msp, user).await?.map(|u| u.email);
    let elevation_seq = committed
        .events
        .first()
        .map(|e| e.seq)
        .ok_or_else(|| Problem::internal(&"an approved elevation recorded nothing"))?;
    let grant = Grant {
        account: Some(SharedAccountGrant {
            username: account,
            elevation_minutes: tenant.elevation_minutes,
            elevation_seq,
        }),
        technician: Some(Technician { id: user, email }),
        ..Grant::default()
    };
    let grant = serde_json::to_string(&grant).map_err(|e| Problem::internal(&e))?;
    Ok((grant, committed))
}

/// `POST /api/v1/agent/elevations/ended` `{report_id, account, elevation_seq?, reason,
/// ended_at}` → 204: the agent says the password an elevation showed is no longer the shared
/// account's, and the audit records it (`ElevationEnded`), once per `report_id`: a report
/// sent again (the agent crashed before it saved our answer) is answered 204 again and
/// recorded no second time; the first report with an id is the one kept. The technician is
/// the one the service recorded approving the elevation at `elevation_seq`.
pub async fn elevation_ended(
    State(state): State<Shared>,
    headers: HeaderMap,
    request: Result<Json<ElevationEndedRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let agent = agent(&state, &headers).await?;
    let request = body(request)?;
    state
        .limits
        .elevation_reports_per_device
        .take(&agent.device.to_string(), Instant::now())
        .map_err(Problem::too_many)?;
    let claim = customer::elevation_report_claim(
        TenantId(agent.tenant.id),
        DeviceId(agent.device),
        request.report_id,
    );
    let reservation = eventlog::Reservation::new(claim.scope, claim.key);
    let recorded = async || {
        use eventlog::EventLog;
        state
            .log
            .reservation_owner(&reservation)
            .await
            .map(|owner| owner == Some(eventlog::StreamId(agent.tenant.id)))
            .map_err(|e| Problem::internal(&e))
    };
    if recorded().await? {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let approval = match request.elevation_seq {
        Some(seq) => recorded_elevation(&state, agent.tenant.id, seq).await?,
        None => None,
    };
    let record = ElevationEnded {
        report_id: request.report_id,
        device_id: DeviceId(agent.device),
        elevation_seq: request.elevation_seq,
        // Taken from `approval` by the domain.
        technician_id: None,
        account: request.account,
        reason: request.reason,
        ended_at: request.ended_at,
    };
    let outcome = record_event(
        &state,
        &agent.tenant,
        agent.device,
        CustomerCommand::RecordElevationEnded {
            record,
            approval,
            now: Utc::now(),
        },
    )
    .await;
    match outcome {
        Ok(committed) => Ok(no_content(&state, Some(&committed)).await),
        // The same report, sent twice at once: the other one recorded it.
        Err(problem) if problem.status == StatusCode::CONFLICT && recorded().await? => {
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(problem) => Err(problem),
    }
}

/// The elevation recorded at `seq` of `tenant`'s log, if the event there is one.
async fn recorded_elevation(
    state: &AppState,
    tenant: Uuid,
    seq: u64,
) -> Result<Option<domain::event::ElevationRecorded>, Problem> {
    use eventlog::EventLog;
    let events = state
        .log
        .read_stream(eventlog::StreamId(tenant), seq, 1)
        .await
        .map_err(|e| Problem::internal(&e))?;
    let Some(event) = events.first().filter(|e| e.seq == seq) else {
        return Ok(None);
    };
    match projections::codec::decode(event)? {
        domain::event::Event::ElevationRecorded(record) => Ok(Some(record)),
        _ => Ok(None),
    }
}

async fn record_event(
    state: &AppState,
    tenant: &TenantRow,
    agent: Uuid,
    command: CustomerCommand,
) -> Result<eventlog::Committed, Problem> {
    command::on_customer(
        state,
        TenantId(tenant.id),
        &format!("agent:{agent}"),
        command,
    )
    .await?
    .ok_or_else(|| Problem::internal(&"a recorded attempt wrote nothing"))
}
