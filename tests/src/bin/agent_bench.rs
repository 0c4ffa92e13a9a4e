//! `agent-bench`: idemd (the release binary, as a child process) under desktop agents' load.
//!
//! 1. N agents (default 1,000) long-poll the change feed, all on one tenant, then spread over
//!    T tenants (default 100). A writer commits changes one at a time; each agent records when
//!    it receives each one. Printed: latency from the write's acknowledgement (and from its
//!    request) to receipt, p50 and p99, and the server's memory per idle long-polling agent
//!    (its RSS with the agents waiting, minus before, divided by N).
//! 2. While the first run's agents long-poll their tenant's feed again (as a customer's
//!    workstations do while its users log in), password logins through
//!    `POST /api/v1/agent/login` at 8 × CPUs concurrent requests,
//!    against the raw argon2id verification rate with the same parameters measured in this
//!    process on every CPU, just before and just after (logins alone for S seconds; this
//!    machine's speed drifts, so the ratio is printed against both and judged on the lower),
//!    then the p99 of a read route while a
//!    second wave of logins saturates the CPU (the probe's own requests are kept out of the
//!    login rate).
//!
//! Run with `scripts/bench agents [--agents N] [--tenants T] [--changes C] [--seconds S]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::authenticator::{self, Keyring};
use domain::crypto::{Argon2Params, HashMemory, PasswordVerifier};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

struct Options {
    agents: usize,
    tenants: usize,
    changes: usize,
    seconds: u64,
}

fn options() -> Options {
    let mut o = Options {
        agents: 1000,
        tenants: 100,
        changes: 50,
        seconds: 10,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse::<usize>().ok());
        match (pair[0].as_str(), value) {
            ("--agents", Some(v)) => o.agents = v.max(1),
            ("--tenants", Some(v)) => o.tenants = v.max(1),
            ("--changes", Some(v)) => o.changes = v.max(1),
            ("--seconds", Some(v)) => o.seconds = v as u64,
            _ => {
                eprintln!(
                    "usage: agent-bench [--agents N] [--tenants T] [--changes C] [--seconds S]"
                );
                std::process::exit(2);
            }
        }
    }
    o
}

/// When each change reached the agents, by username, and the change the writer waits for.
#[derive(Default)]
struct Received {
    progress: Mutex<Progress>,
    complete: tokio::sync::Notify,
}

#[derive(Default)]
struct Progress {
    at: HashMap<String, Vec<Instant>>,
    /// The change the writer waits for and how many agents must have it.
    awaited: Option<(String, usize)>,
}

impl Received {
    fn record(&self, username: &str, at: Instant) {
        let mut progress = self.progress.lock().unwrap();
        let times = progress.at.entry(username.to_owned()).or_default();
        times.push(at);
        let count = times.len();
        if progress
            .awaited
            .as_ref()
            .is_some_and(|(name, wanted)| name == username && count >= *wanted)
        {
            progress.awaited = None;
            self.complete.notify_one();
        }
    }

    /// Waits until `wanted` agents have `username` (or `limit` passes); their receipt times.
    async fn wait_for(&self, username: &str, wanted: usize, limit: Duration) -> Vec<Instant> {
        {
            let mut progress = self.progress.lock().unwrap();
            if progress.at.get(username).map_or(0, Vec::len) < wanted {
                progress.awaited = Some((username.to_owned(), wanted));
            } else {
                return progress.at[username].clone();
            }
        }
        let _ = tokio::time::timeout(limit, self.complete.notified()).await;
        let mut progress = self.progress.lock().unwrap();
        progress.awaited = None;
        progress.at.get(username).cloned().unwrap_or_default()
    }
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let index = ((values.len() as f64 * p).ceil() as usize).clamp(1, values.len()) - 1;
    values[index]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used so far, from /proc (`self` or a pid).
fn cpu_time(process: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat(5): 12 and 13 after the state field.
    let per_second = 100; // USER_HZ on Linux
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / per_second)
}

