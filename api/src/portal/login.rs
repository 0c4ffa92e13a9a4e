//! Signing in and out of the portals: the login page shows a QR challenge (an image, and the
//! `idem://` text for the software authenticator) and moves on by itself once a phone
//! approves it (`/assets/login.js` long-polls `POST /login`); without JavaScript, a button
//! does the same. The challenge's id rides in a `SameSite=Strict` cookie of this host, so
//! another site cannot finish a login in this browser.

use axum::Form;
use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use maud::html;
use serde_json::json;

use super::client::{Client, Failure};
use super::{Fields, Page, Submission, error_page, html_response, layout, query_value};
use crate::app::Shared;
use crate::auth;
use crate::client_addr::ClientAddr;

/// The login challenge's cookie: this browser's challenge, for the login page only.
const LOGIN_COOKIE: &str = "idem_login";
/// How long one `POST /login` waits for the approval.
const WAIT_SECONDS: u64 = 25;

/// Where to go after signing in: a path of this host, never another site.
fn next_path(raw: Option<&str>) -> String {
    match raw {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.starts_with("/login") =>
        {
            path.to_owned()
        }
        _ => "/admin".to_owned(),
    }
}

/// `GET /login?next=…`: a fresh QR challenge.
pub async fn page(
    State(state): State<Shared>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let next = next_path(query_value(&uri, "next").as_deref());
    // Already signed in here: straight on.
    if auth::cookie_token(&headers).is_some()
        && Page::open(state.clone(), &headers, &uri).await.is_ok()
    {
        return Redirect::to(&next).into_response();
    }
    // The API's limits count the browser, not the proxy in front of us.
    let api = Client::new(state, &headers, None).from_peer(SocketAddr::new(client, 0));
    let display_name = crate::host::tenant(api.state(), &headers)
        .await
        .ok()
        .map(|tenant| tenant.display_name.clone());
    let challenge = match api
        .send(
            Method::POST,
            "/api/v1/login/challenges",
            Some(json!({"purpose": "portal"})),
        )
        .await
    {
        Ok(answer) => answer.body,
        Err(failure) => return error_page(display_name.as_deref(), &failure),
    };
    let (Some(id), Some(qr), Some(secret)) = (
        challenge["id"].as_str(),
        challenge["qr"].as_str(),
        challenge["poll_secret"].as_str(),
    ) else {
        return error_page(
            display_name.as_deref(),
            &Failure::local(
                StatusCode::BAD_GATEWAY,
                "the login challenge could not be made",
            ),
        );
    };
    let image = qr_image(qr);
    let message = if query_value(&uri, "ended").is_some() {
        Some("Your session has ended, or your access here has changed. Sign in again.")
    } else if query_value(&uri, "pending").is_some() {
        Some("No approval arrived for that code yet. Scan this new one.")
    } else if query_value(&uri, "expired").is_some() {
        Some("That code expired. Scan this new one.")
    } else if query_value(&uri, "withdrawn").is_some() {
        Some(
            "Someone else asked for that code's answer, so it was withdrawn. Make sure nobody \
             else can see your screen, and scan this new one.",
        )
    } else if query_value(&uri, "out").is_some() {
        Some("You are signed out.")
    } else {
        None
    };
    let body = html! {
        h1 { "Sign in" }
        @if let Some(message) = message { p.notice role="status" { (message) } }
        p { "Scan this code with the idem app on your enrolled phone and approve the sign-in." }
        div.qr #login data-next=(next) {
            @if let Some(image) = image {
                img src=(image) width="240" height="240" alt="QR code to scan with your phone";
            }
        }
        details {
            summary { "Using the software authenticator?" }
            p { "Give it this text:" }
            code.qr-text #qr-text { (qr) }
        }
        p #login-status role="status" aria-live="polite" { "Waiting for your approval…" }
        form method="post" novalidate action="/login" {
            input type="hidden" name="next" value=(next);
            button.primary type="submit" { "I approved it — continue" }
        }
        script src="/assets/login.js" defer {}
    };
    let mut response = html_response(
        StatusCode::OK,
        layout::bare("Sign in", display_name.as_deref(), body),
    );
    let secure = if api.state().config.public_scheme == "https" {
        "; Secure"
    } else {
        ""
    };
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={id}.{secret}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=300{secure}"
    )) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// The QR code of `text` as an SVG image (a `data:` URI: the page's policy allows those, and
