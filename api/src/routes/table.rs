//! Every route of the service, declared once: the router and the OpenAPI document are both
//! generated from these tables, so the document cannot miss a route.

use axum::Router;
use axum::routing::MethodRouter;

use crate::app::Shared;
use crate::routes::{
    agent, audit, branding, by_host, customer, health, login, msp, onboarding, phones, signup,
};

/// The JSON Schema of a type the handler decodes, from its `JsonSchema` derive.
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

/// One operation: method, path pattern, summary, and what it decodes.
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Whether the operation needs a session (bearer token or cookie).
    pub session: bool,
    /// Its JSON request body.
    pub body: Option<SchemaFn>,
    /// Its query string's parameters (an object's properties).
    pub query: Option<SchemaFn>,
    /// Its JSON answer on success, built from the very type the handler serializes.
    pub response: Option<SchemaFn>,
    /// Its NDJSON answer on success: one object of this type a line.
    pub lines: Option<SchemaFn>,
    /// Its status on success: 200 unless the table says otherwise (201 for what a call
    /// creates, 202 for what it only starts, 204 for no answer at all).
    pub status: u16,
}

/// The schema of `T` as a reference into the document's components.
fn reference<T: schemars::JsonSchema>(
    generator: &mut schemars::SchemaGenerator,
) -> schemars::Schema {
    generator.subschema_for::<T>()
}

/// The schema of `T` itself (an object whose properties are query parameters).
fn inline<T: schemars::JsonSchema>(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    T::json_schema(generator)
}

macro_rules! schema {
    ($how:ident) => {
        None
    };
    ($how:ident $type:ty) => {
        Some($how::<$type> as SchemaFn)
    };
}

macro_rules! status {
    () => {
        200
    };
    ($status:literal) => {
        $status
    };
}

macro_rules! routes {
    ($session:literal; $( $path:literal => { $( $method:ident ( $handler:path $(, body = $body:ty)? $(, query = $query:ty)? $(, response = $response:ty)? $(, lines = $lines:ty)? $(, status = $status:literal)? ) $summary:literal ),+ $(,)? } )*) => {
        /// The router of this table's routes.
        pub fn router() -> Router<Shared> {
            Router::new() $( .route($path, MethodRouter::new() $( .$method($handler) )+ ) )*
        }

        /// This table's operations, for the OpenAPI document.
        pub const OPERATIONS: &[Operation] = &[ $( $( Operation {
            method: stringify!($method),
            path: $path,
            summary: $summary,
            session: $session,
            body: schema!(reference $($body)?),
            query: schema!(inline $($query)?),
            response: schema!(reference $($response)?),
            lines: schema!(reference $($lines)?),
            status: status!($($status)?),
        }, )+ )* ];
    };
}

/// Routes anyone may call: health, signup, onboarding and logging in.
pub mod public {
    use super::*;

