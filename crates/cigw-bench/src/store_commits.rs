//! Create-trigger commits per second straight into the store (SQLite with and without group
//! commit, both durability settings, and PostgreSQL on a scratch database), with 1, 8 and 32
//! concurrent writers. Each trigger is one transaction: the trigger row, one pending run, an
//! idempotency key and the `created` event — what intake writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use cigw_core::config::{DatabaseSettings, Durability};
use cigw_core::{GitRef, ParamValue, Parameters, ProviderKind};
use cigw_store::{CreateOutcome, IdempotencyKey, NewRun, NewTrigger, OpenOptions, Store};
use serde_json::{Value, json};
use sqlx::Connection;

/// Which writers and how many triggers per cell.
#[derive(Debug, Clone)]
pub(crate) struct Args {
    /// Concurrent writers per cell.
    pub(crate) writers: Vec<usize>,
    /// Triggers per cell.
    pub(crate) triggers: usize,
    /// PostgreSQL admin URL (a scratch database is made under it), or none.
    pub(crate) postgres: Option<String>,
}

/// One trigger the way intake writes it (`n` makes its request unique).
pub(crate) fn trigger(n: usize) -> NewTrigger {
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
pub(crate) async fn measure(store: Arc<dyn Store>, writers: usize, total: usize) -> f64 {
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

/// Where `pool` is `None` the pool has one connection per writer (at most 32); otherwise `pool`.
async fn postgres_row(admin: &str, args: &Args, pool: Option<u32>) -> Result<Vec<f64>, String> {
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
            max_connections: pool.unwrap_or((writers as u32).clamp(3, 32)),
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

/// The label of the PostgreSQL row at the default pool size (followed by the size).
pub(crate) const POSTGRES_DEFAULT_POOL: &str = "postgres, default pool";
/// The label of the PostgreSQL row whose pool has a connection per writer.
pub(crate) const POSTGRES_WIDE_POOL: &str = "postgres, pool = writers (max 32)";

/// Every row: label → commits/s per writer count.
pub(crate) async fn run(args: &Args) -> anyhow::Result<Vec<(String, Vec<f64>)>> {
    let mut rows = Vec::new();
    for (label, durability, group) in [
        ("sqlite synchronous=NORMAL, group commit", Durability::Normal, true),
        ("sqlite synchronous=NORMAL, one per commit", Durability::Normal, false),
        ("sqlite synchronous=FULL, group commit", Durability::Fsync, true),
        ("sqlite synchronous=FULL, one per commit", Durability::Fsync, false),
    ] {
        rows.push((label.to_string(), sqlite_row(durability, group, args).await));
    }
    if let Some(admin) = &args.postgres {
        // What `cigw serve` runs with (`database.max_connections`), then a pool as wide as the
        // writers: on two cores, 32 busy server processes compete with each other.
        let default_pool = DatabaseSettings::default().max_connections;
        let values = postgres_row(admin, args, Some(default_pool)).await.map_err(anyhow::Error::msg)?;
        rows.push((format!("{POSTGRES_DEFAULT_POOL} ({default_pool})"), values));
        let values = postgres_row(admin, args, None).await.map_err(anyhow::Error::msg)?;
        rows.push((POSTGRES_WIDE_POOL.to_string(), values));
    }
    Ok(rows)
}

/// The rows as JSON: `{label: {"<n> writers": commits/s}}`.
pub(crate) fn to_json(args: &Args, rows: &[(String, Vec<f64>)]) -> Value {
    let mut out = serde_json::Map::new();
    for (label, values) in rows {
        let cells: serde_json::Map<String, Value> =
            args.writers.iter().zip(values).map(|(w, v)| (format!("{w} writers"), json!(v.round()))).collect();
        out.insert(label.clone(), Value::Object(cells));
    }
    Value::Object(out)
}
