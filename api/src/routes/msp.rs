//! The MSP tenant's routes: its users and their admin role, its user source, its customer
//! tenants (create, list with counts, delete with all their data), per-customer delegation,
//! the SSO hand-off into a customer, and the apps a user can open.
//!
//! Every handler resolves the host's tenant, authenticates the caller on that host, asks the
//! domain whether the caller's role allows the action, and then decides and commits. What a
//! caller cannot see (another MSP's customer, a customer not delegated to them) is a 404.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use domain::authz::{self, Action};
use domain::customer::{self, CustomerCommand};
use domain::event::UserSource;
use domain::ids::{TenantId, UserId};
use domain::msp::{self, MspCommand};
use domain::session;
use projections::{AuditorRole, TenantRow, UserRow};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::{AppState, Shared};
use crate::auth::{self, Caller};
use crate::challenges::Handoff;
use crate::command::{self, Plan, fold_msp};
use crate::host;
use crate::problem::Problem;
use crate::routes::params::Params;
use crate::routes::{
    body, no_content, settings_written, settle, user_id, user_row, user_written, with_position,
};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MspNewUser")]
pub struct NewUser {
    #[schemars(extend("format" = "email"))]
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserSourceBody {
    #[schemars(extend("enum" = ["local"]))]
    source: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    /// Lowercase letters, digits and inner hyphens; the customer's host is
    /// `{name}-{msp}.{base domain}`.
    #[schemars(extend("pattern" = domain::validate::tenant_name_pattern()))]
    name: String,
    #[schemars(extend("pattern" = domain::validate::text_pattern(domain::validate::MAX_DISPLAY_NAME)))]
    display_name: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDelegation {
    user_id: Uuid,
}

/// The host's tenant and the caller's session on it.
async fn context(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(std::sync::Arc<TenantRow>, Caller), Problem> {
    let tenant = host::tenant(state, headers).await?;
    let caller = auth::caller(state, method, headers, &tenant).await?;
    Ok((tenant, caller))
}

/// The host's MSP tenant and its caller; the MSP routes do not exist on customer hosts.
pub(crate) async fn msp_context(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(std::sync::Arc<TenantRow>, Caller), Problem> {
    let (tenant, caller) = context(state, method, headers).await?;
    if tenant.msp_id.is_some() {
        return Err(Problem::not_found(
            "this route belongs to the MSP's own host, not a customer's",
        ));
    }
    Ok((tenant, caller))
}

/// Runs an MSP command for `caller`, after checking their role allows it.
pub(crate) async fn run(
    state: &AppState,
    tenant: &TenantRow,
    caller: &Caller,
    command: MspCommand,
) -> Result<Option<eventlog::Committed>, Problem> {
    caller.may(command.action(), tenant)?;
    command::on_msp(state, TenantId(tenant.id), &caller.actor, command).await
}

/// An MSP user as the routes answer it.
#[derive(Serialize, JsonSchema)]
pub struct MspUser {
    id: Uuid,
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    /// Admin of the MSP: reaches every customer.
    admin: bool,
    auditor: AuditorRoles,
    /// Has enrolled an authenticator device.
    onboarded: bool,
    devices: u32,
    created_at: String,
}

/// The auditor roles a user holds, in the shapes `POST /api/v1/users/{id}/auditor` takes.
#[derive(Serialize, JsonSchema)]
pub struct AuditorRoles {
    /// Auditor of the MSP's own log.
    msp: bool,
    /// The customers whose logs they audit, by name.
    customers: Vec<String>,
}

impl MspUser {
    /// `user` with the auditor roles among `auditor` that are theirs (`msp`: the MSP's id).
    fn with_roles(user: &UserRow, auditor: &[AuditorRole], msp: Uuid) -> MspUser {
        let held = auditor.iter().filter(|role| role.user_id == user.id);
        MspUser {
            id: user.id,
            email: user.email.clone(),
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            admin: user.is_admin,
            auditor: AuditorRoles {
                msp: held.clone().any(|role| role.tenant_id == msp),
                customers: held
                    .filter(|role| role.tenant_id != msp)
                    .map(|role| role.tenant_name.clone())
                    .collect(),
            },
            onboarded: user.devices > 0,
            devices: user.devices,
            created_at: user.created_at.clone(),
        }
    }

    /// A user who holds no auditor role (just added).
    fn of(user: &UserRow) -> MspUser {
        MspUser::with_roles(user, &[], user.tenant_id)
    }
}

/// A tenant's user source.
#[derive(Serialize, JsonSchema)]
pub struct UserSourceAnswer {
    #[schemars(extend("enum" = ["local"]))]
    source: String,
}

/// A customer tenant with its counts, as the Customers table shows it.
#[derive(Serialize, JsonSchema)]
pub struct Customer {
    id: Uuid,
    name: String,
    display_name: String,
    /// The customer's own host.
    url: String,
    /// Enabled directory users with a password set or a device enrolled.
    active_users: u64,
    /// MSP users who reach the customer: admins and delegated technicians.
    technicians: u64,
}

/// An MSP user who reaches a customer, and through what.
#[derive(Serialize, JsonSchema)]
pub struct Technician {
    user_id: Uuid,
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    /// `admin` (every customer) and/or `delegation` (this one).
    via: Vec<String>,
}

/// A delegation just made.
#[derive(Serialize, JsonSchema)]
pub struct Delegation {
    user_id: Uuid,
    /// The customer's name.
    customer: String,
}

/// A one-time hand-off onto a customer's host.
#[derive(Serialize, JsonSchema)]
pub struct SsoHandoff {
    /// Open it in the browser within a minute; it works once.
    url: String,
    expires_at: String,
}

/// A customer tenant the caller can open from the user portal.
#[derive(Serialize, JsonSchema)]
pub struct AppLink {
    tenant_id: Uuid,
    name: String,
    display_name: String,
    url: String,
    /// Where to ask for the SSO hand-off (`POST`).
    sso: String,
}

/// `GET /api/v1/users`: the MSP's users, with their admin and auditor roles.
pub async fn list_users(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    caller.may(Action::ReadMspUsers, &tenant)?;
    let read = state.read();
    let users = read.users_of(tenant.id).await?;
    let auditor = read.auditor_roles_of(tenant.id).await?;
    let users: Vec<MspUser> = users
        .iter()
        .map(|user| MspUser::with_roles(user, &auditor, tenant.id))
        .collect();
    Ok(Json(users).into_response())
}

/// `POST /api/v1/users` `{email, first_name?, last_name?}` → 201 the user.
pub async fn add_user(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    request: Result<Json<NewUser>, JsonRejection>,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    caller.may(Action::ManageMspUsers, &tenant)?;
    let request = body(request)?;
    let user_id = UserId(Uuid::now_v7());
    let committed = run(
        &state,
        &tenant,
        &caller,
        MspCommand::AddUser {
            user_id,
            email: request.email,
            first_name: request.first_name,
            last_name: request.last_name,
        },
    )
    .await?;
    user_written(
        &state,
        committed.as_ref(),
        tenant.id,
        user_id.0,
        StatusCode::CREATED,
        MspUser::of,
    )
    .await
}

/// `GET /api/v1/users/{id}`: admins see anyone of the tenant, a technician themselves.
pub async fn get_user(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    let id = user_id(&id)?;
    if id != caller.session.user_id {
        caller.may(Action::ReadMspUsers, &tenant)?;
    }
    let user = user_row(&state, tenant.id, id).await?;
    let auditor = state.read().auditor_roles_of(tenant.id).await?;
    Ok(Json(MspUser::with_roles(&user, &auditor, tenant.id)).into_response())
}

/// `DELETE /api/v1/users/{id}` → 204: the user, their devices, roles, delegations and
/// sessions are gone.
pub async fn remove_user(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    caller.may(Action::ManageMspUsers, &tenant)?;
    let id = user_id(&id)?;
    let committed = run(
        &state,
        &tenant,
        &caller,
        MspCommand::RemoveUser {
            user_id: UserId(id),
        },
    )
    .await?;
    Ok(no_content(&state, committed.as_ref()).await)
}

/// `GET /api/v1/users/{id}/authenticators`: the phones that approve the user's logins
/// (admins see anyone's, a technician their own).
pub async fn list_authenticators(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    let id = user_id(&id)?;
    if id != caller.session.user_id {
        caller.may(Action::ReadMspUsers, &tenant)?;
    }
    crate::routes::authenticators_of(&state, tenant.id, id).await
}

/// `DELETE /api/v1/users/{id}/authenticators/{device_id}` → 204: a lost or replaced phone
/// approves nothing more, the user's sessions end (here and on customers' hosts), and a user
/// left without one may onboard a new phone.
pub async fn revoke_authenticator(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((id, device)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    caller.may(Action::ManageMspUsers, &tenant)?;
    let (user, device) = (user_id(&id)?, crate::routes::authenticator_id(&device)?);
    let command = MspCommand::RevokeAuthenticator {
        user_id: UserId(user),
        device_id: device,
    };
    let revoked = run(&state, &tenant, &caller, command);
    crate::routes::revoke_authenticator(&state, &tenant, user, device, false, revoked).await
}

/// `POST` / `DELETE /api/v1/users/{id}/admin`: make admin, revoke; answers the user.
async fn set_admin(
    state: Shared,
    method: Method,
    headers: HeaderMap,
    id: String,
    admin: bool,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    caller.may(Action::ManageRoles, &tenant)?;
    let id = user_id(&id)?;
    let user_id = UserId(id);
    let command = if admin {
        MspCommand::MakeAdmin { user_id }
    } else {
        MspCommand::RevokeAdmin { user_id }
    };
    let committed = run(&state, &tenant, &caller, command).await?;
    user_written(
        &state,
        committed.as_ref(),
        tenant.id,
        id,
        StatusCode::OK,
        MspUser::of,
    )
    .await
}

pub async fn make_admin(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    set_admin(state, method, headers, id, true).await
}

pub async fn revoke_admin(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    set_admin(state, method, headers, id, false).await
}

/// `GET /api/v1/settings/user-source` on any tenant host.
pub async fn get_user_source(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (tenant, caller) = context(&state, &method, &headers).await?;
    caller.may(Action::ReadTenantSettings, &tenant)?;
    Ok(Json(UserSourceAnswer {
        source: tenant.user_source.clone(),
    })
    .into_response())
}

/// `PUT /api/v1/settings/user-source` `{source: "local"}` on any tenant host.
pub async fn put_user_source(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    request: Result<Json<UserSourceBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let (tenant, caller) = context(&state, &method, &headers).await?;
    caller.may(Action::ManageTenantSettings, &tenant)?;
    let request = body(request)?;
    let source = match request.source.as_str() {
        "local" => UserSource::Local,
        _ => {
            return Err(Problem::invalid(
                "source",
                "must be \"local\" (the cloud directory); no other source is available yet",
            ));
        }
    };
    let (id, actor) = (TenantId(tenant.id), caller.actor.as_str());
    let committed = match tenant.msp_id {
        None => command::on_msp(&state, id, actor, MspCommand::SetUserSource { source }).await?,
        Some(_) => {
            let command = CustomerCommand::SetUserSource { source };
            command::on_customer(&state, id, actor, command).await?
        }
    };
    settings_written(&state, &headers, committed.as_ref(), |t| UserSourceAnswer {
        source: t.user_source.clone(),
    })
    .await
}

/// A customer of the host's MSP by name, as the read models have it; 404 otherwise.
async fn customer(state: &AppState, msp: &TenantRow, name: &str) -> Result<TenantRow, Problem> {
    let missing = || Problem::not_found(format!("no customer named {name:?}"));
    let label =
        domain::validate::customer_host_label(name, &msp.host_label).map_err(|_| missing())?;
    state
        .read()
        .tenant_by_host(&label)
        .await?
        .filter(|t| t.msp_id == Some(msp.id) && t.name == name)
        .ok_or_else(missing)
}

fn customer_json(state: &AppState, row: &projections::CustomerRow) -> Customer {
    Customer {
        id: row.id,
        name: row.name.clone(),
        display_name: row.display_name.clone(),
        url: state.config.tenant_url(&row.host_label),
        active_users: row.active_users,
        technicians: row.technicians,
    }
}

/// `GET /api/v1/customers`: the seed's table, with active users and technicians.
pub async fn list_customers(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    caller.may(Action::ReadCustomers, &tenant)?;
    let customers = state.read().customers_of(tenant.id).await?;
    Ok(Json(
        customers
            .iter()
            .map(|c| customer_json(&state, c))
            .collect::<Vec<_>>(),
    )
    .into_response())
}

/// `GET /api/v1/customers/{name}`: one row of the table, without computing the others.
pub async fn get_customer(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    caller.may(Action::ReadCustomers, &tenant)?;
    let customer = state
        .read()
        .customer_of(tenant.id, &name)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no customer named {name:?}")))?;
    Ok(Json(customer_json(&state, &customer)).into_response())
}

/// `POST /api/v1/customers` `{name, display_name}` → 201: the customer tenant's own stream
/// opens in the same commit as the MSP's record of it, and its host label is reserved by it.
pub async fn create_customer(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    request: Result<Json<NewCustomer>, JsonRejection>,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    caller.may(Action::ManageCustomers, &tenant)?;
    let request = body(request)?;
    let customer_id = TenantId(Uuid::now_v7());
    let msp_id = TenantId(tenant.id);
    let (committed, _) =
        command::execute_plan(&state, msp_id, &caller.actor, Utc::now(), |history| {
            let msp = fold_msp(history)?;
            // The customer's own stream checks and records its names and claims its host
            // label; the MSP's records the customer's id alone (nothing of a deleted customer
            // may stay in the MSP's log).
            let opened = customer::decide(
                None,
                CustomerCommand::Open {
                    tenant_id: customer_id,
                    msp_id,
                    msp_name: msp.name.clone(),
                    name: request.name.clone(),
                    display_name: request.display_name.clone(),
                },
            )?;
            let created = msp::decide(Some(msp), MspCommand::CreateCustomer { customer_id })?;
            Ok(Plan {
                new_streams: vec![(customer_id, opened)],
                ..Plan::on_tenant(created)
            })
        })
        .await?;
    settle(&state, committed.as_ref()).await;
    let row = state
        .read()
        .customers_of(tenant.id)
        .await?
        .into_iter()
        .find(|c| c.id == customer_id.0)
        .ok_or_else(|| Problem::internal(&"the new customer is not in the read models"))?;
    Ok(with_position(
        committed.as_ref(),
        (StatusCode::CREATED, Json(customer_json(&state, &row))).into_response(),
    ))
}

/// `DELETE /api/v1/customers/{name}` → 204: the customer's stream, reservations, keys and
/// read models are gone; the MSP's log keeps that it was deleted, by whom and when.
pub async fn delete_customer(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    caller.may(Action::ManageCustomers, &tenant)?;
    let customer = customer(&state, &tenant, &name).await?;
    let committed = delete_customer_tenant(
        &state,
        TenantId(tenant.id),
        TenantId(customer.id),
        &caller.actor,
    )
    .await?;
    Ok(no_content(&state, committed.as_ref()).await)
}

/// Deletes the MSP's customer tenant: `CustomerTenantDeleted` in the MSP's stream and the
/// customer's stream, reservations and keys gone, in one commit.
pub async fn delete_customer_tenant(
    state: &AppState,
    msp: TenantId,
    customer_id: TenantId,
    actor: &str,
) -> Result<Option<eventlog::Committed>, Problem> {
    let (committed, _) = command::execute_plan(state, msp, actor, Utc::now(), |history| {
        Ok(Plan {
            deleted: vec![customer_id],
            ..Plan::on_tenant(msp::decide(
                Some(fold_msp(history)?),
                MspCommand::DeleteCustomer { customer_id },
            )?)
        })
    })
    .await?;
    Ok(committed)
}

/// `GET /api/v1/customers/{name}/technicians`: who reaches the customer, and how.
pub async fn list_technicians(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    caller.may(Action::ReadCustomers, &tenant)?;
    let customer = customer(&state, &tenant, &name).await?;
    let read = state.read();
    let access = read.access_to(customer.id).await?;
    let mut technicians: Vec<Technician> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for row in &access {
        if row.via == "auditor" || !seen.insert(row.user_id) {
            continue;
        }
        let Some(user) = read.user(tenant.id, row.user_id).await? else {
            continue;
        };
        let via = access
            .iter()
            .filter(|a| a.user_id == row.user_id && a.via != "auditor")
            .map(|a| a.via.clone())
            .collect();
        technicians.push(Technician {
            user_id: user.id,
            email: user.email,
            first_name: user.first_name,
            last_name: user.last_name,
            via,
        });
    }
    Ok(Json(technicians).into_response())
}

/// `POST /api/v1/customers/{name}/technicians` `{user_id}` → 201: delegates the customer.
pub async fn delegate(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(name): Path<String>,
    request: Result<Json<NewDelegation>, JsonRejection>,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    caller.may(Action::ManageDelegations, &tenant)?;
    let customer = customer(&state, &tenant, &name).await?;
    let request = body(request)?;
    let committed = run(
        &state,
        &tenant,
        &caller,
        MspCommand::Delegate {
            user_id: UserId(request.user_id),
            customer_id: TenantId(customer.id),
        },
    )
    .await?;
    settle(&state, committed.as_ref()).await;
    Ok(with_position(
        committed.as_ref(),
        (
            StatusCode::CREATED,
            Json(Delegation {
                user_id: request.user_id,
                customer: customer.name,
            }),
        )
            .into_response(),
    ))
}

/// `DELETE /api/v1/customers/{name}/technicians/{user_id}` → 204, effective at once: the
/// answer comes once the read models every request is authorized against have it.
pub async fn revoke_delegation(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((name, user)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    caller.may(Action::ManageDelegations, &tenant)?;
    let customer = customer(&state, &tenant, &name).await?;
    let user = user_id(&user)?;
    let committed = run(
        &state,
        &tenant,
        &caller,
        MspCommand::RevokeDelegation {
            user_id: UserId(user),
            customer_id: TenantId(customer.id),
        },
    )
    .await?;
    Ok(no_content(&state, committed.as_ref()).await)
}

/// `POST /api/v1/customers/{name}/sso` → `{url, expires_at}`: a one-time, 60-second link that
/// logs the caller into the customer's host. 404 for a customer the caller cannot open.
pub async fn sso(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    let customer = customer(&state, &tenant, &name).await?;
    authz::authorize(
        &caller.principal,
        Action::OpenCustomer,
        auth::scope(&customer),
    )
    .map_err(|_| Problem::not_found(format!("no customer named {name:?}")))?;
    let now = Utc::now();
    let token = auth::new_token();
    let expires_at = now + session::HANDOFF_LIFETIME;
    state.challenges.purge(now);
    state
        .challenges
        .hand_off(
            session::token_digest(&token),
            Handoff {
                customer: customer.id,
                msp: tenant.id,
                user: caller.session.user_id,
                expires_at,
            },
            now,
        )
        .ok_or_else(|| Problem::too_many(std::time::Duration::from_secs(10)))?;
    let url = format!(
        "{}/sso?token={token}",
        state.config.tenant_url(&customer.host_label)
    );
    Ok(Json(SsoHandoff {
        url,
        expires_at: expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
    .into_response())
}

/// `GET /api/v1/apps`: the customer tenants the caller can open, for the user portal.
pub async fn apps(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    caller.may(Action::ReadOwnProfile, &tenant)?;
    let apps = state.read().apps_of(caller.session.user_id).await?;
    let apps: Vec<AppLink> = apps
        .iter()
        .map(|app| AppLink {
            tenant_id: app.tenant_id,
            name: app.name.clone(),
            display_name: app.display_name.clone(),
            url: state.config.tenant_url(&app.host_label),
            sso: format!("/api/v1/customers/{}/sso", app.name),
        })
        .collect();
    Ok(Json(apps).into_response())
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditorBody {
    /// A customer's name; absent for the MSP tenant itself.
    customer: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
pub struct AuditorQuery {
    /// A customer's name; absent for the MSP tenant itself.
    customer: Option<String>,
}

/// The tenant an auditor role is for: the MSP, or one of its customers by name.
async fn audited(
    state: &AppState,
    msp: &TenantRow,
    customer_name: Option<&str>,
) -> Result<TenantId, Problem> {
    match customer_name {
        None => Ok(TenantId(msp.id)),
        Some(name) => Ok(TenantId(customer(state, msp, name).await?.id)),
    }
}

/// `POST` / `DELETE /api/v1/users/{id}/auditor`: gives or ends an auditor role on the tenant
/// `customer` names (the MSP's when none); `customer` is read after the user's id is checked.
async fn set_auditor(
    state: Shared,
    method: Method,
    headers: HeaderMap,
    id: String,
    customer: impl FnOnce() -> Result<Option<String>, Problem>,
    grant: bool,
) -> Result<Response, Problem> {
    let (tenant, caller) = msp_context(&state, &method, &headers).await?;
    caller.may(Action::ManageRoles, &tenant)?;
    let user_id = UserId(user_id(&id)?);
    let customer = customer()?;
    let tenant_id = audited(&state, &tenant, customer.as_deref()).await?;
    let command = if grant {
        MspCommand::GrantAuditor { user_id, tenant_id }
    } else {
        MspCommand::RevokeAuditor { user_id, tenant_id }
    };
    let committed = run(&state, &tenant, &caller, command).await?;
    Ok(no_content(&state, committed.as_ref()).await)
}

/// `POST /api/v1/users/{id}/auditor` `{customer?}`: the user may read and verify that tenant's
/// audit log (the MSP's when no customer is named), and nothing else through this role.
pub async fn grant_auditor(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    request: Result<Json<AuditorBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let customer = || body(request).map(|request| request.customer);
    set_auditor(state, method, headers, id, customer, true).await
}

/// `DELETE /api/v1/users/{id}/auditor?customer=NAME`: ends that auditor role, at once.
pub async fn revoke_auditor(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Params<AuditorQuery>, Problem>,
) -> Result<Response, Problem> {
    let customer = || query.map(|Params(query)| query.customer);
    set_auditor(state, method, headers, id, customer, false).await
}
