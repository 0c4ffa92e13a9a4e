//! The directory projection: how each event changes tenants, users, access, devices,
//! enrollment tokens and the change feed's seqs. Only facts that are safe to show are kept:
//! whether a user has a password or a personal email, never the sealed values themselves.
//!
//! Tenants and users, which nearly every event touches, go through a write-behind cache per
//! batch: the rows a batch names are loaded in a few bulk reads, events change them in memory
//! (an event naming a row that does not exist fails there, at that event), and changed rows
//! are written back in multi-row upserts. A statement that reads those tables in SQL (the
//! admin access rows) first flushes the cache. A batch of a thousand events thus costs tens
//! of statements rather than thousands, on both databases.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use domain::event::{DesktopLoginMethod, Event, ImageRef, UserSource};
use eventlog::RecordedEvent;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::error::{Error, Result};

/// Rows per multi-row statement: 20 columns at most, well under both databases' limits.
const ROWS_PER_STATEMENT: usize = 500;

/// Events recorded for the audit trail only: no change-feed entry comes from them, so the
/// service wakes no agent for them. Without this, every workstation login of a tenant woke
/// every agent of the tenant, each to find an empty page and wait again (1,000 wake-ups per
/// login on a tenant with 1,000 workstations). An event type missing here wakes the agents in
/// vain, nothing worse; one listed here by mistake would delay its changes until the next
/// relevant commit or the agents' wait timeout, so only pure records belong here, and the
/// tests project one of each and find no feed entry.
pub const NOT_IN_FEED: &[&str] = &[
    "DesktopLoginRecorded",
    "ElevationRecorded",
    "ElevationEnded",
    "SessionStarted",
    "SessionEnded",
    "EnrollmentTokenIssued",
    "EnrollmentTokenRevoked",
    "OnboardingCodeIssued",
    "OnboardingCodeRejected",
];

/// How long the change feed keeps a removed directory user's tombstone. A later removal in
/// the same tenant takes those older than this (by the events' times, so that a rebuild keeps
/// the same ones); an agent whose cursor is older than a tombstone gone gets a snapshot.
pub const FEED_TOMBSTONE_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(90);

#[derive(Clone, Debug)]
enum Value {
    Text(String),
    MaybeText(Option<String>),
    Int(i64),
    MaybeInt(Option<i64>),
}

#[derive(Clone, Debug)]
struct TenantRow {
    tenant_id: String,
    kind: &'static str,
    msp_id: Option<String>,
    name: String,
    display_name: String,
    host_label: String,
    user_source: String,
    master_key_version: Option<i64>,
    desktop_login_enabled: i64,
    desktop_login_method: Option<String>,
    branding_version: i64,
    branding_background: Option<String>,
    branding_logo: Option<String>,
    branding_text: Option<String>,
    shared_account: Option<String>,
    elevation_minutes: i64,
    created_at: String,
    last_seq: i64,
    desktop_login_seq: i64,
    branding_seq: i64,
    shared_account_seq: i64,
}

const TENANT_COLUMNS: &[&str] = &[
    "tenant_id",
    "kind",
    "msp_id",
    "name",
    "display_name",
    "host_label",
    "user_source",
    "master_key_version",
    "desktop_login_enabled",
    "desktop_login_method",
    "branding_version",
    "branding_background",
    "branding_logo",
    "branding_text",
    "shared_account",
    "elevation_minutes",
    "created_at",
    "last_seq",
    "desktop_login_seq",
    "branding_seq",
    "shared_account_seq",
];

impl TenantRow {
    fn new(
        tenant_id: String,
        kind: &'static str,
        msp_id: Option<String>,
        name: &str,
        display_name: &str,
        host_label: &str,
        created_at: String,
    ) -> TenantRow {
        TenantRow {
            tenant_id,
            kind,
            msp_id,
            name: name.to_owned(),
            display_name: display_name.to_owned(),
            host_label: host_label.to_owned(),
            user_source: "local".into(),
            master_key_version: None,
            desktop_login_enabled: 0,
            desktop_login_method: None,
            branding_version: 0,
            branding_background: None,
            branding_logo: None,
            branding_text: None,
            shared_account: None,
            elevation_minutes: i64::from(domain::customer::DEFAULT_ELEVATION_MINUTES),
            created_at,
            last_seq: 0,
            desktop_login_seq: 0,
            branding_seq: 0,
            shared_account_seq: 0,
        }
    }

    fn values(&self) -> Vec<Value> {
        use Value::*;
        vec![
            Text(self.tenant_id.clone()),
            Text(self.kind.into()),
            MaybeText(self.msp_id.clone()),
            Text(self.name.clone()),
            Text(self.display_name.clone()),
            Text(self.host_label.clone()),
            Text(self.user_source.clone()),
            MaybeInt(self.master_key_version),
            Int(self.desktop_login_enabled),
            MaybeText(self.desktop_login_method.clone()),
            Int(self.branding_version),
            MaybeText(self.branding_background.clone()),
            MaybeText(self.branding_logo.clone()),
            MaybeText(self.branding_text.clone()),
            MaybeText(self.shared_account.clone()),
            Int(self.elevation_minutes),
            Text(self.created_at.clone()),
            Int(self.last_seq),
            Int(self.desktop_login_seq),
            Int(self.branding_seq),
            Int(self.shared_account_seq),
        ]
    }

    fn from_row(row: &AnyRow) -> Result<TenantRow> {
        let kind: String = row.try_get("kind")?;
        Ok(TenantRow {
            tenant_id: row.try_get("tenant_id")?,
            kind: match kind.as_str() {
                "msp" => "msp",
                "customer" => "customer",
                other => return Err(Error::Corrupt(format!("tenant kind {other:?}"))),
            },
            msp_id: row.try_get("msp_id")?,
            name: row.try_get("name")?,
            display_name: row.try_get("display_name")?,
            host_label: row.try_get("host_label")?,
            user_source: row.try_get("user_source")?,
            master_key_version: row.try_get("master_key_version")?,
            desktop_login_enabled: row.try_get("desktop_login_enabled")?,
            desktop_login_method: row.try_get("desktop_login_method")?,
            branding_version: row.try_get("branding_version")?,
            branding_background: row.try_get("branding_background")?,
            branding_logo: row.try_get("branding_logo")?,
            branding_text: row.try_get("branding_text")?,
            shared_account: row.try_get("shared_account")?,
            elevation_minutes: row.try_get("elevation_minutes")?,
            created_at: row.try_get("created_at")?,
            last_seq: row.try_get("last_seq")?,
            desktop_login_seq: row.try_get("desktop_login_seq")?,
            branding_seq: row.try_get("branding_seq")?,
            shared_account_seq: row.try_get("shared_account_seq")?,
        })
    }
}

