//! The auditors' routes on any tenant host: the tenant's log as NDJSON, the chain verified
//! server-side, and the tenant's state as it stood at a time, replayed from its log. Open to
//! the tenant's admins (the MSP's admins, and on a customer host the technicians who reach it)
//! and to users given the auditor role for that tenant.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::authz::Action;
use domain::customer::CustomerTenant;
use domain::decision::DomainError;
use domain::ids::TenantId;
use domain::msp::MspTenant;
use eventlog::{EventLog, StreamId};
use projections::TenantRow;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::{AppState, Shared};
use crate::audit;
use crate::auth;
use crate::command::{self, Folded, History};
use crate::host;
use crate::problem::Problem;
use crate::routes::params::Params;

/// Events per export request at most; page on with `after`.
const MAX_EXPORT: usize = 10_000;

#[derive(Deserialize, JsonSchema)]
pub struct EventsQuery {
    /// The seq after which the page starts (0 or absent: the first event).
    after: Option<u64>,
    /// Most events in the page (1 to 10000).
    limit: Option<usize>,
}

#[derive(Deserialize, JsonSchema)]
pub struct StateQuery {
    /// An RFC 3339 time; now if absent.
    #[schemars(extend("format" = "date-time"))]
    at: Option<String>,
}

/// The chain of a tenant's log, recomputed from the stored bytes.
#[derive(Serialize, JsonSchema)]
pub struct Verification {
    events: u64,
    head_seq: u64,
    /// The last event's hash, hex.
    head_hash: String,
    valid: bool,
    /// The first broken link, if any.
    broken: Option<BrokenLink>,
}

#[derive(Serialize, JsonSchema)]
pub struct BrokenLink {
    seq: u64,
    reason: String,
}

/// Where a tenant's log ends.
#[derive(Serialize, JsonSchema)]
pub struct LogHead {
    head_seq: u64,
    /// The last event's hash, hex (zeros before the first event).
    head_hash: String,
}

/// A tenant as it stood at a time, replayed from its log.
#[derive(Serialize, JsonSchema)]
pub struct StateAt {
    at: String,
    /// The last event folded.
    seq: u64,
    /// None before the tenant's first event.
    state: Option<AuditedState>,
}

/// A turn to walk the tenant's whole stream: within the tenant's rate (429 beyond it), then
/// one of the few walks that may run at once (waiting in line for it).
async fn walk<'a>(
    state: &'a AppState,
    tenant: &TenantRow,
) -> Result<tokio::sync::SemaphorePermit<'a>, Problem> {
    state
        .limits
        .audit_walks_per_tenant
        .take(&tenant.id.to_string(), std::time::Instant::now())
        .map_err(Problem::too_many)?;
    state
        .audit_walks
        .acquire()
        .await
        .map_err(|e| Problem::internal(&e))
}

