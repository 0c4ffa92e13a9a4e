//! The portals' defences over plain HTTP: pages need a session, forms need the session's
//! anti-forgery token and a same-host origin (refused forms store nothing), every page has a
//! Content-Security-Policy without inline script, what people typed is escaped, and the login
//! page neither sends anyone to another site nor lets another site finish a login.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agent::authenticator::Keyring;
use harness::Platform;
use reqwest::Method;
use serde_json::{Value, json};

async fn customers(platform: &Platform, token: &str) -> Vec<Value> {
    let (status, body) =
        Platform::call(platform.as_user(token, Method::GET, "acme", "/api/v1/customers")).await;
    assert_eq!(status, 200);
    body.as_array().unwrap().clone()
}

/// A form post to `path` on `acme` with the session cookie, `origin` and these fields.
async fn post_form(
    platform: &Platform,
    token: &str,
    origin: Option<&str>,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = platform
        .request(Method::POST, "acme", path)
        .header("cookie", format!("idem_session={token}"))
        .form(fields);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.unwrap()
}

/// Acme with its admin's session (answered) and a technician, Bob (his id answered).
async fn acme_with_bob(platform: &Platform) -> (String, String) {
    let (_, token) = platform.acme_with_contoso("admin@acme.test").await;
    let (status, bob) = Platform::call(
        platform
            .as_user(&token, Method::POST, "acme", "/api/v1/users")
            .json(&json!({"email": "bob@acme.test"})),
    )
    .await;
    assert_eq!(status, 201, "{bob}");
    (token, bob["id"].as_str().unwrap().to_owned())
}

/// The MSP's users page as `token`'s session sees it.
async fn users_page(platform: &Platform, token: &str) -> String {
    platform.page(token, "acme", "/admin/users").await
}

/// A form post to `path` on host `label`, from that host's own page, with the session.
async fn post_on(
    platform: &Platform,
    label: &str,
    token: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    platform
        .request(Method::POST, label, path)
        .header("cookie", format!("idem_session={token}"))
        .header("origin", platform.url(label))
        .form(fields)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn forms_need_the_sessions_token_and_this_hosts_origin() {
    let platform = Platform::start().await;
    platform.signup("acme", "Acme IT", "admin@acme.test").await;
    let mut phone = Keyring::default();
    platform.enroll(&mut phone, "acme", "admin@acme.test").await;
    let token = platform.login(&phone, "acme").await;
    let csrf = domain::session::csrf_token(&token);
    let own = platform.url("acme");
    // No token, a wrong token, another session's token, another host's page, no origin.
    let other_session = platform.login(&phone, "acme").await;
    let forged: Vec<(Option<String>, Option<String>)> = vec![
        (Some(own.clone()), None),
        (Some(own.clone()), Some("0000".to_owned())),
        (
            Some(own.clone()),
            Some(domain::session::csrf_token(&other_session)),
        ),
        (Some(platform.url("evil")), Some(csrf.clone())),
        (None, Some(csrf.clone())),
    ];
    for (origin, offered) in &forged {
        let mut fields = vec![("name", "contoso"), ("display_name", "Contoso")];
        if let Some(offered) = offered {
            fields.push(("csrf", offered));
        }
        let answer = post_form(
            &platform,
            &token,
            origin.as_deref(),
            "/admin/customers",
            &fields,
        )
        .await;
        assert_eq!(answer.status(), 403, "{origin:?} {offered:?}");
        let page = answer.text().await.unwrap();
        assert!(page.contains("did not come from this portal"), "{page}");
    }
    assert!(
        customers(&platform, &token).await.is_empty(),
        "nothing was stored"
    );

    // The real form: created, and sent back to the list with a notice.
    let answer = post_on(
        &platform,
        "acme",
        &token,
        "/admin/customers",
        &[
            ("csrf", &csrf),
            ("name", "contoso"),
            ("display_name", "Contoso"),
        ],
    )
    .await;
    assert_eq!(answer.status(), 303);
    assert_eq!(
        answer.headers()["location"],
        "/admin/customers?done=customer-created"
    );
    assert_eq!(customers(&platform, &token).await.len(), 1);

    // A refused form answers 422 with the field's message, and keeps what was typed.
    let answer = post_on(
        &platform,
        "acme",
        &token,
        "/admin/customers",
        &[
            ("csrf", &csrf),
            ("name", "Not Valid"),
            ("display_name", "Typed Name"),
        ],
    )
    .await;
    assert_eq!(answer.status(), 422);
    let page = answer.text().await.unwrap();
    assert!(page.contains("id=\"customer-name-error\""), "{page}");
    assert!(page.contains("value=\"Typed Name\""), "{page}");
    assert_eq!(customers(&platform, &token).await.len(), 1);
}

#[tokio::test]
async fn pages_need_a_session_carry_a_strict_policy_and_escape_what_people_typed() {
    let platform = Platform::start().await;
    platform.signup("acme", "Acme IT", "admin@acme.test").await;
    let mut phone = Keyring::default();
    platform.enroll(&mut phone, "acme", "admin@acme.test").await;
    let token = platform.login(&phone, "acme").await;

    for path in ["/admin", "/admin/customers", "/admin/users", "/"] {
        let answer = platform
            .request(Method::GET, "acme", path)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 303, "{path}");
        let location = answer.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.starts_with("/login?next="), "{path} → {location}");
    }
    // A session of another tenant's host is no session here.
    platform
        .signup("other", "Other MSP", "admin@other.test")
        .await;
    let answer = platform
        .request(Method::GET, "other", "/admin/customers")
        .header("cookie", format!("idem_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);

    // What an admin typed is shown as text, never as markup.
    let csrf = domain::session::csrf_token(&token);
    let answer = post_on(
        &platform,
        "acme",
        &token,
        "/admin/customers",
        &[
            ("csrf", &csrf),
            ("name", "tricky"),
            ("display_name", "<script>alert(1)</script>"),
        ],
    )
    .await;
    assert_eq!(answer.status(), 303);
    let answer = platform
        .request(Method::GET, "acme", "/admin/customers")
        .header("cookie", format!("idem_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let policy = answer.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"),
        "{policy}"
    );
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(answer.headers()["x-frame-options"], "DENY");
    assert_eq!(answer.headers()["cache-control"], "no-store");
    let page = answer.text().await.unwrap();
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "escaped"
    );
    assert!(!page.contains("<script>alert(1)"), "never markup");
    assert!(!page.contains("<script>"), "no inline script at all");
}

