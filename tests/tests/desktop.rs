//! Steps 7 to 9 of the quick start with a real idemd and a real agent managing Linux accounts
//! under a throwaway root: enroll, sync, log in (create and takeover), change the password
//! (old one refused, offline cache dropped), offline logins, disable, elevated access approved
//! by the authenticator, branding seen; a page applied twice (a crash before the cursor was
//! saved) leaves the same accounts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use agent::accounts::{LinuxAccounts, LocalAccounts};
use agent::authenticator::Keyring;
use agent::desktop::{self, Agent, Login};
use harness::Platform;
use harness::proxy::ContractProxy;
use reqwest::Method;
use serde_json::{Value, json};

const BILLY: &str = "Correct-Horse-Battery-42";
const BILLY_NEW: &str = "Tr0ub4dor&3-Staple-Again";
const CAROL: &str = "Carol-Has-A-Long-Password";

fn system_root(dir: &Path) {
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\ncarol:x:1000:1000:Carol:/home/carol:/bin/bash\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/shadow"),
        "root:*:19000:0:99999:7:::\ncarol:$6$old$old:19000:0:99999:7:::\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\nsudo:x:27:\ncarol:x:1000:\n",
    )
    .unwrap();
}

/// A copy of the agent's state pointing at a service that cannot be reached.
fn offline_copy(state: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let mut json: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("state.json")).unwrap()).unwrap();
    json["url"] = json!("http://contoso-acme.localhost:1");
    std::fs::write(to.join("state.json"), json.to_string()).unwrap();
}

/// The uid `name` has in the passwd file under `root`.
fn uid_of(root: &Path, name: &str) -> u32 {
    std::fs::read_to_string(root.join("etc/passwd"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name}:x:"))?
                .split(':')
                .next()?
                .parse()
                .ok()
        })
        .unwrap()
}

/// Someone's session as `uid` on the workstation: a real process, which the process table
/// `proc` (the agent's is `proc` under its root) lists as that uid's.
fn session_as(proc: &Path, uid: u32) -> std::process::Child {
    let session = std::process::Command::new("sleep")
        .arg("120")
        .spawn()
        .unwrap();
    let listed = proc.join(session.id().to_string());
    std::fs::create_dir_all(&listed).unwrap();
    std::fs::write(
        listed.join("status"),
        format!("Name:\tbash\nState:\tS (sleeping)\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"),
    )
    .unwrap();
    session
}

/// Whether `session` ended by SIGKILL (it waits for the end: `sleep 120` ends by itself).
fn killed(session: &mut std::process::Child) -> bool {
    session.wait().unwrap().signal() == Some(9)
}

async fn sync_all<A: LocalAccounts>(agent: &mut Agent<A>) {
    while agent.sync_once(Duration::ZERO).await.unwrap() > 0 {}
}

/// Queues reports of ended elevations of the shared account `idem-admin` as the agent keeps
/// them (`report_id`, `elevation_seq`, `reason`, when), then runs one round of the feed,
/// which sends them.
async fn report_ends<A: LocalAccounts>(
    agent: &mut Agent<A>,
    reports: &[(uuid::Uuid, Option<u64>, &str, SystemTime)],
) {
    agent
        .update(|agent| {
            for &(report_id, elevation_seq, reason, at) in reports {
                agent.state.elevations_ended.push(desktop::EndedElevation {
                    report_id,
                    account: "idem-admin".into(),
                    elevation_seq,
                    reason: reason.into(),
                    ended_at: at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
                });
            }
            Ok(())
        })
        .unwrap();
    agent.sync_once(Duration::ZERO).await.unwrap();
}

/// A workstation with a throwaway system root (`root/`, from [`system_root`], then changed by
/// `prepare`) and its agent's state (`agent/`) in a temporary directory, enrolled on `host`
/// with the enrollment token answer `token` and synced. The agent reaches idemd through a proxy that holds every
/// exchange to the OpenAPI document ([`ContractProxy`]).
async fn workstation(
    platform: &Platform,
    host: &str,
    token: &Value,
    hostname: &str,
    prepare: impl FnOnce(&Path),
) -> (tempfile::TempDir, Agent<LinuxAccounts>, ContractProxy) {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    system_root(&root);
    prepare(&root);
    let state_dir = work.path().join("agent");
    let proxy = ContractProxy::start(platform.port()).await;
    desktop::enroll(
        &state_dir,
        &proxy.url(host),
        token["token"].as_str().unwrap(),
        hostname,
    )
    .await
    .unwrap();
    let mut agent = Agent::open(&state_dir, LinuxAccounts::new(&root)).unwrap();
    sync_all(&mut agent).await;
    (work, agent, proxy)
}

