//! The PostgreSQL backend: a connection pool, `FOR UPDATE SKIP LOCKED` claims, LISTEN/NOTIFY
//! wake-ups, and event ids assigned under a transaction-level advisory lock so they follow
//! commit order.

mod rows;
mod tx;

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use cigw_core::config::{DatabaseSettings, redact_url};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

use crate::driver::{Access, Driver};
use crate::error::{StoreError, StoreResult};
use crate::migrations;
use crate::sql::Tx;
use tx::PgTx;

/// The embedded migrations, accepting newer ones a newer cigw applied (see [`crate::migrations`]).
static MIGRATOR: LazyLock<sqlx::migrate::Migrator> =
    LazyLock::new(|| migrations::tolerant(sqlx::migrate!("./migrations/postgres")));

/// The NOTIFY channel the intake signals on.
const WAKEUP_CHANNEL: &str = "cigw_wakeup";

/// The PostgreSQL store.
pub struct PgStore {
    url: String,
    pool: PgPool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("url", &redact_url(&self.url)).finish()
    }
}

impl PgStore {
    /// Connect a pool (TLS as `sslmode` in the URL says) without migrating.
    pub async fn open(settings: &DatabaseSettings) -> StoreResult<Self> {
        let timeout_ms = settings.statement_timeout.as_millis().to_string();
        let connect = PgConnectOptions::from_str(&settings.url)
            .map_err(|e| StoreError::Invalid {
                field: "database.url",
                message: format!("not a PostgreSQL URL: {}", redact_url(&e.to_string())),
            })?
            .options([("statement_timeout", timeout_ms.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(2))
            .acquire_timeout(settings.statement_timeout.max(Duration::from_secs(1)))
            .connect_with(connect)
            .await?;
        Ok(Self { url: settings.url.clone(), pool })
    }
}

async fn listen(pool: &PgPool) -> PgListener {
    loop {
        let attempt = async {
            let mut l = PgListener::connect_with(pool).await?;
            l.listen(WAKEUP_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        match attempt.await {
            Ok(l) => return l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN for wake-ups; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[async_trait]
impl Driver for PgStore {
    fn describe(&self) -> String {
        format!("postgres {}", redact_url(&self.url))
    }

    async fn migrate(&self) -> StoreResult<()> {
        migrations::run(&MIGRATOR, &self.pool).await?;
        let mut conn = self.pool.acquire().await?;
        migrations::report_unknown(&MIGRATOR, &mut *conn, &Driver::describe(self)).await
    }

    fn wakeups(&self) -> BoxStream<'static, ()> {
        let pool = self.pool.clone();
        // The first item says "listening now"; later ones are notifications. After a lost
        // connection the stream re-listens and yields once, since notifications may be missed.
        futures::stream::unfold((pool, None::<PgListener>), |(pool, listener)| async move {
            match listener {
                None => {
                    let l = listen(&pool).await;
                    Some(((), (pool, Some(l))))
                }
                Some(mut l) => match l.recv().await {
                    Ok(_) => Some(((), (pool, Some(l)))),
                    Err(e) => {
                        tracing::warn!(error = %e, "wake-up listener failed; re-listening");
                        Some(((), (pool, None)))
                    }
                },
            }
        })
        .boxed()
    }

    async fn run<T, F>(&self, access: Access, job: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Tx) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        match access {
            // A single statement is atomic on its own: no BEGIN and COMMIT round trips.
            Access::WriteOne | Access::Read => {
                let mut conn = self.pool.acquire().await?;
                job(&mut PgTx::new(&mut conn)).await
            }
            // Commit on `Ok`, roll back on `Err`.
            Access::Write | Access::Snapshot => {
                let mut tx = self.pool.begin().await?;
                match job(&mut PgTx::new(&mut tx)).await {
                    Ok(v) => {
                        tx.commit().await?;
                        Ok(v)
                    }
                    Err(e) => {
                        let _ = tx.rollback().await;
                        Err(e)
                    }
                }
            }
        }
    }
}
