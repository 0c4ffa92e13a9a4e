//! `/api/v1/openapi.json` covers every route: each operation it lists is served by the router
//! (not the fallback, not a 405), the contract's routes built so far are all in it, and a path
//! it does not list is the fallback's 404.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use harness::Platform;
use reqwest::Method;
use serde_json::Value;

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
