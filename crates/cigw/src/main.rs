//! The `cigw` command line: a thin layer over the library crates.

mod check_config;
mod providers;

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
        }
    })
}
