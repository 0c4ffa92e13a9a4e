//! `http-bench`: idemd under load over real HTTP, in one run:
//! - `GET /api/v1/customers` of an MSP with N customers (default 1,000) at C connections
//!   (default 64), beside `GET /healthz` of the same server: requests/s and latency
//!   percentiles of each, and their ratio;
//! - a write mix (create a customer, delegate it to a technician, revoke the delegation) at C
//!   connections: commands/s and latency percentiles.
//!
//! The server runs in its own runtime in this process, on a fresh data directory (SQLite read
//! models), the client in another. Run with `scripts/bench http [--customers N]
//! [--connections C] [--seconds S]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agent::authenticator::Keyring;
use harness::Platform;
use reqwest::Method;
use serde_json::json;

struct Options {
    customers: usize,
    connections: usize,
    seconds: u64,
}

fn options() -> Options {
    let mut options = Options {
        customers: 1000,
        connections: 64,
        seconds: 10,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse::<usize>().ok());
        match (pair[0].as_str(), value) {
            ("--customers", Some(v)) => options.customers = v,
            ("--connections", Some(v)) => options.connections = v.max(1),
            ("--seconds", Some(v)) => options.seconds = v as u64,
            _ => {
                eprintln!("usage: http-bench [--customers N] [--connections C] [--seconds S]");
                std::process::exit(2);
            }
        }
    }
    options
}

/// Latencies of one run, in microseconds.
struct Run {
    name: String,
    latencies: Vec<u64>,
    elapsed: Duration,
    errors: usize,
}

impl Run {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return 0.0;
        }
        let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[index] as f64 / 1000.0
    }

    fn print(&self) {
        println!(
            "{:<44} {:>9.0} /s   p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   ({} ok, {} errors)",
            self.name,
            self.rate(),
            self.percentile(0.50),
            self.percentile(0.99),
            self.percentile(1.0),
            self.latencies.len(),
            self.errors,
        );
    }
}

/// Runs `op` from `connections` tasks for `seconds`; each call answers whether it succeeded.
async fn load<F, Fut>(name: &str, connections: usize, seconds: u64, op: F) -> Run
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let errors = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let op = op.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                if op(worker, i).await {
                    latencies.push(t.elapsed().as_micros() as u64);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Run {
        name: name.to_owned(),
        latencies,
        elapsed: started.elapsed(),
        errors: errors.load(Ordering::Relaxed),
    }
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let options = options();
    // The server's own runtime, so that the client's tasks do not run on its workers.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("idemd")
        .build()
        .unwrap();
    // All the clients come from 127.0.0.1: no per-address cap.
    let platform = Arc::new(server_runtime.block_on(Platform::start_with(|settings| {
        settings.max_connections_per_address = Some(1_000_000)
    })));
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("client")
        .build()
        .unwrap();
    client_runtime.block_on(run(platform.clone(), options));
    drop(client_runtime);
    let platform = Arc::try_unwrap(platform).ok().unwrap();
    server_runtime.block_on(platform.server.shutdown());
}

