//! The customer tenant's routes, on its own host: the master key, desktop login, the cloud
//! directory's users (with sealed passwords and personal emails), passwordless MFA, the shared
//! local admin account and agent enrollment tokens. Callers are the MSP's admins and the
//! technicians delegated to the customer (sessions opened by QR or SSO on this host).
//!
//! Secrets are checked and sealed here, before a command is decided: passwords become argon2id
//! verifiers on the hashing pool's own threads (`crate::hashing`: never on the async workers), sealed with
//! the tenant's data key, which is unwrapped from the key store beside the log. No response or
//! log line holds a password, verifier or personal email.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use domain::authz::Action;
use domain::crypto::{DataKey, Sealed};
use domain::customer::{self, CustomerCommand, Sealer};
use domain::decision::DomainError;
use domain::event::DesktopLoginMethod;
use domain::ids::{TenantId, UserId};
use domain::validate;
use eventlog::{EventLog, StreamId, WrappedKey};
use projections::{TenantRow, UserRow};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::app::{AppState, Shared};
use crate::auth::{self, Caller};
use crate::command::{self, Plan, fold_customer};
use crate::host;
use crate::problem::Problem;
use crate::routes::{
    body, no_content, settings_written, settle, user_id, user_row, user_written, with_position,
    written,
};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MasterKeyBody {
    enabled: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DesktopLoginBody {
    enabled: bool,
    #[schemars(extend("enum" = ["password", "passwordless"]))]
    method: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "DirectoryNewUser")]
pub struct NewUser {
    #[schemars(extend("pattern" = validate::text_pattern(validate::MAX_PERSON_NAME)))]
    first_name: String,
    #[schemars(extend("pattern" = validate::text_pattern(validate::MAX_PERSON_NAME)))]
    last_name: String,
    /// The workstation login name, unique in the tenant whatever its case.
    #[schemars(extend("pattern" = validate::username_pattern(), "maxLength" = validate::MAX_USERNAME))]
    username: String,
    #[schemars(extend("format" = "email"))]
    email: String,
    /// Sealed with the tenant's master key; never answered. At least the deployment's
    /// minimum length (8 unless it sets more).
    #[schemars(extend(
        "writeOnly" = true,
        "minLength" = validate::LEAST_MIN_PASSWORD_CHARS,
        "maxLength" = validate::MAX_PASSWORD_CHARS,
        "pattern" = validate::password_pattern()
    ))]
    password: Option<String>,
    /// With a `password`: it is a temporary one, which the user changes at their first
    /// workstation login.
    #[serde(default)]
    must_change_password: bool,
    /// Sealed with the tenant's master key; needs the master key enabled.
    #[schemars(extend("format" = "email"))]
    personal_email: Option<String>,
}

/// Absent stays `None`; `null` is `Some(None)` (remove); a value is `Some(Some(..))`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[schemars(extend("pattern" = validate::text_pattern(validate::MAX_PERSON_NAME)))]
    first_name: Option<String>,
    #[schemars(extend("pattern" = validate::text_pattern(validate::MAX_PERSON_NAME)))]
    last_name: Option<String>,
    #[schemars(extend("format" = "email"))]
    email: Option<String>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "present")]
    personal_email: Option<Option<String>>,
    enabled: Option<bool>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    /// At least the deployment's minimum length (8 unless it sets more).
    #[schemars(extend(
        "writeOnly" = true,
        "minLength" = validate::LEAST_MIN_PASSWORD_CHARS,
        "maxLength" = validate::MAX_PASSWORD_CHARS,
        "pattern" = validate::password_pattern()
    ))]
    password: String,
    /// A temporary password: the user's next workstation login must choose their own
    /// before it opens the account.
    #[serde(default)]
    must_change_password: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SharedAccountBody {
    /// The shared local admin account's name on every workstation.
    #[schemars(extend("pattern" = validate::username_pattern(), "maxLength" = validate::MAX_USERNAME))]
    username: String,
    /// Minutes the password an elevation shows stays the account's, 5 to 480; absent keeps
    /// the tenant's (60 until set).
    #[serde(default)]
    #[schemars(range(min = 5, max = 480))]
    elevation_minutes: Option<u32>,
}

