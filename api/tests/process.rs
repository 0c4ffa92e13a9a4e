//! The idemd binary as an operator runs it: `idemd serve`, a signup, SIGTERM, a clean exit,
//! and the acknowledged signup still there after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Stdio;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts idemd on a free port; answers once it logs that it listens.
async fn spawn(data: &Path) -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_idemd"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .env_remove("IDEM_DATABASE_URL")
        .env("IDEM_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("idemd exited before listening");
        if line.contains("idemd listening") {
            break;
        }
    }
    // Keep draining its log so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

async fn signup(port: u16) -> u16 {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/signup"))
        .header("host", format!("localhost:{port}"))
        .json(&json!({"name": "acme", "display_name": "Acme", "admin_email": "a@acme.example"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = spawn(dir.path()).await;
    assert_eq!(signup(port).await, 201);

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().await.unwrap();
    assert!(status.success(), "idemd exited with {status}");

    let (mut child, port) = spawn(dir.path()).await;
    assert_eq!(signup(port).await, 409);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_bad_setting_stops_idemd_at_start_with_its_name() {
    let output = Command::new(env!("CARGO_BIN_EXE_idemd"))
        .args(["serve", "--public-scheme", "gopher"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("IDEM_PUBLIC_SCHEME"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_replays_the_read_models_while_idemd_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = spawn(dir.path()).await;
    assert_eq!(signup(port).await, 201);

    // While idemd runs, the log is its alone: the command says so and changes nothing.
    let busy = Command::new(env!("CARGO_BIN_EXE_idemd"))
        .args(["rebuild", "--data-dir"])
        .arg(dir.path())
        .env_remove("IDEM_DATABASE_URL")
        .output()
        .await
        .unwrap();
    assert_eq!(busy.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("stop it first"));

    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(child.wait().await.unwrap().success());

    let rebuilt = Command::new(env!("CARGO_BIN_EXE_idemd"))
        .args(["rebuild", "--data-dir"])
        .arg(dir.path())
        .env_remove("IDEM_DATABASE_URL")
        .output()
        .await
        .unwrap();
    assert!(rebuilt.status.success(), "{rebuilt:?}");
    let stdout = String::from_utf8(rebuilt.stdout).unwrap();
    assert!(
        stdout.contains("directory: rebuilt into generation 2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("audit: rebuilt into generation 2"),
        "{stdout}"
    );
    let mut files: Vec<String> = std::fs::read_dir(dir.path().join("readmodels"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".sqlite"))
        .collect();
    files.sort();
    assert_eq!(files, vec!["audit.g2.sqlite", "directory.g2.sqlite"]);

    // The rebuilt generation serves: the tenant's host resolves through it (a host it did not
    // know would be "no tenant is served at ...").
    let (mut child, port) = spawn(dir.path()).await;
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/signup"))
        .header("host", format!("acme.localhost:{port}"))
        .json(&json!({"name": "x", "display_name": "X", "admin_email": "a@x.example"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        answer["detail"].as_str().unwrap().contains("platform"),
        "{answer}"
    );
    child.kill().await.unwrap();

    let unknown = Command::new(env!("CARGO_BIN_EXE_idemd"))
        .args(["rebuild", "everything", "--data-dir"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
}

/// Runs `idemd ARGS` to completion: its exit code and standard output.
async fn idemd(args: &[&str], data: &Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_idemd"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("IDEM_DATABASE_URL")
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_exports_verifies_offline_and_replays_a_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = spawn(dir.path()).await;
    assert_eq!(signup(port).await, 201);
    // Refused while the service holds the log.
    let export = dir.path().join("acme.ndjson");
    let out = export.to_str().unwrap();
    assert_ne!(
        idemd(&["export", "acme", "--out", out], dir.path()).await.0,
        0
    );
    child.kill().await.unwrap();
    child.wait().await.unwrap();

    let (code, _) = idemd(&["export", "acme", "--out", out], dir.path()).await;
    assert_eq!(code, 0);
    // verify-export needs nothing but the file.
    let offline = Command::new(env!("CARGO_BIN_EXE_idemd"))
        .args(["verify-export", out])
        .output()
        .await
        .unwrap();
    assert!(offline.status.success());
    assert!(
        String::from_utf8(offline.stdout)
            .unwrap()
            .starts_with("valid: 2 events")
    );
    let (code, report) = idemd(&["verify"], dir.path()).await;
    assert_eq!(code, 0);
    assert!(report.contains("\tvalid\t2 events"), "{report}");
    let (code, state) = idemd(
        &["state", "acme", "--at", "2100-01-01T00:00:00Z"],
        dir.path(),
    )
    .await;
    assert_eq!(code, 0);
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["state"]["name"], "acme");
    assert_eq!(state["state"]["users"][0]["email"], "a@acme.example");
    let (code, state) = idemd(
        &["state", "acme", "--at", "2000-01-01T00:00:00Z"],
        dir.path(),
    )
    .await;
    assert_eq!(code, 0);
    assert!(serde_json::from_str::<serde_json::Value>(&state).unwrap()["state"].is_null());

    // One changed byte in the file: the offline check fails, naming the line.
    let text = std::fs::read_to_string(&export).unwrap();
    std::fs::write(&export, text.replacen("Acme", "Acmf", 1)).unwrap();
    let offline = Command::new(env!("CARGO_BIN_EXE_idemd"))
        .args(["verify-export", out])
        .output()
        .await
        .unwrap();
    assert_eq!(offline.status.code(), Some(1));
    assert!(
        String::from_utf8(offline.stdout)
            .unwrap()
            .starts_with("BROKEN at line 1")
    );
}
