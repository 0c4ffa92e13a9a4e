//! The authorization matrix: every action × every kind of principal × own and other tenants,
//! generated, and checked against the rules of the brief stated as invariants.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use domain::authz::{Action, Principal, Scope, authorize};
use domain::crypto::Sealed;
use domain::event::*;
use domain::ids::{DeviceId, TenantId, UserId};
use domain::msp::{self, MspCommand, MspTenant};
use uuid::Uuid;

const MSP_A: TenantId = TenantId(Uuid::from_u128(1));
const C1: TenantId = TenantId(Uuid::from_u128(11));
const C2: TenantId = TenantId(Uuid::from_u128(12));
const MSP_B: TenantId = TenantId(Uuid::from_u128(9));
const C9: TenantId = TenantId(Uuid::from_u128(19));

fn msp_user(
    msp: TenantId,
    admin: bool,
    delegated: &[TenantId],
    auditor_of: &[TenantId],
) -> Principal {
    Principal::MspUser {
        msp,
        user: UserId(Uuid::from_u128(100)),
        admin,
        delegated: delegated.iter().copied().collect(),
        auditor_of: auditor_of.iter().copied().collect(),
    }
}

fn admin_a() -> Principal {
    msp_user(MSP_A, true, &[], &[])
}
/// Delegated to C1, auditor of C2.
fn tech_a() -> Principal {
    msp_user(MSP_A, false, &[C1], &[C2])
}
fn plain_tech_a() -> Principal {
    msp_user(MSP_A, false, &[], &[])
}
fn agent_c1() -> Principal {
    Principal::Agent {
        tenant: C1,
        device: DeviceId(Uuid::from_u128(7)),
    }
}

fn scopes() -> Vec<Scope> {
    vec![
        Scope::Platform,
        Scope::Msp(MSP_A),
        Scope::Customer {
            tenant: C1,
            msp: MSP_A,
        },
        Scope::Customer {
            tenant: C2,
            msp: MSP_A,
        },
        Scope::Msp(MSP_B),
        Scope::Customer {
            tenant: C9,
            msp: MSP_B,
        },
    ]
}

fn may(p: &Principal, a: Action, s: Scope) -> bool {
    authorize(p, a, s).is_ok()
}

/// What anyone may do, credentials or not: authenticated by codes and tokens inside the command.
fn open_to_anyone(a: Action, s: Scope) -> bool {
    may(&Principal::Anonymous, a, s)
}

#[test]
fn anonymous_callers_may_only_sign_up_onboard_and_enroll() {
    for a in Action::ALL {
        for s in scopes() {
            let expected = match a {
                Action::SignUp => s == Scope::Platform,
                Action::StartOnboarding | Action::CompleteOnboarding => s != Scope::Platform,
                Action::EnrollAgent => matches!(s, Scope::Customer { .. }),
                _ => false,
            };
            assert_eq!(may(&Principal::Anonymous, a, s), expected, "{a:?} in {s:?}");
        }
    }
}

#[test]
fn no_one_of_one_msp_reaches_another_msp() {
    for p in [admin_a(), tech_a(), plain_tech_a(), agent_c1()] {
        for a in Action::ALL {
            for s in [
                Scope::Msp(MSP_B),
                Scope::Customer {
                    tenant: C9,
                    msp: MSP_B,
                },
            ] {
                assert_eq!(may(&p, a, s), open_to_anyone(a, s), "{p:?} {a:?} {s:?}");
            }
        }
    }
    // A customer id of MSP A presented as belonging to MSP B is still refused to A's admin.
    assert!(!may(
        &admin_a(),
        Action::ManageDirectory,
        Scope::Customer {
            tenant: C1,
            msp: MSP_B
        }
    ));
}