/// an image cannot run anything).
fn qr_image(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let svg = qr_svg(code.width(), &code.to_colors());
    Some(format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    ))
}

/// Modules of white around the code, as the QR standard asks.
const QUIET_ZONE: usize = 4;

/// A QR code's modules (`width` × `width`, row by row) as one SVG path: each row's runs of dark
/// modules are one rectangle each, in module units scaled by the view box. A few KB, where a
/// `<rect>` per module (the qrcode crate's renderer) made ~35 KB.
fn qr_svg(width: usize, modules: &[qrcode::Color]) -> String {
    use std::fmt::Write;
    let size = width + 2 * QUIET_ZONE;
    let mut path = String::new();
    for (y, row) in modules.chunks(width.max(1)).enumerate() {
        let mut x = 0;
        while x < row.len() {
            if row[x] == qrcode::Color::Light {
                x += 1;
                continue;
            }
            let run = row[x..]
                .iter()
                .take_while(|&&c| c == qrcode::Color::Dark)
                .count();
            let _ = write!(
                path,
                "M{} {}h{run}v1h-{run}z",
                x + QUIET_ZONE,
                y + QUIET_ZONE
            );
            x += run;
        }
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"240\" height=\"240\" \
         viewBox=\"0 0 {size} {size}\" shape-rendering=\"crispEdges\">\
         <rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/>\
         <path fill=\"#000\" d=\"{path}\"/></svg>"
    )
}

