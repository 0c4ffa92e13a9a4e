//! The customer tenant's branding for the desktop login screen: `PUT /api/v1/branding`
//! (multipart: `background`, `logo`, `text`), `GET /api/v1/branding`, and the images at
//! `GET /api/v1/branding/{background|logo}`. Images are PNG or JPEG recognised by their bytes
//! (never by name or declared type), bounded in size and dimensions, and stored as blobs
//! beside the log, named by their SHA-256, in the same commit as the event that uses them.

use axum::Json;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use domain::authz::Action;
use domain::customer::{self, CustomerCommand};
use domain::event::{Event, ImageRef};
use domain::ids::TenantId;
use domain::validate::{self, ImageLimits};
use eventlog::{Digest32, EventLog, StreamId};
use projections::TenantRow;
use schemars::JsonSchema;
use serde::Serialize;

use crate::app::{AppState, Shared};
use crate::command::{self, Plan, fold_customer};
use crate::problem::{FieldProblem, Problem};
use crate::routes::customer::context;
use crate::routes::settings_written;

/// The largest branding upload: two images at their limit and the text.
pub const UPLOAD_LIMIT: usize = 2 * (2 << 20) + 64 * 1024;

/// The desktop login screen's branding.
#[derive(Serialize, JsonSchema)]
pub struct Branding {
    /// Moves at each change; agents fetch again when it does.
    version: u32,
    text: Option<String>,
    background: Option<BrandingImage>,
    logo: Option<BrandingImage>,
}

/// A branding image and where to fetch it.
#[derive(Serialize, JsonSchema)]
pub struct BrandingImage {
    url: String,
    #[schemars(extend("enum" = ["image/png", "image/jpeg"]))]
    media_type: String,
    width: u32,
    height: u32,
}

fn image_json(tenant: &TenantRow, which: &str, image: &Option<ImageRef>) -> Option<BrandingImage> {
    image.as_ref().map(|i| BrandingImage {
        url: format!("/api/v1/branding/{which}?v={}", tenant.branding_version),
        media_type: i.media_type.clone(),
        width: i.width,
        height: i.height,
    })
}

fn branding_json(tenant: &TenantRow) -> Branding {
    Branding {
        version: tenant.branding_version,
        text: tenant.branding_text.clone(),
        background: image_json(tenant, "background", &tenant.branding_background),
        logo: image_json(tenant, "logo", &tenant.branding_logo),
    }
}

/// `GET /api/v1/branding` → `{version, text, background, logo}` with image URLs.
pub async fn get_branding(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (tenant, _) = context(&state, &method, &headers, Action::ReadTenantSettings).await?;
    Ok(Json(branding_json(&tenant)).into_response())
}

fn invalid(field: &str, message: impl Into<String>) -> Problem {
    Problem::invalid(field, &message.into())
}

/// A checked image: its reference for the event and its bytes for the blob store.
fn checked_image(field: &'static str, bytes: Vec<u8>) -> Result<(ImageRef, Vec<u8>), Problem> {
    let info = validate::image(field, &bytes, ImageLimits::default()).map_err(|e| Problem {
        errors: vec![FieldProblem {
            field: e.field.to_owned(),
            message: e.message.clone(),
        }],
        ..Problem::invalid(field, &e.message)
    })?;
    let reference = ImageRef {
        blob: eventlog::blob_id(&bytes).to_hex(),
        media_type: info.format.media_type().to_owned(),
        width: info.width,
        height: info.height,
    };
    Ok((reference, bytes))
}