/// The host's customer tenant and the caller's session on it, allowed to do `action`.
pub async fn context(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    action: Action,
) -> Result<(std::sync::Arc<TenantRow>, Caller), Problem> {
    let tenant = host::tenant(state, headers).await?;
    if tenant.msp_id.is_none() {
        return Err(Problem::not_found(
            "this route belongs to a customer tenant's host",
        ));
    }
    let caller = auth::caller(state, method, headers, &tenant).await?;
    caller.may(action, &tenant)?;
    Ok((tenant, caller))
}

/// Decides `command` on the customer and commits it, as the caller.
async fn run(
    state: &AppState,
    tenant: &TenantRow,
    caller: &Caller,
    command: CustomerCommand,
) -> Result<Option<eventlog::Committed>, Problem> {
    command::on_customer(state, TenantId(tenant.id), &caller.actor, command).await
}

/// The tenant's current data key, unwrapped with the root key; 409 if the master key is off.
pub async fn data_key(state: &AppState, tenant: &TenantRow) -> Result<DataKey, Problem> {
    let version = tenant.master_key_version.ok_or_else(|| {
        Problem::from(DomainError::Conflict(
            "enable the master key first: passwords and personal emails are sealed with it".into(),
        ))
    })?;
    // Twice at most: a root key rotation that ends between reading the wrapped key and
    // unwrapping it leaves a wrapping the service no longer holds the key of; read again,
    // the store has the new one.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let keys = state.log.data_keys(StreamId(tenant.id)).await?;
        // Missing only in a log restored from a backup taken before the tenant was deleted:
        // its key left the key mirror with the deletion (crypto-shredding, backups included).
        let wrapped = keys.iter().find(|k| k.version == version).ok_or_else(|| {
            Problem::from(DomainError::Conflict(format!(
                "this tenant's data key (version {version}) was destroyed (the tenant was \
                 deleted after the backup this service was restored from): its sealed data \
                 (passwords, personal emails) cannot be opened"
            )))
        })?;
        match state.root_keys.unwrap(tenant.id, version, &wrapped.wrapped) {
            Err(domain::crypto::CryptoError::WrongRootKey { .. }) if attempts < 2 => continue,
            unwrapped => return unwrapped.map_err(|e| Problem::internal(&e)),
        }
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::fill(&mut bytes);
    bytes
}

/// Checks and seals a password for `user` on the hashing pool: argon2id is costly by design,
/// so it runs on its own threads, one hash per CPU, never on the async workers.
/// `source` is who asks (the caller's user id): the hashing queue takes turns between them.
pub(crate) async fn seal_password(
    state: &AppState,
    key: DataKey,
    tenant: Uuid,
    source: Uuid,
    user: UserId,
    password: zeroize::Zeroizing<String>,
) -> Result<Sealed, Problem> {
    let policy = state.config.password_policy;
    let params = state.config.argon2;
    let (salt, nonce) = (random(), random());
    state
        .hashing
        .run(tenant, source, move |memory| {
            Sealer {
                key: &key,
                tenant: TenantId(tenant),
            }
            .password(&policy, params, user, &password, salt, nonce, memory)
        })
        .await?
        .map_err(Problem::from)
}

fn seal_email(key: &DataKey, tenant: Uuid, user: UserId, email: &str) -> Result<Sealed, Problem> {
    Sealer {
        key,
        tenant: TenantId(tenant),
    }
    .personal_email(user, email, random())
    .map_err(Problem::from)
}

/// A directory user as the routes answer it: whether secrets are set, never the secrets.
#[derive(Serialize, JsonSchema)]
pub struct DirectoryUser {
    id: Uuid,
    first_name: Option<String>,
    last_name: Option<String>,
    /// The Windows username.
    username: Option<String>,
    /// Company email or UPN.
    email: String,
    enabled: bool,
    has_password: bool,
    /// Moves at each password change; workstations drop cached logins of older versions.
    password_version: u32,
    /// The password is a temporary one: the user's next workstation login changes it.
    must_change_password: bool,
    /// Invited to passwordless MFA.
    passwordless: bool,
    /// Invited, and has enrolled a device.
    passwordless_enrolled: bool,
    has_personal_email: bool,
    created_at: String,
}

