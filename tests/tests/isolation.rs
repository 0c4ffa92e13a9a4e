//! Isolation: two MSPs with customers, admins and technicians; every MSP route called by
//! every role against its own and the other tenants' hosts and resources. Only what the
//! contract allows succeeds; what a caller cannot see is a 404; refused writes change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agent::authenticator::Keyring;
use harness::Platform;
use reqwest::Method;
use serde_json::{Value, json};

/// An MSP with an admin and a technician delegated to its first customer.
struct Msp {
    label: &'static str,
    admin: String,
    admin_id: String,
    tech: String,
    tech_id: String,
    /// The admin's session on the first customer's host.
    admin_on_customer: String,
}

async fn msp(platform: &Platform, label: &'static str) -> Msp {
    let admin_email = format!("admin@{label}.example");
    let signup = platform.signup(label, label, &admin_email).await;
    let mut admin_phone = Keyring::default();
    platform.enroll(&mut admin_phone, label, &admin_email).await;
    let admin = platform.login(&admin_phone, label).await;
    let tech_email = format!("tech@{label}.example");
    let (status, tech) = Platform::call(
        platform
            .as_user(&admin, Method::POST, label, "/api/v1/users")
            .json(&json!({"email": tech_email})),
    )
    .await;
    assert_eq!(status, 201);
    for name in ["one", "two"] {
        let (status, _) = Platform::call(
            platform
                .as_user(&admin, Method::POST, label, "/api/v1/customers")
                .json(&json!({"name": name, "display_name": name})),
        )
        .await;
        assert_eq!(status, 201);
    }
    let tech_id = tech["id"].as_str().unwrap().to_owned();
    let (status, _) = Platform::call(
        platform
            .as_user(
                &admin,
                Method::POST,
                label,
                "/api/v1/customers/one/technicians",
            )
            .json(&json!({"user_id": tech_id})),
    )
    .await;
    assert_eq!(status, 201);
    let mut tech_phone = Keyring::default();
    platform.enroll(&mut tech_phone, label, &tech_email).await;
    let tech = platform.login(&tech_phone, label).await;
    let admin_on_customer = platform.login(&admin_phone, &format!("one-{label}")).await;
    Msp {
        label,
        admin,
        admin_id: signup["admin"]["id"].as_str().unwrap().to_owned(),
        tech,
        tech_id,
        admin_on_customer,
    }
}

/// What an MSP's state looks like through its admin: users and customers with delegations.
async fn snapshot(platform: &Platform, msp: &Msp) -> Value {
    let get =
        |path: &str| Platform::call(platform.as_user(&msp.admin, Method::GET, msp.label, path));
    let (_, users) = get("/api/v1/users").await;
    let (_, customers) = get("/api/v1/customers").await;
    let (_, one) = get("/api/v1/customers/one/technicians").await;
    let (_, source) = get("/api/v1/settings/user-source").await;
    json!({"users": users, "customers": customers, "one": one, "source": source})
}

/// Every MSP route, with a body where it takes one; `{user}` is replaced.
fn routes(user: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, "/api/v1/me".into(), None),
        (Method::GET, "/api/v1/apps".into(), None),
        (Method::GET, "/api/v1/users".into(), None),
        (
            Method::POST,
            "/api/v1/users".into(),
            Some(json!({"email": "intruder@evil.example"})),
        ),
        (Method::GET, format!("/api/v1/users/{user}"), None),
        (Method::POST, format!("/api/v1/users/{user}/admin"), None),
        (Method::GET, "/api/v1/settings/user-source".into(), None),
        (
            Method::PUT,
            "/api/v1/settings/user-source".into(),
            Some(json!({"source": "local"})),
        ),
        (Method::GET, "/api/v1/customers".into(), None),
        (Method::GET, "/api/v1/customers/one".into(), None),
        (
            Method::POST,
            "/api/v1/customers".into(),
            Some(json!({"name": "intruded", "display_name": "x"})),
        ),
        (
            Method::GET,
            "/api/v1/customers/one/technicians".into(),
            None,
        ),
        (
            Method::POST,
            "/api/v1/customers/two/technicians".into(),
            Some(json!({"user_id": user})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/customers/one/technicians/{user}"),
            None,
        ),
        (Method::POST, "/api/v1/customers/two/sso".into(), None),
        (Method::DELETE, "/api/v1/customers/two".into(), None),
        (Method::DELETE, format!("/api/v1/users/{user}"), None),
    ]
}

