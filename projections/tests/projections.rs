//! The read side against both databases: what each read model shows, the change feed, tenant
//! deletion, quarantine, crash recovery between rows and checkpoint, and rebuilds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{LONG, Store, World};
use domain::crypto::Sealed;
use domain::event::*;
use domain::ids::{DeviceId, TenantId, UserId};
use eventlog::EventLog;
use projections::workload::Workload;
use projections::{Change, FaultPoint, Faults, Options, Projection, Projections, ReadModels};
use uuid::Uuid;

fn id() -> Uuid {
    Uuid::now_v7()
}

fn sealed(byte: u8) -> Sealed {
    Sealed {
        key_version: 1,
        nonce: [byte; 24],
        ciphertext: vec![byte; 48],
    }
}

/// An MSP with its admin and two technicians (one onboarded).
struct Msp {
    id: TenantId,
    admin: UserId,
    tech1: UserId,
    tech2: UserId,
}

async fn sign_up(world: &World, name: &str) -> Msp {
    let msp = Msp {
        id: TenantId(id()),
        admin: UserId(id()),
        tech1: UserId(id()),
        tech2: UserId(id()),
    };
    world
        .append(
            msp.id,
            vec![
                Event::MspTenantCreated(MspTenantCreated {
                    tenant_id: msp.id,
                    name: name.into(),
                    display_name: format!("{name} IT"),
                    host_label: name.into(),
                    admin_user_id: msp.admin,
                    admin_email: format!("admin@{name}.example"),
                }),
                Event::UserSourceSet(UserSourceSet {
                    source: UserSource::Local,
                }),
                Event::MspUserAdded(MspUserAdded {
                    user_id: msp.tech1,
                    email: format!("t1@{name}.example"),
                    first_name: Some("Tina".into()),
                    last_name: None,
                }),
                Event::MspUserAdded(MspUserAdded {
                    user_id: msp.tech2,
                    email: format!("t2@{name}.example"),
                    first_name: None,
                    last_name: None,
                }),
                Event::OnboardingCodeIssued(OnboardingCodeIssued {
                    user_id: msp.tech1,
                    code_digest: "ab".repeat(32),
                    expires_at: common::at(),
                }),
                Event::DeviceEnrolled(DeviceEnrolled {
                    user_id: msp.tech1,
                    device_id: DeviceId(id()),
                    device_name: "Tina's phone".into(),
                    public_key: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
                }),
            ],
        )
        .await;
    msp
}

async fn create_customer(world: &World, msp: &Msp, msp_name: &str, name: &str) -> (TenantId, u64) {
    let customer = TenantId(id());
    let host_label = format!("{name}-{msp_name}");
    let position = world
        .commit(
            vec![
                (
                    msp.id,
                    vec![Event::CustomerTenantCreated(CustomerTenantCreated {
                        customer_id: customer,
                    })],
                ),
                (
                    customer,
                    vec![Event::CustomerTenantOpened(CustomerTenantOpened {
                        tenant_id: customer,
                        msp_id: msp.id,
                        name: name.into(),
                        display_name: format!("{name} Ltd"),
                        host_label,
                    })],
                ),
            ],
            None,
        )
        .await;
    (customer, position)
}

/// Delegates the MSP's first technician to `customer` and makes the second an admin.
async fn delegate_and_make_admin(world: &World, msp: &Msp, customer: TenantId) -> u64 {
    world
        .append(
            msp.id,
            vec![
                Event::TechnicianDelegated(TechnicianDelegated {
                    user_id: msp.tech1,
                    customer_id: customer,
                }),
                Event::AdminGranted(AdminGranted { user_id: msp.tech2 }),
            ],
        )
        .await
}

fn user_created(user: UserId, username: &str, personal: Option<Sealed>) -> Event {
    Event::DirectoryUserCreated(DirectoryUserCreated {
        user_id: user,
        first_name: "Billy".into(),
        last_name: username.to_uppercase(),
        username: username.into(),
        email: format!("{username}@contoso.example"),
        personal_email: personal,
    })
}

fn password(user: UserId, version: u32) -> Event {
    Event::PasswordSet(PasswordSet {
        user_id: user,
        verifier: sealed(version as u8),
        password_version: version,
        must_change: false,
    })
}

/// A projector on `store` over a new world in which acme signed up and created contoso.
async fn acme_and_contoso(
    store: &Store,
) -> (
    World,
    Projections<eventlog::RocksLog>,
    ReadModels,
    Msp,
    TenantId,
) {
    let world = World::new();
    let projections = world.project(store, Options::default()).await;
    let read = projections.read_models().clone();
    let acme = sign_up(&world, "acme").await;
    let (contoso, _) = create_customer(&world, &acme, "acme", "contoso").await;
    (world, projections, read, acme, contoso)
}

async fn a_temporary_password_shows_until_its_user_changes_it(store: &Store) {
    let (world, projections, read, _, contoso) = acme_and_contoso(store).await;
    let billy = UserId(id());
    let temporary = Event::PasswordSet(PasswordSet {
        user_id: billy,
        verifier: sealed(1),
        password_version: 1,
        must_change: true,
    });
    let position = world
        .append(
            contoso,
            vec![
                Event::MasterKeyEnabled(MasterKeyEnabled { key_version: 1 }),
                user_created(billy, "billy", None),
                temporary,
            ],
        )
        .await;
    assert!(projections.wait_for(position, LONG).await);
    let row = read.user(contoso.0, billy.0).await.unwrap().unwrap();
    assert!(row.has_password && row.must_change_password);
    let cursor = read
        .changes(contoso.0, None, 100)
        .await
        .unwrap()
        .unwrap()
        .next;

    let position = world
        .append(
            contoso,
            vec![Event::PasswordChanged(PasswordChanged {
                user_id: billy,
                device_id: DeviceId(id()),
                verifier: sealed(2),
                password_version: 2,
            })],
        )
        .await;
    assert!(projections.wait_for(position, LONG).await);
    let row = read.user(contoso.0, billy.0).await.unwrap().unwrap();
    assert!(row.has_password && !row.must_change_password);
    assert_eq!(row.password_version, 2);
    // Agents see the new version, and drop what they cached for the old one.
    let changes = read
        .changes(contoso.0, Some(cursor), 100)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            &changes.changes[..],
            [Change::UserUpserted { user_id, password_version: 2, .. }] if *user_id == billy.0
        ),
        "{:?}",
        changes.changes
    );
    // The next reset without the demand clears it too.
    let position = world.append(contoso, vec![password(billy, 3)]).await;
    assert!(projections.wait_for(position, LONG).await);
    let row = read.user(contoso.0, billy.0).await.unwrap().unwrap();
    assert!(!row.must_change_password);
    projections.shutdown().await;
}

