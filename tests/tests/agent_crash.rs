//! The agent killed with SIGKILL at random moments mid-sync, while the directory keeps
//! changing, and restarted each time: it converges to exactly the directory's state, and the
//! local accounts match it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use agent::accounts::{FileAccounts, LocalAccounts};
use agent::desktop::{self, Agent};
use harness::Platform;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Rounds of kill and restart (`IDEM_AGENT_CRASH_ROUNDS` to change).
fn rounds() -> usize {
    std::env::var("IDEM_AGENT_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(12)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_agent_converges_to_the_directory() {
    let platform = Platform::start().await;
    let (phone, _) = platform.acme_with_contoso("alice@acme.example").await;
    let host = "contoso-acme";
    let admin = platform.login(&phone, host).await;
    let add = |username: String| {
        platform
            .as_user(&admin, Method::POST, host, "/api/v1/users")
            .json(
                &json!({"first_name": "U", "last_name": "U", "username": username,
                          "email": "u@contoso.example"}),
            )
            .send()
    };
    let mut ids = Vec::new();
    for n in 0..40 {
        let answer: Value = add(format!("user{n}")).await.unwrap().json().await.unwrap();
        ids.push(answer["id"].as_str().unwrap().to_owned());
    }

    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("agent");
    let accounts_file = work.path().join("accounts.json");
    // Every user has a local account already, as if each had logged in once.
    let mut accounts = FileAccounts::new(&accounts_file);
    for n in 0..40 {
        accounts.create(&format!("user{n}"), "U").unwrap();
    }
    let (_, token) = Platform::call(platform.as_user(
        &admin,
        Method::POST,
        host,
        "/api/v1/agent/enrollment-tokens",
    ))
    .await;
    desktop::enroll(
        &state,
        &platform.url(host),
        token["token"].as_str().unwrap(),
        "WS-01",
    )
    .await
    .unwrap();

    let mut next_user = 40;
    for round in 0..rounds() {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-child"))
            .arg(&state)
            .arg(&accounts_file)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Changes while it runs: new users, some disabled, some enabled again, some deleted.
        for k in 0..3 {
            add(format!("user{next_user}")).await.unwrap();
            next_user += 1;
            let id = &ids[(round * 3 + k) % ids.len()];
            let enabled = (round + k) % 2 == 0;
            platform
                .as_user(&admin, Method::PATCH, host, &format!("/api/v1/users/{id}"))
                .json(&json!({"enabled": enabled}))
                .send()
                .await
                .unwrap();
        }
        if round % 4 == 3 {
            let id = ids.remove(round % ids.len());
            platform
                .as_user(&admin, Method::DELETE, host, &format!("/api/v1/users/{id}"))
                .send()
                .await
                .unwrap();
        }
        // Kill it after a random number of applied pages (0 to 2): sometimes mid-page.
        let pages = rand::random_range(0..3);
        for _ in 0..pages {
            if tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                .await
                .is_err()
            {
                break;
            }
        }
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }

    // Restarted once more, it catches up; its cache is the directory, and so are the accounts.
    let mut agent = Agent::open(&state, FileAccounts::new(&accounts_file)).unwrap();
    while agent.sync_once(Duration::ZERO).await.unwrap() > 0 {}
    let (_, users) =
        Platform::call(platform.as_user(&admin, Method::GET, host, "/api/v1/users")).await;
    let mut directory: Vec<(String, bool)> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["username"].as_str().unwrap().to_owned(),
                u["enabled"].as_bool().unwrap(),
            )
        })
        .collect();
    directory.sort();
    let mut cached: Vec<(String, bool)> = agent
        .state
        .users
        .values()
        .map(|u| (u.username.clone(), u.enabled))
        .collect();
    cached.sort();
    assert_eq!(cached, directory);
    // A fresh agent's snapshot agrees.
    let (_, token) = Platform::call(platform.as_user(
        &admin,
        Method::POST,
        host,
        "/api/v1/agent/enrollment-tokens",
    ))
    .await;
    let fresh_state = work.path().join("fresh");
    desktop::enroll(
        &fresh_state,
        &platform.url(host),
        token["token"].as_str().unwrap(),
        "WS-02",
    )
    .await
    .unwrap();
    let mut fresh = Agent::open(
        &fresh_state,
        FileAccounts::new(work.path().join("fresh.json")),
    )
    .unwrap();
    while fresh.sync_once(Duration::ZERO).await.unwrap() > 0 {}
    assert_eq!(fresh.state.users, agent.state.users);
    // Local accounts: disabled exactly when their user is disabled or gone.
    for n in 0..40 {
        let name = format!("user{n}");
        let account = agent.accounts.find(&name).unwrap().unwrap();
        let active = directory.iter().any(|(u, enabled)| *u == name && *enabled);
        assert_eq!(account.disabled, !active, "{name}");
    }
    platform.server.shutdown().await;
}