#[tokio::test]
async fn the_login_page_stays_on_this_host_and_finishes_only_in_its_own_browser() {
    let platform = Platform::start().await;
    platform.signup("acme", "Acme IT", "admin@acme.test").await;
    let mut phone = Keyring::default();
    platform.enroll(&mut phone, "acme", "admin@acme.test").await;

    // `next` that leaves the host falls back to the admin portal.
    for next in [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "/login",
    ] {
        let encoded: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
        let answer = platform
            .request(Method::GET, "acme", &format!("/login?next={encoded}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let page = answer.text().await.unwrap();
        assert!(page.contains("data-next=\"/admin\""), "{next}: {page}");
    }

    // The page's challenge id is in its own SameSite=Strict cookie for /login.
    let answer = platform
        .request(Method::GET, "acme", "/login?next=%2Fadmin%2Fusers")
        .send()
        .await
        .unwrap();
    let cookie = answer.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/login")
            && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let challenge = cookie.split(';').next().unwrap().to_owned();
    let page = answer.text().await.unwrap();
    let start = page.find("idem://approve?").unwrap();
    let qr = page[start..page[start..].find('<').unwrap() + start].replace("&amp;", "&");
    agent::authenticator::approve(&phone, &qr).await.unwrap();

    // Without that cookie (another site posting), no session is handed out.
    let answer = platform
        .request(Method::POST, "acme", "/login")
        .header("accept", "application/json")
        .form(&[("next", "/admin/users")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.headers().get("set-cookie").is_none());
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["status"], "expired");

    // With it: the session cookie, and where to go.
    let answer = platform
        .request(Method::POST, "acme", "/login")
        .header("cookie", &challenge)
        .form(&[("next", "/admin/users")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()["location"], "/admin/users");
    let cookies: Vec<String> = answer
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("idem_session=") && !c.starts_with("idem_session=;"))
        .expect("a session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    let token = session
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("idem_session=");
    let (status, me) =
        Platform::call(platform.as_user(token, Method::GET, "acme", "/api/v1/me")).await;
    assert_eq!(status, 200);
    assert_eq!(me["user"]["email"], "admin@acme.test");

    // The challenge hands out one session only.
    let answer = platform
        .request(Method::POST, "acme", "/login")
        .header("cookie", &challenge)
        .header("accept", "application/json")
        .form(&[("next", "/admin/users")])
        .send()
        .await
        .unwrap();
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["status"], "expired");
}

/// The login page's code can be seen by anyone near the screen. An onlooker who polls its id
/// while the page waits withdraws it: the page is told, and shows a new code saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_code_polled_by_an_onlooker_is_withdrawn_and_the_page_says_so() {
    let platform = Platform::start().await;
    platform.signup("acme", "Acme IT", "admin@acme.test").await;
    let answer = platform
        .request(Method::GET, "acme", "/login?next=%2Fadmin")
        .send()
        .await
        .unwrap();
    let cookie = answer.headers()["set-cookie"].to_str().unwrap().to_owned();
    let challenge = cookie.split(';').next().unwrap().to_owned();
    let page = answer.text().await.unwrap();
    let start = page.find("idem://approve?").unwrap();
    let qr = page[start..page[start..].find('<').unwrap() + start].replace("&amp;", "&");
    let id = agent::authenticator::parse_challenge(&qr).unwrap().id;
    // The cookie holds the code's id and the poll secret, which the code does not.
    let secret = challenge
        .strip_prefix(&format!("idem_login={id}."))
        .unwrap_or_else(|| panic!("{challenge}"));
    assert!(secret.len() >= 40 && !qr.contains(secret), "{challenge}");

    // The page waits on its code (as its script does)...
    let waiting = tokio::spawn(
        platform
            .request(Method::POST, "acme", "/login")
            .header("cookie", &challenge)
            .header("accept", "application/json")
            .form(&[("next", "/admin")])
            .send(),
    );
    // ...and an onlooker polls the id read off the screen until their polls overlap.
    let onlooker = loop {
        let answer: Value = platform
            .request(
                Method::GET,
                "acme",
                &format!("/api/v1/login/challenges/{id}?wait=0"),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if answer["status"] != "pending" {
            break answer;
        }
    };
    assert_eq!(onlooker["status"], "denied");
    let answer = waiting.await.unwrap().unwrap();
    assert!(answer.headers().get("set-cookie").is_none());
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body, json!({"status": "withdrawn"}));

    let page = platform
        .request(Method::GET, "acme", "/login?withdrawn=1&next=%2Fadmin")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Someone else asked for that code") && page.contains("idem://approve?"),
        "{page}"
    );
}