async fn read_models_follow_the_quick_start(store: &Store) {
    let world = World::new();
    let projections = world.project(store, Options::default()).await;
    let read = projections.read_models().clone();

    let acme = sign_up(&world, "acme").await;
    let (contoso, _) = create_customer(&world, &acme, "acme", "contoso").await;
    let (fabrikam, _) = create_customer(&world, &acme, "acme", "fabrikam").await;
    delegate_and_make_admin(&world, &acme, contoso).await;
    let (billy, jane, carl) = (UserId(id()), UserId(id()), UserId(id()));
    let position = world
        .append(
            contoso,
            vec![
                Event::MasterKeyEnabled(MasterKeyEnabled { key_version: 1 }),
                Event::DesktopLoginConfigured(DesktopLoginConfigured {
                    enabled: true,
                    method: DesktopLoginMethod::Password,
                }),
                user_created(billy, "billy", Some(sealed(9))),
                password(billy, 1),
                user_created(jane, "jane", None),
                user_created(carl, "carl", None),
                password(carl, 1),
                Event::DirectoryUserDisabled(DirectoryUserDisabled { user_id: carl }),
            ],
        )
        .await;
    assert!(projections.wait_for(position, LONG).await);

    let customers = read.customers_of(acme.id.0).await.unwrap();
    let summary: Vec<_> = customers
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.host_label.as_str(),
                c.active_users,
                c.technicians,
            )
        })
        .collect();
    // contoso: billy is active (jane has no password, carl is disabled); reached by the
    // admin, tech2 (made admin) and tech1 (delegated).
    assert_eq!(
        summary,
        vec![
            ("contoso", "contoso-acme", 1, 3),
            ("fabrikam", "fabrikam-acme", 0, 2)
        ]
    );
    let apps = |user: UserId| {
        let read = read.clone();
        async move {
            read.apps_of(user.0)
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(apps(acme.tech1).await, vec!["contoso"]);
    assert_eq!(apps(acme.tech2).await, vec!["contoso", "fabrikam"]);
    assert_eq!(apps(acme.admin).await, vec!["contoso", "fabrikam"]);

    let settings = read.tenant_by_host("contoso-acme").await.unwrap().unwrap();
    assert_eq!(settings.id, contoso.0);
    assert_eq!(settings.kind, "customer");
    assert_eq!(settings.msp_id, Some(acme.id.0));
    assert_eq!(settings.master_key_version, Some(1));
    assert!(settings.desktop_login_enabled);
    assert_eq!(settings.desktop_login_method.as_deref(), Some("password"));
    assert_eq!(settings.last_seq, 9);
    assert!(read.tenant_by_host("nobody").await.unwrap().is_none());
    let msp_row = read.tenant_by_host("acme").await.unwrap().unwrap();
    assert_eq!(
        (msp_row.kind.as_str(), msp_row.user_source.as_str()),
        ("msp", "local")
    );

    let users = read.users_of(contoso.0).await.unwrap();
    let names: Vec<_> = users.iter().map(|u| u.username.clone().unwrap()).collect();
    assert_eq!(names, vec!["billy", "jane", "carl"]);
    let b = read.user(contoso.0, billy.0).await.unwrap().unwrap();
    assert!(b.has_password && b.has_personal_email && b.enabled);
    assert_eq!(b.password_version, 1);
    let msp_users = read.users_of(acme.id.0).await.unwrap();
    let admin = msp_users.iter().find(|u| u.id == acme.admin.0).unwrap();
    let tina = msp_users.iter().find(|u| u.id == acme.tech1.0).unwrap();
    assert!(admin.is_admin && !tina.is_admin);
    assert_eq!(tina.devices, 1);
    assert_eq!(read.devices_of(acme.id.0).await.unwrap().len(), 1);
    // Nothing of one tenant shows under another.
    assert!(read.users_of(fabrikam.0).await.unwrap().is_empty());
    assert!(read.user(fabrikam.0, billy.0).await.unwrap().is_none());

    // Revocations take effect in the read models.
    let position = world
        .append(
            acme.id,
            vec![
                Event::DelegationRevoked(DelegationRevoked {
                    user_id: acme.tech1,
                    customer_id: contoso,
                }),
                Event::AdminRevoked(AdminRevoked {
                    user_id: acme.tech2,
                }),
            ],
        )
        .await;
    assert!(projections.wait_for(position, LONG).await);
    assert!(apps(acme.tech1).await.is_empty());
    assert!(apps(acme.tech2).await.is_empty());
    let technicians: Vec<_> = read
        .customers_of(acme.id.0)
        .await
        .unwrap()
        .iter()
        .map(|c| c.technicians)
        .collect();
    assert_eq!(technicians, vec![1, 1]);

    // The timeline, newest first, with sealed values and digests redacted.
    let timeline = read.timeline(contoso.0, None, 3).await.unwrap();
    let types: Vec<_> = timeline.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "DirectoryUserDisabled",
            "PasswordSet",
            "DirectoryUserCreated"
        ]
    );
    assert_eq!(timeline[1].details["verifier"], "[redacted]");
    assert_eq!(timeline[1].details["password_version"], 1);
    let older = read
        .timeline(contoso.0, Some(timeline[2].seq), 100)
        .await
        .unwrap();
    assert_eq!(older.len(), 6);
    let msp_timeline = read.timeline(acme.id.0, None, 100).await.unwrap();
    let code = msp_timeline
        .iter()
        .find(|e| e.event_type == "OnboardingCodeIssued")
        .unwrap();
    assert_eq!(code.details["code_digest"], "[redacted]");

    // No sealed value or digest anywhere in any read model.
    let dump = read.dump().await.unwrap();
    assert!(dump.len() > 20);
    for line in &dump {
        assert!(!line.contains("sealed:"), "{line}");
        assert!(!line.contains(&"ab".repeat(32)), "{line}");
    }
    let status = projections.status();
    assert_eq!(status.lag(), 0);
    assert!(status.is_ready(0));
    projections.shutdown().await;
}

async fn change_feed_reports_every_change_once(store: &Store) {
    let (world, projections, read, _, contoso) = acme_and_contoso(store).await;
    let (billy, jane) = (UserId(id()), UserId(id()));
    let position = world
        .append(
            contoso,
            vec![
                Event::DesktopLoginConfigured(DesktopLoginConfigured {
                    enabled: true,
                    method: DesktopLoginMethod::Password,
                }),
                user_created(billy, "billy", None),
                password(billy, 1),
                user_created(jane, "jane", None),
            ],
        )
        .await;
    assert!(projections.wait_for(position, LONG).await);

    let snapshot = read.changes(contoso.0, None, 100).await.unwrap().unwrap();
    assert!(snapshot.snapshot);
    assert_eq!(snapshot.next, 5);
    assert_eq!(
        snapshot.changes,
        vec![
            Change::DesktopLogin {
                seq: 2,
                enabled: true,
                method: Some("password".into())
            },
            Change::UserUpserted {
                seq: 4,
                user_id: billy.0,
                username: "billy".into(),
                first_name: "Billy".into(),
                last_name: "BILLY".into(),
                enabled: true,
                login_method: "password".into(),
                has_password: true,
                password_version: 1
            },
            Change::UserUpserted {
                seq: 5,
                user_id: jane.0,
                username: "jane".into(),
                first_name: "Billy".into(),
                last_name: "JANE".into(),
                enabled: true,
                login_method: "password".into(),
                has_password: false,
                password_version: 0
            },
        ]
    );
    let idle = read
        .changes(contoso.0, Some(5), 100)
        .await
        .unwrap()
        .unwrap();
    assert!(!idle.snapshot && idle.changes.is_empty());
    assert_eq!(idle.next, 5);

    let position = world
        .append(
            contoso,
            vec![
                password(billy, 2),
                Event::DirectoryUserDeleted(DirectoryUserDeleted { user_id: jane }),
                Event::BrandingUpdated(BrandingUpdated {
                    version: 1,
                    background: None,
                    logo: None,
                    text: Some("Welcome".into()),
                }),
                Event::SharedAccountConfigured(SharedAccountConfigured {
                    username: "idem-admin".into(),
                    elevation_minutes: 20,
                }),
                // Recorded attempts do not change the directory, but move the cursor.
                Event::DesktopLoginRecorded(DesktopLoginRecorded {
                    device_id: DeviceId(id()),
                    username: "billy".into(),
                    user_id: Some(billy),
                    method: DesktopLoginMethod::Password,
                    outcome: AttemptOutcome::Succeeded,
                    local_account: Some(LocalAccountAction::Create),
                }),
            ],
        )
        .await;
    assert!(projections.wait_for(position, LONG).await);
    let changes = read
        .changes(contoso.0, Some(5), 100)
        .await
        .unwrap()
        .unwrap();
    let seqs: Vec<_> = changes.changes.iter().map(Change::seq).collect();
    assert_eq!(seqs, vec![6, 7, 8, 9]);
    assert_eq!(changes.next, 10);
    assert!(matches!(
        &changes.changes[0],
        Change::UserUpserted {
            password_version: 2,
            ..
        }
    ));
    assert_eq!(
        changes.changes[1],
        Change::UserRemoved {
            seq: 7,
            user_id: jane.0,
            username: "jane".into()
        }
    );
    assert_eq!(changes.changes[2], Change::Branding { seq: 8, version: 1 });
    assert_eq!(
        changes.changes[3],
        Change::SharedAccount {
            seq: 9,
            username: "idem-admin".into(),
            elevation_minutes: 20
        }
    );
    // A snapshot holds no removed user.
    let snapshot = read.changes(contoso.0, None, 100).await.unwrap().unwrap();
    assert!(
        snapshot
            .changes
            .iter()
            .all(|c| !matches!(c, Change::UserRemoved { .. }))
    );
    assert_eq!(snapshot.next, 10);
    // A cursor from the future (a restored server, a confused agent) gets a snapshot.
    let future = read
        .changes(contoso.0, Some(99), 100)
        .await
        .unwrap()
        .unwrap();
    assert!(future.snapshot);
    assert_eq!(future, snapshot);
    assert!(
        read.changes(Uuid::now_v7(), None, 10)
            .await
            .unwrap()
            .is_none()
    );

    // Paging: every user reported once, cursors strictly increasing.
    let users: Vec<UserId> = (0..10).map(|_| UserId(id())).collect();
    let events = users
        .iter()
        .enumerate()
        .map(|(i, u)| user_created(*u, &format!("u{i}"), None))
        .collect();
    let position = world.append(contoso, events).await;
    assert!(projections.wait_for(position, LONG).await);
    let mut cursor = 10;
    let mut seen = Vec::new();
    loop {
        let page = read
            .changes(contoso.0, Some(cursor), 3)
            .await
            .unwrap()
            .unwrap();
        assert!(page.changes.len() <= 3);
        if page.changes.is_empty() {
            assert_eq!(page.next, cursor);
            break;
        }
        assert!(page.next > cursor);
        cursor = page.next;
        for change in page.changes {
            if let Change::UserUpserted { user_id, .. } = change {
                seen.push(user_id);
            }
        }
    }
    assert_eq!(seen, users.iter().map(|u| u.0).collect::<Vec<_>>());
    assert_eq!(cursor, 20);
    projections.shutdown().await;
}

