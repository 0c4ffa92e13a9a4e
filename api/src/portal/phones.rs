//! `/phones` on an MSP's host: the signed-in user's own phones, a code mailed to add another
//! (a replacement, or a spare), and a button to remove one they no longer have.

use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use maud::html;

use super::client::{Failure, segment};
use super::layout::{button_form, empty, row_button_form, when};
use super::{Page, Submission, done, list, s};

/// `GET /phones`.
pub async fn phones(page: Page) -> Response {
    if !page.me.is_msp() {
        return page.failed(&Failure::local(
            StatusCode::NOT_FOUND,
            "Your phones are managed on your MSP's portal.",
        ));
    }
    let phones = match page.api.get("/api/v1/me/authenticators").await {
        Ok(phones) => phones,
        Err(failure) => return page.failed(&failure),
    };
    let body = html! {
        p.lead { "The phones that approve your sign-ins. Add the new one before you remove the old one: removing a phone ends your sessions, this one included." }
        @if list(&phones).is_empty() {
            (empty("No phone", "Enrol one with the authenticator app: it asks for a code sent to your email."))
        } @else {
            table.data {
                caption.visually-hidden { "Your phones" }
                thead { tr { th scope="col" { "Phone" } th scope="col" { "Enrolled" } th scope="col" { span.visually-hidden { "Actions" } } } }
                tbody {
                    @for phone in list(&phones) {
                        tr {
                            td { (s(phone, "name")) }
                            td { (when(s(phone, "enrolled_at"))) }
                            td { (row_button_form(&page, &format!("/phones/{}/remove", segment(s(phone, "id"))), "Remove", "danger", s(phone, "name"))) }
                        }
                    }
                }
            }
        }
        section.panel aria-labelledby="add-phone" {
            h2 #add-phone { "Add a phone" }
            p { "We mail a code to " strong { (page.me.email) } ". Enter it in the authenticator app on the new phone, with that address, within 15 minutes." }
            (button_form(&page, "/phones/add", "Mail me a code", "primary"))
        }
    };
    page.render("My phones", body)
}

/// `POST /phones/add`.
pub async fn add(Submission { page, .. }: Submission) -> Response {
    match page
        .api
        .send(Method::POST, "/api/v1/me/authenticators", None)
        .await
    {
        Ok(_) => done("/phones", "phone-code-sent"),
        Err(failure) => page.failed(&failure),
    }
}

/// `POST /phones/{id}/remove`: the user's sessions end with it, so the next page is the
/// sign-in page.
pub async fn remove(Path(id): Path<String>, Submission { page, .. }: Submission) -> Response {
    let path = format!("/api/v1/me/authenticators/{}", segment(&id));
    match page.api.send(Method::DELETE, &path, None).await {
        Ok(_) => done("/phones", "phone-removed"),
        Err(failure) => page.failed(&failure),
    }
}
