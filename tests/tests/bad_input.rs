//! Bad input to the MSP routes: invalid names and values are 422 naming the field, malformed
//! or mistyped bodies 400, oversized ones 413, unknown ids 404; nothing is written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use harness::Platform;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_to_the_msp_routes_is_refused_and_writes_nothing() {
    let platform = Platform::start().await;
    let (_, admin) = platform.acme_with_contoso("alice@acme.example").await;
    let state = || async {
        let (_, users) =
            Platform::call(platform.as_user(&admin, Method::GET, "acme", "/api/v1/users")).await;
        let (_, customers) =
            Platform::call(platform.as_user(&admin, Method::GET, "acme", "/api/v1/customers"))
                .await;
        (users, customers)
    };
    let before = state().await;

    let long_name = "a".repeat(60);
    let invalid: Vec<(&str, Value, &str)> = vec![
        (
            "/api/v1/customers",
            json!({"name": "Contoso2", "display_name": "x"}),
            "name",
        ),
        (
            "/api/v1/customers",
            json!({"name": "-lead", "display_name": "x"}),
            "name",
        ),
        (
            "/api/v1/customers",
            json!({"name": "trail-", "display_name": "x"}),
            "name",
        ),
        (
            "/api/v1/customers",
            json!({"name": "a_b", "display_name": "x"}),
            "name",
        ),
        (
            "/api/v1/customers",
            json!({"name": "", "display_name": "x"}),
            "name",
        ),
        (
            "/api/v1/customers",
            json!({"name": "www", "display_name": "x"}),
            "name",
        ),
        (
            "/api/v1/customers",
            json!({"name": long_name, "display_name": "x"}),
            "name",
        ),
        (
            "/api/v1/customers",
            json!({"name": "ok", "display_name": "  "}),
            "display_name",
        ),
        (
            "/api/v1/customers",
            json!({"name": "ok", "display_name": "a\u{202e}b"}),
            "display_name",
        ),
        ("/api/v1/users", json!({"email": "not-an-email"}), "email"),
        (
            "/api/v1/users",
            json!({"email": "a@b.example", "first_name": "x\u{0}"}),
            "first_name",
        ),
    ];
    for (path, body, field) in invalid {
        let (status, problem) = Platform::call(
            platform
                .as_user(&admin, Method::POST, "acme", path)
                .json(&body),
        )
        .await;
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
    let (status, problem) = Platform::call(
        platform
            .as_user(&admin, Method::PUT, "acme", "/api/v1/settings/user-source")
            .json(&json!({"source": "ldap"})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["field"], "source");

    // Taken names are conflicts (the host label's reservation, taken by the customer's own
    // stream), and the refused commit leaves no second customer behind.
    let (status, problem) = Platform::call(
        platform
            .as_user(&admin, Method::POST, "acme", "/api/v1/customers")
            .json(&json!({"name": "contoso", "display_name": "Again"})),
    )
    .await;
    assert_eq!(status, 409);
    assert!(
        problem["detail"].as_str().unwrap().contains("contoso-acme"),
        "{problem}"
    );
    let (_, customers) =
        Platform::call(platform.as_user(&admin, Method::GET, "acme", "/api/v1/customers")).await;
    assert_eq!(customers.as_array().unwrap().len(), 1, "{customers}");
    let (status, _) = Platform::call(
        platform
            .as_user(&admin, Method::POST, "acme", "/api/v1/users")
            .json(&json!({"email": "ALICE@acme.example"})),
    )
    .await;
    assert_eq!(status, 409);

    // Malformed, mistyped, unknown fields, oversized.
    let raw: Vec<(&str, String, u16)> = vec![
        ("/api/v1/customers", "{".into(), 400),
        (
            "/api/v1/customers",
            r#"{"name": 5, "display_name": "x"}"#.into(),
            400,
        ),
        ("/api/v1/customers", r#"{"name": "x"}"#.into(), 400),
        (
            "/api/v1/customers",
            r#"{"name": "x", "display_name": "x", "admin": true}"#.into(),
            400,
        ),
        ("/api/v1/users", r#"["a@b.example"]"#.into(), 400),
        (
            "/api/v1/customers/contoso/technicians",
            r#"{"user_id": "nope"}"#.into(),
            400,
        ),
        (
            "/api/v1/customers",
            format!(
                r#"{{"name": "big", "display_name": "{}"}}"#,
                "x".repeat(70_000)
            ),
            413,
        ),
    ];
    for (path, body, expected) in raw {
        let (status, problem) = Platform::call(
            platform
                .as_user(&admin, Method::POST, "acme", path)
                .header("content-type", "application/json")
                .body(body.clone()),
        )
        .await;
        assert_eq!(status, expected, "{body:.80}: {problem}");
        assert_eq!(problem["status"], expected);
    }

    // Unknown ids and names.
    for (method, path) in [
        (Method::GET, "/api/v1/users/not-a-uuid".to_owned()),
        (
            Method::GET,
            format!("/api/v1/users/{}", uuid::Uuid::now_v7()),
        ),
        (
            Method::DELETE,
            format!("/api/v1/users/{}", uuid::Uuid::now_v7()),
        ),
        (
            Method::POST,
            format!("/api/v1/users/{}/admin", uuid::Uuid::now_v7()),
        ),
        (Method::DELETE, "/api/v1/customers/nosuch".to_owned()),
        (Method::DELETE, "/api/v1/customers/NOT..VALID".to_owned()),
        (
            Method::GET,
            "/api/v1/customers/nosuch/technicians".to_owned(),
        ),
        (
            Method::DELETE,
            format!(
                "/api/v1/customers/contoso/technicians/{}",
                uuid::Uuid::now_v7()
            ),
        ),
        (Method::POST, "/api/v1/customers/nosuch/sso".to_owned()),
        (Method::GET, "/api/v1/nosuch".to_owned()),
    ] {
        let (status, _) =
            Platform::call(platform.as_user(&admin, method.clone(), "acme", &path)).await;
        assert_eq!(status, 404, "{method} {path}");
    }
    // The last admin can neither be removed nor lose the role.
    let (_, me) = Platform::call(platform.as_user(&admin, Method::GET, "acme", "/api/v1/me")).await;
    let alice = me["user"]["id"].as_str().unwrap();
    for path in [
        format!("/api/v1/users/{alice}/admin"),
        format!("/api/v1/users/{alice}"),
    ] {
        let (status, _) =
            Platform::call(platform.as_user(&admin, Method::DELETE, "acme", &path)).await;
        assert_eq!(status, 409, "{path}");
    }

    // A read-your-writes position that is not a position.
    let (status, problem) = Platform::call(
        platform
            .as_user(&admin, Method::GET, "acme", "/api/v1/customers")
            .header("idem-min-position", "soon"),
    )
    .await;
    assert_eq!(status, 400, "{problem}");

    assert_eq!(state().await, before, "nothing was written");
    platform.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_of_the_wrong_type_are_problems_naming_them() {
    let platform = Platform::start().await;
    let (_, admin) = platform.acme("alice@acme.example").await;
    let (challenge, _) = platform.challenge("acme").await;
    let cases = [
        ("/api/v1/audit/events?after=abc".to_owned(), "after"),
        ("/api/v1/audit/events?after=1&limit=-1".to_owned(), "limit"),
        (
            "/api/v1/audit/events?limit=99999999999999999999999".to_owned(),
            "limit",
        ),
        (
            format!("/api/v1/login/challenges/{challenge}?wait=soon"),
            "wait",
        ),
    ];
    for (path, field) in cases {
        let answer = platform
            .as_user(&admin, Method::GET, "acme", &path)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 422, "{path}");
        assert_eq!(
            answer.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let problem = harness::body(answer).await;
        assert_eq!(problem["errors"][0]["field"], field, "{path}: {problem}");
        assert_eq!(problem["status"], 422);
    }
    // A path segment that does not decode to UTF-8 is refused before any handler runs, by
    // axum's own extractor, and still answered as a problem.
    for path in ["/api/v1/users/%FF", "/api/v1/customers/%FF%FE/technicians"] {
        let answer = platform
            .as_user(&admin, Method::GET, "acme", path)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{path}");
        assert_eq!(
            answer.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let problem = harness::body(answer).await;
        assert_eq!(problem["status"], 400, "{path}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("UTF-8"),
            "{path}: {problem}"
        );
    }
    // Credentials are checked first: a caller without them learns nothing of the parameters.
    let (status, _) =
        Platform::call(platform.request(Method::GET, "acme", "/api/v1/audit/events?after=abc"))
            .await;
    assert_eq!(status, 401);
    // Parameters of the right type still work, and unknown ones are ignored.
    let (status, _) = Platform::call(platform.as_user(
        &admin,
        Method::GET,
        "acme",
        "/api/v1/audit/events?after=0&limit=1&utm_source=x",
    ))
    .await;
    assert_eq!(status, 200);
    platform.server.shutdown().await;
}