    routes! { false;
        "/healthz" => { get(health::healthz) "Liveness" }
        "/readyz" => { get(health::readyz, response = health::Readiness) "Readiness: projectors running, lag bounded" }
        "/metrics" => { get(health::metrics) "Prometheus metrics" }
        "/api/v1/openapi.json" => { get(crate::openapi::document, response = serde_json::Map<String, serde_json::Value>) "This document" }
        "/api/v1/signup" => { post(signup::signup, body = signup::SignupRequest, response = signup::SignedUp, status = 201) "Sign up an MSP tenant (apex host)" }
        "/api/v1/onboarding/start" => { post(onboarding::start, body = onboarding::StartRequest, response = onboarding::OnboardingStarted, status = 202) "Email a one-time onboarding code (always 202)" }
        "/api/v1/onboarding/complete" => { post(onboarding::complete, body = onboarding::CompleteRequest, response = onboarding::Onboarded, status = 201) "Verify the code and register a device's Ed25519 key" }
        "/api/v1/login/challenges" => { post(login::create_challenge, body = login::ChallengeRequest, response = login::Challenge, status = 201) "A QR login challenge" }
        "/api/v1/login/challenges/{id}" => { get(login::poll, query = login::WaitQuery, response = login::ChallengeAnswer) "Wait for a challenge's approval (long-poll); the token once" }
        "/api/v1/login/challenges/{id}/approve" => { post(login::approve, body = login::ApproveRequest, status = 204) "Approve a challenge with a device's signature" }
        "/sso" => { get(login::open_handoff, query = login::HandoffQuery, status = 303) "Open an SSO hand-off on a customer host" }
        "/api/v1/agent/enroll" => { post(agent::enroll, body = agent::EnrollRequest, response = agent::Enrollment, status = 201) "Exchange an enrollment token for a device credential" }
        "/api/v1/agent/changes" => { get(agent::changes, query = agent::ChangesQuery, response = projections::Changes) "The directory change feed (device credential; long-poll)" }
        "/api/v1/agent/login" => { post(agent::login, body = agent::LoginRequest, response = agent::AcceptedLogin) "Check a workstation password login (device credential)" }
        "/api/v1/agent/password" => { post(agent::change_password, body = agent::PasswordChangeRequest, response = agent::AcceptedLogin) "Change a user's password at a workstation, and log them in with the new one (device credential)" }
        "/api/v1/agent/branding" => { get(agent::branding, response = agent::AgentBranding) "The login screen's branding (device credential)" }
        "/api/v1/agent/challenges" => { post(agent::create_challenge, body = agent::ChallengeRequest, response = login::Challenge, status = 201) "A QR challenge for a passwordless login or elevated access (device credential)" }
        "/api/v1/agent/challenges/{id}" => { get(agent::poll_challenge, query = agent::WaitQuery, response = agent::AgentChallengeAnswer) "Wait for an agent challenge's approval: the user or the shared account (device credential)" }
        "/api/v1/agent/branding/{image}" => { get(agent::branding_image) "A branding image (device credential)" }
        "/api/v1/agent/elevations/ended" => { post(agent::elevation_ended, body = agent::ElevationEndedRequest, status = 204) "Report that an elevation's password was replaced (device credential)" }
    }
}

/// Routes of a logged-in session.
pub mod session {
    use super::*;

