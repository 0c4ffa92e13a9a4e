//! The customer tenant's admin portal (`/admin` on the customer's host), for the MSP's admins
//! and the technicians the customer is delegated to: the cloud directory's users, the
//! settings (user source, master key, desktop login), the login screen's branding with a
//! preview, the shared admin account, agents and enrollment tokens, and an audit timeline.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use maud::{Markup, html};
use serde_json::{Value, json};

use super::client::{Failure, segment};
use super::layout::{
    FormState, button_form, checkbox, csrf_field, empty, field, form_error, row_button_form,
    select, when,
};
use super::{Fields, Page, Submission, done, flag, list, optional, query_value, refused, s, text};
use crate::app::Shared;

fn refused_status(form: &FormState) -> StatusCode {
    if form.error.is_some() || !form.fields.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    }
}

fn show(page: &Page, status: StatusCode, title: &str, body: Markup) -> Response {
    if status.is_success() {
        page.render(title, body)
    } else {
        page.render_refused(status, title, body)
    }
}

/// `GET /admin/users` on a customer's host: the directory, and the form to create a user.
pub async fn users(page: Page, form: FormState) -> Response {
    let status = refused_status(&form);
    let users = match page.api.get("/api/v1/users").await {
        Ok(users) => users,
        Err(failure) => return page.failed(&failure),
    };
    let body = html! {
        @if list(&users).is_empty() {
            (empty("No users yet", "Create your customer's users here; they sign in to their workstations with the username and password you set."))
        } @else {
            table.data {
                caption.visually-hidden { "Directory users" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Username" } th scope="col" { "Email" } th scope="col" { "Status" } th scope="col" { "Sign-in" } } }
                tbody {
                    @for user in list(&users) {
                        tr {
                            td { a href=(format!("/admin/users/{}", s(user, "id"))) { (s(user, "first_name")) " " (s(user, "last_name")) } }
                            td { code { (s(user, "username")) } }
                            td { (s(user, "email")) }
                            td { @if flag(user, "enabled") { span.badge.ok { "Enabled" } } @else { span.badge.off { "Disabled" } } }
                            td {
                                @if flag(user, "has_password") { "Password" @if flag(user, "must_change_password") { span.muted { " (temporary)" } } }
                                @if flag(user, "passwordless") { @if flag(user, "has_password") { " · " } "Passwordless" @if !flag(user, "passwordless_enrolled") { span.muted { " (invited)" } } }
                            }
                        }
                    }
                }
            }
        }
        section.panel aria-labelledby="create-user" {
            h2 #create-user { "Create user" }
            form method="post" novalidate action="/admin/users" {
                (csrf_field(&page))
                (form_error(&form))
                div.grid {
                    (field(&form, "user", "first_name", "First name", "text", true, None))
                    (field(&form, "user", "last_name", "Last name", "text", true, None))
                    (field(&form, "user", "username", "Username", "text", true, Some("Their Windows account name: up to 20 characters, none of \" / \\ [ ] : ; | = , + * ? < > @")))
                    (field(&form, "user", "email", "Email", "email", true, None))
                    (field(&form, "user", "password", "Password", "password", false, Some("Leave empty to invite the user to passwordless sign-in instead.")))
                    (field(&form, "user", "personal_email", "Personal email", "email", false, Some("Where a passwordless invitation goes if it is not their work email.")))
                }
                (checkbox("user", "temporary", "User must change the password at first sign-in", form.value("temporary") == "on"))
                button.primary type="submit" { "Create user" }
            }
        }
    };
    show(&page, status, "Users", body)
}

/// `POST /admin/users` on a customer's host.
pub async fn create_user(page: Page, fields: Fields) -> Response {
    let body = json!({
        "first_name": text(&fields, "first_name"),
        "last_name": text(&fields, "last_name"),
        "username": text(&fields, "username"),
        "email": text(&fields, "email"),
        "password": fields.get("password").filter(|p| !p.is_empty()),
        "must_change_password": fields.contains_key("temporary"),
        "personal_email": optional(&fields, "personal_email"),
    });
    match page
        .api
        .send(Method::POST, "/api/v1/users", Some(body))
        .await
    {
        Ok(_) => done("/admin/users", "user-created"),
        Err(failure) if failure.status == StatusCode::UNAUTHORIZED => page.failed(&failure),
        Err(failure) => users(page, refused(&fields, &failure)).await,
    }
}

/// `GET /admin/users/{id}`: one user, and what can be done to them.
pub async fn user(Path(id): Path<String>, page: Page) -> Response {
    if page.me.is_msp() {
        return page.failed(&Failure::local(
            StatusCode::NOT_FOUND,
            "There is no such page here.",
        ));
    }
    user_page(page, &id, FormState::default()).await
}

async fn user_page(page: Page, id: &str, form: FormState) -> Response {
    let status = refused_status(&form);
    let user = match page
        .api
        .get(&format!("/api/v1/users/{}", segment(id)))
        .await
    {
        Ok(user) => user,
        Err(failure) => return page.failed(&failure),
    };
    let base = format!("/admin/users/{}", segment(id));
    let enabled = flag(&user, "enabled");
    let body = html! {
        dl.facts {
            dt { "Username" } dd { code { (s(&user, "username")) } }
            dt { "Email" } dd { (s(&user, "email")) }
            dt { "Status" } dd { @if enabled { "Enabled" } @else { "Disabled" } }
            dt { "Password" } dd {
                @if flag(&user, "has_password") { "Set (version " (user["password_version"]) ")" } @else { "None" }
                @if flag(&user, "must_change_password") { " " span.badge.off { "Temporary: to be changed at the next sign-in" } }
            }
            dt { "Passwordless" } dd { @if flag(&user, "passwordless_enrolled") { "Enrolled" } @else if flag(&user, "passwordless") { "Invited" } @else { "Off" } }
            dt { "Created" } dd { (when(s(&user, "created_at"))) }
        }
        section.panel aria-labelledby="password" {
            h2 #password { "Change password" }
            form method="post" novalidate action=(format!("{base}/password")) {
                (csrf_field(&page))
                (form_error(&form))
                (field(&form, "password", "password", "New password", "password", true, Some("Workstations refuse the old password from the next sign-in on.")))
                (checkbox("password", "temporary", "User must change the password at the next sign-in", true))
                button.primary type="submit" { "Change password" }
            }
        }
        section.panel aria-labelledby="manage" {
            h2 #manage { "Manage" }
            div.row {
                @if !flag(&user, "passwordless") {
                    (button_form(&page, &format!("{base}/passwordless"), "Enable passwordless", ""))
                }
                @if flag(&user, "passwordless_enrolled") {
                    (button_form(&page, &format!("{base}/reset-phone"), "Reset phone", ""))
                }
                @if enabled {
                    (button_form(&page, &format!("{base}/disable"), "Disable", ""))
                } @else {
                    (button_form(&page, &format!("{base}/enable"), "Enable", ""))
                }
                (button_form(&page, &format!("{base}/delete"), "Delete user", "danger"))
            }
        }
        p { a href="/admin/users" { "← All users" } }
    };
    let title = format!("{} {}", s(&user, "first_name"), s(&user, "last_name"));
    show(&page, status, &title, body)
}

/// `POST /admin/users/{id}/{password|passwordless|reset-phone|enable|disable|delete}` on a
/// customer's host.
pub async fn user_action(page: Page, id: &str, action: &str, fields: Fields) -> Response {
    if action == "reset-phone" {
        return match super::reset_phone(&page, id).await {
            Ok(()) => done(&format!("/admin/users/{}", segment(id)), "phone-reset"),
            Err(failure) => page.failed(&failure),
        };
    }
    let path = format!("/api/v1/users/{}", segment(id));
    let (method, path, body, to, notice) = match action {
        "password" => (
            Method::PUT,
            format!("{path}/password"),
            Some(json!({
                "password": fields.get("password").cloned().unwrap_or_default(),
                "must_change_password": fields.contains_key("temporary"),
            })),
            format!("/admin/users/{}", segment(id)),
            "password-set",
        ),
        "passwordless" => (
            Method::POST,
            format!("{path}/passwordless"),
            None,
            format!("/admin/users/{}", segment(id)),
            "passwordless",
        ),
        "enable" => (
            Method::PATCH,
            path,
            Some(json!({"enabled": true})),
            format!("/admin/users/{}", segment(id)),
            "enabled",
        ),
        "disable" => (
            Method::PATCH,
            path,
            Some(json!({"enabled": false})),
            format!("/admin/users/{}", segment(id)),
            "disabled",
        ),
        "delete" => (
            Method::DELETE,
            path,
            None,
            "/admin/users".to_owned(),
            "user-removed",
        ),
        _ => return page.failed(&Failure::local(StatusCode::NOT_FOUND, "no such action")),
    };
    match page.api.send(method, &path, body).await {
        Ok(_) => done(&to, notice),
        Err(failure) if failure.status == StatusCode::UNPROCESSABLE_ENTITY => {
            user_page(page, id, refused(&fields, &failure)).await
        }
        Err(failure) => page.failed(&failure),
    }
}

/// `GET /admin/settings` on a customer's host.
pub async fn settings(page: Page, form: FormState) -> Response {
    let status = refused_status(&form);
    let (source, master_key, desktop) = match (
        page.api.get("/api/v1/settings/user-source").await,
        page.api.get("/api/v1/settings/master-key").await,
        page.api.get("/api/v1/settings/desktop-login").await,
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(f), _, _) | (_, Err(f), _) | (_, _, Err(f)) => return page.failed(&f),
    };
    let section = form.values.get("section").cloned().unwrap_or_default();
    let blank = FormState::default();
    let form_of = |name: &str| if section == name { &form } else { &blank };
    let methods = vec![
        ("password".to_owned(), "Username and password".to_owned()),
        (
            "passwordless".to_owned(),
            "Passwordless (QR code on the phone)".to_owned(),
        ),
    ];
    let body = html! {
        (super::msp::user_source_form(&page, form_of("user-source"), s(&source, "source")))
        section.panel #settings-master-key aria-labelledby="master-key" {
            h2 #master-key { "Master key" }
            p.muted { "Passwords and other secrets of this tenant are sealed with a data key that only this tenant's master key opens. Deleting the tenant shreds the key, and with it every copy of the sealed data." }
            form method="post" novalidate action="/admin/settings" {
                (csrf_field(&page))
                input type="hidden" name="section" value="master-key";
                (form_error(form_of("master-key")))
                (checkbox("master-key", "enabled", "Master key enabled", flag(&master_key, "enabled")))
                @if let Some(version) = master_key["key_version"].as_u64() { p.muted { "Key version " (version) } }
                button.primary type="submit" { "Save" }
            }
        }
        section.panel #settings-desktop-login aria-labelledby="desktop-login" {
            h2 #desktop-login { "Desktop login" }
            form method="post" novalidate action="/admin/settings" {
                (csrf_field(&page))
                input type="hidden" name="section" value="desktop-login";
                (form_error(form_of("desktop-login")))
                (checkbox("desktop", "enabled", "Enable desktop login for users", flag(&desktop, "enabled")))
                (select(form_of("desktop-login"), "desktop", "method", "Login method", &methods, s(&desktop, "method")))
                button.primary type="submit" { "Save" }
            }
        }
    };
    show(&page, status, "Settings", body)
}

