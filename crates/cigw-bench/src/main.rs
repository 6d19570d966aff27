//! `cigw-bench`: every figure of issue 17 measured from outside, beside its reference, in one
//! run (`scripts/bench` builds the release binaries and calls this). It prints figures and
//! writes them as JSON; it asserts nothing — targets are met or not by reading the report.

mod gateway;
mod load;
mod process;
mod reference;
mod report;
mod scenarios;
mod stand_in;
mod store_commits;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;

/// Measure cigw from outside.
#[derive(Debug, Parser)]
#[command(name = "cigw-bench")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The release cigw binary to measure.
    #[arg(long, default_value = "target/release/cigw")]
    cigw: PathBuf,
    /// Length of each load run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Open connections of each load run.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "target/bench/latest.json")]
    json: PathBuf,
    /// PostgreSQL admin URL for the store figure (a scratch database is created and dropped).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres: String,
    /// Skip PostgreSQL.
    #[arg(long)]
    sqlite_only: bool,
    /// Only these scenarios (comma-separated: intake, dispatch, latency, calls, memory, store).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Runs in flight for the memory figure.
    #[arg(long, default_value_t = 10_000)]
    in_flight: usize,
    /// Finished runs stored for the start-up figure.
    #[arg(long, default_value_t = 100_000)]
    stored_runs: usize,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// (internal) Serve a reference server.
    #[command(hide = true)]
    Reference {
        kind: reference::Kind,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// (internal) Serve the provider stand-in.
    #[command(hide = true)]
    StandIn {
        #[arg(long)]
        speed: f64,
        #[arg(long, value_parser = humantime::parse_duration)]
        run_for: Duration,
        #[arg(long)]
        control_port: u16,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Reference { kind, port, db }) => reference::serve(kind, port, db).await,
        Some(Command::StandIn { speed, run_for, control_port }) => stand_in::serve(speed, run_for, control_port).await,
        None => run(cli.run).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    if !args.cigw.exists() {
        anyhow::bail!("--cigw: {} does not exist (build it with `cargo build --release -p cigw`)", args.cigw.display());
    }
    let scratch = tempfile::tempdir().context("scratch directory")?;
    let me = std::env::current_exe()?;
    let mut ctx =
        scenarios::Ctx::new(args.cigw.clone(), me, scratch.path().to_path_buf(), args.duration, args.connections);
    ctx.in_flight = args.in_flight;
    ctx.stored_runs = args.stored_runs;
    ctx.report.machine = json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "date": chrono::Utc::now().to_rfc3339(),
        "wrk": format!("-t2 -c{} -d{}s", args.connections, args.duration.as_secs()),
    });
    let wants = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    println!("cigw-bench: {} (scratch {})", ctx.report.machine, scratch.path().display());

    let mut intake_rps = f64::NAN;
    if wants("intake") {
        intake_rps = scenarios::intake(&mut ctx).await?;
    }
    if wants("dispatch") {
        scenarios::with_dispatch(&mut ctx, intake_rps).await?;
    }
    if wants("latency") {
        scenarios::dispatch_latency(&mut ctx).await?;
    }
    if wants("calls") {
        scenarios::calls_per_run(&mut ctx).await?;
    }
    if wants("memory") {
        scenarios::memory(&mut ctx).await?;
    }
    if wants("store") {
        let pg = (!args.sqlite_only).then(|| args.postgres.clone());
        scenarios::store_commits(&mut ctx, pg).await?;
    }

    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&ctx.report)?)?;
    println!("figures written to {}", args.json.display());
    Ok(())
}
