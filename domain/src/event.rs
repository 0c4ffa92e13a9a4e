//! The events: the public record of everything that happens, as stored in the log. Each event
//! has a name (its log `event_type`), a schema version, and JSON data. The catalogue with every
//! field, and which are sealed, is in EVENTS.md.
//!
//! Old schema versions are brought up to date by `upcast` before decoding, so that `apply`
//! only ever sees current shapes; an event from a newer version than this build knows is an
//! error, never guessed at.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::crypto::Sealed;
use crate::ids::{DeviceId, TenantId, UserId};

/// Where a tenant's users come from. Only the cloud directory exists today; the setting is a
/// choice so that other sources can join it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserSource {
    Local,
}

/// How users log into workstations.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DesktopLoginMethod {
    /// Username and the cloud directory password.
    Password,
    /// A QR challenge approved on the user's enrolled phone.
    Passwordless,
}

/// An uploaded image, stored as a blob beside the log and named by its content.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    /// SHA-256 of the bytes, hex: the blob's address.
    pub blob: String,
    pub media_type: String,
    pub width: u32,
    pub height: u32,
}

/// What a workstation did with the local account at a login.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalAccountAction {
    Create,
    Takeover,
}

/// How a portal session began.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionMethod {
    /// A QR challenge approved by an enrolled authenticator.
    Qr,
    /// A one-time hand-off from the user's MSP portal onto a customer host.
    Sso,
}

/// How a login or elevation attempt ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Succeeded,
    WrongPassword,
    UnknownUser,
    Disabled,
    Denied,
    Expired,
    /// The password was right but temporary: the account stays closed until the user
    /// chooses their own.
    PasswordChangeRequired,
}

/// Why a technician's elevated access at a workstation ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElevationEnd {
    /// The password it showed lived its time and was replaced by one nobody saw.
    Expired,
    /// A newer elevation at the same workstation replaced its password.
    Replaced,
}

