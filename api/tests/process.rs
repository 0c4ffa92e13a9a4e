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
    spawn_with(data, &[]).await
}

/// `idemd serve` on a free port (returned) with `data`, logging at `info` to a pipe.
fn serve_command(data: &Path) -> (Command, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_idemd"));
    command
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .env_remove("IDEM_DATABASE_URL")
        .env("IDEM_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    (command, port)
}

/// [`spawn`] with more settings for `idemd serve`.
async fn spawn_with(data: &Path, settings: &[&str]) -> (Child, u16) {
    let (mut command, port) = serve_command(data);
    let mut child = command.args(settings).spawn().unwrap();
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

/// Stops idemd with SIGTERM, as an operator or systemd would, and checks it exits cleanly.
async fn terminate(mut child: Child) {
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = child.wait().await.unwrap();
    assert!(status.success(), "idemd exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (child, port) = spawn(dir.path()).await;
    assert_eq!(signup(port).await, 201);

    terminate(child).await;

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

/// With `IDEM_LOG_FORMAT=json` every line idemd logs is one JSON object, the request line
/// with its fields at the top level (request id, method, path, status); the signup's admin
/// email is in none of them. Any other format is refused at start, by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_request_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (mut command, port) = serve_command(dir.path());
    let mut child = command.env("IDEM_LOG_FORMAT", "json").spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut logged = Vec::new();
    while !logged
        .last()
        .is_some_and(|l: &serde_json::Value| l["message"] == "idemd listening")
    {
        let line = lines.next_line().await.unwrap().expect("idemd exited");
        logged.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")));
    }
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/signup"))
        .header("host", format!("localhost:{port}"))
        .header("x-request-id", "json-log-test")
        .json(&json!({"name": "acme", "display_name": "Acme", "admin_email": "a@acme.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let request = loop {
        let line = lines.next_line().await.unwrap().expect("idemd exited");
        assert!(
            !line.contains("a@acme.example"),
            "personal data logged: {line}"
        );
        let line: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if line["request_id"] == "json-log-test" {
            break line;
        }
        logged.push(line);
    };
    assert_eq!(request["message"], "request");
    assert_eq!(request["method"], "POST");
    assert_eq!(request["path"], "/api/v1/signup");
    assert_eq!(request["status"], 201);
    assert_eq!(request["level"], "INFO");
    for line in &logged {
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
        assert!(!line.to_string().contains("a@acme.example"), "{line}");
    }
    child.kill().await.unwrap();

    let refused = Command::new(env!("CARGO_BIN_EXE_idemd"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("IDEM_LOG_FORMAT", "xml")
        .output()
        .await
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8(refused.stderr).unwrap();
    assert!(stderr.contains("IDEM_LOG_FORMAT"), "{stderr}");
}

/// A reader of idemd's stderr that stops reading (journald stalled, a full pipe) does not
/// stop the service: with nobody reading, 20,000 requests, each logged, are all answered
/// (once the pipe and the log's queue are full, lines are dropped and counted); once read
/// again, every line that came out is whole, the dropped ones are reported, and the line
/// idemd logs as it stops comes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_reader_that_stops_reading_does_not_stop_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let (mut command, port) = serve_command(dir.path());
    let mut child = command.env("IDEM_LOG_FORMAT", "json").spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    while !lines
        .next_line()
        .await
        .unwrap()
        .expect("idemd exited")
        .contains("idemd listening")
    {}
    // From here on nobody reads the pipe.
    let http = reqwest::Client::new();
    let answered = tokio::time::timeout(std::time::Duration::from_secs(300), async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let http = http.clone();
            tasks.spawn(async move {
                for _ in 0..2_500 {
                    let answer = http
                        .get(format!("http://127.0.0.1:{port}/healthz"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(answer.status(), 200);
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    })
    .await;
    assert!(answered.is_ok(), "requests stalled behind the unread log");
    let metrics = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("idem_log_lines_dropped_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(dropped > 0, "20,000 lines fit nowhere unread: {dropped}");

    // Reading again, up to the report of the dropped lines: the log flows, and the buffer
    // that was full has been written out, so what idemd logs as it stops has room.
    let mut read = Vec::new();
    while !read
        .last()
        .is_some_and(|l: &String| l.contains("log lines dropped"))
    {
        read.push(lines.next_line().await.unwrap().expect("idemd exited"));
    }
    let reader = tokio::spawn(async move {
        let mut read = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            read.push(line);
        }
        read
    });
    terminate(child).await;
    read.extend(reader.await.unwrap());
    for line in &read {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    // The line idemd logs as it stops came out (the buffer was flushed at exit), after every
    // other line but, perhaps, the report of lines dropped just before.
    let stopped = read
        .iter()
        .position(|l| l.contains("\"idemd stopped\""))
        .expect("the buffer was flushed at exit");
    for line in &read[stopped + 1..] {
        assert!(line.contains("log lines dropped"), "{line}");
    }
    // The log says how many lines it lost, in one or more lines that add up to at least the
    // count /metrics gave before (more may have gone since).
    let said: u64 = read
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("log lines dropped"))
        })
        .map(|l| l["dropped"].as_u64().unwrap())
        .sum();
    assert!(said >= dropped, "{said} said, {dropped} counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_replays_the_read_models_online_and_while_idemd_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = spawn(dir.path()).await;
    assert_eq!(signup(port).await, 201);
    let rebuild = || {
        Command::new(env!("CARGO_BIN_EXE_idemd"))
            .args(["rebuild", "--data-dir"])
            .arg(dir.path())
            .env_remove("IDEM_DATABASE_URL")
            .output()
    };
    let sqlite_files = || {
        let mut files: Vec<String> = std::fs::read_dir(dir.path().join("readmodels"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.ends_with(".sqlite"))
            .collect();
        files.sort();
        files
    };
    // `idemd rebuild` succeeds and says so, and the files are the new generation's.
    let rebuilds_into = |generation: u64| async move {
        let rebuilt = rebuild().await.unwrap();
        assert!(rebuilt.status.success(), "{rebuilt:?}");
        let stdout = String::from_utf8(rebuilt.stdout).unwrap();
        for projection in ["directory", "audit"] {
            assert!(
                stdout.contains(&format!(
                    "{projection}: rebuilt into generation {generation}"
                )),
                "{stdout}"
            );
        }
        assert_eq!(
            sqlite_files(),
            vec![
                format!("audit.g{generation}.sqlite"),
                format!("directory.g{generation}.sqlite")
            ]
        );
    };
    // The tenant's host resolves through the served generation (a host it did not know
    // would be "no tenant is served at ...").
    let acme_resolves = |port: u16| async move {
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
    };

    // While idemd runs, it rebuilds itself: new generations swapped in, service going on.
    rebuilds_into(2).await;
    acme_resolves(port).await;

    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(child.wait().await.unwrap().success());

    rebuilds_into(3).await;

    // The rebuilt generation serves.
    let (mut child, port) = spawn(dir.path()).await;
    acme_resolves(port).await;
    let unknown = Command::new(env!("CARGO_BIN_EXE_idemd"))
        .args(["rebuild", "everything", "--data-dir"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    child.kill().await.unwrap();
    child.wait().await.unwrap();

    // Each rebuild, online or not, is in the operator log, which `idemd verify` checks with
    // the tenants' logs and names apart from them.
    let (code, exported) = idemd(&["export", "operator"], dir.path()).await;
    assert_eq!(code, 0);
    let mut rebuilt: Vec<(String, u64, String)> = exported
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(event["type"], "ReadModelsRebuilt", "{event}");
            (
                event["data"]["projection"].as_str().unwrap().to_owned(),
                event["data"]["generation"].as_u64().unwrap(),
                event["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    rebuilt.sort();
    // Who ran the rebuilds (online through the socket, and offline): this test's user, as
    // idemd and its commands are this process's children.
    let operator = || api::operator_identity::OperatorIdentity::of_this_process().actor();
    let uid = rustix::process::getuid().as_raw();
    assert!(
        operator().starts_with(&format!("operator:uid={uid}")),
        "{}",
        operator()
    );
    assert_eq!(
        rebuilt,
        vec![
            ("audit".to_owned(), 2, operator()),
            ("audit".to_owned(), 3, operator()),
            ("directory".to_owned(), 2, operator()),
            ("directory".to_owned(), 3, operator()),
        ]
    );
    let (code, verified) = idemd(&["verify"], dir.path()).await;
    assert_eq!(code, 0, "{verified}");
    assert!(verified.contains("operator\tvalid\t4 events"), "{verified}");
    assert_eq!(
        verified.lines().count(),
        2,
        "acme and the operator log: {verified}"
    );
    // It has no state to replay as a tenant has.
    let (code, _, error) = idemd_with_errors(
        &["state", "operator", "--at", "2030-01-01T00:00:00Z"],
        dir.path(),
    )
    .await;
    assert_eq!(code, 1);
    assert!(error.contains("idemd export operator"), "{error}");
}

/// Runs `idemd ARGS` to completion: its exit code and standard output.
async fn idemd(args: &[&str], data: &Path) -> (i32, String) {
    let (code, stdout, _) = idemd_with_errors(args, data).await;
    (code, stdout)
}

/// An operator command's exit code, standard output and standard error.
async fn idemd_with_errors(args: &[&str], data: &Path) -> (i32, String, String) {
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
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_exports_verifies_offline_and_replays_a_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = spawn(dir.path()).await;
    assert_eq!(signup(port).await, 201);
    // While the service runs, through its control socket.
    let export = dir.path().join("acme.ndjson");
    let out = export.to_str().unwrap();
    let (code, _, err) = idemd_with_errors(&["export", "acme", "--out", out], dir.path()).await;
    assert_eq!(code, 0, "{err}");
    let online = std::fs::read_to_string(&export).unwrap();
    let (code, online_report) = idemd(&["verify"], dir.path()).await;
    assert_eq!(code, 0);
    let at = ["state", "acme", "--at", "2100-01-01T00:00:00Z"];
    let (code, online_state) = idemd(&at, dir.path()).await;
    assert_eq!(code, 0);
    let (code, _, err) = idemd_with_errors(&["export", "globex"], dir.path()).await;
    assert_eq!(code, 1);
    assert!(err.contains("no tenant is named \"globex\""), "{err}");
    child.kill().await.unwrap();
    child.wait().await.unwrap();

    // Stopped: the same commands open the log themselves, and find the same.
    let (code, _) = idemd(&["export", "acme", "--out", out], dir.path()).await;
    assert_eq!(code, 0);
    assert_eq!(std::fs::read_to_string(&export).unwrap(), online);
    assert_eq!(idemd(&["verify"], dir.path()).await, (0, online_report));
    assert_eq!(idemd(&at, dir.path()).await, (0, online_state));
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

/// Whether the tenant named `name` exists as the service sees it: its host answers (401 to an
/// anonymous `/api/v1/me`) rather than 404.
async fn tenant_visible(http: &reqwest::Client, port: u16, name: &str) -> bool {
    let status = http
        .get(format!("http://127.0.0.1:{port}/api/v1/me"))
        .header("host", format!("{name}.localhost:{port}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert!(matches!(status, 401 | 404), "{name}: {status}");
    status == 401
}

/// What `/readyz` says: the log's head, the read models' lag, ...
async fn readiness(http: &reqwest::Client, port: u16) -> serde_json::Value {
    http.get(format!("http://127.0.0.1:{port}/readyz"))
        .header("host", format!("localhost:{port}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until the read models hold every event of the log (`/readyz` reports no lag).
async fn projected(http: &reqwest::Client, port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let ready = readiness(http, port).await;
        if ready["lag"] == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "read models still behind: {ready}"
        );
        // A poll interval, not a guess at timing: the loop ends on the condition.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Signups (each a new tenant stream, its host label reserved and its read models written)
/// from four clients at once, idemd killed with SIGKILL at a random moment, restarted: every
/// acknowledged signup is there, in the log (its name is taken) and in the read models (its
/// host answers); every signup in flight at the kill is either all there or not at all; and
/// at the end every chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_write_and_leaves_none_half_done() {
    use rand::Rng;
    const ROUNDS: usize = 12;
    const WRITERS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut acknowledged: Vec<String> = Vec::new();
    let mut in_flight: Vec<String> = Vec::new();
    let mut killed_mid_write = 0;
    for round in 0..=ROUNDS {
        let (mut child, port) = spawn(dir.path()).await;
        projected(&http, port).await;
        for name in &acknowledged {
            assert!(
                tenant_visible(&http, port, name).await,
                "acknowledged {name} lost (round {round})"
            );
        }
        // A signup the kill interrupted: its name is taken exactly when its tenant exists.
        for name in in_flight.drain(..) {
            let visible = tenant_visible(&http, port, &name).await;
            let again = http
                .post(format!("http://127.0.0.1:{port}/api/v1/signup"))
                .header("host", format!("localhost:{port}"))
                .json(&json!({"name": name, "display_name": "Again", "admin_email": "b@x.example"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            assert_eq!(again, if visible { 409 } else { 201 }, "{name}");
            acknowledged.push(name);
        }
        if round == ROUNDS {
            child.kill().await.unwrap();
            break;
        }

        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let http = http.clone();
                tokio::spawn(async move {
                    let (mut done, mut sent) = (Vec::new(), None);
                    for n in 0.. {
                        let name = format!("k{round}w{writer}n{n}");
                        sent = Some(name.clone());
                        let answer = http
                            .post(format!("http://127.0.0.1:{port}/api/v1/signup"))
                            .header("host", format!("localhost:{port}"))
                            .json(&json!({"name": name, "display_name": "K", "admin_email": "a@k.example"}))
                            .send()
                            .await;
                        match answer {
                            Ok(answer) if answer.status() == 201 => done.push(name),
                            Ok(answer) => panic!("{name}: {}", answer.status()),
                            Err(_) => break,
                        }
                    }
                    (done, sent)
                })
            })
            .collect();
        let wait = rand::rng().random_range(20..300);
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        for writer in writers {
            let (done, sent) = writer.await.unwrap();
            if sent.as_ref() != done.last() {
                killed_mid_write += 1;
                in_flight.extend(sent);
            }
            acknowledged.extend(done);
        }
    }
    assert!(
        acknowledged.len() > ROUNDS * WRITERS,
        "too few writes to mean anything: {}",
        acknowledged.len()
    );
    // Each writer had a request out when the process died, nearly always.
    assert!(killed_mid_write > 0);
    eprintln!(
        "{} signups over {ROUNDS} kills, {killed_mid_write} of them in flight at a kill",
        acknowledged.len()
    );
    let (code, report) = idemd(&["verify"], dir.path()).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report.matches("\tvalid\t").count(), acknowledged.len());
}

/// Copies the directory `from` into `to`, recursively (files and directories only).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The README's backup: with idemd stopped, `log/` and the root key are all it takes; in an
/// empty data directory they bring back every tenant, the read models projected anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_and_the_root_key_restore_a_stopped_service() {
    let dir = tempfile::tempdir().unwrap();
    let (child, port) = spawn(dir.path()).await;
    assert_eq!(signup(port).await, 201);
    terminate(child).await;

    let restored = tempfile::tempdir().unwrap();
    copy_dir(&dir.path().join("log"), &restored.path().join("log"));
    std::fs::copy(
        dir.path().join("root.key"),
        restored.path().join("root.key"),
    )
    .unwrap();
    assert!(!restored.path().join("readmodels").exists());
    let (mut child, port) = spawn(restored.path()).await;
    let http = reqwest::Client::new();
    projected(&http, port).await;
    assert!(tenant_visible(&http, port, "acme").await);
    assert_eq!(signup(port).await, 409);
    child.kill().await.unwrap();
}

/// Mails the development mailer has written so far, as text.
fn mails(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("mail"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .map(|p| std::fs::read_to_string(p).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// With public signup closed, the operator creates MSP tenants with `idemd signup` through
/// the running service's control socket: the tenant is served, its admin gets the onboarding
/// mail, the log records the operator as actor, and bad input is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_signs_up_tenants_through_the_control_socket_while_signup_is_closed() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let (child, port) = spawn_with(dir.path(), &["--signup", "closed"]).await;
    assert_eq!(signup(port).await, 404, "public signup is closed");
    let socket = dir.path().join("control.sock");
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let create = [
        "signup",
        "acme",
        "--display-name",
        "Acme",
        "--admin-email",
        "a@acme.example",
    ];
    let (code, out, err) = idemd_with_errors(&create, dir.path()).await;
    assert_eq!(code, 0, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["tenant"]["name"], "acme");
    assert_eq!(created["admin"]["email"], "a@acme.example");
    let http = reqwest::Client::new();
    projected(&http, port).await;
    assert!(tenant_visible(&http, port, "acme").await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !mails(dir.path())
        .iter()
        .any(|m| m.contains("To: a@acme.example") && m.contains("Code: "))
    {
        assert!(std::time::Instant::now() < deadline, "no onboarding mail");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    // The same name again, and a bad address: refused, with the reason, nothing written.
    let before = readiness(&http, port).await["head"].clone();
    let (code, _, err) = idemd_with_errors(&create, dir.path()).await;
    assert_eq!(code, 1);
    assert!(err.contains("acme"), "{err}");
    let bad = [
        "signup",
        "globex",
        "--display-name",
        "Globex",
        "--admin-email",
        "not an address",
    ];
    let (code, _, err) = idemd_with_errors(&bad, dir.path()).await;
    assert_eq!(code, 1);
    assert!(err.contains("admin_email"), "{err}");
    assert_eq!(
        readiness(&http, port).await["head"],
        before,
        "a refused signup writes nothing"
    );
    assert!(!tenant_visible(&http, port, "globex").await);

    terminate(child).await;
    assert!(!socket.exists(), "the socket goes with the service");
    let (code, _, err) = idemd_with_errors(&create, dir.path()).await;
    assert_eq!(code, 1);
    assert!(err.contains("not running"), "{err}");
    let (code, export) = idemd(&["export", "acme"], dir.path()).await;
    assert_eq!(code, 0);
    // Plain `operator`: the tenant's admins read this in their audit, and who of the
    // deployment's Unix users ran the command is not theirs to see.
    assert!(
        export.lines().all(|l| l.contains(r#""actor":"operator""#)),
        "{export}"
    );
}

/// `idemd backup` while the service runs and four clients sign up tenants: `idemd restore`
/// of the copy, with the root key, gives a service holding every tenant acknowledged before
/// the backup began, each whole; with the service stopped the same command copies the log
/// directly; a directory already there is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_restores_every_tenant_acknowledged_before_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let apart = tempfile::tempdir().unwrap();
    let mirror = apart.path().join("keys.json");
    let mirror = mirror.to_str().unwrap();
    let (child, port) = spawn_with(dir.path(), &["--key-mirror", mirror]).await;
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..4 {
        let (acknowledged, stop) = (Arc::clone(&acknowledged), Arc::clone(&stop));
        writers.spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("t{writer}x{n}");
                let status = http
                    .post(format!("http://127.0.0.1:{port}/api/v1/signup"))
                    .header("host", format!("localhost:{port}"))
                    .json(&json!({"name": name, "display_name": name,
                                  "admin_email": format!("a@{name}.example")}))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, 201);
                acknowledged.lock().unwrap().push(name);
                n += 1;
            }
        });
    }
    while acknowledged.lock().unwrap().len() < 40 {
        tokio::task::yield_now().await;
    }
    let before: Vec<String> = acknowledged.lock().unwrap().clone();
    let online = dir.path().join("backups").join("online");
    let (code, out, err) = idemd_with_errors(
        &["backup", online.to_str().unwrap(), "--key-mirror", mirror],
        dir.path(),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("backed up the log up to position"), "{out}");
    assert!(
        out.contains(&format!("the key mirror {mirror} holds")),
        "{out}"
    );
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let all: Vec<String> = acknowledged.lock().unwrap().clone();
    assert!(
        all.len() > before.len(),
        "signups went on around the backup"
    );
    // Refused: the directory exists now.
    let (code, _, err) = idemd_with_errors(&["backup", online.to_str().unwrap()], dir.path()).await;
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    terminate(child).await;

    // Stopped: the same command copies the log itself; without a key mirror it refuses.
    let offline = dir.path().join("backups").join("offline");
    let (code, _, err) =
        idemd_with_errors(&["backup", offline.to_str().unwrap()], dir.path()).await;
    assert_eq!(code, 1);
    assert!(err.contains("IDEM_KEY_MIRROR"), "{err}");
    let (code, _, err) = idemd_with_errors(
        &["backup", offline.to_str().unwrap(), "--key-mirror", mirror],
        dir.path(),
    )
    .await;
    assert_eq!(code, 0, "{err}");

    for (backup, expected) in [(&online, &before), (&offline, &all)] {
        let restored = tempfile::tempdir().unwrap();
        std::fs::copy(
            dir.path().join("root.key"),
            restored.path().join("root.key"),
        )
        .unwrap();
        let (code, out, err) = idemd_with_errors(
            &["restore", backup.to_str().unwrap(), "--key-mirror", mirror],
            restored.path(),
        )
        .await;
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("restored the log up to position"), "{out}");
        let (child, port) = spawn(restored.path()).await;
        let http = reqwest::Client::new();
        projected(&http, port).await;
        for name in expected.iter() {
            assert!(tenant_visible(&http, port, name).await, "{name} is missing");
        }
        // The signups acknowledged while the backup ran may or may not be in it, but each is
        // whole: served if and only if its name is taken.
        for name in all.iter().filter(|name| !expected.contains(name)) {
            let visible = tenant_visible(&http, port, name).await;
            let again = http
                .post(format!("http://127.0.0.1:{port}/api/v1/signup"))
                .header("host", format!("localhost:{port}"))
                .json(&json!({"name": name, "display_name": name, "admin_email": "b@x.example"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            assert_eq!(again, if visible { 409 } else { 201 }, "{name}");
        }
        terminate(child).await;
        let (code, report) = idemd(&["verify"], restored.path()).await;
        assert_eq!(code, 0, "{report}");
    }
}