/// An admin gives and ends auditor roles from the Users page: on the MSP itself or on one
/// customer, and the page shows who audits what.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_users_page_gives_and_ends_auditor_roles() {
    let platform = Platform::start().await;
    let (token, bob) = acme_with_bob(&platform).await;
    let csrf = domain::session::csrf_token(&token);
    let page = || users_page(&platform, &token);
    let roles = || async {
        let (_, user) = Platform::call(platform.as_user(
            &token,
            Method::GET,
            "acme",
            &format!("/api/v1/users/{bob}"),
        ))
        .await;
        user["auditor"].clone()
    };
    let post = |path: String, fields: Vec<(&'static str, String)>| {
        let (platform, token, csrf) = (&platform, &token, &csrf);
        async move {
            let mut form = vec![("csrf", csrf.as_str())];
            form.extend(fields.iter().map(|(k, v)| (*k, v.as_str())));
            post_on(platform, "acme", token, &path, &form).await
        }
    };
    let grant = |customer: &str| {
        post(
            "/admin/auditors".into(),
            vec![("user", bob.clone()), ("customer", customer.to_owned())],
        )
    };
    let end = |customer: Option<&str>| {
        let fields = customer
            .map(|c| vec![("customer", c.to_owned())])
            .unwrap_or_default();
        post(format!("/admin/users/{bob}/revoke-auditor"), fields)
    };

    let before = page().await;
    assert!(
        before.contains("action=\"/admin/auditors\"")
            && before.contains(&format!("<option value=\"{bob}\">bob@acme.test</option>"))
            && before.contains("<option value=\"contoso\">"),
        "the page offers its users, the MSP and its customers: {before}"
    );
    assert_eq!(grant("contoso").await.status(), 303);
    assert_eq!(grant("").await.status(), 303);
    assert_eq!(
        roles().await,
        json!({"msp": true, "customers": ["contoso"]})
    );
    let after = page().await;
    assert!(after.contains("Auditor of contoso"), "{after}");
    assert!(after.contains(&format!("/admin/users/{bob}/revoke-auditor")));

    // A customer that does not exist: refused, and nothing changes.
    assert_eq!(grant("nosuch").await.status(), 404);
    assert_eq!(
        roles().await,
        json!({"msp": true, "customers": ["contoso"]})
    );

    assert_eq!(end(Some("contoso")).await.status(), 303);
    assert_eq!(roles().await, json!({"msp": true, "customers": []}));
    assert_eq!(end(None).await.status(), 303);
    assert_eq!(roles().await, json!({"msp": false, "customers": []}));
}