#[derive(Clone, Debug)]
struct UserRow {
    tenant_id: String,
    user_id: String,
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    username: Option<String>,
    is_admin: i64,
    enabled: i64,
    has_password: i64,
    password_version: i64,
    must_change_password: i64,
    passwordless: i64,
    has_personal_email: i64,
    devices: i64,
    created_at: String,
    deleted: i64,
    changed_seq: i64,
    /// When a tombstone's user was removed (Unix seconds).
    removed_at: Option<i64>,
}

const USER_COLUMNS: &[&str] = &[
    "tenant_id",
    "user_id",
    "email",
    "first_name",
    "last_name",
    "username",
    "is_admin",
    "enabled",
    "has_password",
    "password_version",
    "must_change_password",
    "passwordless",
    "has_personal_email",
    "devices",
    "created_at",
    "deleted",
    "changed_seq",
    "removed_at",
];

impl UserRow {
    fn values(&self) -> Vec<Value> {
        use Value::*;
        vec![
            Text(self.tenant_id.clone()),
            Text(self.user_id.clone()),
            Text(self.email.clone()),
            MaybeText(self.first_name.clone()),
            MaybeText(self.last_name.clone()),
            MaybeText(self.username.clone()),
            Int(self.is_admin),
            Int(self.enabled),
            Int(self.has_password),
            Int(self.password_version),
            Int(self.must_change_password),
            Int(self.passwordless),
            Int(self.has_personal_email),
            Int(self.devices),
            Text(self.created_at.clone()),
            Int(self.deleted),
            Int(self.changed_seq),
            MaybeInt(self.removed_at),
        ]
    }

    fn from_row(row: &AnyRow) -> Result<UserRow> {
        Ok(UserRow {
            tenant_id: row.try_get("tenant_id")?,
            user_id: row.try_get("user_id")?,
            email: row.try_get("email")?,
            first_name: row.try_get("first_name")?,
            last_name: row.try_get("last_name")?,
            username: row.try_get("username")?,
            is_admin: row.try_get("is_admin")?,
            enabled: row.try_get("enabled")?,
            has_password: row.try_get("has_password")?,
            password_version: row.try_get("password_version")?,
            must_change_password: row.try_get("must_change_password")?,
            passwordless: row.try_get("passwordless")?,
            has_personal_email: row.try_get("has_personal_email")?,
            devices: row.try_get("devices")?,
            created_at: row.try_get("created_at")?,
            deleted: row.try_get("deleted")?,
            changed_seq: row.try_get("changed_seq")?,
            removed_at: row.try_get("removed_at")?,
        })
    }
}

/// A cached row: `None` when the row is known not to exist (or was removed).
struct Cached<T> {
    row: Option<T>,
    dirty: bool,
}

type UserKey = (String, String);

/// An access row: (user, tenant, via).
type AccessKey = (String, String, &'static str);

/// What a batch will do to an access row.
#[derive(Clone, PartialEq, Eq, Debug)]
enum AccessChange {
    /// Insert it, for this MSP.
    Insert(String),
    Delete,
}

/// The write-behind cache of one batch.
#[derive(Default)]
pub(crate) struct DirectoryBatch {
    /// Tenants whose settings the batch changes (or creates).
    tenants: HashMap<String, Cached<TenantRow>>,
    /// The last seq of every tenant stream in the batch, written in one statement.
    last_seq: HashMap<String, i64>,
    users: HashMap<UserKey, Cached<UserRow>>,
    /// For MSPs whose admins or customers the batch changes: their customers and admins.
    msp_customers: HashMap<String, HashSet<String>>,
    msp_admins: HashMap<String, HashSet<String>>,
    /// Delegation and auditor rows of the users the batch delegates or revokes, as stored.
    granted: HashSet<AccessKey>,
    access: HashMap<AccessKey, AccessChange>,
    new_devices: Vec<Vec<Value>>,
    /// Users whose devices go, after `new_devices` are in.
    removed_devices: Vec<(String, String)>,
    /// Tenants that removed users, with the time (Unix seconds) up to which their tombstones
    /// go at the next flush.
    tombstone_cutoffs: HashMap<String, i64>,
}

fn unknown(what: &str) -> Error {
    Error::Apply {
        event_type: String::new(),
        seq: 0,
        reason: format!("names an unknown {what}"),
    }
}

fn flag(value: bool) -> i64 {
    i64::from(value)
}

fn image(image: &Option<ImageRef>) -> Result<Option<String>> {
    image
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| Error::Corrupt(e.to_string()))
}