/// `POST /admin/settings` `section=user-source|master-key|desktop-login` on a customer's host.
pub async fn save_settings(page: Page, fields: Fields) -> Response {
    let checked = fields.get("enabled").is_some_and(|v| v == "on");
    let (path, body) = match fields.get("section").map(String::as_str) {
        Some("user-source") => (
            "/api/v1/settings/user-source",
            json!({"source": text(&fields, "source")}),
        ),
        Some("master-key") => ("/api/v1/settings/master-key", json!({"enabled": checked})),
        Some("desktop-login") => (
            "/api/v1/settings/desktop-login",
            json!({"enabled": checked, "method": text(&fields, "method")}),
        ),
        _ => {
            return page.failed(&Failure::local(
                StatusCode::BAD_REQUEST,
                "no such settings form",
            ));
        }
    };
    match page.api.send(Method::PUT, path, Some(body)).await {
        Ok(_) => done("/admin/settings", "settings-saved"),
        Err(failure) if failure.status == StatusCode::UNAUTHORIZED => page.failed(&failure),
        Err(failure) => settings(page, refused(&fields, &failure)).await,
    }
}

/// `GET /admin/branding`: the login screen as workstations show it, and the upload form.
pub async fn branding(page: Page) -> Response {
    branding_page(page, FormState::default()).await
}

