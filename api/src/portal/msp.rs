//! The MSP's pages: the user portal (`/`: one icon per customer the person reaches, one click
//! signs them in there), and the MSP admin portal: customers (the seed's table, create,
//! delete with confirmation, access delegation), users (add by email, make admin, revoke,
//! remove) and the user source.

use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::client::segment;
use super::layout::{FormState, csrf_field, empty, field, form_error, row_button_form, select};
use super::{Fields, Page, Submission, done, list, optional, refused, s, text};

fn person(user: &Value) -> String {
    let name = format!("{} {}", s(user, "first_name"), s(user, "last_name"));
    let name = name.trim();
    if name.is_empty() {
        s(user, "email").to_owned()
    } else {
        name.to_owned()
    }
}

/// `GET /`: the user portal on the MSP's host; customer hosts go to their admin portal.
pub async fn home(page: Page) -> Response {
    if !page.me.is_msp() {
        return Redirect::to("/admin").into_response();
    }
    let apps = match page.api.get("/api/v1/apps").await {
        Ok(apps) => apps,
        Err(failure) => return page.failed(&failure),
    };
    let body = html! {
        p.lead { "Your customer tenants. Click one to sign in to its admin portal." }
        @if list(&apps).is_empty() {
            (empty("No customers yet", "Customers appear here once an admin creates them or delegates one to you."))
        } @else {
            ul.apps {
                @for app in list(&apps) {
                    li {
                        form method="post" novalidate action=(format!("/apps/{}/open", segment(s(app, "name")))) {
                            (csrf_field(&page))
                            button.app type="submit" {
                                span.app-icon aria-hidden="true" { (initials(s(app, "display_name"))) }
                                span.app-name { (s(app, "display_name")) }
                                span.app-url { (s(app, "url")) }
                            }
                        }
                    }
                }
            }
        }
    };
    page.render("My apps", body)
}

fn initials(name: &str) -> String {
    name.split_whitespace()
        .filter_map(|w| w.chars().next())
        .take(2)
        .flat_map(char::to_uppercase)
        .collect()
}

/// `POST /apps/{name}/open`: a one-time SSO hand-off, followed at once.
pub async fn open_app(Path(name): Path<String>, Submission { page, .. }: Submission) -> Response {
    let path = format!("/api/v1/customers/{}/sso", segment(&name));
    match page.api.send(Method::POST, &path, None).await {
        Ok(answer) => match answer.body["url"].as_str() {
            Some(url) => Redirect::to(url).into_response(),
            None => page.failed(&super::client::Failure::local(
                StatusCode::BAD_GATEWAY,
                "the sign-in link could not be made",
            )),
        },
        Err(failure) => page.failed(&failure),
    }
}

/// `GET /admin/customers`: the table, and the form to add one.
pub async fn customers(page: Page) -> Response {
    customers_page(page, FormState::default(), StatusCode::OK).await
}

