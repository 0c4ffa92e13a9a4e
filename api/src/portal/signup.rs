//! The platform's own page (`/` on the apex host): an MSP signs up. The tenant's admin then
//! enrols a phone with the code mailed to them and signs in on the tenant's own host.

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde_json::json;

use super::client::{Client, Failure};
use super::layout::{self, FormState, field, form_error};
use super::{Fields, error_page, html_response, refused, text};
use crate::app::Shared;
use crate::auth;

/// `GET /` on the apex host.
pub async fn page() -> Response {
    form_page(&FormState::default(), StatusCode::OK)
}

fn form_page(form: &FormState, status: StatusCode) -> Response {
    html_response(status, layout::bare("Sign up", None, signup_form(form)))
}

fn signup_form(form: &FormState) -> Markup {
    html! {
        h1 { "Start with idem" }
        p { "Create your MSP tenant: a home for your technicians, and one tenant per customer." }
        form method="post" novalidate action="/signup" {
            (form_error(form))
            (field(form, "signup", "display_name", "Company name", "text", true, Some("How your MSP is shown, e.g. Acme IT.")))
            (field(form, "signup", "name", "Tenant name", "text", true, Some("Lower-case letters, digits and hyphens: your portal's address.")))
            (field(form, "signup", "admin_email", "Your email", "email", true, Some("You become the first admin; we send a code to enrol your phone.")))
            button.primary type="submit" { "Create tenant" }
        }
    }
}

/// `POST /signup` on the apex host.
pub async fn submit(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(fields): Form<Fields>,
) -> Response {
    if !auth::same_origin(&headers) {
        return error_page(
            None,
            &Failure::local(
                StatusCode::FORBIDDEN,
                "This form did not come from this site's own page. Go back, reload it and try again.",
            ),
        );
    }
    let api = Client::new(state, &headers, None);
    let body = json!({
        "name": text(&fields, "name"),
        "display_name": text(&fields, "display_name"),
        "admin_email": text(&fields, "admin_email"),
    });
    match api.send(Method::POST, "/api/v1/signup", Some(body)).await {
        Ok(answer) => {
            let url = answer.body["tenant"]["url"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let email = text(&fields, "admin_email");
            html_response(
                StatusCode::CREATED,
                layout::bare(
                    "Your tenant is ready",
                    answer.body["tenant"]["display_name"].as_str(),
                    html! {
                        h1 { "Your tenant is ready" }
                        p { "Your portal is at " a #tenant-url href=(format!("{url}/admin")) { (url) } "." }
                        ol {
                            li { "We sent a one-time code to " strong { (email) } "." }
                            li { "Enrol your phone with it in the idem app." }
                            li { "Open your portal and scan its sign-in code with the phone." }
                        }
                    },
                ),
            )
        }
        Err(failure) if matches!(failure.status.as_u16(), 409 | 422) => {
            let mut form = refused(&fields, &failure);
            if failure.status == StatusCode::CONFLICT && form.fields.is_empty() {
                form.fields.insert("name".into(), failure.detail.clone());
                form.error = None;
            }
            form_page(&form, StatusCode::UNPROCESSABLE_ENTITY)
        }
        Err(failure) => error_page(None, &failure),
    }
}
