//! QR login's refusals over real HTTP: replayed, forged, foreign-host and unknown-device
//! approvals, challenges asked for on the wrong host, bad bodies, rate limits; and sessions
//! across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agent::authenticator::{self, Keyring};
use harness::Platform;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// `idem://approve?...`'s host, id and nonce.
fn parts(qr: &str) -> (String, Uuid, String) {
    let c = authenticator::parse_challenge(qr).unwrap();
    (c.host, c.id, c.nonce)
}

async fn approve(
    platform: &Platform,
    label: &str,
    id: Uuid,
    device: Uuid,
    signature: &str,
) -> (u16, Value) {
    Platform::call(
        platform
            .request(
                Method::POST,
                label,
                &format!("/api/v1/login/challenges/{id}/approve"),
            )
            .json(&json!({"device_id": device, "signature": signature})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approvals_are_single_use_host_bound_and_signed_by_the_enrolled_key() {
    let platform = Platform::start().await;
    platform.signup("acme", "Acme", "alice@acme.example").await;
    platform
        .signup("globex", "Globex", "gina@globex.example")
        .await;
    let mut alice_phone = Keyring::default();
    let alice = platform
        .enroll(&mut alice_phone, "acme", "alice@acme.example")
        .await;
    let mut gina_phone = Keyring::default();
    let gina = platform
        .enroll(&mut gina_phone, "globex", "gina@globex.example")
        .await;

    // A genuine approval, then the same approval replayed.
    let (id, qr) = platform.challenge("acme").await;
    let (host, challenge, nonce) = parts(&qr);
    assert_eq!(host, "acme.localhost");
    assert_eq!(challenge.to_string(), id);
    let signature = authenticator::sign(&alice, &host, challenge, &nonce).unwrap();
    assert_eq!(
        approve(&platform, "acme", challenge, alice.device_id, &signature)
            .await
            .0,
        204
    );
    let (status, problem) =
        approve(&platform, "acme", challenge, alice.device_id, &signature).await;
    assert_eq!(status, 409, "{problem}");
    // The token is handed out once.
    let first = platform.poll("acme", &id, 0).await;
    assert_eq!(first["status"], "approved");
    let token = first["token"].as_str().unwrap().to_owned();
    let second = platform.poll("acme", &id, 0).await;
    assert_eq!(second, json!({"status": "approved"}));
    let (status, _) =
        Platform::call(platform.as_user(&token, Method::GET, "acme", "/api/v1/me")).await;
    assert_eq!(status, 200);

    // The session belongs to its host: on another MSP's host it is nothing.
    let (status, _) =
        Platform::call(platform.as_user(&token, Method::GET, "globex", "/api/v1/me")).await;
    assert_eq!(status, 401);

    // A challenge is only visible on its own host.
    let (id, qr) = platform.challenge("acme").await;
    let (host, challenge, nonce) = parts(&qr);
    let (status, _) = approve(
        &platform,
        "globex",
        challenge,
        gina.device_id,
        &authenticator::sign(&gina, &host, challenge, &nonce).unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = Platform::call(platform.request(
        Method::GET,
        "globex",
        &format!("/api/v1/login/challenges/{id}"),
    ))
    .await;
    assert_eq!(status, 404);

    // Another MSP's device, a signature over another host, a forged signature, an unknown
    // device: each refused with 401, and the challenge still waits for a genuine approval.
    let globex_device = approve(
        &platform,
        "acme",
        challenge,
        gina.device_id,
        &authenticator::sign(&gina, &host, challenge, &nonce).unwrap(),
    )
    .await;
    let other_host = approve(
        &platform,
        "acme",
        challenge,
        alice.device_id,
        &authenticator::sign(&alice, "globex.localhost", challenge, &nonce).unwrap(),
    )
    .await;
    let forged = approve(
        &platform,
        "acme",
        challenge,
        alice.device_id,
        &authenticator::sign(&gina, &host, challenge, &nonce).unwrap(),
    )
    .await;
    let unknown = approve(
        &platform,
        "acme",
        challenge,
        Uuid::now_v7(),
        &authenticator::sign(&alice, &host, challenge, &nonce).unwrap(),
    )
    .await;
    let garbage = approve(&platform, "acme", challenge, alice.device_id, "not-base64!").await;
    for (status, problem) in [globex_device, other_host, forged, unknown, garbage] {
        assert_eq!(status, 401, "{problem}");
        assert_eq!(problem["status"], 401);
    }
    assert_eq!(platform.poll("acme", &id, 0).await["status"], "pending");
    authenticator::approve(&alice_phone, &qr).await.unwrap();
    assert_eq!(platform.poll("acme", &id, 0).await["status"], "approved");

    // Unknown and malformed challenge ids.
    let (status, _) = approve(&platform, "acme", Uuid::now_v7(), alice.device_id, "x").await;
    assert_eq!(status, 404);
    let (status, _) = Platform::call(
        platform
            .request(
                Method::POST,
                "acme",
                "/api/v1/login/challenges/nope/approve",
            )
            .json(&json!({"device_id": alice.device_id, "signature": "x"})),
    )
    .await;
    assert_eq!(status, 404);

    platform.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_and_hosts_are_refused_with_problems() {
    let platform = Platform::start().await;
    platform.signup("acme", "Acme", "alice@acme.example").await;
    let challenges = "/api/v1/login/challenges";
    let cases: Vec<(&str, Option<&str>, String, u16)> = vec![
        (
            "acme",
            Some("application/json"),
            r#"{"purpose": "desktop"}"#.into(),
            422,
        ),
        (
            "acme",
            Some("application/json"),
            r#"{"purpose": 7}"#.into(),
            400,
        ),
        (
            "acme",
            Some("application/json"),
            r#"{"purpose": "portal""#.into(),
            400,
        ),
        (
            "acme",
            Some("application/json"),
            r#"{"purpose": "portal", "x": 1}"#.into(),
            400,
        ),
        (
            "acme",
            Some("text/plain"),
            r#"{"purpose": "portal"}"#.into(),
            415,
        ),
        ("acme", None, r#"{"purpose": "portal"}"#.into(), 415),
        (
            "acme",
            Some("application/json"),
            format!(r#"{{"purpose": "{}"}}"#, "p".repeat(10_000)),
            413,
        ),
        (
            "nosuch",
            Some("application/json"),
            r#"{"purpose": "portal"}"#.into(),
            404,
        ),
        (
            "",
            Some("application/json"),
            r#"{"purpose": "portal"}"#.into(),
            404,
        ),
    ];
    for (label, content_type, body, expected) in cases {
        let mut request = platform
            .request(Method::POST, label, challenges)
            .body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status().as_u16(), expected, "{label} {body:.60}");
        assert_eq!(
            answer.headers()["content-type"],
            "application/problem+json",
            "{body:.60}"
        );
    }
    // Nothing to authenticate with, or a made-up token.
    for token in [None, Some("made-up")] {
        let mut request = platform.request(Method::GET, "acme", "/api/v1/me");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        assert_eq!(Platform::call(request).await.0, 401);
    }
    platform.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_rate_limited_per_device() {
    let platform = Platform::start().await;
    platform.signup("acme", "Acme", "alice@acme.example").await;
    let (_, qr) = platform.challenge("acme").await;
    let (_, challenge, _) = parts(&qr);
    let device = Uuid::now_v7();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..40 {
        let answer = platform
            .request(
                Method::POST,
                "acme",
                &format!("/api/v1/login/challenges/{challenge}/approve"),
            )
            .json(&json!({"device_id": device, "signature": "AAAA"}))
            .send()
            .await
            .unwrap();
        if answer.status() == 429 {
            retry_after = answer.headers().get("retry-after").cloned();
        }
        statuses.push(answer.status().as_u16());
    }
    let refused = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(refused, 30, "{statuses:?}");
    assert_eq!(limited, 10);
    let seconds: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
    assert!(seconds >= 1);
    // The refusals are counted by route pattern (never by id) and by outcome.
    let metrics = platform.metrics().await;
    let route = "/api/v1/login/challenges/{id}/approve";
    for line in [
        format!("idem_rate_limited_total{{limit=\"{route}\"}} 10"),
        format!("idem_http_requests_total{{route=\"{route}\",method=\"POST\",status=\"401\"}} 30"),
        "idem_login_approvals_total{outcome=\"401\"} 30".to_owned(),
        "idem_login_challenges_total{purpose=\"portal\"} 1".to_owned(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(
        !metrics.contains(&challenge.to_string()),
        "no ids in labels"
    );
    platform.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_a_restart_and_pending_challenges_end_cleanly() {
    let platform = Platform::start().await;
    let (phone, token) = platform.acme("alice@acme.example").await;
    let (pending, _) = platform.challenge("acme").await;

    let platform = platform.restart().await;
    let (status, me) =
        Platform::call(platform.as_user(&token, Method::GET, "acme", "/api/v1/me")).await;
    assert_eq!(status, 200);
    assert_eq!(me["user"]["email"], "alice@acme.example");
    // The challenge lived in memory: the browser learns it is gone and asks for a new one.
    let (status, _) = Platform::call(platform.request(
        Method::GET,
        "acme",
        &format!("/api/v1/login/challenges/{pending}"),
    ))
    .await;
    assert_eq!(status, 404);
    let again = platform.login(&phone, "acme").await;
    assert_ne!(again, token);
    platform.server.shutdown().await;
}

/// The id of a portal challenge is in its QR code, so anyone who sees the screen can poll
/// it. A poll from someone without the creator's poll secret while the creator waits
/// withdraws the challenge: nobody gets a token, and the phone's approval is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_onlooker_polling_the_qr_codes_id_withdraws_the_challenge() {
    let platform = Platform::start().await;
    platform.signup("acme", "Acme", "alice@acme.example").await;
    let mut phone = Keyring::default();
    platform
        .enroll(&mut phone, "acme", "alice@acme.example")
        .await;
    let create = || async {
        let (status, challenge) = Platform::call(
            platform
                .request(Method::POST, "acme", "/api/v1/login/challenges")
                .json(&json!({"purpose": "portal"})),
        )
        .await;
        assert_eq!(status, 201, "{challenge}");
        let field = |name: &str| challenge[name].as_str().unwrap().to_owned();
        (field("id"), field("qr"), field("poll_secret"))
    };
    let poll = |id: &str, secret: Option<&str>, wait: u64| {
        let mut request = platform.request(
            Method::GET,
            "acme",
            &format!("/api/v1/login/challenges/{id}?wait={wait}"),
        );
        if let Some(secret) = secret {
            request = request.header("idem-poll-secret", secret);
        }
        request.send()
    };

    // The creator waits with its secret; an onlooker polls the id from the QR code.
    let (id, qr, secret) = create().await;
    assert!(!qr.contains(&secret), "the QR code never holds the secret");
    let creator = tokio::spawn(poll(&id, Some(&secret), 30));
    // The creator's poll is waiting once a poll with its secret, alone, is still pending.
    let onlooker = loop {
        let answer: Value = poll(&id, None, 0).await.unwrap().json().await.unwrap();
        if answer["status"] != "pending" {
            break answer;
        }
        // The onlooker came before the creator's poll was waiting: nothing overlapped yet.
    };
    assert_eq!(onlooker, json!({"status": "denied"}));
    let creator: Value = creator.await.unwrap().unwrap().json().await.unwrap();
    assert_eq!(creator, json!({"status": "denied"}));
    let (status, problem) =
        Platform::call(platform.request(Method::GET, "acme", "/api/v1/me")).await;
    assert_eq!(status, 401, "{problem}");
    let error = authenticator::approve(&phone, &qr).await.unwrap_err();
    assert!(error.to_string().contains("withdrawn"), "{error}");

    // Polls with the secret may overlap (two tabs of one browser), and a lone poll without
    // it is the contract's client: both get through to the approval.
    let (id, qr, secret) = create().await;
    let tabs = [
        tokio::spawn(poll(&id, Some(&secret), 30)),
        tokio::spawn(poll(&id, Some(&secret), 30)),
    ];
    authenticator::approve(&phone, &qr).await.unwrap();
    let mut tokens = 0;
    for tab in tabs {
        let answer: Value = tab.await.unwrap().unwrap().json().await.unwrap();
        assert_eq!(answer["status"], "approved", "{answer}");
        tokens += usize::from(answer["token"].is_string());
    }
    assert_eq!(tokens, 1, "the token is handed out once");
    let token = platform.login(&phone, "acme").await;
    let (status, _) =
        Platform::call(platform.as_user(&token, Method::GET, "acme", "/api/v1/me")).await;
    assert_eq!(status, 200);
}

/// Asks `acme` for a login challenge as the client `forwarded_for` says (through a proxy on
/// loopback); the answer's status.
async fn challenge_as(platform: &Platform, forwarded_for: &str) -> u16 {
    let answer = platform
        .request(Method::POST, "acme", "/api/v1/login/challenges")
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"purpose": "portal"}))
        .send()
        .await
        .unwrap();
    answer.status().as_u16()
}

/// Challenges as `forwarded_for` until one is refused; how many were created.
async fn challenges_until_refused(platform: &Platform, forwarded_for: &str) -> usize {
    for created in 0..200 {
        match challenge_as(platform, forwarded_for).await {
            201 => {}
            429 => return created,
            other => panic!("{other} from {forwarded_for}"),
        }
    }
    panic!("200 challenges from {forwarded_for} and no limit");
}

/// Behind a reverse proxy every connection comes from the proxy. With the proxy trusted, the
/// per-address limits count the client it names, and a client cannot pick the address it is
/// counted under; without, the header is nobody's word.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_per_address_count_the_client_a_trusted_proxy_names() {
    let behind_proxy = Platform::start_with(|settings| {
        settings.trusted_proxies = Some("127.0.0.1, 10.0.0.0/8".into());
    })
    .await;
    behind_proxy
        .signup("acme", "Acme", "alice@acme.example")
        .await;
    // 120 challenges per 5 minutes per address (a token comes back every 2.5 s).
    let first = challenges_until_refused(&behind_proxy, "203.0.113.1").await;
    assert!(first >= 120, "{first}");
    // Another client behind the same proxy has its own share...
    assert_eq!(
        challenge_as(&behind_proxy, "203.0.113.2, 10.1.2.3").await,
        201
    );
    // ...but the limited client cannot escape by writing an address of its own: the proxy
    // appends the address it saw, and that is the one counted.
    assert_eq!(
        challenge_as(&behind_proxy, "198.51.100.77, 203.0.113.1").await,
        429
    );

    // Nobody trusted: the header changes nothing, loopback is the client.
    let direct = Platform::start().await;
    direct.signup("acme", "Acme", "alice@acme.example").await;
    let first = challenges_until_refused(&direct, "203.0.113.1").await;
    assert!(first >= 120, "{first}");
    assert_eq!(challenge_as(&direct, "203.0.113.2").await, 429);
}

/// Adds Tom to acme as a technician (as the admin `admin`) and delegates contoso to him;
/// answers his id.
async fn tom_on_contoso(platform: &Platform, admin: &str) -> String {
    let (status, tom) = platform
        .call_as(
            admin,
            Method::POST,
            "acme",
            "/api/v1/users",
            Some(json!({"email": "tom@acme.example"})),
        )
        .await;
    assert_eq!(status, 201, "{tom}");
    let tom_id = tom["id"].as_str().unwrap().to_owned();
    let (status, body) = platform
        .call_as(
            admin,
            Method::POST,
            "acme",
            "/api/v1/customers/contoso/technicians",
            Some(json!({"user_id": tom_id})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    tom_id
}

/// A technician's phone is lost: an admin revokes it. It approves nothing more, the
/// technician's sessions end on the MSP's host and on customers' hosts at once, and a new
/// phone onboards with a new code. The same for a passwordless directory user, by a customer
/// admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_phone_is_revoked_and_a_new_one_onboards() {
    let platform = Platform::start().await;
    let (alice_phone, admin) = platform.acme_with_contoso("alice@acme.example").await;
    let tom_id = tom_on_contoso(&platform, &admin).await;
    let mut lost = Keyring::default();
    let phone = platform.enroll(&mut lost, "acme", "tom@acme.example").await;
    let on_msp = platform.login(&lost, "acme").await;
    let on_customer = platform.login(&lost, "contoso-acme").await;
    let devices = format!("/api/v1/users/{tom_id}/authenticators");
    let (status, listed) = platform
        .call_as(&admin, Method::GET, "acme", &devices, None)
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], phone.device_id.to_string());
    assert_eq!(listed[0]["kind"], "authenticator");
    let (status, own) = platform
        .call_as(&on_msp, Method::GET, "acme", &devices, None)
        .await;
    assert_eq!(
        (status, &own),
        (200, &listed),
        "a technician sees their own"
    );
    let revoke = format!("{devices}/{}", phone.device_id);

    // Tom may not revoke (he is no admin); nor may anyone from a customer's host.
    let (status, _) = platform
        .call_as(&on_msp, Method::DELETE, "acme", &revoke, None)
        .await;
    assert_eq!(status, 403);
    let (status, _) = platform
        .call_as(&on_customer, Method::DELETE, "contoso-acme", &revoke, None)
        .await;
    assert_eq!(status, 404, "Tom is no user of the customer's directory");

    let mails = platform.mails_to("tom@acme.example").len();
    let (status, body) = platform
        .call_as(&admin, Method::DELETE, "acme", &revoke, None)
        .await;
    assert_eq!(status, 204, "{body}");
    let told = platform.mails_to("tom@acme.example");
    assert_eq!(told.len(), mails + 1, "Tom is told");
    assert!(
        told[0].contains("your phone was removed")
            && told[0].contains("\"test phone\"")
            && told[0].contains("If you did not expect this"),
        "{}",
        told[0]
    );
    for (session, label) in [(&on_msp, "acme"), (&on_customer, "contoso-acme")] {
        let (status, _) = platform
            .call_as(session, Method::GET, label, "/api/v1/me", None)
            .await;
        assert_eq!(status, 401, "{label}: the session ended with the phone");
    }
    let (_, qr) = platform.challenge("acme").await;
    assert!(
        authenticator::approve(&lost, &qr).await.is_err(),
        "the lost phone approves nothing"
    );
    let (status, listed) = platform
        .call_as(&admin, Method::GET, "acme", &devices, None)
        .await;
    assert_eq!((status, listed), (200, json!([])));
    // Twice, a device that is no UUID, an unknown user: 404, nothing written.
    let head = platform.audit_events(&admin, "acme").await.len();
    for path in [
        revoke.clone(),
        format!("{devices}/not-a-device"),
        format!(
            "/api/v1/users/{}/authenticators/{}",
            Uuid::now_v7(),
            phone.device_id
        ),
    ] {
        let (status, body) = platform
            .call_as(&admin, Method::DELETE, "acme", &path, None)
            .await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let events = platform.audit_events(&admin, "acme").await;
    assert_eq!(events.len(), head, "refusals write nothing");
    assert_eq!(
        platform.mails_to("tom@acme.example").len(),
        mails + 1,
        "and mail nothing"
    );
    let recorded = events
        .iter()
        .find(|e| e["type"] == "AuthenticatorRevoked")
        .unwrap();
    assert_eq!(recorded["data"]["device_id"], phone.device_id.to_string());
    assert!(recorded["actor"].as_str().unwrap().starts_with("user:"));

    // A new phone, a new code: Tom is back, on both hosts.
    let mut new = Keyring::default();
    platform.enroll(&mut new, "acme", "tom@acme.example").await;
    let session = platform.login(&new, "acme").await;
    let (status, me) = platform
        .call_as(&session, Method::GET, "acme", "/api/v1/me", None)
        .await;
    assert_eq!(status, 200, "{me}");
    platform.login(&new, "contoso-acme").await;

    // A passwordless directory user of contoso, and a customer admin (Alice) revoking.
    let customer_admin = platform.login(&alice_phone, "contoso-acme").await;
    let (status, billy) = platform
        .call_as(
            &customer_admin,
            Method::POST,
            "contoso-acme",
            "/api/v1/users",
            Some(
                json!({"first_name": "Billy", "last_name": "Kid", "username": "billy",
                        "email": "billy@contoso.example"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{billy}");
    let billy_id = billy["id"].as_str().unwrap().to_owned();
    let (status, _) = platform
        .call_as(
            &customer_admin,
            Method::POST,
            "contoso-acme",
            &format!("/api/v1/users/{billy_id}/passwordless"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let mut billys = Keyring::default();
    let billys_phone = platform
        .enroll(&mut billys, "contoso-acme", "billy@contoso.example")
        .await;
    let (status, _) = platform
        .call_as(
            &customer_admin,
            Method::DELETE,
            "contoso-acme",
            &format!(
                "/api/v1/users/{billy_id}/authenticators/{}",
                billys_phone.device_id
            ),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let told = &platform.mails_to("billy@contoso.example")[0];
    assert!(
        told.contains("Contoso: your phone was removed") && told.contains("contoso-acme"),
        "{told}"
    );
    let (_, qr) = platform.challenge("contoso-acme").await;
    assert!(authenticator::approve(&billys, &qr).await.is_err());
    let mut billys_new = Keyring::default();
    platform
        .enroll(&mut billys_new, "contoso-acme", "billy@contoso.example")
        .await;
    let (status, listed) = platform
        .call_as(
            &customer_admin,
            Method::GET,
            "contoso-acme",
            &format!("/api/v1/users/{billy_id}/authenticators"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_ne!(listed[0]["id"], billys_phone.device_id.to_string());
}

/// A technician with a phone adds a new one (a code mailed to his email, entered on the new
/// phone as at onboarding), signs in with it, and removes the old one himself; nobody else's
/// session can do it for him, and a customer's host has no such routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_adds_a_new_phone_and_removes_the_old_one() {
    let platform = Platform::start().await;
    let (_, admin) = platform.acme_with_contoso("alice@acme.example").await;
    let tom_id = tom_on_contoso(&platform, &admin).await;
    let mine = "/api/v1/me/authenticators";
    let mut old = Keyring::default();
    let old_phone = platform.enroll(&mut old, "acme", "tom@acme.example").await;
    let session = platform.login(&old, "acme").await;
    let (status, listed) = platform
        .call_as(&session, Method::GET, "acme", mine, None)
        .await;
    assert_eq!(
        (status, listed.as_array().unwrap().len()),
        (200, 1),
        "{listed}"
    );

    // A code for another phone, mailed to Tom; the new phone enrols with it.
    let (status, sent) = platform
        .call_as(&session, Method::POST, "acme", mine, None)
        .await;
    assert_eq!(status, 202, "{sent}");
    assert_eq!(sent["email"], "tom@acme.example");
    let code = platform.code_for("tom@acme.example");
    assert!(platform.mails_to("tom@acme.example")[0].contains("add a phone"));
    let mut new = Keyring::default();
    let url = platform.url("acme");
    let new_phone = authenticator::enroll(&mut new, &url, "tom@acme.example", &code, "new phone")
        .await
        .unwrap();
    assert_eq!(new_phone.user_id, old_phone.user_id);
    let (_, listed) = platform
        .call_as(&session, Method::GET, "acme", mine, None)
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let with_new = platform.login(&new, "acme").await;

    // The admin's session removes nothing of Tom's through these routes: they are the
    // caller's own; and a customer's host has none.
    let old_path = format!("{mine}/{}", old_phone.device_id);
    let (status, _) = platform
        .call_as(&admin, Method::DELETE, "acme", &old_path, None)
        .await;
    assert_eq!(status, 404, "not the admin's phone");
    let on_customer = platform.login(&new, "contoso-acme").await;
    for method in [Method::GET, Method::POST] {
        let (status, _) = platform
            .call_as(&on_customer, method, "contoso-acme", mine, None)
            .await;
        assert_eq!(status, 404);
    }

    // Tom removes the old phone: it approves nothing, his sessions end, the new one works.
    let (status, body) = platform
        .call_as(&with_new, Method::DELETE, "acme", &old_path, None)
        .await;
    assert_eq!(status, 204, "{body}");
    assert!(platform.mails_to("tom@acme.example")[0].contains("you removed it"));
    let (status, _) = platform
        .call_as(&session, Method::GET, "acme", "/api/v1/me", None)
        .await;
    assert_eq!(status, 401);
    let (_, qr) = platform.challenge("acme").await;
    assert!(authenticator::approve(&old, &qr).await.is_err());
    let again = platform.login(&new, "acme").await;
    let (status, listed) = platform
        .call_as(&again, Method::GET, "acme", mine, None)
        .await;
    assert_eq!(status, 200);
    let ids: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, vec![new_phone.device_id.to_string()]);
    let events = platform.audit_events(&admin, "acme").await;
    let removal = events
        .iter()
        .rfind(|e| e["type"] == "AuthenticatorRevoked")
        .unwrap();
    assert_eq!(
        removal["actor"].as_str().unwrap(),
        format!("user:{tom_id}"),
        "recorded as Tom's own"
    );
}
