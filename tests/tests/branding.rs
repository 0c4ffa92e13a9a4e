//! Branding over real HTTP: images recognised by their bytes whatever their name or declared
//! type, size and dimension limits, partial updates with a growing version, images served
//! back with their type and an ETag; refusals store nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use harness::Platform;
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

fn png(width: u32, height: u32, padding: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(&13u32.to_be_bytes());
    bytes.extend_from_slice(b"IHDR");
    bytes.extend_from_slice(&width.to_be_bytes());
    bytes.extend_from_slice(&height.to_be_bytes());
    bytes.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    bytes.resize(bytes.len() + padding, 0);
    bytes
}

fn jpeg(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10];
    bytes.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    bytes.extend_from_slice(&[0xff, 0xc0, 0x00, 0x11, 0x08]);
    bytes.extend_from_slice(&height.to_be_bytes());
    bytes.extend_from_slice(&width.to_be_bytes());
    bytes.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xff, 0xd9]);
    bytes
}

fn file(bytes: Vec<u8>, name: &str, mime: &str) -> Part {
    Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str(mime)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branding_images_are_checked_by_content_and_served_back() {
    let platform = Platform::start().await;
    let (phone, msp) = platform.acme_with_contoso("alice@acme.example").await;
    let admin = platform.login(&phone, "contoso-acme").await;
    let host = "contoso-acme";
    let put = |form: Form| {
        Platform::call(
            platform
                .as_user(&admin, Method::PUT, host, "/api/v1/branding")
                .multipart(form),
        )
    };
    let get = |path: &str| Platform::call(platform.as_user(&admin, Method::GET, host, path));

    assert_eq!(get("/api/v1/branding").await.1["version"], 0);
    // A PNG named and declared as a JPEG is a PNG; a JPEG logo; the text.
    let background = png(1920, 1080, 1000);
    let (status, branding) = put(Form::new()
        .part(
            "background",
            file(background.clone(), "bg.jpg", "image/jpeg"),
        )
        .part("logo", file(jpeg(200, 80), "logo.png", "image/png"))
        .text("text", "Welcome to Contoso"))
    .await;
    assert_eq!(status, 200, "{branding}");
    assert_eq!(branding["version"], 1);
    assert_eq!(branding["background"]["media_type"], "image/png");
    assert_eq!(branding["background"]["width"], 1920);
    assert_eq!(branding["logo"]["media_type"], "image/jpeg");
    assert_eq!(branding["text"], "Welcome to Contoso");

    // Refused, with the field named, and nothing stored.
    let beyond_the_body_limit = 5 << 20;
    let refusals: Vec<(Form, u16, Option<&str>)> = vec![
        (
            Form::new().part(
                "logo",
                file(b"GIF89a not an image".to_vec(), "logo.png", "image/png"),
            ),
            422,
            Some("logo"),
        ),
        (
            Form::new().part(
                "background",
                file(png(5000, 100, 0), "wide.png", "image/png"),
            ),
            422,
            Some("background"),
        ),
        (
            Form::new().part(
                "background",
                file(png(100, 100, 2 << 20), "big.png", "image/png"),
            ),
            422,
            Some("background"),
        ),
        (
            Form::new().part(
                "background",
                file(
                    png(100, 100, beyond_the_body_limit),
                    "huge.png",
                    "image/png",
                ),
            ),
            413,
            None,
        ),
        (
            Form::new().part("favicon", file(png(10, 10, 0), "f.png", "image/png")),
            422,
            Some("favicon"),
        ),
        (Form::new(), 400, None),
    ];
    for (form, expected, field) in refusals {
        let (status, problem) = put(form).await;
        assert_eq!(status, expected, "{problem}");
        if let Some(field) = field {
            assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        }
    }
    let (status, _) = Platform::call(
        platform
            .as_user(&admin, Method::PUT, host, "/api/v1/branding")
            .json(&json!({"text": "json is not multipart"})),
    )
    .await;
    assert_eq!(status, 415);
    assert_eq!(
        get("/api/v1/branding").await.1["version"],
        1,
        "nothing stored"
    );

    // Only the text changes: the images stay, the version grows.
    let (_, branding) = put(Form::new().text("text", "Hello")).await;
    assert_eq!(branding["version"], 2);
    assert_eq!(branding["background"]["width"], 1920);

    // The image is served back as stored, with its type and an ETag.
    let url = branding["background"]["url"].as_str().unwrap().to_owned();
    let answer = platform
        .as_user(&admin, Method::GET, host, &url)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "image/png");
    let etag = answer.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        answer.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    assert_eq!(answer.bytes().await.unwrap().to_vec(), background);
    let again = platform
        .as_user(&admin, Method::GET, host, &url)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let (status, _): (u16, Value) = get("/api/v1/branding/favicon").await;
    assert_eq!(status, 404);

    // A new logo: the one it replaces leaves the blob store with the update (only the current
    // images are served), the background stays; text alone removed nothing before.
    let (_, contoso) =
        Platform::call(platform.as_user(&msp, Method::GET, "acme", "/api/v1/customers/contoso"))
            .await;
    let stream = eventlog::StreamId(contoso["id"].as_str().unwrap().parse().unwrap());
    let log = platform.server.log().unwrap();
    let stored = |bytes: Vec<u8>| {
        let log = log.clone();
        async move {
            eventlog::EventLog::blob(&*log, stream, eventlog::blob_id(&bytes))
                .await
                .unwrap()
                .is_some()
        }
    };
    let (old_logo, new_logo) = (jpeg(200, 80), png(300, 100, 10));
    assert!(stored(old_logo.clone()).await && stored(background.clone()).await);
    let (status, branding) =
        put(Form::new().part("logo", file(new_logo.clone(), "logo.png", "image/png"))).await;
    assert_eq!(status, 200, "{branding}");
    assert_eq!(branding["version"], 3);
    assert!(!stored(old_logo).await, "the replaced logo is gone");
    assert!(stored(new_logo.clone()).await);
    assert!(stored(background.clone()).await, "the background stays");
    let logo_url = branding["logo"]["url"].as_str().unwrap().to_owned();
    let answer = platform
        .as_user(&admin, Method::GET, host, &logo_url)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.bytes().await.unwrap().to_vec(), new_logo);
    platform.server.shutdown().await;
}