async fn customers_page(page: Page, form: FormState, status: StatusCode) -> Response {
    if !page.me.is_msp() {
        return Redirect::to("/admin").into_response();
    }
    let customers = match page.api.get("/api/v1/customers").await {
        Ok(customers) => customers,
        Err(failure) => return page.failed(&failure),
    };
    let body = html! {
        @if list(&customers).is_empty() {
            (empty("No customers yet", "Create a tenant for each of your customers; each gets its own URL and cloud directory."))
        } @else {
            table.data {
                caption.visually-hidden { "Customer tenants" }
                thead { tr { th scope="col" { "Display name" } th scope="col" { "Active users" } th scope="col" { "Technicians" } th scope="col" { "Actions" } } }
                tbody {
                    @for customer in list(&customers) {
                        @let name = segment(s(customer, "name"));
                        tr {
                            td {
                                form.inline method="post" novalidate action=(format!("/apps/{name}/open")) {
                                    (csrf_field(&page))
                                    button.link.strong type="submit" { (s(customer, "display_name")) }
                                }
                                br;
                                a.url href=(s(customer, "url")) { (s(customer, "url")) }
                            }
                            td.num { (customer["active_users"]) }
                            td.num { (customer["technicians"]) }
                            td.actions {
                                a.button href=(format!("/admin/customers/{name}")) { "Access delegation" }
                                " "
                                a.button.danger href=(format!("/admin/customers/{name}/delete")) { "Delete" }
                            }
                        }
                    }
                }
            }
        }
        section.panel aria-labelledby="add-customer" {
            h2 #add-customer { "Add customer" }
            form method="post" novalidate action="/admin/customers" {
                (csrf_field(&page))
                (form_error(&form))
                (field(&form, "customer", "display_name", "Display name", "text", true, Some("How the customer is shown, e.g. Acme Corp.")))
                (field(&form, "customer", "name", "Tenant name", "text", true, Some("Lower-case letters, digits and hyphens: it becomes part of the customer's URL.")))
                button.primary type="submit" { "Save" }
            }
        }
    };
    if status.is_success() {
        page.render("Customers", body)
    } else {
        page.render_refused(status, "Customers", body)
    }
}

/// `POST /admin/customers`.
pub async fn create_customer(Submission { page, fields }: Submission) -> Response {
    let body =
        json!({"name": text(&fields, "name"), "display_name": text(&fields, "display_name")});
    match page
        .api
        .send(Method::POST, "/api/v1/customers", Some(body))
        .await
    {
        Ok(_) => done("/admin/customers", "customer-created"),
        Err(failure) if failure.status == StatusCode::UNAUTHORIZED => page.failed(&failure),
        Err(failure) => {
            let status = failure.status;
            customers_page(page, refused(&fields, &failure), status).await
        }
    }
}

/// `GET /admin/customers/{name}`: who reaches the customer, and delegating it.
pub async fn customer(Path(name): Path<String>, page: Page) -> Response {
    customer_page(page, &name, FormState::default(), StatusCode::OK).await
}

