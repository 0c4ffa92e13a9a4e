//! The portals in a real browser (headless Chromium over WebDriver): the seeds' steps in
//! order, across tenant hosts under `localhost`, with the software authenticator approving
//! the QR codes the login pages show. Each form's invalid input is tried on the way: the
//! error shows next to its field, what was typed stays, and nothing is stored. Screenshots of
//! each main page land in `artifacts/screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agent::authenticator::{self, Keyring};
use fantoccini::key::Key;
use harness::browser::Browser;
use harness::{Platform, gradient_png};
use reqwest::Method;
use serde_json::{Value, json};

/// Signs in on `label` at `path` the way a person does: the page shows a QR code, the
/// person opens "Using the software authenticator?", gives the text to the authenticator,
/// which approves; the page then moves on by itself.
async fn sign_in(browser: &Browser, platform: &Platform, phone: &Keyring, label: &str, path: &str) {
    browser
        .goto(&format!("{}{path}", platform.url(label)))
        .await;
    browser.wait_path("/login").await;
    browser.wait("#login img").await;
    browser.wait("#login[data-waiting='yes']").await;
    browser.click("details summary").await;
    let qr = browser.text("#qr-text").await;
    assert!(qr.starts_with("idem://approve?"), "{qr}");
    authenticator::approve(phone, &qr).await.unwrap();
}

