//! `idemd`: the service's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use api::{Server, Settings};
use clap::{Parser, Subcommand};

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
        Command::Serve { config, settings } => serve(config, settings).await,
    }
}

async fn serve(file: Option<PathBuf>, settings: Settings) -> ExitCode {
    let settings = match file {
        Some(path) => match Settings::from_file(&path) {
            Ok(from_file) => settings.or(from_file),
            Err(e) => {
                eprintln!("idemd: {e}");
                return ExitCode::from(2);
            }
        },
        None => settings,
    };
    let config = match settings.resolve() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("idemd: configuration: {e}");
            return ExitCode::from(2);
        }
    };
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
