//! `idemd`: the service's command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use api::log_pipe::LogPipe;
use api::{Config, Server, Settings};
use clap::{Parser, Subcommand};
use projections::Projection;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

#[derive(Parser)]
#[command(name = "idemd", version, about = "idem: identity for MSPs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the service.
    Serve {
        /// A TOML file of settings (keys as the flags, e.g. base_domain = "example.com").
        #[arg(long, env = "IDEM_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Rebuilds read models from the event log into new generations: the running service
    /// serves the current ones meanwhile and swaps the new ones in once caught up; with idemd
    /// stopped, the command does it itself.
    Rebuild {
        /// directory, audit, or all
        #[arg(default_value = "all")]
        projection: String,
        #[arg(long, env = "IDEM_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Writes a tenant's log as NDJSON (the audit export), by tenant id or host label; `operator`
    /// names the operator log (root key rotations, backups, restores, rebuilds).
    Export {
        tenant: String,
        /// The file to write (standard output if absent).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, env = "IDEM_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Checks an exported NDJSON file with nothing but the file: every hash recomputed, every
    /// link of the chain checked. Exit code 1 if it does not check.
    VerifyExport { file: PathBuf },
    /// Verifies the hash chain of one tenant (id or host label), of the operator log
    /// (`operator`), or of every tenant and the operator log (`all`).
    Verify {
        #[arg(default_value = "all")]
        tenant: String,
        #[arg(long, env = "IDEM_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Retries the tenants the read models quarantined (an event they could not apply), in
    /// the running service: those whose events now apply catch up. A start retries them too.
    RetryQuarantined {
        #[arg(long, env = "IDEM_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Creates an MSP tenant and mails its admin an onboarding code, through the running
    /// service's control socket (also while public signup is closed).
    Signup {
        /// The tenant's name, which becomes its host label.
        name: String,
        #[arg(long)]
        display_name: String,
        #[arg(long)]
        admin_email: String,
        #[arg(long, env = "IDEM_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Writes a consistent copy of the event log into a new directory: through the running
    /// service's control socket while it runs (writes go on), directly while it is stopped.
    /// The copy holds no tenant keys: the key mirror (IDEM_KEY_MIRROR) is brought up to date
    /// with them, and a restore takes them from there.
    Backup {
        /// A new directory.
        to: PathBuf,
        #[arg(long, env = "IDEM_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Makes a backup the event log of a data directory that has none (idemd stopped), with
    /// the tenants' keys put back from the key mirror; the read models are projected again
    /// when idemd starts. A tenant deleted after the backup has no key there any more: its
    /// events come back, its sealed data stays unreadable.
    Restore {
        /// A directory written by `idemd backup`.
        from: PathBuf,
        #[arg(long, env = "IDEM_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Replaces the root key: a new one (written beside the key file first, then renamed over
    /// it) wraps every tenant's data key again, through the running service's control socket
    /// (it goes on serving) or directly while it is stopped. Nothing sealed changes; one-time
    /// codes sent before it stop matching.
    RotateRootKey {
        #[arg(long, env = "IDEM_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Prints a tenant's state as it stood at a time (RFC 3339), replayed from its log.
    State {
        tenant: String,
        #[arg(long)]
        at: String,
        #[arg(long, env = "IDEM_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let pipe = match init_logging(std::env::var("IDEM_LOG_FORMAT").ok().as_deref()) {
        Ok(pipe) => pipe,
        Err(e) => {
            eprintln!("idemd: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let code = run(Cli::parse()).await;
    // The last lines (why it stopped, say) are still queued: see them out.
    if let Some(pipe) = pipe {
        pipe.flush(std::time::Duration::from_secs(5));
    }
    code
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config, settings } => match load(config, settings) {
            Ok(config) => serve(config).await,
            Err(code) => code,
        },
        Command::Rebuild {
            projection,
            config,
            settings,
        } => match load(config, settings) {
            Ok(config) => rebuild(config, &projection).await,
            Err(code) => code,
        },
        Command::Export {
            tenant,
            out,
            config,
            settings,
        } => match load(config, settings) {
            Ok(config) => export(config, &tenant, out).await,
            Err(code) => code,
        },
        Command::VerifyExport { file } => verify_export(&file),
        Command::Verify {
            tenant,
            config,
            settings,
        } => match load(config, settings) {
            Ok(config) => verify(config, &tenant).await,
            Err(code) => code,
        },
        Command::RetryQuarantined { config, settings } => match load(config, settings) {
            Ok(config) => retry_quarantined(config).await,
            Err(code) => code,
        },
        Command::Signup {
            name,
            display_name,
            admin_email,
            config,
            settings,
        } => match load(config, settings) {
            Ok(config) => signup(config, name, display_name, admin_email).await,
            Err(code) => code,
        },
        Command::Backup {
            to,
            config,
            settings,
        } => match load(config, settings) {
            Ok(config) => backup(config, &to).await,
            Err(code) => code,
        },
        Command::Restore {
            from,
            config,
            settings,
        } => match load(config, settings) {
            Ok(config) => restore(config, &from).await,
            Err(code) => code,
        },
        Command::State {
            tenant,
            at,
            config,
            settings,
        } => match load(config, settings) {
            Ok(config) => state(config, &tenant, &at).await,
            Err(code) => code,
        },
        Command::RotateRootKey { config, settings } => match load(config, settings) {
            Ok(config) => rotate_root_key(config).await,
            Err(code) => code,
        },
    }
}

async fn export(config: Config, tenant: &str, out: Option<PathBuf>) -> ExitCode {
    let result = match &out {
        Some(path) => match std::fs::File::create(path) {
            Ok(file) => {
                let mut writer = std::io::BufWriter::new(file);
                api::operator::export(&config, tenant, &mut writer).await
            }
            Err(e) => Err(e.into()),
        },
        None => {
            let mut stdout = std::io::stdout().lock();
            api::operator::export(&config, tenant, &mut stdout).await
        }
    };
    match result {
        Ok(count) => {
            eprintln!("exported {count} events");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("idemd: export: {e}");
            ExitCode::FAILURE
        }
    }
}

fn verify_export(file: &std::path::Path) -> ExitCode {
    let report =
        std::fs::File::open(file).and_then(|f| api::audit::verify_file(std::io::BufReader::new(f)));
    match report {
        Ok(report) => {
            match &report.broken {
                None => println!(
                    "valid: {} events of tenant {}, head seq {}, head hash {}",
                    report.events,
                    report.tenant.map_or_else(|| "-".into(), |t| t.to_string()),
                    report.head_seq,
                    report.head_hash
                ),
                Some((line, reason)) => println!(
                    "BROKEN at line {line}: {reason} ({} events check before it)",
                    report.events
                ),
            }
            if report.is_valid() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("idemd: {}: {e}", file.display());
            ExitCode::from(2)
        }
    }
}

async fn verify(config: Config, tenant: &str) -> ExitCode {
    let which = (tenant != "all").then_some(tenant);
    match api::operator::verify(&config, which).await {
        Ok(reports) => {
            let mut valid = true;
            for check in &reports {
                let name = if check.tenant == domain::operator::OPERATOR_LOG {
                    domain::operator::OPERATOR_LOG_NAME.to_owned()
                } else {
                    check.tenant.to_string()
                };
                match &check.broken {
                    None => println!(
                        "{name}\tvalid\t{} events\thead {}",
                        check.events, check.head_hash
                    ),
                    Some((seq, reason)) => {
                        valid = false;
                        println!("{name}\tBROKEN at seq {seq}: {reason}");
                    }
                }
            }
            if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("idemd: verify: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn state(config: Config, tenant: &str, at: &str) -> ExitCode {
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(at) else {
        eprintln!("idemd: --at must be an RFC 3339 time, e.g. 2026-11-22T10:00:00Z");
        return ExitCode::from(2);
    };
    match api::operator::state_at(&config, tenant, at.with_timezone(&chrono::Utc)).await {
        Ok(state) => {
            // A closed pipe (`| head`) is not an error worth a panic.
            let text = serde_json::to_string_pretty(&state).unwrap_or_default();
            let _ = writeln!(std::io::stdout(), "{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("idemd: state: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn signup(config: Config, name: String, display_name: String, email: String) -> ExitCode {
    match api::operator::signup(&config, &name, &display_name, &email).await {
        Ok(created) => {
            let text = serde_json::to_string_pretty(&created).unwrap_or_default();
            let _ = writeln!(std::io::stdout(), "{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("idemd: signup: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn retry_quarantined(config: Config) -> ExitCode {
    match api::operator::retry_quarantined(&config).await {
        Ok(left) => {
            for projection in left {
                println!(
                    "{}: {} tenants stay quarantined",
                    projection.projection, projection.quarantined
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("idemd: retry-quarantined: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn backup(config: Config, to: &std::path::Path) -> ExitCode {
    // The service may resolve paths from another working directory.
    let to = match std::path::absolute(to) {
        Ok(to) => to,
        Err(e) => {
            eprintln!("idemd: backup: {}: {e}", to.display());
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let done = match api::operator::backup(&config, &to).await {
        Ok(done) => done,
        Err(e) => {
            eprintln!("idemd: backup: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "backed up the log up to position {} ({} events) to {} in {:.1} s",
        done.head,
        done.events,
        to.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "it holds no tenant keys ({} left out); the key mirror {} holds {} and a restore takes \
         them from there: keep it apart from the backups, and the root key {} apart from both",
        done.keys_left_out,
        done.key_mirror.display(),
        done.mirrored_keys,
        config.root_key_file.display()
    );
    ExitCode::SUCCESS
}

async fn rotate_root_key(config: Config) -> ExitCode {
    let done = match api::operator::rotate_root_key(&config).await {
        Ok(done) => done,
        Err(e) => {
            eprintln!("idemd: rotate-root-key: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "root key {} replaced by {} in {}: {} tenant keys wrapped again",
        done.rotated.previous_key_id,
        done.rotated.key_id,
        done.rotated.key_file.display(),
        done.rotated.rewrapped
    );
    match (&done.key_mirror, done.key_mirror_current) {
        (Some(mirror), true) => println!("the key mirror {} is up to date", mirror.display()),
        (Some(mirror), false) => {
            println!(
                "the key mirror {} could not be written and still holds keys wrapped by the \
                 replaced root key: keep that key until /readyz says key_mirror_current",
                mirror.display()
            );
            return ExitCode::FAILURE;
        }
        (None, _) => {}
    }
    ExitCode::SUCCESS
}

async fn restore(config: Config, from: &std::path::Path) -> ExitCode {
    let restored = match api::operator::restore(&config, from).await {
        Ok(restored) => restored,
        Err(e) => {
            eprintln!("idemd: restore: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = &restored.report;
    println!(
        "restored the log up to position {} into {}: {} tenant keys put back from {}",
        report.head,
        config.data_dir.join("log").display(),
        report.restored,
        restored.key_mirror.display()
    );
    if !report.missing.is_empty() {
        println!(
            "{} keys are no longer in the key mirror (their tenants were deleted after the \
             backup): those tenants' sealed data stays unreadable",
            report.missing.len()
        );
        for (tenant, version) in &report.missing {
            println!("  tenant {tenant}: key version {version}");
        }
    }
    if !restored.to_delete_again.is_empty() {
        println!(
            "{} tenants in this backup were deleted after it was taken: idemd deletes them \
             again when it starts, before it serves anyone",
            restored.to_delete_again.len()
        );
        for tenant in &restored.to_delete_again {
            println!("  tenant {}", tenant.0);
        }
    }
    println!("start idemd on this data directory: the read models are projected again");
    ExitCode::SUCCESS
}

/// The checked configuration, or the exit code of a bad one (its message printed).
/// Logs to stderr, filtered by `IDEM_LOG` (default `info`), as text lines or, with
/// `IDEM_LOG_FORMAT=json`, one JSON object per line (the event's fields at the top level,
/// with `timestamp`, `level` and `target`) for log collectors. Set before the command line is
/// read, so these two are environment variables only. Lines go through a queue and a thread
/// of their own (`log_pipe`), returned to be flushed at exit; straight to stderr only if
/// that thread cannot start.
fn init_logging(format: Option<&str>) -> Result<Option<LogPipe>, String> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IDEM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format.unwrap_or("text") {
        "text" => false,
        "json" => true,
        other => return Err(format!("IDEM_LOG_FORMAT: {other:?} must be text or json")),
    };
    let pipe = LogPipe::start(std::io::stderr(), api::log_pipe::BUFFERED_BYTES);
    let writer = match &pipe {
        Ok(pipe) => {
            pipe.install();
            BoxMakeWriter::new(pipe.clone())
        }
        Err(_) => BoxMakeWriter::new(std::io::stderr),
    };
    if json {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer)
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(filter)
            .init();
    }
    match pipe {
        Ok(pipe) => Ok(Some(pipe)),
        Err(e) => {
            tracing::warn!(error = %e, "the log thread could not start: logging straight to stderr");
            Ok(None)
        }
    }
}

fn load(file: Option<PathBuf>, settings: Settings) -> Result<Config, ExitCode> {
    let settings = match file {
        Some(path) => match Settings::from_file(&path) {
            Ok(from_file) => settings.or(from_file),
            Err(e) => {
                eprintln!("idemd: {e}");
                return Err(ExitCode::from(2));
            }
        },
        None => settings,
    };
    settings.resolve().map_err(|e| {
        eprintln!("idemd: configuration: {e}");
        ExitCode::from(2)
    })
}

async fn rebuild(config: Config, which: &str) -> ExitCode {
    let projections: Vec<Projection> = match which {
        "all" => Projection::ALL.to_vec(),
        name => match Projection::from_name(name) {
            Some(p) => vec![p],
            None => {
                eprintln!("idemd: no projection {name:?}: directory, audit or all");
                return ExitCode::from(2);
            }
        },
    };
    match api::operator::rebuild(&config, &projections).await {
        Ok(done) => {
            for rebuilt in done {
                println!(
                    "{}: rebuilt into generation {} in {:.1} s",
                    rebuilt.projection, rebuilt.generation, rebuilt.seconds
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("idemd: rebuild: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> ExitCode {
    let server = match Server::start(config).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("idemd: {e}");
            return ExitCode::FAILURE;
        }
    };
    wait_for_signal().await;
    tracing::info!("shutting down: finishing requests in flight");
    server.shutdown().await;
    tracing::info!("idemd stopped");
    ExitCode::SUCCESS
}

/// SIGTERM or SIGINT.
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
