//! The HTTP handlers, one module per part of the contract.

pub mod agent;
pub mod audit;
pub mod branding;
pub mod customer;
pub mod health;
pub mod login;
pub mod msp;
pub mod onboarding;
pub mod params;
pub mod phones;
pub mod signup;
pub mod table;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eventlog::Committed;

use crate::app::{AppState, READ_YOUR_WRITES};
use crate::problem::Problem;

/// An 8-digit one-time code from the operating system's CSPRNG (through rand's thread RNG).
pub fn one_time_code() -> String {
    format!("{:08}", rand::random_range(0..100_000_000u32))
}

/// JSON bodies: malformed or of the wrong shape is a 400 naming what is wrong, a body over the
/// route's limit a 413, and anything but `application/json` a 415.
pub fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Problem> {
    body.map(|Json(value)| value).map_err(|rejection| {
        let status = rejection.status();
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
                status,
                "Body too large",
                "the request body is larger than this route takes",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
                status,
                "Unsupported media type",
                "send the body as application/json",
            ),
            _ => Problem::bad_request(rejection.body_text()),
        }
    })
}

/// The answer to a write: once the projections have reached it (read-your-writes), with its
/// log position in `Idem-Position`.
pub async fn written(
    state: &AppState,
    committed: Option<&Committed>,
    response: Response,
) -> Response {
    settle(state, committed).await;
    with_position(committed, response)
}

/// The answer to a write with nothing to say: 204, once projected, with its position.
pub async fn no_content(state: &AppState, committed: Option<&Committed>) -> Response {
    written(state, committed, StatusCode::NO_CONTENT.into_response()).await
}

/// Waits (briefly) until the read models have the write: what the caller reads next, and
/// every authorization decided from them, reflects it.
pub async fn settle(state: &AppState, committed: Option<&Committed>) {
    if let Some(committed) = committed {
        let projected = state
            .projections
            .wait_for(committed.position, READ_YOUR_WRITES)
            .await;
        // Projected: what the write changed leaves the caches before anyone reads it again.
        state.cache.forget_after(&committed.events);
        if projected {
            state.feed.projected(&committed.events);
        }
    }
}

/// The answer to a write that changed the host tenant's settings: once projected, the
/// settings as `render` shows them, with the write's position.
pub async fn settings_written<T: serde::Serialize>(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    committed: Option<&Committed>,
    render: impl FnOnce(&projections::TenantRow) -> T,
) -> Result<Response, Problem> {
    settle(state, committed).await;
    let tenant = crate::host::tenant(state, headers).await?;
    Ok(with_position(
        committed,
        Json(render(&tenant)).into_response(),
    ))
}

/// The answer to a write that changed one user: once projected, the user as `render` shows
/// them, with `status` and the write's position.
pub async fn user_written<T: serde::Serialize>(
    state: &AppState,
    committed: Option<&Committed>,
    tenant: uuid::Uuid,
    user: uuid::Uuid,
    status: StatusCode,
    render: impl FnOnce(&projections::UserRow) -> T,
) -> Result<Response, Problem> {
    settle(state, committed).await;
    let row = user_row(state, tenant, user).await?;
    Ok(with_position(
        committed,
        (status, Json(render(&row))).into_response(),
    ))
}

/// Adds the write's log position as `Idem-Position`.
pub fn with_position(committed: Option<&Committed>, mut response: Response) -> Response {
    if let Some(committed) = committed
        && let Ok(value) = committed.position.to_string().parse()
    {
        response.headers_mut().insert("idem-position", value);
    }
    response
}

/// Routes that both kinds of tenant have with different meanings (`/api/v1/users`): each
/// request goes to the MSP's or the customer's handler by its host.
pub mod by_host {
    use axum::extract::{Request, State};
    use axum::handler::Handler;
    use axum::response::{IntoResponse, Response};

    use super::{customer, msp};
    use crate::app::Shared;
    use crate::host;

    macro_rules! dispatch {
        ($($name:ident => $msp:path, $customer:path;)*) => {$(
            pub async fn $name(State(state): State<Shared>, request: Request) -> Response {
                match host::tenant(&state, request.headers()).await {
                    Ok(tenant) if tenant.msp_id.is_some() => {
                        Handler::call($customer, request, state).await
                    }
                    Ok(_) => Handler::call($msp, request, state).await,
                    Err(problem) => problem.into_response(),
                }
            }
        )*};
    }

    /// `POST /api/v1/users`'s body as the API document shows it: an MSP user on an MSP's
    /// host, a directory user on a customer's (each handler decodes its own).
    #[derive(schemars::JsonSchema)]
    #[schemars(untagged)]
    #[allow(dead_code)]
    pub enum UserToAdd {
        Msp(msp::NewUser),
        Directory(customer::NewUser),
    }

