//! The README's walkthrough, run as written: the quick start (the MSP portal and steps 1 to 5),
//! the customer's directory (step 6) and the desktop agent (steps 7 to 9), with curl, jq, the
//! software authenticator and a real `idem-agent` on a throwaway system root, against a real
//! idemd. Only its port and scratch paths are replaced. A README that drifts from the service
//! (a renamed field, a command in the wrong order, a key for the wrong phone) fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use agent::accounts::{LinuxAccounts, LocalAccounts};
use harness::Platform;

/// The sections of the README whose `sh` blocks make up the walkthrough, in order.
const SECTIONS: [&str; 3] = [
    "## Quick start",
    "### The customer tenant's routes",
    "### The desktop agent",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every fenced `sh` block of `markdown`, with the heading of the section it is in.
fn sh_blocks(markdown: &str) -> Vec<(String, String)> {
    let (mut blocks, mut heading, mut block) = (Vec::new(), String::new(), None::<String>);
    for line in markdown.lines() {
        match &mut block {
            Some(text) if line.starts_with("```") => {
                blocks.push((heading.clone(), std::mem::take(text)));
                block = None;
            }
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
            None if line == "```sh" => block = Some(String::new()),
            None if line.starts_with('#') => heading = line.to_owned(),
            None => {}
        }
    }
    blocks
}

/// The walkthrough's script: the blocks of each section in order, without the line that
/// starts the service (the test runs it), with `port` for 8080 and `scratch` for the agent's
/// `/tmp` directories.
fn walkthrough(readme: &str, port: u16, scratch: &Path) -> String {
    let blocks = sh_blocks(readme);
    let mut script = String::from("set -euo pipefail\n");
    for section in SECTIONS {
        let texts: Vec<&String> = blocks
            .iter()
            .filter(|(heading, _)| heading == section)
            .map(|(_, text)| text)
            .collect();
        assert!(!texts.is_empty(), "README: no sh block under {section:?}");
        for line in texts
            .iter()
            .flat_map(|text| text.lines())
            .filter(|l| !l.starts_with("scripts/serve"))
        {
            script.push_str(line);
            script.push('\n');
        }
    }
    script
        .replace("8080", &port.to_string())
        .replace("/tmp/ws1", &scratch.join("ws1").display().to_string())
}

/// Builds the client programs (the README runs them through `scripts/agent` and
/// `scripts/authenticator`) in this test's profile; the directory they are in.
fn client_programs() -> PathBuf {
    let profile_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf();
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo
        .current_dir(workspace())
        .args(["build", "--locked", "-q", "-p", "idem-agent", "--bins"]);
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        cargo.arg("--release");
    }
    let status = cargo.status().unwrap();
    assert!(status.success(), "building idem-agent's programs: {status}");
    profile_dir
}

/// The directory the walkthrough runs in: `data` is the service's data directory (the
/// development mailer's codes are under `data/mail`), `scripts/` runs the programs just built,
/// `home` is `~` (the authenticator's keys), and the branding step's two images are there (a
/// PNG named `.jpg`: images are known by their bytes).
fn work_dir(root: &Path, data: &Path, programs: &Path) {
    let image = |top, bottom| harness::gradient_png(64, 48, top, bottom);
    std::fs::write(
        root.join("wallpaper.jpg"),
        image([20, 40, 90], [90, 140, 200]),
    )
    .unwrap();
    std::fs::write(root.join("logo.png"), image([200, 60, 40], [250, 200, 60])).unwrap();
    std::os::unix::fs::symlink(data, root.join("data")).unwrap();
    std::fs::create_dir_all(root.join("home")).unwrap();
    let scripts = root.join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    for (script, program) in [
        ("agent", "idem-agent"),
        ("authenticator", "idem-authenticator"),
    ] {
        let path = scripts.join(script);
        let text = format!(
            "#!/bin/sh\nexec '{}' \"$@\"\n",
            programs.join(program).display()
        );
        std::fs::write(&path, text).unwrap();
        let mut permissions = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&path, permissions).unwrap();
    }
}