fn user_json(user: &UserRow) -> DirectoryUser {
    DirectoryUser {
        id: user.id,
        first_name: user.first_name.clone(),
        last_name: user.last_name.clone(),
        username: user.username.clone(),
        email: user.email.clone(),
        enabled: user.enabled,
        has_password: user.has_password,
        password_version: user.password_version,
        must_change_password: user.must_change_password,
        passwordless: user.passwordless,
        passwordless_enrolled: user.passwordless && user.devices > 0,
        has_personal_email: user.has_personal_email,
        created_at: user.created_at.clone(),
    }
}

/// `GET /api/v1/settings/master-key` → `{enabled, key_version}`.
pub async fn get_master_key(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (tenant, _) = context(&state, &method, &headers, Action::ReadTenantSettings).await?;
    Ok(Json(master_key_json(&tenant)).into_response())
}

/// `PUT /api/v1/settings/master-key` `{enabled}`: enabling makes a new 256-bit data key,
/// wrapped by the root key and stored beside the log in the same commit as the event;
/// disabling is refused while anything is sealed with it.
pub async fn put_master_key(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    request: Result<Json<MasterKeyBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let (tenant, caller) = context(&state, &method, &headers, Action::ManageTenantSettings).await?;
    let request = body(request)?;
    let committed = if request.enabled {
        let existing = state.log.data_keys(StreamId(tenant.id)).await?;
        let version = existing.iter().map(|k| k.version).max().unwrap_or(0) + 1;
        let key = DataKey::new(version, random());
        // Held until the commit is answered: a root key rotation waits for it, so the key
        // wrapped here with the current root key is in the store before it reads the store.
        let (_wrapping, root_key) = state.root_keys.for_wrapping().await;
        let wrapped = key
            .wrap(&root_key, tenant.id, random())
            .map_err(|e| Problem::internal(&e))?;
        let (committed, _) = command::execute_plan(
            &state,
            TenantId(tenant.id),
            &caller.actor,
            Utc::now(),
            |history| {
                let decision = customer::decide(
                    Some(fold_customer(history)?),
                    CustomerCommand::EnableMasterKey {
                        key_version: version,
                    },
                )?;
                // Only a decision that enables it stores the key.
                let keys = if decision.events.is_empty() {
                    Vec::new()
                } else {
                    vec![WrappedKey {
                        version,
                        wrapped: wrapped.clone(),
                    }]
                };
                Ok(Plan {
                    keys,
                    ..Plan::on_tenant(decision)
                })
            },
        )
        .await?;
        committed
    } else {
        run(&state, &tenant, &caller, CustomerCommand::DisableMasterKey).await?
    };
    settings_written(&state, &headers, committed.as_ref(), master_key_json).await
}

/// The customer's master key.
#[derive(Serialize, JsonSchema)]
pub struct MasterKey {
    enabled: bool,
    /// The data key's version while enabled.
    key_version: Option<u32>,
}

fn master_key_json(tenant: &TenantRow) -> MasterKey {
    MasterKey {
        enabled: tenant.master_key_version.is_some(),
        key_version: tenant.master_key_version,
    }
}

/// The shared local admin account of the customer's workstations.
#[derive(Serialize, JsonSchema)]
pub struct SharedAccount {
    /// None until configured.
    username: Option<String>,
    /// Minutes the password an elevation shows stays the account's; then the agent gives
    /// the account a new password shown to nobody.
    elevation_minutes: u32,
}

fn shared_account_json(tenant: &TenantRow) -> SharedAccount {
    SharedAccount {
        username: tenant.shared_account.clone(),
        elevation_minutes: tenant.elevation_minutes,
    }
}

/// Desktop login at the customer's workstations.
#[derive(Serialize, JsonSchema)]
pub struct DesktopLogin {
    enabled: bool,
    #[schemars(extend("enum" = ["password", "passwordless"]))]
    method: String,
}

fn desktop_login_json(tenant: &TenantRow) -> DesktopLogin {
    DesktopLogin {
        enabled: tenant.desktop_login_enabled,
        method: tenant
            .desktop_login_method
            .clone()
            .unwrap_or_else(|| "password".into()),
    }
}

/// A new enrollment token: shown this once, kept nowhere.
#[derive(Serialize, JsonSchema)]
pub struct NewEnrollmentToken {
    id: Uuid,
    /// Give it to `idem-agent enroll`; it works once, until `expires_at`.
    token: String,
    expires_at: String,
}

