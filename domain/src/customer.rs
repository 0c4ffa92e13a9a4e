//! The customer tenant: step 6 of the cloud directory quick start and what the desktop needs.
//! User source, the master key, desktop login, directory users with sealed passwords and
//! personal emails, passwordless MFA, branding, the shared admin account, desktop agents, and
//! the record of logins and elevations.
//!
//! Secrets are sealed before `decide` sees them ([`Sealer::password`],
//! [`Sealer::personal_email`]), so commands and events only ever carry ciphertext.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::crypto::{Argon2Params, DataKey, HashMemory, PasswordVerifier, Sealed};
use crate::decision::{self, Claim, Decision, DomainError, field};
use crate::event::*;
use crate::ids::{DeviceId, TenantId, UserId};
use crate::onboarding::{Attempt, Enrollment};
use crate::validate::{self, FieldError, PasswordPolicy};

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerTenant {
    pub id: TenantId,
    pub msp_id: TenantId,
    pub name: String,
    pub display_name: String,
    pub host_label: String,
    pub user_source: UserSource,
    /// The data key version, once the master key is enabled.
    pub master_key: Option<u32>,
    pub desktop_login: Option<(bool, DesktopLoginMethod)>,
    pub users: BTreeMap<UserId, DirectoryUser>,
    pub branding: Branding,
    pub shared_account: Option<String>,
    /// How long the password an elevation shows stays the shared account's (minutes).
    pub elevation_minutes: u32,
    /// The enrollment tokens that may still be used: a token leaves when an agent enrolls with
    /// it, or once it has expired (see [`EnrollmentToken`]), so a tenant enrolling thousands
    /// of workstations does not carry every token it ever issued.
    pub enrollment_tokens: BTreeMap<Uuid, EnrollmentToken>,
    /// Each enrollment token's id by its digest: an enrollment finds its token in one lookup
    /// instead of comparing against every token ever issued. Only a digest of a random token
    /// is looked up, so the lookup's timing tells nothing that helps forge a token.
    pub enrollment_token_digests: BTreeMap<String, Uuid>,
    pub agents: BTreeMap<DeviceId, Agent>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryUser {
    pub id: UserId,
    pub first_name: String,
    pub last_name: String,
    pub username: String,
    pub email: String,
    pub personal_email: Option<Sealed>,
    pub enabled: bool,
    pub password: Option<(Sealed, u32)>,
    /// Versions count up over the user's life, never reused after a reset.
    pub password_version: u32,
    /// The password is a temporary one an administrator set: a workstation login must
    /// change it before opening the account.
    pub must_change_password: bool,
    /// Invited to passwordless MFA: may onboard a phone with a code sent to `email`.
    pub passwordless: bool,
    pub enrollment: Enrollment,
}

impl DirectoryUser {
    /// "Active users" of the portal: enabled, with a password set or a phone enrolled.
    pub fn is_active(&self) -> bool {
        self.enabled && (self.password.is_some() || self.enrollment.is_onboarded())
    }

    fn holds_sealed_data(&self) -> bool {
        self.password.is_some() || self.personal_email.is_some()
    }
}

#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branding {
    pub version: u32,
    pub background: Option<ImageRef>,
    pub logo: Option<ImageRef>,
    pub text: Option<String>,
}

impl Branding {
    /// The blobs (content addresses) of the images this branding shows.
    pub fn blobs(&self) -> impl Iterator<Item = &str> {
        self.background
            .iter()
            .chain(self.logo.iter())
            .map(|image| image.blob.as_str())
    }

    /// The blobs this branding shows that `next` no longer does: what replacing it leaves
    /// unused, to be removed with the update (the log's older events name them, but nothing
    /// serves an image that is not the current one).
    pub fn replaced_by(&self, next: &BrandingUpdated) -> Vec<String> {
        let kept = |blob: &str| {
            next.background
                .iter()
                .chain(next.logo.iter())
                .any(|image| image.blob == blob)
        };
        let mut gone: Vec<String> = self
            .blobs()
            .filter(|blob| !kept(blob))
            .map(str::to_owned)
            .collect();
        gone.dedup();
        gone
    }
}

/// An enrollment token not used yet. Every token lives [`ENROLLMENT_TOKEN_LIFETIME`] from its
/// issue, so when a token is issued, every token that expired a lifetime before the new one
/// expires had expired when it was issued: the fold drops those, with no clock of its own.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentToken {
    pub digest: String,
    pub expires_at: DateTime<Utc>,
}

/// How long an enrollment token may be used after it is issued.
pub const ENROLLMENT_TOKEN_LIFETIME: chrono::Duration = chrono::Duration::hours(24);

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub id: DeviceId,
    pub hostname: String,
    pub credential_digest: String,
}

