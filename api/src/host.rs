//! The tenant of a request, from its Host header: the apex `{base domain}`, or a tenant at
//! `{label}.{base domain}`. Anything else is a 404, never a fallback.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use projections::TenantRow;

use crate::app::AppState;
use crate::problem::Problem;

/// Who a request is addressed to.
pub enum Host {
    /// The platform itself (signup, health).
    Apex,
    /// Shared with the host cache: every request of a tenant reads the same row.
    Tenant(Arc<TenantRow>),
}

/// Resolves the request's Host header.
pub async fn resolve(state: &AppState, headers: &HeaderMap) -> Result<Host, Problem> {
    let raw = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Problem::bad_request("the request has no Host header"))?;
    // Drop the port; hosts are case-insensitive.
    let name = match raw.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => raw,
    }
    .trim_end_matches('.')
    .to_ascii_lowercase();
    let base = &state.config.base_domain;
    if name == *base {
        return Ok(Host::Apex);
    }
    let unknown = || Problem::not_found(format!("no tenant is served at {name}"));
    let label = name
        .strip_suffix(base.as_str())
        .and_then(|rest| rest.strip_suffix('.'))
        .filter(|label| !label.is_empty() && !label.contains('.'))
        .ok_or_else(unknown)?;
    if let Some(tenant) = state.cache.host(label) {
        return Ok(Host::Tenant(tenant));
    }
    let generation = state.cache.generation();
    match state.read().tenant_by_host(label).await {
        Ok(Some(tenant)) => {
            let tenant = Arc::new(tenant);
            state.cache.keep_host(label, tenant.clone(), generation);
            Ok(Host::Tenant(tenant))
        }
        Ok(None) => Err(unknown()),
        Err(e) => Err(Problem::internal(&e)),
    }
}

/// The tenant a request is addressed to; 404 on the apex, which has no tenant routes.
pub async fn tenant(state: &AppState, headers: &HeaderMap) -> Result<Arc<TenantRow>, Problem> {
    match resolve(state, headers).await? {
        Host::Apex => Err(Problem::not_found(
            "this is served on a tenant's own host, not the platform's",
        )),
        Host::Tenant(row) => Ok(row),
    }
}
