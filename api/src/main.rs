//! `idemd`: the service's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use api::{Config, Server, Settings};
use clap::{Parser, Subcommand};
use projections::Projection;

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
    /// Rebuilds read models from the event log into new generations (idemd must be stopped).
    Rebuild {
        /// directory, audit, or all
        #[arg(default_value = "all")]
        projection: String,
        #[arg(long, env = "IDEM_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IDEM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
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
    }
}

/// The checked configuration, or the exit code of a bad one (its message printed).
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
            for (projection, generation, took) in done {
                println!(
                    "{projection}: rebuilt into generation {generation} in {:.1} s",
                    took.as_secs_f64()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("idemd: rebuild: {e} (is idemd running? stop it first)");
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
