//! idemd over real HTTP: startup, health, readiness, metrics, signup and its refusals, the
//! development mailer, and restarts on the same data directory (a long stream folded from its
//! snapshot after one).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use api::snapshots::SNAPSHOT_EVERY;
use api::{Server, Settings};
use domain::event::{Event, UserSource, UserSourceSet};
use eventlog::{Commit, EventLog, Expected, RocksLog, Snapshot, StreamAppend, StreamId};
use serde_json::{Value, json};

async fn start(dir: &Path) -> Server {
    let settings = Settings {
        bind: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.to_path_buf()),
        ..Settings::default()
    };
    Server::start(settings.resolve().unwrap()).await.unwrap()
}

/// A client that sends `host` as the Host header (tenants live at `{label}.localhost`).
fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

fn url(server: &Server, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", server.addr.port())
}

/// The service's Prometheus text.
async fn metrics(server: &Server) -> String {
    client()
        .get(url(server, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn signup(server: &Server, body: Value) -> reqwest::Response {
    client()
        .post(url(server, "/api/v1/signup"))
        .header("host", format!("localhost:{}", server.addr.port()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn codes(mail_dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(mail_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("eml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let to = text
            .lines()
            .find_map(|l| l.strip_prefix("To: "))
            .unwrap()
            .trim()
            .to_owned();
        let code = text
            .lines()
            .find_map(|l| l.trim_end().strip_prefix("Code: "))
            .unwrap()
            .to_owned();
        found.push((to, code));
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_creates_a_tenant_and_mails_its_admin_a_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;

    let health = client().get(url(&server, "/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = client().get(url(&server, "/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let key = std::fs::metadata(dir.path().join("root.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    let mail = std::fs::metadata(dir.path().join("mail")).unwrap();
    assert_eq!(mail.permissions().mode() & 0o777, 0o700);

    let answer = signup(
        &server,
        json!({"name": "acme", "display_name": "Acme IT", "admin_email": "Alice@Acme.example"}),
    )
    .await;
    assert_eq!(answer.status(), 201);
    let position: u64 = answer.headers()["idem-position"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(answer.headers().contains_key("x-request-id"));
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["tenant"]["name"], "acme");
    assert_eq!(body["tenant"]["display_name"], "Acme IT");
    assert_eq!(
        body["tenant"]["url"],
        format!("http://acme.localhost:{}", server.addr.port())
    );
    // The domain of an email is case-insensitive and kept lowercase; the local part as typed.
    assert_eq!(body["admin"]["email"], "Alice@acme.example");

    let mail = codes(&dir.path().join("mail"));
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].0, "Alice@acme.example");
    assert_eq!(mail[0].1.len(), 8);
    assert!(mail[0].1.bytes().all(|b| b.is_ascii_digit()));
    // The code is kept only as a digest: it appears in no file of the data directory.
    for entry in walk(&dir.path().join("log"))
        .into_iter()
        .chain(walk(&dir.path().join("readmodels")))
    {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(8).any(|w| w == mail[0].1.as_bytes()),
            "{} holds the code",
            entry.display()
        );
    }

    // The tenant's host now resolves (read-your-writes: the answer came after projection).
    let metrics = metrics(&server).await;
    assert!(metrics.contains(&format!("idem_log_head_position {position}")));
    assert!(metrics.contains(&format!(
        "idem_projection_checkpoint{{projection=\"directory\"}} {position}"
    )));
    let on_tenant = client()
        .post(url(&server, "/api/v1/signup"))
        .header("host", format!("acme.localhost:{}", server.addr.port()))
        .json(&json!({"name": "other", "display_name": "Other", "admin_email": "a@b.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(on_tenant.status(), 404);
    let problem: Value = on_tenant.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("platform"));

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_refuses_bad_input_and_taken_names_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let ok = signup(
        &server,
        json!({"name": "acme", "display_name": "Acme", "admin_email": "a@acme.example"}),
    )
    .await;
    assert_eq!(ok.status(), 201);

    let taken = signup(
        &server,
        json!({"name": "acme", "display_name": "Other", "admin_email": "b@acme.example"}),
    )
    .await;
    assert_eq!(taken.status(), 409);
    assert_eq!(taken.headers()["content-type"], "application/problem+json");

    let invalid = signup(
        &server,
        json!({"name": "Bad Name", "display_name": " ", "admin_email": "nope"}),
    )
    .await;
    assert_eq!(invalid.status(), 422);
    let problem: Value = invalid.json().await.unwrap();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["name", "display_name", "admin_email"]);

    for reserved in ["www", "api", "admin"] {
        let answer = signup(
            &server,
            json!({"name": reserved, "display_name": "X", "admin_email": "a@x.example"}),
        )
        .await;
        assert_eq!(answer.status(), 422, "{reserved}");
    }

    let malformed = client()
        .post(url(&server, "/api/v1/signup"))
        .header("host", format!("localhost:{}", server.addr.port()))
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let unknown_field = signup(
        &server,
        json!({"name": "x", "display_name": "X", "admin_email": "a@x.example", "admin": true}),
    )
    .await;
    assert_eq!(unknown_field.status(), 400);

    let stranger = client()
        .get(url(&server, "/api/v1/nothing"))
        .header("host", format!("nobody.localhost:{}", server.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 404);

    // Only the one good signup reached the log, and one mail was written.
    let metrics = metrics(&server).await;
    assert!(metrics.contains("idem_log_head_position 2\n"), "{metrics}");
    assert_eq!(codes(&dir.path().join("mail")).len(), 1);
    server.shutdown().await;

    // After a restart on the same data directory the tenant is still there.
    let server = start(dir.path()).await;
    let again = signup(
        &server,
        json!({"name": "acme", "display_name": "Acme", "admin_email": "a@acme.example"}),
    )
    .await;
    assert_eq!(again.status(), 409);
    server.shutdown().await;
}

#[test]
fn configuration_is_checked_with_clear_messages() {
    let bad = |settings: Settings, setting: &str| {
        let err = settings.resolve().unwrap_err().to_string();
        assert!(err.starts_with(setting), "{err}");
    };
    bad(
        Settings {
            bind: Some("localhost".into()),
            ..Settings::default()
        },
        "IDEM_BIND",
    );
    bad(
        Settings {
            base_domain: Some("under_score.example".into()),
            ..Settings::default()
        },
        "IDEM_BASE_DOMAIN",
    );
    bad(
        Settings {
            public_scheme: Some("ftp".into()),
            ..Settings::default()
        },
        "IDEM_PUBLIC_SCHEME",
    );
    bad(
        Settings {
            database_url: Some("mysql://x".into()),
            ..Settings::default()
        },
        "IDEM_DATABASE_URL",
    );
    bad(
        Settings {
            signup: Some("maybe".into()),
            ..Settings::default()
        },
        "IDEM_SIGNUP",
    );
    bad(
        Settings {
            mail_from: Some("idem@x.example\r\nBcc: all@x.example".into()),
            ..Settings::default()
        },
        "IDEM_MAIL_FROM",
    );
    bad(
        Settings {
            smtp_url: Some("smtp://".into()),
            ..Settings::default()
        },
        "IDEM_SMTP_URL",
    );
    for (min, expected_ok) in [(7, false), (8, true), (64, true), (65, false)] {
        let result = Settings {
            password_min_length: Some(min),
            ..Settings::default()
        }
        .resolve();
        assert_eq!(result.is_ok(), expected_ok, "min length {min}");
    }
    bad(
        Settings {
            argon2_memory_kib: Some(1024),
            ..Settings::default()
        },
        "IDEM_ARGON2_MEMORY_KIB",
    );
    bad(
        Settings {
            argon2_iterations: Some(0),
            ..Settings::default()
        },
        "IDEM_ARGON2_ITERATIONS",
    );
    bad(
        Settings {
            argon2_parallelism: Some(64),
            ..Settings::default()
        },
        "IDEM_ARGON2_PARALLELISM",
    );
    bad(
        Settings {
            trusted_proxies: Some("10.0.0.0/8, proxy.internal".into()),
            ..Settings::default()
        },
        "IDEM_TRUSTED_PROXIES",
    );
    bad(
        Settings {
            history_cache_mib: Some((1 << 20) + 1),
            ..Settings::default()
        },
        "IDEM_HISTORY_CACHE_MIB",
    );
    for seconds in [0, 3601] {
        let header = Settings {
            header_read_timeout_seconds: Some(seconds),
            ..Settings::default()
        };
        bad(header, "IDEM_HEADER_READ_TIMEOUT_SECONDS");
        let body = Settings {
            body_read_timeout_seconds: Some(seconds),
            ..Settings::default()
        };
        bad(body, "IDEM_BODY_READ_TIMEOUT_SECONDS");
    }
    for connections in [0, 1_000_001] {
        bad(
            Settings {
                max_connections: Some(connections),
                ..Settings::default()
            },
            "IDEM_MAX_CONNECTIONS",
        );
        bad(
            Settings {
                max_connections_per_address: Some(connections),
                ..Settings::default()
            },
            "IDEM_MAX_CONNECTIONS_PER_ADDRESS",
        );
    }
    let none = Settings {
        history_cache_mib: Some(0),
        ..Settings::default()
    };
    assert_eq!(none.resolve().unwrap().history_cache_bytes, 0);
    let config = Settings::default().resolve().unwrap();
    assert_eq!(config.history_cache_bytes, 256 << 20);
    assert_eq!(config.header_read_timeout.as_secs(), 30);
    assert_eq!(config.body_read_timeout.as_secs(), 60);
    assert_eq!(
        config.max_connections, None,
        "derived from the descriptor limit at start"
    );
    assert!(
        config.trusted_proxies.is_empty(),
        "nobody is trusted by default"
    );
    assert_eq!(config.max_connections_per_address, 1_000);
    assert_eq!(config.password_policy.min_chars, 8);
    assert_eq!(config.argon2.memory_kib, 19_456);
    assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(config.base_domain, "localhost");
    assert_eq!(config.mail_from, "idem@localhost");
    assert_eq!(config.root_key_file, Path::new("data").join("root.key"));
    assert_eq!(config.tenant_url("acme"), "http://acme.localhost:8080");

    // A file's settings apply where flags and environment say nothing.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("idem.toml");
    std::fs::write(
        &file,
        "base_domain = \"idem.example\"\nsignup = \"closed\"\n",
    )
    .unwrap();
    let from_file = Settings::from_file(&file).unwrap();
    let config = Settings {
        signup: Some("open".into()),
        ..Settings::default()
    }
    .or(from_file)
    .resolve()
    .unwrap();
    assert_eq!(config.base_domain, "idem.example");
    assert_eq!(config.signup, api::config::Signup::Open);
    std::fs::write(&file, "base_domian = \"typo.example\"\n").unwrap();
    let err = Settings::from_file(&file).unwrap_err().to_string();
    assert!(err.contains("base_domian"), "{err}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Writes `text` to `name` in `dir` with `mode`, for a token file.
fn token_file(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// With `IDEM_METRICS_BIND`, `/metrics` is served there (with `/healthz` and `/readyz`, and
/// nothing of the API), the listen address answers it 404, and a token still applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_their_own_listener_leave_the_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, why) in [
        ("localhost", "not an address:port"),
        ("127.0.0.1:8080", "listen address"),
    ] {
        let err = Settings {
            metrics_bind: Some(bad.into()),
            ..Settings::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("IDEM_METRICS_BIND"), "{err}");
        assert!(err.contains(why), "{err}");
    }
    let token = "0123456789abcdef0123456789abcdef0123456789abcdef";
    let settings = Settings {
        bind: Some("127.0.0.1:0".into()),
        metrics_bind: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().join("data")),
        metrics_token_file: Some(token_file(dir.path(), "token", token, 0o600)),
        ..Settings::default()
    };
    let server = Server::start(settings.resolve().unwrap()).await.unwrap();
    let metrics_addr = server.metrics_addr.unwrap();
    assert_ne!(metrics_addr, server.addr);
    let on_metrics = |path: &str| format!("http://{metrics_addr}{path}");

    let scraped = client()
        .get(on_metrics("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    let body = scraped.text().await.unwrap();
    assert!(body.contains("\nidem_log_head_position "), "{body}");
    let unauthorized = client().get(on_metrics("/metrics")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401, "the token applies there too");
    for path in ["/healthz", "/readyz"] {
        let answer = client().get(on_metrics(path)).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{path}");
    }
    let api = client()
        .get(on_metrics("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404, "nothing of the API");

    let public = client()
        .get(url(&server, "/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    assert_eq!(public.headers()["content-type"], "application/problem+json");
    assert!(!public.text().await.unwrap().contains("idem_"));
    let healthz = client().get(url(&server, "/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200, "health stays on the listen address");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_given_a_token_answer_only_its_bearer() {
    let dir = tempfile::tempdir().unwrap();
    let token = "0123456789abcdef0123456789abcdef0123456789abcdef";

    // A token file that cannot work stops the start, named, and never echoes the token.
    let refused = |path: std::path::PathBuf| {
        let err = Settings {
            metrics_token_file: Some(path),
            ..Settings::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("IDEM_METRICS_TOKEN_FILE"), "{err}");
        assert!(!err.contains("0123456789abcdef"), "{err}");
        err
    };
    let loose = refused(token_file(dir.path(), "loose", token, 0o644));
    assert!(loose.contains("readable by others"), "{loose}");
    let short = refused(token_file(dir.path(), "short", "0123456789abcdef\n", 0o600));
    assert!(short.contains("at least 32"), "{short}");
    let spaced = format!("{} {}", &token[..20], &token[20..]);
    refused(token_file(dir.path(), "spaced", &spaced, 0o600));
    refused(dir.path().join("missing"));

    // A final newline is not part of the token.
    let file = token_file(dir.path(), "metrics.token", &format!("{token}\n"), 0o600);
    let settings = Settings {
        bind: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().join("data")),
        metrics_token_file: Some(file),
        ..Settings::default()
    };
    let server = Server::start(settings.resolve().unwrap()).await.unwrap();
    let ask = |authorization: Option<String>| {
        let mut request = client().get(url(&server, "/metrics"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send()
    };
    let mut wrong = token.to_owned();
    wrong.replace_range(47.., "0");
    for authorization in [
        None,
        Some(format!("Bearer {wrong}")),
        Some(format!("Bearer {}", &token[..40])),
        Some(format!("Basic {token}")),
        Some("Bearer".into()),
    ] {
        let answer = ask(authorization.clone()).await.unwrap();
        assert_eq!(answer.status(), 401, "{authorization:?}");
        assert_eq!(
            answer.headers()["www-authenticate"],
            "Bearer realm=\"metrics\""
        );
        assert_eq!(answer.headers()["content-type"], "application/problem+json");
        let body = answer.text().await.unwrap();
        assert!(!body.contains("idem_log_head_position"), "{body}");
    }
    for authorization in [format!("Bearer {token}"), format!("bearer  {token} ")] {
        let answer = ask(Some(authorization)).await.unwrap();
        assert_eq!(answer.status(), 200);
        let body = answer.text().await.unwrap();
        assert!(body.contains("idem_log_head_position"), "{body}");
    }
    // The rest of the service does not ask for it.
    let health = client().get(url(&server, "/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // Rotation: a new file renamed over the old one is read at the next scrape, and the old
    // token stops working.
    let file = dir.path().join("metrics.token");
    let rotated = "fedcba9876543210fedcba9876543210fedcba98";
    let status = |token: &'static str| {
        let ask = ask(Some(format!("Bearer {token}")));
        async move { ask.await.unwrap().status().as_u16() }
    };
    let replace = |text: &str| {
        let next = token_file(dir.path(), "metrics.token.new", text, 0o600);
        std::fs::rename(next, &file).unwrap();
    };
    replace(&format!("{rotated}\n"));
    assert_eq!(status(rotated).await, 200);
    assert_eq!(status(token).await, 401, "the old token is retired");
    // A version that cannot be used shuts /metrics to everyone (the token it replaced
    // included) until a good one is back: readable by others, too short, gone.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(status(rotated).await, 401, "readable by others");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(status(rotated).await, 200);
    replace("short\n");
    assert_eq!(status(rotated).await, 401, "too short");
    std::fs::remove_file(&file).unwrap();
    assert_eq!(status(rotated).await, 401, "gone");
    replace(token);
    assert_eq!(status(token).await, 200);
    assert_eq!(status(rotated).await, 401);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_onboards_a_device_with_the_mailed_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let port = server.addr.port();
    let created = signup(
        &server,
        json!({"name": "acme", "display_name": "Acme", "admin_email": "alice@acme.example"}),
    )
    .await;
    let admin_id = created.json::<Value>().await.unwrap()["admin"]["id"].clone();
    let code = codes(&dir.path().join("mail"))[0].1.clone();
    let on = |path: &str, host: &str, body: Value| {
        client()
            .post(url(&server, path))
            .header("host", format!("{host}:{port}"))
            .json(&body)
            .send()
    };
    let attempt = |code: &str| {
        json!({"email": "alice@acme.example", "code": code, "device_name": "Alice's phone",
               "device_public_key": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})
    };
    let wrong = if code == "00000000" {
        "11111111"
    } else {
        "00000000"
    };

    // A wrong code is refused, and so is onboarding anywhere but the tenant's host.
    let refused = on(
        "/api/v1/onboarding/complete",
        "acme.localhost",
        attempt(wrong),
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), 401);
    let apex = on("/api/v1/onboarding/complete", "localhost", attempt(&code))
        .await
        .unwrap();
    assert_eq!(apex.status(), 404);
    let elsewhere = on(
        "/api/v1/onboarding/complete",
        "nobody.localhost",
        attempt(&code),
    )
    .await
    .unwrap();
    assert_eq!(elsewhere.status(), 404);

    let enrolled = on(
        "/api/v1/onboarding/complete",
        "acme.localhost",
        attempt(&code),
    )
    .await
    .unwrap();
    assert_eq!(enrolled.status(), 201);
    assert!(enrolled.headers().contains_key("idem-position"));
    let body: Value = enrolled.json().await.unwrap();
    assert_eq!(body["user_id"], admin_id);
    assert!(body["device_id"].as_str().is_some());
    // The code was for one use.
    let again = on(
        "/api/v1/onboarding/complete",
        "acme.localhost",
        attempt(&code),
    )
    .await
    .unwrap();
    assert_eq!(again.status(), 401);

    // Starting answers the same for anyone, and mails only those who may onboard.
    // (alice has onboarded: she gets no new code either.)
    for email in ["nobody@acme.example", "not an email", "alice@acme.example"] {
        let answer = on(
            "/api/v1/onboarding/start",
            "acme.localhost",
            json!({"email": email}),
        )
        .await
        .unwrap();
        assert_eq!(answer.status(), 202, "{email}");
    }
    assert_eq!(codes(&dir.path().join("mail")).len(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_is_rate_limited_per_account_alike_for_known_and_unknown_emails() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let port = server.addr.port();
    let created = signup(
        &server,
        json!({"name": "acme", "display_name": "Acme", "admin_email": "alice@acme.example"}),
    )
    .await;
    assert_eq!(created.status(), 201);
    let start_for = |email: &str| {
        client()
            .post(url(&server, "/api/v1/onboarding/start"))
            .header("host", format!("acme.localhost:{port}"))
            .json(&json!({"email": email}))
            .send()
    };
    // The same answers, in the same order, for an account that exists and one that does not.
    for email in ["alice@acme.example", "ghost@acme.example"] {
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(start_for(email).await.unwrap());
        }
        let codes: Vec<u16> = statuses.iter().map(|r| r.status().as_u16()).collect();
        assert_eq!(codes, vec![202, 202, 202, 429], "{email}");
        let retry: u64 = statuses[3].headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=15 * 60).contains(&retry), "{retry}");
    }
    // Case and spaces do not make a new account.
    assert_eq!(
        start_for(" ALICE@acme.example ").await.unwrap().status(),
        429
    );

    // Wrong codes: refused (401) until the account's tries run out, then 429.
    let mut last = 0;
    for _ in 0..11 {
        last = client()
            .post(url(&server, "/api/v1/onboarding/complete"))
            .header("host", format!("acme.localhost:{port}"))
            .json(
                &json!({"email": "alice@acme.example", "code": "not-it", "device_name": "x",
                          "device_public_key": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}),
            )
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
    }
    assert_eq!(last, 429);
    server.shutdown().await;
}

/// API answers hold tokens and tenant data: no cache keeps them, and no browser sniffs a
/// type. Behind https, browsers are told to stay on https; on plain http, nothing is said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_never_cached_and_https_deployments_ask_for_https() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let answer = signup(
        &server,
        json!({"name": "acme", "display_name": "Acme", "admin_email": "a@acme.example"}),
    )
    .await;
    assert_eq!(answer.status(), 201);
    let refused = client()
        .get(url(&server, "/api/v1/me"))
        .header("host", "acme.localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    for answer in [&answer, &refused] {
        assert_eq!(answer.headers()["cache-control"], "no-store");
        assert_eq!(answer.headers()["x-content-type-options"], "nosniff");
        assert!(answer.headers().get("strict-transport-security").is_none());
    }
    // Outside the API, the route decides what may be cached.
    let health = client().get(url(&server, "/healthz")).send().await.unwrap();
    assert!(health.headers().get("cache-control").is_none());
    assert_eq!(health.headers()["x-content-type-options"], "nosniff");
    server.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        bind: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
        public_scheme: Some("https".into()),
        ..Settings::default()
    };
    let server = Server::start(settings.resolve().unwrap()).await.unwrap();
    let health = client().get(url(&server, "/healthz")).send().await.unwrap();
    assert_eq!(
        health.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_or_made_and_metrics_count_routes_not_paths() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let get = |id: Option<&'static str>| {
        let mut request = client().get(url(&server, "/healthz"));
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        request.send()
    };
    let id = |answer: &reqwest::Response| {
        answer.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    // A caller's id is answered as given.
    let kept = get(Some("trace-42")).await.unwrap();
    assert_eq!(id(&kept), "trace-42");
    // None, or one that is not a short visible token: a fresh UUID v7 instead.
    for given in [None, Some("has space"), Some("")] {
        let made = id(&get(given).await.unwrap());
        let uuid = uuid::Uuid::parse_str(&made).unwrap();
        assert_eq!(uuid.get_version_num(), 7, "{made}");
        assert_eq!(made, uuid.hyphenated().to_string());
    }
    let first = id(&get(None).await.unwrap());
    assert_ne!(first, id(&get(None).await.unwrap()));

    // Six answered requests to one route; paths no route matches are counted as `unmatched`,
    // never under their own path.
    for path in ["/api/v1/no-such-route/1", "/api/v1/no-such-route/2"] {
        let answer = client().get(url(&server, path)).send().await.unwrap();
        assert_eq!(answer.status(), 404);
    }
    let metrics = metrics(&server).await;
    assert!(
        metrics.contains(
            "idem_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 6\n"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "idem_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 2\n"
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("no-such-route"), "{metrics}");
    // The process's own figures, under Prometheus's usual names.
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(metrics.contains(&format!("\n{name} ")), "{name}: {metrics}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_stopped_taking_writes_fails_liveness_and_readiness_without_the_detail() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let acme = json!({"name": "acme", "display_name": "Acme IT", "admin_email": "a@acme.example"});
    assert_eq!(signup(&server, acme).await.status(), 201);
    assert!(metrics(&server).await.contains("\nidem_log_writable 1\n"));

    // As after a failed journal sync (which needs a failing disk to happen for real; the
    // log's own tests make one by taking its journal directory away).
    let secret_detail = "journal segment /data/log/journal/segment-7: input/output error";
    server.log().unwrap().fail_writes(secret_detail);

    let health = client().get(url(&server, "/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let text = health.text().await.unwrap();
    assert!(text.contains("restart idemd"), "{text}");
    assert!(
        !text.contains("segment-7"),
        "the detail stays in the log: {text}"
    );

    let ready = client().get(url(&server, "/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["ready"], false);
    assert_eq!(body["log_writable"], false);
    assert!(!body.to_string().contains("segment-7"));
    assert!(metrics(&server).await.contains("\nidem_log_writable 0\n"));

    // Writes fail without their detail; reads go on.
    let globex =
        json!({"name": "globex", "display_name": "Globex", "admin_email": "g@globex.example"});
    let refused = signup(&server, globex).await;
    assert_eq!(refused.status(), 500);
    let problem = refused.text().await.unwrap();
    assert!(!problem.contains("segment-7"), "{problem}");
    let taken =
        json!({"name": "acme", "display_name": "Acme again", "admin_email": "b@acme.example"});
    assert_eq!(
        signup(&server, taken).await.status(),
        409,
        "refusals that need no write still read the stored state"
    );
    server.shutdown().await;
}

/// A counter's value in `/metrics` (0 when it has no line yet).
async fn counter(server: &Server, line: &str) -> u64 {
    metrics(server)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(' '))
        .map_or(0, |v| v.parse().unwrap())
}

/// Starts onboarding for `email` on acme: a command, so the tenant's history is folded.
async fn start_onboarding(server: &Server, email: &str) {
    let answer = client()
        .post(url(server, "/api/v1/onboarding/start"))
        .header("host", format!("acme.localhost:{}", server.addr.port()))
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
}

/// `n` events the MSP's fold takes in (the user source, set again and again).
async fn grow(log: &RocksLog, stream: StreamId, n: u64) {
    let event = Event::UserSourceSet(UserSourceSet {
        source: UserSource::Local,
    });
    for _ in 0..n / 1024 {
        let append = StreamAppend::new(stream, Expected::Any).events((0..1024).map(|_| {
            projections::codec::encode(&event, uuid::Uuid::now_v7(), chrono::Utc::now(), "test")
                .unwrap()
        }));
        log.commit(Commit::new().append(append)).await.unwrap();
    }
}

/// The codes mailed to `to`, in no particular order.
fn codes_to(dir: &Path, to: &str) -> Vec<String> {
    codes(&dir.join("mail"))
        .into_iter()
        .filter(|(address, _)| address == to)
        .map(|(_, code)| code)
        .collect()
}

/// Snapshots of a tenant's folded state: written once a stream has grown by `SNAPSHOT_EVERY`
/// events, used after a restart (only the events after it are read), and passed over when
/// unusable, then replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_stream_is_folded_from_its_snapshot_after_a_restart() {
    assert_eq!(SNAPSHOT_EVERY % 1024, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let created: Value = signup(
        &server,
        json!({"name": "acme", "display_name": "Acme", "admin_email": "alice@acme.example"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let stream = StreamId(created["tenant"]["id"].as_str().unwrap().parse().unwrap());
    let log = server.log().unwrap();
    grow(&log, stream, SNAPSHOT_EVERY).await;
    assert_eq!(log.snapshot(stream).await.unwrap(), None);
    let grown = log.stream_head(stream).await.unwrap().unwrap();

    // The next command folds the new events and has the snapshot written, before its own
    // event; the writing ends after the command's answer.
    start_onboarding(&server, "ghost@acme.example").await;
    server.snapshot_writes_done().await;
    assert_eq!(
        counter(&server, "idem_snapshots_total{outcome=\"written\"}").await,
        1
    );
    let snapshot = log.snapshot(stream).await.unwrap().unwrap();
    assert_eq!((snapshot.seq, snapshot.hash), (grown.seq, grown.hash));
    let size = snapshot.data.len() as u64;
    drop(log);
    server.shutdown().await;

    // After a restart, a command reads the snapshot and the one event after it, and what it
    // decides on is the whole history: alice exists and is not onboarded, so she gets a code,
    // and the code completes her onboarding.
    let server = start(dir.path()).await;
    let before = codes_to(dir.path(), "alice@acme.example");
    start_onboarding(&server, "alice@acme.example").await;
    assert_eq!(
        counter(&server, "idem_history_folds_total{from=\"snapshot\"}").await,
        1
    );
    assert_eq!(
        counter(
            &server,
            "idem_history_folded_events_total{from=\"snapshot\"}"
        )
        .await,
        0,
        "the snapshot was taken at the head, and an unknown email wrote nothing"
    );
    // The history held since weighs what its snapshot does, nothing folded after it.
    assert_eq!(counter(&server, "idem_history_cache_tenants").await, 1);
    assert_eq!(counter(&server, "idem_history_cache_bytes").await, size);
    assert_eq!(
        counter(&server, "idem_history_folds_total{from=\"start\"}").await,
        0
    );
    let new: Vec<String> = codes_to(dir.path(), "alice@acme.example")
        .into_iter()
        .filter(|code| !before.contains(code))
        .collect();
    assert_eq!(new.len(), 1, "one new code");
    let completed = client()
        .post(url(&server, "/api/v1/onboarding/complete"))
        .header("host", format!("acme.localhost:{}", server.addr.port()))
        .json(&json!({"email": "alice@acme.example", "code": new[0],
                      "device_name": "phone",
                      "device_public_key": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(completed.status(), 201);
    server.shutdown().await;

    // A snapshot this build cannot read (another state version, say) is passed over: the
    // whole stream is folded, and the service works as before.
    let head = {
        let log = RocksLog::open(dir.path().join("log")).unwrap();
        let head = log.stream_head(stream).await.unwrap().unwrap();
        log.commit(Commit::new().snapshot(Snapshot {
            stream,
            seq: head.seq,
            hash: head.hash,
            data: br#"{"version": 999, "state": {}}"#.to_vec(),
        }))
        .await
        .unwrap();
        head
    };
    let server = start(dir.path()).await;
    start_onboarding(&server, "ghost@acme.example").await;
    assert_eq!(
        counter(&server, "idem_snapshots_total{outcome=\"unusable\"}").await,
        1
    );
    assert_eq!(
        counter(&server, "idem_history_folded_events_total{from=\"start\"}").await,
        head.seq
    );
    // It is replaced once the stream has grown by as much again.
    let log = server.log().unwrap();
    grow(&log, stream, SNAPSHOT_EVERY).await;
    start_onboarding(&server, "ghost@acme.example").await;
    server.snapshot_writes_done().await;
    assert_eq!(
        counter(&server, "idem_snapshots_total{outcome=\"written\"}").await,
        1
    );
    let replaced = log.snapshot(stream).await.unwrap().unwrap();
    assert_eq!(replaced.seq, head.seq + SNAPSHOT_EVERY);
    assert!(matches!(
        domain::snapshot::decode(&replaced.data).unwrap(),
        domain::snapshot::TenantState::Msp(_)
    ));
    drop(log);
    server.shutdown().await;
}

/// `IDEM_HISTORY_CACHE_MIB` bounds the folded states kept between commands: with the default,
/// a second command on a tenant folds only from the cache; with 0, each command folds the
/// tenant anew, and decides as well.
#[tokio::test]
async fn the_history_cache_holds_what_its_setting_allows() {
    for (mib, cold_folds_of_the_second) in [(None, 0), (Some(0), 1)] {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            bind: Some("127.0.0.1:0".into()),
            data_dir: Some(dir.path().to_path_buf()),
            history_cache_mib: mib,
            ..Settings::default()
        };
        let server = Server::start(settings.resolve().unwrap()).await.unwrap();
        let created = signup(
            &server,
            json!({"name": "acme", "display_name": "Acme", "admin_email": "alice@acme.example"}),
        )
        .await;
        assert_eq!(created.status(), 201);
        let cold = || async { counter(&server, "idem_history_folds_total{from=\"start\"}").await };
        let codes = codes_to(dir.path(), "alice@acme.example").len();
        start_onboarding(&server, "alice@acme.example").await;
        let before = cold().await;
        assert!(before >= 1, "the first command folds the tenant");
        start_onboarding(&server, "alice@acme.example").await;
        assert_eq!(cold().await - before, cold_folds_of_the_second, "{mib:?}");
        let held = counter(&server, "idem_history_cache_tenants").await;
        assert_eq!(held, u64::from(mib.is_none()), "{mib:?}");
        assert_eq!(
            codes_to(dir.path(), "alice@acme.example").len(),
            codes + 2,
            "both commands decided on alice's history"
        );
        server.shutdown().await;
    }
}

/// Reads from `stream` until the server closes it (end of file or reset), answering what it
/// sent; the bound only keeps a broken server from hanging the test.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server never closed the connection");
    received
}

/// Sends `GET path` on a keep-alive connection and reads its answer: the head, byte by byte
/// up to its blank line, then as much body as it announces.
async fn exchange(stream: &mut tokio::net::TcpStream, path: &str) -> (String, String) {
    use tokio::io::AsyncWriteExt;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_answer(stream).await
}

async fn read_answer(stream: &mut tokio::net::TcpStream) -> (String, String) {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .unwrap()
        .parse()
        .unwrap();
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    (head, String::from_utf8(body).unwrap())
}

/// A connection that sends nothing, or a request head that never ends (slowloris), is closed
/// once `IDEM_HEADER_READ_TIMEOUT_SECONDS` have passed, and so is a keep-alive connection left
/// idle that long; requests that arrive in time are served, several on one connection.
#[tokio::test]
async fn a_request_head_that_does_not_arrive_in_time_closes_its_connection() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        bind: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
        header_read_timeout_seconds: Some(1),
        ..Settings::default()
    };
    let server = Server::start(settings.resolve().unwrap()).await.unwrap();

    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut dribbling = TcpStream::connect(server.addr).await.unwrap();
    dribbling
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    let mut kept_alive = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..2 {
        let (head, _) = exchange(&mut kept_alive, "/healthz").await;
        assert!(head.starts_with("HTTP/1.1 200"), "served in time: {head}");
    }

    assert!(read_until_closed(&mut silent).await.is_empty());
    let answered = read_until_closed(&mut dribbling).await;
    assert!(
        !String::from_utf8_lossy(&answered).contains(" 200 "),
        "the unfinished request was not served"
    );
    read_until_closed(&mut kept_alive).await;

    // The service goes on: a new connection is served.
    let answer = reqwest::get(format!("http://{}/healthz", server.addr))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    server.shutdown().await;
}

/// A request whose head promises a body that then stalls is answered 408, as a problem, and
/// its connection closed once `IDEM_BODY_READ_TIMEOUT_SECONDS` have passed since its head;
/// nothing of it is stored, and a whole body sent at once is served as before.
#[tokio::test]
async fn a_request_body_that_does_not_arrive_in_time_is_answered_408() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        bind: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
        body_read_timeout_seconds: Some(1),
        ..Settings::default()
    };
    let server = Server::start(settings.resolve().unwrap()).await.unwrap();
    let whole =
        json!({"name": "acme", "display_name": "Acme IT", "admin_email": "alice@acme.example"})
            .to_string();

    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/signup HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        whole.len()
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled
        .write_all(&whole.as_bytes()[..whole.len() / 2])
        .await
        .unwrap();
    let answered = String::from_utf8(read_until_closed(&mut stalled).await).unwrap();
    assert!(answered.starts_with("HTTP/1.1 408"), "{answered}");
    let lower = answered.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/problem+json"),
        "{answered}"
    );
    assert!(lower.contains("connection: close"), "{answered}");
    assert!(answered.contains("within 1 s"), "{answered}");
    assert!(
        codes_to(dir.path(), "alice@acme.example").is_empty(),
        "the unfinished signup did nothing"
    );
    assert!(
        metrics(&server).await.contains(
            r#"idem_http_requests_total{route="/api/v1/signup",method="POST",status="408"} 1"#
        ),
        "the refusal is counted"
    );

    let served = signup(&server, serde_json::from_str(&whole).unwrap()).await;
    assert_eq!(served.status(), 201, "{}", served.text().await.unwrap());
    server.shutdown().await;
}

/// With `IDEM_MAX_CONNECTIONS` open, a new connection waits to be accepted (its request is
/// not answered, and `/metrics` shows the limit reached) until one of them closes; then it is
/// served.
#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        bind: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
        max_connections: Some(2),
        ..Settings::default()
    };
    let server = Server::start(settings.resolve().unwrap()).await.unwrap();
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    for stream in [&mut first, &mut second] {
        let (head, _) = exchange(stream, "/healthz").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }

    let mut waiting = TcpStream::connect(server.addr).await.unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // Several exchanges on an open connection, each long enough for the server to have
    // accepted and answered the third if the limit let it.
    for _ in 0..5 {
        let (head, body) = exchange(&mut second, "/metrics").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body.contains("\nidem_http_connections 2\n"), "{body}");
        assert!(body.contains("\nidem_http_connections_max 2\n"), "{body}");
    }
    let mut nothing = [0u8; 1];
    assert_eq!(
        waiting.try_read(&mut nothing).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the connection past the limit was not served"
    );

    drop(first);
    let (head, _) = read_answer(&mut waiting).await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "served once a place freed: {head}"
    );
    let (_, body) = exchange(&mut waiting, "/metrics").await;
    assert!(body.contains("\nidem_http_connections 2\n"), "{body}");
    server.shutdown().await;
}

/// A connection from `from` (a loopback address) to `server`.
async fn connect_from(from: &str, server: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

/// With `IDEM_MAX_CONNECTIONS_PER_ADDRESS` connections open from one address, another from it
/// is answered 503 with `Retry-After` and closed, while other addresses are served; once one
/// closes, the address is served again. A trusted proxy is not capped.
#[tokio::test]
async fn one_address_may_hold_only_its_share_of_connections() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        bind: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
        max_connections_per_address: Some(2),
        trusted_proxies: Some("127.0.0.9".into()),
        ..Settings::default()
    };
    let server = Server::start(settings.resolve().unwrap()).await.unwrap();
    let mut first = connect_from("127.0.0.2", server.addr).await;
    let mut second = connect_from("127.0.0.2", server.addr).await;
    for stream in [&mut first, &mut second] {
        let (head, _) = exchange(stream, "/healthz").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }

    let mut refused = connect_from("127.0.0.2", server.addr).await;
    let (head, body) = exchange(&mut refused, "/healthz").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("retry-after: 5\r\n"), "{head}");
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["status"], 503);
    assert!(
        problem["detail"].as_str().unwrap().contains("your address"),
        "{problem}"
    );
    let mut rest = Vec::new();
    refused.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "closed after the refusal");

    // Another address, and a trusted proxy past the cap, are served.
    let mut other = connect_from("127.0.0.3", server.addr).await;
    let (head, _) = exchange(&mut other, "/healthz").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut proxied = Vec::new();
    for _ in 0..3 {
        let mut stream = connect_from("127.0.0.9", server.addr).await;
        let (head, _) = exchange(&mut stream, "/healthz").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        proxied.push(stream);
    }

    let (_, metrics) = exchange(&mut other, "/metrics").await;
    assert!(
        metrics.contains("\nidem_http_connections_refused_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nidem_http_connections_per_address_max 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nidem_http_connection_addresses 2\n"),
        "127.0.0.2 and 127.0.0.3, not the proxy: {metrics}"
    );
    assert!(metrics.contains("\nidem_http_connections 6\n"), "{metrics}");

    drop(first);
    // The server sees the close when it next reads: until then the place is taken, so try
    // until it is given back, each try answered either way.
    let mut again = loop {
        let mut stream = connect_from("127.0.0.2", server.addr).await;
        let (head, _) = exchange(&mut stream, "/healthz").await;
        if head.starts_with("HTTP/1.1 200") {
            break stream;
        }
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        tokio::task::yield_now().await;
    };
    let (head, _) = exchange(&mut again, "/healthz").await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "kept open once admitted: {head}"
    );
    drop(second);
    server.shutdown().await;
}