/// `rows` groups of `columns` placeholders: `?` on SQLite, where numbered parameters are
/// looked up by name one linear scan at a time, `$n` on PostgreSQL, which knows no other.
fn placeholders(numbered: bool, rows: usize, columns: usize) -> String {
    let mut sql = String::new();
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            if numbered {
                sql.push_str(&format!("${}", row * columns + column + 1));
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql
}

fn bound(
    sql: &str,
    values: Vec<Value>,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    let mut query = sqlx::query(sql);
    for value in values {
        query = match value {
            Value::Text(v) => query.bind(v),
            Value::MaybeText(v) => query.bind(v),
            Value::Int(v) => query.bind(v),
            Value::MaybeInt(v) => query.bind(v),
        };
    }
    query
}

async fn execute(conn: &mut AnyConnection, sql: &str, values: Vec<Value>) -> Result<u64> {
    Ok(bound(sql, values)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

async fn fetch_values(
    conn: &mut AnyConnection,
    sql: &str,
    values: Vec<Value>,
) -> Result<Vec<AnyRow>> {
    Ok(bound(sql, values).fetch_all(&mut *conn).await?)
}

/// Rows of `sql` whose parameters are all text (`keys`, in order).
async fn fetch(conn: &mut AnyConnection, sql: &str, keys: &[String]) -> Result<Vec<AnyRow>> {
    let values = keys.iter().cloned().map(Value::Text).collect();
    fetch_values(conn, sql, values).await
}

impl DirectoryBatch {
    /// Loads, in bulk, what applying `events` reads: the tenants and users they name, the
    /// customers and admins of MSPs whose access rows they change, and the delegation and
    /// auditor rows of the users they delegate or revoke.
    pub(crate) async fn prefetch(
        &mut self,
        conn: &mut AnyConnection,
        events: &[(&RecordedEvent, &Event)],
    ) -> Result<()> {
        let mut tenants = HashSet::new();
        let mut users = HashSet::new();
        let mut msps = HashSet::new();
        let mut grantees = HashSet::new();
        for (recorded, event) in events {
            let stream = recorded.stream.0.to_string();
            if let Some(user) = user_named(event) {
                users.insert((stream.clone(), user));
            }
            if changes_tenant_row(event) {
                tenants.insert(stream.clone());
            }
            match event {
                Event::MspTenantCreated(e) => {
                    tenants.insert(e.tenant_id.to_string());
                }
                Event::CustomerTenantOpened(e) => {
                    tenants.insert(e.tenant_id.to_string());
                }
                Event::CustomerTenantCreated(e) => {
                    tenants.insert(e.customer_id.to_string());
                    msps.insert(stream.clone());
                }
                Event::CustomerTenantDeleted(e) => {
                    tenants.insert(e.customer_id.to_string());
                    msps.insert(stream.clone());
                }
                Event::AdminGranted(_) | Event::AdminRevoked(_) | Event::MspUserRemoved(_) => {
                    msps.insert(stream.clone());
                }
                Event::TechnicianDelegated(e) => {
                    grantees.insert(e.user_id.to_string());
                }
                Event::DelegationRevoked(e) => {
                    grantees.insert(e.user_id.to_string());
                }
                Event::AuditorGranted(e) => {
                    grantees.insert(e.user_id.to_string());
                }
                Event::AuditorRevoked(e) => {
                    grantees.insert(e.user_id.to_string());
                }
                _ => {}
            }
        }
        let numbered = conn.backend_name() != "SQLite";

        let tenants: Vec<String> = tenants
            .into_iter()
            .filter(|t| !self.tenants.contains_key(t))
            .collect();
        for chunk in tenants.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT {} FROM tenants WHERE tenant_id IN ({})",
                TENANT_COLUMNS.join(", "),
                list(numbered, chunk.len())
            );
            for row in fetch(conn, &sql, chunk).await? {
                let row = TenantRow::from_row(&row)?;
                self.tenants.insert(
                    row.tenant_id.clone(),
                    Cached {
                        row: Some(row),
                        dirty: false,
                    },
                );
            }
            for tenant in chunk {
                self.tenants.entry(tenant.clone()).or_insert(Cached {
                    row: None,
                    dirty: false,
                });
            }
        }

        let users: Vec<UserKey> = users
            .into_iter()
            .filter(|k| !self.users.contains_key(k))
            .collect();
        for chunk in users.chunks(ROWS_PER_STATEMENT) {
            let keys: Vec<String> = chunk
                .iter()
                .flat_map(|(t, u)| [t.clone(), u.clone()])
                .collect();
            let sql = format!(
                "SELECT {} FROM users WHERE (tenant_id, user_id) IN (VALUES {})",
                USER_COLUMNS.join(", "),
                placeholders(numbered, chunk.len(), 2)
            );
            for row in fetch(conn, &sql, &keys).await? {
                let row = UserRow::from_row(&row)?;
                self.users.insert(
                    (row.tenant_id.clone(), row.user_id.clone()),
                    Cached {
                        row: Some(row),
                        dirty: false,
                    },
                );
            }
            for key in chunk {
                self.users.entry(key.clone()).or_insert(Cached {
                    row: None,
                    dirty: false,
                });
            }
        }

        let msps: Vec<String> = msps
            .into_iter()
            .filter(|m| !self.msp_customers.contains_key(m))
            .collect();
        for chunk in msps.chunks(ROWS_PER_STATEMENT) {
            for msp in chunk {
                self.msp_customers.insert(msp.clone(), HashSet::new());
                self.msp_admins.insert(msp.clone(), HashSet::new());
            }
            let sql = format!(
                "SELECT tenant_id, msp_id FROM tenants WHERE msp_id IN ({})",
                list(numbered, chunk.len())
            );
            for row in fetch(conn, &sql, chunk).await? {
                let msp: String = row.try_get("msp_id")?;
                if let Some(customers) = self.msp_customers.get_mut(&msp) {
                    customers.insert(row.try_get("tenant_id")?);
                }
            }
            let sql = format!(
                "SELECT user_id, tenant_id FROM users WHERE is_admin = 1 AND tenant_id IN ({})",
                list(numbered, chunk.len())
            );
            for row in fetch(conn, &sql, chunk).await? {
                let msp: String = row.try_get("tenant_id")?;
                if let Some(admins) = self.msp_admins.get_mut(&msp) {
                    admins.insert(row.try_get("user_id")?);
                }
            }
        }

        let grantees: Vec<String> = grantees.into_iter().collect();
        for chunk in grantees.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT user_id, tenant_id, via FROM access \
                 WHERE via IN ('delegation', 'auditor') AND user_id IN ({})",
                list(numbered, chunk.len())
            );
            for row in fetch(conn, &sql, chunk).await? {
                let via: String = row.try_get("via")?;
                let via = if via == "delegation" {
                    "delegation"
                } else {
                    "auditor"
                };
                self.granted
                    .insert((row.try_get("user_id")?, row.try_get("tenant_id")?, via));
            }
        }
        Ok(())
    }

    /// Whether an access row exists, counting this batch's changes.
    fn has_access(&self, key: &AccessKey) -> bool {
        match self.access.get(key) {
            Some(AccessChange::Insert(_)) => true,
            Some(AccessChange::Delete) => false,
            None => self.granted.contains(key),
        }
    }

    /// The MSP's customers and admins, as prefetched and changed by the batch so far.
    fn msp_sets(&self, msp: &str) -> Result<(Vec<String>, Vec<String>)> {
        let missing = || Error::Corrupt(format!("MSP {msp} was not prefetched"));
        let customers = self.msp_customers.get(msp).ok_or_else(missing)?;
        let admins = self.msp_admins.get(msp).ok_or_else(missing)?;
        Ok((
            customers.iter().cloned().collect(),
            admins.iter().cloned().collect(),
        ))
    }

    fn tenant(&mut self, tenant: &str) -> Result<&mut TenantRow> {
        match self.tenants.get_mut(tenant) {
            Some(Cached {
                row: Some(row),
                dirty,
            }) => {
                *dirty = true;
                Ok(row)
            }
            _ => Err(unknown("tenant")),
        }
    }

    fn put_tenant(&mut self, row: TenantRow) {
        // The MSP's event and the customer's first event both create a customer's row; the
        // first one wins, as the two carry the same facts.
        let entry = self.tenants.entry(row.tenant_id.clone()).or_insert(Cached {
            row: None,
            dirty: false,
        });
        if entry.row.is_none() {
            entry.row = Some(row);
            entry.dirty = true;
        }
    }

    /// A live user of `tenant`.
    fn user(&mut self, tenant: &str, user: &str) -> Result<&mut UserRow> {
        match self.users.get_mut(&(tenant.to_owned(), user.to_owned())) {
            Some(Cached {
                row: Some(row),
                dirty,
            }) if row.deleted == 0 => {
                *dirty = true;
                Ok(row)
            }
            _ => Err(unknown("user")),
        }
    }

    fn put_user(&mut self, row: UserRow) -> Result<()> {
        let key = (row.tenant_id.clone(), row.user_id.clone());
        if matches!(self.users.get(&key), Some(Cached { row: Some(_), .. })) {
            return Err(Error::Apply {
                event_type: String::new(),
                seq: 0,
                reason: "creates a user that exists".into(),
            });
        }
        self.users.insert(
            key,
            Cached {
                row: Some(row),
                dirty: true,
            },
        );
        Ok(())
    }

    /// Removes `tenant`'s tombstones of users removed at `cutoff` or before, and moves its
    /// feed horizon up to the last of them: a cursor below it would miss their removal.
    async fn drop_old_tombstones(
        &mut self,
        conn: &mut AnyConnection,
        tenant: String,
        cutoff: i64,
    ) -> Result<()> {
        let keys = vec![Value::Text(tenant.clone()), Value::Int(cutoff)];
        let rows = fetch_values(
            conn,
            "SELECT MAX(changed_seq) AS horizon FROM users \
             WHERE tenant_id = $1 AND removed_at <= $2",
            keys.clone(),
        )
        .await?;
        let horizon: Option<i64> = match rows.first() {
            Some(row) => row.try_get("horizon")?,
            None => None,
        };
        let Some(horizon) = horizon else {
            return Ok(());
        };
        execute(
            conn,
            "DELETE FROM users WHERE tenant_id = $1 AND removed_at <= $2",
            keys,
        )
        .await?;
        execute(
            conn,
            "UPDATE tenants SET feed_horizon = $2 WHERE tenant_id = $1 AND feed_horizon < $2",
            vec![Value::Text(tenant.clone()), Value::Int(horizon)],
        )
        .await?;
        // Only the tombstones that went leave the cache; live users (no removal time) stay.
        self.users.retain(|(t, _), cached| {
            let gone = cached
                .row
                .as_ref()
                .and_then(|r| r.removed_at)
                .is_some_and(|at| at <= cutoff);
            *t != tenant || !gone
        });
        Ok(())
    }

    /// Writes everything the batch changed; the cache stays valid for more events.
    pub(crate) async fn flush(&mut self, conn: &mut AnyConnection) -> Result<()> {
        let numbered = conn.backend_name() != "SQLite";
        let tenants: Vec<Vec<Value>> = self
            .tenants
            .values_mut()
            .filter(|c| c.dirty)
            .filter_map(|c| {
                c.dirty = false;
                c.row.as_ref().map(TenantRow::values)
            })
            .collect();
        upsert(
            conn,
            numbered,
            "tenants",
            TENANT_COLUMNS,
            "tenant_id",
            tenants,
        )
        .await?;
        let mut seqs = Vec::new();
        for (tenant, seq) in self.last_seq.drain() {
            if let Some(Cached { row: Some(row), .. }) = self.tenants.get_mut(&tenant) {
                row.last_seq = seq;
            }
            seqs.push(vec![Value::Text(tenant), Value::Int(seq)]);
        }
        for chunk in seqs.chunks(ROWS_PER_STATEMENT) {
            // VALUES columns are column1, column2, ... on both databases.
            let sql = format!(
                "UPDATE tenants SET last_seq = v.column2 FROM (VALUES {}) AS v \
                 WHERE tenants.tenant_id = v.column1",
                placeholders(numbered, chunk.len(), 2)
            );
            execute(conn, &sql, chunk.iter().flatten().cloned().collect()).await?;
        }

        let mut removed = Vec::new();
        let mut users = Vec::new();
        for (key, cached) in self.users.iter_mut().filter(|(_, c)| c.dirty) {
            cached.dirty = false;
            match &cached.row {
                Some(row) => users.push(row.values()),
                None => removed.push(vec![Value::Text(key.0.clone()), Value::Text(key.1.clone())]),
            }
        }
        upsert(
            conn,
            numbered,
            "users",
            USER_COLUMNS,
            "tenant_id, user_id",
            users,
        )
        .await?;
        delete_rows(conn, numbered, "users", "tenant_id, user_id", removed).await?;
        for (tenant, cutoff) in std::mem::take(&mut self.tombstone_cutoffs) {
            self.drop_old_tombstones(conn, tenant, cutoff).await?;
        }

        let mut inserts = Vec::new();
        let mut deletes = Vec::new();
        for ((user, tenant, via), change) in self.access.drain() {
            // What is written is what later events of the batch must find.
            let key = (user.clone(), tenant.clone(), via);
            if via != "admin" {
                if change == AccessChange::Delete {
                    self.granted.remove(&key);
                } else {
                    self.granted.insert(key);
                }
            }
            let mut row = vec![
                Value::Text(user),
                Value::Text(tenant),
                Value::Text(via.to_owned()),
            ];
            match change {
                AccessChange::Insert(msp) => {
                    row.push(Value::Text(msp));
                    inserts.push(row);
                }
                AccessChange::Delete => deletes.push(row),
            }
        }
        delete_rows(conn, numbered, "access", "user_id, tenant_id, via", deletes).await?;
        for chunk in inserts.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO access (user_id, tenant_id, via, msp_id) VALUES {} \
                 ON CONFLICT DO NOTHING",
                placeholders(numbered, chunk.len(), 4)
            );
            execute(conn, &sql, chunk.iter().flatten().cloned().collect()).await?;
        }

        // New devices first: a user removed later in the batch takes them along.
        let devices = std::mem::take(&mut self.new_devices);
        for chunk in devices.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO devices (tenant_id, device_id, kind, user_id, name, public_key, \
                 enrolled_at, revoked) VALUES {}",
                placeholders(numbered, chunk.len(), 8)
            );
            execute(conn, &sql, chunk.iter().flatten().cloned().collect()).await?;
        }
        let removed: Vec<Vec<Value>> = std::mem::take(&mut self.removed_devices)
            .into_iter()
            .map(|(t, u)| vec![Value::Text(t), Value::Text(u)])
            .collect();
        delete_rows(conn, numbered, "devices", "tenant_id, user_id", removed).await?;
        Ok(())
    }
}