/// A client of the server at `port`, addressing tenant hosts by the Host header.
#[derive(Clone)]
struct Http {
    client: reqwest::Client,
    port: u16,
}

impl Http {
    fn request(&self, method: Method, label: &str, path: &str) -> reqwest::RequestBuilder {
        let host = if label.is_empty() {
            format!("localhost:{}", self.port)
        } else {
            format!("{label}.localhost:{}", self.port)
        };
        self.client
            .request(method, format!("http://127.0.0.1:{}{path}", self.port))
            .header("host", host)
    }

    async fn json(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let bytes = answer.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

fn newest_code(dir: &Path, email: &str) -> String {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("mail"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    files
        .iter()
        .rev()
        .find_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.contains(&format!("To: {email}")).then(|| {
                text.lines()
                    .find_map(|l| l.trim_end().strip_prefix("Code: "))
                    .unwrap()
                    .to_owned()
            })
        })
        .unwrap()
}

#[tokio::main]
async fn main() {
    let options = options();
    let idemd = std::env::var("IDEM_BENCH_IDEMD").expect("IDEM_BENCH_IDEMD: the idemd binary");
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(&idemd)
        .args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data.path())
        // Warnings only, unless IDEM_BENCH_LOG says otherwise (`info`, idemd's default, logs
        // a line per request: a line per delivery).
        .env(
            "IDEM_LOG",
            std::env::var("IDEM_BENCH_LOG").unwrap_or_else(|_| "warn,api::app=warn".into()),
        )
        // The per-account login limit would measure itself, not the logins.
        .env("IDEM_AGENT_LOGIN_RATE", "100000000")
        // Every simulated agent comes from 127.0.0.1: a thousand long-polls and the login
        // clients would pass the per-address cap meant for one office.
        .env("IDEM_MAX_CONNECTIONS_PER_ADDRESS", "1000000")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let http = Http {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(4096)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        port,
    };
    while http
        .request(Method::GET, "", "/healthz")
        .send()
        .await
        .is_err()
    {
        tokio::task::yield_now().await;
    }
    println!(
        "idemd (release, child process) on {} CPUs; {} agents, {} tenants, {} changes",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        options.agents,
        options.tenants,
        options.changes
    );

    // An MSP, its admin logged in with the authenticator, and the customers.
    http.json(
        http.request(Method::POST, "", "/api/v1/signup")
            .json(&json!({
        "name": "bench", "display_name": "Bench", "admin_email": "admin@bench.example"})),
    )
    .await;
    let mut phone = Keyring::default();
    let url = |label: &str| format!("http://{label}.localhost:{port}");
    authenticator::request_code(&url("bench"), "admin@bench.example")
        .await
        .unwrap();
    let code = newest_code(data.path(), "admin@bench.example");
    authenticator::enroll(
        &mut phone,
        &url("bench"),
        "admin@bench.example",
        &code,
        "bench",
    )
    .await
    .unwrap();
    let login = |label: String| {
        let (http, phone) = (http.clone(), &phone);
        async move {
            let (_, challenge) = http
                .json(
                    http.request(Method::POST, &label, "/api/v1/login/challenges")
                        .json(&json!({"purpose": "portal"})),
                )
                .await;
            authenticator::approve(phone, challenge["qr"].as_str().unwrap())
                .await
                .unwrap();
            let id = challenge["id"].as_str().unwrap();
            let (_, answer) = http
                .json(http.request(
                    Method::GET,
                    &label,
                    &format!("/api/v1/login/challenges/{id}"),
                ))
                .await;
            answer["token"].as_str().unwrap().to_owned()
        }
    };
    let msp = login("bench".into()).await;
    let mut tenants = Vec::new();
    for t in 0..options.tenants {
        let name = format!("c{t}");
        let (status, _) = http
            .json(
                http.request(Method::POST, "bench", "/api/v1/customers")
                    .bearer_auth(&msp)
                    .json(&json!({"name": name, "display_name": name})),
            )
            .await;
        assert_eq!(status, 201);
        let host = format!("{name}-bench");
        // Into each customer through the SSO hand-off (a phone approves 30 logins per quarter
        // hour at most).
        let (_, sso) = http
            .json(
                http.request(
                    Method::POST,
                    "bench",
                    &format!("/api/v1/customers/{name}/sso"),
                )
                .bearer_auth(&msp),
            )
            .await;
        let path = sso["url"]
            .as_str()
            .unwrap()
            .split_once(&format!(":{port}"))
            .unwrap()
            .1
            .to_owned();
        let opened = http
            .request(Method::GET, &host, &path)
            .send()
            .await
            .unwrap();
        let cookie = opened.headers()["set-cookie"].to_str().unwrap().to_owned();
        let admin = cookie
            .split(';')
            .next()
            .and_then(|c| c.strip_prefix("idem_session="))
            .unwrap()
            .to_owned();
        for (path, body) in [
            ("/api/v1/settings/master-key", json!({"enabled": true})),
            (
                "/api/v1/settings/desktop-login",
                json!({"enabled": true, "method": "password"}),
            ),
        ] {
            http.json(
                http.request(Method::PUT, &host, path)
                    .bearer_auth(&admin)
                    .json(&body),
            )
            .await;
        }
        tenants.push((host, admin));
    }

