//! The references cigw's intake is compared with, each run as its own process like cigw:
//! a bare axum handler answering 202, and axum storing each request with one SQLite insert at
//! the same durability cigw uses by default (WAL, `synchronous=NORMAL`, a pool of 4).

use std::path::PathBuf;
use std::str::FromStr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// Which reference.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Kind {
    /// 202 with a small JSON body, nothing stored.
    Bare,
    /// One INSERT of the body per request, then 202.
    Sqlite,
}

/// Serve the reference on 127.0.0.1:`port` until killed.
pub(crate) async fn serve(kind: Kind, port: u16, db: Option<PathBuf>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let app = match kind {
        Kind::Bare => Router::new().route("/v1/triggers", post(bare)).route("/readyz", get(ready)),
        Kind::Sqlite => {
            let path = db.ok_or_else(|| anyhow::anyhow!("--db is needed for the SQLite reference"))?;
            let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(std::time::Duration::from_secs(30));
            let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS requests (id TEXT PRIMARY KEY, body TEXT NOT NULL, at INTEGER NOT NULL)",
            )
            .execute(&pool)
            .await?;
            Router::new().route("/v1/triggers", post(insert)).route("/readyz", get(ready)).with_state(pool)
        }
    };
    axum::serve(listener, app).await?;
    Ok(())
}

async fn ready() -> StatusCode {
    StatusCode::OK
}

async fn bare() -> (StatusCode, &'static str) {
    (StatusCode::ACCEPTED, r#"{"accepted":true}"#)
}

async fn insert(State(pool): State<sqlx::SqlitePool>, body: Bytes) -> (StatusCode, String) {
    let id = uuid::Uuid::now_v7().to_string();
    let result = sqlx::query("INSERT INTO requests (id, body, at) VALUES (?1, ?2, ?3)")
        .bind(&id)
        .bind(String::from_utf8_lossy(&body).into_owned())
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(&pool)
        .await;
    match result {
        Ok(_) => (StatusCode::ACCEPTED, format!(r#"{{"id":"{id}"}}"#)),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
