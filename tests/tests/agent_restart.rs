//! The server restarts while an agent long-polls its change feed: the poll ends promptly at
//! shutdown (not after its wait), the agent comes back to the restarted server, and misses
//! nothing. Alone in its test binary, as the restart reuses the port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use agent::accounts::FileAccounts;
use agent::desktop::{self, Agent};
use harness::Platform;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_reconnect_after_a_restart_and_miss_nothing() {
    let platform = Platform::start().await;
    let (phone, _) = platform.acme_with_contoso("alice@acme.example").await;
    let host = "contoso-acme";
    let admin = platform.login(&phone, host).await;
    let add = |platform: &Platform, username: &str| {
        platform
            .as_user(&admin, Method::POST, host, "/api/v1/users")
            .json(
                &json!({"first_name": "U", "last_name": "U", "username": username,
                          "email": format!("{username}@contoso.example")}),
            )
            .send()
    };
    let (_, token) = Platform::call(platform.as_user(
        &admin,
        Method::POST,
        host,
        "/api/v1/agent/enrollment-tokens",
    ))
    .await;
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("agent");
    desktop::enroll(
        &state,
        &platform.url(host),
        token["token"].as_str().unwrap(),
        "WS-01",
    )
    .await
    .unwrap();
    let mut agent =
        Agent::open(&state, FileAccounts::new(work.path().join("accounts.json"))).unwrap();
    while agent.sync_once(Duration::ZERO).await.unwrap() > 0 {}

    // A long-poll waiting when the server stops ends at once, not after its 50 s.
    let polling = tokio::spawn(async move {
        let started = Instant::now();
        let result = agent.sync_once(Duration::from_secs(50)).await.map(|_| ());
        (agent, result, started.elapsed())
    });
    // Once the poll is waiting on the feed, restart.
    while platform.server.waiting_long_polls() == 0 {
        tokio::task::yield_now().await;
    }
    let platform = platform.restart_in_place().await;
    let (mut agent, _, waited) = polling.await.unwrap();
    assert!(
        waited < Duration::from_secs(40),
        "the poll ended with the server: {waited:?}"
    );

    // Changes made after the restart, and one made while the agent was away, all arrive.
    assert_eq!(add(&platform, "eve").await.unwrap().status(), 201);
    let next = tokio::spawn(async move {
        let mut seen = 0;
        while !agent.state.users.values().any(|u| u.username == "frank") {
            seen += agent.sync_once(Duration::from_secs(20)).await.unwrap();
        }
        (agent, seen)
    });
    assert_eq!(add(&platform, "frank").await.unwrap().status(), 201);
    let (agent, _) = tokio::time::timeout(Duration::from_secs(60), next)
        .await
        .unwrap()
        .unwrap();
    let names: Vec<&str> = agent
        .state
        .users
        .values()
        .map(|u| u.username.as_str())
        .collect();
    assert!(
        names.contains(&"eve") && names.contains(&"frank"),
        "{names:?}"
    );
    platform.server.shutdown().await;
}