/// `POST /login` `next=…`: waits for this browser's challenge. The page's script asks with
/// `Accept: application/json` and gets `{status, next?}`; a plain form post is sent on (or
/// back to a fresh code).
pub async fn finish(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(fields): Form<Fields>,
) -> Response {
    let next = next_path(fields.get("next").map(String::as_str));
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let encoded_next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
    let again = |why: &str| -> Response {
        if wants_json {
            axum::Json(json!({"status": why})).into_response()
        } else {
            Redirect::to(&format!("/login?next={encoded_next}&{why}=1")).into_response()
        }
    };
    // The challenge's id and its poll secret: the secret makes this browser's polls its
    // creator's, so that anyone else who polls the id shown in the QR code withdraws it.
    let Some((id, secret)) = auth::cookie(&headers, LOGIN_COOKIE)
        .and_then(|value| {
            let (id, secret) = value.split_once('.')?;
            Some((id.to_owned(), HeaderValue::from_str(secret).ok()?))
        })
        .filter(|(id, _)| uuid::Uuid::parse_str(id).is_ok())
    else {
        return again("expired");
    };
    let api = Client::new(state.clone(), &headers, None)
        .with_header(crate::routes::login::POLL_SECRET_HEADER, secret);
    let answer = match api
        .get(&format!(
            "/api/v1/login/challenges/{id}?wait={WAIT_SECONDS}"
        ))
        .await
    {
        Ok(answer) => answer,
        Err(failure) if failure.status == StatusCode::NOT_FOUND => return again("expired"),
        Err(failure) => return error_page(None, &failure),
    };
    match (answer["status"].as_str(), answer["token"].as_str()) {
        (Some("approved"), Some(token)) => {
            let mut response = if wants_json {
                axum::Json(json!({"status": "approved", "next": next})).into_response()
            } else {
                Redirect::to(&next).into_response()
            };
            if let Some(cookie) = auth::session_cookie(&state, token) {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            if let Ok(cleared) = HeaderValue::from_str(&format!(
                "{LOGIN_COOKIE}=; Path=/login; HttpOnly; SameSite=Strict; Max-Age=0"
            )) {
                response.headers_mut().append(header::SET_COOKIE, cleared);
            }
            response
        }
        (Some("pending"), _) => again("pending"),
        (Some("denied"), _) => again("withdrawn"),
        // Expired, or approved and handed out already.
        _ => again("expired"),
    }
}

/// `POST /logout`: ends the session and forgets the cookie.
pub async fn logout(Submission { page, .. }: Submission) -> Response {
    if let Err(failure) = page.api.send(Method::POST, "/api/v1/logout", None).await
        && failure.status != StatusCode::UNAUTHORIZED
    {
        return page.failed(&failure);
    }
    let mut response = Redirect::to("/login?next=%2Fadmin&out=1").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, auth::cleared_cookie(page.api.state()));
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// The dark modules an SVG of [`qr_svg`] draws: its view box's size and, per `M x y h n
    /// v1 h-n z` piece, `n` modules from (x, y). Anything else in the path fails the test.
    fn drawn(svg: &str) -> (usize, Vec<(usize, usize)>) {
        let view = svg.split("viewBox=\"0 0 ").nth(1).unwrap();
        let size: usize = view.split(' ').next().unwrap().parse().unwrap();
        let path = svg
            .split(" d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let mut dark = Vec::new();
        for piece in path.split('M').filter(|p| !p.is_empty()) {
            let (start, rest) = piece.split_once('h').unwrap();
            let (x, y) = start.split_once(' ').unwrap();
            let (x, y): (usize, usize) = (x.parse().unwrap(), y.parse().unwrap());
            let (run, rest) = rest.split_once("v1h-").unwrap();
            let run: usize = run.parse().unwrap();
            assert_eq!(rest, format!("{run}z"), "{piece}");
            dark.extend((x..x + run).map(|x| (x, y)));
        }
        (size, dark)
    }

    #[test]
    fn the_login_qr_code_reads_back_as_the_challenge_it_shows() {
        let text = "idem://approve?host=contoso-acme.idem.example&id=01a20a1f-18b1-72cc-bc09-523fb5cb4c1a&nonce=H-y22RCDEBluIDPYuNGk5t9HZHXVr4C0_FzHurr__OA";
        let image = qr_image(text).unwrap();
        let svg = base64::engine::general_purpose::STANDARD
            .decode(image.strip_prefix("data:image/svg+xml;base64,").unwrap())
            .unwrap();
        let svg = String::from_utf8(svg).unwrap();
        // A fraction of the `<rect>` per module that the qrcode crate's renderer draws.
        let per_module = qrcode::QrCode::new(text.as_bytes())
            .unwrap()
            .render::<qrcode::render::svg::Color<'_>>()
            .build();
        assert!(
            svg.len() * 2 < per_module.len(),
            "{} bytes against {}",
            svg.len(),
            per_module.len()
        );
        let (size, dark) = drawn(&svg);
        // The quiet zone stays light on every side.
        assert!(
            dark.iter()
                .all(|&(x, y)| (QUIET_ZONE..size - QUIET_ZONE).contains(&x)
                    && (QUIET_ZONE..size - QUIET_ZONE).contains(&y))
        );
        let dark: std::collections::HashSet<_> = dark.into_iter().collect();
        const PIXELS: usize = 4;
        let mut picture =
            rqrr::PreparedImage::prepare_from_bitmap(size * PIXELS, size * PIXELS, |x, y| {
                dark.contains(&(x / PIXELS, y / PIXELS))
            });
        let grids = picture.detect_grids();
        assert_eq!(grids.len(), 1);
        let (_, content) = grids[0].decode().unwrap();
        assert_eq!(content, text);
    }

    #[test]
    fn a_qr_svg_draws_each_run_of_dark_modules_once() {
        use qrcode::Color::{Dark, Light};
        // Two rows of three: a run of two, a gap; then one, a gap, one.
        let svg = qr_svg(3, &[Dark, Dark, Light, Dark, Light, Dark]);
        let (size, dark) = drawn(&svg);
        assert_eq!(size, 3 + 2 * QUIET_ZONE);
        let q = QUIET_ZONE;
        assert_eq!(dark, [(q, q), (q + 1, q), (q, q + 1), (q + 2, q + 1)]);
    }
}
