//! The MSP tenant: its state folded from its stream, and the decisions on its commands. Signup,
//! technicians by email and their onboarding, the admin role, customer tenants, and per-customer
//! delegation, as the seeds describe them.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::decision::{self, Claim, Decision, DomainError, field};
use crate::event::*;
use crate::ids::{DeviceId, TenantId, UserId};
use crate::onboarding::{Attempt, Enrollment};
use crate::validate;

pub use crate::onboarding::{CODE_LIFETIME, CODE_TRIES};

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MspTenant {
    pub id: TenantId,
    pub name: String,
    pub display_name: String,
    pub host_label: String,
    pub user_source: UserSource,
    pub users: BTreeMap<UserId, MspUser>,
    /// The customer tenants, by id only: their names are in their own streams.
    pub customers: BTreeSet<TenantId>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MspUser {
    pub id: UserId,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub admin: bool,
    pub enrollment: Enrollment,
    pub delegations: BTreeSet<TenantId>,
    /// Tenants (this MSP or its customers) whose audit log the user may read.
    pub auditor_of: BTreeSet<TenantId>,
}

impl MspUser {
    /// Onboarded: has at least one enrolled device to log in with.
    pub fn is_onboarded(&self) -> bool {
        self.enrollment.is_onboarded()
    }

    /// Whether this user can open `customer`: admins reach all, technicians their delegations.
    pub fn reaches(&self, customer: TenantId) -> bool {
        self.admin || self.delegations.contains(&customer)
    }
}

/// Whether `event_type` is in `list` and `schema_version` is its current version (an older
/// one is upcast, and an unknown one refused, by decoding it as usual).
pub(crate) fn ignored(list: &[&str], event_type: &str, schema_version: u32) -> bool {
    list.contains(&event_type)
        && CATALOGUE
            .iter()
            .any(|(name, version)| *name == event_type && *version == schema_version)
}

impl MspTenant {
    /// Folds a stream's events; `None` for an empty stream. The first event must create the
    /// tenant, and every later one must fit the state, or the stream is not an MSP's.
    pub fn replay<'a>(
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<Option<Self>, DomainError> {
        let first = |event: &Event| match event {
            Event::MspTenantCreated(e) => Some(MspTenant::created(e)),
            _ => None,
        };
        decision::replay(events, "an MSP", first, MspTenant::apply)
    }

    fn created(e: &MspTenantCreated) -> Self {
        let admin = MspUser {
            id: e.admin_user_id,
            email: e.admin_email.clone(),
            first_name: None,
            last_name: None,
            admin: true,
            enrollment: Enrollment::default(),
            delegations: BTreeSet::new(),
            auditor_of: BTreeSet::new(),
        };
        MspTenant {
            id: e.tenant_id,
            name: e.name.clone(),
            display_name: e.display_name.clone(),
            host_label: e.host_label.clone(),
            user_source: UserSource::Local,
            users: BTreeMap::from([(admin.id, admin)]),
            customers: BTreeSet::new(),
        }
    }

    /// Event types `apply` takes in without changing the state (sessions): a fold may pass
    /// over them without decoding, if they are of their current version.
    pub const IGNORED: &'static [&'static str] = &["SessionStarted", "SessionEnded"];

    /// Whether an event of this type and version leaves the state as it is (see [`Self::IGNORED`]).
    pub fn ignores(event_type: &str, schema_version: u32) -> bool {
        ignored(Self::IGNORED, event_type, schema_version)
    }

    /// Applies one event to the state. Pure and total over valid histories.
    pub fn apply(&mut self, event: &Event) -> Result<(), DomainError> {
        let missing = |what: &str| {
            DomainError::Corrupt(format!("{} names an unknown {what}", event.type_name()))
        };
        match event {
            Event::UserSourceSet(e) => self.user_source = e.source,
            Event::MspUserAdded(e) => {
                self.users.insert(
                    e.user_id,
                    MspUser {
                        id: e.user_id,
                        email: e.email.clone(),
                        first_name: e.first_name.clone(),
                        last_name: e.last_name.clone(),
                        admin: false,
                        enrollment: Enrollment::default(),
                        delegations: BTreeSet::new(),
                        auditor_of: BTreeSet::new(),
                    },
                );
            }
            Event::MspUserRemoved(e) => {
                self.users
                    .remove(&e.user_id)
                    .ok_or_else(|| missing("user"))?;
            }
            Event::AdminGranted(e) => self.user_mut(e.user_id, event)?.admin = true,
            Event::AdminRevoked(e) => self.user_mut(e.user_id, event)?.admin = false,
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
                    return Err(missing("authenticator"));
                }
            }
            Event::CustomerTenantCreated(e) => {
                self.customers.insert(e.customer_id);
            }
            Event::CustomerTenantDeleted(e) => {
                if !self.customers.remove(&e.customer_id) {
                    return Err(missing("customer"));
                }
                for user in self.users.values_mut() {
                    user.delegations.remove(&e.customer_id);
                    user.auditor_of.remove(&e.customer_id);
                }
            }
            Event::TechnicianDelegated(e) => {
                self.user_mut(e.user_id, event)?
                    .delegations
                    .insert(e.customer_id);
            }
            Event::DelegationRevoked(e) => {
                self.user_mut(e.user_id, event)?
                    .delegations
                    .remove(&e.customer_id);
            }
            Event::AuditorGranted(e) => {
                self.user_mut(e.user_id, event)?
                    .auditor_of
                    .insert(e.tenant_id);
            }
            Event::AuditorRevoked(e) => {
                self.user_mut(e.user_id, event)?
                    .auditor_of
                    .remove(&e.tenant_id);
            }
            // Sessions live in the read models; they change nothing a command decides on.
            Event::SessionStarted(_) | Event::SessionEnded(_) => {}
            Event::MspTenantCreated(_) => {
                return Err(DomainError::Corrupt(
                    "an MSP stream holds a second MspTenantCreated".into(),
                ));
            }
            other => {
                return Err(DomainError::Corrupt(format!(
                    "{} does not belong in an MSP stream",
                    other.type_name()
                )));
            }
        }
        Ok(())
    }

    /// The user an event names; an unknown one means the history does not fold.
    fn user_mut(&mut self, id: UserId, event: &Event) -> Result<&mut MspUser, DomainError> {
        self.users.get_mut(&id).ok_or_else(|| {
            DomainError::Corrupt(format!("{} names unknown user {id}", event.type_name()))
        })
    }

    pub fn user_by_email(&self, email: &str) -> Option<&MspUser> {
        let key = validate::email_key(email);
        self.users
            .values()
            .find(|u| validate::email_key(&u.email) == key)
    }

    /// Users who can reach `customer`: admins plus technicians delegated to it.
    pub fn technicians_of(&self, customer: TenantId) -> usize {
        self.users.values().filter(|u| u.reaches(customer)).count()
    }

    /// The customers `user` can open, in id order.
    pub fn reachable_by(&self, user: UserId) -> Vec<TenantId> {
        let Some(user) = self.users.get(&user) else {
            return Vec::new();
        };
        self.customers
            .iter()
            .copied()
            .filter(|c| user.reaches(*c))
            .collect()
    }

    fn admins(&self) -> usize {
        self.users.values().filter(|u| u.admin).count()
    }
}

