//! Step 6 of the cloud directory quick start over real HTTP: a technician configures a
//! customer tenant (user source, master key, desktop login, users with passwords and personal
//! emails, passwordless MFA, the shared admin account, an agent enrollment token). Bad input
//! is refused with nothing stored, and the test's passwords and personal emails appear in no
//! response, no file of the data directory and no log line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use harness::Platform;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const PASSWORD: &str = "Correct-Horse-Battery-42";
const NEW_PASSWORD: &str = "Tr0ub4dor&3-Staple-Again";
const PERSONAL: &str = "billy.private@home.example";

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn step_6_configures_a_customer_tenant_and_keeps_its_secrets_sealed() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let platform = Platform::start().await;
    let (phone, msp) = platform.acme_with_contoso("alice@acme.example").await;
    // The admin works on the customer's own host.
    let admin = platform.login(&phone, "contoso-acme").await;
    let mut responses: Vec<String> = Vec::new();
    let host = "contoso-acme";
    let call = |method: Method, path: &str, body: Option<Value>| {
        platform.call_as(&admin, method, host, path, body)
    };
    macro_rules! call {
        ($method:expr, $path:expr) => {{
            let answer = call($method, $path, None).await;
            responses.push(answer.1.to_string());
            answer
        }};
        ($method:expr, $path:expr, $body:expr) => {{
            let answer = call($method, $path, Some($body)).await;
            responses.push(answer.1.to_string());
            answer
        }};
    }

    // User source: Local.
    let (status, _) = call!(
        Method::PUT,
        "/api/v1/settings/user-source",
        json!({"source": "local"})
    );
    assert_eq!(status, 200);

    // No password before the master key.
    let billy = json!({
        "first_name": "Billy", "last_name": "Jones", "username": "billy",
        "email": "billy@contoso.example", "password": PASSWORD, "personal_email": PERSONAL,
    });
    let (status, problem) = call!(Method::POST, "/api/v1/users", billy.clone());
    assert_eq!(status, 409, "{problem}");
    assert_eq!(
        call!(Method::GET, "/api/v1/settings/master-key"),
        (200, json!({"enabled": false, "key_version": null}))
    );
    let (status, key) = call!(
        Method::PUT,
        "/api/v1/settings/master-key",
        json!({"enabled": true})
    );
    assert_eq!(
        (status, key),
        (200, json!({"enabled": true, "key_version": 1}))
    );

    // Desktop login, and an unknown method refused.
    let (status, problem) = call!(
        Method::PUT,
        "/api/v1/settings/desktop-login",
        json!({"enabled": true, "method": "telepathy"})
    );
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["field"], "method");
    let (status, login) = call!(
        Method::PUT,
        "/api/v1/settings/desktop-login",
        json!({"enabled": true, "method": "password"})
    );
    assert_eq!(
        (status, login),
        (200, json!({"enabled": true, "method": "password"}))
    );

    // Users: Billy with a password and a personal email.
    let (status, created) = call!(Method::POST, "/api/v1/users", billy.clone());
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["username"], "billy");
    assert_eq!(created["has_password"], true);
    assert_eq!(created["password_version"], 1);
    assert_eq!(created["has_personal_email"], true);
    let id = created["id"].as_str().unwrap().to_owned();

    // Invalid input, every forbidden kind of username, a short password: 422, nothing stored.
    let base = |username: &str, password: &str| {
        json!({"first_name": "X", "last_name": "Y", "username": username,
               "email": "x@contoso.example", "password": password})
    };
    let mut refused = vec![
        (base("ok-name", "short"), "password"),
        (base("", PASSWORD), "username"),
        (base("averyveryverylongname1", PASSWORD), "username"),
        (base("...", PASSWORD), "username"),
        (base("   ", PASSWORD), "username"),
    ];
    for forbidden in [
        '"', '/', '\\', '[', ']', ':', ';', '|', '=', ',', '+', '*', '?', '<', '>', '@',
    ] {
        refused.push((base(&format!("bad{forbidden}name"), PASSWORD), "username"));
    }
    refused.push((
        json!({"first_name": "X", "last_name": "Y", "username": "x2", "email": "not-email"}),
        "email",
    ));
    for (body, field) in refused {
        let (status, problem) = call!(Method::POST, "/api/v1/users", body.clone());
        assert_eq!(status, 422, "{body}: {problem}");
        assert!(
            problem["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field),
            "{body}: {problem}"
        );
    }
    // The username is taken whatever its case.
    let mut again = billy.clone();
    again["username"] = json!("BILLY");
    again["password"] = json!(null);
    again["personal_email"] = json!(null);
    let (status, _) = call!(Method::POST, "/api/v1/users", again);
    assert_eq!(status, 409);
    let (_, users) = call!(Method::GET, "/api/v1/users");
    assert_eq!(
        users.as_array().unwrap().len(),
        1,
        "nothing else was stored"
    );

    // Patch, disable, enable; change the password; passwordless MFA.
    let (status, patched) = call!(
        Method::PATCH,
        &format!("/api/v1/users/{id}"),
        json!({"first_name": "William", "enabled": false})
    );
    assert_eq!(status, 200);
    assert_eq!(patched["first_name"], "William");
    assert_eq!(patched["enabled"], false);
    let (_, patched) = call!(
        Method::PATCH,
        &format!("/api/v1/users/{id}"),
        json!({"enabled": true})
    );
    assert_eq!(patched["enabled"], true);
    let (status, _) = call!(
        Method::PUT,
        &format!("/api/v1/users/{id}/password"),
        json!({"password": "short"})
    );
    assert_eq!(status, 422);
    let (status, _) = call!(
        Method::PUT,
        &format!("/api/v1/users/{id}/password"),
        json!({"password": NEW_PASSWORD})
    );
    assert_eq!(status, 204);
    let (_, user) = call!(Method::GET, &format!("/api/v1/users/{id}"));
    assert_eq!(user["password_version"], 2);
    let (status, user) = call!(Method::POST, &format!("/api/v1/users/{id}/passwordless"));
    assert_eq!(status, 200);
    assert_eq!(user["passwordless"], true);

    // The master key stays on while anything is sealed with it.
    let (status, _) = call!(
        Method::PUT,
        "/api/v1/settings/master-key",
        json!({"enabled": false})
    );
    assert_eq!(status, 409);

    // The shared admin account, and an agent enrollment token.
    let (status, _) = call!(
        Method::PUT,
        "/api/v1/accounts/shared",
        json!({"username": "bad:name"})
    );
    assert_eq!(status, 422);
    let (status, shared) = call!(
        Method::PUT,
        "/api/v1/accounts/shared",
        json!({"username": "idem-admin"})
    );
    assert_eq!(
        (status, shared),
        (
            200,
            json!({"username": "idem-admin", "elevation_minutes": 60})
        )
    );
    // How long an elevation's password lives: 5 minutes to 8 hours, kept when not given.
    for minutes in [0, 4, 481] {
        let (status, problem) = call!(
            Method::PUT,
            "/api/v1/accounts/shared",
            json!({"username": "it-admin", "elevation_minutes": minutes})
        );
        assert_eq!(status, 422, "{minutes}");
        assert_eq!(problem["errors"][0]["field"], "elevation_minutes");
    }
    let (status, shared) = call!(
        Method::PUT,
        "/api/v1/accounts/shared",
        json!({"username": "idem-admin", "elevation_minutes": 15})
    );
    assert_eq!(
        (status, shared),
        (
            200,
            json!({"username": "idem-admin", "elevation_minutes": 15})
        )
    );
    let (_, shared) = call!(
        Method::PUT,
        "/api/v1/accounts/shared",
        json!({"username": "idem-admin"})
    );
    assert_eq!(shared["elevation_minutes"], 15, "kept");
    let (_, shared) = call!(Method::GET, "/api/v1/accounts/shared");
    assert_eq!(
        shared,
        json!({"username": "idem-admin", "elevation_minutes": 15})
    );
    let (status, token) = call!(Method::POST, "/api/v1/agent/enrollment-tokens");
    assert_eq!(status, 201);
    assert!(token["token"].as_str().unwrap().len() >= 43);

    // The MSP's Customers table counts Billy as active.
    let (_, customers) =
        Platform::call(platform.as_user(&msp, Method::GET, "acme", "/api/v1/customers")).await;
    assert_eq!(customers[0]["active_users"], 1);

    // A second user, deleted: the username is free again.
    let (_, temp) = call!(
        Method::POST,
        "/api/v1/users",
        json!({"first_name": "T", "last_name": "T", "username": "temp", "email": "t@contoso.example"})
    );
    let temp_id = temp["id"].as_str().unwrap().to_owned();
    let (status, _) = call!(Method::DELETE, &format!("/api/v1/users/{temp_id}"));
    assert_eq!(status, 204);
    let (status, _) = call!(
        Method::POST,
        "/api/v1/users",
        json!({"first_name": "T", "last_name": "T", "username": "Temp", "email": "t@contoso.example"})
    );
    assert_eq!(status, 201);

    // The audit export of the customer checks offline, and its replayed state is what the
    // read models say.
    let export = platform.audit_export(&admin, host).await;
    responses.push(export.clone());
    let report = api::audit::verify_file(export.as_bytes()).unwrap();
    assert!(report.is_valid(), "{report:?}");
    let (_, replayed) = call!(Method::GET, "/api/v1/audit/state");
    let (_, users) = call!(Method::GET, "/api/v1/users");
    let summary = |users: &Value| {
        let mut list: Vec<(String, bool, u64, bool)> = users
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["username"].as_str().unwrap().to_owned(),
                    u["enabled"].as_bool().unwrap(),
                    u["password_version"].as_u64().unwrap(),
                    u["has_personal_email"].as_bool().unwrap(),
                )
            })
            .collect();
        list.sort();
        list
    };
    assert_eq!(summary(&replayed["state"]["users"]), summary(&users));
    assert_eq!(replayed["state"]["master_key_version"], 1);
    assert_eq!(replayed["state"]["shared_account"], "idem-admin");

    // The customer's settings routes do not exist on the MSP's host.
    let (status, _) = Platform::call(
        platform
            .as_user(&msp, Method::PUT, "acme", "/api/v1/settings/master-key")
            .json(&json!({"enabled": true})),
    )
    .await;
    assert_eq!(status, 404);

    platform.server.shutdown().await;
    let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("/api/v1/users"), "the log was captured");
    for secret in [PASSWORD, NEW_PASSWORD, PERSONAL] {
        for response in &responses {
            assert!(
                !response.contains(secret),
                "a response holds a secret: {response}"
            );
        }
        assert!(!log.contains(secret), "the log holds a secret");
        for file in files(&platform.dir) {
            let bytes = std::fs::read(&file).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds a secret",
                file.display()
            );
        }
    }
}