#[tokio::test]
async fn choices_a_page_does_not_offer_are_refused_next_to_their_field() {
    let platform = Platform::start().await;
    platform.signup("acme", "Acme IT", "admin@acme.test").await;
    let mut phone = Keyring::default();
    platform.enroll(&mut phone, "acme", "admin@acme.test").await;
    let token = platform.login(&phone, "acme").await;
    let (status, _) = Platform::call(
        platform
            .as_user(&token, Method::POST, "acme", "/api/v1/customers")
            .json(&serde_json::json!({"name": "contoso", "display_name": "Contoso"})),
    )
    .await;
    assert_eq!(status, 201);

    // A login method no select offers (a hand-made post): 422 beside the select.
    let on_customer = platform.login(&phone, "contoso-acme").await;
    let csrf = domain::session::csrf_token(&on_customer);
    let answer = post_on(
        &platform,
        "contoso-acme",
        &on_customer,
        "/admin/settings",
        &[
            ("csrf", &csrf),
            ("section", "desktop-login"),
            ("enabled", "on"),
            ("method", "smartcard"),
        ],
    )
    .await;
    assert_eq!(answer.status(), 422);
    let page = answer.text().await.unwrap();
    assert!(page.contains("id=\"desktop-method-error\""), "{page}");
    let (_, desktop) = Platform::call(platform.as_user(
        &on_customer,
        Method::GET,
        "contoso-acme",
        "/api/v1/settings/desktop-login",
    ))
    .await;
    assert_eq!(desktop["enabled"], false, "nothing stored");

    // A delegation to someone who is not a user of the MSP.
    let csrf = domain::session::csrf_token(&token);
    for user in ["not-a-user", "01a20000-0000-7000-8000-000000000000"] {
        let answer = post_on(
            &platform,
            "acme",
            &token,
            "/admin/customers/contoso/technicians",
            &[("csrf", &csrf), ("user_id", user)],
        )
        .await;
        assert!(
            matches!(answer.status().as_u16(), 404 | 422),
            "{user}: {}",
            answer.status()
        );
    }
    let (_, technicians) = Platform::call(platform.as_user(
        &token,
        Method::GET,
        "acme",
        "/api/v1/customers/contoso/technicians",
    ))
    .await;
    let delegated = technicians
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["via"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == "delegation")
        })
        .count();
    assert_eq!(delegated, 0, "nothing stored: {technicians}");
}