/// `GET /api/v1/settings/desktop-login` → `{enabled, method}`.
pub async fn get_desktop_login(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (tenant, _) = context(&state, &method, &headers, Action::ReadTenantSettings).await?;
    Ok(Json(desktop_login_json(&tenant)).into_response())
}

/// `PUT /api/v1/settings/desktop-login` `{enabled, method: "password" | "passwordless"}`.
pub async fn put_desktop_login(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    request: Result<Json<DesktopLoginBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let (tenant, caller) = context(&state, &method, &headers, Action::ManageTenantSettings).await?;
    let request = body(request)?;
    let login_method = match request.method.as_str() {
        "password" => DesktopLoginMethod::Password,
        "passwordless" => DesktopLoginMethod::Passwordless,
        _ => {
            return Err(Problem::invalid(
                "method",
                "must be \"password\" or \"passwordless\"",
            ));
        }
    };
    let committed = run(
        &state,
        &tenant,
        &caller,
        CustomerCommand::ConfigureDesktopLogin {
            enabled: request.enabled,
            method: login_method,
        },
    )
    .await?;
    settings_written(&state, &headers, committed.as_ref(), desktop_login_json).await
}

/// `GET /api/v1/users` on a customer host: the cloud directory.
pub async fn list_users(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (tenant, _) = context(&state, &method, &headers, Action::ReadDirectory).await?;
    let users = state.read().users_of(tenant.id).await?;
    Ok(Json(users.iter().map(user_json).collect::<Vec<_>>()).into_response())
}

/// `POST /api/v1/users` `{first_name, last_name, username, email, password?, personal_email?}`
/// → 201 the user. A password or personal email needs the master key.
pub async fn create_user(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    request: Result<Json<NewUser>, JsonRejection>,
) -> Result<Response, Problem> {
    let (tenant, caller) = context(&state, &method, &headers, Action::ManageDirectory).await?;
    let request = body(request)?;
    let user = UserId(Uuid::now_v7());
    let (password, personal_email) =
        if request.password.is_some() || request.personal_email.is_some() {
            let key = data_key(&state, &tenant).await?;
            let personal_email = request
                .personal_email
                .as_deref()
                .filter(|e| !e.trim().is_empty())
                .map(|e| seal_email(&key, tenant.id, user, e))
                .transpose()?;
            let password = match request.password {
                Some(password) => {
                    let password = zeroize::Zeroizing::new(password);
                    let source = caller.user().0;
                    Some(seal_password(&state, key, tenant.id, source, user, password).await?)
                }
                None => None,
            };
            (password, personal_email)
        } else {
            (None, None)
        };
    let committed = run(
        &state,
        &tenant,
        &caller,
        CustomerCommand::CreateUser {
            user_id: user,
            first_name: request.first_name,
            last_name: request.last_name,
            username: request.username,
            email: request.email,
            password,
            must_change_password: request.must_change_password,
            personal_email,
        },
    )
    .await?;
    user_written(
        &state,
        committed.as_ref(),
        tenant.id,
        user.0,
        StatusCode::CREATED,
        user_json,
    )
    .await
}

/// `GET /api/v1/users/{id}` on a customer host.
pub async fn get_user(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let (tenant, _) = context(&state, &method, &headers, Action::ReadDirectory).await?;
    let row = user_row(&state, tenant.id, user_id(&id)?).await?;
    Ok(Json(user_json(&row)).into_response())
}

/// `PATCH /api/v1/users/{id}` `{first_name?, last_name?, email?, personal_email?, enabled?}`;
/// `personal_email: null` removes it.
pub async fn update_user(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    request: Result<Json<UserPatch>, JsonRejection>,
) -> Result<Response, Problem> {
    let (tenant, caller) = context(&state, &method, &headers, Action::ManageDirectory).await?;
    let user = UserId(user_id(&id)?);
    let request = body(request)?;
    let personal_email = match request.personal_email {
        None => None,
        Some(None) => Some(None),
        Some(Some(email)) if email.trim().is_empty() => Some(None),
        Some(Some(email)) => {
            let key = data_key(&state, &tenant).await?;
            Some(Some(seal_email(&key, tenant.id, user, &email)?))
        }
    };
    let committed = run(
        &state,
        &tenant,
        &caller,
        CustomerCommand::UpdateUser {
            user_id: user,
            first_name: request.first_name,
            last_name: request.last_name,
            email: request.email,
            personal_email,
            enabled: request.enabled,
        },
    )
    .await?;
    user_written(
        &state,
        committed.as_ref(),
        tenant.id,
        user.0,
        StatusCode::OK,
        user_json,
    )
    .await
}