#[test]
fn admins_reach_everything_of_their_msp() {
    for a in Action::ALL {
        for s in [
            Scope::Msp(MSP_A),
            Scope::Customer {
                tenant: C1,
                msp: MSP_A,
            },
            Scope::Customer {
                tenant: C2,
                msp: MSP_A,
            },
        ] {
            for lesser in [tech_a(), plain_tech_a()] {
                if may(&lesser, a, s) {
                    assert!(
                        may(&admin_a(), a, s),
                        "a technician may {a:?} in {s:?} but the admin may not"
                    );
                }
            }
        }
    }
    for a in [
        Action::ManageMspUsers,
        Action::ManageRoles,
        Action::ManageCustomers,
        Action::ManageDelegations,
        Action::ReadAudit,
    ] {
        assert!(may(&admin_a(), a, Scope::Msp(MSP_A)), "{a:?}");
    }
    for a in [
        Action::OpenCustomer,
        Action::ManageDirectory,
        Action::ManageTenantSettings,
        Action::ManageBranding,
        Action::ManageSharedAccount,
        Action::ManageAgents,
        Action::ReadAudit,
    ] {
        for c in [C1, C2] {
            assert!(
                may(
                    &admin_a(),
                    a,
                    Scope::Customer {
                        tenant: c,
                        msp: MSP_A
                    }
                ),
                "{a:?}"
            );
        }
    }
}

#[test]
fn a_delegated_technician_manages_that_customer_like_an_admin() {
    let c1 = Scope::Customer {
        tenant: C1,
        msp: MSP_A,
    };
    for a in Action::ALL {
        assert_eq!(may(&tech_a(), a, c1), may(&admin_a(), a, c1), "{a:?}");
    }
}

#[test]
fn technicians_manage_nothing_of_the_msp_and_no_undelegated_customer() {
    for a in Action::ALL {
        let in_msp = may(&tech_a(), a, Scope::Msp(MSP_A));
        assert_eq!(
            in_msp,
            matches!(a, Action::ReadOwnProfile | Action::ManageOwnAuthenticators)
                || open_to_anyone(a, Scope::Msp(MSP_A)),
            "{a:?}"
        );
        let c2 = Scope::Customer {
            tenant: C2,
            msp: MSP_A,
        };
        // The auditor role on C2 adds reading its audit log, and nothing else.
        assert_eq!(
            may(&tech_a(), a, c2),
            a == Action::ReadAudit || open_to_anyone(a, c2),
            "{a:?}"
        );
        assert_eq!(may(&plain_tech_a(), a, c2), open_to_anyone(a, c2), "{a:?}");
    }
}

#[test]
fn agents_only_work_as_agents_on_their_own_tenant() {
    for a in Action::ALL {
        for s in scopes() {
            let own_work = a == Action::AgentWork
                && s == (Scope::Customer {
                    tenant: C1,
                    msp: MSP_A,
                });
            assert_eq!(
                may(&agent_c1(), a, s),
                own_work || open_to_anyone(a, s),
                "{a:?} {s:?}"
            );
        }
    }
}

#[test]
fn customer_users_only_see_their_own_profile_on_their_own_tenant() {
    let billy = Principal::CustomerUser {
        tenant: C1,
        user: UserId(Uuid::from_u128(200)),
    };
    for a in Action::ALL {
        for s in scopes() {
            let own = a == Action::ReadOwnProfile
                && s == (Scope::Customer {
                    tenant: C1,
                    msp: MSP_A,
                });
            assert_eq!(
                may(&billy, a, s),
                own || open_to_anyone(a, s),
                "{a:?} {s:?}"
            );
        }
    }
}