/// The commands on an MSP tenant. Ids, times and codes come in from the caller.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum MspCommand {
    SignUp {
        tenant_id: TenantId,
        name: String,
        display_name: String,
        admin_user_id: UserId,
        admin_email: String,
    },
    SetUserSource {
        source: UserSource,
    },
    AddUser {
        user_id: UserId,
        email: String,
        first_name: Option<String>,
        last_name: Option<String>,
    },
    RemoveUser {
        user_id: UserId,
    },
    MakeAdmin {
        user_id: UserId,
    },
    RevokeAdmin {
        user_id: UserId,
    },
    /// A user's lost or replaced phone: it approves nothing more and their sessions end.
    RevokeAuthenticator {
        user_id: UserId,
        device_id: DeviceId,
    },
    /// A user with a phone asks for a code to enrol another (a replacement, or a spare): the
    /// session asking was approved by an enrolled phone, and the caller mails `code` to the
    /// user's email, so a stolen session alone adds no phone. `user_id` is the session's user.
    AddAnotherPhone {
        user_id: UserId,
        code: String,
        now: DateTime<Utc>,
    },
    /// A user removes one of their own phones (`user_id` is the session's user).
    RevokeOwnAuthenticator {
        user_id: UserId,
        device_id: DeviceId,
    },
    /// Answers the same whether or not the email is known (no enumeration); the caller mails
    /// `code` only if the decision issued one.
    StartOnboarding {
        email: String,
        code: String,
        now: DateTime<Utc>,
    },
    CompleteOnboarding {
        email: String,
        code: String,
        device_id: DeviceId,
        device_name: String,
        public_key: String,
        now: DateTime<Utc>,
    },
    /// Records that a customer tenant exists under this MSP. Its name and display name are
    /// decided by its own stream's `CustomerCommand::Open`, committed with this.
    CreateCustomer {
        customer_id: TenantId,
    },
    DeleteCustomer {
        customer_id: TenantId,
    },
    Delegate {
        user_id: UserId,
        customer_id: TenantId,
    },
    RevokeDelegation {
        user_id: UserId,
        customer_id: TenantId,
    },
    /// `tenant_id` is this MSP or one of its customers.
    GrantAuditor {
        user_id: UserId,
        tenant_id: TenantId,
    },
    RevokeAuditor {
        user_id: UserId,
        tenant_id: TenantId,
    },
}