/// Every exchange the agent had went through the proxy and matched the document, and it had
/// each of `expected` (`METHOD path-prefix -> status`, by prefix).
fn assert_within_contract(proxy: &ContractProxy, expected: &[&str]) {
    assert_eq!(proxy.violations(), Vec::<String>::new());
    let exchanges = proxy.exchanges();
    for wanted in expected {
        assert!(
            exchanges.iter().any(|e| e.starts_with(wanted)),
            "no {wanted} among {exchanges:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workstation_follows_its_tenant() {
    let platform = Platform::start().await;
    let (phone, _) = platform.acme_with_contoso("alice@acme.example").await;
    let host = "contoso-acme";
    let admin = platform.login(&phone, host).await;
    let call = |method: Method, path: &str, body: Option<Value>| {
        platform.call_as(&admin, method, host, path, body)
    };
    call(
        Method::PUT,
        "/api/v1/settings/master-key",
        Some(json!({"enabled": true})),
    )
    .await;
    call(
        Method::PUT,
        "/api/v1/settings/desktop-login",
        Some(json!({"enabled": true, "method": "password"})),
    )
    .await;
    call(
        Method::PUT,
        "/api/v1/accounts/shared",
        Some(json!({"username": "idem-admin"})),
    )
    .await;
    let (_, billy) = call(
        Method::POST,
        "/api/v1/users",
        Some(json!({"first_name": "Billy", "last_name": "Jones",
        "username": "billy", "email": "billy@contoso.example", "password": BILLY})),
    )
    .await;
    let billy_id = billy["id"].as_str().unwrap().to_owned();
    call(
        Method::POST,
        "/api/v1/users",
        Some(json!({"first_name": "Carol", "last_name": "C",
        "username": "Carol", "email": "carol@contoso.example", "password": CAROL})),
    )
    .await;

    // Step 7: install and enroll the agent; it syncs the directory.
    let (_, token) = call(Method::POST, "/api/v1/agent/enrollment-tokens", None).await;
    let (work, mut agent, proxy) = workstation(&platform, host, &token, "WS-01", |_| {}).await;
    let (root, state_dir) = (work.path().join("root"), work.path().join("agent"));
    assert_eq!(agent.state.users.len(), 2);
    assert_eq!(agent.state.shared_account.as_deref(), Some("idem-admin"));
    assert_eq!(
        agent.state.desktop_login,
        Some((true, Some("password".into())))
    );

    // Step 8: Billy's account is created; Carol's existing one is taken over.
    assert_eq!(
        agent.login("billy", BILLY).await.unwrap(),
        Login::Online {
            account: "billy".into(),
            action: "create".into()
        }
    );
    assert!(agent.accounts.check_password("billy", BILLY).unwrap());
    assert_eq!(
        agent.login("carol", CAROL).await.unwrap(),
        Login::Online {
            account: "carol".into(),
            action: "takeover".into()
        }
    );
    assert!(agent.accounts.check_password("carol", CAROL).unwrap());
    assert!(agent.login("billy", "not-his-password").await.is_err());
    let shadow = std::fs::read_to_string(root.join("etc/shadow")).unwrap();
    assert!(!shadow.contains(BILLY) && !shadow.contains("$6$old$old"));

    // Offline, only a password that worked online, for its current version.
    let offline_dir = work.path().join("offline");
    offline_copy(&state_dir, &offline_dir);
    let mut offline = Agent::open(&offline_dir, LinuxAccounts::new(&root)).unwrap();
    assert_eq!(
        offline.login("BILLY", BILLY).await.unwrap(),
        Login::Offline {
            account: "billy".into()
        }
    );
    assert!(offline.login("billy", "not-his-password").await.is_err());

    // The password changes: the old one is refused online, and the offline cache is dropped.
    let (status, _) = call(
        Method::PUT,
        &format!("/api/v1/users/{billy_id}/password"),
        Some(json!({"password": BILLY_NEW})),
    )
    .await;
    assert_eq!(status, 204);
    sync_all(&mut agent).await;
    assert!(agent.login("billy", BILLY).await.is_err());
    offline_copy(&state_dir, &offline_dir);
    let mut offline = Agent::open(&offline_dir, LinuxAccounts::new(&root)).unwrap();
    assert!(
        offline.login("billy", BILLY).await.is_err(),
        "the old version's verifier is gone"
    );
    assert!(
        offline.login("billy", BILLY_NEW).await.is_err(),
        "never used online yet"
    );
    agent.login("billy", BILLY_NEW).await.unwrap();
    assert!(agent.accounts.check_password("billy", BILLY_NEW).unwrap());

    // Disabled in the portal (an employee leaving): the local account is disabled, the
    // session Billy has open is ended, and no login works.
    let mut billys_session = session_as(&root.join("proc"), uid_of(&root, "billy"));
    call(
        Method::PATCH,
        &format!("/api/v1/users/{billy_id}"),
        Some(json!({"enabled": false})),
    )
    .await;
    sync_all(&mut agent).await;
    assert!(agent.accounts.find("billy").unwrap().unwrap().disabled);
    assert!(killed(&mut billys_session));
    assert!(agent.state.sessions_to_end.is_empty());
    assert!(agent.login("billy", BILLY_NEW).await.is_err());
    offline_copy(&state_dir, &offline_dir);
    let mut offline = Agent::open(&offline_dir, LinuxAccounts::new(&root)).unwrap();
    assert!(offline.login("billy", BILLY_NEW).await.is_err());

    // Step 9: elevated access, approved with Alice's phone; the shared account is prepared.
    let phone_keys = serde_json::to_string(&phone.devices).unwrap();
    let elevate = async |agent: &mut Agent<LinuxAccounts>| {
        let (qr_tx, mut qr_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let keys = phone_keys.clone();
        let approver = tokio::spawn(async move {
            let qr = qr_rx.recv().await.unwrap();
            let keyring = Keyring {
                devices: serde_json::from_str(&keys).unwrap(),
            };
            agent::authenticator::approve(&keyring, &qr).await.unwrap();
        });
        let elevated = agent
            .elevate(
                move |qr| qr_tx.send(qr.to_owned()).unwrap(),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        approver.await.unwrap();
        elevated
    };
    let (account, first_password) = elevate(&mut agent).await;
    assert_eq!(account, "idem-admin");
    let shared = agent.accounts.find("idem-admin").unwrap().unwrap();
    assert!(shared.admin && !shared.disabled);
    let works = |agent: &Agent<LinuxAccounts>, password: &str| {
        agent
            .accounts
            .check_password("idem-admin", password)
            .unwrap()
    };
    assert!(works(&agent, &first_password));
    assert!(agent.status().contains("elevated: idem-admin, "));

    let unix = |at: SystemTime| at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let expires = |agent: &Agent<LinuxAccounts>| agent.state.elevated.as_ref().unwrap().expires;
    assert_eq!(
        agent.state.elevation_minutes,
        Some(60),
        "the tenant's default, from the feed"
    );
    assert!(expires(&agent) >= unix(SystemTime::now() + Duration::from_secs(59 * 60)));

    // The tenant shortens elevations to 15 minutes. A second elevation, before the agent
    // has synced that, lives 15 minutes (the approval says so), and replaces the first one's
    // password: that one ended.
    call(
        Method::PUT,
        "/api/v1/accounts/shared",
        Some(json!({"username": "idem-admin", "elevation_minutes": 15})),
    )
    .await;
    let before = SystemTime::now();
    let (_, password) = elevate(&mut agent).await;
    let after = SystemTime::now();
    let quarter = Duration::from_secs(15 * 60);
    assert!(
        (unix(before + quarter)..=unix(after + quarter)).contains(&expires(&agent)),
        "{} not 15 minutes after the elevation",
        expires(&agent)
    );
    assert!(works(&agent, &password) && !works(&agent, &first_password));
    assert_eq!(agent.state.elevations_ended.len(), 1);
    assert_eq!(agent.state.elevations_ended[0].reason, "replaced");

    // The password shown lives those 15 minutes; then the agent replaces it with one nobody
    // has seen, and the account stays an enabled administrator for the next elevation.
    assert!(
        !agent
            .expire_elevation(before + Duration::from_secs(14 * 60))
            .unwrap()
    );
    assert!(works(&agent, &password));
    // A technician is logged in with it: a process of the account. The workstation's
    // process table cannot be read at first.
    let table = work.path().join("proc");
    let mut session = session_as(&table, uid_of(&root, "idem-admin"));
    std::fs::remove_dir_all(root.join("proc")).unwrap();
    std::fs::write(root.join("proc"), "not a directory").unwrap();
    // Its time is up (the state says so: the service checks that reports are not dated
    // ahead of its clock), and the next round of the feed ends it and reports both ends.
    agent
        .update(|agent| {
            agent.state.elevated.as_mut().unwrap().expires = 0;
            Ok(())
        })
        .unwrap();
    sync_all(&mut agent).await;
    assert!(!works(&agent, &password));
    // The session could not be ended: the sync went on all the same, and says what is left.
    assert_eq!(session.try_wait().unwrap(), None);
    assert!(
        agent
            .status()
            .contains("sessions of idem-admin not ended yet: "),
        "{}",
        agent.status()
    );
    // Once the table can be read, the next round ends the session.
    std::fs::remove_file(root.join("proc")).unwrap();
    std::fs::rename(&table, root.join("proc")).unwrap();
    sync_all(&mut agent).await;
    assert!(killed(&mut session));
    assert!(agent.state.sessions_to_end.is_empty());
    assert!(!agent.status().contains("not ended"));
    let shared = agent.accounts.find("idem-admin").unwrap().unwrap();
    assert!(shared.admin && !shared.disabled);
    assert!(agent.status().contains("elevated: no\n"));
    assert_eq!(agent.state.elevations_ended, Vec::new(), "reported");
    assert_eq!(agent.state.elevation_minutes, Some(15), "from the feed");
    assert!(!agent.expire_elevation(SystemTime::now()).unwrap(), "once");
    let ended = |export: &str| -> Vec<Value> {
        export
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["type"] == "ElevationEnded")
            .map(|e| e["data"].clone())
            .collect()
    };
    let recorded = ended(&platform.audit_export(&admin, host).await);
    let reasons: Vec<&str> = recorded
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["replaced", "expired"]);
    // Each end names the service's own record of its approval, and the technician comes
    // from there.
    let events = platform.audit_events(&admin, host).await;
    let mut approvals = Vec::new();
    for end in &recorded {
        assert_eq!(end["account"], "idem-admin");
        assert_eq!(end["device_id"], agent.state.device_id.to_string());
        let approval = events
            .iter()
            .find(|e| e["seq"] == end["elevation_seq"])
            .unwrap();
        assert_eq!(approval["type"], "ElevationRecorded", "{end}");
        assert_eq!(approval["data"]["outcome"], "succeeded");
        assert_eq!(approval["data"]["device_id"], end["device_id"]);
        assert_eq!(end["technician_id"], approval["data"]["technician_id"]);
        assert_eq!(end["technician_id"], phone.devices[0].user_id.to_string());
        approvals.push(end["elevation_seq"].as_u64().unwrap());
    }
    assert!(approvals[0] < approvals[1], "two elevations, two approvals");

    // Reports the service will never take (dated a day ahead of its clock; naming as its
    // approval an event that is not one) are dropped and hold nothing back: the feed goes
    // on and the next report is recorded.
    let ahead = SystemTime::now() + Duration::from_secs(24 * 3600);
    let now = SystemTime::now();
    let fresh = uuid::Uuid::now_v7;
    report_ends(
        &mut agent,
        &[
            (fresh(), None, "expired", ahead),
            (fresh(), Some(1), "expired", now),
            (fresh(), None, "replaced", now),
        ],
    )
    .await;
    assert_eq!(agent.state.elevations_ended, Vec::new());
    let recorded = ended(&platform.audit_export(&admin, host).await);
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[2]["technician_id"], Value::Null);

    // A report sent again (the agent crashed after the service took it, before saving that)
    // is taken again and recorded no second time.
    let first: uuid::Uuid = recorded[0]["report_id"].as_str().unwrap().parse().unwrap();
    report_ends(&mut agent, &[(first, None, "replaced", SystemTime::now())]).await;
    assert_eq!(agent.state.elevations_ended, Vec::new(), "taken");
    assert_eq!(ended(&platform.audit_export(&admin, host).await), recorded);
    // Another report of an elevation whose end is recorded (a new id, the same approval)
    // is refused, and dropped.
    report_ends(
        &mut agent,
        &[(fresh(), Some(approvals[0]), "expired", SystemTime::now())],
    )
    .await;
    assert_eq!(agent.state.elevations_ended, Vec::new(), "dropped");
    assert_eq!(ended(&platform.audit_export(&admin, host).await), recorded);

    // Branding changes reach the agent, images included.
    let mut logo = b"\x89PNG\r\n\x1a\n".to_vec();
    logo.extend_from_slice(&13u32.to_be_bytes());
    logo.extend_from_slice(b"IHDR");
    logo.extend_from_slice(&200u32.to_be_bytes());
    logo.extend_from_slice(&80u32.to_be_bytes());
    logo.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    let form = reqwest::multipart::Form::new()
        .text("text", "Welcome to Contoso")
        .part(
            "logo",
            reqwest::multipart::Part::bytes(logo.clone()).file_name("logo.png"),
        );
    let (status, _) = Platform::call(
        platform
            .as_user(&admin, Method::PUT, host, "/api/v1/branding")
            .multipart(form),
    )
    .await;
    assert_eq!(status, 200);
    sync_all(&mut agent).await;
    assert_eq!(agent.state.branding_version, 1);
    assert_eq!(agent.state.branding_cached, 1);
    assert_eq!(
        agent.state.branding_text.as_deref(),
        Some("Welcome to Contoso")
    );
    assert_eq!(
        std::fs::read(agent.branding_dir().join("logo")).unwrap(),
        logo
    );
    assert!(!agent.branding_dir().join("background").exists());

    // A crash after applying a page but before saving the cursor: the page is applied again,
    // and the accounts come out the same.
    let saved = std::fs::read(state_dir.join("state.json")).unwrap();
    call(
        Method::POST,
        "/api/v1/users",
        Some(json!({"first_name": "Dan", "last_name": "D",
        "username": "dan", "email": "dan@contoso.example"})),
    )
    .await;
    call(
        Method::PATCH,
        &format!("/api/v1/users/{billy_id}"),
        Some(json!({"enabled": true})),
    )
    .await;
    sync_all(&mut agent).await;
    let files = |root: &Path| {
        ["passwd", "shadow", "group"]
            .map(|f| std::fs::read_to_string(root.join("etc").join(f)).unwrap())
    };
    let once = files(&root);
    assert!(
        !agent.accounts.find("billy").unwrap().unwrap().disabled,
        "enabled again"
    );
    std::fs::write(state_dir.join("state.json"), &saved).unwrap();
    let mut restarted = Agent::open(&state_dir, LinuxAccounts::new(&root)).unwrap();
    sync_all(&mut restarted).await;
    assert_eq!(files(&root), once);
    assert_eq!(restarted.state.users.len(), 3);
    assert_eq!(restarted.status().lines().count(), 8);

    // Offline, Carol's password opens her account while the tenant logs in with passwords,
    // and no longer once it has switched to passwordless logins.
    for (method, opens) in [("password", true), ("passwordless", false)] {
        call(
            Method::PUT,
            "/api/v1/settings/desktop-login",
            Some(json!({"enabled": true, "method": method})),
        )
        .await;
        sync_all(&mut restarted).await;
        offline_copy(&state_dir, &offline_dir);
        let mut offline = Agent::open(&offline_dir, LinuxAccounts::new(&root)).unwrap();
        let login = offline.login("carol", CAROL).await;
        assert_eq!(login.is_ok(), opens, "{method}: {login:?}");
    }
    assert_within_contract(
        &proxy,
        &[
            "POST /api/v1/agent/enroll -> 201",
            "GET /api/v1/agent/changes -> 200",
            "POST /api/v1/agent/login -> 200",
            "POST /api/v1/agent/login -> 401",
            "POST /api/v1/agent/challenges -> 201",
            "GET /api/v1/agent/challenges/",
            "GET /api/v1/agent/branding -> 200",
            "POST /api/v1/agent/elevations/ended -> 204",
            "POST /api/v1/agent/elevations/ended -> 422",
        ],
    );
    platform.server.shutdown().await;
}

/// Acme with customer contoso, whose master key is on and whose workstations log in with
/// passwords; answers an admin session on contoso's host.
async fn password_tenant(platform: &Platform) -> String {
    let (phone, _) = platform.acme_with_contoso("alice@acme.example").await;
    let host = "contoso-acme";
    let admin = platform.login(&phone, host).await;
    for (path, body) in [
        ("/api/v1/settings/master-key", json!({"enabled": true})),
        (
            "/api/v1/settings/desktop-login",
            json!({"enabled": true, "method": "password"}),
        ),
    ] {
        let (status, _) = platform
            .call_as(&admin, Method::PUT, host, path, Some(body))
            .await;
        assert_eq!(status, 200, "{path}");
    }
    admin
}

/// Takeover has limits: an account of the system (root, daemon) is never opened, disabled or
/// handed out as the shared admin account; an account a local administrator locked stays
/// locked until its directory user logs in; the shared admin account never goes to a
/// directory user.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agent_leaves_system_and_locally_locked_accounts_alone() {
    const ROOT: &str = "Root-Has-A-Long-Password";
    const DAVE: &str = "Dave-Has-A-Long-Password";
    let platform = Platform::start().await;
    let admin = password_tenant(&platform).await;
    let host = "contoso-acme";
    let call = |method: Method, path: &str, body: Option<Value>| {
        platform.call_as(&admin, method, host, path, body)
    };
    let shared = json!({"username": "idem-admin"});
    assert_eq!(
        call(Method::PUT, "/api/v1/accounts/shared", Some(shared))
            .await
            .0,
        200
    );
    let user = |username: &str, password: &str| {
        call(
            Method::POST,
            "/api/v1/users",
            Some(
                json!({"first_name": username, "last_name": "X", "username": username,
                "email": format!("{username}@contoso.example"), "password": password}),
            ),
        )
    };
    let (status, root_user) = user("Root", ROOT).await;
    assert_eq!(status, 201);
    let (status, dave) = user("dave", DAVE).await;
    assert_eq!(status, 201);
    let (status, problem) = user("IDEM-Admin", DAVE).await;
    assert_eq!(status, 409, "{problem}");
    let (status, problem) = call(
        Method::PUT,
        "/api/v1/accounts/shared",
        Some(json!({"username": "DAVE"})),
    )
    .await;
    assert_eq!(status, 409, "{problem}");

    // The workstation: root and daemon belong to the system; dave's account was locked here.
    let (_, token) = call(Method::POST, "/api/v1/agent/enrollment-tokens", None).await;
    let (work, mut agent, proxy) = workstation(&platform, host, &token, "WS-03", |root| {
        let append = |file: &str, line: &str| {
            let path = root.join("etc").join(file);
            let text = std::fs::read_to_string(&path).unwrap() + line;
            std::fs::write(path, text).unwrap();
        };
        append("passwd", "daemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n");
        append("passwd", "dave:x:1001:1001:Dave:/home/dave:/bin/bash\n");
        append("shadow", "daemon:*:19000:0:99999:7:::\n");
        append("shadow", "dave:!$6$old$old:19000:0:99999:7:::\n");
        append("group", "daemon:x:1:\ndave:x:1001:\n");
    })
    .await;
    let root = work.path().join("root");
    let shadow = || std::fs::read_to_string(root.join("etc/shadow")).unwrap();
    assert_eq!(agent.state.users.len(), 2);
    assert!(
        shadow().contains("dave:!$6$old$old:"),
        "the feed does not unlock what a local administrator locked"
    );

    // Root's directory password does not open the system's root, and disabling the
    // directory user leaves the system's root as it was.
    let refused = agent.login("root", ROOT).await.unwrap_err().to_string();
    assert!(refused.contains("account of the system"), "{refused}");
    assert!(shadow().starts_with("root:*:19000:0:99999:7:::\n"));
    let root_id = root_user["id"].as_str().unwrap();
    call(
        Method::PATCH,
        &format!("/api/v1/users/{root_id}"),
        Some(json!({"enabled": false})),
    )
    .await;
    sync_all(&mut agent).await;
    assert!(shadow().starts_with("root:*:19000:0:99999:7:::\n"));

    // Nor does disabling and enabling the directory user unlock it.
    let dave_id = dave["id"].as_str().unwrap();
    for enabled in [false, true] {
        call(
            Method::PATCH,
            &format!("/api/v1/users/{dave_id}"),
            Some(json!({"enabled": enabled})),
        )
        .await;
        sync_all(&mut agent).await;
        assert!(shadow().contains("dave:!$6$old$old:"), "enabled: {enabled}");
    }

    // Dave logs in: his account is taken over and unlocked; from then on the directory
    // disables and enables it.
    assert_eq!(
        agent.login("dave", DAVE).await.unwrap(),
        Login::Online {
            account: "dave".into(),
            action: "takeover".into()
        }
    );
    assert!(agent.accounts.check_password("dave", DAVE).unwrap());
    for enabled in [false, true] {
        call(
            Method::PATCH,
            &format!("/api/v1/users/{dave_id}"),
            Some(json!({"enabled": enabled})),
        )
        .await;
        sync_all(&mut agent).await;
        assert_eq!(
            agent.accounts.find("dave").unwrap().unwrap().disabled,
            !enabled
        );
    }

    // A shared admin account of the system is refused before anyone is asked to approve.
    assert_eq!(
        call(
            Method::PUT,
            "/api/v1/accounts/shared",
            Some(json!({"username": "daemon"}))
        )
        .await
        .0,
        200
    );
    sync_all(&mut agent).await;
    let refused = agent
        .elevate(|_| panic!("no challenge shown"), Duration::from_secs(5))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("account of the system"), "{refused}");
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(group.contains("sudo:x:27:\n"), "{group}");

    // A history from before the domain kept the two names apart: the agent itself refuses to
    // open the shared admin account for a directory user, and the feed leaves it alone.
    agent
        .update(|agent| {
            agent.state.shared_account = Some("DAVE".into());
            Ok(())
        })
        .unwrap();
    let refused = agent.login("dave", DAVE).await.unwrap_err().to_string();
    assert!(refused.contains("shared admin account"), "{refused}");
    call(
        Method::PATCH,
        &format!("/api/v1/users/{dave_id}"),
        Some(json!({"enabled": false})),
    )
    .await;
    let before = shadow();
    sync_all(&mut agent).await;
    assert_eq!(shadow(), before);
    assert_within_contract(&proxy, &["POST /api/v1/agent/login -> 200"]);
    platform.server.shutdown().await;
}