fn list(numbered: bool, n: usize) -> String {
    (1..=n)
        .map(|i| {
            if numbered {
                format!("${i}")
            } else {
                "?".into()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inserts `rows`, or updates every column but the `key` of those that exist.
async fn upsert(
    conn: &mut AnyConnection,
    numbered: bool,
    table: &str,
    columns: &[&str],
    key: &str,
    rows: Vec<Vec<Value>>,
) -> Result<()> {
    let keys: Vec<&str> = key.split(", ").collect();
    let updates = columns
        .iter()
        .filter(|c| !keys.contains(c))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES {} ON CONFLICT ({key}) DO UPDATE SET {updates}",
            columns.join(", "),
            placeholders(numbered, chunk.len(), columns.len())
        );
        execute(conn, &sql, chunk.iter().flatten().cloned().collect()).await?;
    }
    Ok(())
}

/// Deletes the rows of `table` whose `columns` (a row value) are among `rows`.
async fn delete_rows(
    conn: &mut AnyConnection,
    numbered: bool,
    table: &str,
    columns: &str,
    rows: Vec<Vec<Value>>,
) -> Result<()> {
    let width = columns.split(", ").count();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "DELETE FROM {table} WHERE ({columns}) IN (VALUES {})",
            placeholders(numbered, chunk.len(), width)
        );
        execute(conn, &sql, chunk.iter().flatten().cloned().collect()).await?;
    }
    Ok(())
}