    // Enroll the agents: all on the first tenant for run 1, spread over every tenant for run 2.
    let enroll = |host: String, admin: String| {
        let http = http.clone();
        async move {
            let (_, token) = http
                .json(
                    http.request(Method::POST, &host, "/api/v1/agent/enrollment-tokens")
                        .bearer_auth(&admin),
                )
                .await;
            let (_, enrolled) = http
                .json(
                    http.request(Method::POST, &host, "/api/v1/agent/enroll")
                        .json(&json!({"enrollment_token": token["token"], "hostname": "bench"})),
                )
                .await;
            (host, enrolled["device_token"].as_str().unwrap().to_owned())
        }
    };
    // One tenant, then spread over all of them (once, if there is only one).
    let mut spreads = vec![1, options.tenants];
    spreads.dedup();
    let mut first_tenants_agents = Vec::new();
    for spread in spreads {
        let mut agents = Vec::new();
        for i in 0..options.agents {
            let (host, admin) = &tenants[i % spread];
            agents.push(enroll(host.clone(), admin.clone()).await);
        }
        run_feed(&http, pid, &agents, &tenants[..spread], options.changes).await;
        if spread == 1 {
            first_tenants_agents = agents;
        }
    }

    // Logins happen while the tenant's agents long-poll its feed, as at a customer's site.
    let waiting = start_agents(&http, &first_tenants_agents, &Arc::default()).await;
    println!(
        "logins with {} agents long-polling the same tenant's feed:",
        waiting.len()
    );
    run_logins(&http, &tenants[0], options.seconds).await;
    for task in waiting {
        task.abort();
    }
    child.kill().await.unwrap();
}

