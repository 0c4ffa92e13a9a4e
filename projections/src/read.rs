//! The query side: what the API and the portals read, each answer from the projection's
//! currently served generation. Reads never write; a read right after a write should first
//! call `Projections::wait_for` with the write's position.

use std::collections::HashMap;
use std::sync::Arc;

use domain::event::ImageRef;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use tokio::sync::watch;
use uuid::Uuid;

use crate::db::Generation;
use crate::error::{Error, Result};
use crate::projection::Projection;

/// Handles on the served generations; cheap to clone.
#[derive(Clone)]
pub struct ReadModels {
    directory: watch::Receiver<Arc<Generation>>,
    audit: watch::Receiver<Arc<Generation>>,
}

/// A portal session, found by its token's digest.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct SessionRow {
    pub session_id: Uuid,
    /// The host's tenant: the session is valid there only.
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    /// The user's MSP when it is not `tenant_id`.
    pub msp_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
    /// `qr` or `sso`.
    pub method: String,
    pub started_at: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// A tenant with its settings.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct TenantRow {
    pub id: Uuid,
    /// `msp` or `customer`.
    pub kind: String,
    pub msp_id: Option<Uuid>,
    pub name: String,
    pub display_name: String,
    pub host_label: String,
    pub user_source: String,
    /// The data key version while the master key is enabled.
    pub master_key_version: Option<u32>,
    pub desktop_login_enabled: bool,
    /// `password` or `passwordless`, once configured.
    pub desktop_login_method: Option<String>,
    pub branding_version: u32,
    pub branding_background: Option<ImageRef>,
    pub branding_logo: Option<ImageRef>,
    pub branding_text: Option<String>,
    pub shared_account: Option<String>,
    /// How long an elevation's password stays the shared account's (minutes).
    pub elevation_minutes: u32,
    pub created_at: String,
    /// The seq of the tenant's stream the read models reflect.
    pub last_seq: u64,
}

/// A row of the MSP portal's Customers table.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct CustomerRow {
    pub id: Uuid,
    pub name: String,
    pub display_name: String,
    pub host_label: String,
    /// Enabled users with a password set or a device enrolled.
    pub active_users: u64,
    /// Distinct MSP users who reach the customer: admins and delegated technicians.
    pub technicians: u64,
}

/// The customers' rows with their counts; callers add the `WHERE`.
const CUSTOMER_ROWS: &str = "SELECT t.tenant_id, t.name, t.display_name, t.host_label, \
     (SELECT COUNT(*) FROM users u WHERE u.tenant_id = t.tenant_id AND u.deleted = 0 \
       AND u.enabled = 1 AND (u.has_password = 1 OR u.devices > 0)) AS active_users, \
     (SELECT COUNT(DISTINCT a.user_id) FROM access a WHERE a.tenant_id = t.tenant_id \
       AND a.via IN ('admin', 'delegation')) AS technicians \
     FROM tenants t";

fn customer_row(row: &AnyRow) -> Result<CustomerRow> {
    Ok(CustomerRow {
        id: uuid(&row.try_get::<String, _>("tenant_id")?)?,
        name: row.try_get("name")?,
        display_name: row.try_get("display_name")?,
        host_label: row.try_get("host_label")?,
        active_users: count(row, "active_users")?,
        technicians: count(row, "technicians")?,
    })
}

/// A user of a tenant: an MSP user, or a directory user of a customer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct UserRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Directory users' Windows username.
    pub username: Option<String>,
    pub is_admin: bool,
    pub enabled: bool,
    pub has_password: bool,
    pub password_version: u32,
    /// The password is a temporary one: the user's next workstation login changes it.
    pub must_change_password: bool,
    pub passwordless: bool,
    pub has_personal_email: bool,
    /// Enrolled authenticator devices.
    pub devices: u32,
    pub created_at: String,
}

/// One way a user reaches a tenant.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct AccessRow {
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    /// `admin`, `delegation` or `auditor`.
    pub via: String,
}

/// An auditor role held by an MSP's user: on the MSP itself or on one of its customers.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct AuditorRole {
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    /// The tenant's name (the MSP's own, or the customer's).
    pub tenant_name: String,
}