/// Whether an event changes its own tenant's settings (beyond the last seq).
fn changes_tenant_row(event: &Event) -> bool {
    matches!(
        event,
        Event::UserSourceSet(_)
            | Event::MasterKeyEnabled(_)
            | Event::MasterKeyDisabled(_)
            | Event::DesktopLoginConfigured(_)
            | Event::BrandingUpdated(_)
            | Event::SharedAccountConfigured(_)
    )
}

/// The user an event changes in its own stream, if any.
fn user_named(event: &Event) -> Option<String> {
    let user = match event {
        Event::MspTenantCreated(e) => e.admin_user_id,
        Event::MspUserAdded(e) => e.user_id,
        Event::MspUserRemoved(e) => e.user_id,
        Event::AdminGranted(e) => e.user_id,
        Event::AdminRevoked(e) => e.user_id,
        Event::DeviceEnrolled(e) => e.user_id,
        Event::AuthenticatorRevoked(e) => e.user_id,
        Event::DirectoryUserCreated(e) => e.user_id,
        Event::DirectoryUserUpdated(e) => e.user_id,
        Event::DirectoryUserDisabled(e) => e.user_id,
        Event::DirectoryUserEnabled(e) => e.user_id,
        Event::DirectoryUserDeleted(e) => e.user_id,
        Event::PasswordSet(e) => e.user_id,
        Event::PasswordChanged(e) => e.user_id,
        Event::PasswordlessEnabled(e) => e.user_id,
        _ => return None,
    };
    Some(user.to_string())
}

/// A new user's row.
struct NewUser<'a> {
    tenant: &'a str,
    user: String,
    email: &'a str,
    first_name: Option<String>,
    last_name: Option<String>,
    username: Option<String>,
    is_admin: bool,
    has_personal_email: bool,
}

impl NewUser<'_> {
    fn row(self, at: String, seq: i64) -> UserRow {
        UserRow {
            tenant_id: self.tenant.to_owned(),
            user_id: self.user,
            email: self.email.to_owned(),
            first_name: self.first_name,
            last_name: self.last_name,
            username: self.username,
            is_admin: flag(self.is_admin),
            enabled: 1,
            has_password: 0,
            password_version: 0,
            must_change_password: 0,
            passwordless: 0,
            has_personal_email: flag(self.has_personal_email),
            devices: 0,
            created_at: at,
            deleted: 0,
            changed_seq: seq,
            removed_at: None,
        }
    }
}