/// The longest branding text on the login screen.
pub const MAX_BRANDING_TEXT: usize = 500;

impl CustomerTenant {
    /// Folds a customer stream; `None` for an empty stream.
    pub fn replay<'a>(
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<Option<Self>, DomainError> {
        let first = |event: &Event| match event {
            Event::CustomerTenantOpened(e) => Some(CustomerTenant::opened(e)),
            _ => None,
        };
        decision::replay(events, "a customer", first, CustomerTenant::apply)
    }

    fn opened(e: &CustomerTenantOpened) -> Self {
        CustomerTenant {
            id: e.tenant_id,
            msp_id: e.msp_id,
            name: e.name.clone(),
            display_name: e.display_name.clone(),
            host_label: e.host_label.clone(),
            user_source: UserSource::Local,
            master_key: None,
            desktop_login: None,
            users: BTreeMap::new(),
            branding: Branding::default(),
            shared_account: None,
            elevation_minutes: DEFAULT_ELEVATION_MINUTES,
            enrollment_tokens: BTreeMap::new(),
            enrollment_token_digests: BTreeMap::new(),
            agents: BTreeMap::new(),
        }
    }

    fn forget_token(&mut self, token_id: Uuid) {
        if let Some(token) = self.enrollment_tokens.remove(&token_id) {
            // A digest issued again under another id points at that one now.
            if self.enrollment_token_digests.get(&token.digest) == Some(&token_id) {
                self.enrollment_token_digests.remove(&token.digest);
            }
        }
    }

    /// Drops the tokens expired at `instant` (those expiring at it or before).
    fn forget_tokens_expired_by(&mut self, instant: DateTime<Utc>) {
        let expired: Vec<Uuid> = self
            .enrollment_tokens
            .iter()
            .filter(|(_, token)| token.expires_at <= instant)
            .map(|(id, _)| *id)
            .collect();
        for token_id in expired {
            self.forget_token(token_id);
        }
    }