/// The password policy and the argon2id cost are settings; the service applies them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stricter_password_policy_set_at_start_is_the_one_applied() {
    let platform = Platform::start_with(|settings| {
        settings.password_min_length = Some(16);
        settings.argon2_memory_kib = Some(8192);
        settings.argon2_iterations = Some(1);
    })
    .await;
    let (phone, _) = platform.acme_with_contoso("alice@acme.example").await;
    let admin = platform.login(&phone, "contoso-acme").await;
    let call = |method: Method, path: &str, body: Value| {
        Platform::call(
            platform
                .as_user(&admin, method, "contoso-acme", path)
                .json(&body),
        )
    };
    let (status, _) = call(
        Method::PUT,
        "/api/v1/settings/master-key",
        json!({"enabled": true}),
    )
    .await;
    assert_eq!(status, 200);
    let user = |password: &str| {
        json!({"first_name": "Dana", "last_name": "Lee", "username": "dana",
               "email": "dana@contoso.example", "password": password})
    };
    // 15 characters: enough by default, not under this policy.
    let (status, problem) = call(Method::POST, "/api/v1/users", user("fifteen-chars!!")).await;
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, vec!["password"], "{problem}");
    assert!(
        problem.to_string().contains("16"),
        "the rule is named: {problem}"
    );
    let (status, users) =
        Platform::call(platform.as_user(&admin, Method::GET, "contoso-acme", "/api/v1/users"))
            .await;
    assert_eq!((status, users), (200, json!([])), "nothing stored");

    // 16 characters: accepted, and a workstation login with it succeeds against the verifier
    // made with the cheaper argon2id settings.
    let (status, created) = call(Method::POST, "/api/v1/users", user("sixteen-chars!!!")).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["has_password"], true);
    let (status, _) = call(
        Method::PUT,
        "/api/v1/settings/desktop-login",
        json!({"enabled": true, "method": "password"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, token) = call(Method::POST, "/api/v1/agent/enrollment-tokens", json!({})).await;
    assert_eq!(status, 201, "{token}");
    let (status, device) = Platform::call(
        platform
            .request(Method::POST, "contoso-acme", "/api/v1/agent/enroll")
            .json(&json!({"enrollment_token": token["token"], "hostname": "ws-01"})),
    )
    .await;
    assert_eq!(status, 201, "{device}");
    let device = device["device_token"].as_str().unwrap().to_owned();
    let login = |password: &'static str| {
        Platform::call(
            platform
                .as_user(&device, Method::POST, "contoso-acme", "/api/v1/agent/login")
                .json(&json!({"username": "dana", "password": password,
                              "local_account_exists": false})),
        )
    };
    let (status, answer) = login("sixteen-chars!!!").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["username"], "dana");
    assert_eq!(login("sixteen-chars!!?").await.0, 401);
    // A change at the workstation holds the new password to the same policy.
    let change = |new_password: &'static str| {
        Platform::call(
            platform
                .as_user(
                    &device,
                    Method::POST,
                    "contoso-acme",
                    "/api/v1/agent/password",
                )
                .json(&json!({"username": "dana", "password": "sixteen-chars!!!",
                              "new_password": new_password})),
        )
    };
    let (status, problem) = change("fifteen-chars!?").await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "new_password");
    assert!(
        problem["detail"].as_str().unwrap().contains("16"),
        "{problem}"
    );
    let (status, answer) = change("sixteen-chars!?!").await;
    assert_eq!((status, &answer["password_version"]), (200, &json!(2)));
    // The document this deployment serves says so.
    let (status, document) =
        Platform::call(platform.request(Method::GET, "", "/api/v1/openapi.json")).await;
    assert_eq!(status, 200);
    let password = &document["components"]["schemas"]["PasswordBody"]["properties"]["password"];
    assert_eq!(password["minLength"], 16, "{password}");
}