/// Applies `event`, recorded as `recorded` in its tenant's stream. The batch must have been
/// prefetched with it.
pub(crate) async fn apply(
    conn: &mut AnyConnection,
    batch: &mut DirectoryBatch,
    recorded: &RecordedEvent,
    event: &Event,
) -> Result<()> {
    let tenant = recorded.stream.0.to_string();
    let seq =
        i64::try_from(recorded.seq).map_err(|_| Error::Corrupt(format!("seq {}", recorded.seq)))?;
    let at = recorded.occurred_at.to_rfc3339();
    match event {
        Event::MspTenantCreated(e) => {
            batch.put_tenant(TenantRow::new(
                e.tenant_id.to_string(),
                "msp",
                None,
                &e.name,
                &e.display_name,
                &e.host_label,
                at.clone(),
            ));
            let admin = e.admin_user_id.to_string();
            batch.put_user(
                NewUser {
                    tenant: &tenant,
                    user: admin.clone(),
                    email: &e.admin_email,
                    first_name: None,
                    last_name: None,
                    username: None,
                    is_admin: true,
                    has_personal_email: false,
                }
                .row(at, seq),
            )?;
            batch.msp_customers.insert(tenant.clone(), HashSet::new());
            batch
                .msp_admins
                .insert(tenant.clone(), HashSet::from([admin]));
        }
        Event::UserSourceSet(e) => {
            batch.tenant(&tenant)?.user_source = match e.source {
                UserSource::Local => "local".into(),
            };
        }
        Event::MspUserAdded(e) => {
            batch.put_user(
                NewUser {
                    tenant: &tenant,
                    user: e.user_id.to_string(),
                    email: &e.email,
                    first_name: e.first_name.clone(),
                    last_name: e.last_name.clone(),
                    username: None,
                    is_admin: false,
                    has_personal_email: false,
                }
                .row(at, seq),
            )?;
        }
        Event::MspUserRemoved(e) => {
            let user = e.user_id.to_string();
            batch.user(&tenant, &user)?;
            if let Some(cached) = batch.users.get_mut(&(tenant.clone(), user.clone())) {
                cached.row = None;
                cached.dirty = true;
            }
            if let Some(admins) = batch.msp_admins.get_mut(&tenant) {
                admins.remove(&user);
            }
            batch.removed_devices.push((tenant.clone(), user.clone()));
            // Every access row of the user goes, whatever the batch did to them before.
            batch.flush(conn).await?;
            batch.granted.retain(|(u, _, _)| *u != user);
            for sql in [
                "DELETE FROM access WHERE user_id = $1",
                // Their sessions end with them, on the MSP's host and on customers' hosts.
                "DELETE FROM sessions WHERE user_id = $1",
            ] {
                execute(conn, sql, vec![Value::Text(user.clone())]).await?;
            }
        }
        Event::AdminGranted(e) => {
            let user = e.user_id.to_string();
            batch.user(&tenant, &user)?.is_admin = 1;
            let (customers, _) = batch.msp_sets(&tenant)?;
            for customer in customers {
                batch.access.insert(
                    (user.clone(), customer, "admin"),
                    AccessChange::Insert(tenant.clone()),
                );
            }
            if let Some(admins) = batch.msp_admins.get_mut(&tenant) {
                admins.insert(user);
            }
        }
        Event::AdminRevoked(e) => {
            let user = e.user_id.to_string();
            batch.user(&tenant, &user)?.is_admin = 0;
            let (customers, _) = batch.msp_sets(&tenant)?;
            for customer in customers {
                batch
                    .access
                    .insert((user.clone(), customer, "admin"), AccessChange::Delete);
            }
            if let Some(admins) = batch.msp_admins.get_mut(&tenant) {
                admins.remove(&user);
            }
        }
        // Codes are a matter for the domain; the read models show only enrolled devices.
        Event::OnboardingCodeIssued(_) | Event::OnboardingCodeRejected(_) => {}
        Event::DeviceEnrolled(e) => {
            let user = e.user_id.to_string();
            let row = batch.user(&tenant, &user)?;
            row.devices += 1;
            row.changed_seq = seq;
            batch.new_devices.push(vec![
                Value::Text(tenant.clone()),
                Value::Text(e.device_id.to_string()),
                Value::Text("authenticator".into()),
                Value::MaybeText(Some(user)),
                Value::Text(e.device_name.clone()),
                Value::MaybeText(Some(e.public_key.clone())),
                Value::Text(at),
                Value::Int(0),
            ]);
        }
        Event::AuthenticatorRevoked(e) => {
            let user = e.user_id.to_string();
            // The device may have enrolled in this very batch.
            batch.flush(conn).await?;
            let revoked = execute(
                conn,
                "UPDATE devices SET revoked = 1 WHERE tenant_id = $1 AND device_id = $2 \
                 AND kind = 'authenticator' AND user_id = $3 AND revoked = 0",
                vec![
                    Value::Text(tenant.clone()),
                    Value::Text(e.device_id.to_string()),
                    Value::Text(user.clone()),
                ],
            )
            .await?;
            if revoked != 1 {
                return Err(unknown("authenticator"));
            }
            // Every session of the user ends, on the MSP's host and on customers' hosts: one
            // may have been opened with the lost phone, and a hand-off's names no device.
            execute(
                conn,
                "DELETE FROM sessions WHERE user_id = $1",
                vec![Value::Text(user.clone())],
            )
            .await?;
            let row = batch.user(&tenant, &user)?;
            row.devices = (row.devices - 1).max(0);
            row.changed_seq = seq;
        }
        Event::CustomerTenantCreated(e) => {
            // The customer's row comes from its own stream's `CustomerTenantOpened`, in the
            // same commit: the MSP's record holds the id alone.
            let customer = e.customer_id.to_string();
            let (_, admins) = batch.msp_sets(&tenant)?;
            for admin in admins {
                batch.access.insert(
                    (admin, customer.clone(), "admin"),
                    AccessChange::Insert(tenant.clone()),
                );
            }
            if let Some(customers) = batch.msp_customers.get_mut(&tenant) {
                customers.insert(customer);
            }
        }
        Event::CustomerTenantDeleted(e) => {
            let customer = e.customer_id.to_string();
            batch.flush(conn).await?;
            delete_tenant(conn, &customer).await?;
            batch.tenants.remove(&customer);
            batch.last_seq.remove(&customer);
            batch.tombstone_cutoffs.remove(&customer);
            batch.users.retain(|(t, _), _| *t != customer);
            batch.granted.retain(|(_, t, _)| *t != customer);
            if let Some(customers) = batch.msp_customers.get_mut(&tenant) {
                customers.remove(&customer);
            }
        }
        Event::TechnicianDelegated(e) => {
            batch.access.insert(
                (
                    e.user_id.to_string(),
                    e.customer_id.to_string(),
                    "delegation",
                ),
                AccessChange::Insert(tenant.clone()),
            );
        }
        Event::DelegationRevoked(e) => {
            let key = (
                e.user_id.to_string(),
                e.customer_id.to_string(),
                "delegation",
            );
            if !batch.has_access(&key) {
                return Err(unknown("delegation"));
            }
            batch.access.insert(key, AccessChange::Delete);
        }
        Event::AuditorGranted(e) => {
            batch.access.insert(
                (e.user_id.to_string(), e.tenant_id.to_string(), "auditor"),
                AccessChange::Insert(tenant.clone()),
            );
        }
        Event::AuditorRevoked(e) => {
            let key = (e.user_id.to_string(), e.tenant_id.to_string(), "auditor");
            if !batch.has_access(&key) {
                return Err(unknown("auditor role"));
            }
            batch.access.insert(key, AccessChange::Delete);
        }
        Event::CustomerTenantOpened(e) => {
            batch.put_tenant(TenantRow::new(
                e.tenant_id.to_string(),
                "customer",
                Some(e.msp_id.to_string()),
                &e.name,
                &e.display_name,
                &e.host_label,
                at,
            ));
        }
        Event::MasterKeyEnabled(e) => {
            batch.tenant(&tenant)?.master_key_version = Some(i64::from(e.key_version));
        }
        Event::MasterKeyDisabled(_) => {
            batch.tenant(&tenant)?.master_key_version = None;
        }
        Event::DesktopLoginConfigured(e) => {
            let row = batch.tenant(&tenant)?;
            row.desktop_login_enabled = flag(e.enabled);
            row.desktop_login_method = Some(
                match e.method {
                    DesktopLoginMethod::Password => "password",
                    DesktopLoginMethod::Passwordless => "passwordless",
                }
                .into(),
            );
            row.desktop_login_seq = seq;
        }
        Event::DirectoryUserCreated(e) => {
            batch.put_user(
                NewUser {
                    tenant: &tenant,
                    user: e.user_id.to_string(),
                    email: &e.email,
                    first_name: Some(e.first_name.clone()),
                    last_name: Some(e.last_name.clone()),
                    username: Some(e.username.clone()),
                    is_admin: false,
                    has_personal_email: e.personal_email.is_some(),
                }
                .row(at, seq),
            )?;
        }
        Event::DirectoryUserUpdated(e) => {
            let row = batch.user(&tenant, &e.user_id.to_string())?;
            row.first_name = Some(e.first_name.clone());
            row.last_name = Some(e.last_name.clone());
            row.email = e.email.clone();
            row.has_personal_email = flag(e.personal_email.is_some());
            row.changed_seq = seq;
        }
        Event::DirectoryUserDisabled(e) => {
            let row = batch.user(&tenant, &e.user_id.to_string())?;
            row.enabled = 0;
            row.changed_seq = seq;
        }
        Event::DirectoryUserEnabled(e) => {
            let row = batch.user(&tenant, &e.user_id.to_string())?;
            row.enabled = 1;
            row.changed_seq = seq;
        }
        Event::DirectoryUserDeleted(e) => {
            // A tombstone, so that the change feed reports the removal: the user's id and
            // username, nothing else of them.
            let user = e.user_id.to_string();
            let removed_at = recorded.occurred_at.timestamp();
            let row = batch.user(&tenant, &user)?;
            row.removed_at = Some(removed_at);
            row.email.clear();
            row.first_name = None;
            row.last_name = None;
            row.deleted = 1;
            row.enabled = 0;
            row.has_password = 0;
            row.has_personal_email = 0;
            row.devices = 0;
            row.changed_seq = seq;
            batch.removed_devices.push((tenant.clone(), user));
            let cutoff = removed_at - FEED_TOMBSTONE_RETENTION.num_seconds();
            let entry = batch
                .tombstone_cutoffs
                .entry(tenant.clone())
                .or_insert(cutoff);
            *entry = (*entry).max(cutoff);
        }
        Event::PasswordSet(e) => {
            let row = batch.user(&tenant, &e.user_id.to_string())?;
            row.has_password = 1;
            row.password_version = i64::from(e.password_version);
            row.must_change_password = flag(e.must_change);
            row.changed_seq = seq;
        }
        Event::PasswordChanged(e) => {
            let row = batch.user(&tenant, &e.user_id.to_string())?;
            row.password_version = i64::from(e.password_version);
            row.must_change_password = 0;
            row.changed_seq = seq;
        }
        Event::PasswordlessEnabled(e) => {
            let row = batch.user(&tenant, &e.user_id.to_string())?;
            row.passwordless = 1;
            row.changed_seq = seq;
        }
        Event::BrandingUpdated(e) => {
            let background = image(&e.background)?;
            let logo = image(&e.logo)?;
            let row = batch.tenant(&tenant)?;
            row.branding_version = i64::from(e.version);
            row.branding_background = background;
            row.branding_logo = logo;
            row.branding_text = e.text.clone();
            row.branding_seq = seq;
        }
        Event::SharedAccountConfigured(e) => {
            let row = batch.tenant(&tenant)?;
            row.shared_account = Some(e.username.clone());
            row.elevation_minutes = i64::from(e.elevation_minutes);
            row.shared_account_seq = seq;
        }
        Event::EnrollmentTokenIssued(e) => {
            // As the domain's fold does: every token expired by the time this one was issued
            // goes, so unused tokens do not pile up in the tenant's rows.
            let issued = e.expires_at - domain::customer::ENROLLMENT_TOKEN_LIFETIME;
            UNUSED_ENROLLMENT_TOKENS
                .delete_expired(conn, &tenant, &[], issued)
                .await?;
            execute(
                conn,
                "INSERT INTO enrollment_tokens (tenant_id, token_id, issued_at, expires_at, \
                 device_id) VALUES ($1, $2, $3, $4, NULL)",
                vec![
                    Value::Text(tenant.clone()),
                    Value::Text(e.token_id.to_string()),
                    Value::Text(at),
                    Value::Text(e.expires_at.to_rfc3339()),
                ],
            )
            .await?;
        }
        Event::EnrollmentTokenRevoked(e) => {
            execute(
                conn,
                "DELETE FROM enrollment_tokens WHERE tenant_id = $1 AND token_id = $2 \
                 AND device_id IS NULL",
                vec![
                    Value::Text(tenant.clone()),
                    Value::Text(e.token_id.to_string()),
                ],
            )
            .await?;
        }
        Event::AgentEnrolled(e) => {
            let device = e.device_id.to_string();
            execute(
                conn,
                "UPDATE enrollment_tokens SET device_id = $1 WHERE tenant_id = $2 AND token_id = $3",
                vec![
                    Value::Text(device.clone()),
                    Value::Text(tenant.clone()),
                    Value::Text(e.token_id.to_string()),
                ],
            )
            .await?;
            // No row is no corruption, as in the domain's fold: a history written while the
            // clock stepped back may enroll with a token a later issue has expired.
            execute(
                conn,
                "INSERT INTO agent_credentials (credential_digest, tenant_id, device_id) \
                 VALUES ($1, $2, $3)",
                vec![
                    Value::Text(e.credential_digest.clone()),
                    Value::Text(tenant.clone()),
                    Value::Text(e.device_id.to_string()),
                ],
            )
            .await?;
            batch.new_devices.push(vec![
                Value::Text(tenant.clone()),
                Value::Text(device),
                Value::Text("agent".into()),
                Value::MaybeText(None),
                Value::Text(e.hostname.clone()),
                Value::MaybeText(None),
                Value::Text(at),
                Value::Int(0),
            ]);
        }
        Event::AgentRevoked(e) => {
            // The agent may have enrolled in this very batch.
            batch.flush(conn).await?;
            let revoked = execute(
                conn,
                "UPDATE devices SET revoked = 1 WHERE tenant_id = $1 AND device_id = $2",
                vec![
                    Value::Text(tenant.clone()),
                    Value::Text(e.device_id.to_string()),
                ],
            )
            .await?;
            if revoked != 1 {
                return Err(unknown("device"));
            }
            execute(
                conn,
                "DELETE FROM agent_credentials WHERE tenant_id = $1 AND device_id = $2",
                vec![
                    Value::Text(tenant.clone()),
                    Value::Text(e.device_id.to_string()),
                ],
            )
            .await?;
        }
        // Attempts belong to the audit timeline.
        Event::DesktopLoginRecorded(_) | Event::ElevationRecorded(_) | Event::ElevationEnded(_) => {
        }
        // The operator log (`domain::operator`) is no tenant: nothing of the directory, and no
        // tenant row whose `last_seq` it would move.
        Event::RootKeyRotated(_)
        | Event::BackupWritten(_)
        | Event::BackupRestored(_)
        | Event::ReadModelsRebuilt(_) => return Ok(()),
        Event::SessionStarted(e) => {
            USER_SESSIONS
                .delete_expired(
                    conn,
                    &tenant,
                    &[e.user_id.to_string()],
                    recorded.occurred_at,
                )
                .await?;
            let method = match e.method {
                domain::event::SessionMethod::Qr => "qr",
                domain::event::SessionMethod::Sso => "sso",
            };
            execute(
                conn,
                "INSERT INTO sessions (token_digest, session_id, tenant_id, user_id, msp_id, \
                 device_id, method, started_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                vec![
                    Value::Text(e.token_digest.clone()),
                    Value::Text(e.session_id.to_string()),
                    Value::Text(tenant.clone()),
                    Value::Text(e.user_id.to_string()),
                    Value::MaybeText(e.msp_id.map(|m| m.to_string())),
                    Value::MaybeText(e.device_id.map(|d| d.to_string())),
                    Value::Text(method.into()),
                    Value::Text(at),
                    Value::Text(e.expires_at.to_rfc3339()),
                ],
            )
            .await?;
        }
        Event::SessionEnded(e) => {
            execute(
                conn,
                "DELETE FROM sessions WHERE tenant_id = $1 AND session_id = $2",
                vec![
                    Value::Text(tenant.clone()),
                    Value::Text(e.session_id.to_string()),
                ],
            )
            .await?;
        }
    }
    batch.last_seq.insert(tenant, seq);
    Ok(())
}