async fn deleting_a_tenant_leaves_no_row_of_it(store: &Store) {
    let (world, projections, read, acme, contoso) = acme_and_contoso(store).await;
    let (keep, _) = create_customer(&world, &acme, "acme", "keep").await;
    let billy = UserId(id());
    let token = Uuid::now_v7();
    world
        .append(
            contoso,
            vec![
                Event::MasterKeyEnabled(MasterKeyEnabled { key_version: 1 }),
                user_created(billy, "billy", Some(sealed(3))),
                password(billy, 1),
                Event::PasswordlessEnabled(PasswordlessEnabled { user_id: billy }),
                Event::DeviceEnrolled(DeviceEnrolled {
                    user_id: billy,
                    device_id: DeviceId(id()),
                    device_name: "billy's phone".into(),
                    public_key: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
                }),
                Event::EnrollmentTokenIssued(EnrollmentTokenIssued {
                    token_id: token,
                    token_digest: "cd".repeat(32),
                    expires_at: common::at(),
                }),
                Event::AgentEnrolled(AgentEnrolled {
                    device_id: DeviceId(id()),
                    token_id: token,
                    hostname: "ws-01".into(),
                    credential_digest: "ef".repeat(32),
                }),
            ],
        )
        .await;
    world
        .append(
            acme.id,
            vec![
                Event::TechnicianDelegated(TechnicianDelegated {
                    user_id: acme.tech1,
                    customer_id: contoso,
                }),
                Event::AuditorGranted(AuditorGranted {
                    user_id: acme.tech2,
                    tenant_id: contoso,
                }),
            ],
        )
        .await;
    let position = world
        .append(keep, vec![user_created(UserId(id()), "kept", None)])
        .await;
    assert!(projections.wait_for(position, LONG).await);
    let before = read.dump().await.unwrap();
    let mentions = |dump: &[String]| {
        dump.iter()
            .filter(|line| line.contains(&contoso.0.to_string()))
            .count()
    };
    assert!(mentions(&before) > 10, "{before:#?}");
    let devices = read.devices_of(contoso.0).await.unwrap();
    assert_eq!(devices.len(), 2);

    let position = world
        .commit(
            vec![(
                acme.id,
                vec![Event::CustomerTenantDeleted(CustomerTenantDeleted {
                    customer_id: contoso,
                })],
            )],
            Some(contoso),
        )
        .await;
    assert!(projections.wait_for(position, LONG).await);
    let after = read.dump().await.unwrap();
    // Only the MSP's own history names it (its log is append-only): no row of its own.
    let left: Vec<_> = after
        .iter()
        .filter(|line| line.contains(&contoso.0.to_string()))
        .collect();
    assert!(
        left.iter()
            .all(|line| line.starts_with(&format!("timeline: {} |", acme.id.0))),
        "{left:#?}"
    );
    assert!(
        left.iter()
            .any(|line| line.contains("CustomerTenantDeleted"))
    );
    assert!(read.tenant_by_host("contoso-acme").await.unwrap().is_none());
    assert!(read.timeline(contoso.0, None, 10).await.unwrap().is_empty());
    let names: Vec<_> = read
        .customers_of(acme.id.0)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, vec!["keep"]);
    assert_eq!(read.users_of(keep.0).await.unwrap().len(), 1);

    // The name is free again, and a rebuild from the log gives the same rows.
    let (again, _) = create_customer(&world, &acme, "acme", "contoso").await;
    assert!(projections.wait_for(world.head(), LONG).await);
    let row = read.tenant_by_host("contoso-acme").await.unwrap().unwrap();
    assert_eq!(row.id, again.0);
    let incremental = read.dump().await.unwrap();
    assert_eq!(incremental, world.reference_dump(store).await);
    projections.shutdown().await;
}

async fn a_failing_tenant_is_quarantined_and_others_go_on(store: &Store) {
    let world = World::new();
    let acme = sign_up(&world, "acme").await;
    let (bad, _) = create_customer(&world, &acme, "acme", "bad").await;
    let (good, _) = create_customer(&world, &acme, "acme", "good").await;
    let (flaky, _) = create_customer(&world, &acme, "acme", "flaky").await;
    // An update of a user the tenant never had: a bug the projection must not spread.
    world
        .append(
            bad,
            vec![Event::DirectoryUserUpdated(DirectoryUserUpdated {
                user_id: UserId(id()),
                first_name: "No".into(),
                last_name: "Body".into(),
                email: "nobody@bad.example".into(),
                personal_email: None,
            })],
        )
        .await;
    world.raw(good, "EventFromTheFuture", "{\"x\":1}").await;
    world
        .append(bad, vec![user_created(UserId(id()), "after", None)])
        .await;
    world
        .append(flaky, vec![user_created(UserId(id()), "flaky1", None)])
        .await;
    world
        .append(flaky, vec![user_created(UserId(id()), "flaky2", None)])
        .await;
    world
        .append(good, vec![user_created(UserId(id()), "fine", None)])
        .await;
    // A second MSP with a host label taken (the log's reservations forbid it; a projection
    // must survive it anyway): caught only when rows are written back in bulk.
    let twin = sign_up(&world, "acme").await;

    // flaky's seq 2 fails for a while (as a transient failure, or a bug fixed by an upgrade).
    let failing = Arc::new(AtomicBool::new(true));
    let still_failing = failing.clone();
    let options = Options {
        batch_size: 4,
        faults: Faults::new(move |point| {
            still_failing.load(Ordering::SeqCst)
                && point
                    == FaultPoint::Apply {
                        projection: Projection::Directory,
                        tenant: flaky.0,
                        seq: 2,
                    }
        }),
        ..Options::default()
    };
    let projections = world.project(store, options).await;
    assert!(projections.wait_for(world.head(), LONG).await);
    let status = projections.status();
    // Readiness reports the quarantines but stays up for every other tenant.
    assert!(status.is_ready(u64::MAX));
    assert_eq!(status.quarantined().count(), 4);
    let directory = &status.projectors[0];
    assert_eq!(directory.projection, "directory");
    let quarantined: Vec<_> = directory
        .quarantined
        .iter()
        .map(|q| (q.tenant, q.seq, q.event_type.as_str()))
        .collect();
    assert_eq!(
        quarantined,
        vec![
            (bad.0, 2, "DirectoryUserUpdated"),
            (good.0, 2, "EventFromTheFuture"),
            (flaky.0, 2, "DirectoryUserCreated"),
            (twin.id.0, 1, "MspTenantCreated"),
        ]
    );
    assert!(directory.quarantined[0].error.contains("unknown user"));
    assert!(
        directory.quarantined[1]
            .error
            .contains("unknown event type")
    );
    // The audit timeline takes every event, including one this build cannot decode.
    assert!(status.projectors[1].quarantined.is_empty());
    let read = projections.read_models().clone();
    let timeline = read.timeline(good.0, None, 10).await.unwrap();
    assert_eq!(timeline[1].event_type, "EventFromTheFuture");
    // Quarantined tenants stop where they failed; the MSP's projection goes on.
    assert!(read.users_of(bad.0).await.unwrap().is_empty());
    assert!(read.users_of(good.0).await.unwrap().is_empty());
    assert!(read.users_of(flaky.0).await.unwrap().is_empty());
    assert_eq!(read.customers_of(acme.id.0).await.unwrap().len(), 3);

    // Retried online while the fault lasts: every tenant stays quarantined.
    assert_eq!(
        projections.retry_quarantined().await.unwrap(),
        vec![(Projection::Directory, 4), (Projection::Audit, 0)]
    );
    // The fault gone, an online retry lets flaky catch up; the others fail again,
    // deterministically, and stay quarantined.
    failing.store(false, Ordering::SeqCst);
    assert_eq!(
        projections.retry_quarantined().await.unwrap(),
        vec![(Projection::Directory, 3), (Projection::Audit, 0)]
    );
    let tenants: Vec<_> = projections.status().projectors[0]
        .quarantined
        .iter()
        .map(|q| q.tenant)
        .collect();
    assert_eq!(tenants, vec![bad.0, good.0, twin.id.0]);
    assert_eq!(read.users_of(flaky.0).await.unwrap().len(), 2);
    projections.shutdown().await;

    // After a restart they are retried again, with the same outcome.
    let projections = world.project(store, Options::default()).await;
    assert!(projections.wait_for(world.head(), LONG).await);
    let tenants: Vec<_> = projections.status().projectors[0]
        .quarantined
        .iter()
        .map(|q| q.tenant)
        .collect();
    assert_eq!(tenants, vec![bad.0, good.0, twin.id.0]);
    assert_eq!(read_acme_twin_rows(&projections, twin.id).await, 0);
    let read = projections.read_models().clone();
    let flaky_users: Vec<_> = read
        .users_of(flaky.0)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username.unwrap())
        .collect();
    assert_eq!(flaky_users, vec!["flaky1", "flaky2"]);
    assert_eq!(read.tenant(flaky.0).await.unwrap().unwrap().last_seq, 3);
    // Events after a retried tenant's quarantine flow as usual.
    let position = world
        .append(flaky, vec![user_created(UserId(id()), "flaky3", None)])
        .await;
    assert!(projections.wait_for(position, LONG).await);
    assert_eq!(read.users_of(flaky.0).await.unwrap().len(), 3);
    projections.shutdown().await;
}

