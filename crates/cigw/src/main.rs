//! The `cigw` command line: a thin layer over the library crates.

mod check_config;
mod gateway;
mod providers;
mod sandbox;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// cigw — one trigger API in front of CircleCI, Codefresh and Codeship.
#[derive(Debug, Parser)]
#[command(name = "cigw", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a configuration: print accounts and targets and report every problem at once.
    CheckConfig {
        /// Configuration file (TOML), layered over the built-in defaults.
        #[arg(long, env = "CIGW_CONFIG")]
        config: Option<PathBuf>,
        /// Also check each account's credentials with one cheap provider call.
        #[arg(long)]
        online: bool,
    },
    /// Run the gateway: the HTTP API, the dispatcher and the tracker.
    Serve {
        /// Configuration file (TOML), layered over the built-in defaults.
        #[arg(long, env = "CIGW_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Start simulated CircleCI, Codefresh and Codeship and a gateway in front of them.
    Sandbox(sandbox::SandboxArgs),
    /// Apply the database migrations and exit.
    Migrate {
        /// Configuration file (TOML), layered over the built-in defaults.
        #[arg(long, env = "CIGW_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cigw_core::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::CheckConfig { config, online } => check_config::run(config.as_deref(), online).await,
            Command::Serve { config } => report(serve::serve(config.as_deref()).await),
            Command::Sandbox(args) => report(sandbox::run(args).await),
            Command::Migrate { config } => report(serve::migrate(config.as_deref()).await),
        }
    })
}

/// Print an error chain for a person and turn it into an exit code.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