/// The tenant's unused enrollment tokens: those expired by the issue of a later one go (a time
/// from the log, so a rebuild removes the same ones).
const UNUSED_ENROLLMENT_TOKENS: Expiring = Expiring {
    what: "enrollment token",
    select: "SELECT token_id AS id, expires_at FROM enrollment_tokens \
             WHERE tenant_id = $1 AND device_id IS NULL",
    delete: "DELETE FROM enrollment_tokens WHERE tenant_id = $1 AND token_id = $2",
};

/// A user's sessions on the tenant (`$2` the user): those expired by the time of their next
/// login go (a time from the log, so a rebuild removes the same rows). Without it the rows of
/// expired sessions (refused when read) stayed until logout; now a user keeps at most the
/// sessions started within one session lifetime before their latest login.
const USER_SESSIONS: Expiring = Expiring {
    what: "session",
    select: "SELECT session_id AS id, expires_at FROM sessions \
             WHERE tenant_id = $1 AND user_id = $2",
    delete: "DELETE FROM sessions WHERE tenant_id = $1 AND session_id = $2",
};

/// Rows that expire: `select` finds a tenant's candidates (`id`, `expires_at` as RFC 3339
/// text; `$1` the tenant, then further keys), `delete` removes one (`$1` tenant, `$2` id).
/// Expiry is compared as time in Rust: the text's order need not be the database's.
struct Expiring {
    what: &'static str,
    select: &'static str,
    delete: &'static str,
}