/// `DELETE /api/v1/users/{id}` on a customer host → 204; the username is free again.
pub async fn delete_user(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let (tenant, caller) = context(&state, &method, &headers, Action::ManageDirectory).await?;
    let user = UserId(user_id(&id)?);
    let committed = run(
        &state,
        &tenant,
        &caller,
        CustomerCommand::DeleteUser { user_id: user },
    )
    .await?;
    Ok(no_content(&state, committed.as_ref()).await)
}

/// `GET /api/v1/users/{id}/authenticators`: the phones of a passwordless user.
pub async fn list_authenticators(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let (tenant, _) = context(&state, &method, &headers, Action::ReadDirectory).await?;
    crate::routes::authenticators_of(&state, tenant.id, user_id(&id)?).await
}

/// `DELETE /api/v1/users/{id}/authenticators/{device_id}` → 204: a passwordless user's lost
/// or replaced phone approves nothing more, their sessions end, and once they have none left
/// they may onboard a new one.
pub async fn revoke_authenticator(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((id, device)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let (tenant, caller) = context(&state, &method, &headers, Action::ManageDirectory).await?;
    let (user, device) = (user_id(&id)?, crate::routes::authenticator_id(&device)?);
    let command = CustomerCommand::RevokeAuthenticator {
        user_id: UserId(user),
        device_id: device,
    };
    let revoked = run(&state, &tenant, &caller, command);
    crate::routes::revoke_authenticator(&state, &tenant, user, device, false, revoked).await
}

/// `PUT /api/v1/users/{id}/password` `{password, must_change_password?}` → 204; the password
/// version goes up, so agents drop what they cached for the old one. A temporary password
/// (`must_change_password`) opens no account until the user changes it at a workstation.
pub async fn set_password(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    request: Result<Json<PasswordBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let (tenant, caller) = context(&state, &method, &headers, Action::ManageDirectory).await?;
    let user = UserId(user_id(&id)?);
    let request = body(request)?;
    // An unknown user is a 404 before any hashing is spent on it.
    let row = user_row(&state, tenant.id, user.0).await?;
    let key = data_key(&state, &tenant).await?;
    let verifier = seal_password(
        &state,
        key,
        tenant.id,
        caller.user().0,
        user,
        zeroize::Zeroizing::new(request.password),
    )
    .await?;
    let committed = run(
        &state,
        &tenant,
        &caller,
        CustomerCommand::SetPassword {
            user_id: user,
            verifier,
            must_change: request.must_change_password,
        },
    )
    .await?;
    let then = if request.must_change_password {
        "It is a temporary one: you choose your own at your next sign-in."
    } else {
        "Your administrator tells you what it is."
    };
    let how = format!("An administrator set a new one. {then}");
    let username = row.username.as_deref().unwrap_or_default();
    mail_password_changed(&state, &tenant, &row.email, username, &how).await;
    Ok(no_content(&state, committed.as_ref()).await)
}

/// Tells a directory user at their company email that their workstation password changed
/// (`how`: by whom, or at which workstation), and to tell their IT contact if they did not
/// expect it: a change made by someone else is then noticed. Never the password.
pub(crate) async fn mail_password_changed(
    state: &AppState,
    tenant: &TenantRow,
    email: &str,
    username: &str,
    how: &str,
) {
    state
        .mailer
        .post(crate::mail::Message {
            to: email.to_owned(),
            subject: format!("{}: your password was changed", tenant.display_name),
            body: format!(
                "The password you sign in to {}'s workstations with, as {username}, was \
                 changed. {how}\n\
                 If you did not expect this, tell your IT contact at once.\n",
                tenant.display_name
            ),
        })
        .await;
}

/// `POST /api/v1/users/{id}/passwordless`: the user may now onboard a phone with a code sent
/// to their company email (`/api/v1/onboarding/start` on this host). Answers the user.
pub async fn enable_passwordless(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let (tenant, caller) = context(&state, &method, &headers, Action::ManageDirectory).await?;
    let user = UserId(user_id(&id)?);
    let committed = run(
        &state,
        &tenant,
        &caller,
        CustomerCommand::EnablePasswordless { user_id: user },
    )
    .await?;
    settle(&state, committed.as_ref()).await;
    let row = user_row(&state, tenant.id, user.0).await?;
    let invitation = crate::mail::Message {
        to: row.email.clone(),
        subject: format!("{}: set up passwordless login", tenant.display_name),
        body: format!(
            "You can now log in to your workstation with your phone.\n\
             Ask for a code in the authenticator app for {} and this email address.\n",
            state.config.tenant_url(&tenant.host_label)
        ),
    };
    if committed.is_some() {
        state.mailer.post(invitation).await;
    }
    Ok(with_position(
        committed.as_ref(),
        Json(user_json(&row)).into_response(),
    ))
}

/// `GET /api/v1/accounts/shared` → `{username, elevation_minutes}` (username null until
/// configured).
pub async fn get_shared_account(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (tenant, _) = context(&state, &method, &headers, Action::ReadTenantSettings).await?;
    Ok(Json(shared_account_json(&tenant)).into_response())
}

/// `PUT /api/v1/accounts/shared` `{username, elevation_minutes?}`: the local admin account
/// technicians elevate into on this tenant's workstations, and how long an elevation lasts.
pub async fn put_shared_account(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    request: Result<Json<SharedAccountBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let (tenant, caller) = context(&state, &method, &headers, Action::ManageSharedAccount).await?;
    let request = body(request)?;
    let committed = run(
        &state,
        &tenant,
        &caller,
        CustomerCommand::ConfigureSharedAccount {
            username: request.username,
            elevation_minutes: request.elevation_minutes,
        },
    )
    .await?;
    settings_written(&state, &headers, committed.as_ref(), shared_account_json).await
}

/// `POST /api/v1/agent/enrollment-tokens` → 201 `{token, expires_at}`: a one-time token to
/// enroll one desktop agent into this tenant within 24 hours. Only its digest is recorded.
pub async fn issue_enrollment_token(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (tenant, caller) = context(&state, &method, &headers, Action::ManageAgents).await?;
    let token = auth::new_token();
    let now = Utc::now();
    let expires_at = now + domain::customer::ENROLLMENT_TOKEN_LIFETIME;
    let token_id = Uuid::now_v7();
    let committed = run(
        &state,
        &tenant,
        &caller,
        CustomerCommand::IssueEnrollmentToken {
            token_id,
            token_digest: domain::session::token_digest(&token),
            now,
        },
    )
    .await?;
    Ok(written(
        &state,
        committed.as_ref(),
        (
            StatusCode::CREATED,
            Json(NewEnrollmentToken {
                id: token_id,
                token,
                expires_at: expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }),
        )
            .into_response(),
    )
    .await)
}

/// `GET /api/v1/agent/enrollment-tokens` → `[{id, issued_at, expires_at}]`: the tokens that can
/// still enroll an agent (not used, revoked or expired), oldest first. The tokens themselves
/// were shown once, at issue, and are kept nowhere.
pub async fn list_enrollment_tokens(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (tenant, _) = context(&state, &method, &headers, Action::ManageAgents).await?;
    let tokens = state
        .read()
        .pending_enrollment_tokens(tenant.id, Utc::now())
        .await?;
    Ok(Json(tokens).into_response())
}

/// `DELETE /api/v1/agent/enrollment-tokens/{id}` → 204: the token enrolls nothing from now on
/// (one seen by someone it was not meant for). 404 once it is used, revoked or expired.
pub async fn revoke_enrollment_token(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let (tenant, caller) = context(&state, &method, &headers, Action::ManageAgents).await?;
    let token_id =
        Uuid::parse_str(&id).map_err(|_| Problem::not_found("no such enrollment token"))?;
    let committed = run(
        &state,
        &tenant,
        &caller,
        CustomerCommand::RevokeEnrollmentToken {
            token_id,
            now: Utc::now(),
        },
    )
    .await?;
    Ok(no_content(&state, committed.as_ref()).await)
}
