//! The web portals, served by idemd on every tenant host: the MSP admin portal (`/admin` on
//! the MSP's host), the user portal (`/` there: one icon per reachable customer), and the
//! customer admin portal (`/admin` on a customer's host). Server-rendered HTML (maud), plain
//! forms that work without JavaScript, one small script of ours on the login page.
//!
//! Every read and write goes through the API's own router in process ([`client`]) with the
//! browser's session, so the portals can show and do exactly what the contract allows that
//! session. Forms carry an anti-forgery token derived from the session and must come from
//! the same host; every page is served with a Content-Security-Policy that allows only our
//! own script and stylesheet.

pub mod client;
mod customer;
mod layout;
mod login;
mod msp;
mod phones;
mod signup;

use std::collections::{BTreeMap, HashMap};

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{Markup, html};
use serde_json::Value;

use crate::app::Shared;
use crate::auth;
use crate::config::Config;
use client::{Client, Failure};
use layout::FormState;

/// The portals' routes.
pub fn router(config: &Config) -> Router<Shared> {
    let policy = content_security_policy(config);
    Router::new()
        .route("/", get(home))
        .route("/signup", post(signup::submit))
        .route("/login", get(login::page).post(login::finish))
        .route("/logout", post(login::logout))
        .route("/apps/{name}/open", post(msp::open_app))
        .route("/phones", get(phones::phones))
        .route("/phones/add", post(phones::add))
        .route("/phones/{id}/remove", post(phones::remove))
        .route("/admin", get(admin_home))
        .route(
            "/admin/customers",
            get(msp::customers).post(msp::create_customer),
        )
        .route("/admin/customers/{name}", get(msp::customer))
        .route(
            "/admin/customers/{name}/delete",
            get(msp::confirm_delete).post(msp::delete_customer),
        )
        .route("/admin/customers/{name}/technicians", post(msp::delegate))
        .route(
            "/admin/customers/{name}/technicians/{user}/revoke",
            post(msp::revoke),
        )
        .route("/admin/users", get(users).post(add_user))
        .route("/admin/auditors", post(grant_auditor))
        .route("/admin/users/{id}", get(customer::user))
        .route("/admin/users/{id}/{action}", post(user_action))
        .route("/admin/settings", get(settings).post(save_settings))
        .route(
            "/admin/branding",
            get(customer::branding).post(customer::upload_branding),
        )
        .route(
            "/admin/accounts",
            get(customer::accounts).post(customer::save_shared_account),
        )
        .route(
            "/admin/devices",
            get(customer::devices).post(customer::issue_token),
        )
        .route("/admin/devices/{id}/revoke", post(customer::revoke_device))
        .route(
            "/admin/enrollment-tokens/{id}/revoke",
            post(customer::revoke_enrollment_token),
        )
        .route("/admin/audit", get(customer::audit))
        .route("/assets/portal.css", get(stylesheet))
        .route("/assets/login.js", get(login_script))
        .layer(DefaultBodyLimit::max(crate::routes::branding::UPLOAD_LIMIT))
        .layer(axum::middleware::map_response(move |response: Response| {
            let policy = policy.clone();
            async move { with_security_headers(plain_refusal_as_page(response), policy) }
        }))
}

/// axum's extractors refuse some requests in plain text before any handler runs (a path
/// segment that is not UTF-8, a form that is not a form): a page, like every other refusal.
fn plain_refusal_as_page(response: Response) -> Response {
    if !crate::problem::is_plain_refusal(&response) {
        return response;
    }
    error_page(
        None,
        &Failure::local(
            response.status(),
            "This request could not be read. Check the address, or go back and send the form \
             again.",
        ),
    )
}

/// Scripts and styles from our own host only, never inline; images from our host (branding)
/// and `data:`; forms may go to our host or, through the SSO redirect, a tenant host.
fn content_security_policy(config: &Config) -> HeaderValue {
    let tenants = config.tenant_url("*");
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self' {tenants}; frame-ancestors 'none'; \
         base-uri 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ))
}

/// The policy for pages served outside the portal's router (the fallback).
fn content_security_policy_default() -> HeaderValue {
    HeaderValue::from_static(
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    )
}

fn with_security_headers(mut response: Response, policy: HeaderValue) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"))
    {
        // Pages hold tenant data: never kept by shared caches or the back button's disk.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/portal.css"),
    )
}

