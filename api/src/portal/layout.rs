//! The portals' page shell and form widgets: one layout (the tenant's display name, the
//! navigation of the signed-in person's portal, their name and a sign-out button), fields
//! with their labels and errors, and empty states. Everything is escaped by maud.

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, html};

use super::Page;

/// One navigation entry: path and label.
type Nav = (&'static str, &'static str);

const MSP_ADMIN_NAV: &[Nav] = &[
    ("/admin/customers", "Customers"),
    ("/admin/users", "Users"),
    ("/admin/settings", "User source"),
    ("/", "My apps"),
    ("/phones", "My phones"),
];
const MSP_TECHNICIAN_NAV: &[Nav] = &[("/", "My apps"), ("/phones", "My phones")];
const CUSTOMER_NAV: &[Nav] = &[
    ("/admin/users", "Users"),
    ("/admin/settings", "Settings"),
    ("/admin/branding", "Branding"),
    ("/admin/accounts", "Accounts"),
    ("/admin/devices", "Devices"),
    ("/admin/audit", "Audit"),
];
const AUDITOR_NAV: &[Nav] = &[("/admin/audit", "Audit")];

/// Every page's `<head>`: `title` then " · idem", and the one stylesheet.
fn head(title: Markup) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · idem" }
            link rel="stylesheet" href="/assets/portal.css";
        }
    }
}

/// A bare page (the login page, errors): the tenant's name, no navigation.
pub fn bare(title: &str, tenant: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(html! { (title) @if let Some(t) = tenant { " · " (t) } }))
            body.bare {
                main.card-page {
                    @if let Some(t) = tenant { p.tenant-name { (t) } }
                    (body)
                }
            }
        }
    }
}

/// A portal page: header with the tenant, navigation, the signed-in person, then `body`.
pub fn page(page: &Page, title: &str, body: Markup) -> Markup {
    let nav = nav_of(page);
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(html! { (title) " · " (page.me.display_name) }))
            body {
                a.skip href="#main" { "Skip to content" }
                header.topbar {
                    div.brand {
                        span.logo aria-hidden="true" { "id" }
                        span.tenant-title { (page.me.display_name) }
                        span.tenant-kind { (if page.me.is_msp() { "MSP" } else { "Customer" }) }
                    }
                    div.who {
                        span { (page.me.email) }
                        form method="post" novalidate action="/logout" {
                            (csrf_field(page))
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                div.frame {
                    nav.sidebar aria-label="Portal" {
                        ul {
                            @for (path, label) in nav {
                                @let current = if *path == "/" { page.path == "/" } else { page.path.starts_with(path) };
                                li { a href=(path) aria-current=[current.then_some("page")] { (label) } }
                            }
                        }
                    }
                    main #main tabindex="-1" {
                        h1 { (title) }
                        @if let Some(notice) = &page.notice { p.notice role="status" { (notice) } }
                        (body)
                    }
                }
            }
        }
    }
}

fn nav_of(page: &Page) -> &'static [Nav] {
    if page.me.is_msp() {
        if page.me.has_role("admin") {
            MSP_ADMIN_NAV
        } else {
            MSP_TECHNICIAN_NAV
        }
    } else if page.me.has_role("admin") || page.me.has_role("technician") {
        CUSTOMER_NAV
    } else {
        AUDITOR_NAV
    }
}

/// The hidden anti-forgery field every form carries.
pub fn csrf_field(page: &Page) -> Markup {
    html! { input type="hidden" name="csrf" value=(page.csrf); }
}

/// What a form shows after a refused submission: the values typed and the API's messages.
#[derive(Default)]
pub struct FormState {
    pub values: BTreeMap<String, String>,
    pub fields: BTreeMap<String, String>,
    /// A message for the form as a whole (a conflict, a refusal).
    pub error: Option<String>,
}

impl FormState {
    pub fn value(&self, name: &str) -> &str {
        self.values.get(name).map_or("", String::as_str)
    }
}

/// The form's own error, above its fields.
pub fn form_error(state: &FormState) -> Markup {
    html! {
        @if let Some(error) = &state.error {
            p.form-error role="alert" { (error) }
        }
    }
}

/// A labelled input; its error (if any) below it, tied by `aria-describedby`.
pub fn field(
    state: &FormState,
    form: &str,
    name: &str,
    label: &str,
    kind: &str,
    required: bool,
    hint: Option<&str>,
) -> Markup {
    let id = format!("{form}-{name}");
    let error = state.fields.get(name);
    let error_id = format!("{id}-error");
    let hint_id = format!("{id}-hint");
    let described = match (error.is_some(), hint.is_some()) {
        (true, true) => Some(format!("{error_id} {hint_id}")),
        (true, false) => Some(error_id.clone()),
        (false, true) => Some(hint_id.clone()),
        (false, false) => None,
    };
    // Passwords are never sent back into a page.
    let value = (kind != "password").then(|| state.value(name));
    html! {
        div.field.invalid[error.is_some()] {
            label for=(id) { (label) @if !required { span.optional { " (optional)" } } }
            input #(id) type=(kind) name=(name) value=[value] required[required]
                aria-invalid=[error.is_some().then_some("true")] aria-describedby=[described]
                autocomplete=[(kind == "password").then_some("new-password")];
            @if let Some(hint) = hint { small.hint #(hint_id) { (hint) } }
            @if let Some(message) = error { p.field-error #(error_id) { (message) } }
        }
    }
}

/// A labelled select.
pub fn select(
    state: &FormState,
    form: &str,
    name: &str,
    label: &str,
    options: &[(String, String)],
    selected: &str,
) -> Markup {
    let id = format!("{form}-{name}");
    let error = state.fields.get(name);
    let error_id = format!("{id}-error");
    let current = state.values.get(name).map_or(selected, String::as_str);
    html! {
        div.field.invalid[error.is_some()] {
            label for=(id) { (label) }
            select #(id) name=(name) aria-invalid=[error.is_some().then_some("true")]
                aria-describedby=[error.is_some().then_some(error_id.as_str())] {
                @for (value, text) in options {
                    option value=(value) selected[value == current] { (text) }
                }
            }
            @if let Some(message) = error { p.field-error #(error_id) { (message) } }
        }
    }
}

/// A labelled checkbox.
pub fn checkbox(form: &str, name: &str, label: &str, checked: bool) -> Markup {
    let id = format!("{form}-{name}");
    html! {
        div.field.check {
            input #(id) type="checkbox" name=(name) value="on" checked[checked];
            label for=(id) { (label) }
        }
    }
}

/// A one-button form (an action on a row), with its anti-forgery field.
pub fn button_form(page: &Page, action: &str, label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" novalidate action=(action) {
            (csrf_field(page))
            button type="submit" class=(class) { (label) }
        }
    }
}

/// A one-button form in a table row: the same as [`button_form`], with an accessible name
/// that says which row it acts on ("Revoke tech@acme.test"), since every row's button has
/// the same text.
pub fn row_button_form(page: &Page, action: &str, label: &str, class: &str, about: &str) -> Markup {
    html! {
        form.inline method="post" novalidate action=(action) {
            (csrf_field(page))
            button type="submit" class=(class) aria-label=(format!("{label} {about}")) { (label) }
        }
    }
}

/// What a list shows when it has nothing in it.
pub fn empty(title: &str, hint: &str) -> Markup {
    html! {
        div.empty {
            p.empty-title { (title) }
            p { (hint) }
        }
    }
}

/// A time from the API (RFC 3339) as people read it: `2026-11-22 14:05 UTC`.
pub fn when(raw: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M UTC")
                .to_string()
        })
        .unwrap_or_else(|_| raw.to_owned())
}