/// The service following the feed and a login at the screen are two processes with one state
/// file: neither writes back an older copy over the other's change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_service_and_a_login_at_the_screen_share_the_state() {
    let platform = Platform::start().await;
    let admin = password_tenant(&platform).await;
    let host = "contoso-acme";
    let call = |method: Method, path: &str, body: Option<Value>| {
        platform.call_as(&admin, method, host, path, body)
    };
    let (status, _) = call(
        Method::POST,
        "/api/v1/users",
        Some(json!({"first_name": "Billy", "last_name": "Jones",
        "username": "billy", "email": "billy@contoso.example", "password": BILLY})),
    )
    .await;
    assert_eq!(status, 201);
    let (_, token) = call(Method::POST, "/api/v1/agent/enrollment-tokens", None).await;
    let (work, mut service, _proxy) = workstation(&platform, host, &token, "WS-04", |_| {}).await;
    let (root, state_dir) = (work.path().join("root"), work.path().join("agent"));
    let on_disk = || -> Value {
        serde_json::from_str(&std::fs::read_to_string(state_dir.join("state.json")).unwrap())
            .unwrap()
    };

    // The screen's process logs Billy in; the service then applies a page (an empty one
    // still saves the state): Billy's offline verifier survives it.
    let mut screen = Agent::open(&state_dir, LinuxAccounts::new(&root)).unwrap();
    screen.login("billy", BILLY).await.unwrap();
    assert_eq!(service.sync_once(Duration::ZERO).await.unwrap(), 0);
    assert_eq!(on_disk()["offline"].as_object().unwrap().len(), 1);
    let offline_dir = work.path().join("offline");
    offline_copy(&state_dir, &offline_dir);
    let mut offline = Agent::open(&offline_dir, LinuxAccounts::new(&root)).unwrap();
    assert_eq!(
        offline.login("billy", BILLY).await.unwrap(),
        Login::Offline {
            account: "billy".into()
        }
    );

    let add_user = |username: &str| {
        call(
            Method::POST,
            "/api/v1/users",
            Some(
                json!({"first_name": username, "last_name": "X", "username": username,
                "email": format!("{username}@contoso.example")}),
            ),
        )
    };

    // The other way round: the service moves the cursor while the screen's process, opened
    // before, logs in; the cursor stays where the service put it.
    let mut screen = Agent::open(&state_dir, LinuxAccounts::new(&root)).unwrap();
    add_user("dan").await;
    assert_eq!(service.sync_once(Duration::ZERO).await.unwrap(), 1);
    let cursor = on_disk()["cursor"].clone();
    screen.login("billy", BILLY).await.unwrap();
    assert_eq!(on_disk()["cursor"], cursor);
    assert_eq!(on_disk()["users"].as_object().unwrap().len(), 2);

    // A process whose cursor is behind the file's does not apply a page over it: it asks
    // again from the file's cursor.
    let mut behind = Agent::open(&state_dir, LinuxAccounts::new(&root)).unwrap();
    add_user("eve").await;
    assert_eq!(service.sync_once(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(behind.sync_once(Duration::ZERO).await.unwrap(), 0);
    assert_eq!(behind.state.cursor, service.state.cursor);
    platform.server.shutdown().await;
}

/// Passwordless desktop login: the workstation shows a QR code, the user approves it with
/// their own phone, and their local account is opened (here taken over: Carol had one) with
/// a fresh password nobody types. Another person's phone cannot approve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_passwordless_user_opens_their_account_with_their_phone() {
    let platform = Platform::start().await;
    let (alice_phone, _) = platform.acme_with_contoso("alice@acme.example").await;
    let host = "contoso-acme";
    let admin = platform.login(&alice_phone, host).await;
    let call = |method: Method, path: &str, body: Option<Value>| {
        platform.call_as(&admin, method, host, path, body)
    };
    call(
        Method::PUT,
        "/api/v1/settings/desktop-login",
        Some(json!({"enabled": true, "method": "passwordless"})),
    )
    .await;
    let (status, carol) = call(
        Method::POST,
        "/api/v1/users",
        Some(json!({"first_name": "Carol", "last_name": "C",
        "username": "Carol", "email": "carol@contoso.example"})),
    )
    .await;
    assert_eq!(status, 201, "{carol}");
    let carol_id = carol["id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        Method::POST,
        &format!("/api/v1/users/{carol_id}/passwordless"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let mut carol_phone = Keyring::default();
    platform
        .enroll(&mut carol_phone, host, "carol@contoso.example")
        .await;

    let (_, token) = call(Method::POST, "/api/v1/agent/enrollment-tokens", None).await;
    let (work, mut agent, proxy) = workstation(&platform, host, &token, "WS-02", |_| {}).await;
    let root = work.path().join("root");

    // The QR code goes to whoever the test hands it to: first Alice (refused), then Carol.
    let approve_with = |phone: &Keyring| {
        let keys = serde_json::to_string(&phone.devices).unwrap();
        let (qr_tx, mut qr_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let approver = tokio::spawn(async move {
            let qr = qr_rx.recv().await.unwrap();
            let keyring = Keyring {
                devices: serde_json::from_str(&keys).unwrap(),
            };
            agent::authenticator::approve(&keyring, &qr).await
        });
        (qr_tx, approver)
    };
    let shadow = || std::fs::read_to_string(root.join("etc/shadow")).unwrap();
    let before = shadow();
    let (qr_tx, approver) = approve_with(&alice_phone);
    let refused = agent
        .login_passwordless(
            move |qr| qr_tx.send(qr.to_owned()).unwrap(),
            Duration::from_secs(3),
        )
        .await;
    assert!(approver.await.unwrap().is_err(), "a technician's phone");
    assert!(refused.is_err(), "nobody approved within the wait");
    assert_eq!(shadow(), before, "Carol's account is untouched");

    let (qr_tx, approver) = approve_with(&carol_phone);
    let opened = agent
        .login_passwordless(
            move |qr| qr_tx.send(qr.to_owned()).unwrap(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    approver.await.unwrap().unwrap();
    assert_eq!(
        (opened.account.as_str(), opened.action.as_str()),
        ("carol", "takeover")
    );
    let account = agent.accounts.find("carol").unwrap().unwrap();
    assert!(!account.disabled && !account.admin);
    assert!(
        agent
            .accounts
            .check_password("carol", &opened.password)
            .unwrap()
    );
    assert!(opened.password.len() >= 24);

    // The tenant switches to password logins while a code is on the screen: Carol's approval
    // is refused, and from then on no code is shown at all.
    let before = shadow();
    let (qr_tx, mut qr_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let switch = call(
        Method::PUT,
        "/api/v1/settings/desktop-login",
        Some(json!({"enabled": true, "method": "password"})),
    );
    let keys = serde_json::to_string(&carol_phone.devices).unwrap();
    let approver = tokio::spawn(async move {
        let qr = qr_rx.recv().await.unwrap();
        assert_eq!(switch.await.0, 200);
        let keyring = Keyring {
            devices: serde_json::from_str(&keys).unwrap(),
        };
        agent::authenticator::approve(&keyring, &qr).await
    });
    let refused = agent
        .login_passwordless(
            move |qr| qr_tx.send(qr.to_owned()).unwrap(),
            Duration::from_secs(3),
        )
        .await;
    let approval = approver.await.unwrap().unwrap_err().to_string();
    assert!(approval.contains("not enabled"), "{approval}");
    assert!(refused.is_err());
    assert_eq!(shadow(), before);
    let refused = agent
        .login_passwordless(|_| panic!("no code is shown"), Duration::from_secs(5))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(refused.contains("not enabled"), "{refused}");
    assert_within_contract(
        &proxy,
        &[
            "POST /api/v1/agent/enroll -> 201",
            "GET /api/v1/agent/changes -> 200",
            "POST /api/v1/agent/challenges -> 201",
            "POST /api/v1/agent/challenges -> 403",
            "GET /api/v1/agent/challenges/",
        ],
    );
}

/// A temporary password (an administrator's reset, or a new user's first one) opens no
/// account: the login asks for a new password, the user chooses one at the workstation, and
/// is logged in with it. Later the user changes their own password the same way. Every step
/// holds to the contract, and the audit shows who changed what from which workstation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_temporary_password_is_changed_at_the_first_login() {
    const TEMPORARY: &str = "Temporary-Password-1";
    let platform = Platform::start().await;
    let admin = password_tenant(&platform).await;
    let host = "contoso-acme";
    let call = |method: Method, path: &str, body: Option<Value>| {
        platform.call_as(&admin, method, host, path, body)
    };
    let (status, billy) = call(
        Method::POST,
        "/api/v1/users",
        Some(
            json!({"first_name": "Billy", "last_name": "Jones", "username": "billy",
        "email": "billy@contoso.example", "password": TEMPORARY,
        "must_change_password": true}),
        ),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(billy["must_change_password"], true);
    let billy_path = format!("/api/v1/users/{}", billy["id"].as_str().unwrap());
    let (_, token) = call(Method::POST, "/api/v1/agent/enrollment-tokens", None).await;
    let (work, mut agent, proxy) = workstation(&platform, host, &token, "WS-05", |_| {}).await;
    let (root, state_dir) = (work.path().join("root"), work.path().join("agent"));
    let refusal = |result: Result<Login, desktop::AgentError>| match result {
        Err(desktop::AgentError::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };

    // The right temporary password opens nothing: a new one is asked for.
    assert!(matches!(
        agent.login("billy", TEMPORARY).await,
        Err(desktop::AgentError::PasswordChangeRequired(_))
    ));
    assert!(agent.accounts.find("billy").unwrap().is_none());
    // A wrong current password, a new one equal to it or too short: nothing changes.
    // (A new password the document refuses, too short, is tested in tests/agent.rs: this
    // agent's exchanges are held to the document.)
    let why = refusal(agent.change_password("billy", "not-it-at-all", BILLY).await);
    assert!(why.contains("wrong username or password"), "{why}");
    let why = refusal(agent.change_password("billy", TEMPORARY, TEMPORARY).await);
    assert!(why.contains("must differ"), "{why}");
    let (_, unchanged) = call(Method::GET, &billy_path, None).await;
    assert_eq!(
        (
            &unchanged["must_change_password"],
            &unchanged["password_version"]
        ),
        (&json!(true), &json!(1))
    );

    // Billy chooses his own: his account opens with it, and the temporary one is gone.
    assert_eq!(
        agent
            .change_password("billy", TEMPORARY, BILLY)
            .await
            .unwrap(),
        Login::Online {
            account: "billy".into(),
            action: "create".into()
        }
    );
    assert!(agent.accounts.check_password("billy", BILLY).unwrap());
    // Billy is told, at his company email, where it was changed; never the password.
    let told = platform.mails_to("billy@contoso.example");
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].contains("changed at the workstation WS-05"),
        "{}",
        told[0]
    );
    let (_, changed) = call(Method::GET, &billy_path, None).await;
    assert_eq!(
        (
            &changed["must_change_password"],
            &changed["password_version"]
        ),
        (&json!(false), &json!(2))
    );
    assert!(agent.login("billy", TEMPORARY).await.is_err());
    agent.login("billy", BILLY).await.unwrap();
    sync_all(&mut agent).await;
    let offline_dir = work.path().join("offline");
    offline_copy(&state_dir, &offline_dir);
    let mut offline = Agent::open(&offline_dir, LinuxAccounts::new(&root)).unwrap();
    assert_eq!(
        offline.login("billy", BILLY).await.unwrap(),
        Login::Offline {
            account: "billy".into()
        }
    );
    let why = refusal(offline.change_password("billy", BILLY, BILLY_NEW).await);
    assert!(why.contains("offline"), "{why}");

    // Later, his own change: the old one is refused online and offline.
    agent
        .change_password("billy", BILLY, BILLY_NEW)
        .await
        .unwrap();
    assert!(agent.accounts.check_password("billy", BILLY_NEW).unwrap());
    assert!(agent.login("billy", BILLY).await.is_err());
    sync_all(&mut agent).await;
    offline_copy(&state_dir, &offline_dir);
    let mut offline = Agent::open(&offline_dir, LinuxAccounts::new(&root)).unwrap();
    assert!(offline.login("billy", BILLY).await.is_err());
    offline.login("billy", BILLY_NEW).await.unwrap();

    // An administrator's reset to a temporary one: asked to change again.
    let (status, _) = call(
        Method::PUT,
        &format!("{billy_path}/password"),
        Some(json!({"password": TEMPORARY, "must_change_password": true})),
    )
    .await;
    assert_eq!(status, 204);
    assert!(matches!(
        agent.login("billy", TEMPORARY).await,
        Err(desktop::AgentError::PasswordChangeRequired(_))
    ));
    let told = platform.mails_to("billy@contoso.example");
    assert_eq!(told.len(), 3, "each change is told");
    assert!(
        told[0].contains("An administrator set a new one") && told[0].contains("temporary"),
        "{}",
        told[0]
    );
    for mail in &told {
        for secret in [TEMPORARY, BILLY, BILLY_NEW] {
            assert!(!mail.contains(secret), "{mail}");
        }
    }

    // The audit: two changes at this workstation and the refusals, never a password.
    let events = platform.audit_events(&admin, host).await;
    let device = format!("agent:{}", agent.state.device_id);
    let changes: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "PasswordChanged")
        .collect();
    assert_eq!(changes.len(), 2);
    assert!(changes.iter().all(|e| e["actor"] == device.as_str()));
    let outcomes: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "DesktopLoginRecorded")
        .map(|e| e["data"]["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == "password_change_required")
            .count(),
        2
    );
    assert!(outcomes.contains(&"wrong_password"));
    let export = platform.audit_export(&admin, host).await;
    for secret in [TEMPORARY, BILLY, BILLY_NEW] {
        assert!(!export.contains(secret));
    }
    assert_within_contract(
        &proxy,
        &[
            "POST /api/v1/agent/login -> 403",
            "POST /api/v1/agent/password -> 401",
            "POST /api/v1/agent/password -> 422",
            "POST /api/v1/agent/password -> 200",
        ],
    );
    platform.server.shutdown().await;
}