    /// Event types `apply` takes in without changing the state (what happened at a
    /// workstation or in a session, kept for the audit): a fold may pass over them without
    /// decoding, if they are of their current version. A busy customer's stream is mostly these.
    pub const IGNORED: &'static [&'static str] = &[
        "DesktopLoginRecorded",
        "ElevationRecorded",
        "ElevationEnded",
        "SessionStarted",
        "SessionEnded",
    ];

    /// Whether an event of this type and version leaves the state as it is (see [`Self::IGNORED`]).
    pub fn ignores(event_type: &str, schema_version: u32) -> bool {
        crate::msp::ignored(Self::IGNORED, event_type, schema_version)
    }

    pub fn apply(&mut self, event: &Event) -> Result<(), DomainError> {
        let corrupt = |what: &str| {
            DomainError::Corrupt(format!("{} names an unknown {what}", event.type_name()))
        };
        match event {
            Event::UserSourceSet(e) => self.user_source = e.source,
            Event::MasterKeyEnabled(e) => self.master_key = Some(e.key_version),
            Event::MasterKeyDisabled(_) => self.master_key = None,
            Event::DesktopLoginConfigured(e) => self.desktop_login = Some((e.enabled, e.method)),
            Event::DirectoryUserCreated(e) => {
                self.users.insert(
                    e.user_id,
                    DirectoryUser {
                        id: e.user_id,
                        first_name: e.first_name.clone(),
                        last_name: e.last_name.clone(),
                        username: e.username.clone(),
                        email: e.email.clone(),
                        personal_email: e.personal_email.clone(),
                        enabled: true,
                        password: None,
                        password_version: 0,
                        must_change_password: false,
                        passwordless: false,
                        enrollment: Enrollment::default(),
                    },
                );
            }
            Event::DirectoryUserUpdated(e) => {
                let user = self.user_mut(e.user_id, event)?;
                user.first_name = e.first_name.clone();
                user.last_name = e.last_name.clone();
                user.email = e.email.clone();
                user.personal_email = e.personal_email.clone();
            }
            Event::DirectoryUserDisabled(e) => {
                self.user_mut(e.user_id, event)?.enabled = false;
            }
            Event::DirectoryUserEnabled(e) => {
                self.user_mut(e.user_id, event)?.enabled = true;
            }
            Event::DirectoryUserDeleted(e) => {
                self.users
                    .remove(&e.user_id)
                    .ok_or_else(|| corrupt("user"))?;
            }
            Event::PasswordSet(e) => {
                let user = self.user_mut(e.user_id, event)?;
                user.password = Some((e.verifier.clone(), e.password_version));
                user.password_version = e.password_version;
                user.must_change_password = e.must_change;
            }
            Event::PasswordChanged(e) => {
                let user = self.user_mut(e.user_id, event)?;
                user.password = Some((e.verifier.clone(), e.password_version));
                user.password_version = e.password_version;
                user.must_change_password = false;
            }
            Event::PasswordlessEnabled(e) => {
                self.user_mut(e.user_id, event)?.passwordless = true;
            }
            Event::BrandingUpdated(e) => {
                self.branding = Branding {
                    version: e.version,
                    background: e.background.clone(),
                    logo: e.logo.clone(),
                    text: e.text.clone(),
                };
            }
            Event::SharedAccountConfigured(e) => {
                self.shared_account = Some(e.username.clone());
                self.elevation_minutes = e.elevation_minutes;
            }
            Event::EnrollmentTokenIssued(e) => {
                self.forget_tokens_expired_by(e.expires_at - ENROLLMENT_TOKEN_LIFETIME);
                self.enrollment_token_digests
                    .insert(e.token_digest.clone(), e.token_id);
                self.enrollment_tokens.insert(
                    e.token_id,
                    EnrollmentToken {
                        digest: e.token_digest.clone(),
                        expires_at: e.expires_at,
                    },
                );
            }
            // Like a used one, and as leniently: a token forgotten as expired is no corruption.
            Event::EnrollmentTokenRevoked(e) => self.forget_token(e.token_id),
            Event::AgentEnrolled(e) => {
                // A used token is forgotten. Its absence is no corruption: a history written
                // while the clock stepped back may enroll with a token the fold has since
                // forgotten as expired.
                self.forget_token(e.token_id);
                self.agents.insert(
                    e.device_id,
                    Agent {
                        id: e.device_id,
                        hostname: e.hostname.clone(),
                        credential_digest: e.credential_digest.clone(),
                    },
                );
            }
            Event::AgentRevoked(e) => {
                self.agents
                    .remove(&e.device_id)
                    .ok_or_else(|| corrupt("agent"))?;
            }
            Event::OnboardingCodeIssued(e) => {
                self.user_mut(e.user_id, event)?.enrollment.code_issued(e)
            }
            Event::OnboardingCodeRejected(e) => {
                self.user_mut(e.user_id, event)?.enrollment.code_rejected()
            }
            Event::DeviceEnrolled(e) => self
                .user_mut(e.user_id, event)?
                .enrollment
                .device_enrolled(e),
            Event::AuthenticatorRevoked(e) => {
                if !self
                    .user_mut(e.user_id, event)?
                    .enrollment
                    .authenticator_revoked(e)
                {
                    return Err(corrupt("authenticator"));
                }
            }
            Event::DesktopLoginRecorded(_)
            | Event::ElevationRecorded(_)
            | Event::ElevationEnded(_)
            | Event::SessionStarted(_)
            | Event::SessionEnded(_) => {}
            other => {
                return Err(DomainError::Corrupt(format!(
                    "{} does not belong in a customer stream",
                    other.type_name()
                )));
            }
        }
        Ok(())
    }

    /// The user who logs in as `username` (compared case-insensitively).
    pub fn user_by_username(&self, username: &str) -> Option<&DirectoryUser> {
        let key = validate::username_key(username);
        self.users
            .values()
            .find(|u| validate::username_key(&u.username) == key)
    }

    /// Whether `username` names the shared admin account (case-insensitively, as Windows
    /// compares names). A directory user never has that name: an agent would hand the
    /// administrator account to them at their login.
    pub fn is_shared_account(&self, username: &str) -> bool {
        self.shared_account.as_deref().is_some_and(|shared| {
            validate::username_key(shared) == validate::username_key(username)
        })
    }

    /// An enabled user invited to passwordless MFA, by company email (case-insensitive).
    pub fn passwordless_user_by_email(&self, email: &str) -> Option<&DirectoryUser> {
        let key = validate::email_key(email);
        self.users
            .values()
            .find(|u| u.enabled && u.passwordless && validate::email_key(&u.email) == key)
    }

    /// "Active users" of the MSP portal's customers table.
    pub fn active_users(&self) -> usize {
        self.users.values().filter(|u| u.is_active()).count()
    }

    fn holds_sealed_data(&self) -> bool {
        self.users.values().any(DirectoryUser::holds_sealed_data)
    }

    /// The user an event names; an unknown one means the history does not fold.
    fn user_mut(&mut self, id: UserId, event: &Event) -> Result<&mut DirectoryUser, DomainError> {
        self.users.get_mut(&id).ok_or_else(|| {
            DomainError::Corrupt(format!("{} names unknown user {id}", event.type_name()))
        })
    }

    fn user(&self, id: UserId) -> Result<&DirectoryUser, DomainError> {
        self.users.get(&id).ok_or(DomainError::NotFound("user"))
    }

    fn key_version(&self) -> Result<u32, DomainError> {
        self.master_key.ok_or_else(|| {
            DomainError::Conflict(
                "enable the master key first: passwords and personal emails are sealed with it"
                    .into(),
            )
        })
    }
}

