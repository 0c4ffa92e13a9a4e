//! `POST /api/v1/signup` on the apex host: a new MSP tenant with its first admin, who is sent
//! an onboarding code, all in one atomic commit. The operator's `idemd signup` (the control
//! socket) creates tenants through the same [`create_msp`].

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use domain::decision::Decision;
use domain::ids::{TenantId, UserId};
use domain::msp::{self, MspCommand, MspTenant};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::Shared;
use crate::command;
use crate::config::Signup;
use crate::host::{self, Host};
use crate::mail::Message;
use crate::problem::Problem;
use crate::routes::{body, one_time_code, written};

/// A new MSP tenant and its first admin (who gets an onboarding code by email).
#[derive(Serialize, JsonSchema)]
pub struct SignedUp {
    tenant: SignedUpTenant,
    admin: SignedUpAdmin,
}

#[derive(Serialize, JsonSchema)]
pub struct SignedUpTenant {
    id: Uuid,
    name: String,
    display_name: String,
    /// The MSP's own host.
    url: String,
}

#[derive(Serialize, JsonSchema)]
pub struct SignedUpAdmin {
    id: Uuid,
    email: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// Lowercase letters, digits and inner hyphens: the tenant's host is
    /// `{name}.{base domain}`.
    #[schemars(extend("pattern" = domain::validate::tenant_name_pattern()))]
    name: String,
    #[schemars(extend("pattern" = domain::validate::text_pattern(domain::validate::MAX_DISPLAY_NAME)))]
    display_name: String,
    #[schemars(extend("format" = "email"))]
    admin_email: String,
}

pub async fn signup(
    State(state): State<Shared>,
    headers: HeaderMap,
    request: Result<Json<SignupRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    if !matches!(host::resolve(&state, &headers).await?, Host::Apex) {
        return Err(Problem::not_found(
            "signup is served on the platform's own host",
        ));
    }
    if state.config.signup == Signup::Closed {
        return Err(Problem::not_found("signup is closed on this platform"));
    }
    create_msp(&state, body(request)?, "signup").await
}

/// Creates an MSP tenant with its first admin and mails the admin an onboarding code: the
/// public signup's work, and the operator's (`idemd signup`, whatever `IDEM_SIGNUP` says).
/// `actor` is who the log records as having done it.
pub async fn create_msp(
    state: &Shared,
    request: SignupRequest,
    actor: &str,
) -> Result<Response, Problem> {
    let tenant_id = TenantId(Uuid::now_v7());
    let admin_id = UserId(Uuid::now_v7());
    let now = Utc::now();
    let signed_up = msp::decide(
        None,
        MspCommand::SignUp {
            tenant_id,
            name: request.name,
            display_name: request.display_name,
            admin_user_id: admin_id,
            admin_email: request.admin_email,
        },
    )?;
    let tenant = MspTenant::replay(&signed_up.events)?
        .ok_or_else(|| Problem::internal(&"signup decided no tenant"))?;
    let code = one_time_code();
    let admin_email = tenant
        .users
        .get(&admin_id)
        .map(|u| u.email.clone())
        .ok_or_else(|| Problem::internal(&"signup decided no admin"))?;
    let onboarding = msp::decide(
        Some(&tenant),
        MspCommand::StartOnboarding {
            email: admin_email.clone(),
            code: state.root_keys.code_key().keyed(&code),
            now,
        },
    )?;
    let decision = Decision {
        events: signed_up
            .events
            .into_iter()
            .chain(onboarding.events)
            .collect(),
        claims: signed_up.claims,
        releases: Vec::new(),
        refusal: None,
    };

    // A new stream: the commit expects none, and takes the host label's reservation.
    let (committed, _) =
        command::execute(state, tenant_id, actor, now, |_| Ok(decision.clone())).await?;
    let committed = committed.ok_or_else(|| Problem::internal(&"signup wrote nothing"))?;

    let message = Message {
        to: admin_email.clone(),
        subject: format!("Your {} onboarding code", tenant.display_name),
        body: format!(
            "Welcome to idem. Enter this code in the authenticator app to enroll your device.\n\
             It expires in 15 minutes.\n\nCode: {code}\n"
        ),
    };
    // If it fails (logged), the tenant exists and the admin can ask for a new code.
    state.mailer.post(message).await;

    let body = SignedUp {
        tenant: SignedUpTenant {
            id: tenant_id.0,
            name: tenant.name.clone(),
            display_name: tenant.display_name.clone(),
            url: state.config.tenant_url(&tenant.host_label),
        },
        admin: SignedUpAdmin {
            id: admin_id.0,
            email: admin_email,
        },
    };
    Ok(written(
        state,
        Some(&committed),
        (StatusCode::CREATED, Json(body)).into_response(),
    )
    .await)
}
