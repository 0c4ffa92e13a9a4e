//! `/api/v1/openapi.json` covers every route: each operation it lists is served by the router
//! (not the fallback, not a 405), the contract's routes built so far are all in it, and a path
//! it does not list is the fallback's 404. It describes what each operation decodes and what
//! it answers; the answers every test receives are checked against it (`harness::contract`),
//! and the checker itself is tested here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use harness::Platform;
use reqwest::Method;
use serde_json::{Value, json};

/// The router's answer for a path it does not have.
fn is_fallback(status: u16, body: &Value) -> bool {
    status == 404 && body["detail"] == "no such route"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_every_route_the_router_serves() {
    let platform = Platform::start().await;
    platform.signup("acme", "Acme", "alice@acme.example").await;
    let (status, document) =
        Platform::call(platform.request(Method::GET, "", "/api/v1/openapi.json")).await;
    assert_eq!(status, 200);
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();

    let mut operations = 0;
    for (path, methods) in paths {
        for method in methods.as_object().unwrap().keys() {
            operations += 1;
            let concrete = path
                .replace("{id}", &uuid::Uuid::now_v7().to_string())
                .replace("{user_id}", &uuid::Uuid::now_v7().to_string())
                .replace("{name}", "nosuch")
                .replace("{image}", "logo");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for host in ["", "acme"] {
                let (status, body) =
                    Platform::call(platform.request(method.clone(), host, &concrete)).await;
                assert!(
                    !is_fallback(status, &body) && status != 405,
                    "{method} {path} on {host:?}: {status} {body}"
                );
            }
        }
    }

    // Every route of the contract built so far.
    let contract = [
        ("post", "/api/v1/signup"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("post", "/api/v1/onboarding/start"),
        ("post", "/api/v1/onboarding/complete"),
        ("post", "/api/v1/login/challenges"),
        ("post", "/api/v1/login/challenges/{id}/approve"),
        ("get", "/api/v1/login/challenges/{id}"),
        ("post", "/api/v1/logout"),
        ("get", "/api/v1/me"),
        ("get", "/api/v1/users"),
        ("post", "/api/v1/users"),
        ("get", "/api/v1/users/{id}"),
        ("patch", "/api/v1/users/{id}"),
        ("delete", "/api/v1/users/{id}"),
        ("post", "/api/v1/users/{id}/admin"),
        ("delete", "/api/v1/users/{id}/admin"),
        ("get", "/api/v1/settings/user-source"),
        ("put", "/api/v1/settings/user-source"),
        ("get", "/api/v1/customers"),
        ("post", "/api/v1/customers"),
        ("get", "/api/v1/customers/{name}"),
        ("delete", "/api/v1/customers/{name}"),
        ("get", "/api/v1/customers/{name}/technicians"),
        ("post", "/api/v1/customers/{name}/technicians"),
        ("delete", "/api/v1/customers/{name}/technicians/{user_id}"),
        ("post", "/api/v1/customers/{name}/sso"),
        ("get", "/api/v1/apps"),
        ("get", "/api/v1/settings/master-key"),
        ("put", "/api/v1/settings/master-key"),
        ("get", "/api/v1/settings/desktop-login"),
        ("put", "/api/v1/settings/desktop-login"),
        ("put", "/api/v1/users/{id}/password"),
        ("post", "/api/v1/users/{id}/passwordless"),
        ("get", "/api/v1/accounts/shared"),
        ("put", "/api/v1/accounts/shared"),
        ("post", "/api/v1/agent/enrollment-tokens"),
        ("get", "/api/v1/audit/events"),
        ("get", "/api/v1/audit/verify"),
        ("get", "/api/v1/audit/state"),
        ("get", "/api/v1/branding"),
        ("put", "/api/v1/branding"),
        ("get", "/api/v1/branding/{image}"),
        ("post", "/api/v1/agent/enroll"),
        ("get", "/api/v1/agent/changes"),
        ("post", "/api/v1/agent/login"),
        ("get", "/api/v1/agent/branding"),
        ("post", "/api/v1/agent/challenges"),
        ("get", "/api/v1/agent/challenges/{id}"),
    ];
    for (method, path) in contract {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is missing from the document"
        );
    }
    assert!(operations >= contract.len());

    // A method a route does not take is a 405 problem.
    let answer = platform
        .request(Method::PATCH, "acme", "/api/v1/customers")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 405);
    assert_eq!(answer.headers()["content-type"], "application/problem+json");

    // What the document does not list, the router does not serve.
    let (status, body) =
        Platform::call(platform.request(Method::GET, "acme", "/api/v1/not-a-route")).await;
    assert!(is_fallback(status, &body));
    platform.server.shutdown().await;
}