async fn branding_page(page: Page, form: FormState) -> Response {
    let status = refused_status(&form);
    let branding = match page.api.get("/api/v1/branding").await {
        Ok(branding) => branding,
        Err(failure) => return page.failed(&failure),
    };
    // The text field shows what was typed, or the current text.
    let mut text_form = FormState::default();
    let current_text = form
        .values
        .get("text")
        .cloned()
        .unwrap_or_else(|| s(&branding, "text").to_owned());
    text_form.values.insert("text".into(), current_text);
    if let Some(message) = form.fields.get("text") {
        text_form.fields.insert("text".into(), message.clone());
    }
    let body = html! {
        section.panel aria-labelledby="preview" {
            h2 #preview { "Login screen preview" }
            div.preview role="img" aria-label="Preview of the workstation login screen" {
                @if let Some(url) = branding["background"]["url"].as_str() {
                    img.preview-background src=(url) alt="";
                } @else {
                    div.preview-background.plain {}
                }
                div.preview-box {
                    @if let Some(url) = branding["logo"]["url"].as_str() {
                        img.preview-logo src=(url) alt="Logo";
                    }
                    p.preview-text { @if s(&branding, "text").is_empty() { (page.me.display_name) } @else { (s(&branding, "text")) } }
                    div.preview-input { "Username" }
                    div.preview-input { "Password" }
                }
            }
            p.muted { "Version " (branding["version"]) ". Workstations pick up a change at their next sync." }
        }
        section.panel aria-labelledby="upload" {
            h2 #upload { "Change branding" }
            form method="post" novalidate action=(format!("/admin/branding?csrf={}", page.csrf)) enctype="multipart/form-data" {
                (form_error(&form))
                (file_field(&form, "background", "Background image", "PNG or JPEG, up to 2 MiB and 4096 pixels a side."))
                (file_field(&form, "logo", "Logo", "PNG or JPEG, up to 2 MiB."))
                (field(&text_form, "branding", "text", "Text on the login screen", "text", false, Some("Leave empty to show the tenant's name.")))
                button.primary type="submit" { "Save branding" }
            }
        }
    };
    show(&page, status, "Branding", body)
}