/// A tenant a user can open from the user portal.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct App {
    pub tenant_id: Uuid,
    pub name: String,
    pub display_name: String,
    pub host_label: String,
}

/// An enrolled authenticator or desktop agent.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, schemars::JsonSchema)]
pub struct DeviceRow {
    pub id: Uuid,
    /// `authenticator` or `agent`.
    pub kind: String,
    pub user_id: Option<Uuid>,
    /// The device name, or the agent's hostname.
    pub name: String,
    pub enrolled_at: String,
    pub revoked: bool,
}

/// An enrollment token no agent has used (only its id and times: the token itself was shown
/// once, and its digest stays in the log).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, schemars::JsonSchema)]
pub struct EnrollmentTokenRow {
    pub id: Uuid,
    pub issued_at: String,
    pub expires_at: String,
}

/// One entry of the directory change feed; never a password or verifier.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    UserUpserted {
        seq: u64,
        user_id: Uuid,
        username: String,
        first_name: String,
        last_name: String,
        enabled: bool,
        /// `password` or `passwordless` (invited to passwordless MFA with a device enrolled).
        login_method: String,
        has_password: bool,
        password_version: u32,
    },
    UserRemoved {
        seq: u64,
        user_id: Uuid,
        username: String,
    },
    DesktopLogin {
        seq: u64,
        enabled: bool,
        method: Option<String>,
    },
    Branding {
        seq: u64,
        version: u32,
    },
    SharedAccount {
        seq: u64,
        username: String,
        /// How long the password an elevation shows stays the account's.
        elevation_minutes: u32,
    },
}

impl Change {
    pub fn seq(&self) -> u64 {
        match self {
            Change::UserUpserted { seq, .. }
            | Change::UserRemoved { seq, .. }
            | Change::DesktopLogin { seq, .. }
            | Change::Branding { seq, .. }
            | Change::SharedAccount { seq, .. } => *seq,
        }
    }
}

/// A page of the change feed. `next` is the tenant seq to resume after: everything up to it
/// has been reported (as its latest state).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, schemars::JsonSchema)]
pub struct Changes {
    /// True when `changes` is a full snapshot (no cursor, or one the feed cannot continue).
    pub snapshot: bool,
    pub changes: Vec<Change>,
    pub next: u64,
}

/// One event of a tenant's audit timeline.
#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct TimelineEntry {
    pub seq: u64,
    pub position: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub occurred_at: String,
    pub actor: String,
    /// The event's data with sealed values and digests redacted.
    pub details: serde_json::Value,
}

fn uuid(text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|e| Error::Corrupt(format!("{text:?}: {e}")))
}

fn count<T: TryFrom<i64>>(row: &AnyRow, column: &str) -> Result<T> {
    let n: i64 = row.try_get(column)?;
    T::try_from(n).map_err(|_| Error::Corrupt(format!("{column} = {n}")))
}

/// A `devices` row as read.
fn device_row(row: &AnyRow) -> Result<DeviceRow> {
    let user: Option<String> = row.try_get("user_id")?;
    Ok(DeviceRow {
        id: uuid(&row.try_get::<String, _>("device_id")?)?,
        kind: row.try_get("kind")?,
        user_id: user.as_deref().map(uuid).transpose()?,
        name: row.try_get("name")?,
        enrolled_at: row.try_get("enrolled_at")?,
        revoked: flag(row, "revoked")?,
    })
}

fn flag(row: &AnyRow, column: &str) -> Result<bool> {
    Ok(row.try_get::<i64, _>(column)? != 0)
}

fn image(row: &AnyRow, column: &str) -> Result<Option<ImageRef>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| Error::Corrupt(e.to_string())))
        .transpose()
}

const TENANT_COLUMNS: &str = "tenant_id, kind, msp_id, name, display_name, host_label, \
     user_source, master_key_version, desktop_login_enabled, desktop_login_method, \
     branding_version, branding_background, branding_logo, branding_text, shared_account, \
     elevation_minutes, created_at, last_seq, desktop_login_seq, branding_seq, shared_account_seq, feed_horizon";

