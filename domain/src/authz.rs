//! Authorization as data: who may do what, where. One function, [`authorize`], decides every
//! command and query of the product; the api only asks it.
//!
//! The rules of the brief:
//! - an MSP **admin** reaches everything of their MSP tenant and of all its customer tenants;
//! - a **technician** (an MSP user without the admin role) reaches the customer tenants
//!   delegated to them, and in their own MSP tenant only their apps and their own profile;
//! - an **auditor** (a role granted per tenant) reads and verifies that tenant's audit log;
//! - a **customer user** sees their own profile on their own tenant, nothing else: they work at
//!   workstations, through the agent;
//! - a **desktop agent** acts only on the tenant it was enrolled into, and only as an agent;
//! - the **operator** runs the platform (signup when closed, maintenance, audit exports);
//! - **anyone** may sign up (when signup is open), start or complete onboarding, and enroll an
//!   agent with a token: those are authenticated by their one-time codes and tokens;
//! - nobody of one MSP ever reaches anything of another MSP or of its customers.

use std::collections::BTreeSet;

use crate::customer::CustomerCommand;
use crate::ids::{DeviceId, TenantId, UserId};
use crate::msp::{MspCommand, MspTenant};

/// Who is asking, as the api established it from a session or a device credential.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Principal {
    /// No credentials.
    Anonymous,
    /// The platform's operator (the `idemd` command line).
    Operator,
    /// A user of an MSP tenant, with the roles that tenant's state gives them now.
    MspUser {
        msp: TenantId,
        user: UserId,
        admin: bool,
        delegated: BTreeSet<TenantId>,
        auditor_of: BTreeSet<TenantId>,
    },
    /// A user of a customer tenant's cloud directory (logged in with their phone).
    CustomerUser { tenant: TenantId, user: UserId },
    /// An enrolled desktop agent.
    Agent { tenant: TenantId, device: DeviceId },
}

impl Principal {
    /// The principal for `user` of `msp` as the MSP's current state has them; `None` if the
    /// user no longer exists (a removed user's session ends at once).
    pub fn msp_user(msp: &MspTenant, user: UserId) -> Option<Principal> {
        let record = msp.users.get(&user)?;
        Some(Principal::MspUser {
            msp: msp.id,
            user,
            admin: record.admin,
            delegated: record.delegations.clone(),
            auditor_of: record.auditor_of.clone(),
        })
    }
}

/// Where an action applies.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scope {
    /// The platform itself (the apex host).
    Platform,
    Msp(TenantId),
    Customer {
        tenant: TenantId,
        msp: TenantId,
    },
}

/// Everything the product lets someone do, grouped by who may do it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Action {
    SignUp,
    /// Operator maintenance: rebuilds, chain verification, exports.
    Operate,
    StartOnboarding,
    CompleteOnboarding,
    /// Own profile and reachable tenants (`/me`, `/apps`).
    ReadOwnProfile,
    /// Add a phone to one's own MSP account, or remove one of one's own phones: the command
    /// names the caller (the api takes the user from the session, never from the request).
    ManageOwnAuthenticators,
    ReadMspUsers,
    ManageMspUsers,
    ManageRoles,
    ReadCustomers,
    ManageCustomers,
    ManageDelegations,
    /// Open a customer tenant (the SSO hand-off).
    OpenCustomer,
    ReadTenantSettings,
    ManageTenantSettings,
    ReadDirectory,
    ManageDirectory,
    ManageBranding,
    ManageSharedAccount,
    ManageAgents,
    /// Exchange an enrollment token for a device credential: authenticated by the token.
    EnrollAgent,
    /// What an enrolled agent does: pull the change feed, check logins, start challenges,
    /// record logins and elevations.
    AgentWork,
    ReadAudit,
}

impl Action {
    pub const ALL: [Action; 23] = [
        Action::SignUp,
        Action::Operate,
        Action::StartOnboarding,
        Action::CompleteOnboarding,
        Action::ReadOwnProfile,
        Action::ManageOwnAuthenticators,
        Action::ReadMspUsers,
        Action::ManageMspUsers,
        Action::ManageRoles,
        Action::ReadCustomers,
        Action::ManageCustomers,
        Action::ManageDelegations,
        Action::OpenCustomer,
        Action::ReadTenantSettings,
        Action::ManageTenantSettings,
        Action::ReadDirectory,
        Action::ManageDirectory,
        Action::ManageBranding,
        Action::ManageSharedAccount,
        Action::ManageAgents,
        Action::EnrollAgent,
        Action::AgentWork,
        Action::ReadAudit,
    ];
}

/// Refused: the caller is known but may not do this here (the api answers 403, or 404 where
/// revealing the resource would leak another tenant's existence).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("not allowed")]
pub struct Denied;

