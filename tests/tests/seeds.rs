//! The seed documents, step by step, over real HTTP with the software authenticator: the
//! multi-tenant MSP portal, and steps 1 to 5 of the cloud directory quick start.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agent::authenticator::{self, Keyring};
use harness::Platform;
use reqwest::Method;
use serde_json::{Value, json};

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quick_start_steps_1_to_5_and_the_msp_portal() {
    let platform = Platform::start().await;

    // Step 1: sign up an MSP tenant with its first admin.
    let signup = platform
        .signup("acme", "Acme IT", "alice@acme.example")
        .await;
    assert_eq!(signup["tenant"]["url"], platform.url("acme"));

    // The admin onboards with the authenticator (code by mail, device key registered) and
    // logs in by approving a QR challenge.
    let mut alice_phone = Keyring::default();
    let alice = platform
        .enroll(&mut alice_phone, "acme", "alice@acme.example")
        .await;
    assert_eq!(alice.user_id.to_string(), signup["admin"]["id"]);
    let admin = platform.login(&alice_phone, "acme").await;
    let (status, me) =
        Platform::call(platform.as_user(&admin, Method::GET, "acme", "/api/v1/me")).await;
    assert_eq!(status, 200);
    assert_eq!(me["user"]["email"], "alice@acme.example");
    assert_eq!(me["tenant"]["name"], "acme");
    assert_eq!(me["roles"], json!(["admin"]));

    // Step 2: user source Local.
    let (status, _) = Platform::call(
        platform
            .as_user(&admin, Method::PUT, "acme", "/api/v1/settings/user-source")
            .json(&json!({"source": "local"})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, source) = Platform::call(platform.as_user(
        &admin,
        Method::GET,
        "acme",
        "/api/v1/settings/user-source",
    ))
    .await;
    assert_eq!(source, json!({"source": "local"}));

    // Step 3: add technicians by email; one onboards and logs in with a QR code.
    let mut techs = Vec::new();
    for email in ["bob@acme.example", "carol@acme.example"] {
        let answer = platform
            .as_user(&admin, Method::POST, "acme", "/api/v1/users")
            .json(&json!({"email": email, "first_name": "Tech"}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201);
        assert!(answer.headers().contains_key("idem-position"));
        let user: Value = answer.json().await.unwrap();
        assert_eq!(user["admin"], false);
        assert_eq!(user["onboarded"], false);
        techs.push(user["id"].as_str().unwrap().to_owned());
    }
    let mut bob_phone = Keyring::default();
    platform
        .enroll(&mut bob_phone, "acme", "bob@acme.example")
        .await;
    let bob = platform.login(&bob_phone, "acme").await;
    let (_, me) = Platform::call(platform.as_user(&bob, Method::GET, "acme", "/api/v1/me")).await;
    assert_eq!(me["roles"], json!(["technician"]));
    let (_, users) =
        Platform::call(platform.as_user(&admin, Method::GET, "acme", "/api/v1/users")).await;
    assert_eq!(users.as_array().unwrap().len(), 3);
    let bob_row = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "bob@acme.example")
        .unwrap();
    assert_eq!(bob_row["onboarded"], true);

    // Step 4: customer tenants (the MSP portal's "Add customer").
    for (name, display) in [("contoso", "Contoso Ltd"), ("fabrikam", "Fabrikam Inc")] {
        let (status, customer) = Platform::call(
            platform
                .as_user(&admin, Method::POST, "acme", "/api/v1/customers")
                .json(&json!({"name": name, "display_name": display})),
        )
        .await;
        assert_eq!(status, 201, "{customer}");
        assert_eq!(customer["url"], platform.url(&format!("{name}-acme")));
        assert_eq!(customer["display_name"], display);
    }
    // The Customers table: display name, URL, active users, technicians (the one admin). A
    // reader elsewhere names the position it must see (read-your-writes across clients).
    let position = platform
        .as_user(&admin, Method::POST, "acme", "/api/v1/users")
        .json(&json!({"email": "dave@acme.example"}))
        .send()
        .await
        .unwrap()
        .headers()["idem-position"]
        .to_str()
        .unwrap()
        .to_owned();
    let (status, customers) = Platform::call(
        platform
            .as_user(&admin, Method::GET, "acme", "/api/v1/customers")
            .header("idem-min-position", position),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(names(&customers), ["contoso", "fabrikam"]);
    for customer in customers.as_array().unwrap() {
        assert_eq!(customer["active_users"], 0);
        assert_eq!(customer["technicians"], 1);
    }

    // Step 5: per-customer delegation for Bob; "Make admin" for Carol.
    let (status, _) = Platform::call(
        platform
            .as_user(
                &admin,
                Method::POST,
                "acme",
                "/api/v1/customers/contoso/technicians",
            )
            .json(&json!({"user_id": techs[0]})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, carol) = Platform::call(platform.as_user(
        &admin,
        Method::POST,
        "acme",
        &format!("/api/v1/users/{}/admin", techs[1]),
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(carol["admin"], true);
    let (_, customers) =
        Platform::call(platform.as_user(&admin, Method::GET, "acme", "/api/v1/customers")).await;
    let technicians: Vec<_> = customers
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["technicians"].as_u64().unwrap())
        .collect();
    assert_eq!(
        technicians,
        [3, 2],
        "contoso: 2 admins + Bob; fabrikam: 2 admins"
    );
    // One row alone is the same row, and a name that is not a customer is a 404.
    for row in customers.as_array().unwrap() {
        let name = row["name"].as_str().unwrap();
        let (status, one) = Platform::call(platform.as_user(
            &admin,
            Method::GET,
            "acme",
            &format!("/api/v1/customers/{name}"),
        ))
        .await;
        assert_eq!(status, 200);
        assert_eq!(&one, row);
    }
    let (status, _) =
        Platform::call(platform.as_user(&admin, Method::GET, "acme", "/api/v1/customers/nosuch"))
            .await;
    assert_eq!(status, 404);
    let (_, list) = Platform::call(platform.as_user(
        &admin,
        Method::GET,
        "acme",
        "/api/v1/customers/contoso/technicians",
    ))
    .await;
    assert_eq!(list.as_array().unwrap().len(), 3);

    // Ways into a customer tenant. 2: the user portal's apps; Bob sees only Contoso.
    let (_, apps) =
        Platform::call(platform.as_user(&bob, Method::GET, "acme", "/api/v1/apps")).await;
    assert_eq!(names(&apps), ["contoso"]);
    // One click: the SSO hand-off logs him into Contoso's host.
    let (status, sso) = Platform::call(platform.as_user(
        &bob,
        Method::POST,
        "acme",
        "/api/v1/customers/contoso/sso",
    ))
    .await;
    assert_eq!(status, 200);
    let url = sso["url"].as_str().unwrap();
    let path = url
        .strip_prefix(&platform.url("contoso-acme"))
        .expect("the hand-off goes to the customer's host");
    let opened = platform
        .request(Method::GET, "contoso-acme", path)
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 303);
    let cookie = opened.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    assert!(!cookie.contains("Secure"), "plain http on localhost");
    let customer_session = cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("idem_session=")
        .unwrap()
        .to_owned();
    let (status, me) = Platform::call(
        platform
            .request(Method::GET, "contoso-acme", "/api/v1/me")
            .header("cookie", format!("idem_session={customer_session}")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(me["user"]["email"], "bob@acme.example");
    assert_eq!(me["tenant"]["name"], "contoso");
    assert_eq!(me["roles"], json!(["technician"]));
    // The link works once.
    let again = platform
        .request(Method::GET, "contoso-acme", path)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401);
    // A customer he was not given is invisible to him.
    let (status, _) = Platform::call(platform.as_user(
        &bob,
        Method::POST,
        "acme",
        "/api/v1/customers/fabrikam/sso",
    ))
    .await;
    assert_eq!(status, 404);

    // 1: the customer's URL directly, logging in with the phone enrolled at the MSP.
    let direct = platform.login(&bob_phone, "contoso-acme").await;
    let (status, _) = Platform::call(platform.as_user(
        &direct,
        Method::GET,
        "contoso-acme",
        "/api/v1/settings/user-source",
    ))
    .await;
    assert_eq!(status, 200);
    // ...but not Fabrikam's: his approval is refused, and the browser keeps waiting.
    let (id, qr) = platform.challenge("fabrikam-acme").await;
    let refused = authenticator::approve(&bob_phone, &qr).await.unwrap_err();
    assert!(refused.to_string().starts_with("401"), "{refused}");
    assert_eq!(
        platform.poll("fabrikam-acme", &id, 0).await["status"],
        "pending"
    );

    // Revoking the delegation ends his access at once, sessions already open included.
    let (status, _) = Platform::call(platform.as_user(
        &admin,
        Method::DELETE,
        "acme",
        &format!("/api/v1/customers/contoso/technicians/{}", techs[0]),
    ))
    .await;
    assert_eq!(status, 204);
    for token in [&customer_session, &direct] {
        let (status, _) =
            Platform::call(platform.as_user(token, Method::GET, "contoso-acme", "/api/v1/me"))
                .await;
        assert_eq!(status, 401);
    }
    let (_, apps) =
        Platform::call(platform.as_user(&bob, Method::GET, "acme", "/api/v1/apps")).await;
    assert_eq!(apps, json!([]));

    // Revoking "Make admin" likewise: Carol's customer session ends with her role.
    let mut carol_phone = Keyring::default();
    platform
        .enroll(&mut carol_phone, "acme", "carol@acme.example")
        .await;
    let carol_on_fabrikam = platform.login(&carol_phone, "fabrikam-acme").await;
    let (_, me) = Platform::call(platform.as_user(
        &carol_on_fabrikam,
        Method::GET,
        "fabrikam-acme",
        "/api/v1/me",
    ))
    .await;
    assert_eq!(me["roles"], json!(["admin"]));
    let (status, _) = Platform::call(platform.as_user(
        &admin,
        Method::DELETE,
        "acme",
        &format!("/api/v1/users/{}/admin", techs[1]),
    ))
    .await;
    assert_eq!(status, 200);
    let (status, _) = Platform::call(platform.as_user(
        &carol_on_fabrikam,
        Method::GET,
        "fabrikam-acme",
        "/api/v1/me",
    ))
    .await;
    assert_eq!(status, 401);

    // Delete a customer tenant: it and its data are gone, and its name is free again.
    let (status, _) = Platform::call(platform.as_user(
        &admin,
        Method::DELETE,
        "acme",
        "/api/v1/customers/fabrikam",
    ))
    .await;
    assert_eq!(status, 204);
    let (status, _) = Platform::call(
        platform
            .request(Method::POST, "fabrikam-acme", "/api/v1/login/challenges")
            .json(&json!({"purpose": "portal"})),
    )
    .await;
    assert_eq!(status, 404, "the host is gone");
    let (_, customers) =
        Platform::call(platform.as_user(&admin, Method::GET, "acme", "/api/v1/customers")).await;
    assert_eq!(names(&customers), ["contoso"]);
    let (status, _) = Platform::call(
        platform
            .as_user(&admin, Method::POST, "acme", "/api/v1/customers")
            .json(&json!({"name": "fabrikam", "display_name": "Fabrikam again"})),
    )
    .await;
    assert_eq!(status, 201);

    // Logout ends the session.
    let (status, _) =
        Platform::call(platform.as_user(&admin, Method::POST, "acme", "/api/v1/logout")).await;
    assert_eq!(status, 204);
    let (status, _) =
        Platform::call(platform.as_user(&admin, Method::GET, "acme", "/api/v1/me")).await;
    assert_eq!(status, 401);

    platform.server.shutdown().await;
}