#[tokio::test]
async fn a_mistyped_address_is_a_page_for_browsers_and_a_problem_for_programs() {
    let platform = Platform::start().await;
    platform.signup("acme", "Acme IT", "admin@acme.test").await;
    let browser_accept = "text/html,application/xhtml+xml,*/*;q=0.8";

    // A mistyped address, and what axum refuses before any handler (a path segment that is
    // not UTF-8, a body that is not a form): pages, each with its status.
    for (method, path, status, text) in [
        (
            Method::GET,
            "/admin/no-such-page",
            404,
            "There is no page at this address",
        ),
        (
            Method::GET,
            "/admin/users/%FF",
            400,
            "This request could not be read",
        ),
        (
            Method::POST,
            "/login",
            415,
            "This request could not be read",
        ),
    ] {
        let answer = platform
            .request(method, "acme", path)
            .header("accept", browser_accept)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status, "{path}");
        assert!(
            answer.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        assert!(answer.headers().contains_key("content-security-policy"));
        assert!(answer.text().await.unwrap().contains(text), "{path}");
    }

    for (path, accept) in [
        ("/admin/no-such-page", "application/json"),
        ("/api/v1/no-such-route", browser_accept),
    ] {
        let answer = platform
            .request(Method::GET, "acme", path)
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 404);
        assert_eq!(
            answer.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_form_sent_after_the_session_ended_signs_in_again_and_comes_back_to_its_page() {
    let platform = Platform::start().await;
    platform.signup("acme", "Acme IT", "admin@acme.test").await;
    let mut phone = Keyring::default();
    platform.enroll(&mut phone, "acme", "admin@acme.test").await;
    let token = platform.login(&phone, "acme").await;
    let (status, _) =
        Platform::call(platform.as_user(&token, Method::POST, "acme", "/api/v1/logout")).await;
    assert_eq!(status, 204);

    let csrf = domain::session::csrf_token(&token);
    let answer = platform
        .request(Method::POST, "acme", "/admin/customers")
        .header("cookie", format!("idem_session={token}"))
        .header("origin", platform.url("acme"))
        .header(
            "referer",
            format!("{}/admin/customers", platform.url("acme")),
        )
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "contoso"),
            ("display_name", "Contoso"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    assert_eq!(
        answer.headers()["location"],
        "/login?next=%2Fadmin%2Fcustomers&ended=1"
    );
    // A referer of another host is not followed back.
    let answer = platform
        .request(Method::POST, "acme", "/apps/contoso/open")
        .header("cookie", format!("idem_session={token}"))
        .header("origin", platform.url("acme"))
        .header("referer", "http://evil.localhost/phish")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()["location"], "/login?next=%2Fadmin&ended=1");
}

/// The audit page pages from the log's head without walking the chain; the chain is verified
/// when the admin asks, and the answer counts every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_verifies_the_chain_on_demand() {
    let platform = Platform::start().await;
    let (_, token) = platform.acme_with_contoso("admin@acme.test").await;
    let page = |path: &'static str| {
        let (platform, token) = (&platform, &token);
        async move {
            let answer = platform
                .request(Method::GET, "acme", path)
                .header("cookie", format!("idem_session={token}"))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200, "{path}");
            answer.text().await.unwrap()
        }
    };
    let (_, head) =
        Platform::call(platform.as_user(&token, Method::GET, "acme", "/api/v1/audit/head")).await;
    let events = head["head_seq"].as_u64().unwrap();
    assert!(events > 3, "{head}");

    let plain = page("/admin/audit").await;
    assert!(plain.contains(&format!("{events} events.")), "{plain}");
    assert!(plain.contains("href=\"/admin/audit?verify=1\""), "{plain}");
    assert!(!plain.contains("Chain verified") && !plain.contains("Chain broken"));
    assert!(
        plain.contains(&format!("start=\"{events}\"")),
        "the timeline starts at the head: {plain}"
    );

    let checked = page("/admin/audit?verify=1").await;
    assert!(checked.contains("Chain verified"), "{checked}");
    assert!(
        checked.contains(&format!("All {events} events")),
        "{checked}"
    );

    let older = page("/admin/audit?before=3").await;
    assert!(older.contains("start=\"2\""), "{older}");
    platform.server.shutdown().await;
}

/// "Reset phone" on the users page revokes every authenticator of the user: the page offers
/// it for enrolled users only (and not for oneself), and the user must enrol a new phone.
#[tokio::test]
async fn the_users_page_resets_a_lost_phone() {
    let platform = Platform::start().await;
    let (token, bob) = acme_with_bob(&platform).await;
    let page = || users_page(&platform, &token);
    let reset = format!("/admin/users/{bob}/reset-phone");
    assert!(!page().await.contains(&reset), "not enrolled yet");
    let mut phone = Keyring::default();
    platform.enroll(&mut phone, "acme", "bob@acme.test").await;
    let bobs_session = platform.login(&phone, "acme").await;
    let listed = page().await;
    assert!(listed.contains(&reset), "{listed}");
    assert_eq!(
        listed.matches("reset-phone").count(),
        1,
        "the admin cannot reset her own phone from the list: {listed}"
    );

    let csrf = domain::session::csrf_token(&token);
    let answer = post_on(&platform, "acme", &token, &reset, &[("csrf", &csrf)]).await;
    assert_eq!(answer.status(), 303);
    let to = answer.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.starts_with("/admin/users"), "{to}");
    let (status, devices) = Platform::call(platform.as_user(
        &token,
        Method::GET,
        "acme",
        &format!("/api/v1/users/{bob}/authenticators"),
    ))
    .await;
    assert_eq!((status, devices), (200, json!([])));
    let (status, _) =
        Platform::call(platform.as_user(&bobs_session, Method::GET, "acme", "/api/v1/me")).await;
    assert_eq!(status, 401, "Bob's session ended");
    assert!(!page().await.contains(&reset));
    // Without the form token: refused, nothing revoked (there is nothing left to revoke).
    let answer = post_on(&platform, "acme", &token, &reset, &[]).await;
    assert_eq!(answer.status(), 403);
}