/// The admin's view through the API, to check what the pages stored (and did not).
async fn api_get(platform: &Platform, token: &str, label: &str, path: &str) -> Value {
    let (status, body) = Platform::call(platform.as_user(token, Method::GET, label, path)).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

fn count(value: &Value) -> usize {
    value.as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_seeds_in_the_portals() {
    let platform = Platform::start().await;

    // Sign-up on the platform's own page; a bad tenant name is refused next to its field.
    let admin = Browser::start().await;
    admin
        .goto(&format!("http://localhost:{}/", platform.port()))
        .await;
    admin.fill("#signup-display_name", "Acme IT").await;
    admin.fill("#signup-name", "Acme IT!").await;
    admin.fill("#signup-admin_email", "admin@acme.test").await;
    admin.click_button("form", "Create tenant").await;
    assert!(!admin.text("#signup-name-error").await.is_empty());
    assert_eq!(
        admin
            .wait("#signup-admin_email")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("admin@acme.test")
    );
    admin.screenshot("00-signup").await;
    admin.fill("#signup-name", "acme").await;
    admin.click_button("form", "Create tenant").await;
    assert_eq!(admin.text("#tenant-url").await, platform.url("acme"));

    // The admin enrols her phone with the mailed code.
    let mut admin_phone = Keyring::default();
    platform
        .enroll(&mut admin_phone, "acme", "admin@acme.test")
        .await;
    let api_token = platform.login(&admin_phone, "acme").await;

    // She signs in by QR code and lands on Customers.
    admin.goto(&format!("{}/admin", platform.url("acme"))).await;
    admin.wait_path("/login?next=%2Fadmin").await;
    admin.wait("#login img").await;
    admin.screenshot("01-login").await;
    sign_in(&admin, &platform, &admin_phone, "acme", "/admin").await;
    admin.wait_path("/admin/customers").await;
    assert!(admin.text(".topbar").await.contains("Acme IT"));
    assert!(admin.page_text().await.contains("No customers yet"));

    // Users: add a technician; an invalid email shows its error and stores nothing.
    admin.follow("nav a[href='/admin/users']").await;
    admin.fill("#user-email", "not-an-email").await;
    admin.fill("#user-first_name", "Tina").await;
    admin.click_button("#main", "Add user").await;
    let error = admin.text("#user-email-error").await;
    assert!(!error.is_empty());
    assert_eq!(
        admin
            .wait("#user-first_name")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("Tina")
    );
    assert_eq!(
        count(&api_get(&platform, &api_token, "acme", "/api/v1/users").await),
        1
    );
    for (email, first, last) in [
        ("tech@acme.test", "Tina", "Tech"),
        ("ada@acme.test", "Ada", "Admin"),
    ] {
        admin.fill("#user-email", email).await;
        admin.fill("#user-first_name", first).await;
        admin.fill("#user-last_name", last).await;
        admin.click_button("#main", "Add user").await;
        admin.wait(".notice").await;
        assert!(admin.text("table").await.contains(email));
    }
    // The last one by keyboard only: Tab from field to field, Enter submits.
    admin.click("#user-email").await;
    admin.keys("nick@acme.test").await;
    admin.keys(&Key::Tab.to_string()).await;
    assert_eq!(admin.focused().await, "first_name");
    admin
        .keys(&format!("Nick{}Nodelegation", char::from(Key::Tab)))
        .await;
    assert_eq!(admin.focused().await, "last_name");
    admin
        .client
        .execute("document.documentElement.dataset.left = '1';", vec![])
        .await
        .unwrap();
    admin.keys(&Key::Enter.to_string()).await;
    admin.wait("html:not([data-left]) .notice").await;
    assert!(admin.text("table").await.contains("nick@acme.test"));
    admin.click_in_row("ada@acme.test", "Make admin").await;
    admin.wait(".notice").await;
    admin.click_in_row("ada@acme.test", "Revoke admin").await;
    admin.wait(".notice").await;
    admin.click_in_row("ada@acme.test", "Make admin").await;
    admin.wait(".notice").await;
    let users = api_get(&platform, &api_token, "acme", "/api/v1/users").await;
    assert_eq!(count(&users), 4);
    let ada = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "ada@acme.test")
        .unwrap();
    assert_eq!(ada["admin"], true);
    admin.screenshot("02-msp-users").await;

    // User source.
    admin.follow("nav a[href='/admin/settings']").await;
    admin.click_button("#main", "Save").await;
    assert!(admin.text(".notice").await.contains("Settings saved"));

    // Customers: a bad tenant name is refused next to its field, the display name stays.
    admin.follow("nav a[href='/admin/customers']").await;
    admin.fill("#customer-display_name", "Contoso Ltd").await;
    admin.fill("#customer-name", "Bad Name!").await;
    admin.click_button("#main", "Save").await;
    assert!(!admin.text("#customer-name-error").await.is_empty());
    assert_eq!(
        admin
            .wait("#customer-display_name")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("Contoso Ltd")
    );
    assert_eq!(
        count(&api_get(&platform, &api_token, "acme", "/api/v1/customers").await),
        0
    );
    admin.fill("#customer-name", "contoso").await;
    admin.click_button("#main", "Save").await;
    assert!(admin.text(".notice").await.contains("Customer created"));
    let table = admin.text("table").await;
    assert!(
        table.contains("Contoso Ltd") && table.contains("contoso-acme.localhost"),
        "{table}"
    );
    admin.screenshot("03-customers").await;

    // Access delegation: Tina gets Contoso.
    admin.click_in_row("Contoso Ltd", "Access delegation").await;
    admin.wait("#delegate-user_id").await;
    admin
        .choose("#delegate-user_id", "Tina Tech <tech@acme.test>")
        .await;
    admin.click_button("#main", "Delegate").await;
    assert!(admin.text(".notice").await.contains("Access delegated"));
    assert!(admin.text("table").await.contains("tech@acme.test"));
    // Every row's button says "Revoke"; its accessible name says whose.
    admin
        .wait("button[aria-label='Revoke tech@acme.test']")
        .await;
    admin.screenshot("04-delegation").await;

    // One click on the customer's name: signed in on the customer's own host.
    admin.follow("nav a[href='/admin/customers']").await;
    admin.click_in_row("Contoso Ltd", "Contoso Ltd").await;
    admin.wait_path("/admin/users").await;
    assert_eq!(admin.url().await.host_str(), Some("contoso-acme.localhost"));
    assert!(admin.text(".topbar").await.contains("Contoso Ltd"));
    let customer_token = platform.login(&admin_phone, "contoso-acme").await;

    // Settings: master key and desktop login.
    admin.follow("nav a[href='/admin/settings']").await;
    admin.click("#master-key-enabled").await;
    admin.click_button("#settings-master-key", "Save").await;
    admin.wait(".notice").await;
    admin.click("#desktop-enabled").await;
    admin
        .choose("#desktop-method", "Username and password")
        .await;
    admin.click_button("#settings-desktop-login", "Save").await;
    admin.wait(".notice").await;
    let desktop = api_get(
        &platform,
        &customer_token,
        "contoso-acme",
        "/api/v1/settings/desktop-login",
    )
    .await;
    assert_eq!(desktop["enabled"], true);
    let key = api_get(
        &platform,
        &customer_token,
        "contoso-acme",
        "/api/v1/settings/master-key",
    )
    .await;
    assert_eq!(key["enabled"], true);
    admin.screenshot("05-customer-settings").await;

    // Directory users: a bad username is refused, the rest of the form stays, nothing stored.
    admin.follow("nav a[href='/admin/users']").await;
    admin.fill("#user-first_name", "John").await;
    admin.fill("#user-last_name", "Doe").await;
    admin.fill("#user-username", "john/doe").await;
    admin.fill("#user-email", "john@contoso.test").await;
    admin.fill("#user-password", "Correct-Horse-42").await;
    admin.click_button("#main", "Create user").await;
    assert!(!admin.text("#user-username-error").await.is_empty());
    assert_eq!(
        admin
            .wait("#user-email")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("john@contoso.test")
    );
    assert_eq!(
        count(&api_get(&platform, &customer_token, "contoso-acme", "/api/v1/users").await),
        0
    );
    admin.fill("#user-username", "john.doe").await;
    admin.fill("#user-password", "Correct-Horse-42").await;
    admin.click_button("#main", "Create user").await;
    assert!(admin.text(".notice").await.contains("User created"));
    assert!(admin.text("table").await.contains("john.doe"));
    admin.screenshot("06-customer-users").await;

    // One user: a short password is refused; a good one changes the password version, and
    // is a temporary one unless the box (ticked by default) is cleared.
    admin.click_in_row("john.doe", "John Doe").await;
    admin.fill("#password-password", "short").await;
    admin.click_button("#main", "Change password").await;
    assert!(!admin.text("#password-password-error").await.is_empty());
    let users = api_get(&platform, &customer_token, "contoso-acme", "/api/v1/users").await;
    let john_id = users[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(users[0]["password_version"], 1);
    admin.fill("#password-password", "Another-Horse-43").await;
    admin.click_button("#main", "Change password").await;
    assert!(admin.text(".notice").await.contains("Password changed"));
    assert!(admin.text(".facts").await.contains("Temporary"));
    admin.click_button("#main", "Enable passwordless").await;
    assert!(admin.text(".notice").await.contains("Passwordless"));
    admin.click_button("#main", "Disable").await;
    assert!(admin.text(".facts").await.contains("Disabled"));
    admin.click_button("#main", "Enable").await;
    assert!(admin.text(".facts").await.contains("Enabled"));
    let john = api_get(
        &platform,
        &customer_token,
        "contoso-acme",
        &format!("/api/v1/users/{john_id}"),
    )
    .await;
    assert_eq!(john["password_version"], 2);
    assert_eq!(john["must_change_password"], true);
    assert_eq!(john["passwordless"], true);
    assert_eq!(john["enabled"], true);
    admin.screenshot("07-customer-user").await;

    // A user created for passwordless only, then deleted.
    admin.follow("nav a[href='/admin/users']").await;
    admin.fill("#user-first_name", "Jane").await;
    admin.fill("#user-last_name", "Roe").await;
    admin.fill("#user-username", "jane.roe").await;
    admin.fill("#user-email", "jane@contoso.test").await;
    admin.click_button("#main", "Create user").await;
    assert!(admin.text("table").await.contains("jane.roe"));
    admin.click_in_row("jane.roe", "Jane Roe").await;
    admin.click_button("#main", "Delete user").await;
    assert!(admin.text(".notice").await.contains("User removed"));
    assert!(!admin.text("table").await.contains("jane.roe"));
    assert_eq!(
        count(&api_get(&platform, &customer_token, "contoso-acme", "/api/v1/users").await),
        1
    );

    // Branding: real images, shown in the preview; a file that is not an image is refused.
    let files = tempfile::tempdir().unwrap();
    let background = files.path().join("background.png");
    std::fs::write(
        &background,
        gradient_png(640, 360, [31, 80, 160], [12, 28, 60]),
    )
    .unwrap();
    let logo = files.path().join("logo.png");
    std::fs::write(&logo, gradient_png(160, 48, [250, 160, 40], [220, 90, 20])).unwrap();
    let not_image = files.path().join("notes.png");
    std::fs::write(&not_image, b"these are notes, not an image").unwrap();
    admin.follow("nav a[href='/admin/branding']").await;
    admin.fill("#branding-text", "Welcome to Contoso").await;
    admin
        .wait("#branding-logo")
        .await
        .send_keys(&not_image.display().to_string())
        .await
        .unwrap();
    admin.click_button("#main", "Save branding").await;
    assert!(!admin.text("#branding-logo-error").await.is_empty());
    assert_eq!(
        admin
            .wait("#branding-text")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("Welcome to Contoso"),
        "the typed text stays"
    );
    let before = api_get(
        &platform,
        &customer_token,
        "contoso-acme",
        "/api/v1/branding",
    )
    .await;
    assert_eq!(before["version"], 0);
    admin
        .wait("#branding-background")
        .await
        .send_keys(&background.display().to_string())
        .await
        .unwrap();
    admin
        .wait("#branding-logo")
        .await
        .send_keys(&logo.display().to_string())
        .await
        .unwrap();
    admin.click_button("#main", "Save branding").await;
    assert!(admin.text(".notice").await.contains("Branding saved"));
    assert_eq!(admin.text(".preview-text").await, "Welcome to Contoso");
    let decoded = admin
        .client
        .execute("return [document.querySelector('.preview-background').naturalWidth, document.querySelector('.preview-logo').naturalWidth];", vec![])
        .await
        .unwrap();
    assert_eq!(
        decoded,
        json!([640, 160]),
        "the preview shows the uploaded images"
    );
    admin.screenshot("08-branding").await;

    // Accounts: the shared admin account; a bad name is refused.
    admin.follow("nav a[href='/admin/accounts']").await;
    admin.fill("#shared-username", "bad/name").await;
    admin
        .click_button("#main", "Configure shared account")
        .await;
    assert!(!admin.text("#shared-username-error").await.is_empty());
    assert_eq!(
        api_get(
            &platform,
            &customer_token,
            "contoso-acme",
            "/api/v1/accounts/shared"
        )
        .await["username"],
        Value::Null
    );
    admin.fill("#shared-username", "idem-admin").await;
    admin
        .click_button("#main", "Configure shared account")
        .await;
    assert!(
        admin
            .text(".notice")
            .await
            .contains("Shared admin account saved")
    );
    admin.screenshot("09-accounts").await;

    // Devices: a token, shown once, that really enrolls an agent; then revoke it.
    admin.follow("nav a[href='/admin/devices']").await;
    admin.click_button("#main", "Issue enrollment token").await;
    let token = admin.text("#enrollment-token").await;
    let (status, _) = Platform::call(
        platform
            .request(Method::POST, "contoso-acme", "/api/v1/agent/enroll")
            .json(&json!({"enrollment_token": token, "hostname": "WS-FRONTDESK"})),
    )
    .await;
    assert_eq!(status, 201);
    admin.follow("nav a[href='/admin/devices']").await;
    assert!(admin.text("table").await.contains("WS-FRONTDESK"));
    admin.screenshot("10-devices").await;
    admin.click_in_row("WS-FRONTDESK", "Revoke").await;
    assert!(admin.text("table").await.contains("Revoked"));
    // A token not used yet is listed with its validity, and can be withdrawn.
    admin.click_button("#main", "Issue enrollment token").await;
    let unused = admin.text("#enrollment-token").await;
    let withdraw = "button[aria-label^='Revoke the token issued']";
    assert!(
        admin
            .text("#enroll + table")
            .await
            .to_lowercase()
            .contains("valid until")
    );
    admin.follow(withdraw).await;
    assert!(
        admin
            .text(".notice")
            .await
            .contains("Enrollment token revoked")
    );
    assert!(!admin.has(withdraw).await);
    let (status, _) = Platform::call(
        platform
            .request(Method::POST, "contoso-acme", "/api/v1/agent/enroll")
            .json(&json!({"enrollment_token": unused, "hostname": "WS-LOST"})),
    )
    .await;
    assert_eq!(status, 401);

    // Audit: the timeline, newest first; the chain verified on demand.
    admin.follow("nav a[href='/admin/audit']").await;
    assert!(!admin.text(".lead").await.contains("Chain verified"));
    admin.follow("a[href='/admin/audit?verify=1']").await;
    assert!(admin.text(".lead").await.contains("Chain verified"));
    let timeline = admin.text(".timeline").await;
    let revoked = timeline.find("AgentRevoked").unwrap();
    let opened = timeline.find("CustomerTenantOpened").unwrap();
    assert!(revoked < opened, "newest first");
    assert!(timeline.contains("DirectoryUserCreated") && timeline.contains("username: john.doe"));
    admin.screenshot("11-audit").await;

    // The technician: the user portal shows Contoso; one click opens it.
    let mut tech_phone = Keyring::default();
    platform
        .enroll(&mut tech_phone, "acme", "tech@acme.test")
        .await;
    let tech = Browser::start().await;
    sign_in(&tech, &platform, &tech_phone, "acme", "/").await;
    tech.wait_path("/").await;
    assert!(tech.text(".apps").await.contains("Contoso Ltd"));
    assert!(
        !tech.has("nav a[href='/admin/customers']").await,
        "technicians see no MSP admin pages"
    );
    tech.screenshot("12-user-portal").await;
    tech.follow("button.app").await;
    tech.wait_path("/admin/users").await;
    assert_eq!(tech.url().await.host_str(), Some("contoso-acme.localhost"));
    assert!(tech.text("table").await.contains("john.doe"));

    // The admin revokes Tina's delegation while she is on Contoso's portal: her next page
    // is the login page, saying why.
    admin
        .goto(&format!("{}/admin/customers/contoso", platform.url("acme")))
        .await;
    admin.click_in_row("tech@acme.test", "Revoke").await;
    assert!(admin.text(".notice").await.contains("Access revoked"));
    tech.follow("nav a[href='/admin/settings']").await;
    tech.wait_path("/login").await;
    assert!(
        tech.text(".notice")
            .await
            .contains("Your session has ended")
    );
    tech.screenshot("13-delegation-revoked").await;
    tech.goto(&format!("{}/", platform.url("acme"))).await;
    assert!(tech.page_text().await.contains("No customers yet"));
    tech.close().await;

    // A technician without delegation sees no customer and cannot open one.
    let mut nick_phone = Keyring::default();
    platform
        .enroll(&mut nick_phone, "acme", "nick@acme.test")
        .await;
    let nick = Browser::start().await;
    sign_in(&nick, &platform, &nick_phone, "acme", "/").await;
    nick.wait_path("/").await;
    assert!(nick.page_text().await.contains("No customers yet"));
    assert!(!nick.has("button.app").await);
    // Opening the customer's URL directly: its login page, and the phone's approval refused.
    nick.goto(&format!("{}/admin", platform.url("contoso-acme")))
        .await;
    nick.wait_path("/login").await;
    nick.click("details summary").await;
    let qr = nick.text("#qr-text").await;
    assert!(authenticator::approve(&nick_phone, &qr).await.is_err());
    nick.goto(&format!("{}/admin/users", platform.url("contoso-acme")))
        .await;
    nick.wait_path("/login").await;
    nick.close().await;

    // Deleting the customer: a confirmation that must name it.
    admin.follow("nav a[href='/admin/customers']").await;
    admin.click_in_row("Contoso Ltd", "Delete").await;
    admin.fill("#delete-confirm", "contosoo").await;
    admin.click_button("#main", "Delete customer").await;
    assert!(!admin.text("#delete-confirm-error").await.is_empty());
    assert_eq!(
        count(&api_get(&platform, &api_token, "acme", "/api/v1/customers").await),
        1
    );
    admin.screenshot("14-delete-customer").await;
    admin.fill("#delete-confirm", "contoso").await;
    admin.click_button("#main", "Delete customer").await;
    assert!(admin.text(".notice").await.contains("Customer deleted"));
    assert_eq!(
        count(&api_get(&platform, &api_token, "acme", "/api/v1/customers").await),
        0
    );

    // Signing out ends the session.
    admin.click_button(".topbar", "Sign out").await;
    admin.wait_path("/login").await;
    assert!(admin.text(".notice").await.contains("signed out"));
    admin
        .goto(&format!("{}/admin/users", platform.url("acme")))
        .await;
    admin.wait_path("/login").await;
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_portals_work_without_javascript() {
    let platform = Platform::start().await;
    platform.signup("acme", "Acme IT", "admin@acme.test").await;
    let mut phone = Keyring::default();
    platform.enroll(&mut phone, "acme", "admin@acme.test").await;
    let browser = Browser::start_without_javascript().await;

    // The login page cannot wait by itself: the person approves, then presses the button.
    browser
        .goto(&format!("{}/admin", platform.url("acme")))
        .await;
    browser.wait_path("/login").await;
    browser.wait("#login img").await;
    assert!(
        !browser.has("#login[data-waiting]").await,
        "the page's script did not run"
    );
    browser.click("details summary").await;
    let qr = browser.text("#qr-text").await;
    authenticator::approve(&phone, &qr).await.unwrap();
    assert!(
        browser.path().await.starts_with("/login"),
        "nothing moved by itself"
    );
    browser
        .click_button("body", "I approved it — continue")
        .await;
    browser.wait_path("/admin/customers").await;

    // Forms work as plain posts: a refused one shows its error, a good one is stored.
    browser.fill("#customer-display_name", "Contoso Ltd").await;
    browser.fill("#customer-name", "Not valid").await;
    browser.click_button("body", "Save").await;
    assert!(!browser.text("#customer-name-error").await.is_empty());
    browser.fill("#customer-name", "contoso").await;
    browser.click_button("body", "Save").await;
    assert!(browser.text(".notice").await.contains("Customer created"));
    assert!(browser.text("table").await.contains("Contoso Ltd"));
    browser.close().await;
}