/// The claim that keeps a host label unique across the platform.
pub fn host_claim(label: &str) -> Claim {
    Claim::new("host", label)
}

/// The claim that keeps an email unique within one tenant.
pub fn email_claim(tenant: TenantId, email: &str) -> Claim {
    Claim::new(format!("email:{tenant}"), validate::email_key(email))
}

/// Decides `command` against the tenant's current state (`None` before signup).
pub fn decide(state: Option<&MspTenant>, command: MspCommand) -> Result<Decision, DomainError> {
    let tenant = match (state, &command) {
        (None, MspCommand::SignUp { .. }) => return sign_up(command),
        (Some(_), MspCommand::SignUp { .. }) => {
            return Err(DomainError::Conflict("the tenant already exists".into()));
        }
        (None, _) => return Err(DomainError::NotFound("tenant")),
        (Some(tenant), _) => tenant,
    };
    match command {
        MspCommand::SignUp { .. } => Err(DomainError::Conflict("the tenant already exists".into())),
        MspCommand::SetUserSource { source } => Ok(if tenant.user_source == source {
            Decision::none()
        } else {
            Decision::event(UserSourceSet { source })
        }),
        MspCommand::AddUser {
            user_id,
            email,
            first_name,
            last_name,
        } => {
            let mut errors = Vec::new();
            let email = field(&mut errors, validate::email("email", &email));
            let first_name = first_name
                .filter(|n| !n.trim().is_empty())
                .and_then(|n| field(&mut errors, validate::person_name("first_name", &n)));
            let last_name = last_name
                .filter(|n| !n.trim().is_empty())
                .and_then(|n| field(&mut errors, validate::person_name("last_name", &n)));
            let Some(email) = email.filter(|_| errors.is_empty()) else {
                return Err(DomainError::Invalid(errors));
            };
            if tenant.user_by_email(&email).is_some() {
                return Err(DomainError::Conflict(format!(
                    "a user with email {email} exists"
                )));
            }
            if tenant.users.contains_key(&user_id) {
                return Err(DomainError::Conflict("the user id is taken".into()));
            }
            Ok(Decision::event(MspUserAdded {
                user_id,
                email: email.clone(),
                first_name,
                last_name,
            })
            .claim(email_claim(tenant.id, &email)))
        }
        MspCommand::RemoveUser { user_id } => {
            let user = tenant
                .users
                .get(&user_id)
                .ok_or(DomainError::NotFound("user"))?;
            if user.admin && tenant.admins() == 1 {
                return Err(DomainError::Conflict(
                    "the last admin cannot be removed".into(),
                ));
            }
            Ok(Decision::event(MspUserRemoved { user_id })
                .release(email_claim(tenant.id, &user.email)))
        }
        MspCommand::MakeAdmin { user_id } => {
            let user = tenant
                .users
                .get(&user_id)
                .ok_or(DomainError::NotFound("user"))?;
            Ok(if user.admin {
                Decision::none()
            } else {
                Decision::event(AdminGranted { user_id })
            })
        }
        MspCommand::RevokeAuthenticator { user_id, device_id }
        | MspCommand::RevokeOwnAuthenticator { user_id, device_id } => tenant
            .users
            .get(&user_id)
            .ok_or(DomainError::NotFound("user"))?
            .enrollment
            .revoke(user_id, device_id),
        MspCommand::AddAnotherPhone { user_id, code, now } => tenant
            .users
            .get(&user_id)
            .ok_or(DomainError::NotFound("user"))?
            .enrollment
            .issue_another(user_id, &code, now),
        MspCommand::RevokeAdmin { user_id } => {
            let user = tenant
                .users
                .get(&user_id)
                .ok_or(DomainError::NotFound("user"))?;
            if !user.admin {
                return Ok(Decision::none());
            }
            if tenant.admins() == 1 {
                return Err(DomainError::Conflict(
                    "the last admin keeps the role".into(),
                ));
            }
            Ok(Decision::event(AdminRevoked { user_id }))
        }
        MspCommand::StartOnboarding { email, code, now } => Ok(tenant
            .user_by_email(&email)
            .map_or_else(Decision::none, |u| u.enrollment.issue(u.id, &code, now))),
        MspCommand::CompleteOnboarding {
            email,
            code,
            device_id,
            device_name,
            public_key,
            now,
        } => {
            let user = tenant.user_by_email(&email).ok_or_else(|| {
                DomainError::Unauthenticated("the code is wrong or has expired".into())
            })?;
            let device_taken = tenant
                .users
                .values()
                .any(|u| u.enrollment.devices.contains_key(&device_id));
            let attempt = Attempt {
                code,
                device_id,
                device_name,
                public_key,
                now,
            };
            user.enrollment.complete(user.id, attempt, device_taken)
        }
        MspCommand::CreateCustomer { customer_id } => {
            if tenant.customers.contains(&customer_id) {
                return Err(DomainError::Conflict(format!(
                    "customer {customer_id} exists"
                )));
            }
            Ok(Decision::event(CustomerTenantCreated { customer_id }))
        }
        MspCommand::DeleteCustomer { customer_id } => {
            if !tenant.customers.contains(&customer_id) {
                return Err(DomainError::NotFound("customer"));
            }
            Ok(Decision::event(CustomerTenantDeleted { customer_id }))
        }
        MspCommand::Delegate {
            user_id,
            customer_id,
        } => {
            let user = tenant
                .users
                .get(&user_id)
                .ok_or(DomainError::NotFound("user"))?;
            if !tenant.customers.contains(&customer_id) {
                return Err(DomainError::NotFound("customer"));
            }
            Ok(if user.delegations.contains(&customer_id) {
                Decision::none()
            } else {
                Decision::event(TechnicianDelegated {
                    user_id,
                    customer_id,
                })
            })
        }
        MspCommand::GrantAuditor { user_id, tenant_id } => {
            let user = tenant
                .users
                .get(&user_id)
                .ok_or(DomainError::NotFound("user"))?;
            if tenant_id != tenant.id && !tenant.customers.contains(&tenant_id) {
                return Err(DomainError::NotFound("customer"));
            }
            Ok(if user.auditor_of.contains(&tenant_id) {
                Decision::none()
            } else {
                Decision::event(AuditorGranted { user_id, tenant_id })
            })
        }
        MspCommand::RevokeAuditor { user_id, tenant_id } => {
            let user = tenant
                .users
                .get(&user_id)
                .ok_or(DomainError::NotFound("user"))?;
            if !user.auditor_of.contains(&tenant_id) {
                return Err(DomainError::NotFound("auditor role"));
            }
            Ok(Decision::event(AuditorRevoked { user_id, tenant_id }))
        }
        MspCommand::RevokeDelegation {
            user_id,
            customer_id,
        } => {
            let user = tenant
                .users
                .get(&user_id)
                .ok_or(DomainError::NotFound("user"))?;
            if !user.delegations.contains(&customer_id) {
                return Err(DomainError::NotFound("delegation"));
            }
            Ok(Decision::event(DelegationRevoked {
                user_id,
                customer_id,
            }))
        }
    }
}

fn sign_up(command: MspCommand) -> Result<Decision, DomainError> {
    let MspCommand::SignUp {
        tenant_id,
        name,
        display_name,
        admin_user_id,
        admin_email,
    } = command
    else {
        return Err(DomainError::Conflict("not a signup".into()));
    };
    let mut errors = Vec::new();
    let name = field(&mut errors, validate::tenant_name("name", &name));
    let display_name = field(
        &mut errors,
        validate::display_name("display_name", &display_name),
    );
    let admin_email = field(&mut errors, validate::email("admin_email", &admin_email));
    let (Some(name), Some(display_name), Some(admin_email)) = (name, display_name, admin_email)
    else {
        return Err(DomainError::Invalid(errors));
    };
    Ok(Decision::event(MspTenantCreated {
        tenant_id,
        name: name.clone(),
        display_name,
        host_label: name.clone(),
        admin_user_id,
        admin_email: admin_email.clone(),
    })
    .claim(host_claim(&name))
    .claim(email_claim(tenant_id, &admin_email)))
}