#[test]
fn every_customer_command_is_for_its_tenants_managers_or_its_agents() {
    use domain::customer::CustomerCommand as C;
    use domain::onboarding::Attempt;
    let user = UserId(Uuid::from_u128(5));
    let device = DeviceId(Uuid::from_u128(6));
    let now = chrono::Utc::now();
    let attempt = Attempt {
        code: "1".into(),
        device_id: device,
        device_name: "p".into(),
        public_key: "k".into(),
        now,
    };
    let managed = [
        C::SetUserSource {
            source: UserSource::Local,
        },
        C::EnableMasterKey { key_version: 1 },
        C::DisableMasterKey,
        C::ConfigureDesktopLogin {
            enabled: true,
            method: DesktopLoginMethod::Password,
        },
        C::CreateUser {
            user_id: user,
            first_name: "a".into(),
            last_name: "b".into(),
            username: "ab".into(),
            email: "a@b.example".into(),
            password: None,
            must_change_password: false,
            personal_email: None,
        },
        C::UpdateUser {
            user_id: user,
            first_name: None,
            last_name: None,
            email: None,
            personal_email: None,
            enabled: Some(false),
        },
        C::DeleteUser { user_id: user },
        C::SetPassword {
            user_id: user,
            verifier: sealed(),
            must_change: true,
        },
        C::EnablePasswordless { user_id: user },
        C::UpdateBranding {
            background: None,
            logo: None,
            text: None,
        },
        C::ConfigureSharedAccount {
            username: "idem-admin".into(),
            elevation_minutes: None,
        },
        C::IssueEnrollmentToken {
            token_id: Uuid::nil(),
            token_digest: "d".into(),
            now,
        },
        C::RevokeAgent { device_id: device },
    ];
    let c1 = Scope::Customer {
        tenant: C1,
        msp: MSP_A,
    };
    let c2 = Scope::Customer {
        tenant: C2,
        msp: MSP_A,
    };
    for command in managed {
        let a = command.action();
        assert!(
            may(&admin_a(), a, c1) && may(&admin_a(), a, c2),
            "{command:?}"
        );
        assert!(may(&tech_a(), a, c1), "delegated: {command:?}");
        assert!(
            !may(&tech_a(), a, c2) && !may(&plain_tech_a(), a, c1),
            "not delegated: {command:?}"
        );
        assert!(
            !may(&agent_c1(), a, c1),
            "agents do not manage: {command:?}"
        );
    }
    let login = DesktopLoginRecorded {
        device_id: device,
        username: "b".into(),
        user_id: None,
        method: DesktopLoginMethod::Password,
        outcome: AttemptOutcome::UnknownUser,
        local_account: None,
    };
    let elevation = ElevationRecorded {
        device_id: device,
        msp_id: MSP_A,
        technician_id: user,
        account: "idem-admin".into(),
        outcome: AttemptOutcome::Succeeded,
    };
    let ended = ElevationEnded {
        report_id: Uuid::from_u128(70),
        device_id: device,
        elevation_seq: None,
        technician_id: None,
        account: "idem-admin".into(),
        reason: ElevationEnd::Expired,
        ended_at: now,
    };
    for command in [
        C::ChangeOwnPassword {
            user_id: user,
            device_id: device,
            verifier: sealed(),
            replaces_version: 1,
        },
        C::RecordDesktopLogin(login),
        C::RecordElevation(elevation),
        C::RecordElevationEnded {
            record: ended,
            approval: None,
            now,
        },
    ] {
        assert!(may(&agent_c1(), command.action(), c1));
        assert!(
            !may(&agent_c1(), command.action(), c2),
            "only its own tenant"
        );
        assert!(
            !may(&admin_a(), command.action(), c1),
            "people do not forge agent records"
        );
    }
    for command in [
        C::StartOnboarding {
            email: "a@b.example".into(),
            code: "1".into(),
            now,
        },
        C::CompleteOnboarding {
            email: "a@b.example".into(),
            attempt,
        },
        C::EnrollAgent {
            token_digest: "d".into(),
            device_id: device,
            hostname: "h".into(),
            credential_digest: "c".into(),
            now,
        },
    ] {
        assert!(
            may(&Principal::Anonymous, command.action(), c1),
            "{command:?} is authenticated by its code or token"
        );
    }
}

#[test]
fn the_operator_runs_the_platform_and_reads_audits_but_manages_no_tenant() {
    for a in Action::ALL {
        for s in scopes() {
            let expected = matches!(a, Action::Operate | Action::ReadAudit) || open_to_anyone(a, s);
            assert_eq!(may(&Principal::Operator, a, s), expected, "{a:?} {s:?}");
        }
    }
}

