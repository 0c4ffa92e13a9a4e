//! The control socket in process: an export pages through a log longer than one page, online
//! and offline alike, a rebuild asked for a projection that does not exist is refused,
//! quarantined tenants are retried on demand (none here; the retry itself is tested in the
//! projections crate), and a connection from another user is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::path::Path;

use api::{Config, Server, Settings};
use eventlog::{EventLog, Expected, NewEvent, StreamAppend, StreamId};

fn config(dir: &Path) -> Config {
    Settings {
        bind: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.to_path_buf()),
        ..Settings::default()
    }
    .resolve()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_pages_through_a_long_log_online_and_offline_alike() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let server = Server::start(config.clone()).await.unwrap();
    let log = server.log().unwrap();
    let stream = StreamId(uuid::Uuid::now_v7());
    let total = api::operator::EXPORT_PAGE * 2 + 17;
    for chunk in 0..3 {
        let events = (0..total.div_ceil(3)).map(|i| NewEvent {
            id: uuid::Uuid::now_v7(),
            event_type: "Audited".into(),
            schema_version: 1,
            occurred_at: chrono::Utc::now(),
            actor: "operator".into(),
            data: format!(r#"{{"n":{}}}"#, chunk * total + i).into_bytes(),
        });
        log.append(StreamAppend::new(stream, Expected::Any).events(events))
            .await
            .unwrap();
    }
    let stored = log.read_stream(stream, 1, usize::MAX).await.unwrap();
    let expected: String = stored
        .iter()
        .map(|e| api::audit::line(e).unwrap() + "\n")
        .collect();
    drop(log);

    let tenant = stream.0.to_string();
    let mut online = Vec::new();
    let count = api::operator::export(&config, &tenant, &mut online)
        .await
        .unwrap();
    assert_eq!(count, stored.len() as u64);
    assert!(stored.len() > 2 * api::operator::EXPORT_PAGE);
    assert_eq!(String::from_utf8(online).unwrap(), expected);

    server.shutdown().await;
    assert!(!dir.path().join("control.sock").exists());
    let mut offline = Vec::new();
    api::operator::export(&config, &tenant, &mut offline)
        .await
        .unwrap();
    assert_eq!(String::from_utf8(offline).unwrap(), expected);
}

/// Another user reaching the socket (its mode opened up, as a careless chmod would) gets a
/// 403, decided by the connection's peer credentials. Changing the connecting thread's user
/// needs root, which CI and this suite run as.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_from_another_user_is_refused() {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "this test changes a thread's user, which needs root"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path())).await.unwrap();
    let socket = dir.path().join("control.sock");
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let ask = |socket: std::path::PathBuf, uid: Option<u32>| {
        std::thread::spawn(move || {
            if let Some(uid) = uid {
                // This thread only: the raw syscall, not glibc's process-wide setuid.
                let uid = rustix::process::Uid::from_raw(uid);
                rustix::thread::set_thread_res_uid(uid, uid, uid).unwrap();
            }
            let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
            stream
                .write_all(
                    b"POST /v1/verify HTTP/1.1\r\nhost: idemd\r\ncontent-type: application/json\r\n\
                      content-length: 2\r\nconnection: close\r\n\r\n{}",
                )
                .unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            answer
        })
        .join()
        .unwrap()
    };
    let nobody = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || ask(socket, Some(65534))
    })
    .await
    .unwrap();
    assert!(nobody.starts_with("HTTP/1.1 403"), "{nobody}");
    assert!(nobody.contains("own user and root only"), "{nobody}");
    let own = tokio::task::spawn_blocking(move || ask(socket, None))
        .await
        .unwrap();
    assert!(own.starts_with("HTTP/1.1 200"), "{own}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_rebuild_of_no_projection_or_an_unknown_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path())).await.unwrap();
    let socket = dir.path().join("control.sock");
    for (request, why) in [
        (serde_json::json!({"projections": []}), "at least one"),
        (
            serde_json::json!({"projections": ["directory", "everything"]}),
            "no projection \"everything\"",
        ),
        (serde_json::json!({"projection": "audit"}), "projection"),
    ] {
        let err = api::control::client::call(&socket, "/v1/rebuild", &request)
            .await
            .unwrap_err();
        match &err {
            api::control::client::ClientError::Refused { status, detail, .. } => {
                assert!(*status == 422 || *status == 400, "{err}");
                assert!(detail.contains(why), "{err}");
            }
            other => panic!("{other}"),
        }
    }
    // Nothing was rebuilt: generation 1 is still the only one.
    let mut files: Vec<String> = std::fs::read_dir(dir.path().join("readmodels"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".sqlite"))
        .collect();
    files.sort();
    assert_eq!(files, vec!["audit.g1.sqlite", "directory.g1.sqlite"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantined_tenants_are_retried_in_the_running_service_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let server = Server::start(config.clone()).await.unwrap();
    let left = api::operator::retry_quarantined(&config).await.unwrap();
    let left: Vec<(String, usize)> = left
        .into_iter()
        .map(|p| (p.projection, p.quarantined))
        .collect();
    assert_eq!(left, vec![("directory".into(), 0), ("audit".into(), 0)]);
    server.shutdown().await;
    let err = api::operator::retry_quarantined(&config).await.unwrap_err();
    assert!(err.to_string().contains("retried when it starts"), "{err}");
}