fn tenant_row(row: &AnyRow) -> Result<TenantRow> {
    let msp: Option<String> = row.try_get("msp_id")?;
    let key: Option<i64> = row.try_get("master_key_version")?;
    Ok(TenantRow {
        id: uuid(&row.try_get::<String, _>("tenant_id")?)?,
        kind: row.try_get("kind")?,
        msp_id: msp.as_deref().map(uuid).transpose()?,
        name: row.try_get("name")?,
        display_name: row.try_get("display_name")?,
        host_label: row.try_get("host_label")?,
        user_source: row.try_get("user_source")?,
        master_key_version: key
            .map(|k| u32::try_from(k).map_err(|_| Error::Corrupt(format!("key version {k}"))))
            .transpose()?,
        desktop_login_enabled: flag(row, "desktop_login_enabled")?,
        desktop_login_method: row.try_get("desktop_login_method")?,
        branding_version: count(row, "branding_version")?,
        branding_background: image(row, "branding_background")?,
        branding_logo: image(row, "branding_logo")?,
        branding_text: row.try_get("branding_text")?,
        shared_account: row.try_get("shared_account")?,
        elevation_minutes: count(row, "elevation_minutes")?,
        created_at: row.try_get("created_at")?,
        last_seq: count(row, "last_seq")?,
    })
}

const USER_COLUMNS: &str = "tenant_id, user_id, email, first_name, last_name, username, \
     is_admin, enabled, has_password, password_version, must_change_password, passwordless, \
     has_personal_email, \
     devices, created_at, deleted, changed_seq, removed_at";

fn user_row(row: &AnyRow) -> Result<UserRow> {
    Ok(UserRow {
        tenant_id: uuid(&row.try_get::<String, _>("tenant_id")?)?,
        id: uuid(&row.try_get::<String, _>("user_id")?)?,
        email: row.try_get("email")?,
        first_name: row.try_get("first_name")?,
        last_name: row.try_get("last_name")?,
        username: row.try_get("username")?,
        is_admin: flag(row, "is_admin")?,
        enabled: flag(row, "enabled")?,
        has_password: flag(row, "has_password")?,
        password_version: count(row, "password_version")?,
        must_change_password: flag(row, "must_change_password")?,
        passwordless: flag(row, "passwordless")?,
        has_personal_email: flag(row, "has_personal_email")?,
        devices: count(row, "devices")?,
        created_at: row.try_get("created_at")?,
    })
}

fn user_change(row: &AnyRow) -> Result<Change> {
    let user = user_row(row)?;
    let seq = count(row, "changed_seq")?;
    let username = user.username.clone().unwrap_or_default();
    if flag(row, "deleted")? {
        return Ok(Change::UserRemoved {
            seq,
            user_id: user.id,
            username,
        });
    }
    let login_method = if user.passwordless && user.devices > 0 {
        "passwordless"
    } else {
        "password"
    };
    Ok(Change::UserUpserted {
        seq,
        user_id: user.id,
        username,
        first_name: user.first_name.unwrap_or_default(),
        last_name: user.last_name.unwrap_or_default(),
        enabled: user.enabled,
        login_method: login_method.into(),
        has_password: user.has_password,
        password_version: user.password_version,
    })
}

impl ReadModels {
    pub(crate) fn new(
        mut slots: HashMap<Projection, watch::Receiver<Arc<Generation>>>,
    ) -> Result<ReadModels> {
        let mut take = |p: Projection| slots.remove(&p).ok_or(Error::Closed);
        Ok(ReadModels {
            directory: take(Projection::Directory)?,
            audit: take(Projection::Audit)?,
        })
    }

    fn directory(&self) -> AnyPool {
        self.directory.borrow().pool.clone()
    }

    fn audit(&self) -> AnyPool {
        self.audit.borrow().pool.clone()
    }

    pub(crate) async fn close(&self) {
        self.directory().close().await;
        self.audit().close().await;
    }

