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
use serde::Deserialize;
use serde_json::{Value, json};

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
    Ok(Json(json!({
        "events": report.events,
        "head_seq": report.head_seq,
        "head_hash": report.head_hash.to_hex(),
        "valid": report.is_valid(),
        "broken": report.first_broken.map(|b| json!({"seq": b.seq, "reason": b.reason})),
    }))
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
    Ok(Json(json!({ "head_seq": seq, "head_hash": hash.to_hex() })).into_response())
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
    let (seq, state_json) =
        replay_until::<_, Problem>(state.log.as_ref(), TenantId(tenant.id), at).await?;
    Ok(Json(json!({
        "at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "seq": seq,
        "state": state_json,
    }))
    .into_response())
}

/// `tenant`'s state as it stood at `at`, replayed from its log page by page (never its whole
/// stream in memory; a fresh history, as the cached ones are at the head): the seq of the last
/// event folded, and the state as auditors see it (`None` before the tenant's first event).
pub async fn replay_until<L: EventLog, E>(
    log: &L,
    tenant: TenantId,
    at: DateTime<Utc>,
) -> Result<(u64, Option<Value>), E>
where
    E: From<eventlog::Error> + From<domain::event::DecodeError> + From<DomainError>,
{
    let mut history = History::new();
    command::fold_from_log::<_, E>(log, tenant, &mut history, |event| event.occurred_at <= at)
        .await?;
    let state = match &history.folded {
        Folded::Empty => None,
        Folded::Msp(t) => Some(msp_json(t)),
        Folded::Customer(t) => Some(customer_json(t)),
        Folded::Corrupt(e) => return Err(e.clone().into()),
    };
    Ok((history.seq, state))
}

/// An MSP tenant's state, for auditors.
pub fn msp_json(t: &MspTenant) -> Value {
    json!({
        "kind": "msp",
        "id": t.id,
        "name": t.name,
        "display_name": t.display_name,
        "host_label": t.host_label,
        "user_source": t.user_source,
        "users": t.users.values().map(|u| json!({
            "id": u.id,
            "email": u.email,
            "first_name": u.first_name,
            "last_name": u.last_name,
            "admin": u.admin,
            "devices": u.enrollment.devices.len(),
            "delegations": u.delegations,
            "auditor_of": u.auditor_of,
        })).collect::<Vec<_>>(),
        // By id: a customer's names are in its own log, not in its MSP's.
        "customers": t.customers.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>(),
    })
}

/// A customer tenant's state, for auditors: no sealed value, only whether one is set.
pub fn customer_json(t: &CustomerTenant) -> Value {
    json!({
        "kind": "customer",
        "id": t.id,
        "msp_id": t.msp_id,
        "name": t.name,
        "display_name": t.display_name,
        "host_label": t.host_label,
        "user_source": t.user_source,
        "master_key_version": t.master_key,
        "desktop_login": t.desktop_login.map(|(enabled, method)| json!({"enabled": enabled, "method": method})),
        "users": t.users.values().map(|u| json!({
            "id": u.id,
            "first_name": u.first_name,
            "last_name": u.last_name,
            "username": u.username,
            "email": u.email,
            "enabled": u.enabled,
            "has_password": u.password.is_some(),
            "password_version": u.password_version,
            "has_personal_email": u.personal_email.is_some(),
            "passwordless": u.passwordless,
            "devices": u.enrollment.devices.len(),
        })).collect::<Vec<_>>(),
        "branding": {
            "version": t.branding.version,
            "background": t.branding.background,
            "logo": t.branding.logo,
            "text": t.branding.text,
        },
        "shared_account": t.shared_account,
        "agents": t.agents.values().map(|a| json!({"device_id": a.id, "hostname": a.hostname})).collect::<Vec<_>>(),
    })
}
