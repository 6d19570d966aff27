//! The `cigw` command line: a thin layer over the library crates.

mod check_config;
mod client;
mod commands;
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
    /// Trigger runs of one or more targets; with --wait, follow them to the end.
    Trigger(commands::trigger::TriggerArgs),
    /// List runs, newest first.
    Runs(commands::runs::RunsArgs),
    /// Show one run with its events.
    Status(commands::runs::StatusArgs),
    /// Cancel a run, or every unfinished run of a trigger.
    Cancel(commands::actions::CancelArgs),
    /// Run a finished run again.
    Rerun(commands::actions::RerunArgs),
    /// Approve (or deny) a run waiting for approval.
    Approve(commands::actions::ApproveArgs),
    /// Follow run events live.
    Watch(commands::watch::WatchArgs),
    /// List the configured targets, or show one with its parameters.
    Targets(commands::targets::TargetsArgs),
    /// List the configured schedules with their next and last slots.
    Schedules(commands::schedules::SchedulesArgs),
    /// List the configured hooks (inbound webhooks) with their delivery counts.
    Hooks(commands::hooks::HooksArgs),
    /// Dry-run a payload through a hook, replay a remembered delivery, list deliveries.
    Hook(commands::hooks::HookArgs),
    /// Create, list and revoke API tokens.
    Token(commands::token::TokenArgs),
    /// Outbound notification deliveries: list them, redeliver a dead-lettered one.
    Notifications(commands::notifications::NotificationsArgs),
}

fn main() -> ExitCode {
    // Usage errors exit 4 (DESIGN §4), not clap's default 2, which `trigger --wait` uses for "canceled".
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { client::EXIT_USAGE } else { 0 });
        }
    };
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
            Command::Trigger(args) => commands::trigger::run(args).await,
            Command::Runs(args) => commands::runs::list(args).await,
            Command::Status(args) => commands::runs::status(args).await,
            Command::Cancel(args) => commands::actions::cancel(args).await,
            Command::Rerun(args) => commands::actions::rerun(args).await,
            Command::Approve(args) => commands::actions::approve(args).await,
            Command::Watch(args) => commands::watch::run(args).await,
            Command::Targets(args) => commands::targets::run(args).await,
            Command::Schedules(args) => commands::schedules::run(args).await,
            Command::Hooks(args) => commands::hooks::list(args).await,
            Command::Hook(args) => commands::hooks::run(args).await,
            Command::Token(args) => commands::token::run(args).await,
            Command::Notifications(args) => commands::notifications::run(args).await,
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