/// The directory's forms set temporary passwords when their box is ticked (the reset form's
/// is ticked by default in the page), and the user's page says so.
#[tokio::test]
async fn a_password_set_in_the_portal_is_temporary_when_its_box_is_ticked() {
    let platform = Platform::start().await;
    let (phone, _) = platform.acme_with_contoso("admin@acme.test").await;
    let host = "contoso-acme";
    let token = platform.login(&phone, host).await;
    let (status, _) = platform
        .call_as(
            &token,
            Method::PUT,
            host,
            "/api/v1/settings/master-key",
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 200);
    let csrf = domain::session::csrf_token(&token);
    let mut fields = vec![
        ("csrf", csrf.as_str()),
        ("first_name", "John"),
        ("last_name", "Doe"),
        ("username", "john"),
        ("email", "john@contoso.test"),
        ("password", "Temporary-Horse-1"),
        ("temporary", "on"),
    ];
    let answer = post_on(&platform, host, &token, "/admin/users", &fields).await;
    assert_eq!(answer.status(), 303);
    let (_, users) = platform
        .call_as(&token, Method::GET, host, "/api/v1/users", None)
        .await;
    assert_eq!(users[0]["must_change_password"], true, "{users}");
    let john = users[0]["id"].as_str().unwrap().to_owned();
    let page = platform
        .page(&token, host, &format!("/admin/users/{john}"))
        .await;
    assert!(page.contains("Temporary: to be changed"), "{page}");
    let list = platform.page(&token, host, "/admin/users").await;
    assert!(list.contains("(temporary)"), "{list}");
    assert!(
        page.contains(r#"name="temporary" value="on" checked"#),
        "the reset form's box is ticked: {page}"
    );

    // A reset with the box cleared is his to keep; ticked, temporary again.
    let reset = format!("/admin/users/{john}/password");
    fields = vec![("csrf", csrf.as_str()), ("password", "Johns-Own-Horse-2")];
    for ticked in [false, true] {
        let mut sent = fields.clone();
        if ticked {
            sent.push(("temporary", "on"));
        }
        let answer = post_on(&platform, host, &token, &reset, &sent).await;
        assert_eq!(answer.status(), 303);
        let (_, user) = platform
            .call_as(
                &token,
                Method::GET,
                host,
                &format!("/api/v1/users/{john}"),
                None,
            )
            .await;
        assert_eq!(user["must_change_password"], ticked, "{user}");
    }
}

/// "My phones": a user's own phones, a code mailed to add one, a button to remove one.
#[tokio::test]
async fn the_phones_page_mails_a_code_and_removes_a_phone() {
    let platform = Platform::start().await;
    let (admin, bob) = acme_with_bob(&platform).await;
    let mut phone = Keyring::default();
    let device = platform.enroll(&mut phone, "acme", "bob@acme.test").await;
    let session = platform.login(&phone, "acme").await;
    let page = platform.page(&session, "acme", "/phones").await;
    assert!(
        page.contains("test phone") && page.contains("Mail me a code"),
        "{page}"
    );
    assert!(
        page.contains(r#"href="/phones""#),
        "in the technician's menu"
    );

    let csrf = domain::session::csrf_token(&session);
    let answer = post_on(
        &platform,
        "acme",
        &session,
        "/phones/add",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(answer.status(), 303);
    assert!(platform.mails_to("bob@acme.test")[0].contains("add a phone"));

    let remove = format!("/phones/{}/remove", device.device_id);
    let answer = post_on(&platform, "acme", &session, &remove, &[]).await;
    assert_eq!(answer.status(), 403, "no form token, nothing removed");
    let answer = post_on(&platform, "acme", &session, &remove, &[("csrf", &csrf)]).await;
    assert_eq!(answer.status(), 303);
    let (status, _) = platform
        .call_as(&session, Method::GET, "acme", "/api/v1/me", None)
        .await;
    assert_eq!(status, 401, "the session ended with the phone");
    let (_, phones) = platform
        .call_as(
            &admin,
            Method::GET,
            "acme",
            &format!("/api/v1/users/{bob}/authenticators"),
            None,
        )
        .await;
    assert_eq!(phones, json!([]));
}