async fn read_acme_twin_rows(
    projections: &projections::Projections<eventlog::RocksLog>,
    twin: TenantId,
) -> usize {
    let read = projections.read_models();
    read.users_of(twin.0).await.unwrap().len()
        + usize::from(read.tenant(twin.0).await.unwrap().is_some())
}

async fn one_batch_sees_its_own_changes_across_a_flush(store: &Store) {
    // One commit, so one batch: a delegation, a deletion (which writes the batch's changes
    // out midway), then the delegation's revocation and an admin grant that must see the
    // customers created before it in the same batch.
    let world = World::new();
    let acme = sign_up(&world, "acme").await;
    let (gone, _) = create_customer(&world, &acme, "acme", "gone").await;
    let (stays, _) = create_customer(&world, &acme, "acme", "stays").await;
    let fresh = TenantId(id());
    world
        .commit(
            vec![
                (
                    acme.id,
                    vec![
                        Event::TechnicianDelegated(TechnicianDelegated {
                            user_id: acme.tech1,
                            customer_id: stays,
                        }),
                        Event::AuditorGranted(AuditorGranted {
                            user_id: acme.tech1,
                            tenant_id: stays,
                        }),
                        Event::CustomerTenantDeleted(CustomerTenantDeleted { customer_id: gone }),
                        Event::DelegationRevoked(DelegationRevoked {
                            user_id: acme.tech1,
                            customer_id: stays,
                        }),
                        Event::CustomerTenantCreated(CustomerTenantCreated { customer_id: fresh }),
                        Event::AdminGranted(AdminGranted {
                            user_id: acme.tech2,
                        }),
                        Event::MspUserRemoved(MspUserRemoved {
                            user_id: acme.tech1,
                        }),
                    ],
                ),
                (
                    fresh,
                    vec![Event::CustomerTenantOpened(CustomerTenantOpened {
                        tenant_id: fresh,
                        msp_id: acme.id,
                        name: "fresh".into(),
                        display_name: "Fresh".into(),
                        host_label: "fresh-acme".into(),
                    })],
                ),
            ],
            Some(gone),
        )
        .await;
    let projections = world.project(store, Options::default()).await;
    assert!(projections.wait_for(world.head(), LONG).await);
    let status = projections.status();
    assert!(status.is_ready(0), "{status:#?}");
    let read = projections.read_models();
    let mut tech2: Vec<_> = read
        .access_of(acme.tech2.0)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.tenant_id, a.via))
        .collect();
    tech2.sort();
    let mut expected = vec![(stays.0, "admin".to_owned()), (fresh.0, "admin".to_owned())];
    expected.sort();
    assert_eq!(tech2, expected);
    assert!(read.access_of(acme.tech1.0).await.unwrap().is_empty());
    assert!(read.devices_of(acme.id.0).await.unwrap().is_empty());
    assert!(read.user(acme.id.0, acme.tech1.0).await.unwrap().is_none());
    let dump = read.dump().await.unwrap();
    projections.shutdown().await;
    assert_eq!(dump, world.reference_dump(store).await);
}