async fn call(
    platform: &Platform,
    token: Option<&str>,
    label: &str,
    (method, path, body): &(Method, String, Option<Value>),
) -> u16 {
    let mut request = platform.request(method.clone(), label, path);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    Platform::call(request).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_role_against_every_tenant() {
    let platform = Platform::start().await;
    let acme = msp(&platform, "acme").await;
    let globex = msp(&platform, "globex").await;
    let before = (
        snapshot(&platform, &acme).await,
        snapshot(&platform, &globex).await,
    );

    for (own, other) in [(&acme, &globex), (&globex, &acme)] {
        // Anonymous: 401 everywhere a session is needed.
        for route in routes(&own.tech_id) {
            for label in [own.label, other.label] {
                assert_eq!(call(&platform, None, label, &route).await, 401, "{route:?}");
            }
        }
        // A session on another host is no session here: the other MSP, and a customer host.
        for token in [&own.admin, &own.tech] {
            for label in [other.label.to_owned(), format!("one-{}", own.label)] {
                for route in routes(&own.tech_id) {
                    assert_eq!(
                        call(&platform, Some(token), &label, &route).await,
                        401,
                        "{label} {route:?}"
                    );
                }
            }
        }
        // The MSP routes do not exist on a customer host, even for its admin; `/api/v1/users`
        // there is the customer's directory (empty, and an MSP-shaped body is malformed).
        let customer_host = format!("one-{}", own.label);
        let directory = Platform::call(platform.as_user(
            &own.admin_on_customer,
            Method::GET,
            &customer_host,
            "/api/v1/users",
        ))
        .await;
        assert_eq!(directory, (200, json!([])));
        for route in routes(&own.tech_id).into_iter().filter(|(_, path, _)| {
            !path.ends_with("/me") && !path.contains("user-source") && path != "/api/v1/users"
        }) {
            assert_eq!(
                call(
                    &platform,
                    Some(&own.admin_on_customer),
                    &format!("one-{}", own.label),
                    &route
                )
                .await,
                404,
                "{route:?}"
            );
        }
        // A technician on their own MSP's host: themselves and their apps, nothing else.
        for route in routes(&own.admin_id) {
            let (method, path, _) = &route;
            let expected = match (method.as_str(), path.as_str()) {
                ("GET", "/api/v1/me" | "/api/v1/apps") => 200,
                // An undelegated customer is invisible to them.
                ("POST", p) if p.ends_with("/sso") => 404,
                _ => 403,
            };
            assert_eq!(
                call(&platform, Some(&own.tech), own.label, &route).await,
                expected,
                "{route:?}"
            );
        }
        // An admin on their own host, naming the other MSP's user: not found.
        for route in routes(&other.tech_id)
            .into_iter()
            .filter(|(_, path, _)| path.contains(&other.tech_id) && !path.contains("/technicians"))
        {
            assert_eq!(
                call(&platform, Some(&own.admin), own.label, &route).await,
                404,
                "{route:?}"
            );
        }
        // ...and delegating their customer to the other MSP's technician: not found.
        let (status, _) = Platform::call(
            platform
                .as_user(
                    &own.admin,
                    Method::POST,
                    own.label,
                    "/api/v1/customers/two/technicians",
                )
                .json(&json!({"user_id": other.tech_id})),
        )
        .await;
        assert_eq!(status, 404);
    }
    // Nothing any refused call tried was written.
    let after = (
        snapshot(&platform, &acme).await,
        snapshot(&platform, &globex).await,
    );
    assert_eq!(before, after);

    // The admin may do everything on their own host (writes last: they change the state).
    for route in routes(&acme.tech_id) {
        let status = call(&platform, Some(&acme.admin), "acme", &route).await;
        assert!((200..300).contains(&status), "{route:?}: {status}");
    }
    let (status, _) =
        Platform::call(platform.as_user(&acme.tech, Method::GET, "acme", "/api/v1/me")).await;
    assert_eq!(
        status, 401,
        "the removed technician's session ended with them"
    );
    // Globex saw none of it.
    assert_eq!(snapshot(&platform, &globex).await, before.1);
    platform.server.shutdown().await;
}