impl Expiring {
    async fn delete_expired(
        &self,
        conn: &mut AnyConnection,
        tenant: &str,
        keys: &[String],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut all = vec![tenant.to_owned()];
        all.extend_from_slice(keys);
        for row in fetch(conn, self.select, &all).await? {
            let id: String = row.try_get("id")?;
            let expires_at: String = row.try_get("expires_at")?;
            let expires_at = DateTime::parse_from_rfc3339(&expires_at).map_err(|e| {
                Error::Corrupt(format!("{} {id} expires at {expires_at:?}: {e}", self.what))
            })?;
            if expires_at <= now {
                execute(
                    conn,
                    self.delete,
                    vec![Value::Text(tenant.to_owned()), Value::Text(id)],
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// Removes every row of `tenant`.
pub(crate) async fn delete_tenant(conn: &mut AnyConnection, tenant: &str) -> Result<()> {
    for sql in [
        "DELETE FROM users WHERE tenant_id = $1",
        "DELETE FROM access WHERE tenant_id = $1",
        "DELETE FROM devices WHERE tenant_id = $1",
        "DELETE FROM enrollment_tokens WHERE tenant_id = $1",
        "DELETE FROM sessions WHERE tenant_id = $1",
        "DELETE FROM agent_credentials WHERE tenant_id = $1",
        "DELETE FROM quarantine WHERE tenant_id = $1",
        "DELETE FROM tenants WHERE tenant_id = $1",
    ] {
        execute(conn, sql, vec![Value::Text(tenant.to_owned())]).await?;
    }
    Ok(())
}
