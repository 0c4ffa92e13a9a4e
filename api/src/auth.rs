//! Who is calling: the session token of a request (`Authorization: Bearer` or the host's
//! session cookie), checked against the read models on every request, and turned into the
//! domain's [`Principal`] with the roles the user has *now*. A session is valid on the host it
//! was started on only; a technician's session on a customer host ends the moment their
//! delegation or admin role does.

use std::collections::BTreeSet;

use axum::http::{HeaderMap, HeaderValue, Method, header};
use chrono::{DateTime, Utc};
use domain::authz::{self, Action, Principal, Scope};
use domain::ids::{TenantId, UserId};
use domain::session::token_digest;
use projections::{SessionRow, TenantRow};
use uuid::Uuid;

use crate::app::AppState;
use crate::problem::Problem;

/// The session cookie's name; the cookie is host-only, so each tenant host has its own.
pub const COOKIE: &str = "idem_session";

/// A caller with a valid session on the request's host.
pub struct Caller {
    pub session: SessionRow,
    pub principal: Principal,
    /// The actor recorded on the events this caller's commands write.
    pub actor: String,
}

impl Caller {
    pub fn user(&self) -> UserId {
        UserId(self.session.user_id)
    }

    /// Refuses with 403 unless the caller may do `action` on `tenant`.
    pub fn may(&self, action: Action, tenant: &TenantRow) -> Result<(), Problem> {
        authz::authorize(&self.principal, action, scope(tenant))
            .map_err(|_| Problem::forbidden("your role does not allow this here"))
    }
}

/// The scope of a tenant's host.
pub fn scope(tenant: &TenantRow) -> Scope {
    match tenant.msp_id {
        Some(msp) => Scope::Customer {
            tenant: TenantId(tenant.id),
            msp: TenantId(msp),
        },
        None => Scope::Msp(TenantId(tenant.id)),
    }
}

/// A random 256-bit secret, base64url: session tokens and hand-off tokens.
pub fn new_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The session token a request carries, and whether it came in the cookie.
fn token(headers: &HeaderMap) -> Option<(String, bool)> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| (token.trim().to_owned(), false));
    }
    cookie_token(headers).map(|value| (value, true))
}

/// The value of the cookie `name`, if the request carries it (and it is not empty).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

/// The session token of a browser's cookie, if it carries one.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE)
}

/// A browser's unsafe request must come from a page of the same host: tenant hosts share a
/// site under the base domain, so `SameSite` alone does not stop one tenant's page from
/// posting to another's API with its cookie.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    match (host, origin) {
        (Some(host), Some(origin)) => origin
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next() == Some(host))
            .unwrap_or(false),
        _ => false,
    }
}

fn unauthenticated(detail: &str) -> Problem {
    Problem::unauthorized(detail)
}

/// The caller of a request to `host`: 401 without a valid session for this host.
pub async fn caller(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    host: &TenantRow,
) -> Result<Caller, Problem> {
    let (token, from_cookie) =
        token(headers).ok_or_else(|| unauthenticated("log in first: no session"))?;
    if from_cookie && !method.is_safe() && !same_origin(headers) {
        return Err(Problem::forbidden(
            "a request with the session cookie must come from this host's own pages",
        ));
    }
    let invalid = || unauthenticated("the session is not valid here; log in again");
    let session = state
        .read()
        .session(&token_digest(&token))
        .await?
        .ok_or_else(invalid)?;
    if session.tenant_id != host.id {
        return Err(invalid());
    }
    let expires_at = DateTime::parse_from_rfc3339(&session.expires_at)
        .map_err(|e| Problem::internal(&e))?
        .with_timezone(&Utc);
    if expires_at <= Utc::now() {
        return Err(unauthenticated("the session has expired; log in again"));
    }
    let user = session.user_id;
    let principal = match (host.msp_id, session.msp_id) {
        // A directory user on their own customer host.
        (Some(_), None) => {
            let row = state
                .read()
                .user(host.id, user)
                .await?
                .filter(|u| u.enabled)
                .ok_or_else(invalid)?;
            Principal::CustomerUser {
                tenant: TenantId(host.id),
                user: UserId(row.id),
            }
        }
        // An MSP user on their MSP's host, or on one of its customers' hosts.
        (_, msp) => {
            let msp = msp.unwrap_or(host.id);
            let principal = msp_principal(state, msp, user).await?.ok_or_else(invalid)?;
            if host.msp_id.is_some()
                && authz::authorize(&principal, Action::ReadOwnProfile, scope(host)).is_err()
                && authz::authorize(&principal, Action::ReadAudit, scope(host)).is_err()
            {
                return Err(unauthenticated(
                    "your access to this tenant has been revoked",
                ));
            }
            principal
        }
    };
    Ok(Caller {
        actor: format!("user:{user}"),
        session,
        principal,
    })
}

/// An MSP user with the roles the read models give them now; `None` if they are gone.
pub async fn msp_principal(
    state: &AppState,
    msp: Uuid,
    user: Uuid,
) -> Result<Option<Principal>, Problem> {
    let read = state.read();
    let Some(row) = read.user(msp, user).await? else {
        return Ok(None);
    };
    let access = read.grants_of(user).await?;
    let set = |via: &str| -> BTreeSet<TenantId> {
        access
            .iter()
            .filter(|a| a.via == via)
            .map(|a| TenantId(a.tenant_id))
            .collect()
    };
    Ok(Some(Principal::MspUser {
        msp: TenantId(msp),
        user: UserId(row.id),
        admin: row.is_admin,
        delegated: set("delegation"),
        auditor_of: set("auditor"),
    }))
}

/// The `Set-Cookie` value that gives a browser the session on this host.
pub fn session_cookie(state: &AppState, token: &str) -> Option<HeaderValue> {
    let secure = if state.config.public_scheme == "https" {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        domain::session::SESSION_LIFETIME.num_seconds()
    ))
    .ok()
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn cleared_cookie(state: &AppState) -> HeaderValue {
    let secure = if state.config.public_scheme == "https" {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"
    ))
    .unwrap_or(HeaderValue::from_static("idem_session=; Path=/; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_token_comes_from_the_bearer_header_or_the_cookie() {
        assert_eq!(
            token(&headers(&[("authorization", "Bearer abc")])),
            Some(("abc".into(), false))
        );
        assert_eq!(
            token(&headers(&[("cookie", "x=1; idem_session=tok; y=2")])),
            Some(("tok".into(), true))
        );
        assert_eq!(token(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(token(&headers(&[("cookie", "idem_sessionx=tok")])), None);
        assert_eq!(token(&headers(&[])), None);
    }

    #[test]
    fn only_pages_of_the_same_host_may_post_with_the_cookie() {
        let host = ("host", "acme.localhost:8080");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://acme.localhost:8080")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("referer", "http://acme.localhost:8080/admin/users")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://evil-acme.localhost:8080")
        ])));
        assert!(!same_origin(&headers(&[host])));
    }
}