/// `PUT /api/v1/branding` (multipart/form-data): any of `background`, `logo` (PNG or JPEG) and
/// `text` (an empty text removes it). Parts not sent, and file parts with no file chosen (an
/// empty file name, as browsers send them), keep their value.
pub async fn put_branding(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, Problem> {
    let (tenant, caller) = context(&state, &method, &headers, Action::ManageBranding).await?;
    let mut multipart = multipart.map_err(|e| {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            format!("send multipart/form-data: {}", e.body_text()),
        )
    })?;
    let mut background = None;
    let mut logo = None;
    let mut text = None;
    let too_large = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                e.status(),
                "Body too large",
                "the upload is larger than allowed",
            )
        } else {
            Problem::bad_request(format!("malformed multipart body: {}", e.body_text()))
        }
    };
    while let Some(field) = multipart.next_field().await.map_err(too_large)? {
        let name = field.name().unwrap_or_default().to_owned();
        // A browser's file input with no file chosen: a part with an empty file name.
        let no_file_chosen = field.file_name() == Some("");
        let bytes = field.bytes().await.map_err(too_large)?.to_vec();
        if no_file_chosen && bytes.is_empty() {
            continue;
        }
        match name.as_str() {
            "background" => background = Some(checked_image("background", bytes)?),
            "logo" => logo = Some(checked_image("logo", bytes)?),
            "text" => {
                text = Some(
                    String::from_utf8(bytes).map_err(|_| invalid("text", "must be UTF-8 text"))?,
                )
            }
            other => {
                return Err(invalid(
                    other,
                    "unknown part: send background, logo or text",
                ));
            }
        }
    }
    if background.is_none() && logo.is_none() && text.is_none() {
        return Err(Problem::bad_request(
            "send at least one of background, logo and text",
        ));
    }
    let blobs: Vec<Vec<u8>> = background
        .iter()
        .chain(logo.iter())
        .map(|(_, bytes)| bytes.clone())
        .collect();
    let (committed, _) = command::execute_plan(
        &state,
        TenantId(tenant.id),
        &caller.actor,
        Utc::now(),
        |history| {
            let tenant = fold_customer(history)?;
            let decision = customer::decide(
                Some(tenant),
                CustomerCommand::UpdateBranding {
                    background: background.as_ref().map(|(r, _)| r.clone()),
                    logo: logo.as_ref().map(|(r, _)| r.clone()),
                    text: text.clone(),
                },
            )?;
            // Replaced images leave the blob store in the same commit: only the current
            // branding's images are ever served.
            let drop_blobs = decision
                .events
                .iter()
                .filter_map(|event| match event {
                    Event::BrandingUpdated(next) => Some(tenant.branding.replaced_by(next)),
                    _ => None,
                })
                .flatten()
                .filter_map(|blob| blob.parse::<Digest32>().ok())
                .collect();
            Ok(Plan {
                blobs: blobs.clone(),
                drop_blobs,
                ..Plan::on_tenant(decision)
            })
        },
    )
    .await?;
    settings_written(&state, &headers, committed.as_ref(), branding_json).await
}

/// `GET /api/v1/branding/{background|logo}`: the image, with its media type, an `ETag` (its
/// SHA-256) and caching headers; `If-None-Match` answers 304.
pub async fn get_image(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(which): Path<String>,
) -> Result<Response, Problem> {
    let (tenant, _) = context(&state, &method, &headers, Action::ReadTenantSettings).await?;
    image_response(&state, &tenant, &which, &headers).await
}

/// An image of `tenant`'s branding as a response (shared with the agent's branding route).
pub async fn image_response(
    state: &AppState,
    tenant: &TenantRow,
    which: &str,
    headers: &HeaderMap,
) -> Result<Response, Problem> {
    let image = match which {
        "background" => &tenant.branding_background,
        "logo" => &tenant.branding_logo,
        _ => return Err(Problem::not_found("the images are background and logo")),
    };
    let image = image
        .as_ref()
        .ok_or_else(|| Problem::not_found(format!("no {which} is set")))?;
    let etag = format!("\"{}\"", image.blob);
    let cache = [
        (header::ETAG, HeaderValue::from_str(&etag).ok()),
        (
            header::CACHE_CONTROL,
            Some(HeaderValue::from_static("private, max-age=300")),
        ),
    ];
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let id: Digest32 = image
            .blob
            .parse()
            .map_err(|_| Problem::internal(&"a branding image names a malformed blob"))?;
        // Between a branding update's commit and the read models catching up, the row read
        // here may still name the image it replaced, which left with that commit.
        let bytes = state
            .log
            .blob(StreamId(tenant.id), id)
            .await?
            .ok_or_else(|| {
                tracing::warn!(tenant = %tenant.id, blob = %image.blob, "a branding image's blob is not stored");
                Problem::not_found(format!("the {which} was replaced: read the branding again"))
            })?;
        let mut response = bytes.into_response();
        if let Ok(media_type) = HeaderValue::from_str(&image.media_type) {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, media_type);
        }
        response
    };
    for (name, value) in cache {
        if let Some(value) = value {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}