    /// A user as `GET`/`POST /api/v1/users` answer it: an MSP user on an MSP's host, a
    /// directory user on a customer's.
    #[derive(schemars::JsonSchema)]
    #[schemars(untagged)]
    #[allow(dead_code)]
    pub enum UserAnswer {
        Msp(msp::MspUser),
        Directory(customer::DirectoryUser),
    }

    /// `GET /api/v1/users`: the MSP's users, or the customer's directory.
    #[derive(schemars::JsonSchema)]
    #[schemars(untagged)]
    #[allow(dead_code)]
    pub enum UsersAnswer {
        Msp(Vec<msp::MspUser>),
        Directory(Vec<customer::DirectoryUser>),
    }

    dispatch! {
        list_users => msp::list_users, customer::list_users;
        add_user => msp::add_user, customer::create_user;
        get_user => msp::get_user, customer::get_user;
        remove_user => msp::remove_user, customer::delete_user;
        list_authenticators => msp::list_authenticators, customer::list_authenticators;
        revoke_authenticator => msp::revoke_authenticator, customer::revoke_authenticator;
    }
}

/// An authenticator's id from the path: anything but a UUID is simply not one.
pub fn authenticator_id(raw: &str) -> Result<domain::ids::DeviceId, Problem> {
    uuid::Uuid::parse_str(raw)
        .map(domain::ids::DeviceId)
        .map_err(|_| Problem::not_found("no such authenticator"))
}

/// A user id from the path: anything but a UUID is simply not a user.
pub fn user_id(raw: &str) -> Result<uuid::Uuid, Problem> {
    uuid::Uuid::parse_str(raw).map_err(|_| Problem::not_found("no such user"))
}

/// A user of `tenant` from the read models; 404 if there is none.
pub async fn user_row(
    state: &AppState,
    tenant: uuid::Uuid,
    user: uuid::Uuid,
) -> Result<projections::UserRow, Problem> {
    state
        .read()
        .user(tenant, user)
        .await?
        .ok_or_else(|| Problem::not_found("no such user"))
}

/// `GET /api/v1/users/{id}/authenticators`'s answer, once the caller may read it: the
/// unrevoked phones of `user` of `tenant`; 404 if there is no such user.
pub async fn authenticators_of(
    state: &AppState,
    tenant: uuid::Uuid,
    user: uuid::Uuid,
) -> Result<Response, Problem> {
    user_row(state, tenant, user).await?;
    let devices = state.read().authenticators_of(tenant, user).await?;
    Ok(axum::Json(devices).into_response())
}

/// Revokes the authenticator `device` of `user` on `tenant` with `command` (the MSP's or the
/// customer's), then tells the user by mail: their sessions there have ended, how to enrol a
/// new phone, and to tell an administrator if they did not expect it (a revocation by
/// someone who should not have made it is then noticed). Answers 204.
pub async fn revoke_authenticator<F>(
    state: &AppState,
    tenant: &projections::TenantRow,
    user: uuid::Uuid,
    device: domain::ids::DeviceId,
    by_self: bool,
    command: F,
) -> Result<Response, Problem>
where
    F: std::future::Future<Output = Result<Option<eventlog::Committed>, Problem>>,
{
    let row = user_row(state, tenant.id, user).await?;
    let phones = state.read().authenticators_of(tenant.id, user).await?;
    let name = phones
        .iter()
        .find(|phone| phone.id == device.0)
        .map(|phone| phone.name.clone());
    let committed = command.await?;
    if committed.is_some() {
        let url = state.config.tenant_url(&tenant.host_label);
        let phone = name.map_or_else(|| "Your phone".to_owned(), |n| format!("The phone {n:?}"));
        let who = if by_self { "you" } else { "an administrator" };
        state
            .mailer
            .post(crate::mail::Message {
                to: row.email.clone(),
                subject: format!("{}: your phone was removed", tenant.display_name),
                body: format!(
                    "{phone} no longer signs you in to {url}: {who} removed it, \
                     and your sessions there have ended.\n\
                     To sign in again, enrol a phone: ask for a code in the authenticator app \
                     for {url} and this email address.\n\
                     If you did not expect this, tell your administrator.\n"
                ),
            })
            .await;
    }
    Ok(no_content(state, committed.as_ref()).await)
}

/// A path the contract has, with a method it does not.
pub async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        "this route does not take that method; see /api/v1/openapi.json",
    )
}

/// Any path the contract does not have: a problem for API clients, a page for browsers (a
/// mistyped portal address).
pub async fn not_found(headers: axum::http::HeaderMap, uri: axum::http::Uri) -> Response {
    let wants_page = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if wants_page && !uri.path().starts_with("/api/") {
        return crate::portal::not_found_page();
    }
    Problem::not_found("no such route").into_response()
}