async fn customer_page(page: Page, name: &str, form: FormState, status: StatusCode) -> Response {
    let customer = match find_customer(&page, name).await {
        Ok(customer) => customer,
        Err(response) => return response,
    };
    let path = format!("/api/v1/customers/{}/technicians", segment(name));
    let (technicians, users) = match (
        page.api.get(&path).await,
        page.api.get("/api/v1/users").await,
    ) {
        (Ok(t), Ok(u)) => (t, u),
        (Err(failure), _) | (_, Err(failure)) => return page.failed(&failure),
    };
    let reaching: Vec<&str> = list(&technicians).iter().map(|t| s(t, "user_id")).collect();
    let candidates: Vec<(String, String)> = list(&users)
        .iter()
        .filter(|u| !reaching.contains(&s(u, "id")))
        .map(|u| {
            (
                s(u, "id").to_owned(),
                format!("{} <{}>", person(u), s(u, "email")),
            )
        })
        .collect();
    let base = format!("/admin/customers/{}", segment(name));
    let body = html! {
        p.lead { "Technicians reach " strong { (s(&customer, "display_name")) } " at " a href=(s(&customer, "url")) { (s(&customer, "url")) } " through the admin role (every customer) or a delegation of this customer." }
        @if list(&technicians).is_empty() {
            (empty("Nobody reaches this customer yet", "Delegate it to a technician below, or make someone an admin."))
        } @else {
            table.data {
                caption.visually-hidden { "Technicians with access" }
                thead { tr { th scope="col" { "Technician" } th scope="col" { "Email" } th scope="col" { "Access" } th scope="col" { "Actions" } } }
                tbody {
                    @for technician in list(&technicians) {
                        @let via: Vec<&str> = list(&technician["via"]).iter().filter_map(Value::as_str).collect();
                        tr {
                            td { (person(technician)) }
                            td { (s(technician, "email")) }
                            td {
                                @if via.contains(&"admin") { span.badge { "Admin" } " " }
                                @if via.contains(&"delegation") { span.badge.info { "Delegated" } }
                            }
                            td.actions {
                                @if via.contains(&"delegation") {
                                    (row_button_form(&page, &format!("{base}/technicians/{}/revoke", s(technician, "user_id")), "Revoke", "danger", s(technician, "email")))
                                } @else {
                                    span.muted { "Admins reach every customer" }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.panel aria-labelledby="delegate" {
            h2 #delegate { "Delegate access" }
            @if candidates.is_empty() {
                p.muted { "Every user of your MSP reaches this customer already. Add users under Users." }
            } @else {
                form method="post" novalidate action=(format!("{base}/technicians")) {
                    (csrf_field(&page))
                    (form_error(&form))
                    (select(&form, "delegate", "user_id", "Technician", &candidates, ""))
                    button.primary type="submit" { "Delegate" }
                }
            }
        }
        p { a href="/admin/customers" { "← All customers" } }
    };
    let title = format!("Access to {}", s(&customer, "display_name"));
    if status.is_success() {
        page.render(&title, body)
    } else {
        page.render_refused(status, &title, body)
    }
}

/// The customer `name` of this MSP, or the page that says it is not there.
async fn find_customer(page: &Page, name: &str) -> Result<Value, Response> {
    page.api
        .get(&format!("/api/v1/customers/{}", segment(name)))
        .await
        .map_err(|failure| {
            if failure.status == StatusCode::NOT_FOUND {
                page.failed(&super::client::Failure::local(
                    StatusCode::NOT_FOUND,
                    "There is no such customer (it may have been deleted).",
                ))
            } else {
                page.failed(&failure)
            }
        })
}

/// `POST /admin/customers/{name}/technicians` `user_id=…`.
pub async fn delegate(
    Path(name): Path<String>,
    Submission { page, fields }: Submission,
) -> Response {
    let path = format!("/api/v1/customers/{}/technicians", segment(&name));
    let user_id = text(&fields, "user_id");
    let body = match uuid::Uuid::parse_str(&user_id) {
        Ok(id) => json!({"user_id": id}),
        Err(_) => json!({"user_id": user_id}),
    };
    match page.api.send(Method::POST, &path, Some(body)).await {
        Ok(_) => done(&format!("/admin/customers/{}", segment(&name)), "delegated"),
        Err(failure) if failure.status == StatusCode::UNAUTHORIZED => page.failed(&failure),
        Err(failure) => {
            let status = if failure.status == StatusCode::BAD_REQUEST {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                failure.status
            };
            let mut form = refused(&fields, &failure);
            if failure.status == StatusCode::BAD_REQUEST {
                form.fields
                    .insert("user_id".into(), "choose a technician from the list".into());
                form.error = None;
            }
            customer_page(page, &name, form, status).await
        }
    }
}

/// `POST /admin/customers/{name}/technicians/{user}/revoke`: at once.
pub async fn revoke(
    Path((name, user)): Path<(String, String)>,
    Submission { page, .. }: Submission,
) -> Response {
    let path = format!(
        "/api/v1/customers/{}/technicians/{}",
        segment(&name),
        segment(&user)
    );
    match page.api.send(Method::DELETE, &path, None).await {
        Ok(_) => done(&format!("/admin/customers/{}", segment(&name)), "revoked"),
        Err(failure) => page.failed(&failure),
    }
}

/// `GET /admin/customers/{name}/delete`: what deleting means, and a confirmation.
pub async fn confirm_delete(Path(name): Path<String>, page: Page) -> Response {
    let customer = match find_customer(&page, &name).await {
        Ok(customer) => customer,
        Err(response) => return response,
    };
    let body = delete_form(&page, &customer, &FormState::default());
    page.render(&format!("Delete {}", s(&customer, "display_name")), body)
}

fn delete_form(page: &Page, customer: &Value, form: &FormState) -> Markup {
    html! {
        div.warning {
            p { "Deleting " strong { (s(customer, "display_name")) } " removes its tenant, its cloud directory with "
                (customer["active_users"]) " active users, its devices and its branding, for good. Workstations of this customer can no longer sign anyone in." }
        }
        form method="post" novalidate action=(format!("/admin/customers/{}/delete", segment(s(customer, "name")))) {
            (csrf_field(page))
            (form_error(form))
            (field(form, "delete", "confirm", &format!("Type the tenant name ({}) to confirm", s(customer, "name")), "text", true, None))
            button.danger type="submit" { "Delete customer" }
            " "
            a.button href="/admin/customers" { "Cancel" }
        }
    }
}

/// `POST /admin/customers/{name}/delete` `confirm=NAME`.
pub async fn delete_customer(
    Path(name): Path<String>,
    Submission { page, fields }: Submission,
) -> Response {
    let customer = match find_customer(&page, &name).await {
        Ok(customer) => customer,
        Err(response) => return response,
    };
    if text(&fields, "confirm") != name {
        let mut form = FormState::default();
        form.values
            .insert("confirm".into(), text(&fields, "confirm"));
        form.fields.insert(
            "confirm".into(),
            format!("type {name} exactly to delete this customer"),
        );
        let body = delete_form(&page, &customer, &form);
        return page.render_refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("Delete {}", s(&customer, "display_name")),
            body,
        );
    }
    match page
        .api
        .send(
            Method::DELETE,
            &format!("/api/v1/customers/{}", segment(&name)),
            None,
        )
        .await
    {
        Ok(_) => done("/admin/customers", "customer-deleted"),
        Err(failure) => page.failed(&failure),
    }
}

/// `GET /admin/users` on the MSP's host.
pub async fn users(page: Page, form: FormState) -> Response {
    let status = if form.error.is_some() || !form.fields.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let users = match page.api.get("/api/v1/users").await {
        Ok(users) => users,
        Err(failure) => return page.failed(&failure),
    };
    // The tenants an auditor role can be for: the MSP itself, and its customers.
    let customers = match page.api.get("/api/v1/customers").await {
        Ok(customers) => customers,
        Err(failure) => return page.failed(&failure),
    };
    let body = html! {
        table.data {
            caption.visually-hidden { "Users of your MSP" }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Email" } th scope="col" { "Role" } th scope="col" { "Phone" } th scope="col" { "Actions" } } }
            tbody {
                @for user in list(&users) {
                    @let id = s(user, "id");
                    @let admin = user["admin"].as_bool().unwrap_or(false);
                    tr {
                        td { (person(user)) }
                        td { (s(user, "email")) }
                        td {
                            @if admin { span.badge { "Admin" } } @else { span.badge.info { "Technician" } }
                            @if user["auditor"]["msp"].as_bool().unwrap_or(false) {
                                " " span.badge.info { "Auditor" }
                                " " (auditor_end_form(&page, id, None, s(user, "email")))
                            }
                            @for customer in list(&user["auditor"]["customers"]) {
                                @let name = customer.as_str().unwrap_or_default();
                                " " span.badge.info { "Auditor of " (name) }
                                " " (auditor_end_form(&page, id, Some(name), s(user, "email")))
                            }
                        }
                        td {
                            @if user["onboarded"].as_bool().unwrap_or(false) {
                                "Enrolled"
                                @if id != page.me.user_id {
                                    " " (row_button_form(&page, &format!("/admin/users/{id}/reset-phone"), "Reset phone", "", s(user, "email")))
                                }
                            } @else { span.muted { "Not yet" } }
                        }
                        td.actions {
                            @if id != page.me.user_id {
                                @if admin {
                                    (row_button_form(&page, &format!("/admin/users/{id}/revoke-admin"), "Revoke admin", "", s(user, "email")))
                                } @else {
                                    (row_button_form(&page, &format!("/admin/users/{id}/make-admin"), "Make admin", "", s(user, "email")))
                                }
                                " "
                                (row_button_form(&page, &format!("/admin/users/{id}/remove"), "Remove", "danger", s(user, "email")))
                            } @else {
                                span.muted { "You" }
                            }
                        }
                    }
                }
            }
        }
        section.panel aria-labelledby="add-user" {
            h2 #add-user { "Add user" }
            p.muted { "They get an email with a code to enrol their phone; then they sign in by scanning a QR code." }
            form method="post" novalidate action="/admin/users" {
                (csrf_field(&page))
                (form_error(&form))
                (field(&form, "user", "email", "Email", "email", true, None))
                (field(&form, "user", "first_name", "First name", "text", false, None))
                (field(&form, "user", "last_name", "Last name", "text", false, None))
                button.primary type="submit" { "Add user" }
            }
        }
        (auditor_panel(&page, &users, &customers))
    };
    if status.is_success() {
        page.render("Users", body)
    } else {
        page.render_refused(status, "Users", body)
    }
}

/// `POST /admin/users` on the MSP's host.
pub async fn add_user(page: Page, fields: Fields) -> Response {
    let body = json!({
        "email": text(&fields, "email"),
        "first_name": optional(&fields, "first_name"),
        "last_name": optional(&fields, "last_name"),
    });
    match page
        .api
        .send(Method::POST, "/api/v1/users", Some(body))
        .await
    {
        Ok(_) => done("/admin/users", "user-added"),
        Err(failure) if failure.status == StatusCode::UNAUTHORIZED => page.failed(&failure),
        Err(failure) => users(page, refused(&fields, &failure)).await,
    }
}

/// The form that gives a user an auditor role: on the MSP itself or on one customer. The
/// role lets them sign in on that tenant's host and read and verify its audit log, nothing
/// else.
fn auditor_panel(page: &Page, users: &Value, customers: &Value) -> Markup {
    let people: Vec<(String, String)> = list(users)
        .iter()
        .map(|u| (s(u, "id").to_owned(), s(u, "email").to_owned()))
        .collect();
    let tenants: Vec<(String, String)> = std::iter::once((String::new(), "This MSP".to_owned()))
        .chain(
            list(customers)
                .iter()
                .map(|c| (s(c, "name").to_owned(), s(c, "display_name").to_owned())),
        )
        .collect();
    let form = FormState::default();
    html! {
        section.panel aria-labelledby="auditors" {
            h2 #auditors { "Give an auditor role" }
            p.muted { "An auditor signs in on that tenant's address and may read and verify its audit log, and nothing else." }
            form method="post" novalidate action="/admin/auditors" {
                (csrf_field(page))
                (select(&form, "auditor", "user", "User", &people, ""))
                (select(&form, "auditor", "customer", "Tenant", &tenants, ""))
                button.primary type="submit" { "Make auditor" }
            }
        }
    }
}

/// The customer an auditor form names; none (or empty) for the MSP itself.
fn auditor_customer(fields: &Fields) -> Option<String> {
    fields
        .get("customer")
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
}

/// `POST /admin/auditors` `user`, `customer` (empty: the MSP itself) on the MSP's host.
pub async fn grant_auditor(page: Page, fields: Fields) -> Response {
    let user = segment(fields.get("user").map_or("", String::as_str));
    let body = match auditor_customer(&fields) {
        Some(name) => json!({"customer": name}),
        None => json!({}),
    };
    match page
        .api
        .send(
            Method::POST,
            &format!("/api/v1/users/{user}/auditor"),
            Some(body),
        )
        .await
    {
        Ok(_) => done("/admin/users", "auditor-granted"),
        Err(failure) => page.failed(&failure),
    }
}

/// The button that ends user `id`'s auditor role on `customer` (or on the MSP itself).
fn auditor_end_form(page: &Page, id: &str, customer: Option<&str>, about: &str) -> Markup {
    let of = customer.map_or_else(|| "this MSP".to_owned(), |name| name.to_owned());
    html! {
        form.inline method="post" novalidate action=(format!("/admin/users/{id}/revoke-auditor")) {
            (csrf_field(page))
            @if let Some(customer) = customer { input type="hidden" name="customer" value=(customer); }
            button type="submit" aria-label=(format!("End audit of {of} by {about}")) { "End" }
        }
    }
}

/// `POST /admin/users/{id}/{make-admin|revoke-admin|revoke-auditor|reset-phone|remove}` on the MSP's
/// host; `revoke-auditor` takes `customer` (none or empty: the MSP itself).
pub async fn user_action(page: Page, id: &str, action: &str, fields: Fields) -> Response {
    if action == "reset-phone" {
        return match super::reset_phone(&page, id).await {
            Ok(()) => done("/admin/users", "phone-reset"),
            Err(failure) => page.failed(&failure),
        };
    }
    let id = segment(id);
    let (method, path, notice) = match action {
        "make-admin" => (
            Method::POST,
            format!("/api/v1/users/{id}/admin"),
            "admin-granted",
        ),
        "revoke-admin" => (
            Method::DELETE,
            format!("/api/v1/users/{id}/admin"),
            "admin-revoked",
        ),
        "remove" => (
            Method::DELETE,
            format!("/api/v1/users/{id}"),
            "user-removed",
        ),
        "revoke-auditor" => {
            let query = auditor_customer(&fields)
                .map_or_else(String::new, |name| format!("?customer={}", segment(&name)));
            (
                Method::DELETE,
                format!("/api/v1/users/{id}/auditor{query}"),
                "auditor-revoked",
            )
        }
        _ => {
            return page.failed(&super::client::Failure::local(
                StatusCode::NOT_FOUND,
                "no such action",
            ));
        }
    };
    match page.api.send(method, &path, None).await {
        Ok(_) => done("/admin/users", notice),
        Err(failure) => page.failed(&failure),
    }
}

/// `GET /admin/settings` on the MSP's host: the user source.
pub async fn settings(page: Page, form: FormState) -> Response {
    let status = if form.error.is_some() || !form.fields.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let source = match page.api.get("/api/v1/settings/user-source").await {
        Ok(source) => source,
        Err(failure) => return page.failed(&failure),
    };
    let body = user_source_form(&page, &form, s(&source, "source"));
    if status.is_success() {
        page.render("User source", body)
    } else {
        page.render_refused(status, "User source", body)
    }
}

/// The user source form, shared with the customer's settings.
pub fn user_source_form(page: &Page, form: &FormState, current: &str) -> Markup {
    let options = vec![("local".to_owned(), "idem cloud directory".to_owned())];
    html! {
        section.panel aria-labelledby="user-source" {
            h2 #user-source { "User source" }
            p.muted { "Where this tenant's users live. The cloud directory keeps usernames and passwords here, sealed by the tenant's master key." }
            form method="post" novalidate action="/admin/settings" {
                (csrf_field(page))
                input type="hidden" name="section" value="user-source";
                (form_error(form))
                (select(form, "settings", "source", "Source", &options, if current.is_empty() { "local" } else { current }))
                button.primary type="submit" { "Save" }
            }
        }
    }
}

/// `POST /admin/settings` on the MSP's host.
pub async fn save_settings(page: Page, fields: Fields) -> Response {
    let body = json!({"source": text(&fields, "source")});
    match page
        .api
        .send(Method::PUT, "/api/v1/settings/user-source", Some(body))
        .await
    {
        Ok(_) => done("/admin/settings", "settings-saved"),
        Err(failure) if failure.status == StatusCode::UNAUTHORIZED => page.failed(&failure),
        Err(failure) => settings(page, refused(&fields, &failure)).await,
    }
}