async fn login_script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/login.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// The signed-in person and the host's tenant, from `/api/v1/me`.
pub struct Me {
    pub email: String,
    pub user_id: String,
    pub tenant_kind: String,
    pub tenant_name: String,
    pub display_name: String,
    /// The tenant's own URL.
    pub url: String,
    pub roles: Vec<String>,
}

impl Me {
    fn from_json(me: &Value) -> Me {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Me {
            email: text(&me["user"]["email"]),
            user_id: text(&me["user"]["id"]),
            tenant_kind: text(&me["tenant"]["kind"]),
            tenant_name: text(&me["tenant"]["name"]),
            display_name: text(&me["tenant"]["display_name"]),
            url: text(&me["tenant"]["url"]),
            roles: me["roles"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub fn is_msp(&self) -> bool {
        self.tenant_kind == "msp"
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// One signed-in browser request.
pub struct Page {
    pub api: Client,
    pub me: Me,
    pub csrf: String,
    pub path: String,
    /// Where to come back to after signing in again: this page, or for a form the page it
    /// was on (a form's own address may take posts only).
    back: String,
    pub notice: Option<&'static str>,
}

impl Page {
    /// The page's session, or the answer that replaces the page: the login page when there
    /// is no valid session (with a word if a session just ended), an error page otherwise.
    pub async fn open(state: Shared, headers: &HeaderMap, uri: &Uri) -> Result<Page, Response> {
        let path = uri.path().to_owned();
        let Some(token) = auth::cookie_token(headers) else {
            return Err(to_login(&path, false));
        };
        let api = Client::new(state, headers, Some(token.clone()));
        let me = match api.get("/api/v1/me").await {
            Ok(me) => Me::from_json(&me),
            Err(failure) if failure.status == StatusCode::UNAUTHORIZED => {
                return Err(to_login(&path, true));
            }
            Err(failure) => return Err(error_page(None, &failure)),
        };
        let notice = query_value(uri, "done").and_then(|key| notice(&key));
        Ok(Page {
            api,
            me,
            csrf: domain::session::csrf_token(&token),
            back: path.clone(),
            path,
            notice,
        })
    }

    /// As [`Page::open`], for a form: the form must come from this host's own page and carry
    /// the session's anti-forgery token.
    pub async fn submit(
        state: Shared,
        headers: &HeaderMap,
        uri: &Uri,
        csrf: Option<&str>,
    ) -> Result<Page, Response> {
        let token = auth::cookie_token(headers);
        let forged = match (&token, csrf) {
            (Some(token), Some(offered)) => {
                !auth::same_origin(headers) || !domain::session::csrf_matches(token, offered)
            }
            _ => token.is_some(),
        };
        if forged {
            return Err(error_page(
                None,
                &Failure::local(
                    StatusCode::FORBIDDEN,
                    "This form did not come from this portal's own page (or the page is from an \
                     earlier session). Go back, reload the page and try again.",
                ),
            ));
        }
        let back = form_page(headers);
        let mut page = Page::open(state, headers, uri).await.map_err(|response| {
            // Sent to sign in again: come back to the form's page, not its address.
            if response.status() == StatusCode::SEE_OTHER {
                to_login(&back, true)
            } else {
                response
            }
        })?;
        page.back = back;
        Ok(page)
    }

    /// A page of the portal.
    pub fn render(&self, title: &str, body: Markup) -> Response {
        html_response(StatusCode::OK, layout::page(self, title, body))
    }

    /// A page that shows a refused form again (422 or the refusal's own status).
    pub fn render_refused(&self, status: StatusCode, title: &str, body: Markup) -> Response {
        html_response(status, layout::page(self, title, body))
    }

    /// The answer to a refused write that is not the form's fault: the login page for an
    /// ended session, an error page for the rest.
    pub fn failed(&self, failure: &Failure) -> Response {
        if failure.status == StatusCode::UNAUTHORIZED {
            return to_login(&self.back, true);
        }
        error_page(Some(&self.me.display_name), failure)
    }
}

/// A page's session, as an extractor: the handler runs only for a signed-in request.
impl FromRequestParts<Shared> for Page {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Page, Response> {
        Page::open(state.clone(), &parts.headers, &parts.uri).await
    }
}

/// A submitted form of a signed-in page: its fields, once the form's anti-forgery token and
/// origin have been checked. (The branding upload, a multipart form, checks its own.)
pub struct Submission {
    pub page: Page,
    pub fields: Fields,
}

impl FromRequest<Shared> for Submission {
    type Rejection = Response;

    async fn from_request(request: Request, state: &Shared) -> Result<Submission, Response> {
        let headers = request.headers().clone();
        let uri = request.uri().clone();
        let Form(fields) = Form::<Fields>::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let csrf = fields.get("csrf").map(String::as_str);
        let page = Page::submit(state.clone(), &headers, &uri, csrf).await?;
        Ok(Submission { page, fields })
    }
}

/// The array in an API answer (empty if it is not one).
pub fn list(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// A text field of an API answer (empty if absent).
pub fn s<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_default()
}

/// A flag of an API answer (false if absent).
pub fn flag(value: &Value, key: &str) -> bool {
    value[key].as_bool().unwrap_or(false)
}

/// A form's fields, as typed.
pub type Fields = HashMap<String, String>;

/// The form state to show again after `failure`, with what was typed.
pub fn refused(fields: &Fields, failure: &Failure) -> FormState {
    let values: BTreeMap<String, String> = fields
        .iter()
        .filter(|(k, _)| k.as_str() != "csrf" && !k.contains("password"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let error = failure
        .fields
        .is_empty()
        .then(|| failure.detail.clone())
        .or_else(|| {
            // A message for a field the form does not show goes above the form.
            failure
                .fields
                .iter()
                .find(|(name, _)| !fields.contains_key(name.as_str()))
                .map(|(_, message)| message.clone())
        });
    FormState {
        values,
        fields: failure.fields.clone(),
        error,
    }
}

/// The path of the page a form was sent from (its `Referer`, on this host), or the admin
/// portal's start.
fn form_page(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|referer| url::Url::parse(referer).ok())
        .filter(|url| {
            let authority = match url.port() {
                Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
                None => url.host_str().unwrap_or_default().to_owned(),
            };
            Some(authority.as_str()) == host
        })
        .map_or_else(|| "/admin".to_owned(), |url| url.path().to_owned())
}

/// A typed text field, trimmed; empty is `None`.
pub fn optional(fields: &Fields, name: &str) -> Option<String> {
    fields
        .get(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A typed text field, trimmed (empty if missing).
pub fn text(fields: &Fields, name: &str) -> String {
    optional(fields, name).unwrap_or_default()
}

/// After a successful form: back to `to`, with a notice.
/// Revokes every authenticator the user `id` has enrolled ("Reset phone", on both hosts):
/// their sessions end and they may onboard a new phone with a new code.
pub async fn reset_phone(page: &Page, id: &str) -> Result<(), client::Failure> {
    let base = format!("/api/v1/users/{}/authenticators", client::segment(id));
    let enrolled = page.api.get(&base).await?;
    for device in list(&enrolled) {
        let device = client::segment(s(device, "id"));
        page.api
            .send(Method::DELETE, &format!("{base}/{device}"), None)
            .await?;
    }
    Ok(())
}

pub fn done(to: &str, notice_key: &str) -> Response {
    let separator = if to.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{to}{separator}done={notice_key}")).into_response()
}

/// The notices a page can show after a write, by key: a fixed set, so a link cannot put
/// words on our pages.
fn notice(key: &str) -> Option<&'static str> {
    Some(match key {
        "customer-created" => "Customer created.",
        "customer-deleted" => "Customer deleted, with all its data.",
        "delegated" => "Access delegated.",
        "revoked" => "Access revoked.",
        "user-added" => "User added. They get an email to enrol their phone.",
        "user-created" => "User created.",
        "user-removed" => "User removed.",
        "phone-code-sent" => {
            "A code is on its way to your email: enter it in the authenticator app on the new phone."
        }
        "phone-removed" => "Phone removed. It approves nothing more.",
        "phone-reset" => {
            "Phone reset: it approves nothing more, the user's sessions ended, and they may enrol a new phone."
        }
        "admin-granted" => "The user is an admin now, of every customer.",
        "admin-revoked" => "Admin role revoked.",
        "auditor-granted" => "The user may read and verify that tenant's audit log now.",
        "auditor-revoked" => "Auditor role ended.",
        "settings-saved" => "Settings saved.",
        "password-set" => "Password changed. Workstations refuse the old one from now on.",
        "passwordless" => "Passwordless invitation sent.",
        "enabled" => "User enabled.",
        "disabled" => "User disabled. Their workstation logins are refused.",
        "branding-saved" => "Branding saved. Workstations show it at their next sync.",
        "shared-saved" => "Shared admin account saved.",
        "device-revoked" => "Device revoked. It is refused from its next request on.",
        "token-revoked" => "Enrollment token revoked. It enrolls nothing from now on.",
        _ => return None,
    })
}

fn query_value(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// To the login page, coming back to `path` afterwards.
fn to_login(path: &str, ended: bool) -> Response {
    let next: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
    let ended = if ended { "&ended=1" } else { "" };
    let mut response = Redirect::to(&format!("/login?next={next}{ended}")).into_response();
    if ended.is_empty() {
        return response;
    }
    // The session is over: the browser forgets it.
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0",
        auth::COOKIE
    )) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// The page for an address the portals do not have.
pub fn not_found_page() -> Response {
    with_security_headers(
        error_page(
            None,
            &Failure::local(
                StatusCode::NOT_FOUND,
                "There is no page at this address. Check it, or start again from the portal.",
            ),
        ),
        content_security_policy_default(),
    )
}

/// An error page: what went wrong, in words, and a way back.
pub fn error_page(tenant: Option<&str>, failure: &Failure) -> Response {
    let title = match failure.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::TOO_MANY_REQUESTS => "Too many requests",
        s if s.is_server_error() => "Something went wrong",
        _ => "That did not work",
    };
    html_response(
        failure.status,
        layout::bare(
            title,
            tenant,
            html! {
                h1 { (title) }
                p { (failure.detail) }
                p { a href="/" { "Back to the start" } }
            },
        ),
    )
}

/// `/`: the sign-up page on the platform's own host, the user portal on a tenant's.
async fn home(State(state): State<Shared>, request: Request) -> Response {
    match crate::host::resolve(&state, request.headers()).await {
        Ok(crate::host::Host::Apex) => signup::page().await,
        Ok(crate::host::Host::Tenant(_)) => match Page::from_request(request, &state).await {
            Ok(page) => msp::home(page).await,
            Err(response) => response,
        },
        Err(problem) => error_page(None, &Failure::local(problem.status, &problem.detail)),
    }
}

/// `/admin`: the first section of the host's admin portal.
async fn admin_home(page: Page) -> Response {
    let to = match (page.me.is_msp(), page.me.has_role("admin")) {
        (true, true) => "/admin/customers",
        (true, false) => "/",
        (false, _) if page.me.has_role("admin") || page.me.has_role("technician") => "/admin/users",
        (false, _) => "/admin/audit",
    };
    Redirect::to(to).into_response()
}

// Routes both kinds of tenant have, each with its own page.

async fn users(page: Page) -> Response {
    if page.me.is_msp() {
        msp::users(page, FormState::default()).await
    } else {
        customer::users(page, FormState::default()).await
    }
}

async fn add_user(Submission { page, fields }: Submission) -> Response {
    if page.me.is_msp() {
        msp::add_user(page, fields).await
    } else {
        customer::create_user(page, fields).await
    }
}

/// Auditor roles are the MSP's to give.
async fn grant_auditor(Submission { page, fields }: Submission) -> Response {
    if page.me.is_msp() {
        msp::grant_auditor(page, fields).await
    } else {
        page.failed(&client::Failure::local(
            StatusCode::NOT_FOUND,
            "auditor roles are given on the MSP's host",
        ))
    }
}

async fn user_action(
    Path((id, action)): Path<(String, String)>,
    Submission { page, fields }: Submission,
) -> Response {
    if page.me.is_msp() {
        msp::user_action(page, &id, &action, fields).await
    } else {
        customer::user_action(page, &id, &action, fields).await
    }
}

async fn settings(page: Page) -> Response {
    if page.me.is_msp() {
        msp::settings(page, FormState::default()).await
    } else {
        customer::settings(page, FormState::default()).await
    }
}

async fn save_settings(Submission { page, fields }: Submission) -> Response {
    if page.me.is_msp() {
        msp::save_settings(page, fields).await
    } else {
        customer::save_settings(page, fields).await
    }
}