    routes! { true;
        "/api/v1/me" => { get(login::me, response = login::Me) "The caller, their tenant and roles" }
        "/api/v1/logout" => { post(login::logout, status = 204) "End the session" }
        "/api/v1/me/authenticators" => {
            get(phones::list, response = Vec<projections::DeviceRow>) "The caller's own phones (MSP users, on the MSP's host)",
            post(phones::add, response = phones::PhoneCodeSent, status = 202) "Mail the caller a code to enrol another phone",
        }
        "/api/v1/me/authenticators/{device_id}" => { delete(phones::remove, status = 204) "Remove one of the caller's own phones: it approves nothing more and their sessions end" }
        "/api/v1/users" => {
            get(by_host::list_users, response = by_host::UsersAnswer) "MSP users, or the customer's directory",
            post(by_host::add_user, body = by_host::UserToAdd, response = by_host::UserAnswer, status = 201) "Add an MSP user by email, or create a directory user",
        }
        "/api/v1/users/{id}" => {
            get(by_host::get_user, response = by_host::UserAnswer) "One user",
            patch(customer::update_user, body = customer::UserPatch, response = customer::DirectoryUser) "Change a directory user's names, emails, enabled",
            delete(by_host::remove_user, status = 204) "Remove a user",
        }
        "/api/v1/users/{id}/admin" => {
            post(msp::make_admin, response = msp::MspUser) "Make admin (every customer)",
            delete(msp::revoke_admin, response = msp::MspUser) "Revoke the admin role",
        }
        "/api/v1/users/{id}/auditor" => {
            post(msp::grant_auditor, body = msp::AuditorBody, status = 204) "Give a user the auditor role of the MSP or one customer",
            delete(msp::revoke_auditor, query = msp::AuditorQuery, status = 204) "End an auditor role (?customer=NAME)",
        }
        "/api/v1/users/{id}/authenticators" => { get(by_host::list_authenticators, response = Vec<projections::DeviceRow>) "A user's enrolled authenticators (phones)" }
        "/api/v1/users/{id}/authenticators/{device_id}" => { delete(by_host::revoke_authenticator, status = 204) "Revoke a lost or replaced authenticator: it approves nothing more, the user's sessions end, and they may onboard a new one" }
        "/api/v1/users/{id}/password" => { put(customer::set_password, body = customer::PasswordBody, status = 204) "Set a directory user's password" }
        "/api/v1/users/{id}/passwordless" => { post(customer::enable_passwordless, response = customer::DirectoryUser) "Invite a directory user to passwordless MFA" }
        "/api/v1/settings/user-source" => {
            get(msp::get_user_source, response = msp::UserSourceAnswer) "The tenant's user source",
            put(msp::put_user_source, body = msp::UserSourceBody, response = msp::UserSourceAnswer) "Choose the user source",
        }
        "/api/v1/settings/master-key" => {
            get(customer::get_master_key, response = customer::MasterKey) "The customer's master key",
            put(customer::put_master_key, body = customer::MasterKeyBody, response = customer::MasterKey) "Enable (or disable, if nothing is sealed) the master key",
        }
        "/api/v1/settings/desktop-login" => {
            get(customer::get_desktop_login, response = customer::DesktopLogin) "Desktop login settings",
            put(customer::put_desktop_login, body = customer::DesktopLoginBody, response = customer::DesktopLogin) "Enable desktop login and choose its method",
        }
        "/api/v1/accounts/shared" => {
            get(customer::get_shared_account, response = customer::SharedAccount) "The shared local admin account",
            put(customer::put_shared_account, body = customer::SharedAccountBody, response = customer::SharedAccount) "Configure the shared local admin account",
        }
        "/api/v1/agent/enrollment-tokens" => {
            get(customer::list_enrollment_tokens, response = Vec<projections::EnrollmentTokenRow>) "The enrollment tokens that can still enroll an agent",
            post(customer::issue_enrollment_token, response = customer::NewEnrollmentToken, status = 201) "A one-time agent enrollment token",
        }
        "/api/v1/agent/enrollment-tokens/{id}" => { delete(customer::revoke_enrollment_token, status = 204) "Withdraw an enrollment token before it is used" }
        "/api/v1/agent/devices" => { get(agent::devices, response = Vec<projections::DeviceRow>) "The tenant's enrolled agents" }
        "/api/v1/agent/devices/{id}" => { delete(agent::revoke_device, status = 204) "Revoke an agent, at once" }
        "/api/v1/customers" => {
            get(msp::list_customers, response = Vec<msp::Customer>) "Customers with active users and technicians",
            post(msp::create_customer, body = msp::NewCustomer, response = msp::Customer, status = 201) "Create a customer tenant",
        }
        "/api/v1/customers/{name}" => {
            get(msp::get_customer, response = msp::Customer) "One customer with its active users and technicians",
            delete(msp::delete_customer, status = 204) "Delete a customer tenant and all its data",
        }
        "/api/v1/customers/{name}/technicians" => {
            get(msp::list_technicians, response = Vec<msp::Technician>) "Who reaches the customer, and how",
            post(msp::delegate, body = msp::NewDelegation, response = msp::Delegation, status = 201) "Delegate the customer to a technician",
        }
        "/api/v1/customers/{name}/technicians/{user_id}" => { delete(msp::revoke_delegation, status = 204) "Revoke a delegation, at once" }
        "/api/v1/customers/{name}/sso" => { post(msp::sso, response = msp::SsoHandoff) "A one-time, 60-second hand-off URL onto the customer's host" }
        "/api/v1/apps" => { get(msp::apps, response = Vec<msp::AppLink>) "The customer tenants the caller can open" }
        "/api/v1/audit/events" => { get(audit::events, query = audit::EventsQuery, lines = crate::audit::AuditLine<'static>) "The tenant's log as NDJSON: one event envelope a line" }
        "/api/v1/audit/head" => { get(audit::head, response = audit::LogHead) "Where the tenant's log ends (seq and hash), without walking it" }
        "/api/v1/audit/verify" => { get(audit::verify, response = audit::Verification) "The tenant's hash chain, verified" }
        "/api/v1/audit/state" => { get(audit::state_at, query = audit::StateQuery, response = audit::StateAt) "The tenant's state at a time, replayed" }
    }
}

/// Uploads (branding images): a session, and a body limit of their own.
pub mod uploads {
    use super::*;

    routes! { true;
        "/api/v1/branding" => {
            get(branding::get_branding, response = branding::Branding) "The desktop login screen's branding",
            put(branding::put_branding, response = branding::Branding) "Upload background, logo (PNG or JPEG) and text (multipart)",
        }
        "/api/v1/branding/{image}" => { get(branding::get_image) "A branding image (background or logo)" }
    }
}