/// Decides whether `principal` may do `action` in `scope`.
pub fn authorize(principal: &Principal, action: Action, scope: Scope) -> Result<(), Denied> {
    use Action as A;
    let allowed = match (principal, action) {
        (_, A::StartOnboarding | A::CompleteOnboarding) => !matches!(scope, Scope::Platform),
        (_, A::EnrollAgent) => matches!(scope, Scope::Customer { .. }),
        (_, A::SignUp) => scope == Scope::Platform,
        (Principal::Operator, A::Operate | A::ReadAudit) => true,
        (Principal::Operator | Principal::Anonymous, _) => false,
        (Principal::Agent { tenant, .. }, A::AgentWork) => {
            matches!(scope, Scope::Customer { tenant: t, .. } if t == *tenant)
        }
        (Principal::Agent { .. }, _) => false,
        (Principal::CustomerUser { tenant, .. }, A::ReadOwnProfile) => {
            matches!(scope, Scope::Customer { tenant: t, .. } if t == *tenant)
        }
        (Principal::CustomerUser { .. }, _) => false,
        (
            Principal::MspUser {
                msp,
                admin,
                delegated,
                auditor_of,
                ..
            },
            action,
        ) => msp_user_may(*msp, *admin, delegated, auditor_of, action, scope),
    };
    if allowed { Ok(()) } else { Err(Denied) }
}

fn msp_user_may(
    msp: TenantId,
    admin: bool,
    delegated: &BTreeSet<TenantId>,
    auditor_of: &BTreeSet<TenantId>,
    action: Action,
    scope: Scope,
) -> bool {
    use Action as A;
    match scope {
        Scope::Platform => false,
        Scope::Msp(tenant) if tenant != msp => false,
        Scope::Customer { msp: owner, .. } if owner != msp => false,
        Scope::Msp(tenant) => match action {
            A::ReadOwnProfile | A::ManageOwnAuthenticators => true,
            A::ReadAudit => admin || auditor_of.contains(&tenant),
            A::ReadMspUsers
            | A::ManageMspUsers
            | A::ManageRoles
            | A::ReadCustomers
            | A::ManageCustomers
            | A::ManageDelegations
            | A::ReadTenantSettings
            | A::ManageTenantSettings => admin,
            _ => false,
        },
        Scope::Customer { tenant, .. } => {
            let reaches = admin || delegated.contains(&tenant);
            match action {
                A::ReadAudit => reaches || auditor_of.contains(&tenant),
                A::OpenCustomer
                | A::ReadOwnProfile
                | A::ReadTenantSettings
                | A::ManageTenantSettings
                | A::ReadDirectory
                | A::ManageDirectory
                | A::ManageBranding
                | A::ManageSharedAccount
                | A::ManageAgents => reaches,
                _ => false,
            }
        }
    }
}

impl MspCommand {
    /// The action this command needs.
    pub fn action(&self) -> Action {
        match self {
            MspCommand::SignUp { .. } => Action::SignUp,
            MspCommand::SetUserSource { .. } => Action::ManageTenantSettings,
            MspCommand::AddUser { .. }
            | MspCommand::RemoveUser { .. }
            | MspCommand::RevokeAuthenticator { .. } => Action::ManageMspUsers,
            MspCommand::MakeAdmin { .. }
            | MspCommand::RevokeAdmin { .. }
            | MspCommand::GrantAuditor { .. }
            | MspCommand::RevokeAuditor { .. } => Action::ManageRoles,
            MspCommand::AddAnotherPhone { .. } | MspCommand::RevokeOwnAuthenticator { .. } => {
                Action::ManageOwnAuthenticators
            }
            MspCommand::StartOnboarding { .. } => Action::StartOnboarding,
            MspCommand::CompleteOnboarding { .. } => Action::CompleteOnboarding,
            MspCommand::CreateCustomer { .. } | MspCommand::DeleteCustomer { .. } => {
                Action::ManageCustomers
            }
            MspCommand::Delegate { .. } | MspCommand::RevokeDelegation { .. } => {
                Action::ManageDelegations
            }
        }
    }
}

impl CustomerCommand {
    /// The action this command needs.
    pub fn action(&self) -> Action {
        use CustomerCommand as C;
        match self {
            // Opened in the same commit as the MSP's `CreateCustomer`, authorized in its scope.
            C::Open { .. } => Action::ManageCustomers,
            C::SetUserSource { .. }
            | C::EnableMasterKey { .. }
            | C::DisableMasterKey
            | C::ConfigureDesktopLogin { .. } => Action::ManageTenantSettings,
            C::CreateUser { .. }
            | C::UpdateUser { .. }
            | C::DeleteUser { .. }
            | C::SetPassword { .. }
            | C::EnablePasswordless { .. }
            | C::RevokeAuthenticator { .. } => Action::ManageDirectory,
            C::StartOnboarding { .. } => Action::StartOnboarding,
            C::CompleteOnboarding { .. } => Action::CompleteOnboarding,
            C::UpdateBranding { .. } => Action::ManageBranding,
            C::ConfigureSharedAccount { .. } => Action::ManageSharedAccount,
            C::IssueEnrollmentToken { .. }
            | C::RevokeEnrollmentToken { .. }
            | C::RevokeAgent { .. } => Action::ManageAgents,
            C::EnrollAgent { .. } => Action::EnrollAgent,
            C::RecordDesktopLogin(_)
            | C::RecordElevation(_)
            | C::RecordElevationEnded { .. }
            | C::ChangeOwnPassword { .. } => Action::AgentWork,
        }
    }
}