/// Every `$ref` under `value`.
fn references<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => found.push(target),
                    _ => references(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, found)),
        _ => {}
    }
}

/// A schema with its reference followed.
fn resolved<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(target) => document
            .pointer(target.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("{target} does not resolve")),
        None => schema,
    }
}

fn sorted(values: &Value) -> Vec<String> {
    let mut names: Vec<String> = values
        .as_array()
        .map(|v| v.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_describes_the_bodies_and_parameters_each_operation_decodes() {
    let platform = Platform::start().await;
    let (_, document) =
        Platform::call(platform.request(Method::GET, "", "/api/v1/openapi.json")).await;
    let mut found = Vec::new();
    references(&document, &mut found);
    assert!(found.len() > 20, "{found:?}");
    for target in found {
        assert!(
            target.starts_with("#/components/") && document.pointer(&target[1..]).is_some(),
            "{target} does not resolve"
        );
    }

    // The contract's bodies, with the fields each requires.
    let bodies: [(&str, &str, &[&str]); 15] = [
        (
            "post",
            "/api/v1/signup",
            &["admin_email", "display_name", "name"],
        ),
        ("post", "/api/v1/onboarding/start", &["email"]),
        (
            "post",
            "/api/v1/onboarding/complete",
            &["code", "device_name", "device_public_key", "email"],
        ),
        ("post", "/api/v1/login/challenges", &["purpose"]),
        (
            "post",
            "/api/v1/login/challenges/{id}/approve",
            &["device_id", "signature"],
        ),
        ("put", "/api/v1/settings/user-source", &["source"]),
        ("post", "/api/v1/customers", &["display_name", "name"]),
        ("post", "/api/v1/customers/{name}/technicians", &["user_id"]),
        ("put", "/api/v1/settings/master-key", &["enabled"]),
        (
            "put",
            "/api/v1/settings/desktop-login",
            &["enabled", "method"],
        ),
        ("put", "/api/v1/users/{id}/password", &["password"]),
        ("put", "/api/v1/accounts/shared", &["username"]),
        (
            "post",
            "/api/v1/agent/enroll",
            &["enrollment_token", "hostname"],
        ),
        ("post", "/api/v1/agent/login", &["password", "username"]),
        (
            "post",
            "/api/v1/agent/password",
            &["new_password", "password", "username"],
        ),
    ];
    for (method, path, required) in bodies {
        let operation = &document["paths"][path][method];
        let schema = resolved(
            &document,
            &operation["requestBody"]["content"]["application/json"]["schema"],
        );
        assert_eq!(sorted(&schema["required"]), required, "{method} {path}");
        assert_eq!(
            schema["additionalProperties"], false,
            "{method} {path}: unknown fields are refused"
        );
    }
    // Both kinds of user that `POST /api/v1/users` creates, one per kind of host.
    let users = resolved(
        &document,
        &document["paths"]["/api/v1/users"]["post"]["requestBody"]["content"]["application/json"]["schema"],
    );
    let kinds: Vec<Vec<String>> = users["anyOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kind| sorted(&resolved(&document, kind)["required"]))
        .collect();
    assert_eq!(
        kinds,
        [
            vec!["email".to_owned()],
            ["email", "first_name", "last_name", "username"]
                .map(str::to_owned)
                .to_vec()
        ]
    );
    // The upload is multipart.
    assert!(
        document["paths"]["/api/v1/branding"]["put"]["requestBody"]["content"]
            ["multipart/form-data"]["schema"]["properties"]["logo"]
            .is_object()
    );
    // Operations that read no body declare none.
    for (method, path) in [
        ("post", "/api/v1/logout"),
        ("post", "/api/v1/customers/{name}/sso"),
        ("post", "/api/v1/agent/enrollment-tokens"),
        ("post", "/api/v1/users/{id}/admin"),
        ("get", "/api/v1/users"),
    ] {
        assert!(
            document["paths"][path][method]["requestBody"].is_null(),
            "{method} {path}"
        );
    }

    // Query parameters, none of them required, each with its type.
    for (path, expected) in [
        ("/api/v1/agent/changes", vec!["after", "limit", "wait"]),
        ("/api/v1/audit/events", vec!["after", "limit"]),
        ("/api/v1/audit/state", vec!["at"]),
        ("/api/v1/login/challenges/{id}", vec!["wait"]),
    ] {
        let parameters = document["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap();
        let mut names = Vec::new();
        for parameter in parameters.iter().filter(|p| p["in"] == "query") {
            assert_eq!(parameter["required"], false, "{path}: {parameter}");
            assert!(
                parameter["schema"]["type"].is_string(),
                "{path}: {parameter}"
            );
            names.push(parameter["name"].as_str().unwrap());
        }
        names.sort();
        assert_eq!(names, expected, "{path}");
    }

    // What the document says is what the route does: a signup with a field it does not
    // list is refused, and so is one without a field it requires.
    let signup = json!({"name": "acme", "display_name": "Acme", "admin_email": "a@acme.example"});
    let mut extra = signup.clone();
    extra["plan"] = json!("gold");
    let (status, problem) = Platform::call(
        platform
            .request(Method::POST, "", "/api/v1/signup")
            .json(&extra),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("plan"),
        "{problem}"
    );
    let mut missing = signup.clone();
    missing.as_object_mut().unwrap().remove("admin_email");
    let (status, problem) = Platform::call(
        platform
            .request(Method::POST, "", "/api/v1/signup")
            .json(&missing),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("admin_email"),
        "{problem}"
    );
    let (status, _) = Platform::call(
        platform
            .request(Method::POST, "", "/api/v1/signup")
            .json(&signup),
    )
    .await;
    assert_eq!(status, 201);
    platform.server.shutdown().await;
}

/// Whether checking this answer against the document fails.
fn refused(method: Method, path: &str, status: u16, content_type: &str, body: Value) -> bool {
    std::panic::catch_unwind(|| {
        harness::contract::check(&method, path, status, content_type, &body);
    })
    .is_err()
}

/// Whether checking this request body against the document fails.
fn request_refused(method: Method, path: &str, body: Value) -> bool {
    std::panic::catch_unwind(|| harness::contract::check_request(&method, path, &body)).is_err()
}

/// The name, username and password rules are `pattern`s (`domain::validate`), read here by the
/// `jsonschema` crate as any client's validator would: what the service takes passes, what it
/// refuses for its characters does not.
#[test]
fn the_document_describes_names_usernames_and_passwords() {
    let user = |first: &str, username: &str, password: &str| {
        json!({"first_name": first, "last_name": "Doe", "username": username,
               "email": "j@contoso.example", "password": password})
    };
    let users = "/api/v1/users";
    assert!(!request_refused(
        Method::POST,
        users,
        user(" Zoë ", "j.doe", "correct horse")
    ));
    for (first, username, password) in [
        (" ", "j.doe", "correct horse"),
        ("Zo\u{200b}ë", "j.doe", "correct horse"),
        ("Zoë", "j/doe", "correct horse"),
        ("Zoë", " jdoe", "correct horse"),
        ("Zoë", "abcdefghijklmnopqrstu", "correct horse"),
        ("Zoë", "j.doe", "short"),
        ("Zoë", "j.doe", "correct\thorse"),
    ] {
        assert!(
            request_refused(Method::POST, users, user(first, username, password)),
            "{first:?} {username:?} {password:?}"
        );
    }
    let shared = "/api/v1/accounts/shared";
    assert!(!request_refused(
        Method::PUT,
        shared,
        json!({"username": "idem-admin"})
    ));
    assert!(request_refused(
        Method::PUT,
        shared,
        json!({"username": "idem:admin"})
    ));
    let customers = "/api/v1/customers";
    let customer = |display: &str| json!({"name": "contoso", "display_name": display});
    assert!(!request_refused(
        Method::POST,
        customers,
        customer("Contoso Ltd")
    ));
    assert!(request_refused(
        Method::POST,
        customers,
        customer(&"x".repeat(101))
    ));
}

#[test]
fn answers_are_held_to_the_document() {
    let key = "/api/v1/settings/master-key";
    let json = "application/json";
    assert!(!refused(
        Method::GET,
        key,
        200,
        json,
        json!({"enabled": true, "key_version": 1})
    ));
    // A field of the wrong type, a required field missing, a value outside its enum.
    assert!(refused(
        Method::GET,
        key,
        200,
        json,
        json!({"enabled": "yes", "key_version": 1})
    ));
    assert!(refused(
        Method::GET,
        key,
        200,
        json,
        json!({"enabled": true})
    ));
    assert!(refused(
        Method::PUT,
        "/api/v1/settings/desktop-login",
        200,
        json,
        json!({"enabled": true, "method": "fingerprint"})
    ));
    // A path parameter matches any segment; a UUID must be one.
    let user = json!({
        "id": "not-a-uuid", "email": "a@b.example", "first_name": null, "last_name": null,
        "admin": false, "auditor": {"msp": false, "customers": []}, "onboarded": false,
        "devices": 0, "created_at": "2026-11-23T10:00:00Z",
    });
    assert!(refused(
        Method::POST,
        "/api/v1/users/0194/admin",
        200,
        json,
        user.clone()
    ));
    let mut valid = user;
    valid["id"] = json!(uuid::Uuid::now_v7());
    assert!(!refused(
        Method::POST,
        "/api/v1/users/0194/admin",
        200,
        json,
        valid
    ));
    // JSON from an operation the document answers nothing for.
    assert!(refused(
        Method::DELETE,
        "/api/v1/users/0194",
        200,
        json,
        json!({"gone": true})
    ));
    // A success answers the status the document gives it.
    let gone = "/api/v1/customers/contoso";
    assert!(refused(Method::DELETE, gone, 200, "", Value::Null));
    assert!(!refused(Method::DELETE, gone, 204, "", Value::Null));
    let customer = json!({
        "id": uuid::Uuid::now_v7(), "name": "contoso", "display_name": "Contoso",
        "url": "http://contoso-acme.localhost", "active_users": 0, "technicians": 1,
    });
    assert!(refused(
        Method::POST,
        "/api/v1/customers",
        200,
        json,
        customer.clone()
    ));
    assert!(!refused(
        Method::POST,
        "/api/v1/customers",
        201,
        json,
        customer
    ));
    // Problems are problems; answers outside the API are not the document's business.
    assert!(refused(
        Method::GET,
        key,
        404,
        "application/problem+json",
        json!({"title": "Not found"})
    ));
    assert!(!refused(
        Method::GET,
        key,
        404,
        "application/problem+json",
        json!({"type": "about:blank", "title": "Not found", "status": 404, "detail": "no"})
    ));
    assert!(!refused(
        Method::GET,
        "/admin/users",
        200,
        "text/html",
        json!("<html>")
    ));
}

#[test]
fn audit_export_lines_are_held_to_the_document() {
    let refused = |content_type: &str, text: &str| {
        std::panic::catch_unwind(|| {
            harness::contract::check_lines(
                &Method::GET,
                "/api/v1/audit/events",
                200,
                content_type,
                text,
            );
        })
        .is_err()
    };
    let line = json!({
        "tenant": uuid::Uuid::now_v7(), "seq": 1, "position": 7, "id": uuid::Uuid::now_v7(),
        "type": "CustomerTenantOpened", "schema_version": 1,
        "occurred_at": "2026-11-24T01:17:08.615257434Z", "actor": "user:x",
        "data": {"name": "contoso"}, "prev_hash": "0".repeat(64), "hash": "ab".repeat(32),
    });
    let ndjson = "application/x-ndjson";
    let two = format!("{line}\n{line}\n");
    assert!(!refused(ndjson, &two));
    assert!(!refused(ndjson, ""), "an empty page");
    // A hash that is not 64 hex digits, a field missing, a line that is not JSON.
    let mut short = line.clone();
    short["hash"] = json!("abc");
    assert!(refused(ndjson, &format!("{line}\n{short}\n")));
    let mut missing = line.clone();
    missing.as_object_mut().unwrap().remove("prev_hash");
    assert!(refused(ndjson, &missing.to_string()));
    assert!(refused(ndjson, "{\"seq\": 1"));
    // Another media type for a success is refused too.
    assert!(refused("application/json", &two));
}