    /// The tenant served at `host_label` (e.g. `acme` or `contoso-acme`).
    pub async fn tenant_by_host(&self, host_label: &str) -> Result<Option<TenantRow>> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE host_label = $1");
        sqlx::query(&sql)
            .bind(host_label.to_owned())
            .fetch_optional(&self.directory())
            .await?
            .as_ref()
            .map(tenant_row)
            .transpose()
    }

    pub async fn tenant(&self, id: Uuid) -> Result<Option<TenantRow>> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE tenant_id = $1");
        sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.directory())
            .await?
            .as_ref()
            .map(tenant_row)
            .transpose()
    }

    /// The MSP's customers by name, with their active users and technicians.
    pub async fn customers_of(&self, msp: Uuid) -> Result<Vec<CustomerRow>> {
        let query = format!("{CUSTOMER_ROWS} WHERE t.msp_id = $1 ORDER BY t.name");
        let rows = sqlx::query(&query)
            .bind(msp.to_string())
            .fetch_all(&self.directory())
            .await?;
        rows.iter().map(customer_row).collect()
    }

    /// One customer of `msp` by name, with its counts.
    pub async fn customer_of(&self, msp: Uuid, name: &str) -> Result<Option<CustomerRow>> {
        let query = format!("{CUSTOMER_ROWS} WHERE t.msp_id = $1 AND t.name = $2");
        let row = sqlx::query(&query)
            .bind(msp.to_string())
            .bind(name)
            .fetch_optional(&self.directory())
            .await?;
        row.as_ref().map(customer_row).transpose()
    }

    /// The tenant's users (not removed ones), by creation.
    pub async fn users_of(&self, tenant: Uuid) -> Result<Vec<UserRow>> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND deleted = 0 \
             ORDER BY created_at, user_id"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant.to_string())
            .fetch_all(&self.directory())
            .await?;
        rows.iter().map(user_row).collect()
    }

    pub async fn user(&self, tenant: Uuid, user: Uuid) -> Result<Option<UserRow>> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND user_id = $2 AND deleted = 0"
        );
        sqlx::query(&sql)
            .bind(tenant.to_string())
            .bind(user.to_string())
            .fetch_optional(&self.directory())
            .await?
            .as_ref()
            .map(user_row)
            .transpose()
    }

    /// The session whose token has this digest (expired ones included: the caller checks).
    pub async fn session(&self, token_digest: &str) -> Result<Option<SessionRow>> {
        let row = sqlx::query(
            "SELECT session_id, tenant_id, user_id, msp_id, device_id, method, started_at, \
             expires_at FROM sessions WHERE token_digest = $1",
        )
        .bind(token_digest.to_owned())
        .fetch_optional(&self.directory())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let optional = |column: &str| -> Result<Option<Uuid>> {
            let text: Option<String> = row.try_get(column)?;
            text.as_deref().map(uuid).transpose()
        };
        Ok(Some(SessionRow {
            session_id: uuid(&row.try_get::<String, _>("session_id")?)?,
            tenant_id: uuid(&row.try_get::<String, _>("tenant_id")?)?,
            user_id: uuid(&row.try_get::<String, _>("user_id")?)?,
            msp_id: optional("msp_id")?,
            device_id: optional("device_id")?,
            method: row.try_get("method")?,
            started_at: row.try_get("started_at")?,
            expires_at: row.try_get("expires_at")?,
        }))
    }

    /// The enrolled authenticator `device` of `tenant`: its user and Ed25519 public key
    /// (base64url). `None` for unknown or revoked devices and for agents.
    pub async fn authenticator(
        &self,
        tenant: Uuid,
        device: Uuid,
    ) -> Result<Option<(Uuid, String)>> {
        let row = sqlx::query(
            "SELECT user_id, public_key FROM devices WHERE tenant_id = $1 AND device_id = $2 \
             AND kind = 'authenticator' AND revoked = 0",
        )
        .bind(tenant.to_string())
        .bind(device.to_string())
        .fetch_optional(&self.directory())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user: Option<String> = row.try_get("user_id")?;
        let key: Option<String> = row.try_get("public_key")?;
        match (user, key) {
            (Some(user), Some(key)) => Ok(Some((uuid(&user)?, key))),
            _ => Err(Error::Corrupt(format!(
                "authenticator {device} without user or key"
            ))),
        }
    }

    /// The enrolled, unrevoked agent whose device credential has this digest: its tenant and
    /// device id.
    pub async fn agent_by_credential(&self, digest: &str) -> Result<Option<(Uuid, Uuid)>> {
        let row = sqlx::query(
            "SELECT tenant_id, device_id FROM agent_credentials WHERE credential_digest = $1",
        )
        .bind(digest.to_owned())
        .fetch_optional(&self.directory())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((
            uuid(&row.try_get::<String, _>("tenant_id")?)?,
            uuid(&row.try_get::<String, _>("device_id")?)?,
        )))
    }

    /// Every way `user` reaches a tenant.
    pub async fn access_of(&self, user: Uuid) -> Result<Vec<AccessRow>> {
        let rows = sqlx::query(
            "SELECT user_id, tenant_id, via FROM access WHERE user_id = $1 ORDER BY tenant_id, via",
        )
        .bind(user.to_string())
        .fetch_all(&self.directory())
        .await?;
        rows.iter().map(access_row).collect()
    }

    /// The grants of `user` that are not the admin role's: delegations and auditor roles.
    /// What a request needs to authorize an MSP user (their admin flag is on their user row),
    /// without the admin's one row per customer.
    pub async fn grants_of(&self, user: Uuid) -> Result<Vec<AccessRow>> {
        let rows = sqlx::query(
            "SELECT user_id, tenant_id, via FROM access WHERE user_id = $1 AND via <> 'admin' \
             ORDER BY tenant_id, via",
        )
        .bind(user.to_string())
        .fetch_all(&self.directory())
        .await?;
        rows.iter().map(access_row).collect()
    }

    /// The auditor roles `msp`'s users hold, by user, then tenant name.
    pub async fn auditor_roles_of(&self, msp: Uuid) -> Result<Vec<AuditorRole>> {
        let rows = sqlx::query(
            "SELECT a.user_id, a.tenant_id, t.name FROM access a \
             JOIN tenants t ON t.tenant_id = a.tenant_id \
             WHERE a.msp_id = $1 AND a.via = 'auditor' ORDER BY a.user_id, t.name",
        )
        .bind(msp.to_string())
        .fetch_all(&self.directory())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditorRole {
                    user_id: uuid(&row.try_get::<String, _>("user_id")?)?,
                    tenant_id: uuid(&row.try_get::<String, _>("tenant_id")?)?,
                    tenant_name: row.try_get("name")?,
                })
            })
            .collect()
    }

    /// Every way any user reaches `tenant`.
    pub async fn access_to(&self, tenant: Uuid) -> Result<Vec<AccessRow>> {
        let rows = sqlx::query(
            "SELECT user_id, tenant_id, via FROM access WHERE tenant_id = $1 ORDER BY user_id, via",
        )
        .bind(tenant.to_string())
        .fetch_all(&self.directory())
        .await?;
        rows.iter().map(access_row).collect()
    }

    /// The customer tenants `user` can open, by display name: the user portal's icons.
    pub async fn apps_of(&self, user: Uuid) -> Result<Vec<App>> {
        let rows = sqlx::query(
            "SELECT DISTINCT t.tenant_id, t.name, t.display_name, t.host_label FROM access a \
             JOIN tenants t ON t.tenant_id = a.tenant_id \
             WHERE a.user_id = $1 AND a.via IN ('admin', 'delegation') \
             ORDER BY t.display_name, t.tenant_id",
        )
        .bind(user.to_string())
        .fetch_all(&self.directory())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(App {
                    tenant_id: uuid(&row.try_get::<String, _>("tenant_id")?)?,
                    name: row.try_get("name")?,
                    display_name: row.try_get("display_name")?,
                    host_label: row.try_get("host_label")?,
                })
            })
            .collect()
    }

    /// The tenant's authenticators and agents, by enrollment.
    pub async fn devices_of(&self, tenant: Uuid) -> Result<Vec<DeviceRow>> {
        let rows = sqlx::query(
            "SELECT device_id, kind, user_id, name, enrolled_at, revoked FROM devices \
             WHERE tenant_id = $1 ORDER BY enrolled_at, device_id",
        )
        .bind(tenant.to_string())
        .fetch_all(&self.directory())
        .await?;
        rows.iter().map(device_row).collect()
    }

    /// The authenticators `user` of `tenant` has enrolled and that are not revoked, oldest
    /// first.
    pub async fn authenticators_of(&self, tenant: Uuid, user: Uuid) -> Result<Vec<DeviceRow>> {
        let rows = sqlx::query(
            "SELECT device_id, kind, user_id, name, enrolled_at, revoked FROM devices \
             WHERE tenant_id = $1 AND user_id = $2 AND kind = 'authenticator' AND revoked = 0 \
             ORDER BY enrolled_at, device_id",
        )
        .bind(tenant.to_string())
        .bind(user.to_string())
        .fetch_all(&self.directory())
        .await?;
        rows.iter().map(device_row).collect()
    }

    /// The tenant's enrollment tokens that are neither used, revoked nor expired at `now`,
    /// oldest first.
    pub async fn pending_enrollment_tokens(
        &self,
        tenant: Uuid,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<EnrollmentTokenRow>> {
        let rows = sqlx::query(
            "SELECT token_id, issued_at, expires_at FROM enrollment_tokens \
             WHERE tenant_id = $1 AND device_id IS NULL ORDER BY issued_at, token_id",
        )
        .bind(tenant.to_string())
        .fetch_all(&self.directory())
        .await?;
        // Read as times (compared as such, whatever offset notation the text has) and
        // answered to the second, as the token's issue answered them.
        let time = |row: &sqlx::any::AnyRow, column: &str| -> Result<_> {
            let text: String = row.try_get(column)?;
            Ok(chrono::DateTime::parse_from_rfc3339(&text)
                .map_err(|e| Error::Corrupt(format!("an enrollment token's {column}: {e}")))?
                .with_timezone(&chrono::Utc))
        };
        let shown =
            |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut pending = Vec::new();
        for row in &rows {
            let expires_at = time(row, "expires_at")?;
            if expires_at > now {
                pending.push(EnrollmentTokenRow {
                    id: uuid(&row.try_get::<String, _>("token_id")?)?,
                    issued_at: shown(time(row, "issued_at")?),
                    expires_at: shown(expires_at),
                });
            }
        }
        Ok(pending)
    }

    /// The directory change feed of a customer tenant after `after` (a tenant seq), at most
    /// `limit` entries; a snapshot when `after` is `None`, beyond what the feed has, or
    /// below its horizon (older than a removal whose tombstone has gone).
    /// `None` if the tenant is unknown.
    pub async fn changes(
        &self,
        tenant: Uuid,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Option<Changes>> {
        let pool = self.directory();
        // The tenant row first: `last_seq` bounds the users read next, so a user changed by
        // a later commit is left for the next page rather than skipping what precedes it.
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE tenant_id = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(tenant.to_string())
            .fetch_optional(&pool)
            .await?
        else {
            return Ok(None);
        };
        let settings = tenant_row(&row)?;
        let last_seq = settings.last_seq;
        let horizon: u64 = count(&row, "feed_horizon")?;
        let snapshot = after.is_none_or(|a| a > last_seq || a < horizon);
        let after = if snapshot { 0 } else { after.unwrap_or(0) };
        let mut changes = Vec::new();
        let setting_seqs: [(&str, u64); 3] = [
            ("desktop_login_seq", count(&row, "desktop_login_seq")?),
            ("branding_seq", count(&row, "branding_seq")?),
            ("shared_account_seq", count(&row, "shared_account_seq")?),
        ];
        for (column, seq) in setting_seqs {
            if seq == 0 || seq <= after || seq > last_seq {
                continue;
            }
            changes.push(match column {
                "desktop_login_seq" => Change::DesktopLogin {
                    seq,
                    enabled: settings.desktop_login_enabled,
                    method: settings.desktop_login_method.clone(),
                },
                "branding_seq" => Change::Branding {
                    seq,
                    version: settings.branding_version,
                },
                _ => Change::SharedAccount {
                    seq,
                    username: settings.shared_account.clone().unwrap_or_default(),
                    elevation_minutes: settings.elevation_minutes,
                },
            });
        }
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND changed_seq > $2 \
             AND changed_seq <= $3 {} ORDER BY changed_seq LIMIT $4",
            if snapshot { "AND deleted = 0" } else { "" }
        );
        let limit_rows = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(&sql)
            .bind(tenant.to_string())
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::try_from(last_seq).unwrap_or(i64::MAX))
            .bind(limit_rows)
            .fetch_all(&pool)
            .await?;
        let users_truncated = rows.len() >= limit;
        for row in &rows {
            changes.push(user_change(row)?);
        }
        changes.sort_by_key(Change::seq);
        let mut next = last_seq;
        if users_truncated || changes.len() > limit {
            changes.truncate(limit);
            next = changes.last().map_or(after, Change::seq);
        }
        // A snapshot must be whole, whatever the limit.
        if snapshot && next != last_seq {
            return Box::pin(self.changes(tenant, None, usize::MAX)).await;
        }
        Ok(Some(Changes {
            snapshot,
            changes,
            next,
        }))
    }

    /// The tenant's timeline, newest first: up to `limit` events with seq below `before`.
    pub async fn timeline(
        &self,
        tenant: Uuid,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>> {
        let rows = sqlx::query(
            "SELECT seq, position, event_id, event_type, occurred_at, actor, details \
             FROM timeline WHERE tenant_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(tenant.to_string())
        .bind(before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX)))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.audit())
        .await?;
        rows.iter()
            .map(|row| {
                let details: String = row.try_get("details")?;
                Ok(TimelineEntry {
                    seq: count(row, "seq")?,
                    position: count(row, "position")?,
                    event_id: uuid(&row.try_get::<String, _>("event_id")?)?,
                    event_type: row.try_get("event_type")?,
                    occurred_at: row.try_get("occurred_at")?,
                    actor: row.try_get("actor")?,
                    details: serde_json::from_str(&details)
                        .map_err(|e| Error::Corrupt(e.to_string()))?,
                })
            })
            .collect()
    }

    /// Every row of every read-model table, as text, in a stable order: for tests that
    /// compare two projections of the same log, and for checks that a tenant left no row.
    pub async fn dump(&self) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        for (pool, tables) in [
            (
                self.directory(),
                &[
                    ("tenants", TENANT_COLUMNS),
                    ("users", USER_COLUMNS),
                    ("access", "user_id, tenant_id, via, msp_id"),
                    (
                        "devices",
                        "tenant_id, device_id, kind, user_id, name, public_key, enrolled_at, revoked",
                    ),
                    (
                        "enrollment_tokens",
                        "tenant_id, token_id, issued_at, expires_at, device_id",
                    ),
                    ("quarantine", "tenant_id, seq, position, event_type, error"),
                ][..],
            ),
            (
                self.audit(),
                &[
                    (
                        "timeline",
                        "tenant_id, seq, position, event_id, event_type, occurred_at, actor, details",
                    ),
                    ("quarantine", "tenant_id, seq, position, event_type, error"),
                ][..],
            ),
        ] {
            for (table, columns) in tables {
                let sql = format!("SELECT {columns} FROM {table}");
                let rows = sqlx::query(&sql).fetch_all(&pool).await?;
                let mut table_lines = Vec::with_capacity(rows.len());
                for row in &rows {
                    let mut cells = Vec::new();
                    for i in 0..row.len() {
                        cells.push(cell(row, i)?);
                    }
                    table_lines.push(format!("{table}: {}", cells.join(" | ")));
                }
                table_lines.sort();
                lines.extend(table_lines);
            }
        }
        Ok(lines)
    }
}

fn access_row(row: &AnyRow) -> Result<AccessRow> {
    Ok(AccessRow {
        user_id: uuid(&row.try_get::<String, _>("user_id")?)?,
        tenant_id: uuid(&row.try_get::<String, _>("tenant_id")?)?,
        via: row.try_get("via")?,
    })
}

/// One cell as text, whatever its type.
fn cell(row: &AnyRow, index: usize) -> Result<String> {
    if let Ok(value) = row.try_get::<Option<i64>, _>(index) {
        return Ok(value.map_or("NULL".into(), |v| v.to_string()));
    }
    let value: Option<String> = row.try_get(index)?;
    Ok(value.unwrap_or_else(|| "NULL".into()))
}
