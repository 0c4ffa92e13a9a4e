//! `/api/v1/me/authenticators` on an MSP's host: a user's own phones. A user with a phone
//! adds another (a replacement, or a spare) with a code mailed to their email, entered on the
//! new phone as at onboarding, and removes one they no longer have. The user is always the
//! session's: no route here names anyone else.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::authz::Action;
use domain::ids::UserId;
use domain::msp::{CODE_LIFETIME, MspCommand};
use schemars::JsonSchema;
use serde::Serialize;
use std::time::Instant;

use crate::app::Shared;
use crate::mail::Message;
use crate::problem::Problem;
use crate::routes::msp::{msp_context, run};
use crate::routes::{one_time_code, user_row, written};

/// Where the code for another phone went.
#[derive(Serialize, JsonSchema)]
pub struct PhoneCodeSent {
    /// The user's email, which the code was mailed to.
    email: String,
    /// When the code stops working (15 minutes).
    #[schemars(with = "String", extend("format" = "date-time"))]
    expires_at: DateTime<Utc>,
}

/// `GET /api/v1/me/authenticators`: the caller's phones.
pub async fn list(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    caller.may(Action::ManageOwnAuthenticators, &tenant)?;
    crate::routes::authenticators_of(&state, tenant.id, caller.session.user_id).await
}

/// `POST /api/v1/me/authenticators` → 202 `{email, expires_at}`: a code to enrol another phone
/// is mailed to the caller (at most 5 phones; 409 beyond, or for a user without a phone, who
/// onboards instead). The session proves a phone, the mail the email: a stolen session
/// alone adds no phone. The new phone completes with `POST /api/v1/onboarding/complete`, as
/// at onboarding. Limited like onboarding codes, per account.
pub async fn add(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    let user = user_row(&state, tenant.id, caller.session.user_id).await?;
    state
        .limits
        .onboarding_start_per_account
        .take(
            &format!("{}:{}", tenant.id, user.email.to_lowercase()),
            Instant::now(),
        )
        .map_err(Problem::too_many)?;
    let code = one_time_code();
    let now = Utc::now();
    let command = MspCommand::AddAnotherPhone {
        user_id: UserId(user.id),
        code: state.root_keys.code_key().keyed(&code),
        now,
    };
    let committed = run(&state, &tenant, &caller, command).await?;
    let url = state.config.tenant_url(&tenant.host_label);
    state
        .mailer
        .post(Message {
            to: user.email.clone(),
            subject: format!("{}: a code to add a phone", tenant.display_name),
            body: format!(
                "You asked to add a phone that signs you in to {url}.\n\
                 Enter this code in the authenticator app on the new phone, with this email \
                 address. It expires in 15 minutes.\n\n\
                 Code: {code}\n\n\
                 If you did not ask for it, someone has your session: tell your administrator.\n"
            ),
        })
        .await;
    let answer = Json(PhoneCodeSent {
        email: user.email,
        expires_at: now + CODE_LIFETIME,
    });
    Ok(written(
        &state,
        committed.as_ref(),
        (StatusCode::ACCEPTED, answer).into_response(),
    )
    .await)
}

/// `DELETE /api/v1/me/authenticators/{device_id}` → 204: one of the caller's phones approves
/// nothing more, and every session of theirs ends (this one too: they sign in again with a
/// phone they keep). Mailed like an administrator's revocation.
pub async fn remove(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(device): Path<String>,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    let device = crate::routes::authenticator_id(&device)?;
    let user = caller.session.user_id;
    let command = MspCommand::RevokeOwnAuthenticator {
        user_id: UserId(user),
        device_id: device,
    };
    let revoked = run(&state, &tenant, &caller, command);
    crate::routes::revoke_authenticator(&state, &tenant, user, device, true, revoked).await
}