/// The sealed-field name of a user's password verifier: bound to the user, so that a verifier
/// copied onto another user does not open.
pub fn password_field(user: UserId) -> String {
    format!("password_verifier/{user}")
}

/// The sealed-field name of a user's personal email.
pub fn personal_email_field(user: UserId) -> String {
    format!("personal_email/{user}")
}

/// Seals a tenant's secrets with its data key, checking them first.
pub struct Sealer<'a> {
    pub key: &'a DataKey,
    pub tenant: TenantId,
}

impl Sealer<'_> {
    /// Checks `password` against the policy, makes its argon2id verifier and seals it for
    /// `user`. Costly by design (argon2id): run it where it cannot starve other work. Randomness
    /// and working memory come from the caller, as the domain keeps no state and draws nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn password(
        &self,
        policy: &PasswordPolicy,
        params: Argon2Params,
        user: UserId,
        password: &str,
        salt: [u8; 16],
        nonce: [u8; 24],
        memory: &mut HashMemory,
    ) -> Result<Sealed, DomainError> {
        policy
            .check(password)
            .map_err(|e| DomainError::Invalid(vec![e]))?;
        let verifier = PasswordVerifier::create_in(password, salt, params, memory)
            .map_err(|e| DomainError::Corrupt(e.to_string()))?;
        self.key
            .seal(
                self.tenant.0,
                &password_field(user),
                verifier.as_phc().as_bytes(),
                nonce,
            )
            .map_err(|e| DomainError::Corrupt(e.to_string()))
    }

    /// Checks a personal email and seals it for `user`.
    pub fn personal_email(
        &self,
        user: UserId,
        email: &str,
        nonce: [u8; 24],
    ) -> Result<Sealed, DomainError> {
        let email =
            validate::email("personal_email", email).map_err(|e| DomainError::Invalid(vec![e]))?;
        self.key
            .seal(
                self.tenant.0,
                &personal_email_field(user),
                email.as_bytes(),
                nonce,
            )
            .map_err(|e| DomainError::Corrupt(e.to_string()))
    }
}

/// Opens a user's sealed password verifier and checks `password` against it, in constant time.
pub fn verify_password(
    key: &DataKey,
    tenant: TenantId,
    user: UserId,
    sealed: &Sealed,
    password: &str,
    memory: &mut HashMemory,
) -> Result<bool, DomainError> {
    let phc = key
        .open(tenant.0, &password_field(user), sealed)
        .map_err(|e| DomainError::Corrupt(e.to_string()))?;
    let phc = std::str::from_utf8(&phc).map_err(|e| DomainError::Corrupt(e.to_string()))?;
    PasswordVerifier::parse(phc)
        .and_then(|verifier| verifier.verify_in(password, memory))
        .map_err(|e| DomainError::Corrupt(e.to_string()))
}

/// The claim that keeps a username unique in one tenant, case-insensitively.
pub fn username_claim(tenant: TenantId, username: &str) -> Claim {
    Claim::new(
        format!("username:{tenant}"),
        validate::username_key(username),
    )
}

