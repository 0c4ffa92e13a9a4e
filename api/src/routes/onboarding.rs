//! `POST /api/v1/onboarding/start` and `/complete` on any tenant host: a user proves an email
//! with a one-time code and registers a device's Ed25519 public key. MSP users onboard on their
//! MSP's host; directory users invited to passwordless MFA on their customer's host.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use domain::customer::{self, CustomerCommand};
use domain::event::Event;
use domain::ids::{DeviceId, TenantId};
use domain::msp::{self, MspCommand};
use domain::onboarding::Attempt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::Instant;
use uuid::Uuid;

use crate::app::{AppState, Shared};
use crate::client_addr::ClientAddr;
use crate::command::{self, fold_customer, fold_msp};
use crate::host::{self, Host};
use crate::limits::Limiter;
use crate::mail::Message;
use crate::problem::Problem;
use crate::routes::{body, one_time_code, written};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Whatever it is (even not an email), the answer is the same 202.
    email: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    #[schemars(extend("format" = "email"))]
    email: String,
    /// The 8-digit code the email carried.
    code: String,
    device_name: String,
    /// The device's Ed25519 public key (base64url, 32 bytes).
    device_public_key: String,
}

/// The tenant a request is addressed to; onboarding has no meaning on the apex.
async fn tenant(state: &Shared, headers: &HeaderMap) -> Result<(TenantId, bool), Problem> {
    match host::resolve(state, headers).await? {
        Host::Apex => Err(Problem::not_found(
            "onboarding is served on the tenant's own host",
        )),
        Host::Tenant(row) => Ok((TenantId(row.id), row.kind == "msp")),
    }
}

/// The rate-limit key of an account: the email as typed (trimmed, lowercase) in one tenant,
/// whether or not anyone has it.
fn account(tenant: TenantId, email: &str) -> String {
    format!("{tenant}:{}", email.trim().to_lowercase())
}

/// Takes one call from the client's address and from the account's `per_account` bucket.
fn limit(
    per_account: &Limiter,
    state: &AppState,
    client: IpAddr,
    tenant: TenantId,
    email: &str,
) -> Result<(), Problem> {
    let now = Instant::now();
    state
        .limits
        .onboarding_per_address
        .take(&client.to_string(), now)
        .and_then(|()| per_account.take(&account(tenant, email), now))
        .map_err(Problem::too_many)
}

/// Always 202: whether the email belongs to anyone is not for the caller to learn. A code is
/// mailed only if a user with that email may onboard.
pub async fn start(
    State(state): State<Shared>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    request: Result<Json<StartRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let (tenant, is_msp) = tenant(&state, &headers).await?;
    let request = body(request)?;
    limit(
        &state.limits.onboarding_start_per_account,
        &state,
        client,
        tenant,
        &request.email,
    )?;
    let code = one_time_code();
    let now = Utc::now();
    let email = request.email;
    let (_, decision) = command::execute(&state, tenant, "onboarding", now, |history| {
        if is_msp {
            msp::decide(
                Some(fold_msp(history)?),
                MspCommand::StartOnboarding {
                    email: email.clone(),
                    code: state.root_keys.code_key().keyed(&code),
                    now,
                },
            )
        } else {
            customer::decide(
                Some(fold_customer(history)?),
                CustomerCommand::StartOnboarding {
                    email: email.clone(),
                    code: state.root_keys.code_key().keyed(&code),
                    now,
                },
            )
        }
    })
    .await
    .or_else(|problem| {
        // Invalid emails answer like unknown ones.
        if problem.status == StatusCode::UNPROCESSABLE_ENTITY {
            Ok((None, domain::decision::Decision::none()))
        } else {
            Err(problem)
        }
    })?;
    let issued = decision
        .events
        .iter()
        .any(|e| matches!(e, Event::OnboardingCodeIssued(_)));
    if issued {
        let message = Message {
            to: email.trim().to_owned(),
            subject: "Your idem onboarding code".into(),
            body: format!(
                "Enter this code in the authenticator app to enroll your device.\n\
                 It expires in 15 minutes.\n\nCode: {code}\n"
            ),
        };
        state.mailer.post(message).await;
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(OnboardingStarted {
            status: "if the email can onboard, a code is on its way",
        }),
    )
        .into_response())
}

/// The same answer whether or not the email may onboard (no account enumeration).
#[derive(Serialize, JsonSchema)]
pub struct OnboardingStarted {
    status: &'static str,
}

/// An onboarded user and their new device.
#[derive(Serialize, JsonSchema)]
pub struct Onboarded {
    user_id: Uuid,
    device_id: Uuid,
}

/// 201 `{user_id, device_id}` once the code checks out; a wrong code is a 401 and counts
/// towards the code's five tries.
pub async fn complete(
    State(state): State<Shared>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    request: Result<Json<CompleteRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let (tenant, is_msp) = tenant(&state, &headers).await?;
    let request = body(request)?;
    limit(
        &state.limits.onboarding_complete_per_account,
        &state,
        client,
        tenant,
        &request.email,
    )?;
    let now = Utc::now();
    let device_id = DeviceId(Uuid::now_v7());
    let (committed, decision) = command::execute(&state, tenant, "onboarding", now, |history| {
        if is_msp {
            msp::decide(
                Some(fold_msp(history)?),
                MspCommand::CompleteOnboarding {
                    email: request.email.clone(),
                    code: state.root_keys.code_key().keyed(&request.code),
                    device_id,
                    device_name: request.device_name.clone(),
                    public_key: request.device_public_key.clone(),
                    now,
                },
            )
        } else {
            customer::decide(
                Some(fold_customer(history)?),
                CustomerCommand::CompleteOnboarding {
                    email: request.email.clone(),
                    attempt: Attempt {
                        code: state.root_keys.code_key().keyed(&request.code),
                        device_id,
                        device_name: request.device_name.clone(),
                        public_key: request.device_public_key.clone(),
                        now,
                    },
                },
            )
        }
    })
    .await?;
    let user_id = decision
        .events
        .iter()
        .find_map(|e| match e {
            Event::DeviceEnrolled(d) => Some(d.user_id),
            _ => None,
        })
        .ok_or_else(|| Problem::internal(&"onboarding completed without a device"))?;
    let response = (
        StatusCode::CREATED,
        Json(Onboarded {
            user_id: user_id.0,
            device_id: device_id.0,
        }),
    )
        .into_response();
    Ok(written(&state, committed.as_ref(), response).await)
}