/// Checks every customer's counts, as the customers list reports them, against its rows:
/// enabled users with a password or a device; distinct users with an admin or a delegation
/// row.
async fn assert_counts_match_rows(world: &World, read: &projections::ReadModels) {
    let mut msps = Vec::new();
    let mut from = 1;
    loop {
        let page = eventlog::EventLog::read_all(&*world.log, from, 1000)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        msps.extend(
            page.iter()
                .filter(|e| e.event_type == "MspTenantCreated")
                .map(|e| e.stream.0),
        );
    }
    let mut checked = 0;
    for msp in msps {
        for customer in read.customers_of(msp).await.unwrap() {
            let active = read
                .users_of(customer.id)
                .await
                .unwrap()
                .iter()
                .filter(|u| u.enabled && (u.has_password || u.devices > 0))
                .count() as u64;
            let technicians: std::collections::HashSet<_> = read
                .access_to(customer.id)
                .await
                .unwrap()
                .into_iter()
                .filter(|a| a.via == "admin" || a.via == "delegation")
                .map(|a| a.user_id)
                .collect();
            assert_eq!(
                (customer.active_users, customer.technicians),
                (active, technicians.len() as u64),
                "{}",
                customer.name
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no customer to check");
}

/// Gives every test the same history, with concurrency in the writes.
async fn write_workload(world: &World, events: usize, seed: u64) {
    let commits = Workload::new(seed).commits(events, 40);
    for commit in commits {
        eventlog::EventLog::commit(&*world.log, commit)
            .await
            .unwrap();
    }
}

async fn a_crash_between_rows_and_checkpoint_loses_and_repeats_nothing(store: &Store) {
    let world = World::new();
    write_workload(&world, 3000, 7).await;
    let head = world.head();
    let fired = Arc::new(AtomicBool::new(false));
    let fault = fired.clone();
    let options = Options {
        batch_size: 97,
        faults: Faults::new(move |point| match point {
            FaultPoint::BeforeCheckpoint {
                projection: Projection::Directory,
                position,
            } if position > head / 2 => !fault.swap(true, Ordering::SeqCst),
            _ => false,
        }),
        ..Options::default()
    };
    let projections = world.project(store, options).await;
    let mut directory = projections.watch(Projection::Directory).unwrap();
    let stopped = directory.wait_for(|s| s.stopped).await.unwrap().clone();
    assert!(fired.load(Ordering::SeqCst));
    assert!(stopped.checkpoint < head, "{stopped:?}");
    assert!(stopped.failure.unwrap().contains("injected fault"));
    // A stopped projector never reaches the head: read-your-writes says so.
    assert!(!projections.wait_for(head, LONG).await);
    projections.shutdown().await;

    // On restart the batch that never committed is applied once: a repeat would break the
    // timeline's primary key or double counters, a loss would show in the comparison.
    let projections = world.project(store, Options::default()).await;
    assert!(projections.wait_for(head, LONG).await);
    let recovered = projections.read_models().dump().await.unwrap();
    assert_counts_match_rows(&world, projections.read_models()).await;
    projections.shutdown().await;
    assert_eq!(recovered, world.reference_dump(store).await);
}

async fn a_rebuild_serves_the_old_generation_until_it_has_caught_up(store: &Store) {
    let world = World::new();
    write_workload(&world, 1500, 11).await;
    // Incremental projection in small batches, while more is written.
    let projections = world
        .project(
            store,
            Options {
                batch_size: 37,
                ..Options::default()
            },
        )
        .await;
    let more = Workload::new(12).commits(1500, 5);
    for commit in more {
        eventlog::EventLog::commit(&*world.log, commit)
            .await
            .unwrap();
    }
    assert!(projections.wait_for(world.head(), LONG).await);
    let incremental = projections.read_models().dump().await.unwrap();
    projections.shutdown().await;

    // Pause the rebuild at its first event to look at what is served meanwhile.
    let armed = Arc::new(AtomicBool::new(false));
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let gate = armed.clone();
    let options = Options {
        batch_size: 500,
        faults: Faults::new(move |point| {
            if matches!(
                point,
                FaultPoint::Apply {
                    projection: Projection::Directory,
                    ..
                }
            ) && gate.swap(false, Ordering::SeqCst)
            {
                entered_tx.send(()).unwrap();
                // The projector's task waits here; block_in_place hands this worker's other
                // tasks to the rest of the runtime meanwhile, so nothing else waits with it.
                tokio::task::block_in_place(|| release_rx.lock().unwrap().recv().unwrap());
            }
            false
        }),
        ..Options::default()
    };
    let projections = Arc::new(world.project(store, options).await);
    assert!(projections.wait_for(world.head(), LONG).await);
    assert_eq!(projections.status().projectors[0].generation, 1);
    armed.store(true, Ordering::SeqCst);
    let rebuilding = {
        let projections = projections.clone();
        tokio::spawn(async move { projections.rebuild(Projection::Directory).await })
    };
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(LONG).unwrap())
        .await
        .unwrap();
    let status = projections.status();
    assert_eq!(status.projectors[0].generation, 1);
    assert_eq!(status.projectors[0].rebuilding.unwrap().generation, 2);
    assert_eq!(projections.read_models().dump().await.unwrap(), incremental);
    release_tx.send(()).unwrap();
    assert_eq!(rebuilding.await.unwrap().unwrap(), 2);
    assert_eq!(projections.rebuild(Projection::Audit).await.unwrap(), 2);
    let status = projections.status();
    assert!(
        status
            .projectors
            .iter()
            .all(|p| p.generation == 2 && p.rebuilding.is_none())
    );
    assert_eq!(projections.read_models().dump().await.unwrap(), incremental);
    if let projections::Backend::Sqlite { dir } = &store.backend {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.ends_with(".sqlite"))
            .collect();
        files.sort();
        assert_eq!(files, vec!["audit.g2.sqlite", "directory.g2.sqlite"]);
    }

    // The new generation goes on with new events, and is what a restart serves.
    let position = world
        .append(
            TenantId(id()),
            vec![Event::MspTenantCreated(MspTenantCreated {
                tenant_id: TenantId(id()),
                name: "late".into(),
                display_name: "Late".into(),
                host_label: "late".into(),
                admin_user_id: UserId(id()),
                admin_email: "a@late.example".into(),
            })],
        )
        .await;
    assert!(projections.wait_for(position, LONG).await);
    assert!(
        projections
            .read_models()
            .tenant_by_host("late")
            .await
            .unwrap()
            .is_some()
    );
    let projections = Arc::into_inner(projections).unwrap();
    projections.shutdown().await;
    let projections = world.project(store, Options::default()).await;
    assert_eq!(projections.status().projectors[0].generation, 2);
    assert!(
        projections
            .read_models()
            .tenant_by_host("late")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        projections.read_models().dump().await.unwrap(),
        world.reference_dump(store).await
    );
    projections.shutdown().await;
}

/// The customers list's counts follow every change to a customer's users or to who reaches
/// it: disabling, enabling, a first password, a phone enrolled by a passwordless user, a
/// removal, and a technician removed from the MSP (whose access rows go by a statement of
/// their own), alone or with other changes in one batch.
async fn customer_counts_follow_users_and_access(store: &Store) {
    let (world, projections, read, acme, contoso) = acme_and_contoso(store).await;
    let (billy, jane) = (UserId(id()), UserId(id()));
    delegate_and_make_admin(&world, &acme, contoso).await;
    world
        .append(
            contoso,
            vec![
                Event::MasterKeyEnabled(MasterKeyEnabled { key_version: 1 }),
                user_created(billy, "billy", None),
                password(billy, 1),
                user_created(jane, "jane", None),
            ],
        )
        .await;
    let counts = |position: u64| {
        let (projections, read) = (&projections, read.clone());
        async move {
            assert!(projections.wait_for(position, LONG).await);
            let rows = read.customers_of(acme.id.0).await.unwrap();
            let row = read
                .customer_of(acme.id.0, "contoso")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(rows, vec![row.clone()]);
            (row.active_users, row.technicians)
        }
    };
    // Billy has a password, Jane nothing yet; the admin, tech2 (admin) and tech1 (delegated).
    assert_eq!(counts(world.head()).await, (1, 3));
    let step = |tenant: TenantId, event: Event| world.append(tenant, vec![event]);
    let disabled = Event::DirectoryUserDisabled(DirectoryUserDisabled { user_id: billy });
    assert_eq!(counts(step(contoso, disabled).await).await, (0, 3));
    let enabled = Event::DirectoryUserEnabled(DirectoryUserEnabled { user_id: billy });
    assert_eq!(counts(step(contoso, enabled).await).await, (1, 3));
    assert_eq!(counts(step(contoso, password(jane, 1)).await).await, (2, 3));
    let removed = Event::MspUserRemoved(MspUserRemoved {
        user_id: acme.tech1,
    });
    assert_eq!(counts(step(acme.id, removed).await).await, (2, 2));
    // Removed together with another change in one batch: counted after both.
    let position = world
        .append(
            acme.id,
            vec![
                Event::MspUserRemoved(MspUserRemoved {
                    user_id: acme.tech2,
                }),
                Event::MspUserAdded(MspUserAdded {
                    user_id: acme.tech1,
                    email: "t1-again@acme.example".into(),
                    first_name: None,
                    last_name: None,
                }),
            ],
        )
        .await;
    assert_eq!(counts(position).await, (2, 1));
    let deleted = Event::DirectoryUserDeleted(DirectoryUserDeleted { user_id: billy });
    assert_eq!(counts(step(contoso, deleted).await).await, (1, 1));
    // A passwordless user counts once a phone is enrolled.
    let dave = UserId(id());
    let position = world
        .append(
            contoso,
            vec![
                user_created(dave, "dave", None),
                Event::DeviceEnrolled(DeviceEnrolled {
                    user_id: dave,
                    device_id: DeviceId(id()),
                    device_name: "Dave's phone".into(),
                    public_key: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
                }),
            ],
        )
        .await;
    assert_eq!(counts(position).await, (2, 1));
    assert_counts_match_rows(&world, &read).await;
    assert_eq!(
        read.dump().await.unwrap(),
        world.reference_dump(store).await
    );
    projections.shutdown().await;
}

/// A session started by `user` at `at`, with the domain's lifetime; answers its token digest.
fn session_started(user: UserId, at: chrono::DateTime<chrono::Utc>) -> (String, Event) {
    let digest = format!("{:064x}", id().as_u128());
    let event = Event::SessionStarted(SessionStarted {
        session_id: id(),
        user_id: user,
        msp_id: None,
        device_id: None,
        method: SessionMethod::Qr,
        token_digest: digest.clone(),
        expires_at: at + domain::session::SESSION_LIFETIME,
    });
    (digest, event)
}

async fn expired_sessions_go_when_their_user_logs_in_again(store: &Store) {
    let world = World::new();
    let projections = world.project(store, Options::default()).await;
    let read = projections.read_models().clone();
    let acme = sign_up(&world, "acme").await;
    let other = UserId(id());
    let start = common::at();
    let hours = chrono::Duration::hours;

    let (first, started) = session_started(acme.admin, start);
    world.append_at(acme.id, start, vec![started]).await;
    let (second, started) = session_started(acme.admin, start + hours(2));
    world
        .append_at(acme.id, start + hours(2), vec![started])
        .await;
    let (others, started) = session_started(other, start);
    world.append_at(acme.id, start, vec![started]).await;
    assert!(projections.wait_for(world.head(), LONG).await);
    for digest in [&first, &second, &others] {
        assert!(read.session(digest).await.unwrap().is_some());
    }

    // 13 hours on, the first session has expired, the second has not.
    let later = start + hours(13);
    let (third, started) = session_started(acme.admin, later);
    world.append_at(acme.id, later, vec![started]).await;
    assert!(projections.wait_for(world.head(), LONG).await);
    assert!(read.session(&first).await.unwrap().is_none(), "expired");
    let second_row = read.session(&second).await.unwrap().unwrap();
    assert_eq!(second_row.user_id, acme.admin.0);
    assert!(read.session(&third).await.unwrap().is_some());
    // Another user's expired session waits for that user's next login.
    assert!(read.session(&others).await.unwrap().is_some());

    // A rebuild from the log leaves the same rows.
    let dump = read.dump().await.unwrap();
    projections.shutdown().await;
    assert_eq!(dump, world.reference_dump(store).await);
}

async fn a_revoked_authenticator_approves_nothing_and_its_users_sessions_end(store: &Store) {
    let (world, projections, read, acme, contoso) = acme_and_contoso(store).await;
    let phone = DeviceId(id());
    let enrolled = |device_id| {
        Event::DeviceEnrolled(DeviceEnrolled {
            user_id: acme.tech2,
            device_id,
            device_name: "Tom's phone".into(),
            public_key: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
        })
    };
    let revoked = |device_id| {
        Event::AuthenticatorRevoked(AuthenticatorRevoked {
            user_id: acme.tech2,
            device_id,
        })
    };
    world.append(acme.id, vec![enrolled(phone)]).await;
    let start = common::at();
    let (on_msp, started) = session_started(acme.tech2, start);
    let (admins, admin_started) = session_started(acme.admin, start);
    world.append(acme.id, vec![started, admin_started]).await;
    let on_customer = format!("{:064x}", id().as_u128());
    world
        .append(
            contoso,
            vec![Event::SessionStarted(SessionStarted {
                session_id: id(),
                user_id: acme.tech2,
                msp_id: Some(acme.id),
                device_id: Some(phone),
                method: SessionMethod::Sso,
                token_digest: on_customer.clone(),
                expires_at: start + domain::session::SESSION_LIFETIME,
            })],
        )
        .await;
    // What the read models say of Tom's phones: the approving key of `device`, the phones
    // listed, and his device count.
    let phones = |device: DeviceId| {
        let read = read.clone();
        async move {
            let approves = read.authenticator(acme.id.0, device.0).await.unwrap();
            let listed = read
                .authenticators_of(acme.id.0, acme.tech2.0)
                .await
                .unwrap();
            let user = read.user(acme.id.0, acme.tech2.0).await.unwrap().unwrap();
            let ids: Vec<Uuid> = listed.iter().map(|d| d.id).collect();
            (approves.is_some(), ids, user.devices)
        }
    };
    assert!(projections.wait_for(world.head(), LONG).await);
    assert_eq!(phones(phone).await, (true, vec![phone.0], 1));
    for digest in [&on_msp, &on_customer, &admins] {
        assert!(read.session(digest).await.unwrap().is_some());
    }

    world.append(acme.id, vec![revoked(phone)]).await;
    assert!(projections.wait_for(world.head(), LONG).await);
    assert_eq!(phones(phone).await, (false, vec![], 0));
    assert!(
        read.session(&on_msp).await.unwrap().is_none(),
        "on the MSP's host"
    );
    assert!(
        read.session(&on_customer).await.unwrap().is_none(),
        "on a customer's"
    );
    assert!(
        read.session(&admins).await.unwrap().is_some(),
        "others' stay"
    );
    let tina = read
        .authenticators_of(acme.id.0, acme.tech1.0)
        .await
        .unwrap();
    assert_eq!(tina.len(), 1, "another user's phone stays");

    // Enrolled and revoked in one batch; then a new phone.
    let (lost, new) = (DeviceId(id()), DeviceId(id()));
    world
        .append(acme.id, vec![enrolled(lost), revoked(lost), enrolled(new)])
        .await;
    assert!(projections.wait_for(world.head(), LONG).await);
    assert_eq!(phones(lost).await, (false, vec![new.0], 1));

    let dump = read.dump().await.unwrap();
    projections.shutdown().await;
    assert_eq!(dump, world.reference_dump(store).await);
}

async fn auditor_roles_name_the_tenants_their_holders_audit(store: &Store) {
    let world = World::new();
    let projections = world.project(store, Options::default()).await;
    let read = projections.read_models().clone();
    let acme = sign_up(&world, "acme").await;
    let globex = sign_up(&world, "globex").await;
    let (contoso, _) = create_customer(&world, &acme, "acme", "contoso").await;
    let (fabrikam, _) = create_customer(&world, &acme, "acme", "fabrikam").await;
    let grant = |user_id, tenant_id| Event::AuditorGranted(AuditorGranted { user_id, tenant_id });
    world
        .append(
            acme.id,
            vec![
                grant(acme.tech2, contoso),
                grant(acme.tech2, acme.id),
                grant(acme.tech1, fabrikam),
                Event::AuditorRevoked(AuditorRevoked {
                    user_id: acme.tech1,
                    tenant_id: fabrikam,
                }),
            ],
        )
        .await;
    world
        .append(globex.id, vec![grant(globex.tech1, globex.id)])
        .await;
    assert!(projections.wait_for(world.head(), LONG).await);

    let roles: Vec<_> = read
        .auditor_roles_of(acme.id.0)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.user_id, r.tenant_id, r.tenant_name))
        .collect();
    assert_eq!(
        roles,
        vec![
            (acme.tech2.0, acme.id.0, "acme".to_owned()),
            (acme.tech2.0, contoso.0, "contoso".to_owned()),
        ],
        "revoked roles and other MSPs' are not listed"
    );
    projections.shutdown().await;
}