fn file_field(form: &FormState, name: &str, label: &str, hint: &str) -> Markup {
    let id = format!("branding-{name}");
    let error = form.fields.get(name);
    html! {
        div.field.invalid[error.is_some()] {
            label for=(id) { (label) span.optional { " (optional)" } }
            input #(id) type="file" name=(name) accept="image/png,image/jpeg"
                aria-invalid=[error.is_some().then_some("true")]
                aria-describedby=(format!("{id}-hint{}", if error.is_some() { format!(" {id}-error") } else { String::new() }));
            small.hint #(format!("{id}-hint")) { (hint) }
            @if let Some(message) = error { p.field-error #(format!("{id}-error")) { (message) } }
        }
    }
}

/// `POST /admin/branding?csrf=…` (multipart): passed to the API as it came.
pub async fn upload_branding(
    State(state): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let csrf = query_value(&uri, "csrf");
    let page = match Page::submit(state, &headers, &uri, csrf.as_deref()).await {
        Ok(page) => page,
        Err(response) => return response,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    match page
        .api
        .send_raw(
            Method::PUT,
            "/api/v1/branding",
            Some((&content_type, body.clone())),
        )
        .await
    {
        Ok(_) => done("/admin/branding", "branding-saved"),
        Err(failure)
            if failure.status == StatusCode::UNAUTHORIZED
                || failure.status == StatusCode::FORBIDDEN =>
        {
            page.failed(&failure)
        }
        Err(failure) => {
            // What was typed stays: the text part (files cannot be put back in a page).
            let mut typed = Fields::new();
            if let Some(text) = multipart_text(&content_type, body, "text").await {
                typed.insert("text".into(), text);
            }
            let mut form = refused(&typed, &failure);
            if failure.fields.is_empty() {
                form.error = Some(failure.detail.clone());
            } else {
                form.error = None;
            }
            branding_page(page, form).await
        }
    }
}

/// The text part `name` of a multipart body, if it has one.
async fn multipart_text(content_type: &str, body: Bytes, name: &str) -> Option<String> {
    use axum::extract::FromRequest;
    let request = axum::http::Request::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(axum::body::Body::from(body))
        .ok()?;
    let mut multipart = axum::extract::Multipart::from_request(request, &())
        .await
        .ok()?;
    while let Ok(Some(field)) = multipart.next_field().await {
        if field.name() == Some(name) {
            return field.text().await.ok();
        }
    }
    None
}

/// `GET /admin/accounts`: the shared local admin account.
pub async fn accounts(page: Page) -> Response {
    accounts_page(page, FormState::default()).await
}

async fn accounts_page(page: Page, mut form: FormState) -> Response {
    let status = refused_status(&form);
    let shared = match page.api.get("/api/v1/accounts/shared").await {
        Ok(shared) => shared,
        Err(failure) => return page.failed(&failure),
    };
    if !form.values.contains_key("username") {
        form.values
            .insert("username".into(), s(&shared, "username").to_owned());
    }
    if !form.values.contains_key("elevation_minutes")
        && let Some(minutes) = shared["elevation_minutes"].as_u64()
    {
        form.values
            .insert("elevation_minutes".into(), minutes.to_string());
    }
    let body = html! {
        section.panel aria-labelledby="shared" {
            h2 #shared { "Shared admin account" }
            @if s(&shared, "username").is_empty() {
                p.muted { "No shared account yet. Configure one, and your technicians get elevated access on any of this customer's workstations by scanning a QR code." }
            } @else {
                p { "Technicians who approve an elevated access request sign in to " code { (s(&shared, "username")) } ", a local administrator account the agent creates with a fresh password each time." }
            }
            form method="post" novalidate action="/admin/accounts" {
                (csrf_field(&page))
                (form_error(&form))
                (field(&form, "shared", "username", "Local account name", "text", true, None))
                (field(&form, "shared", "elevation_minutes", "Minutes an elevation lasts", "number", true,
                    Some("5 to 480. Then the agent gives the account a new password that nobody sees.")))
                button.primary type="submit" { "Configure shared account" }
            }
        }
    };
    show(&page, status, "Accounts", body)
}

/// `POST /admin/accounts` `username=…&elevation_minutes=…`.
pub async fn save_shared_account(Submission { page, fields }: Submission) -> Response {
    let mut body = json!({"username": text(&fields, "username")});
    let minutes = text(&fields, "elevation_minutes");
    if !minutes.trim().is_empty() {
        match minutes.trim().parse::<u32>() {
            Ok(minutes) => body["elevation_minutes"] = minutes.into(),
            Err(_) => {
                let failure = super::client::Failure {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    detail: String::new(),
                    fields: [(
                        "elevation_minutes".to_owned(),
                        "must be a whole number of minutes".to_owned(),
                    )]
                    .into(),
                };
                return accounts_page(page, refused(&fields, &failure)).await;
            }
        }
    }
    match page
        .api
        .send(Method::PUT, "/api/v1/accounts/shared", Some(body))
        .await
    {
        Ok(_) => super::done("/admin/accounts", "shared-saved"),
        Err(failure) if failure.status == StatusCode::UNAUTHORIZED => page.failed(&failure),
        Err(failure) => accounts_page(page, refused(&fields, &failure)).await,
    }
}

/// `GET /admin/devices`: enrolled agents, and enrollment tokens.
pub async fn devices(page: Page) -> Response {
    devices_page(page, None).await
}

async fn devices_page(page: Page, token: Option<Value>) -> Response {
    let devices = match page.api.get("/api/v1/agent/devices").await {
        Ok(devices) => devices,
        Err(failure) => return page.failed(&failure),
    };
    let pending = match page.api.get("/api/v1/agent/enrollment-tokens").await {
        Ok(pending) => pending,
        Err(failure) => return page.failed(&failure),
    };
    let body = html! {
        @if let Some(token) = &token {
            div.secret role="status" {
                p { strong { "Enrollment token" } " (shown once; valid until " (when(s(token, "expires_at"))) ", for one workstation):" }
                code #enrollment-token { (s(token, "token")) }
                p.muted { "On the workstation: " code { "idem-agent enroll --url " (page.me.url) " --token …" } }
            }
        }
        @if list(&devices).is_empty() {
            (empty("No workstations yet", "Issue an enrollment token and enrol the idem agent on a workstation with it."))
        } @else {
            table.data {
                caption.visually-hidden { "Enrolled workstations" }
                thead { tr { th scope="col" { "Workstation" } th scope="col" { "Enrolled" } th scope="col" { "Status" } th scope="col" { "Actions" } } }
                tbody {
                    @for device in list(&devices) {
                        tr {
                            td { (s(device, "name")) }
                            td { (when(s(device, "enrolled_at"))) }
                            td { @if flag(device, "revoked") { span.badge.off { "Revoked" } } @else { span.badge.ok { "Active" } } }
                            td.actions {
                                @if !flag(device, "revoked") {
                                    (row_button_form(&page, &format!("/admin/devices/{}/revoke", s(device, "id")), "Revoke", "danger", s(device, "name")))
                                }
                            }
                        }
                    }
                }
            }
        }
        section.panel aria-labelledby="enroll" {
            h2 #enroll { "Enroll a workstation" }
            @if !list(&pending).is_empty() {
                table.data {
                    caption { "Enrollment tokens not used yet (each enrolls one workstation)" }
                    thead { tr { th scope="col" { "Issued" } th scope="col" { "Valid until" } th scope="col" { "Actions" } } }
                    tbody {
                        @for pending in list(&pending) {
                            tr {
                                td { (when(s(pending, "issued_at"))) }
                                td { (when(s(pending, "expires_at"))) }
                                td.actions {
                                    (row_button_form(&page, &format!("/admin/enrollment-tokens/{}/revoke", s(pending, "id")), "Revoke", "danger", &format!("the token issued {}", when(s(pending, "issued_at")))))
                                }
                            }
                        }
                    }
                }
            }
            form method="post" novalidate action="/admin/devices" {
                (csrf_field(&page))
                button.primary type="submit" { "Issue enrollment token" }
            }
        }
    };
    page.render("Devices", body)
}

/// `POST /admin/devices`: a new enrollment token, shown once.
pub async fn issue_token(Submission { page, .. }: Submission) -> Response {
    match page
        .api
        .send(
            Method::POST,
            "/api/v1/agent/enrollment-tokens",
            Some(json!({})),
        )
        .await
    {
        Ok(answer) => devices_page(page, Some(answer.body)).await,
        Err(failure) => page.failed(&failure),
    }
}

/// `POST /admin/devices/{id}/revoke`.
pub async fn revoke_device(
    Path(id): Path<String>,
    Submission { page, .. }: Submission,
) -> Response {
    delete_from_devices(page, "devices", &id, "device-revoked").await
}

/// `POST /admin/enrollment-tokens/{id}/revoke`.
pub async fn revoke_enrollment_token(
    Path(id): Path<String>,
    Submission { page, .. }: Submission,
) -> Response {
    delete_from_devices(page, "enrollment-tokens", &id, "token-revoked").await
}

/// Deletes `/api/v1/agent/{collection}/{id}` and goes back to the Devices page with `notice`.
async fn delete_from_devices(page: Page, collection: &str, id: &str, notice: &str) -> Response {
    let path = format!("/api/v1/agent/{collection}/{}", segment(id));
    match page.api.send(Method::DELETE, &path, None).await {
        Ok(_) => done("/admin/devices", notice),
        Err(failure) => page.failed(&failure),
    }
}

/// Events per page of the audit timeline.
const AUDIT_PAGE: u64 = 50;

/// `GET /admin/audit?before=SEQ[&verify=1]`: the tenant's events, newest first. The chain is
/// checked on demand (`verify`): the check walks the whole stream, which for a tenant whose
/// workstations log in all day is millions of events, too much for every page view.
pub async fn audit(uri: Uri, page: Page) -> Response {
    let head = match page.api.get("/api/v1/audit/head").await {
        Ok(head) => head["head_seq"].as_u64().unwrap_or(0),
        Err(failure) => return page.failed(&failure),
    };
    let verified = if query_value(&uri, "verify").is_some() {
        match page.api.get("/api/v1/audit/verify").await {
            Ok(verified) => Some(verified),
            Err(failure) => return page.failed(&failure),
        }
    } else {
        None
    };
    let before = query_value(&uri, "before")
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(head + 1, |b| b.clamp(1, head + 1));
    let after = before.saturating_sub(AUDIT_PAGE + 1);
    let limit = before - 1 - after;
    let mut events: Vec<Value> = if limit == 0 {
        Vec::new()
    } else {
        match page
            .api
            .call(
                Method::GET,
                &format!("/api/v1/audit/events?after={after}&limit={limit}"),
                None,
            )
            .await
        {
            answer if answer.status.is_success() => String::from_utf8_lossy(&answer.raw)
                .lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect(),
            answer => return page.failed(&super::client::Failure::of(&answer)),
        }
    };
    events.reverse();
    let body = html! {
        p.lead {
            @match &verified {
                Some(verified) if flag(verified, "valid") => {
                    span.badge.ok { "Chain verified" } " All " (verified["events"]) " events of this tenant chain to each other by hash; none was changed or removed."
                }
                Some(verified) => {
                    span.badge.off { "Chain broken" } " The log of this tenant does not verify at event " (verified["broken"]["seq"]) ": " (s(&verified["broken"], "reason"))
                }
                None => {
                    (head) " events. Each is chained to the one before by hash; verifying recomputes every hash from the stored bytes. "
                    a.button href="/admin/audit?verify=1" { "Verify the chain" }
                }
            }
        }
        @if events.is_empty() {
            (empty("No events", "Nothing has happened in this tenant yet."))
        } @else {
            ol.timeline reversed start=(before - 1) {
                @for event in &events {
                    li {
                        span.event-type { (s(event, "type")) }
                        span.event-summary { (summary(&event["data"])) }
                        span.event-meta { "#" (event["seq"]) " · " (when(s(event, "occurred_at"))) " · " (s(event, "actor")) }
                    }
                }
            }
            nav.pager aria-label="Audit pages" {
                @if before <= head { a href=(format!("/admin/audit?before={}", (before + AUDIT_PAGE).min(head + 1))) { "← Newer" } }
                @if after > 0 { a href=(format!("/admin/audit?before={}", after + 1)) { "Older →" } }
            }
        }
    };
    page.render("Audit", body)
}

/// A few words on an event: the names in it, never a sealed value.
fn summary(data: &Value) -> String {
    const SHOWN: &[&str] = &[
        "username",
        "email",
        "name",
        "display_name",
        "method",
        "outcome",
        "source",
        "enabled",
        "account",
        "reason",
        "elevation_seq",
        "elevation_minutes",
        "hostname",
        "text",
        "purpose",
        "password_version",
        "must_change",
    ];
    let Some(fields) = data.as_object() else {
        return String::new();
    };
    SHOWN
        .iter()
        .filter_map(|key| {
            let value = fields.get(*key)?;
            let shown = match value {
                Value::String(text) => text.clone(),
                Value::Bool(_) | Value::Number(_) => value.to_string(),
                _ => return None,
            };
            Some(format!("{key}: {shown}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn an_elevations_end_says_why_and_which_approval_and_nothing_sealed_shows() {
        let ended = json!({"report_id": "r", "device_id": "d", "elevation_seq": 12,
            "technician_id": "t", "account": "idem-admin", "reason": "expired",
            "ended_at": "2026-11-24T10:00:00Z"});
        assert_eq!(
            summary(&ended),
            "account: idem-admin, reason: expired, elevation_seq: 12"
        );
        let configured = json!({"username": "idem-admin", "elevation_minutes": 15});
        assert_eq!(
            summary(&configured),
            "username: idem-admin, elevation_minutes: 15"
        );
        let password = json!({"user_id": "u", "verifier": {"key_version": 1, "nonce": [1, 2],
            "ciphertext": [3, 4]}, "password_version": 2, "must_change": true});
        assert_eq!(summary(&password), "password_version: 2, must_change: true");
    }
}
