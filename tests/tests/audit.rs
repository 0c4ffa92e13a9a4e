//! The audit routes over real HTTP: the NDJSON export checks offline (and a tampered line does
//! not), the server-side verification agrees with it, the state replayed at a time matches
//! what the read models said then; the operator's export of the stopped service is the same
//! file; and only admins may read a tenant's audit log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agent::authenticator::Keyring;
use api::Settings;
use harness::Platform;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_export_verifies_offline_and_the_replayed_state_matches_the_read_models() {
    let platform = Platform::start().await;
    let (_, admin) = platform.acme("alice@acme.example").await;
    let call = |method: Method, label: &str, path: &str, body: Option<Value>| {
        let mut request = platform.as_user(&admin, method, label, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Platform::call(request)
    };
    let (_, contoso) = call(
        Method::POST,
        "acme",
        "/api/v1/customers",
        Some(json!({"name": "contoso", "display_name": "Contoso"})),
    )
    .await;
    let (status, tech) = call(
        Method::POST,
        "acme",
        "/api/v1/users",
        Some(json!({"email": "bob@acme.example"})),
    )
    .await;
    assert_eq!(status, 201);

    // The state as it stood before Bob was made admin, as the read models showed it then.
    let (_, users_then) = call(Method::GET, "acme", "/api/v1/users", None).await;
    let (status, _) = call(
        Method::POST,
        "acme",
        &format!("/api/v1/users/{}/admin", tech["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    // "Then" is when Bob was added: his event's time, from the export.
    let added: Value = platform
        .audit_events(&admin, "acme")
        .await
        .into_iter()
        .find(|e| e["type"] == "MspUserAdded")
        .unwrap();
    let at = added["occurred_at"].as_str().unwrap().to_owned();
    let (status, replayed) = Platform::call(
        platform
            .as_user(&admin, Method::GET, "acme", "/api/v1/audit/state")
            .query(&[("at", at.as_str())]),
    )
    .await;
    assert_eq!(status, 200, "{replayed}");
    let summary = |users: &Value| -> Vec<(String, bool)> {
        let mut list: Vec<_> = users
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["email"].as_str().unwrap().to_owned(),
                    u["admin"].as_bool().unwrap(),
                )
            })
            .collect();
        list.sort();
        list
    };
    assert_eq!(summary(&replayed["state"]["users"]), summary(&users_then));
    assert_eq!(
        summary(&replayed["state"]["users"]),
        [
            ("alice@acme.example".into(), true),
            ("bob@acme.example".into(), false)
        ]
    );
    let (_, now) = call(Method::GET, "acme", "/api/v1/audit/state", None).await;
    let (_, users_now) = call(Method::GET, "acme", "/api/v1/users", None).await;
    assert_eq!(summary(&now["state"]["users"]), summary(&users_now));
    // The MSP's log names its customers by id; their names are in their own logs.
    assert_eq!(now["state"]["customers"], json!([{ "id": contoso["id"] }]));
    let (status, _) = Platform::call(
        platform
            .as_user(&admin, Method::GET, "acme", "/api/v1/audit/state")
            .query(&[("at", "yesterday")]),
    )
    .await;
    assert_eq!(status, 422);

    // The export, checked with nothing but its bytes, agrees with the server's verification.
    let answer = platform
        .as_user(&admin, Method::GET, "acme", "/api/v1/audit/events")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["content-type"], "application/x-ndjson");
    let export = answer.text().await.unwrap();
    let offline = api::audit::verify_file(export.as_bytes()).unwrap();
    assert!(offline.is_valid(), "{offline:?}");
    let (_, server) = call(Method::GET, "acme", "/api/v1/audit/verify", None).await;
    assert_eq!(server["valid"], true);
    assert_eq!(server["events"], offline.events);
    assert_eq!(server["head_hash"], offline.head_hash);
    // The head, read without walking the chain, is where the walk ended.
    let (status, head) = call(Method::GET, "acme", "/api/v1/audit/head", None).await;
    assert_eq!(status, 200);
    assert_eq!(head["head_seq"], server["head_seq"]);
    assert_eq!(head["head_seq"], export.lines().count());
    assert_eq!(head["head_hash"], offline.head_hash);
    assert!(export.contains("\"type\":\"AdminGranted\""));
    // Paging: two events after the first, with the next page named.
    let page = platform
        .as_user(
            &admin,
            Method::GET,
            "acme",
            "/api/v1/audit/events?after=1&limit=2",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(page.headers()["idem-next-after"], "3");
    assert_eq!(page.text().await.unwrap().lines().count(), 2);

    // One changed field, one missing line: caught, with the line named.
    let lines: Vec<&str> = export.lines().collect();
    let tampered = export.replacen("bob@acme.example", "eve@acme.example", 1);
    let report = api::audit::verify_file(tampered.as_bytes()).unwrap();
    assert!(!report.is_valid());
    let missing = [lines[..2].join("\n"), lines[3..].join("\n")].join("\n");
    let report = api::audit::verify_file(missing.as_bytes()).unwrap();
    assert_eq!(report.broken.as_ref().unwrap().0, 3, "{report:?}");

    // Only admins (and auditors) read the audit log: Bob, admin no more, is refused.
    let (status, _) = call(
        Method::DELETE,
        "acme",
        &format!("/api/v1/users/{}/admin", tech["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let mut bob_phone = Keyring::default();
    platform
        .enroll(&mut bob_phone, "acme", "bob@acme.example")
        .await;
    let bob = platform.login(&bob_phone, "acme").await;
    for path in [
        "/api/v1/audit/events",
        "/api/v1/audit/head",
        "/api/v1/audit/verify",
        "/api/v1/audit/state",
    ] {
        let (status, _) = Platform::call(platform.as_user(&bob, Method::GET, "acme", path)).await;
        assert_eq!(status, 403, "{path}");
    }

    // The operator's export of the stopped service is the same file, and checks.
    let final_export = platform.audit_export(&admin, "acme").await;
    let dir = platform.dir.clone();
    platform.server.shutdown().await;
    let config = Settings {
        data_dir: Some(dir),
        ..Settings::default()
    }
    .resolve()
    .unwrap();
    let mut file = Vec::new();
    let count = api::operator::export(&config, "acme", &mut file)
        .await
        .unwrap();
    assert_eq!(String::from_utf8(file.clone()).unwrap(), final_export);
    assert_eq!(count as usize, final_export.lines().count());
    assert!(api::audit::verify_file(file.as_slice()).unwrap().is_valid());
    let reports = api::operator::verify(&config, None).await.unwrap();
    assert_eq!(reports.len(), 2, "the MSP and its customer");
    assert!(reports.iter().all(|r| r.is_valid()));
}

/// A tenant's state at a time is replayed page by page (never its whole stream in memory):
/// with more events than one page, the state and seq at a time on the second page are those
/// of exactly the events up to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_at_a_time_is_replayed_across_pages_of_a_long_history() {
    use eventlog::{EventLog, Expected, NewEvent, StreamAppend, StreamId};

    let platform = Platform::start().await;
    let (_, admin) = platform.acme("alice@acme.example").await;
    let (status, bob) = Platform::call(
        platform
            .as_user(&admin, Method::POST, "acme", "/api/v1/users")
            .json(&json!({"email": "bob@acme.example"})),
    )
    .await;
    assert_eq!(status, 201);
    let events = platform.audit_events(&admin, "acme").await;
    let acme = StreamId(
        events[0]["data"]["tenant_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
    );
    let before = events.len() as u64;

    // Given: Bob made admin and revoked in turn, one second apart from tomorrow on; the last
    // of 4,501 toggles grants (more than one page of 4,096 events).
    let log = platform.server.log().unwrap();
    let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
    let toggles = 4501u32;
    let toggle = |i: u32| NewEvent {
        id: uuid::Uuid::now_v7(),
        event_type: if i.is_multiple_of(2) {
            "AdminGranted"
        } else {
            "AdminRevoked"
        }
        .into(),
        schema_version: 1,
        occurred_at: tomorrow + chrono::Duration::seconds(i.into()),
        actor: format!("user:{}", bob["id"].as_str().unwrap()),
        data: json!({"user_id": bob["id"]}).to_string().into_bytes(),
    };
    log.append(StreamAppend::new(acme, Expected::At(before)).events((0..toggles).map(toggle)))
        .await
        .unwrap();
    drop(log);

    let state_at = |at: Option<chrono::DateTime<chrono::Utc>>| {
        let mut request = platform.as_user(&admin, Method::GET, "acme", "/api/v1/audit/state");
        if let Some(at) = at {
            request = request.query(&[("at", at.to_rfc3339())]);
        }
        Platform::call(request)
    };
    let bob_is_admin = |state: &Value| {
        state["state"]["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["email"] == "bob@acme.example")
            .unwrap()["admin"]
            .as_bool()
            .unwrap()
    };
    // Now: none of tomorrow's toggles yet.
    let (status, now) = state_at(None).await;
    assert_eq!(status, 200, "{now}");
    assert_eq!(now["seq"], before);
    assert!(!bob_is_admin(&now));
    // Up to toggle 4,200 (a grant, on the stream's second page), 4,201, and the last.
    for (last, admin) in [(4200u32, true), (4201, false), (toggles - 1, true)] {
        let (status, then) =
            state_at(Some(tomorrow + chrono::Duration::seconds(last.into()))).await;
        assert_eq!(status, 200, "{then}");
        assert_eq!(
            then["seq"],
            before + u64::from(last) + 1,
            "after toggle {last}"
        );
        assert_eq!(bob_is_admin(&then), admin, "after toggle {last}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_reads_one_tenants_audit_log_and_nothing_else() {
    let platform = Platform::start().await;
    let (_, admin) = platform.acme("alice@acme.example").await;
    for name in ["contoso", "fabrikam"] {
        let (status, _) = Platform::call(
            platform
                .as_user(&admin, Method::POST, "acme", "/api/v1/customers")
                .json(&json!({"name": name, "display_name": name})),
        )
        .await;
        assert_eq!(status, 201);
    }
    let (_, bob) = Platform::call(
        platform
            .as_user(&admin, Method::POST, "acme", "/api/v1/users")
            .json(&json!({"email": "bob@acme.example"})),
    )
    .await;
    let bob_id = bob["id"].as_str().unwrap().to_owned();
    let (status, _) = Platform::call(
        platform
            .as_user(
                &admin,
                Method::POST,
                "acme",
                &format!("/api/v1/users/{bob_id}/auditor"),
            )
            .json(&json!({"customer": "contoso"})),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = Platform::call(
        platform
            .as_user(
                &admin,
                Method::POST,
                "acme",
                &format!("/api/v1/users/{bob_id}/auditor"),
            )
            .json(&json!({"customer": "nosuch"})),
    )
    .await;
    assert_eq!(status, 404);
    // The admin sees who audits what, in the users list and on the user.
    let auditor_roles = || async {
        let (status, users) =
            Platform::call(platform.as_user(&admin, Method::GET, "acme", "/api/v1/users")).await;
        assert_eq!(status, 200);
        let roles = |email: &str| {
            let user = users
                .as_array()
                .unwrap()
                .iter()
                .find(|u| u["email"] == email);
            user.unwrap()["auditor"].clone()
        };
        let (status, one) = Platform::call(platform.as_user(
            &admin,
            Method::GET,
            "acme",
            &format!("/api/v1/users/{bob_id}"),
        ))
        .await;
        assert_eq!(status, 200);
        assert_eq!(one["auditor"], roles("bob@acme.example"));
        (roles("bob@acme.example"), roles("alice@acme.example"))
    };
    assert_eq!(
        auditor_roles().await,
        (
            json!({"msp": false, "customers": ["contoso"]}),
            json!({"msp": false, "customers": []})
        )
    );
    // So does the admin portal's users page.
    let page = platform.page(&admin, "acme", "/admin/users").await;
    assert_eq!(page.matches("Auditor of contoso").count(), 1, "{page}");

    let mut bob_phone = Keyring::default();
    platform
        .enroll(&mut bob_phone, "acme", "bob@acme.example")
        .await;
    let auditor = platform.login(&bob_phone, "contoso-acme").await;
    let get =
        |path: &str| Platform::call(platform.as_user(&auditor, Method::GET, "contoso-acme", path));
    let (status, me) = get("/api/v1/me").await;
    assert_eq!((status, me["roles"].clone()), (200, json!(["auditor"])));
    for path in [
        "/api/v1/audit/events",
        "/api/v1/audit/head",
        "/api/v1/audit/verify",
        "/api/v1/audit/state",
    ] {
        assert_eq!(get(path).await.0, 200, "{path}");
    }
    for path in [
        "/api/v1/users",
        "/api/v1/settings/master-key",
        "/api/v1/accounts/shared",
    ] {
        assert_eq!(get(path).await.0, 403, "{path}");
    }
    let (status, _) = Platform::call(
        platform
            .as_user(
                &auditor,
                Method::PUT,
                "contoso-acme",
                "/api/v1/settings/desktop-login",
            )
            .json(&json!({"enabled": true, "method": "password"})),
    )
    .await;
    assert_eq!(status, 403);
    // Not an auditor of Fabrikam: the approval there is refused.
    let (id, qr) = platform.challenge("fabrikam-acme").await;
    assert!(
        agent::authenticator::approve(&bob_phone, &qr)
            .await
            .is_err()
    );
    assert_eq!(
        platform.poll("fabrikam-acme", &id, 0).await["status"],
        "pending"
    );

    // Revoked: the session ends at once.
    let (status, _) = Platform::call(platform.as_user(
        &admin,
        Method::DELETE,
        "acme",
        &format!("/api/v1/users/{bob_id}/auditor?customer=contoso"),
    ))
    .await;
    assert_eq!(status, 204);
    assert_eq!(get("/api/v1/audit/verify").await.0, 401);
    assert_eq!(
        auditor_roles().await.0,
        json!({"msp": false, "customers": []})
    );
    // An auditor of the MSP itself.
    let (status, _) = Platform::call(
        platform
            .as_user(
                &admin,
                Method::POST,
                "acme",
                &format!("/api/v1/users/{bob_id}/auditor"),
            )
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        auditor_roles().await.0,
        json!({"msp": true, "customers": []})
    );
    platform.server.shutdown().await;
}

/// Admins and auditors read every onboarding code's digest in the log while the code is
/// live. An 8-digit code has 10⁸ values: with a plain digest, reading it would be as good as
/// reading the mail. The digest covers the code keyed with a key derived from the root key,
/// which the log never holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_onboarding_codes_digest_in_the_log_cannot_be_searched_without_the_root_key() {
    use domain::crypto::RootKey;
    use domain::ids::UserId;
    use domain::onboarding::code_digest;

    let platform = Platform::start().await;
    let (_, admin) = platform.acme("alice@acme.example").await;
    let (status, bob) = Platform::call(
        platform
            .as_user(&admin, Method::POST, "acme", "/api/v1/users")
            .json(&json!({"email": "bob@acme.example"})),
    )
    .await;
    assert_eq!(status, 201, "{bob}");
    let bob = UserId(bob["id"].as_str().unwrap().parse().unwrap());
    agent::authenticator::request_code(&platform.url("acme"), "bob@acme.example")
        .await
        .unwrap();
    let code = platform.code_for("bob@acme.example");

    let export = platform
        .as_user(&admin, Method::GET, "acme", "/api/v1/audit/events")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let issued: Value = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "OnboardingCodeIssued")
        .map(|e| e["data"].clone())
        .find(|data| data["user_id"] == bob.0.to_string())
        .expect("Bob's code is in the log");
    let digest = issued["code_digest"].as_str().unwrap();
    assert!(
        !export.contains(&code),
        "the code itself is nowhere in the log"
    );
    // What an offline search over every 8-digit code would compute never matches...
    assert_ne!(digest, code_digest(bob, &code));
    // ...because the code is keyed first, with a key only the root key gives.
    let root = RootKey::from_file_contents(
        &std::fs::read_to_string(platform.dir.join("root.key")).unwrap(),
    )
    .unwrap();
    assert_eq!(digest, code_digest(bob, &root.code_key().keyed(&code)));

    // And the code works, once.
    let mut bob_phone = Keyring::default();
    agent::authenticator::enroll(
        &mut bob_phone,
        &platform.url("acme"),
        "bob@acme.example",
        &code,
        "Bob's phone",
    )
    .await
    .unwrap();
}

/// The brief: deleting a customer leaves in its MSP's log "the fact that it was deleted, by
/// whom and when, and nothing else of it". A customer with names found nowhere else is
/// created, delegated, given an auditor and deleted; then neither the MSP's stored events,
/// nor its audit export, nor its replayed state holds its name, display name or host label,
/// while all of them name it by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_customer_leaves_nothing_but_the_fact_in_its_msps_log() {
    use eventlog::{EventLog, StreamId};

    let platform = Platform::start().await;
    let (_, admin) = platform.acme("alice@acme.example").await;
    let call = |method: Method, path: String, body: Option<Value>| {
        let mut request = platform.as_user(&admin, method, "acme", &path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Platform::call(request)
    };
    let (status, customer) = call(
        Method::POST,
        "/api/v1/customers".into(),
        Some(json!({"name": "zanzibar", "display_name": "Quetzal Umbrellas Ltd"})),
    )
    .await;
    assert_eq!(status, 201, "{customer}");
    let customer_id = customer["id"].as_str().unwrap().to_owned();
    let (status, bob) = call(
        Method::POST,
        "/api/v1/users".into(),
        Some(json!({"email": "bob@acme.example"})),
    )
    .await;
    assert_eq!(status, 201);
    let bob = bob["id"].as_str().unwrap().to_owned();
    let (status, body) = call(
        Method::POST,
        "/api/v1/customers/zanzibar/technicians".into(),
        Some(json!({"user_id": bob})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        Method::POST,
        format!("/api/v1/users/{bob}/auditor"),
        Some(json!({"customer": "zanzibar"})),
    )
    .await;
    assert!((200..300).contains(&status), "{status} {body}");

    let traces = ["zanzibar", "Quetzal", "Umbrellas"];
    let holds_a_trace = |text: &str| traces.iter().any(|t| text.contains(t));
    // While the customer exists, its own log holds its names (so the check below can fail).
    let log = platform.server.log().unwrap();
    let own = log
        .read_stream(StreamId(customer_id.parse().unwrap()), 1, 10)
        .await
        .unwrap();
    assert!(holds_a_trace(&String::from_utf8_lossy(&own[0].data)));

    let (status, _) = call(Method::DELETE, "/api/v1/customers/zanzibar".into(), None).await;
    assert_eq!(status, 204);

    let export = platform.audit_export(&admin, "acme").await;
    let acme: Value = serde_json::from_str(export.lines().next().unwrap()).unwrap();
    let acme = StreamId(acme["data"]["tenant_id"].as_str().unwrap().parse().unwrap());
    let stored = log.read_stream(acme, 1, 10_000).await.unwrap();
    let types: Vec<&str> = stored.iter().map(|e| e.event_type.as_str()).collect();
    for expected in [
        "CustomerTenantCreated",
        "TechnicianDelegated",
        "AuditorGranted",
        "CustomerTenantDeleted",
    ] {
        assert!(types.contains(&expected), "{expected} in {types:?}");
    }
    for event in &stored {
        let data = String::from_utf8_lossy(&event.data);
        assert!(
            !holds_a_trace(&data) && !holds_a_trace(&event.actor),
            "{} #{} keeps {data}",
            event.event_type,
            event.seq
        );
    }
    assert!(
        export.contains(&customer_id),
        "the MSP's log names it by id"
    );
    assert!(!holds_a_trace(&export), "{export}");
    let (status, state) = call(Method::GET, "/api/v1/audit/state".into(), None).await;
    assert_eq!(status, 200);
    assert_eq!(state["state"]["customers"], json!([]));
    assert!(!holds_a_trace(&state.to_string()), "{state}");
    platform.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walks_of_a_tenants_whole_log_are_limited_per_tenant() {
    let platform = Platform::start().await;
    let (keyring, acme) = platform.acme_with_contoso("alice@acme.example").await;
    let walk = |token: &str, label: &str, path: &str| {
        platform.as_user(token, Method::GET, label, path).send()
    };
    // Verifying and replaying share one budget per tenant: ten in ten minutes.
    for round in 0..5 {
        for path in ["/api/v1/audit/verify", "/api/v1/audit/state"] {
            let answer = walk(&acme, "acme", path).await.unwrap();
            assert_eq!(answer.status(), 200, "{path}, round {round}");
        }
    }
    let answer = walk(&acme, "acme", "/api/v1/audit/verify").await.unwrap();
    assert_eq!(answer.status(), 429);
    let wait: u64 = answer.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let problem = harness::body(answer).await;
    assert_eq!(problem["status"], 429, "{problem}");
    assert_eq!(
        walk(&acme, "acme", "/api/v1/audit/state")
            .await
            .unwrap()
            .status(),
        429
    );
    // What does not walk the log is not limited, and another tenant has its own budget.
    for path in ["/api/v1/audit/head", "/api/v1/audit/events"] {
        assert_eq!(
            walk(&acme, "acme", path).await.unwrap().status(),
            200,
            "{path}"
        );
    }
    let contoso = platform.login(&keyring, "contoso-acme").await;
    let answer = walk(&contoso, "contoso-acme", "/api/v1/audit/verify")
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(harness::body(answer).await["valid"], true);
    platform.server.shutdown().await;
}