/// The problem documents (`{"type", "title", "status", "detail"}`) in the output, as
/// (status, detail).
fn problems(output: &str) -> Vec<(u64, String)> {
    let mut found = Vec::new();
    let mut rest = output;
    while let Some(at) = rest.find("{\"type\":") {
        let mut values =
            serde_json::Deserializer::from_str(&rest[at..]).into_iter::<serde_json::Value>();
        match values.next() {
            Some(Ok(problem)) => {
                if let Some(status) = problem["status"].as_u64() {
                    let detail = problem["detail"].as_str().unwrap_or_default().to_owned();
                    found.push((status, detail));
                }
                rest = &rest[at + values.byte_offset()..];
            }
            _ => rest = &rest[at + 1..],
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let programs = client_programs();
    let platform = Platform::start().await;
    let scratch = tempfile::tempdir().unwrap();
    work_dir(scratch.path(), &platform.dir, &programs);
    let script = walkthrough(&readme, platform.port(), scratch.path());

    let run = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(scratch.path())
        .env("HOME", scratch.path().join("home"))
        .env_remove("IDEM_AUTHENTICATOR_KEYS")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    // A guard against a hang (the walkthrough takes seconds), not a measurement.
    let run = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("the walkthrough hung")
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{}\n{output}", run.status);

    // The one refusal the walkthrough shows on purpose: Bob's session after his delegation
    // to Contoso was revoked. Any other problem is a step that went wrong.
    assert_eq!(
        problems(&output),
        vec![(
            401,
            "your access to this tenant has been revoked".to_owned()
        )],
        "{output}"
    );
    // On standard error, which the output has after standard out.
    assert!(
        output.contains("the password is a temporary one"),
        "{output}"
    );
    let mut rest = output.as_str();
    for step in [
        "enrolled device",
        "for alice@acme.example",
        "\"roles\":[\"admin\"]",
        "enrolled device",
        "for bob@acme.example",
        "\"name\":\"contoso\"",
        "\"via\":[\"delegation\"]",
        "303 See Other",
        "\"roles\":[\"technician\"]",
        "{\"source\":\"local\"}",
        "\"key_version\":1",
        "\"username\":\"billy\"",
        "\"username\":\"idem-admin\"",
        "Welcome to Contoso",
        "enrolled as device",
        "welcome: billy (create)",
        "welcome: billy (takeover)",
        "password changed",
        "welcome: billy (takeover)",
        "idem://approve?",
        "elevated access: account idem-admin, password ",
        "shared account: idem-admin",
        "branding version: 1",
    ] {
        let at = rest
            .find(step)
            .unwrap_or_else(|| panic!("{step:?} missing (or out of order) in:\n{output}"));
        rest = &rest[at + step.len()..];
    }

    // The workstation's accounts: Billy's, created at his login, and the shared admin
    // account, created by the elevation, each with a SHA-512 crypt hash.
    let root = scratch.path().join("ws1-root/etc");
    let passwd = std::fs::read_to_string(root.join("passwd")).unwrap();
    let shadow = std::fs::read_to_string(root.join("shadow")).unwrap();
    for account in ["billy", "idem-admin"] {
        assert!(
            passwd
                .lines()
                .any(|l| l.starts_with(&format!("{account}:"))),
            "{account} not in passwd:\n{passwd}"
        );
        assert!(
            shadow
                .lines()
                .any(|l| l.starts_with(&format!("{account}:$6$"))),
            "{account} has no password in shadow"
        );
    }
    // Billy's is the password he chose last, and no other.
    let accounts = LinuxAccounts::new(scratch.path().join("ws1-root"));
    for (password, his) in [
        ("Billys-Own-Password-3", true),
        ("Billys-Own-Password-2", false),
        ("Temporary-Password-1", false),
        ("Correct-Horse-Battery-42", false),
    ] {
        assert_eq!(
            accounts.check_password("billy", password).unwrap(),
            his,
            "{password}"
        );
    }
}