macro_rules! events {
    ($(
        $(#[$doc:meta])*
        $name:ident version $version:literal { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }
    )*) => {
        $(
            $(#[$doc])*
            #[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
            #[serde(deny_unknown_fields)]
            pub struct $name { $($(#[$fdoc])* pub $field: $ty),* }

            impl From<$name> for Event {
                fn from(event: $name) -> Event {
                    Event::$name(event)
                }
            }
        )*

        /// Every event of the product.
        #[derive(Clone, PartialEq, Eq, Debug)]
        pub enum Event { $($name($name)),* }

        impl Event {
            /// The name stored as the log's `event_type`.
            pub fn type_name(&self) -> &'static str {
                match self { $(Event::$name(_) => stringify!($name)),* }
            }

            /// The schema version this build writes.
            pub fn schema_version(&self) -> u32 {
                match self { $(Event::$name(_) => $version),* }
            }

            /// The event's data as stored.
            pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
                match self { $(Event::$name(e) => serde_json::to_vec(e)),* }
            }

            /// Decodes a stored event, upcasting older schema versions first.
            pub fn from_stored(type_name: &str, version: u32, data: &[u8]) -> Result<Event, DecodeError> {
                let current = match type_name {
                    $(stringify!($name) => $version,)*
                    other => return Err(DecodeError::UnknownType(other.to_owned())),
                };
                let malformed = |e: serde_json::Error| DecodeError::Malformed(type_name.to_owned(), e.to_string());
                if version == current {
                    // Nothing to upcast: straight from the bytes, without a JSON tree between.
                    return match type_name {
                        $(stringify!($name) => serde_json::from_slice(data).map(Event::$name).map_err(malformed),)*
                        other => Err(DecodeError::UnknownType(other.to_owned())),
                    };
                }
                let value: serde_json::Value = serde_json::from_slice(data)
                    .map_err(|e| DecodeError::Malformed(type_name.to_owned(), e.to_string()))?;
                let value = upcast(type_name, version, current, value)?;
                match type_name {
                    $(stringify!($name) => serde_json::from_value(value).map(Event::$name).map_err(malformed),)*
                    other => Err(DecodeError::UnknownType(other.to_owned())),
                }
            }
        }

        /// Every event name with its current schema version, for the catalogue and its tests.
        pub const CATALOGUE: &[(&str, u32)] = &[$((stringify!($name), $version)),*];
    };
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unknown event type {0}")]
    UnknownType(String),
    #[error("{type_name} schema version {version} is newer than this build knows ({current})")]
    FutureVersion {
        type_name: String,
        version: u32,
        current: u32,
    },
    #[error("{type_name} schema version {version} has no upcaster")]
    NoUpcaster { type_name: String, version: u32 },
    #[error("malformed {0}: {1}")]
    Malformed(String, String),
}

/// One step of schema history: turns `type_name` data at version `from` into version `from + 1`.
type Upcaster = fn(serde_json::Value) -> serde_json::Value;

/// The schema history: a change to an event's data adds a step here and bumps its version in
/// the catalogue, and the old shape keeps decoding.
const UPCASTERS: &[(&str, u32, Upcaster)] = &[
    ("CustomerTenantCreated", 1, keep_customer_id),
    ("CustomerTenantDeleted", 1, keep_customer_id),
    ("SharedAccountConfigured", 1, with_default_elevation),
    ("PasswordSet", 1, not_to_be_changed),
];

/// Version 1 of `PasswordSet` could not ask the user to change the password.
fn not_to_be_changed(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(fields) = value.as_object_mut() {
        fields.entry("must_change").or_insert(false.into());
    }
    value
}

/// Version 1 of `SharedAccountConfigured` named the account only: elevations lived the
/// hour agents then had built in.
fn with_default_elevation(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(fields) = value.as_object_mut() {
        fields
            .entry("elevation_minutes")
            .or_insert(crate::customer::DEFAULT_ELEVATION_MINUTES.into());
    }
    value
}

/// Version 1 of the MSP's records of a customer also held the customer's names; version 2
/// keeps its id only. Data without an id is left as it is, to fail decoding as malformed.
fn keep_customer_id(value: serde_json::Value) -> serde_json::Value {
    match value.get("customer_id") {
        Some(id) => serde_json::json!({ "customer_id": id }),
        None => value,
    }
}

/// Brings `value`, stored at `version`, up to `current` through [`UPCASTERS`].
fn upcast(
    type_name: &str,
    version: u32,
    current: u32,
    mut value: serde_json::Value,
) -> Result<serde_json::Value, DecodeError> {
    if version > current {
        return Err(DecodeError::FutureVersion {
            type_name: type_name.to_owned(),
            version,
            current,
        });
    }
    for from in version..current {
        let step = UPCASTERS
            .iter()
            .find(|(name, v, _)| *name == type_name && *v == from)
            .ok_or_else(|| DecodeError::NoUpcaster {
                type_name: type_name.to_owned(),
                version: from,
            })?;
        value = (step.2)(value);
    }
    Ok(value)
}

events! {
    /// An MSP signed up: the first event of its stream.
    MspTenantCreated version 1 {
        tenant_id: TenantId,
        name: String,
        display_name: String,
        host_label: String,
        admin_user_id: UserId,
        admin_email: String,
    }
    /// The tenant's user source was chosen.
    UserSourceSet version 1 { source: UserSource }
    /// A technician was added to an MSP tenant by email.
    MspUserAdded version 1 {
        user_id: UserId,
        email: String,
        first_name: Option<String>,
        last_name: Option<String>,
    }
    /// A user left the MSP tenant, with their devices, roles and delegations.
    MspUserRemoved version 1 { user_id: UserId }
    /// "Make admin": the user reaches every customer tenant of the MSP.
    AdminGranted version 1 { user_id: UserId }
    AdminRevoked version 1 { user_id: UserId }
    /// A one-time onboarding code was emailed. Only its digest is kept.
    OnboardingCodeIssued version 1 {
        user_id: UserId,
        /// SHA-256 of the code, keyed by the api (`crypto::CodeKey`), bound to the user (see
        /// `onboarding::code_digest`), hex.
        code_digest: String,
        expires_at: DateTime<Utc>,
    }
    /// A wrong onboarding code was tried (five end the code).
    OnboardingCodeRejected version 1 { user_id: UserId }
    /// The user verified their email and registered a device's Ed25519 public key.
    DeviceEnrolled version 1 {
        user_id: UserId,
        device_id: DeviceId,
        device_name: String,
        /// Ed25519 public key, base64url without padding.
        public_key: String,
    }
    /// An admin revoked a user's authenticator (a lost or replaced phone): it approves
    /// nothing from now on, the user's sessions end, and a user left without one may onboard
    /// a new device with a new code. In the MSP's stream for its users, in a customer's for
    /// its directory users.
    AuthenticatorRevoked version 1 { user_id: UserId, device_id: DeviceId }
    /// A customer tenant was created under this MSP (its own stream starts at the same time).
    ///
    /// The customer's id only: its name, display name and host label are in its own stream's
    /// `CustomerTenantOpened`, deleted with it, so that the MSP's log keeps nothing of a
    /// deleted customer but the fact. Version 1 held them too.
    CustomerTenantCreated version 2 { customer_id: TenantId }
    /// A customer tenant and all its data were deleted; this is all the MSP keeps of it (the
    /// actor and time are the envelope's). Version 1 held the customer's name too.
    CustomerTenantDeleted version 2 { customer_id: TenantId }
    /// A technician was given access to one customer tenant.
    TechnicianDelegated version 1 { user_id: UserId, customer_id: TenantId }
    DelegationRevoked version 1 { user_id: UserId, customer_id: TenantId }
    /// The user may read and verify the audit log of `tenant_id` (the MSP or one of its
    /// customers), and nothing else through this role.
    AuditorGranted version 1 { user_id: UserId, tenant_id: TenantId }
    AuditorRevoked version 1 { user_id: UserId, tenant_id: TenantId }

    /// The first event of a customer tenant's stream, written with `CustomerTenantCreated` in
    /// its MSP's stream.
    CustomerTenantOpened version 1 {
        tenant_id: TenantId,
        msp_id: TenantId,
        name: String,
        display_name: String,
        host_label: String,
    }
    /// The tenant's data key (its master key) exists; sealed fields can be written.
    MasterKeyEnabled version 1 { key_version: u32 }
    /// The master key was switched off while nothing was sealed with it.
    MasterKeyDisabled version 1 { key_version: u32 }
    DesktopLoginConfigured version 1 { enabled: bool, method: DesktopLoginMethod }
    /// A user of the cloud directory, who logs into workstations as `username`.
    DirectoryUserCreated version 1 {
        user_id: UserId,
        first_name: String,
        last_name: String,
        username: String,
        /// The company email or UPN.
        email: String,
        /// Sealed with the tenant's data key.
        personal_email: Option<Sealed>,
    }
    /// A user's names and emails, as they are now.
    DirectoryUserUpdated version 1 {
        user_id: UserId,
        first_name: String,
        last_name: String,
        email: String,
        /// Sealed with the tenant's data key.
        personal_email: Option<Sealed>,
    }
    DirectoryUserDisabled version 1 { user_id: UserId }
    DirectoryUserEnabled version 1 { user_id: UserId }
    DirectoryUserDeleted version 1 { user_id: UserId }
    /// An administrator set a user's password: its argon2id verifier, sealed, and a version
    /// number that desktop agents compare to drop cached offline verifiers. Version 1 had no
    /// `must_change`: it is upcast to `false`, as no password then had to be changed.
    PasswordSet version 2 {
        user_id: UserId,
        /// Sealed argon2id verifier (PHC string).
        verifier: Sealed,
        password_version: u32,
        /// The password is a temporary one: the user's next workstation login must choose
        /// their own ([`PasswordChanged`]) before it opens the account.
        must_change: bool,
    }
    /// A user chose a new password at a workstation, proving the one they had: its sealed
    /// verifier replaces the old one, and any demand to change it is met.
    PasswordChanged version 1 {
        user_id: UserId,
        /// The workstation's agent that asked.
        device_id: DeviceId,
        /// Sealed argon2id verifier (PHC string).
        verifier: Sealed,
        password_version: u32,
    }
    /// The user is invited to onboard a phone for passwordless login.
    PasswordlessEnabled version 1 { user_id: UserId }
    /// The desktop client's login screen branding; `version` grows with each change.
    BrandingUpdated version 1 {
        version: u32,
        background: Option<ImageRef>,
        logo: Option<ImageRef>,
        text: Option<String>,
    }
    /// The shared local admin account that technicians elevate into, and how long the
    /// password an elevation shows stays the account's. Version 1 had no `elevation_minutes`:
    /// it is upcast to [`crate::customer::DEFAULT_ELEVATION_MINUTES`], what agents then used.
    SharedAccountConfigured version 2 {
        username: String,
        elevation_minutes: u32,
    }
    /// A one-time token to enroll a desktop agent. Only its digest is kept.
    EnrollmentTokenIssued version 1 {
        token_id: Uuid,
        /// SHA-256 of the token, hex.
        token_digest: String,
        expires_at: DateTime<Utc>,
    }
    /// An enrollment token withdrawn before any agent used it (a token seen by someone it was
    /// not meant for): it enrolls nothing from now on.
    EnrollmentTokenRevoked version 1 { token_id: Uuid }
    /// A desktop agent exchanged a token for a device credential (kept as a digest).
    AgentEnrolled version 1 {
        device_id: DeviceId,
        token_id: Uuid,
        hostname: String,
        /// SHA-256 of the device credential, hex.
        credential_digest: String,
    }
    AgentRevoked version 1 { device_id: DeviceId }
    /// A login at a workstation, successful or not.
    DesktopLoginRecorded version 1 {
        device_id: DeviceId,
        username: String,
        user_id: Option<UserId>,
        method: DesktopLoginMethod,
        outcome: AttemptOutcome,
        local_account: Option<LocalAccountAction>,
    }
    /// A portal session began on this tenant's host. Only the token's digest is kept: the
    /// token itself went to the client once.
    SessionStarted version 1 {
        session_id: Uuid,
        user_id: UserId,
        /// The MSP the user belongs to when it is not this tenant (a technician on a customer
        /// host).
        msp_id: Option<TenantId>,
        /// The authenticator that approved the login (none for an SSO hand-off).
        device_id: Option<DeviceId>,
        method: SessionMethod,
        /// SHA-256 of the session token, hex.
        token_digest: String,
        expires_at: DateTime<Utc>,
    }
    /// A session was ended by its user (logout).
    SessionEnded version 1 { session_id: Uuid }
    /// A technician's elevated access to a workstation, approved or not.
    ElevationRecorded version 1 {
        device_id: DeviceId,
        msp_id: TenantId,
        technician_id: UserId,
        account: String,
        outcome: AttemptOutcome,
    }
    /// A technician's elevated access to a workstation ended: the password the elevation
    /// showed for the shared account is no longer the account's. Reported by the
    /// workstation's agent, which may be offline when it happens: `ended_at` is by the
    /// workstation's clock, and `report_id` names the report (an agent that crashed after
    /// sending one sends it again with the same id).
    ElevationEnded version 1 {
        report_id: Uuid,
        device_id: DeviceId,
        /// The tenant seq of the `ElevationRecorded` that approved the elevation, as the
        /// approval told the agent (none for an elevation the agent kept no seq for).
        elevation_seq: Option<u64>,
        /// The technician who elevated: from the service's record at `elevation_seq`, never
        /// the agent's word.
        technician_id: Option<UserId>,
        account: String,
        reason: ElevationEnd,
        ended_at: DateTime<Utc>,
    }

    /// The root key was replaced: every tenant's data key is now wrapped by `key_id`'s key.
    /// In the operator log (`crate::operator`), like the events below.
    RootKeyRotated version 1 {
        /// Public fingerprints (`RootKey::id`), never the keys.
        previous_key_id: String,
        key_id: String,
    }
    /// A consistent copy of the log was written (it holds no tenant key: those are in the key
    /// mirror). The copy reaches `head_position` and does not hold this event.
    BackupWritten version 1 {
        directory: String,
        head_position: u64,
        events: u64,
    }
    /// This log was made from the backup in `backup`, which reached `head_position`, with
    /// `keys_restored` tenant keys put back from the key mirror and `keys_missing` that it no
    /// longer held (tenants deleted after the backup).
    BackupRestored version 1 {
        backup: String,
        head_position: u64,
        keys_restored: u64,
        keys_missing: u64,
    }
    /// A read model was rebuilt from the log into a new generation, now served.
    ReadModelsRebuilt version 1 { projection: String, generation: u64 }
}
