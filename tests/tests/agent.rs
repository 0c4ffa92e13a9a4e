//! The agent routes over real HTTP: enrollment with a one-time token, the change feed (a
//! snapshot, then increments; a long-poll woken by a commit), password logins recorded as
//! events, devices of one tenant refused on another, revocation effective at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use agent::authenticator::Keyring;
use harness::Platform;
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "Correct-Horse-Battery-42";

/// Signs up acme (its admin's phone answered) with two customers, contoso and fabrikam.
async fn acme_with_contoso_and_fabrikam(platform: &Platform) -> Keyring {
    let (phone, msp) = platform.acme("alice@acme.example").await;
    for name in ["contoso", "fabrikam"] {
        let (status, _) = Platform::call(
            platform
                .as_user(&msp, Method::POST, "acme", "/api/v1/customers")
                .json(&json!({"name": name, "display_name": name})),
        )
        .await;
        assert_eq!(status, 201);
    }
    phone
}

/// Sets up a customer with a password user and desktop login; answers an admin session on
/// its host.
async fn customer(platform: &Platform, phone: &Keyring, msp: &str, name: &str) -> String {
    let host = format!("{name}-{msp}");
    let admin = platform.login(phone, &host).await;
    let call = |method: Method, path: &str, body: Value| {
        Platform::call(platform.as_user(&admin, method, &host, path).json(&body))
    };
    assert_eq!(
        call(
            Method::PUT,
            "/api/v1/settings/master-key",
            json!({"enabled": true})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            Method::PUT,
            "/api/v1/settings/desktop-login",
            json!({"enabled": true, "method": "password"})
        )
        .await
        .0,
        200
    );
    let (status, _) = call(
        Method::POST,
        "/api/v1/users",
        json!({"first_name": "Billy", "last_name": "Jones", "username": "Billy",
               "email": "billy@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        call(
            Method::PUT,
            "/api/v1/accounts/shared",
            json!({"username": "idem-admin"})
        )
        .await
        .0,
        200
    );
    admin
}

async fn enroll(platform: &Platform, admin: &str, host: &str) -> (String, String) {
    let (_, token) = Platform::call(platform.as_user(
        admin,
        Method::POST,
        host,
        "/api/v1/agent/enrollment-tokens",
    ))
    .await;
    let (status, enrolled) = Platform::call(
        platform
            .request(Method::POST, host, "/api/v1/agent/enroll")
            .json(&json!({"enrollment_token": token["token"], "hostname": "WS-01"})),
    )
    .await;
    assert_eq!(status, 201, "{enrolled}");
    (
        enrolled["device_id"].as_str().unwrap().to_owned(),
        enrolled["device_token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_enroll_follow_the_feed_and_check_logins() {
    let platform = Platform::start().await;
    let phone = acme_with_contoso_and_fabrikam(&platform).await;
    let host = "contoso-acme";
    let admin = customer(&platform, &phone, "acme", "contoso").await;
    let other_admin = customer(&platform, &phone, "acme", "fabrikam").await;

    // Enrollment: the token works once, on its tenant's host only.
    let (_, token) = Platform::call(platform.as_user(
        &admin,
        Method::POST,
        host,
        "/api/v1/agent/enrollment-tokens",
    ))
    .await;
    let enroll_with = |label: &str, token: &Value| {
        Platform::call(
            platform
                .request(Method::POST, label, "/api/v1/agent/enroll")
                .json(&json!({"enrollment_token": token, "hostname": "WS-01"})),
        )
    };
    assert_eq!(enroll_with("fabrikam-acme", &token["token"]).await.0, 401);
    assert_eq!(enroll_with("acme", &token["token"]).await.0, 404);
    let (status, enrolled) = enroll_with(host, &token["token"]).await;
    assert_eq!(status, 201);
    assert_eq!(enroll_with(host, &token["token"]).await.0, 401, "one use");
    assert_eq!(enroll_with(host, &json!("made-up")).await.0, 401);
    let device = enrolled["device_id"].as_str().unwrap().to_owned();
    let credential = enrolled["device_token"].as_str().unwrap().to_owned();
    let as_agent = |method: Method, label: &str, path: &str| {
        platform
            .request(method, label, path)
            .bearer_auth(&credential)
    };

    // The feed: a snapshot first, never a password or verifier.
    let (status, snapshot) =
        Platform::call(as_agent(Method::GET, host, "/api/v1/agent/changes")).await;
    assert_eq!(status, 200);
    assert_eq!(snapshot["snapshot"], true);
    let text = snapshot.to_string();
    assert!(!text.contains("sealed:") && !text.contains("argon2") && !text.contains(PASSWORD));
    let types: Vec<&str> = snapshot["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    for expected in ["user_upserted", "desktop_login", "shared_account"] {
        assert!(types.contains(&expected), "{types:?}");
    }
    let next = snapshot["next"].as_u64().unwrap();
    let (_, empty) = Platform::call(as_agent(
        Method::GET,
        host,
        &format!("/api/v1/agent/changes?after={next}"),
    ))
    .await;
    assert_eq!(empty["changes"], json!([]));
    assert_eq!(empty["next"], next);
    assert_eq!(
        Platform::call(as_agent(
            Method::GET,
            host,
            "/api/v1/agent/changes?after=soon"
        ))
        .await
        .0,
        422
    );

    // A long-poll is answered by the next commit, not by its timeout.
    let waiting = tokio::spawn(
        as_agent(
            Method::GET,
            host,
            &format!("/api/v1/agent/changes?after={next}&wait=50"),
        )
        .send(),
    );
    let (status, _) = Platform::call(
        platform
            .as_user(&admin, Method::POST, host, "/api/v1/users")
            .json(&json!({"first_name": "Carol", "last_name": "C", "username": "carol", "email": "c@example.com"})),
    )
    .await;
    assert_eq!(status, 201);
    let answer = tokio::time::timeout(Duration::from_secs(40), waiting)
        .await
        .expect("the long-poll was woken by the commit")
        .unwrap()
        .unwrap();
    let page: Value = answer.json().await.unwrap();
    assert_eq!(page["changes"][0]["username"], "carol", "{page}");
    assert!(page["next"].as_u64().unwrap() > next);

    // Password logins, each recorded.
    let login = |username: &str, password: &str, exists: bool| {
        Platform::call(as_agent(Method::POST, host, "/api/v1/agent/login").json(
            &json!({"username": username, "password": password, "local_account_exists": exists}),
        ))
    };
    let (status, ok) = login("billy", PASSWORD, false).await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["username"], "Billy");
    assert_eq!(ok["password_version"], 1);
    // The seq the check saw: past the snapshot's, as Carol was added since.
    assert!(ok["seq"].as_u64().unwrap() > next, "{ok}");
    assert_eq!(
        ok["local_account"],
        json!({"username": "Billy", "action": "create"})
    );
    let (_, ok) = login("BILLY", PASSWORD, true).await;
    assert_eq!(ok["local_account"]["action"], "takeover");
    assert_eq!(login("billy", "wrong-password", false).await.0, 401);
    assert_eq!(login("nobody", PASSWORD, false).await.0, 401);
    assert_eq!(
        login("carol", PASSWORD, false).await.0,
        401,
        "no password set"
    );
    let export = platform.audit_export(&admin, host).await;
    let outcomes: Vec<String> = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "DesktopLoginRecorded")
        .map(|e| e["data"]["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        outcomes,
        [
            "succeeded",
            "succeeded",
            "wrong_password",
            "unknown_user",
            "wrong_password"
        ]
    );
    assert!(!export.contains(PASSWORD));

    // Branding for the login screen.
    let (status, branding) =
        Platform::call(as_agent(Method::GET, host, "/api/v1/agent/branding")).await;
    assert_eq!((status, branding["version"].clone()), (200, json!(0)));

    // A device of one tenant is nothing on another; a session is not a device credential.
    let (_, other_credential) = enroll(&platform, &other_admin, "fabrikam-acme").await;
    assert_eq!(
        Platform::call(as_agent(
            Method::GET,
            "fabrikam-acme",
            "/api/v1/agent/changes"
        ))
        .await
        .0,
        401
    );
    assert_eq!(
        Platform::call(
            platform
                .request(Method::GET, host, "/api/v1/agent/changes")
                .bearer_auth(&other_credential)
        )
        .await
        .0,
        401
    );
    assert_eq!(
        Platform::call(platform.as_user(&admin, Method::GET, host, "/api/v1/agent/changes"))
            .await
            .0,
        401
    );

    // Listed, then revoked: refused from the next request on.
    let (_, devices) =
        Platform::call(platform.as_user(&admin, Method::GET, host, "/api/v1/agent/devices")).await;
    assert_eq!(devices.as_array().unwrap().len(), 1);
    assert_eq!(devices[0]["name"], "WS-01");
    let (status, _) = Platform::call(platform.as_user(
        &admin,
        Method::DELETE,
        host,
        &format!("/api/v1/agent/devices/{device}"),
    ))
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        Platform::call(as_agent(Method::GET, host, "/api/v1/agent/changes"))
            .await
            .0,
        401
    );
    assert_eq!(login("billy", PASSWORD, false).await.0, 401);
    platform.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn elevation_and_passwordless_login_are_approved_on_a_phone() {
    let platform = Platform::start().await;
    let (alice_phone, msp) = platform.acme_with_contoso("alice@acme.example").await;
    // Bob: a technician without delegation.
    let (_, bob) = Platform::call(
        platform
            .as_user(&msp, Method::POST, "acme", "/api/v1/users")
            .json(&json!({"email": "bob@acme.example"})),
    )
    .await;
    let mut bob_phone = Keyring::default();
    platform
        .enroll(&mut bob_phone, "acme", "bob@acme.example")
        .await;
    let host = "contoso-acme";
    let admin = customer(&platform, &alice_phone, "acme", "contoso").await;
    let (_, credential) = enroll(&platform, &admin, host).await;
    let as_agent = |method: Method, path: &str| {
        platform
            .request(method, host, path)
            .bearer_auth(&credential)
    };

    // Elevated access: the agent shows a QR code; Bob (not delegated) is refused and recorded.
    let (status, challenge) = Platform::call(
        as_agent(Method::POST, "/api/v1/agent/challenges").json(&json!({"purpose": "elevate"})),
    )
    .await;
    assert_eq!(status, 201, "{challenge}");
    let id = challenge["id"].as_str().unwrap().to_owned();
    let qr = challenge["qr"].as_str().unwrap().to_owned();
    let refused = agent::authenticator::approve(&bob_phone, &qr)
        .await
        .unwrap_err();
    assert!(refused.to_string().starts_with("403"), "{refused}");
    // Nobody but the agent sees its challenge, not even on the portal's poll.
    let (status, _) = Platform::call(platform.request(
        Method::GET,
        host,
        &format!("/api/v1/login/challenges/{id}"),
    ))
    .await;
    assert_eq!(status, 404);
    // Alice (admin: every customer) approves; the agent gets the shared account once.
    let waiting = tokio::spawn(
        as_agent(
            Method::GET,
            &format!("/api/v1/agent/challenges/{id}?wait=30"),
        )
        .send(),
    );
    agent::authenticator::approve(&alice_phone, &qr)
        .await
        .unwrap();
    let answer: Value = tokio::time::timeout(Duration::from_secs(40), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], "approved");
    assert_eq!(answer["account"]["username"], "idem-admin");
    assert_eq!(answer["technician"]["email"], "alice@acme.example");
    let elevated = answer.clone();
    let (_, again) = Platform::call(as_agent(
        Method::GET,
        &format!("/api/v1/agent/challenges/{id}"),
    ))
    .await;
    assert_eq!(again, json!({"status": "approved"}));

    // Passwordless: Billy is invited, onboards his phone on the customer's host, approves.
    let (_, users) =
        Platform::call(platform.as_user(&admin, Method::GET, host, "/api/v1/users")).await;
    let billy = users[0]["id"].as_str().unwrap().to_owned();
    let (status, _) = Platform::call(platform.as_user(
        &admin,
        Method::POST,
        host,
        &format!("/api/v1/users/{billy}/passwordless"),
    ))
    .await;
    assert_eq!(status, 200);
    let mut billy_phone = Keyring::default();
    platform
        .enroll(&mut billy_phone, host, "billy@example.com")
        .await;
    // Only while the tenant's desktop login is passwordless.
    let desktop_challenge = || {
        Platform::call(
            as_agent(Method::POST, "/api/v1/agent/challenges").json(&json!({"purpose": "desktop"})),
        )
    };
    assert_eq!(desktop_challenge().await.0, 403);
    let (status, _) = Platform::call(
        platform
            .as_user(&admin, Method::PUT, host, "/api/v1/settings/desktop-login")
            .json(&json!({"enabled": true, "method": "passwordless"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, challenge) = desktop_challenge().await;
    assert_eq!(status, 201, "{challenge}");
    let id = challenge["id"].as_str().unwrap().to_owned();
    // A technician's phone cannot approve a user's login.
    assert!(
        agent::authenticator::approve(&alice_phone, challenge["qr"].as_str().unwrap())
            .await
            .is_err()
    );
    agent::authenticator::approve(&billy_phone, challenge["qr"].as_str().unwrap())
        .await
        .unwrap();
    let (_, answer) = Platform::call(as_agent(
        Method::GET,
        &format!("/api/v1/agent/challenges/{id}"),
    ))
    .await;
    assert_eq!(answer["status"], "approved");
    assert_eq!(answer["user"]["username"], "Billy");

    // Bad purposes; both outcomes are in the audit log.
    let (status, _) = Platform::call(
        as_agent(Method::POST, "/api/v1/agent/challenges").json(&json!({"purpose": "portal"})),
    )
    .await;
    assert_eq!(status, 422);
    let export = platform.audit_export(&admin, host).await;
    let recorded: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "ElevationRecorded")
        .collect();
    let elevations: Vec<(String, String)> = recorded
        .iter()
        .map(|e| {
            (
                e["data"]["technician_id"].as_str().unwrap().to_owned(),
                e["data"]["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // The approval told the agent where the service recorded it.
    assert_eq!(elevated["account"]["elevation_seq"], recorded[1]["seq"]);
    assert_eq!(elevations.len(), 2);
    assert_eq!(
        elevations[0],
        (bob["id"].as_str().unwrap().to_owned(), "denied".to_owned())
    );
    assert_eq!(elevations[1].1, "succeeded");
    assert!(export.contains("\"method\":\"passwordless\""));
    platform.server.shutdown().await;
}

/// The root key wraps every tenant's data key: idemd refuses to start on a log that holds
/// events without the root key it was written with, instead of making a new one that opens
/// none of them, and refuses another deployment's root key; the right one opens everything
/// again (a workstation login checks the password against the verifier sealed before).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idemd_refuses_to_start_with_a_lost_or_different_root_key() {
    let platform = Platform::start().await;
    let (phone, _) = platform.acme_with_contoso("alice@acme.example").await;
    let admin = customer(&platform, &phone, "acme", "contoso").await;
    let (_, device_token) = enroll(&platform, &admin, "contoso-acme").await;
    let stopped = platform.stop().await;
    let root_key = stopped.dir.join("root.key");
    let right_key = std::fs::read(&root_key).unwrap();

    // Lost: the file is gone, and none is made in its place.
    std::fs::remove_file(&root_key).unwrap();
    let (refused, stopped) = stopped.start_with(|_| {}).await.err().unwrap();
    let message = refused.to_string();
    assert!(message.contains("already holds events"), "{message}");
    assert!(message.contains("root.key"), "{message}");
    assert!(!root_key.exists());

    // Different: another deployment's key (made by a fresh platform, mode 0600).
    let other = Platform::start().await.stop().await;
    let other_key = other.dir.join("root.key");
    let (refused, stopped) = stopped
        .start_with(|settings| settings.root_key_file = Some(other_key.clone()))
        .await
        .err()
        .unwrap();
    let message = refused.to_string();
    assert!(
        message.contains("does not open the tenant keys stored in the log"),
        "{message}"
    );

    // The right key back.
    std::fs::write(&root_key, &right_key).unwrap();
    std::fs::set_permissions(
        &root_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let platform = match stopped.start_with(|_| {}).await {
        Ok(platform) => platform,
        Err((e, _)) => panic!("the right root key was refused: {e}"),
    };
    let (status, ok) = Platform::call(
        platform
            .request(Method::POST, "contoso-acme", "/api/v1/agent/login")
            .bearer_auth(&device_token)
            .json(&json!({"username": "billy", "password": PASSWORD,
                          "local_account_exists": false})),
    )
    .await;
    assert_eq!(status, 200, "{ok}");
}

/// The ids of the enrollment tokens `label`'s admin sees as not used yet.
async fn pending_tokens(platform: &Platform, admin: &str, label: &str) -> Vec<String> {
    let (status, list) = Platform::call(platform.as_user(
        admin,
        Method::GET,
        label,
        "/api/v1/agent/enrollment-tokens",
    ))
    .await;
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_tokens_are_listed_until_used_and_can_be_revoked_before() {
    let platform = Platform::start().await;
    let phone = acme_with_contoso_and_fabrikam(&platform).await;
    let host = "contoso-acme";
    let admin = platform.login(&phone, host).await;
    let other = platform.login(&phone, "fabrikam-acme").await;
    let tokens_path = "/api/v1/agent/enrollment-tokens";
    let issue = || async {
        let (status, token) =
            Platform::call(platform.as_user(&admin, Method::POST, host, tokens_path)).await;
        assert_eq!(status, 201, "{token}");
        token
    };
    let enroll_with = |token: &Value| {
        Platform::call(
            platform
                .request(Method::POST, host, "/api/v1/agent/enroll")
                .json(&json!({"enrollment_token": token, "hostname": "WS-01"})),
        )
    };
    let leaked = issue().await;
    let kept = issue().await;
    let id = |token: &Value| token["id"].as_str().unwrap().to_owned();
    assert_eq!(
        pending_tokens(&platform, &admin, host).await,
        [id(&leaked), id(&kept)]
    );
    // The list holds ids and times, never the token itself.
    let (_, list) = Platform::call(platform.as_user(&admin, Method::GET, host, tokens_path)).await;
    assert!(!list.to_string().contains(leaked["token"].as_str().unwrap()));
    assert_eq!(list[0]["expires_at"], leaked["expires_at"]);

    // Another tenant's admin can neither see nor revoke them.
    let revoke_path = format!("{tokens_path}/{}", id(&leaked));
    let (status, _) =
        Platform::call(platform.as_user(&other, Method::DELETE, "fabrikam-acme", &revoke_path))
            .await;
    assert_eq!(status, 404);
    let (status, list) =
        Platform::call(platform.as_user(&other, Method::GET, "fabrikam-acme", tokens_path)).await;
    assert_eq!((status, list), (200, json!([])));
    let (status, _) = Platform::call(platform.request(Method::DELETE, host, &revoke_path)).await;
    assert_eq!(status, 401);

    // Revoked: it enrolls nothing, leaves the list, and is recorded.
    let (status, _) =
        Platform::call(platform.as_user(&admin, Method::DELETE, host, &revoke_path)).await;
    assert_eq!(status, 204);
    assert_eq!(enroll_with(&leaked["token"]).await.0, 401);
    assert_eq!(pending_tokens(&platform, &admin, host).await, [id(&kept)]);
    let (status, _) =
        Platform::call(platform.as_user(&admin, Method::DELETE, host, &revoke_path)).await;
    assert_eq!(status, 404, "revoked once");
    let events = platform.audit_events(&admin, host).await;
    assert!(events.iter().any(|e| e["type"] == "EnrollmentTokenRevoked"
        && e["data"]["token_id"] == leaked["id"]));

    // The other token still enrolls; once used it leaves the list and cannot be revoked.
    let (status, _) = enroll_with(&kept["token"]).await;
    assert_eq!(status, 201);
    assert!(pending_tokens(&platform, &admin, host).await.is_empty());
    let (status, _) = Platform::call(platform.as_user(
        &admin,
        Method::DELETE,
        host,
        &format!("{tokens_path}/{}", id(&kept)),
    ))
    .await;
    assert_eq!(status, 404);
    for bad in ["not-a-uuid", &uuid::Uuid::now_v7().to_string()] {
        let (status, _) = Platform::call(platform.as_user(
            &admin,
            Method::DELETE,
            host,
            &format!("{tokens_path}/{bad}"),
        ))
        .await;
        assert_eq!(status, 404, "{bad}");
    }
    platform.server.shutdown().await;
}

/// `POST /api/v1/agent/password`: the new password is checked first (the tenant's policy,
/// not the current one) at no cost; the current one as a login checks it (401 alike for an
/// unknown user, a disabled one, a wrong password); only an enrolled device of the user's
/// own tenant asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_change_at_a_workstation_checks_both_passwords() {
    const NEW: &str = "Another-Long-Password-7";
    let platform = Platform::start().await;
    let phone = acme_with_contoso_and_fabrikam(&platform).await;
    let admin = customer(&platform, &phone, "acme", "contoso").await;
    let other_admin = customer(&platform, &phone, "acme", "fabrikam").await;
    let host = "contoso-acme";
    let (_, device) = enroll(&platform, &admin, host).await;
    let (_, other_device) = enroll(&platform, &other_admin, "fabrikam-acme").await;
    let change = |credential: &str, host: &str, body: Value| {
        Platform::call(
            platform
                .request(Method::POST, host, "/api/v1/agent/password")
                .bearer_auth(credential)
                .json(&body),
        )
    };
    let body = |username: &str, password: &str, new_password: &str| json!({"username": username, "password": password, "new_password": new_password});
    let recorded = async || {
        platform
            .audit_events(&admin, host)
            .await
            .into_iter()
            .filter(|e| e["type"] == "DesktopLoginRecorded")
            .count()
    };

    let (status, problem) = change(&device, host, body("billy", PASSWORD, "short")).await;
    assert_eq!(
        (status, &problem["errors"][0]["field"]),
        (422, &json!("new_password"))
    );
    let (status, problem) = change(
        &device,
        host,
        json!({"username": "billy", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 400, "malformed: {problem}");
    assert_eq!(recorded().await, 0, "nothing was checked");

    assert_eq!(
        change(&device, host, body("billy", "wrong-password", NEW))
            .await
            .0,
        401
    );
    assert_eq!(
        change(&device, host, body("nobody", PASSWORD, NEW)).await.0,
        401
    );
    assert_eq!(recorded().await, 2, "each refusal recorded");
    // Another tenant's device, a session: neither changes anything here.
    assert_eq!(
        change(&other_device, host, body("billy", PASSWORD, NEW))
            .await
            .0,
        401
    );
    assert_eq!(
        change(&admin, host, body("billy", PASSWORD, NEW)).await.0,
        401
    );

    let (status, answer) = change(&device, host, body("billy", PASSWORD, NEW)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["username"], &answer["password_version"]),
        (&json!("Billy"), &json!(2))
    );
    let head = platform.audit_events(&admin, host).await.last().unwrap()["seq"].clone();
    assert!(
        answer["seq"].as_u64().unwrap() < head.as_u64().unwrap(),
        "the change's, before the login's record"
    );
    let login = |password: &str| {
        Platform::call(
            platform
                .request(Method::POST, host, "/api/v1/agent/login")
                .bearer_auth(&device)
                .json(&json!({"username": "billy", "password": password})),
        )
    };
    assert_eq!(login(PASSWORD).await.0, 401);
    assert_eq!(login(NEW).await.0, 200);
    // Fabrikam's Billy (same username, same password) is another user: unchanged.
    let (status, _) = Platform::call(
        platform
            .request(Method::POST, "fabrikam-acme", "/api/v1/agent/login")
            .bearer_auth(&other_device)
            .json(&json!({"username": "billy", "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 200);

    // A disabled user changes nothing.
    let users = platform
        .call_as(&admin, Method::GET, host, "/api/v1/users", None)
        .await
        .1;
    let billy = users[0]["id"].as_str().unwrap().to_owned();
    platform
        .call_as(
            &admin,
            Method::PATCH,
            host,
            &format!("/api/v1/users/{billy}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(
        change(&device, host, body("billy", NEW, PASSWORD)).await.0,
        401
    );
    let outcomes: Vec<_> = platform
        .audit_events(&admin, host)
        .await
        .into_iter()
        .filter(|e| e["type"] == "DesktopLoginRecorded")
        .map(|e| e["data"]["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        outcomes,
        [
            "wrong_password",
            "unknown_user",
            "succeeded",
            "wrong_password",
            "succeeded",
            "disabled"
        ]
    );
    platform.server.shutdown().await;
}