async fn context(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<std::sync::Arc<TenantRow>, Problem> {
    let tenant = host::tenant(state, headers).await?;
    let caller = auth::caller(state, method, headers, &tenant).await?;
    caller.may(Action::ReadAudit, &tenant)?;
    Ok(tenant)
}

/// `GET /api/v1/audit/events?after=SEQ&limit=N`: `application/x-ndjson`, one envelope a line,
/// at most 10,000 lines; `Idem-Next-After` names the `after` of the next page when there is
/// more.
pub async fn events(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    query: Result<Params<EventsQuery>, Problem>,
) -> Result<Response, Problem> {
    let tenant = context(&state, &method, &headers).await?;
    let Params(query) = query?;
    let after = query.after.unwrap_or(0);
    let limit = query.limit.unwrap_or(MAX_EXPORT).clamp(1, MAX_EXPORT);
    let events = state
        .log
        .read_stream(StreamId(tenant.id), after + 1, limit + 1)
        .await?;
    let more = events.len() > limit;
    let mut body = String::new();
    for event in events.iter().take(limit) {
        body.push_str(&audit::line(event).map_err(|e| Problem::internal(&e))?);
        body.push('\n');
    }
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    if more && let Some(last) = events.get(limit - 1) {
        response
            .headers_mut()
            .insert("idem-next-after", HeaderValue::from(last.seq));
    }
    Ok(response)
}

/// `GET /api/v1/audit/verify` → `{events, head_seq, head_hash, valid}`: the chain recomputed
/// from the stored bytes.
pub async fn verify(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let tenant = context(&state, &method, &headers).await?;
    let _walking = walk(&state, &tenant).await?;
    let report = eventlog::verify(state.log.as_ref(), StreamId(tenant.id)).await?;
    Ok(Json(Verification {
        events: report.events,
        head_seq: report.head_seq,
        head_hash: report.head_hash.to_hex(),
        valid: report.is_valid(),
        broken: report.first_broken.map(|b| BrokenLink {
            seq: b.seq,
            reason: b.reason,
        }),
    })
    .into_response())
}

/// `GET /api/v1/audit/head` → `{head_seq, head_hash}`: where the tenant's log ends, read from
/// its head without walking the chain (what a page needs to page from the newest event;
/// `verify` walks it).
pub async fn head(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let tenant = context(&state, &method, &headers).await?;
    let head = state.log.stream_head(StreamId(tenant.id)).await?;
    let (seq, hash) = head.map_or((0, eventlog::ZERO_HASH), |h| (h.seq, h.hash));
    Ok(Json(LogHead {
        head_seq: seq,
        head_hash: hash.to_hex(),
    })
    .into_response())
}

/// `GET /api/v1/audit/state?at=T`: the tenant replayed from its log up to T (RFC 3339; now if
/// absent). Secrets stay out: only whether a password or personal email was set.
pub async fn state_at(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    query: Result<Params<StateQuery>, Problem>,
) -> Result<Response, Problem> {
    let tenant = context(&state, &method, &headers).await?;
    let Params(query) = query?;
    let _walking = walk(&state, &tenant).await?;
    let at = match query.at.as_deref() {
        None => Utc::now(),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map_err(|_| {
                Problem::invalid("at", "must be an RFC 3339 time, e.g. 2026-11-22T10:00:00Z")
            })?
            .with_timezone(&Utc),
    };
    let (seq, state) =
        replay_until::<_, Problem>(state.log.as_ref(), TenantId(tenant.id), at).await?;
    Ok(Json(StateAt {
        at: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        seq,
        state,
    })
    .into_response())
}

/// `tenant`'s state as it stood at `at`, replayed from its log page by page (never its whole
/// stream in memory; a fresh history, as the cached ones are at the head): the seq of the last
/// event folded, and the state as auditors see it (`None` before the tenant's first event).
pub async fn replay_until<L: EventLog, E>(
    log: &L,
    tenant: TenantId,
    at: DateTime<Utc>,
) -> Result<(u64, Option<AuditedState>), E>
where
    E: From<eventlog::Error> + From<domain::event::DecodeError> + From<DomainError>,
{
    let mut history = History::new();
    command::fold_from_log::<_, E>(log, tenant, &mut history, |event| event.occurred_at <= at)
        .await?;
    let state = match &history.folded {
        Folded::Empty => None,
        Folded::Msp(t) => Some(AuditedState::Msp(AuditedMsp::of(t))),
        Folded::Customer(t) => Some(AuditedState::Customer(Box::new(AuditedCustomer::of(t)))),
        Folded::Corrupt(e) => return Err(e.clone().into()),
    };
    Ok((history.seq, state))
}

/// A tenant's state as auditors see it: no sealed value, only whether one is set.
#[derive(Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditedState {
    Msp(AuditedMsp),
    Customer(Box<AuditedCustomer>),
}

#[derive(Serialize, JsonSchema)]
pub struct AuditedMsp {
    id: Uuid,
    name: String,
    display_name: String,
    host_label: String,
    #[schemars(with = "String", extend("enum" = ["local"]))]
    user_source: domain::event::UserSource,
    users: Vec<AuditedMspUser>,
    /// By id: a customer's names are in its own log, not in its MSP's.
    customers: Vec<AuditedCustomerRef>,
}

#[derive(Serialize, JsonSchema)]
pub struct AuditedMspUser {
    id: Uuid,
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    admin: bool,
    devices: usize,
    /// The customers delegated to the user, by id.
    delegations: Vec<Uuid>,
    /// The tenants whose logs the user audits, by id.
    auditor_of: Vec<Uuid>,
}

#[derive(Serialize, JsonSchema)]
pub struct AuditedCustomerRef {
    id: Uuid,
}