#[test]
fn every_command_needs_an_action_its_rightful_caller_has() {
    let user = UserId(Uuid::from_u128(5));
    let msp_commands = [
        MspCommand::SetUserSource {
            source: UserSource::Local,
        },
        MspCommand::AddUser {
            user_id: user,
            email: "a@b.example".into(),
            first_name: None,
            last_name: None,
        },
        MspCommand::RemoveUser { user_id: user },
        MspCommand::MakeAdmin { user_id: user },
        MspCommand::RevokeAdmin { user_id: user },
        MspCommand::GrantAuditor {
            user_id: user,
            tenant_id: C1,
        },
        MspCommand::RevokeAuditor {
            user_id: user,
            tenant_id: C1,
        },
        MspCommand::CreateCustomer { customer_id: C1 },
        MspCommand::DeleteCustomer { customer_id: C1 },
        MspCommand::Delegate {
            user_id: user,
            customer_id: C1,
        },
        MspCommand::RevokeDelegation {
            user_id: user,
            customer_id: C1,
        },
    ];
    for command in msp_commands {
        let a = command.action();
        assert!(may(&admin_a(), a, Scope::Msp(MSP_A)), "{command:?}");
        assert!(!may(&tech_a(), a, Scope::Msp(MSP_A)), "{command:?}");
    }
    // One's own phones: any user of the MSP, on the MSP's host only (the api names the
    // session's user in the command).
    for command in [
        MspCommand::AddAnotherPhone {
            user_id: user,
            code: "1".into(),
            now: chrono::Utc::now(),
        },
        MspCommand::RevokeOwnAuthenticator {
            user_id: user,
            device_id: DeviceId(Uuid::from_u128(6)),
        },
    ] {
        let a = command.action();
        for p in [admin_a(), tech_a(), plain_tech_a()] {
            assert!(may(&p, a, Scope::Msp(MSP_A)), "{command:?}");
            let customer = Scope::Customer {
                tenant: C1,
                msp: MSP_A,
            };
            assert!(!may(&p, a, customer), "{command:?} on a customer host");
        }
        assert!(!may(&agent_c1(), a, Scope::Msp(MSP_A)));
    }
}

#[test]
fn roles_come_from_the_msp_state_so_revocation_is_immediate() {
    let tech = UserId(Uuid::from_u128(2));
    let admin = UserId(Uuid::from_u128(3));
    let mut history: Vec<Event> = msp::decide(
        None,
        MspCommand::SignUp {
            tenant_id: MSP_A,
            name: "acme".into(),
            display_name: "Acme".into(),
            admin_user_id: admin,
            admin_email: "a@acme.example".into(),
        },
    )
    .unwrap()
    .events;
    let run = |history: &mut Vec<Event>, command| {
        let state = MspTenant::replay(history.iter()).unwrap();
        history.extend(msp::decide(state.as_ref(), command).unwrap().events);
        MspTenant::replay(history.iter()).unwrap().unwrap()
    };
    run(
        &mut history,
        MspCommand::AddUser {
            user_id: tech,
            email: "t@acme.example".into(),
            first_name: None,
            last_name: None,
        },
    );
    run(&mut history, MspCommand::CreateCustomer { customer_id: C1 });
    let c1 = Scope::Customer {
        tenant: C1,
        msp: MSP_A,
    };
    let state = run(
        &mut history,
        MspCommand::Delegate {
            user_id: tech,
            customer_id: C1,
        },
    );
    assert!(may(
        &Principal::msp_user(&state, tech).unwrap(),
        Action::ManageDirectory,
        c1
    ));
    let state = run(
        &mut history,
        MspCommand::RevokeDelegation {
            user_id: tech,
            customer_id: C1,
        },
    );
    assert!(!may(
        &Principal::msp_user(&state, tech).unwrap(),
        Action::ManageDirectory,
        c1
    ));
    let state = run(&mut history, MspCommand::MakeAdmin { user_id: tech });
    assert!(may(
        &Principal::msp_user(&state, tech).unwrap(),
        Action::ManageDirectory,
        c1
    ));
    let state = run(&mut history, MspCommand::RevokeAdmin { user_id: tech });
    assert!(!may(
        &Principal::msp_user(&state, tech).unwrap(),
        Action::ManageDirectory,
        c1
    ));
    let state = run(&mut history, MspCommand::RemoveUser { user_id: tech });
    assert_eq!(
        Principal::msp_user(&state, tech),
        None,
        "a removed user is no principal at all"
    );
}

/// A sealed value, for commands that carry one (what it seals does not matter here).
fn sealed() -> Sealed {
    Sealed {
        key_version: 1,
        nonce: [0; 24],
        ciphertext: vec![1, 2, 3],
    }
}