/// Agents long-poll; a writer commits `changes` user creations round-robin over `tenants`.
async fn run_feed(
    http: &Http,
    pid: u32,
    agents: &[(String, String)],
    tenants: &[(String, String)],
    changes: usize,
) {
    // Each agent starts from its tenant's current head (a snapshot first, then the cursor).
    let received: Arc<Received> = Arc::default();
    let rss_before = rss_kib(pid);
    let tasks = start_agents(http, agents, &received).await;
    // Every agent is now waiting (or about to): give the last requests a moment to arrive by
    // asking the server something and getting the answer.
    http.json(http.request(Method::GET, "", "/healthz")).await;
    let rss_waiting = rss_kib(pid);

    let (server_cpu, bench_cpu) = (cpu_time(&pid.to_string()), cpu_time("self"));
    let mut since_ack = Vec::new();
    let mut since_request = Vec::new();
    let agents_of = |host: &str| agents.iter().filter(|(h, _)| h == host).count();
    for n in 0..changes {
        let (host, admin) = &tenants[n % tenants.len()];
        let username = format!("u{}x{n}", tenants.len());
        let sent = Instant::now();
        let (status, _) = http
            .json(http.request(Method::POST, host, "/api/v1/users").bearer_auth(admin).json(&json!({
                "first_name": "U", "last_name": "U", "username": username, "email": "u@bench.example"})))
            .await;
        assert_eq!(status, 201);
        let acked = Instant::now();
        // Wait until every agent of that tenant has it (bounded), woken by the last one: a
        // writer spinning on the count would take a CPU from the agents and the server.
        let all = received
            .wait_for(&username, agents_of(host), Duration::from_secs(30))
            .await;
        for at in all {
            since_request.push(at.duration_since(sent).as_secs_f64() * 1000.0);
            since_ack.push(at.saturating_duration_since(acked).as_secs_f64() * 1000.0);
        }
    }
    let server_cpu = cpu_time(&pid.to_string()) - server_cpu;
    let bench_cpu = cpu_time("self") - bench_cpu;
    for task in tasks {
        task.abort();
    }
    let deliveries = since_ack.len();
    let per_delivery = |cpu: Duration| cpu.as_secs_f64() * 1e6 / deliveries.max(1) as f64;
    println!(
        "{} agents on {} tenant(s): {} deliveries of {} changes; from the write's acknowledgement p50 {:.2} ms p99 {:.2} ms; from its request p50 {:.2} ms p99 {:.2} ms; server RSS {} MiB idle → {} MiB with the agents waiting: {:.1} KiB per idle agent; CPU per delivery: server {:.0} µs, bench (agents and writer) {:.0} µs",
        agents.len(),
        tenants.len(),
        deliveries,
        changes,
        percentile(&mut since_ack, 0.5),
        percentile(&mut since_ack, 0.99),
        percentile(&mut since_request, 0.5),
        percentile(&mut since_request, 0.99),
        rss_before / 1024,
        rss_waiting / 1024,
        rss_waiting.saturating_sub(rss_before) as f64 / agents.len() as f64,
        per_delivery(server_cpu),
        per_delivery(bench_cpu),
    );
}

/// Starts `agents` long-polling their tenants' feeds, each recording in `received` when each
/// change reached it; answers once every agent has its snapshot and is about to wait.
async fn start_agents(
    http: &Http,
    agents: &[(String, String)],
    received: &Arc<Received>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    for (host, token) in agents {
        let (http, host, token, received, ready) = (
            http.clone(),
            host.clone(),
            token.clone(),
            received.clone(),
            ready.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (_, page) = http
                .json(
                    http.request(Method::GET, &host, "/api/v1/agent/changes")
                        .bearer_auth(&token),
                )
                .await;
            let mut cursor = page["next"].as_u64().unwrap();
            ready.add_permits(1);
            loop {
                let answer = http
                    .request(
                        Method::GET,
                        &host,
                        &format!("/api/v1/agent/changes?after={cursor}&wait=60"),
                    )
                    .bearer_auth(&token)
                    .send()
                    .await;
                let Ok(answer) = answer else { return };
                let at = Instant::now();
                let Ok(page) = answer.json::<Value>().await else {
                    return;
                };
                for change in page["changes"].as_array().into_iter().flatten() {
                    if let Some(name) = change["username"].as_str() {
                        received.record(name, at);
                    }
                }
                cursor = page["next"].as_u64().unwrap_or(cursor);
            }
        }));
    }
    let _ = ready.acquire_many(agents.len() as u32).await.unwrap();
    tasks
}