impl AuditedMsp {
    fn of(t: &MspTenant) -> AuditedMsp {
        AuditedMsp {
            id: t.id.0,
            name: t.name.clone(),
            display_name: t.display_name.clone(),
            host_label: t.host_label.clone(),
            user_source: t.user_source,
            users: t
                .users
                .values()
                .map(|u| AuditedMspUser {
                    id: u.id.0,
                    email: u.email.clone(),
                    first_name: u.first_name.clone(),
                    last_name: u.last_name.clone(),
                    admin: u.admin,
                    devices: u.enrollment.devices.len(),
                    delegations: u.delegations.iter().map(|t| t.0).collect(),
                    auditor_of: u.auditor_of.iter().map(|t| t.0).collect(),
                })
                .collect(),
            customers: t
                .customers
                .iter()
                .map(|id| AuditedCustomerRef { id: id.0 })
                .collect(),
        }
    }
}

#[derive(Serialize, JsonSchema)]
pub struct AuditedCustomer {
    id: Uuid,
    msp_id: Uuid,
    name: String,
    display_name: String,
    host_label: String,
    #[schemars(with = "String", extend("enum" = ["local"]))]
    user_source: domain::event::UserSource,
    master_key_version: Option<u32>,
    desktop_login: Option<AuditedDesktopLogin>,
    users: Vec<AuditedDirectoryUser>,
    branding: AuditedBranding,
    shared_account: Option<String>,
    agents: Vec<AuditedAgent>,
}

#[derive(Serialize, JsonSchema)]
pub struct AuditedDesktopLogin {
    enabled: bool,
    #[schemars(with = "String", extend("enum" = ["password", "passwordless"]))]
    method: domain::event::DesktopLoginMethod,
}

#[derive(Serialize, JsonSchema)]
pub struct AuditedDirectoryUser {
    id: Uuid,
    first_name: String,
    last_name: String,
    username: String,
    email: String,
    enabled: bool,
    has_password: bool,
    password_version: u32,
    has_personal_email: bool,
    passwordless: bool,
    devices: usize,
}

#[derive(Serialize, JsonSchema)]
pub struct AuditedBranding {
    version: u32,
    background: Option<AuditedImage>,
    logo: Option<AuditedImage>,
    text: Option<String>,
}

/// A branding image as the log records it: its blob's SHA-256 and what it is.
#[derive(Serialize, JsonSchema)]
pub struct AuditedImage {
    blob: String,
    media_type: String,
    width: u32,
    height: u32,
}

#[derive(Serialize, JsonSchema)]
pub struct AuditedAgent {
    device_id: Uuid,
    hostname: String,
}

impl AuditedCustomer {
    fn of(t: &CustomerTenant) -> AuditedCustomer {
        let image = |i: &Option<domain::event::ImageRef>| {
            i.as_ref().map(|i| AuditedImage {
                blob: i.blob.clone(),
                media_type: i.media_type.clone(),
                width: i.width,
                height: i.height,
            })
        };
        AuditedCustomer {
            id: t.id.0,
            msp_id: t.msp_id.0,
            name: t.name.clone(),
            display_name: t.display_name.clone(),
            host_label: t.host_label.clone(),
            user_source: t.user_source,
            master_key_version: t.master_key,
            desktop_login: t
                .desktop_login
                .map(|(enabled, method)| AuditedDesktopLogin { enabled, method }),
            users: t
                .users
                .values()
                .map(|u| AuditedDirectoryUser {
                    id: u.id.0,
                    first_name: u.first_name.clone(),
                    last_name: u.last_name.clone(),
                    username: u.username.clone(),
                    email: u.email.clone(),
                    enabled: u.enabled,
                    has_password: u.password.is_some(),
                    password_version: u.password_version,
                    has_personal_email: u.personal_email.is_some(),
                    passwordless: u.passwordless,
                    devices: u.enrollment.devices.len(),
                })
                .collect(),
            branding: AuditedBranding {
                version: t.branding.version,
                background: image(&t.branding.background),
                logo: image(&t.branding.logo),
                text: t.branding.text.clone(),
            },
            shared_account: t.shared_account.clone(),
            agents: t
                .agents
                .values()
                .map(|a| AuditedAgent {
                    device_id: a.id.0,
                    hostname: a.hostname.clone(),
                })
                .collect(),
        }
    }
}