async fn run(platform: Arc<Platform>, options: Options) {
    println!(
        "idemd over HTTP: {} customers, {} connections, {} s per run, {} CPUs",
        options.customers,
        options.connections,
        options.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    platform
        .signup("bench", "Bench MSP", "admin@bench.example")
        .await;
    let mut phone = Keyring::default();
    platform
        .enroll(&mut phone, "bench", "admin@bench.example")
        .await;
    let admin = Arc::new(platform.login(&phone, "bench").await);
    let (_, tech) = Platform::call(
        platform
            .as_user(&admin, Method::POST, "bench", "/api/v1/users")
            .json(&json!({"email": "tech@bench.example"})),
    )
    .await;
    let tech = Arc::new(tech["id"].as_str().unwrap().to_owned());

    // The customers, created at the chosen concurrency.
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..options.connections {
        let (platform, admin, next) = (platform.clone(), admin.clone(), next.clone());
        let total = options.customers;
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return;
                }
                let (status, _) = Platform::call(
                    platform
                        .as_user(&admin, Method::POST, "bench", "/api/v1/customers")
                        .json(&json!({"name": format!("c{n}"), "display_name": format!("Customer {n}")})),
                )
                .await;
                assert_eq!(status, 201);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    println!(
        "created {} customers in {:.1} s",
        options.customers,
        started.elapsed().as_secs_f64()
    );

    let (status, list) =
        Platform::call(platform.as_user(&admin, Method::GET, "bench", "/api/v1/customers")).await;
    assert_eq!(status, 200);
    let bytes = serde_json::to_vec(&list).unwrap().len();
    println!(
        "GET /api/v1/customers answers {} rows, {} KiB",
        list.as_array().unwrap().len(),
        bytes / 1024
    );

    let customers = {
        let (platform, admin) = (platform.clone(), admin.clone());
        load(
            "GET /api/v1/customers (1 MSP)",
            options.connections,
            options.seconds,
            move |_, _| {
                let request = platform.as_user(&admin, Method::GET, "bench", "/api/v1/customers");
                async move {
                    match request.send().await {
                        Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                        _ => false,
                    }
                }
            },
        )
        .await
    };
    customers.print();
    let health = {
        let platform = platform.clone();
        load(
            "GET /healthz (trivial)",
            options.connections,
            options.seconds,
            move |_, _| {
                let request = platform.request(Method::GET, "", "/healthz");
                async move { matches!(request.send().await, Ok(r) if r.status() == 200) }
            },
        )
        .await
    };
    health.print();
    let me = {
        let (platform, admin) = (platform.clone(), admin.clone());
        load(
            "GET /api/v1/me (session check only)",
            options.connections,
            options.seconds,
            move |_, _| {
                let request = platform.as_user(&admin, Method::GET, "bench", "/api/v1/me");
                async move { matches!(request.send().await, Ok(r) if r.status() == 200) }
            },
        )
        .await
    };
    me.print();
    println!(
        "ratio customers / healthz: {:.3} of the requests/s",
        customers.rate() / health.rate()
    );

    // The write mix: each iteration creates a customer, delegates it, revokes the delegation.
    let writes = {
        let (platform, admin, tech) = (platform.clone(), admin.clone(), tech.clone());
        load(
            "write mix (create, delegate, revoke) per command",
            options.connections,
            options.seconds,
            move |worker, i| {
                let (platform, admin, tech) = (platform.clone(), admin.clone(), tech.clone());
                async move {
                    let name = format!("w{worker}x{i}");
                    let create = platform
                        .as_user(&admin, Method::POST, "bench", "/api/v1/customers")
                        .json(&json!({"name": name, "display_name": name}));
                    let delegate = platform
                        .as_user(
                            &admin,
                            Method::POST,
                            "bench",
                            &format!("/api/v1/customers/{name}/technicians"),
                        )
                        .json(&json!({"user_id": *tech}));
                    let revoke = platform.as_user(
                        &admin,
                        Method::DELETE,
                        "bench",
                        &format!("/api/v1/customers/{name}/technicians/{tech}"),
                    );
                    for (request, expected) in [(create, 201), (delegate, 201), (revoke, 204)] {
                        match request.send().await {
                            Ok(r) if r.status() == expected => {}
                            _ => return false,
                        }
                    }
                    true
                }
            },
        )
        .await
    };
    // Each iteration is three commands.
    println!(
        "{:<44} {:>9.0} commands/s   p50 {:>7.2} ms   p99 {:>7.2} ms per iteration of 3   ({} errors)",
        "write mix (create, delegate, revoke)",
        writes.rate() * 3.0,
        writes.percentile(0.5),
        writes.percentile(0.99),
        writes.errors
    );
    println!("process RSS at the end: {:.0} MiB", rss_mib());
}