/// Read models projected from another log (another deployment's database) are refused at
/// start, whether that log was longer or shorter than this one, and so are this log's own read
/// models ahead of it (left beside a restored backup); a rebuild replaces them with this log's.
async fn read_models_of_another_log_are_refused_until_rebuilt(store: &Store) {
    let world = World::new();
    let mut commits = Workload::new(41).commits(600, 40).into_iter();
    for commit in commits.by_ref().take(5) {
        eventlog::EventLog::commit(&*world.log, commit)
            .await
            .unwrap();
    }
    let restored = world.restored_copy().await;
    for commit in commits {
        eventlog::EventLog::commit(&*world.log, commit)
            .await
            .unwrap();
    }
    assert!(restored.head() < world.head());
    let projections = world.project(store, Options::default()).await;
    assert!(projections.wait_for(world.head(), LONG).await);
    projections.shutdown().await;
    let start = |log: Arc<eventlog::RocksLog>| {
        projections::Projections::start(log, store.backend.clone(), Options::default())
    };

    // This log, restored from a backup older than its read models.
    let err = start(restored.log.clone()).await.err().unwrap();
    assert!(
        matches!(err, projections::Error::AheadOfLog { checkpoint, head, .. }
            if checkpoint == world.head() && head == restored.head()),
        "{err}"
    );
    assert!(err.to_string().contains("idemd rebuild"), "{err}");

    // Other logs, shorter and longer than the one the read models follow.
    let other = World::new();
    write_workload(&other, 200, 42).await;
    let longer = World::new();
    write_workload(&longer, 900, 43).await;
    assert!(other.head() < world.head() && longer.head() > world.head());
    for log in [&other, &longer] {
        let err = start(log.log.clone()).await.err().unwrap();
        assert!(
            matches!(err, projections::Error::OtherLog { projected_from, log: this, .. }
                if projected_from == world.log.log_id() && this == log.log.log_id()),
            "{err}"
        );
        assert!(err.to_string().contains("idemd rebuild"), "{err}");
    }

    let allowed = Options {
        allow_other_log: true,
        ..Options::default()
    };
    let projections = other.project(store, allowed).await;
    for projection in Projection::ALL {
        projections.rebuild(projection).await.unwrap();
    }
    assert!(projections.wait_for(other.head(), LONG).await);
    let rebuilt = projections.read_models().dump().await.unwrap();
    projections.shutdown().await;
    assert_eq!(rebuilt, other.reference_dump(store).await);
    // Rebuilt, they are the other log's: they start with it, and no longer with the first.
    let projections = other.project(store, Options::default()).await;
    projections.shutdown().await;
    let err = start(world.log.clone()).await.err().unwrap();
    assert!(
        matches!(err, projections::Error::OtherLog { projected_from, .. }
            if projected_from == other.log.log_id()),
        "{err}"
    );
}

