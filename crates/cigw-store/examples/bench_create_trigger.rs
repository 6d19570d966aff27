//! Micro-benchmark: create-trigger commits per second on SQLite (group commit on and off, both
//! durability settings) and PostgreSQL, with N concurrent writers. Not a test; run by
//! `scripts/bench`:
//!
//! ```text
//! cargo run -p cigw-store --example bench_create_trigger -- [--writers 1,8,32] [--triggers 2000]
//!     [--postgres postgres://postgres@127.0.0.1:5432/test] [--sqlite-only]
//! ```
//!
//! Each trigger is one transaction: the trigger row, one pending run, an idempotency key and a
//! `created` event. PostgreSQL runs on a scratch database created for the run and dropped after.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use cigw_core::config::{DatabaseSettings, Durability};
use cigw_core::{GitRef, ParamValue, Parameters, ProviderKind};
use cigw_store::{CreateOutcome, IdempotencyKey, NewRun, NewTrigger, OpenOptions, Store};
use serde_json::json;
use sqlx::Connection;

struct Args {
    writers: Vec<usize>,
    triggers: usize,
    postgres: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        writers: vec![1, 8, 32],
        triggers: 2000,
        postgres: Some("postgres://postgres@127.0.0.1:5432/test".into()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("`{flag}` needs a value"));
        match flag.as_str() {
            "--writers" => {
                args.writers = value()?
                    .split(',')
                    .map(|w| w.trim().parse().map_err(|_| format!("--writers: `{w}` is not a number")))
                    .collect::<Result<_, _>>()?
            }
            "--triggers" => args.triggers = value()?.parse().map_err(|_| "--triggers expects a number".to_string())?,
            "--postgres" => args.postgres = Some(value()?),
            "--sqlite-only" => args.postgres = None,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if args.writers.contains(&0) || args.triggers == 0 {
        return Err("--writers and --triggers must be positive".into());
    }
    Ok(args)
}

fn trigger(n: usize) -> NewTrigger {
    let id = uuid::Uuid::now_v7().to_string();
    let now = Utc::now();
    let mut parameters = Parameters::new();
    parameters.insert("env", ParamValue::String("staging".into()), false);
    NewTrigger {
        id: id.clone(),
        source: "api".into(),
        requested_by: "bench".into(),
        request: json!({"target": "web", "n": n}),
        labels: json!({}),
        created_at: now,
        runs: vec![NewRun {
            id: uuid::Uuid::now_v7().to_string(),
            target: "web".into(),
            provider: ProviderKind::Circleci,
            account: "main".into(),
            git_ref: GitRef::branch("main"),
            parameters,
            chain_parent: None,
            rerun_of: None,
            rerun_failed_only: false,
            dispatch_at: now,
        }],
        idempotency: Some(IdempotencyKey {
            scope: "bench".into(),
            key: id,
            fingerprint: json!({"n": n}),
            response: json!({"n": n}),
            expires_at: now + chrono::Duration::days(1),
        }),
        chain_firing: None,
        schedule_slot: None,
        hook_delivery: None,
    }
}

/// Commits per second with `writers` tasks sharing `total` triggers.
async fn measure(store: Arc<dyn Store>, writers: usize, total: usize) -> f64 {
    let per_writer = total.div_ceil(writers);
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..per_writer {
                    match store.create_trigger(trigger(w * per_writer + i)).await {
                        Ok(CreateOutcome::Created(_)) => {}
                        other => panic!("create_trigger: {other:?}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer task");
    }
    (per_writer * writers) as f64 / start.elapsed().as_secs_f64()
}

async fn sqlite_row(durability: Durability, group_commit: bool, args: &Args) -> Vec<f64> {
    let mut out = Vec::new();
    for &writers in &args.writers {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = DatabaseSettings {
            url: format!("sqlite://{}", dir.path().join("bench.db").display()),
            durability,
            ..DatabaseSettings::default()
        };
        let store = cigw_store::open_with(&settings, OpenOptions { group_commit }).await.expect("open SQLite");
        store.migrate().await.expect("migrate");
        out.push(measure(store, writers, args.triggers).await);
    }
    out
}

async fn postgres_row(admin: &str, args: &Args) -> Result<Vec<f64>, String> {
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .map_err(|e| format!("cannot reach PostgreSQL at {}: {e}", cigw_core::config::redact_url(admin)))?;
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
    let mut out = Vec::new();
    for &writers in &args.writers {
        let name = format!("cigw_bench_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.map_err(|e| e.to_string())?;
        let settings = DatabaseSettings {
            url: format!("{base}/{name}"),
            max_connections: (writers as u32).clamp(2, 32),
            statement_timeout: Duration::from_secs(30),
            ..DatabaseSettings::default()
        };
        let store = cigw_store::open(&settings).await.map_err(|e| e.to_string())?;
        store.migrate().await.map_err(|e| e.to_string())?;
        out.push(measure(store.clone(), writers, args.triggers).await);
        drop(store);
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn print_row(label: &str, values: &[f64]) {
    let cells: Vec<String> = values.iter().map(|v| format!("{v:>10.0}")).collect();
    println!("{label:<42}{}", cells.join(""));
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_create_trigger: {e}");
            std::process::exit(2);
        }
    };
    let build = if cfg!(debug_assertions) { "debug build" } else { "release build" };
    println!("create_trigger commits/s ({} triggers per cell; {build})", args.triggers);
    let header: Vec<String> = args.writers.iter().map(|w| format!("{:>10}", format!("{w} wr"))).collect();
    println!("{:<42}{}", "backend", header.join(""));
    for (label, durability, group) in [
        ("sqlite  synchronous=NORMAL  group commit", Durability::Normal, true),
        ("sqlite  synchronous=NORMAL  one per commit", Durability::Normal, false),
        ("sqlite  synchronous=FULL    group commit", Durability::Fsync, true),
        ("sqlite  synchronous=FULL    one per commit", Durability::Fsync, false),
    ] {
        print_row(label, &sqlite_row(durability, group, &args).await);
    }
    if let Some(admin) = &args.postgres {
        match postgres_row(admin, &args).await {
            Ok(values) => print_row("postgres (pool = writers, max 32)", &values),
            Err(e) => {
                eprintln!("bench_create_trigger: {e}");
                std::process::exit(1);
            }
        }
    }
}
