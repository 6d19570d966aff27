//! The PostgreSQL backend: a connection pool, `FOR UPDATE SKIP LOCKED` claims, LISTEN/NOTIFY
//! wake-ups and token/session changes, event ids readable in commit order, and the provider
//! request budgets the replicas share.

mod budget;
mod rows;
mod tx;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use cigw_core::config::{DatabaseSettings, redact_url};
use cigw_core::shared_budget::SharedBudget;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::mpsc;

use crate::driver::{Access, Driver};
use crate::error::{StoreError, StoreResult};
use crate::migrations;
use crate::model::AuthChange;
use crate::sql::Tx;
use tx::PgTx;

/// The embedded migrations, accepting newer ones a newer cigw applied (see [`crate::migrations`]).
static MIGRATOR: LazyLock<sqlx::migrate::Migrator> =
    LazyLock::new(|| migrations::tolerant(sqlx::migrate!("./migrations/postgres")));

/// The NOTIFY channel the intake signals on.
const WAKEUP_CHANNEL: &str = "cigw_wakeup";
/// The NOTIFY channel of token and session changes ([`AuthChange`] payloads).
const AUTH_CHANNEL: &str = "cigw_auth";

/// The PostgreSQL store.
pub struct PgStore {
    url: String,
    pool: PgPool,
    /// Asks [`send_wakeups`] for a NOTIFY; full means one is already asked for.
    wake_replicas: mpsc::Sender<()>,
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
        // The two listeners (wake-ups, token changes) hold a connection each.
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(3))
            .acquire_timeout(settings.statement_timeout.max(Duration::from_secs(1)))
            .connect_with(connect)
            .await?;
        let (wake_replicas, asked) = mpsc::channel(1);
        tokio::spawn(send_wakeups(pool.clone(), asked));
        Ok(Self { url: settings.url.clone(), pool, wake_replicas })
    }

    /// Wake every replica's engine (this one's too) after a commit that asked for it.
    fn wake_after_commit(&self, asked: bool) {
        if asked {
            // Full: a NOTIFY is already due and covers this commit as well.
            let _ = self.wake_replicas.try_send(());
        }
    }
}

/// Send the wake-ups committed work asked for, one NOTIFY per burst, outside the work's own
/// transactions. A NOTIFY inside a transaction holds the server's notify-queue lock from before
/// its commit until the commit is flushed, so every trigger's commit waited for the previous
/// one's (pgbench, 32 writers of two inserts: 902 commits/s with a NOTIFY, 4,170 without). A
/// wake-up lost here (the server gone between the commit and the NOTIFY) costs latency only:
/// the engines sweep periodically ([`Driver::wakeups`]).
async fn send_wakeups(pool: PgPool, mut asked: mpsc::Receiver<()>) {
    while asked.recv().await.is_some() {
        let sent = sqlx::query("SELECT pg_notify($1, '')").bind(WAKEUP_CHANNEL).execute(&pool).await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot wake the other replicas; their periodic sweep will find the work");
        }
    }
}

/// A listener on `channel`, retried every second until the server answers.
async fn listen(pool: &PgPool, channel: &str) -> PgListener {
    loop {
        let attempt = async {
            let mut l = PgListener::connect_with(pool).await?;
            l.listen(channel).await?;
            Ok::<_, sqlx::Error>(l)
        };
        match attempt.await {
            Ok(l) => return l,
            Err(e) => {
                tracing::warn!(channel, error = %e, "cannot LISTEN; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The notifications on `channel` from every replica: `None` once listening has started, and
/// again whenever it started anew after a lost connection (notifications sent meanwhile are
/// lost, so a consumer must catch up); `Some(payload)` for each notification.
fn notifications(pool: PgPool, channel: &'static str) -> BoxStream<'static, Option<String>> {
    futures::stream::unfold((pool, None::<PgListener>), move |(pool, listener)| async move {
        match listener {
            None => {
                let l = listen(&pool, channel).await;
                Some((None, (pool, Some(l))))
            }
            Some(mut l) => match l.try_recv().await {
                Ok(Some(n)) => Some((Some(n.payload().to_string()), (pool, Some(l)))),
                // The connection was lost and has been made (and LISTENed) again.
                Ok(None) => {
                    tracing::warn!(channel, "the LISTEN connection was lost and made again");
                    Some((None, (pool, Some(l))))
                }
                Err(e) => {
                    tracing::warn!(channel, error = %e, "the listener failed; listening again");
                    Some((None, (pool, None)))
                }
            },
        }
    })
    .boxed()
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
        // The first item says "listening now"; after a lost connection the stream yields once
        // more, since notifications may have been missed.
        notifications(self.pool.clone(), WAKEUP_CHANNEL).map(|_| ()).boxed()
    }

    fn auth_changes(&self) -> BoxStream<'static, AuthChange> {
        notifications(self.pool.clone(), AUTH_CHANNEL)
            .map(|payload| payload.map_or(AuthChange::All, |p| AuthChange::from_payload(&p)))
            .boxed()
    }

    fn shared_budget(&self) -> Option<Arc<dyn SharedBudget>> {
        Some(Arc::new(budget::PgBudget::new(self.pool.clone())))
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
                let mut tx = PgTx::new(&mut conn);
                let v = job(&mut tx).await?;
                self.wake_after_commit(tx.wake);
                Ok(v)
            }
            // Commit on `Ok`, roll back on `Err`.
            Access::Write | Access::Snapshot => {
                let mut tx = self.pool.begin().await?;
                let mut work = PgTx::new(&mut tx);
                let done = job(&mut work).await;
                let wake = work.wake;
                match done {
                    Ok(v) => {
                        tx.commit().await?;
                        self.wake_after_commit(wake);
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