async fn pending_enrollment_tokens_leave_when_used_revoked_or_expired(store: &Store) {
    let (world, projections, read, acme, contoso) = acme_and_contoso(store).await;
    let start = common::at();
    let (used, revoked, kept, short) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let issued = |token_id: Uuid, hours: i64| {
        Event::EnrollmentTokenIssued(EnrollmentTokenIssued {
            token_id,
            token_digest: format!("{token_id:x}"),
            expires_at: start + chrono::Duration::hours(hours),
        })
    };
    world
        .append_at(
            contoso,
            start,
            vec![
                issued(used, 24),
                issued(revoked, 24),
                issued(kept, 24),
                issued(short, 1),
            ],
        )
        .await;
    world
        .append_at(
            contoso,
            start,
            vec![
                Event::AgentEnrolled(AgentEnrolled {
                    device_id: DeviceId(id()),
                    token_id: used,
                    hostname: "ws-01".into(),
                    credential_digest: "ef".repeat(32),
                }),
                Event::EnrollmentTokenRevoked(EnrollmentTokenRevoked { token_id: revoked }),
            ],
        )
        .await;
    assert!(projections.wait_for(world.head(), LONG).await);
    let pending = |at| {
        let read = read.clone();
        async move {
            read.pending_enrollment_tokens(contoso.0, at)
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
        }
    };
    let mut both = vec![kept, short];
    both.sort();
    let mut now = pending(start).await;
    now.sort();
    assert_eq!(now, both);
    assert_eq!(
        pending(start + chrono::Duration::hours(1)).await,
        vec![kept]
    );
    assert!(
        pending(start + chrono::Duration::hours(24))
            .await
            .is_empty()
    );
    let row = &read
        .pending_enrollment_tokens(contoso.0, start)
        .await
        .unwrap()[0];
    assert!(
        row.expires_at.ends_with('Z') && !row.expires_at.contains('.'),
        "{row:?}"
    );
    // Another tenant has none of them.
    assert!(
        read.pending_enrollment_tokens(acme.id.0, start)
            .await
            .unwrap()
            .is_empty()
    );

    // A token issued once `short` has expired takes its row away (as the domain forgets it),
    // and an agent enrolling with a token whose row went (a history written while the clock
    // stepped back) is no corruption.
    let rows_of = |read: projections::ReadModels, token: Uuid| async move {
        read.dump()
            .await
            .unwrap()
            .into_iter()
            .filter(|line| {
                line.starts_with("enrollment_tokens:") && line.contains(&token.to_string())
            })
            .count()
    };
    assert_eq!(rows_of(read.clone(), short).await, 1);
    let late = Uuid::now_v7();
    let later = start + chrono::Duration::hours(2);
    world
        .append_at(contoso, later, vec![issued(late, 26)])
        .await;
    assert!(projections.wait_for(world.head(), LONG).await);
    assert_eq!(
        rows_of(read.clone(), short).await,
        0,
        "expired by the issue"
    );
    assert_eq!(rows_of(read.clone(), kept).await, 1);
    assert_eq!(
        rows_of(read.clone(), used).await,
        1,
        "a used token's row stays"
    );
    world
        .append_at(
            contoso,
            later,
            vec![Event::AgentEnrolled(AgentEnrolled {
                device_id: DeviceId(id()),
                token_id: short,
                hostname: "ws-02".into(),
                credential_digest: "ab".repeat(32),
            })],
        )
        .await;
    assert!(projections.wait_for(world.head(), LONG).await);
    let dump = read.dump().await.unwrap();
    assert!(
        !dump.iter().any(|line| line.starts_with("quarantine")),
        "{dump:#?}"
    );
    let mut pending_later = pending(later).await;
    pending_later.sort();
    let mut expected = vec![kept, late];
    expected.sort();
    assert_eq!(pending_later, expected);

    // A rebuild from the log leaves the same rows.
    let dump = read.dump().await.unwrap();
    projections.shutdown().await;
    assert_eq!(dump, world.reference_dump(store).await);
}

/// The removal events a feed page reports, by user.
fn removed_in(changes: &projections::Changes) -> Vec<Uuid> {
    changes
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::UserRemoved { user_id, .. } => Some(*user_id),
            _ => None,
        })
        .collect()
}

async fn removed_users_tombstones_go_after_the_feed_retention(store: &Store) {
    let (world, projections, read, acme, contoso) = acme_and_contoso(store).await;
    let start = common::at();
    let retention = projections::FEED_TOMBSTONE_RETENTION;
    let second = chrono::Duration::seconds(1);
    let [ann, billy, jane, joe] = [0; 4].map(|_| UserId(id()));
    world
        .append_at(
            contoso,
            start,
            vec![
                user_created(ann, "ann", None),
                user_created(billy, "billy", None),
                user_created(jane, "jane", None),
                user_created(joe, "joe", None),
            ],
        )
        .await;
    assert!(projections.wait_for(world.head(), LONG).await);
    let head = |read: projections::ReadModels| async move {
        read.changes(contoso.0, None, 100)
            .await
            .unwrap()
            .unwrap()
            .next
    };
    let before_removals = head(read.clone()).await;
    let removal = |user: UserId| {
        vec![Event::DirectoryUserDeleted(DirectoryUserDeleted {
            user_id: user,
        })]
    };
    let feed_after = |read: projections::ReadModels, cursor: u64| async move {
        read.changes(contoso.0, Some(cursor), 100)
            .await
            .unwrap()
            .unwrap()
    };

    // A tombstone holds what the feed reports of a removal, and nothing else of the user.
    world.append_at(contoso, start, removal(jane)).await;
    assert!(projections.wait_for(world.head(), LONG).await);
    let jane_removed = head(read.clone()).await;
    let dump = read.dump().await.unwrap();
    let jane_rows: Vec<_> = dump
        .iter()
        .filter(|line| line.starts_with("users:") && line.contains(&jane.0.to_string()))
        .collect();
    assert_eq!(jane_rows.len(), 1, "{dump:#?}");
    assert!(
        !jane_rows[0].contains("JANE") && !jane_rows[0].contains("jane@"),
        "{jane_rows:?}"
    );

    // Within the retention, every later removal leaves it: an old cursor still continues.
    world
        .append_at(contoso, start + retention - second, removal(joe))
        .await;
    assert!(projections.wait_for(world.head(), LONG).await);
    let page = feed_after(read.clone(), before_removals).await;
    assert!(!page.snapshot);
    assert_eq!(removed_in(&page), vec![jane.0, joe.0]);

    // A removal past the retention takes it; cursors below it now get a snapshot, which names
    // the users that are left and no removal. The same batch goes on with the tenant's live
    // users after a flush (revoking an agent flushes): they are still known to it.
    let device = DeviceId(id());
    let mut later = removal(billy);
    later.extend([
        Event::AgentEnrolled(AgentEnrolled {
            device_id: device,
            token_id: id(),
            hostname: "ws-01".into(),
            credential_digest: "cd".repeat(32),
        }),
        Event::AgentRevoked(AgentRevoked { device_id: device }),
        Event::DirectoryUserDisabled(DirectoryUserDisabled { user_id: ann }),
    ]);
    world
        .append_at(contoso, start + retention + second, later)
        .await;
    assert!(projections.wait_for(world.head(), LONG).await);
    let dump = read.dump().await.unwrap();
    assert!(
        !dump.iter().any(|line| line.starts_with("quarantine")),
        "{dump:#?}"
    );
    let now = head(read.clone()).await;
    for cursor in [0, before_removals, jane_removed - 1] {
        let page = feed_after(read.clone(), cursor).await;
        assert!(page.snapshot, "cursor {cursor}");
        assert_eq!(page.next, now);
        assert!(removed_in(&page).is_empty());
        let users: Vec<_> = page
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::UserUpserted { user_id, .. } => Some(*user_id),
                _ => None,
            })
            .collect();
        assert_eq!(users, vec![ann.0]);
        assert!(
            page.changes
                .iter()
                .any(|c| matches!(c, Change::UserUpserted { enabled: false, .. }))
        );
    }
    // From the removal that went on, nothing was missed: the feed continues.
    let page = feed_after(read.clone(), jane_removed).await;
    assert!(!page.snapshot);
    assert_eq!(removed_in(&page), vec![joe.0, billy.0]);
    assert_eq!(page.next, now);
    let dump = read.dump().await.unwrap();
    assert!(
        !dump
            .iter()
            .any(|line| line.starts_with("users:") && line.contains(&jane.0.to_string())),
        "{dump:#?}"
    );
    assert!(
        dump.iter()
            .any(|line| line.starts_with("users:") && line.contains(&joe.0.to_string()))
    );

    // Another tenant's removals take none of this tenant's tombstones.
    let (fabrikam, _) = create_customer(&world, &acme, "acme", "fabrikam").await;
    let zoe = UserId(id());
    world
        .append_at(fabrikam, start, vec![user_created(zoe, "zoe", None)])
        .await;
    world
        .append_at(fabrikam, start + retention * 3, removal(zoe))
        .await;
    assert!(projections.wait_for(world.head(), LONG).await);
    let page = feed_after(read.clone(), jane_removed).await;
    assert_eq!(removed_in(&page), vec![joe.0, billy.0]);

    // A rebuild from the log leaves the same rows and the same horizon.
    let dump = read.dump().await.unwrap();
    projections.shutdown().await;
    assert_eq!(dump, world.reference_dump(store).await);
}