/// Password logins at 8 × CPUs concurrency against the raw argon2id rate, and a read route's
/// p99 meanwhile.
async fn run_logins(http: &Http, tenant: &(String, String), seconds: u64) {
    let (host, admin) = tenant;
    let password = "Correct-Horse-Battery-42";
    http.json(
        http.request(Method::POST, host, "/api/v1/users")
            .bearer_auth(admin)
            .json(&json!({
        "first_name": "L", "last_name": "L", "username": "loginbench", "email": "l@bench.example",
        "password": password})),
    )
    .await;
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let read_p99 = |label: &'static str| {
        let http = http.clone();
        let (host, admin) = (host.clone(), admin.clone());
        async move {
            let mut latencies = Vec::new();
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                let t = Instant::now();
                let (status, _) = http
                    .json(
                        http.request(Method::GET, &host, "/api/v1/settings/desktop-login")
                            .bearer_auth(&admin),
                    )
                    .await;
                assert_eq!(status, 200);
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let p50 = percentile(&mut latencies, 0.5);
            let p99 = percentile(&mut latencies, 0.99);
            println!(
                "read route {label}: p50 {p50:.2} ms, p99 {p99:.2} ms ({} requests)",
                latencies.len()
            );
        }
    };
    read_p99("idle").await;

    // Raw argon2id: every CPU verifying, same parameters, each thread keeping its working
    // memory between hashes as idemd's hashing threads do.
    let verifier = PasswordVerifier::create(password, [7; 16], Argon2Params::default()).unwrap();
    let raw_rate = || {
        let raw_until = Instant::now() + Duration::from_secs(seconds);
        let threads: Vec<_> = (0..cpus)
            .map(|_| {
                let verifier = verifier.clone();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    let mut memory = HashMemory::default();
                    while Instant::now() < raw_until {
                        assert!(verifier.verify_in(password, &mut memory).unwrap());
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let raw: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        raw as f64 / seconds as f64
    };
    let raw_before = raw_rate();

    // Logins through the route.
    let (_, token) = http
        .json(
            http.request(Method::POST, host, "/api/v1/agent/enrollment-tokens")
                .bearer_auth(admin),
        )
        .await;
    let (_, enrolled) = http
        .json(
            http.request(Method::POST, host, "/api/v1/agent/enroll")
                .json(&json!({"enrollment_token": token["token"], "hostname": "login-bench"})),
        )
        .await;
    let device = enrolled["device_token"].as_str().unwrap().to_owned();
    // Logins alone for the rate; then logins again while the read route is measured (the
    // probe's own requests would otherwise take CPU from the logins being counted).
    let load = |seconds: u64| {
        let until = Instant::now() + Duration::from_secs(seconds);
        (0..cpus * 8)
            .map(|_| {
                let (http, host, device) = (http.clone(), host.clone(), device.clone());
                tokio::spawn(async move {
                    let mut ok = 0u64;
                    while Instant::now() < until {
                        let (status, _) = http
                            .json(
                                http.request(Method::POST, &host, "/api/v1/agent/login")
                                    .bearer_auth(&device)
                                    .json(&json!({"username": "loginbench", "password": password})),
                            )
                            .await;
                        if status == 200 {
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect::<Vec<_>>()
    };
    let mut logins = 0;
    for task in load(seconds) {
        logins += task.await.unwrap();
    }
    let raw_after = raw_rate();
    let saturating = load(4);
    read_p99("while logins saturate the CPU").await;
    for task in saturating {
        task.await.unwrap();
    }
    let rate = logins as f64 / seconds as f64;
    let (before, after) = (rate / raw_before, rate / raw_after);
    println!(
        "password logins: {rate:.1}/s through POST /api/v1/agent/login; raw argon2id {raw_before:.1}/s before, {raw_after:.1}/s after, on {cpus} CPUs; ratio {before:.2} / {after:.2} (target >= 0.85: {})",
        if before.min(after) >= 0.85 {
            "meets"
        } else {
            "BELOW"
        }
    );
}