/// Commands on a customer tenant. Secrets arrive sealed; ids and times come from the caller.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum CustomerCommand {
    /// Opens the tenant's stream, in the commit of its MSP's `MspCommand::CreateCustomer`:
    /// the name and display name are checked here, and the host label `{name}-{msp_name}` is
    /// derived and claimed by this stream, so that deleting it frees the name.
    Open {
        tenant_id: TenantId,
        msp_id: TenantId,
        msp_name: String,
        name: String,
        display_name: String,
    },
    SetUserSource {
        source: UserSource,
    },
    EnableMasterKey {
        key_version: u32,
    },
    DisableMasterKey,
    ConfigureDesktopLogin {
        enabled: bool,
        method: DesktopLoginMethod,
    },
    CreateUser {
        user_id: UserId,
        first_name: String,
        last_name: String,
        username: String,
        email: String,
        password: Option<Sealed>,
        /// With a `password`: it is a temporary one the user changes at their first
        /// workstation login.
        must_change_password: bool,
        personal_email: Option<Sealed>,
    },
    /// Changes what is given; `personal_email: Some(None)` removes it.
    UpdateUser {
        user_id: UserId,
        first_name: Option<String>,
        last_name: Option<String>,
        email: Option<String>,
        personal_email: Option<Option<Sealed>>,
        enabled: Option<bool>,
    },
    DeleteUser {
        user_id: UserId,
    },
    /// An administrator's reset; with `must_change`, the user's next workstation login
    /// chooses their own password before the account opens.
    SetPassword {
        user_id: UserId,
        verifier: Sealed,
        must_change: bool,
    },
    /// A user's own change at a workstation (`device_id`), after the service checked the
    /// password they had: `replaces_version` is the version that check succeeded against,
    /// so a reset that lands between the check and this command wins (a conflict).
    ChangeOwnPassword {
        user_id: UserId,
        device_id: DeviceId,
        verifier: Sealed,
        replaces_version: u32,
    },
    EnablePasswordless {
        user_id: UserId,
    },
    /// A passwordless user's lost or replaced phone: it approves nothing more and their
    /// sessions end.
    RevokeAuthenticator {
        user_id: UserId,
        device_id: DeviceId,
    },
    /// A passwordless user asks for a code at their company email. Answers the same whether or
    /// not the email is known; the caller mails `code` only if the decision issued one.
    StartOnboarding {
        email: String,
        code: String,
        now: DateTime<Utc>,
    },
    CompleteOnboarding {
        email: String,
        attempt: Attempt,
    },
    /// Fields not given keep their value; images are checked by the caller with
    /// [`validate::image`] and stored as blobs.
    UpdateBranding {
        background: Option<ImageRef>,
        logo: Option<ImageRef>,
        text: Option<String>,
    },
    /// `elevation_minutes`: `None` keeps the tenant's (at first [`DEFAULT_ELEVATION_MINUTES`]).
    ConfigureSharedAccount {
        username: String,
        elevation_minutes: Option<u32>,
    },
    /// A token that lives [`ENROLLMENT_TOKEN_LIFETIME`] from `now`.
    IssueEnrollmentToken {
        token_id: Uuid,
        token_digest: String,
        now: DateTime<Utc>,
    },
    /// Withdraws a token not used yet and not expired at `now`.
    RevokeEnrollmentToken {
        token_id: Uuid,
        now: DateTime<Utc>,
    },
    EnrollAgent {
        token_digest: String,
        device_id: DeviceId,
        hostname: String,
        credential_digest: String,
        now: DateTime<Utc>,
    },
    RevokeAgent {
        device_id: DeviceId,
    },
    RecordDesktopLogin(DesktopLoginRecorded),
    RecordElevation(ElevationRecorded),
    /// An agent's report that an elevation ended; refused if `ended_at` is more than
    /// [`CLOCK_SKEW`] after `now` (a workstation clock that far ahead would date it wrong).
    /// `approval` is the event at `record.elevation_seq` in the tenant's log, if that is an
    /// `ElevationRecorded` (the caller reads it; the technician is taken from it).
    RecordElevationEnded {
        record: ElevationEnded,
        approval: Option<ElevationRecorded>,
        now: DateTime<Utc>,
    },
}

/// How far ahead of the service a workstation's clock may be in what its agent reports.
pub const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// How long an elevation's password lives unless the tenant says otherwise (minutes).
pub const DEFAULT_ELEVATION_MINUTES: u32 = 60;

/// The lifetimes a tenant may give elevations (minutes): long enough to install something,
/// short enough that a password seen on a screen share is soon of no use.
pub const ELEVATION_MINUTES: std::ops::RangeInclusive<u32> = 5..=480;

pub fn decide(
    state: Option<&CustomerTenant>,
    command: CustomerCommand,
) -> Result<Decision, DomainError> {
    match (state, command) {
        (
            None,
            CustomerCommand::Open {
                tenant_id,
                msp_id,
                msp_name,
                name,
                display_name,
            },
        ) => {
            let mut errors = Vec::new();
            let name = field(&mut errors, validate::tenant_name("name", &name));
            let label = name
                .as_ref()
                .and_then(|n| field(&mut errors, validate::customer_host_label(n, &msp_name)));
            let display_name = field(
                &mut errors,
                validate::display_name("display_name", &display_name),
            );
            let (Some(name), Some(host_label), Some(display_name)) = (name, label, display_name)
            else {
                return Err(DomainError::Invalid(errors));
            };
            Ok(Decision::event(CustomerTenantOpened {
                tenant_id,
                msp_id,
                name,
                display_name,
                host_label: host_label.clone(),
            })
            .claim(crate::msp::host_claim(&host_label)))
        }
        (None, _) => Err(DomainError::NotFound("tenant")),
        (Some(tenant), command) => decide_on(tenant, command),
    }
}