/// The records the service wakes no agent for (`NOT_IN_FEED`) give no change-feed entry: one
/// of each, projected on a customer with users, leaves the feed's page after them empty,
/// while a change of the directory right after them does show.
async fn records_that_wake_no_agent_make_no_feed_entry(store: &Store) {
    let (world, projections, read, acme, contoso) = acme_and_contoso(store).await;
    let billy = UserId(id());
    let position = world
        .append(
            contoso,
            vec![
                Event::DesktopLoginConfigured(DesktopLoginConfigured {
                    enabled: true,
                    method: DesktopLoginMethod::Password,
                }),
                user_created(billy, "billy", None),
                password(billy, 1),
            ],
        )
        .await;
    assert!(projections.wait_for(position, LONG).await);
    let before = read.changes(contoso.0, None, 100).await.unwrap().unwrap();

    let (token, session) = (id(), id());
    let at = chrono::Utc::now();
    let records = vec![
        Event::DesktopLoginRecorded(DesktopLoginRecorded {
            device_id: DeviceId(id()),
            username: "billy".into(),
            user_id: Some(billy),
            method: DesktopLoginMethod::Password,
            outcome: AttemptOutcome::Succeeded,
            local_account: Some(LocalAccountAction::Create),
        }),
        Event::ElevationRecorded(ElevationRecorded {
            device_id: DeviceId(id()),
            msp_id: acme.id,
            technician_id: acme.admin,
            account: "idem-admin".into(),
            outcome: AttemptOutcome::Succeeded,
        }),
        Event::ElevationEnded(ElevationEnded {
            report_id: id(),
            device_id: DeviceId(id()),
            elevation_seq: Some(7),
            technician_id: Some(acme.admin),
            account: "idem-admin".into(),
            reason: ElevationEnd::Expired,
            ended_at: at,
        }),
        Event::SessionStarted(SessionStarted {
            session_id: session,
            user_id: billy,
            msp_id: None,
            device_id: None,
            method: SessionMethod::Qr,
            token_digest: format!("{:064x}", id().as_u128()),
            expires_at: at + domain::session::SESSION_LIFETIME,
        }),
        Event::SessionEnded(SessionEnded {
            session_id: session,
        }),
        Event::EnrollmentTokenIssued(EnrollmentTokenIssued {
            token_id: token,
            token_digest: format!("{:064x}", id().as_u128()),
            expires_at: at + chrono::TimeDelta::hours(1),
        }),
        Event::EnrollmentTokenRevoked(EnrollmentTokenRevoked { token_id: token }),
        Event::OnboardingCodeIssued(OnboardingCodeIssued {
            user_id: billy,
            code_digest: format!("{:064x}", id().as_u128()),
            expires_at: at + chrono::TimeDelta::minutes(15),
        }),
        Event::OnboardingCodeRejected(OnboardingCodeRejected { user_id: billy }),
    ];
    let mut recorded: Vec<&str> = records.iter().map(Event::type_name).collect();
    recorded.sort_unstable();
    let mut listed = projections::NOT_IN_FEED.to_vec();
    listed.sort_unstable();
    assert_eq!(recorded, listed, "one record of each listed type, no other");
    let count = records.len() as u64;
    let position = world.append(contoso, records).await;
    assert!(projections.wait_for(position, LONG).await);
    assert_eq!(projections.status().quarantined().count(), 0);
    let after = read
        .changes(contoso.0, Some(before.next), 100)
        .await
        .unwrap()
        .unwrap();
    assert!(!after.snapshot);
    assert_eq!(after.changes, Vec::new(), "no entry from a record");
    assert_eq!(
        after.next,
        before.next + count,
        "the cursor moves past them"
    );

    // The control: a change of the directory right after them is an entry.
    let position = world.append(contoso, vec![password(billy, 2)]).await;
    assert!(projections.wait_for(position, LONG).await);
    let changed = read
        .changes(contoso.0, Some(after.next), 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.changes.len(), 1);
    projections.shutdown().await;
}

/// The operator log (`domain::operator`) is no tenant: its events add their timeline rows
/// under its own id and change nothing else, quarantine nothing, and give no feed entry.
async fn the_operator_log_changes_no_tenant_row(store: &Store) {
    let (world, projections, read, _, contoso) = acme_and_contoso(store).await;
    let position = world.head();
    assert!(projections.wait_for(position, LONG).await);
    let before = read.dump().await.unwrap();
    let feed = read.changes(contoso.0, None, 100).await.unwrap().unwrap();

    let operator = TenantId(domain::operator::OPERATOR_LOG);
    let position = world
        .append(
            operator,
            vec![
                Event::RootKeyRotated(RootKeyRotated {
                    previous_key_id: "a1".into(),
                    key_id: "b2".into(),
                }),
                Event::BackupWritten(BackupWritten {
                    directory: "/backups/monday".into(),
                    head_position: position,
                    events: position,
                }),
                Event::BackupRestored(BackupRestored {
                    backup: "/backups/monday".into(),
                    head_position: position,
                    keys_restored: 1,
                    keys_missing: 0,
                }),
                Event::ReadModelsRebuilt(ReadModelsRebuilt {
                    projection: "directory".into(),
                    generation: 2,
                }),
            ],
        )
        .await;
    assert!(projections.wait_for(position, LONG).await);
    assert_eq!(projections.status().quarantined().count(), 0);
    let after = read.dump().await.unwrap();
    let prefix = format!("timeline: {} |", operator.0);
    let (added, rest): (Vec<String>, Vec<String>) = after
        .into_iter()
        .partition(|line| line.starts_with(&prefix));
    assert_eq!(added.len(), 4, "{added:#?}");
    assert_eq!(rest, before, "nothing else changed");
    assert_eq!(read.changes(operator.0, None, 100).await.unwrap(), None);
    let again = read
        .changes(contoso.0, Some(feed.next), 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.changes, Vec::new());
    projections.shutdown().await;
}

on_both_databases!(
    a_temporary_password_shows_until_its_user_changes_it,
    a_revoked_authenticator_approves_nothing_and_its_users_sessions_end,
    the_operator_log_changes_no_tenant_row,
    records_that_wake_no_agent_make_no_feed_entry,
    removed_users_tombstones_go_after_the_feed_retention,
    pending_enrollment_tokens_leave_when_used_revoked_or_expired,
    read_models_of_another_log_are_refused_until_rebuilt,
    auditor_roles_name_the_tenants_their_holders_audit,
    expired_sessions_go_when_their_user_logs_in_again,
    read_models_follow_the_quick_start,
    customer_counts_follow_users_and_access,
    change_feed_reports_every_change_once,
    deleting_a_tenant_leaves_no_row_of_it,
    a_failing_tenant_is_quarantined_and_others_go_on,
    a_crash_between_rows_and_checkpoint_loses_and_repeats_nothing,
    a_rebuild_serves_the_old_generation_until_it_has_caught_up,
    one_batch_sees_its_own_changes_across_a_flush,
);

#[tokio::test]
async fn bad_configuration_is_refused_clearly() {
    let err = projections::Backend::from_config(std::path::Path::new("/tmp"), Some("mysql://x"))
        .unwrap_err();
    assert!(err.to_string().contains("postgres://"), "{err}");
    let world = World::new();
    let backend = projections::Backend::Postgres {
        url: "postgres://idem@127.0.0.1:1/postgres".into(),
        schema_prefix: "Bad-Prefix".into(),
    };
    let err = projections::Projections::start(world.log.clone(), backend, Options::default())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("schema prefix"), "{err}");
    let file = tempfile::NamedTempFile::new().unwrap();
    let backend = projections::Backend::Sqlite {
        dir: file.path().to_path_buf(),
    };
    let err = projections::Projections::start(world.log.clone(), backend, Options::default())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("read-model files"), "{err}");
}