fn decide_on(t: &CustomerTenant, command: CustomerCommand) -> Result<Decision, DomainError> {
    use CustomerCommand as C;
    match command {
        C::Open { .. } => Err(DomainError::Conflict("the tenant already exists".into())),
        C::SetUserSource { source } => Ok(if t.user_source == source {
            Decision::none()
        } else {
            Decision::event(UserSourceSet { source })
        }),
        C::EnableMasterKey { key_version } => match t.master_key {
            Some(_) => Ok(Decision::none()),
            None if key_version == 0 => Err(DomainError::Invalid(vec![FieldError::new(
                "key_version",
                "must be at least 1",
            )])),
            None => Ok(Decision::event(MasterKeyEnabled { key_version })),
        },
        C::DisableMasterKey => match t.master_key {
            None => Ok(Decision::none()),
            Some(_) if t.holds_sealed_data() => Err(DomainError::Conflict(
                "the master key cannot be switched off while passwords or personal emails are \
                 sealed with it"
                    .into(),
            )),
            Some(key_version) => Ok(Decision::event(MasterKeyDisabled { key_version })),
        },
        C::ConfigureDesktopLogin { enabled, method } => {
            Ok(if t.desktop_login == Some((enabled, method)) {
                Decision::none()
            } else {
                Decision::event(DesktopLoginConfigured { enabled, method })
            })
        }
        C::CreateUser {
            user_id,
            first_name,
            last_name,
            username,
            email,
            password,
            must_change_password,
            personal_email,
        } => {
            let mut errors = Vec::new();
            let first_name = field(
                &mut errors,
                validate::person_name("first_name", &first_name),
            );
            let last_name = field(&mut errors, validate::person_name("last_name", &last_name));
            let username = field(&mut errors, validate::username(&username));
            let email = field(&mut errors, validate::email("email", &email));
            let (Some(first_name), Some(last_name), Some(username), Some(email)) =
                (first_name, last_name, username, email)
            else {
                return Err(DomainError::Invalid(errors));
            };
            if password.is_some() || personal_email.is_some() {
                let version = t.key_version()?;
                for sealed in password.iter().chain(personal_email.iter()) {
                    check_key_version(sealed, version)?;
                }
            }
            if t.users.contains_key(&user_id) {
                return Err(DomainError::Conflict("the user id is taken".into()));
            }
            if t.user_by_username(&username).is_some() {
                return Err(DomainError::Conflict(format!(
                    "the username {username} is taken"
                )));
            }
            if t.is_shared_account(&username) {
                return Err(DomainError::Conflict(format!(
                    "the username {username} is the workstations' shared admin account"
                )));
            }
            let claims = [username_claim(t.id, &username)];
            let mut decision = Decision::event(DirectoryUserCreated {
                user_id,
                first_name,
                last_name,
                username,
                email,
                personal_email,
            });
            if let Some(verifier) = password {
                decision = decision.and(PasswordSet {
                    user_id,
                    verifier,
                    password_version: 1,
                    must_change: must_change_password,
                });
            } else if must_change_password {
                return Err(DomainError::Invalid(vec![FieldError {
                    field: "must_change_password",
                    message: "only a password given here can be a temporary one".into(),
                }]));
            }
            Ok(claims.into_iter().fold(decision, Decision::claim))
        }
        C::UpdateUser {
            user_id,
            first_name,
            last_name,
            email,
            personal_email,
            enabled,
        } => {
            let user = t.user(user_id)?;
            let mut errors = Vec::new();
            let first_name = first_name
                .map(|n| field(&mut errors, validate::person_name("first_name", &n)))
                .unwrap_or_else(|| Some(user.first_name.clone()));
            let last_name = last_name
                .map(|n| field(&mut errors, validate::person_name("last_name", &n)))
                .unwrap_or_else(|| Some(user.last_name.clone()));
            let email = email
                .map(|e| field(&mut errors, validate::email("email", &e)))
                .unwrap_or_else(|| Some(user.email.clone()));
            let (Some(first_name), Some(last_name), Some(email)) = (first_name, last_name, email)
            else {
                return Err(DomainError::Invalid(errors));
            };
            let personal_email = match personal_email {
                None => user.personal_email.clone(),
                Some(None) => None,
                Some(Some(sealed)) => {
                    check_key_version(&sealed, t.key_version()?)?;
                    Some(sealed)
                }
            };
            let mut decision = Decision::none();
            let profile_changed = first_name != user.first_name
                || last_name != user.last_name
                || email != user.email
                || personal_email != user.personal_email;
            if profile_changed {
                decision = decision.and(DirectoryUserUpdated {
                    user_id,
                    first_name,
                    last_name,
                    email,
                    personal_email,
                });
            }
            match enabled {
                Some(false) if user.enabled => {
                    decision = decision.and(DirectoryUserDisabled { user_id })
                }
                Some(true) if !user.enabled => {
                    decision = decision.and(DirectoryUserEnabled { user_id })
                }
                _ => {}
            }
            Ok(decision)
        }
        C::DeleteUser { user_id } => {
            let user = t.user(user_id)?;
            Ok(Decision::event(DirectoryUserDeleted { user_id })
                .release(username_claim(t.id, &user.username)))
        }
        C::SetPassword {
            user_id,
            verifier,
            must_change,
        } => {
            let user = t.user(user_id)?;
            check_key_version(&verifier, t.key_version()?)?;
            Ok(Decision::event(PasswordSet {
                user_id,
                verifier,
                password_version: user.password_version + 1,
                must_change,
            }))
        }
        C::ChangeOwnPassword {
            user_id,
            device_id,
            verifier,
            replaces_version,
        } => {
            if !t.agents.contains_key(&device_id) {
                return Err(DomainError::NotFound("device"));
            }
            let user = t.user(user_id)?;
            if !user.enabled {
                return Err(DomainError::Conflict("the user is disabled".into()));
            }
            if user.password.is_none() || user.password_version != replaces_version {
                return Err(DomainError::Conflict(
                    "the password changed since it was checked; log in again".into(),
                ));
            }
            check_key_version(&verifier, t.key_version()?)?;
            Ok(Decision::event(PasswordChanged {
                user_id,
                device_id,
                verifier,
                password_version: user.password_version + 1,
            }))
        }
        C::EnablePasswordless { user_id } => {
            let user = t.user(user_id)?;
            Ok(if user.passwordless {
                Decision::none()
            } else {
                Decision::event(PasswordlessEnabled { user_id })
            })
        }
        C::RevokeAuthenticator { user_id, device_id } => {
            t.user(user_id)?.enrollment.revoke(user_id, device_id)
        }
        C::StartOnboarding { email, code, now } => Ok(t
            .passwordless_user_by_email(&email)
            .map_or_else(Decision::none, |u| u.enrollment.issue(u.id, &code, now))),
        C::CompleteOnboarding { email, attempt } => {
            let user = t.passwordless_user_by_email(&email).ok_or_else(|| {
                DomainError::Unauthenticated("the code is wrong or has expired".into())
            })?;
            let device_taken = t
                .users
                .values()
                .any(|u| u.enrollment.devices.contains_key(&attempt.device_id));
            user.enrollment.complete(user.id, attempt, device_taken)
        }
        C::UpdateBranding {
            background,
            logo,
            text,
        } => {
            let text = match text {
                None => t.branding.text.clone(),
                Some(text) if text.trim().is_empty() => None,
                Some(text) => {
                    let trimmed = text.trim();
                    if trimmed.chars().count() > MAX_BRANDING_TEXT
                        || trimmed.chars().any(|c| c.is_control() && c != '\n')
                    {
                        return Err(DomainError::Invalid(vec![FieldError::new(
                            "text",
                            format!(
                                "must be at most {MAX_BRANDING_TEXT} characters without control \
                                 characters other than line breaks"
                            ),
                        )]));
                    }
                    Some(trimmed.to_owned())
                }
            };
            Ok(Decision::event(BrandingUpdated {
                version: t.branding.version + 1,
                background: background.or_else(|| t.branding.background.clone()),
                logo: logo.or_else(|| t.branding.logo.clone()),
                text,
            }))
        }
        C::ConfigureSharedAccount {
            username,
            elevation_minutes,
        } => {
            let mut invalid = Vec::new();
            let username = validate::username(&username)
                .map_err(|e| invalid.push(e))
                .unwrap_or_default();
            let elevation_minutes = elevation_minutes.unwrap_or(t.elevation_minutes);
            if !ELEVATION_MINUTES.contains(&elevation_minutes) {
                invalid.push(FieldError::new(
                    "elevation_minutes",
                    format!(
                        "must be between {} and {}",
                        ELEVATION_MINUTES.start(),
                        ELEVATION_MINUTES.end()
                    ),
                ));
            }
            if !invalid.is_empty() {
                return Err(DomainError::Invalid(invalid));
            }
            if t.user_by_username(&username).is_some() {
                return Err(DomainError::Conflict(format!(
                    "the username {username} belongs to a directory user"
                )));
            }
            let unchanged = t.shared_account.as_deref() == Some(username.as_str())
                && t.elevation_minutes == elevation_minutes;
            Ok(if unchanged {
                Decision::none()
            } else {
                Decision::event(SharedAccountConfigured {
                    username,
                    elevation_minutes,
                })
            })
        }
        C::IssueEnrollmentToken {
            token_id,
            token_digest,
            now,
        } => {
            if t.enrollment_tokens.contains_key(&token_id) {
                return Err(DomainError::Conflict("the token id is taken".into()));
            }
            Ok(Decision::event(EnrollmentTokenIssued {
                token_id,
                token_digest,
                expires_at: now + ENROLLMENT_TOKEN_LIFETIME,
            }))
        }
        C::RevokeEnrollmentToken { token_id, now } => {
            match t.enrollment_tokens.get(&token_id) {
                Some(token) if token.expires_at > now => {
                    Ok(Decision::event(EnrollmentTokenRevoked { token_id }))
                }
                // Used, expired, revoked or never issued: nothing left to withdraw.
                _ => Err(DomainError::NotFound("enrollment token")),
            }
        }
        C::EnrollAgent {
            token_digest,
            device_id,
            hostname,
            credential_digest,
            now,
        } => {
            let refused =
                || DomainError::Unauthenticated("the enrollment token is not valid".into());
            let (token_id, token) = t
                .enrollment_token_digests
                .get(&token_digest)
                .and_then(|id| Some((id, t.enrollment_tokens.get(id)?)))
                .ok_or_else(refused)?;
            if token.expires_at <= now {
                return Err(refused());
            }
            let hostname = validate::display_name("hostname", &hostname)
                .map_err(|e| DomainError::Invalid(vec![e]))?;
            if t.agents.contains_key(&device_id) {
                return Err(DomainError::Conflict("the device id is taken".into()));
            }
            Ok(Decision::event(AgentEnrolled {
                device_id,
                token_id: *token_id,
                hostname,
                credential_digest,
            }))
        }
        C::RevokeAgent { device_id } => {
            if !t.agents.contains_key(&device_id) {
                return Err(DomainError::NotFound("device"));
            }
            Ok(Decision::event(AgentRevoked { device_id }))
        }
        C::RecordDesktopLogin(record) => {
            if !t.agents.contains_key(&record.device_id) {
                return Err(DomainError::NotFound("device"));
            }
            Ok(Decision::event(record))
        }
        C::RecordElevation(record) => {
            if !t.agents.contains_key(&record.device_id) {
                return Err(DomainError::NotFound("device"));
            }
            Ok(Decision::event(record))
        }
        C::RecordElevationEnded {
            mut record,
            approval,
            now,
        } => {
            if !t.agents.contains_key(&record.device_id) {
                return Err(DomainError::NotFound("device"));
            }
            let mut errors = Vec::new();
            match validate::username(&record.account) {
                Ok(account) => record.account = account,
                Err(e) => errors.push(FieldError {
                    field: "account",
                    ..e
                }),
            }
            // The technician is the service's record of the approval, not the agent's word.
            record.technician_id = None;
            if record.elevation_seq.is_some() {
                match approval {
                    Some(approval)
                        if approval.device_id == record.device_id
                            && approval.outcome == AttemptOutcome::Succeeded =>
                    {
                        record.technician_id = Some(approval.technician_id);
                    }
                    _ => errors.push(FieldError::new(
                        "elevation_seq",
                        "is not an elevation approved for this workstation",
                    )),
                }
            }
            if record.ended_at > now + CLOCK_SKEW {
                errors.push(FieldError::new(
                    "ended_at",
                    "is in the future by the service's clock",
                ));
            }
            if !errors.is_empty() {
                return Err(DomainError::Invalid(errors));
            }
            let mut decision = Decision::event(record.clone()).claim(elevation_report_claim(
                t.id,
                record.device_id,
                record.report_id,
            ));
            // An elevation ends once: a second report of the same approval is refused.
            if let Some(seq) = record.elevation_seq {
                decision = decision.claim(elevation_end_claim(t.id, record.device_id, seq));
            }
            Ok(decision)
        }
    }
}

/// The claim that lets one approval (the tenant seq of its `ElevationRecorded`) end once.
pub fn elevation_end_claim(tenant: TenantId, device: DeviceId, elevation_seq: u64) -> Claim {
    Claim::new(
        format!("elevation-end:{tenant}"),
        format!("{}:{elevation_seq}", device.0),
    )
}

/// The claim that records each report of an ended elevation once: an agent that crashed
/// after the service took a report sends it again with the same id, and the log must not
/// show one end twice. Per device, so no device can take another's report ids. Kept until
/// the tenant is deleted: a few dozen bytes per elevation, which each needed a technician.
pub fn elevation_report_claim(tenant: TenantId, device: DeviceId, report_id: Uuid) -> Claim {
    Claim::new(
        format!("elevation-report:{tenant}"),
        format!("{}:{report_id}", device.0),
    )
}

/// A sealed value must be sealed with the tenant's current data key.
fn check_key_version(sealed: &Sealed, version: u32) -> Result<(), DomainError> {
    if sealed.key_version != version {
        return Err(DomainError::Conflict(format!(
            "sealed with data key version {}, but the tenant's key is version {version}",
            sealed.key_version
        )));
    }
    Ok(())
}
