//! The behaviour suite (`tests/suite`) run against SQLite (a temporary file per test) and
//! PostgreSQL (a fresh database per test on `CIGW_TEST_DATABASE_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`). PostgreSQL tests never skip: an unreachable server
//! fails them with a message saying so.

mod suite;

use std::sync::Arc;
use std::time::Duration;

use cigw_core::config::DatabaseSettings;
use cigw_store::Store;
use sqlx::Connection;

/// The server the PostgreSQL tests create their databases on.
fn pg_admin_url() -> String {
    std::env::var("CIGW_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A migrated, empty database for one test; dropped (PostgreSQL) or deleted (SQLite) after.
pub(crate) struct TestDb {
    store: Arc<dyn Store>,
    settings: DatabaseSettings,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    pub(crate) async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let settings = DatabaseSettings {
            url: format!("sqlite://{}", dir.path().join("cigw.db").display()),
            ..DatabaseSettings::default()
        };
        let store = cigw_store::open(&settings).await.expect("open SQLite");
        store.migrate().await.expect("migrate SQLite");
        Self { store, settings, _dir: Some(dir), pg_name: None }
    }

    pub(crate) async fn postgres() -> Self {
        let admin = pg_admin_url();
        let mut conn = match sqlx::PgConnection::connect(&admin).await {
            Ok(c) => c,
            Err(e) => panic!(
                "PostgreSQL tests need a server at {} (start it: pg_ctlcluster <version> main start; \
                 or set CIGW_TEST_DATABASE_URL): {e}",
                cigw_core::config::redact_url(&admin)
            ),
        };
        let name = format!("cigw_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
        conn.close().await.ok();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        let settings =
            DatabaseSettings { url: format!("{base}/{name}"), max_connections: 8, ..DatabaseSettings::default() };
        let store = cigw_store::open(&settings).await.expect("open PostgreSQL");
        store.migrate().await.expect("migrate PostgreSQL");
        Self { store, settings, _dir: None, pg_name: Some(name) }
    }

    pub(crate) fn ctx(&self) -> suite::Ctx {
        suite::Ctx { store: self.store.clone(), settings: self.settings.clone() }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else { return };
        let admin = pg_admin_url();
        // Drop runs outside any runtime guarantee: use a short-lived one on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

macro_rules! backend_suite {
    ($backend:ident: $($name:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = super::TestDb::$backend().await;
                    tokio::time::timeout(super::TEST_TIMEOUT, crate::suite::$name(db.ctx())).await.expect("test timed out");
                }
            )*
        }
    };
}

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        backend_suite!(sqlite: $($name),*);
        backend_suite!(postgres: $($name),*);
    };
}

both_backends!(
    create_trigger_stores_everything,
    bad_input_and_missing_rows,
    idempotency_keys,
    concurrent_same_key_creates_once,
    a_failing_write_undoes_only_itself,
    run_updates_write_only_changed_columns,
    claim_dispatch_leases,
    concurrent_claimers_never_share,
    record_dispatch_outcomes,
    adoption_is_unique,
    tracking_applies_forward_only,
    a_run_first_seen_finished_keeps_the_providers_start,
    status_messages_follow_the_current_state,
    poll_now_and_unconfirmed_runs,
    cancel_requests,
    reruns,
    events_read_and_append,
    events_never_skip_under_concurrent_writers,
    list_runs_pages,
    tokens,
    ui_sessions,
    deliveries_chains_and_cursors,
    outbox_enqueue_is_idempotent_and_moves_the_cursor_forward,
    outbox_claims_keep_each_runs_order,
    outbox_redelivery_listing_and_pruning,
    concurrent_outbox_workers_never_share_a_row,
    outbox_claims_and_depth_use_indexes,
    schedule_slots_fire_once_across_replicas,
    callback_deliveries_are_taken_once_across_replicas,
    prune_by_retention,
    wakeups_follow_commits,
    auth_changes_follow_commits,
    secrets_stay_out_of_errors_and_debug,
    frequent_queries_use_indexes,
    run_gauges_are_exact_without_scanning,
    the_oldest_due_dispatch_is_the_oldest_unclaimed_one,
    secret_values_are_dropped_once_sent,
    possibly_sent_dispatches_are_counted_and_never_canceled_blind,
    refreshes_coalesce_against_the_last_read,
    unconfirmed_runs_in_send_order,
    leases_are_renewed_only_while_held,
    supersede_skips_older_unsent_runs_linking_the_newest,
    concurrent_supersedes_across_replicas_keep_one,
    chain_firings_record_links_and_trees,
    joins_keep_the_latest_result_and_fire_once,
    half_complete_joins_expire_with_events,
    hook_deliveries_dedupe_keep_and_prune,
    a_newer_additive_migration_leaves_this_version_working,
    a_changed_known_migration_is_refused,
);

/// The provider budgets replicas share: PostgreSQL books slots one spacing apart under the row's
/// lock, never past `ahead`, never twice; SQLite has none (one process keeps its own limiters).
mod shared_budget {
    use std::time::Duration;

    use cigw_core::ProviderKind;
    use cigw_core::shared_budget::BudgetKey;

    const SPACING: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn sqlite_has_no_shared_budget() {
        assert!(super::TestDb::sqlite().await.store.shared_budget().is_none());
    }

    #[tokio::test]
    async fn postgres_books_slots_in_order_within_reach() {
        let db = super::TestDb::postgres().await;
        let budget = db.store.shared_budget().expect("PostgreSQL shares budgets");
        let key = BudgetKey::new(ProviderKind::Codeship, b"qa@example.com");
        let first = budget.book(&key, SPACING, Duration::from_millis(250), 5).await.unwrap();
        assert_eq!(first.slots, 3, "0, 100 and 200 ms are within 250 ms: {first:?}");
        assert!(first.backlog < SPACING, "{first:?}");
        let refused = budget.book(&key, SPACING, Duration::from_millis(150), 5).await.unwrap();
        assert_eq!(refused.slots, 0, "the next free slot is ~300 ms away: {refused:?}");
        assert!(refused.backlog > Duration::from_millis(150), "{refused:?}");
        let later = budget.book(&key, SPACING, Duration::from_secs(1), 2).await.unwrap();
        assert_eq!(later.slots, 2, "{later:?}");
        assert!(later.backlog >= refused.backlog.saturating_sub(Duration::from_millis(50)), "{later:?}");
        let other = BudgetKey::new(ProviderKind::Codeship, b"ops@example.com");
        let fresh = budget.book(&other, SPACING, Duration::ZERO, 1).await.unwrap();
        assert_eq!((fresh.slots, fresh.backlog < SPACING), (1, true), "another credential's budget is its own");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_replicas_never_book_one_slot_twice() {
        let db = super::TestDb::postgres().await;
        let key = BudgetKey::new(ProviderKind::Circleci, b"token");
        let start = std::time::Instant::now();
        let mut bookings = Vec::new();
        for _ in 0..4 {
            let replica = db.ctx().another().await.shared_budget().unwrap();
            for _ in 0..10 {
                let (replica, key) = (replica.clone(), key.clone());
                bookings
                    .push(tokio::spawn(async move { replica.book(&key, SPACING, Duration::from_secs(3600), 1).await }));
            }
        }
        for booking in bookings {
            assert_eq!(booking.await.unwrap().unwrap().slots, 1);
        }
        // 40 slots one spacing apart, from a moment after `start`: the next free one lies 4 s
        // after it. One slot booked twice would bring it 100 ms closer.
        let next = db.store.shared_budget().unwrap().book(&key, SPACING, Duration::ZERO, 1).await.unwrap();
        let next_free = start.elapsed() + next.backlog;
        assert_eq!(next.slots, 0);
        assert!(next_free >= SPACING * 40 - Duration::from_millis(20), "{next_free:?}");
        assert!(next_free < SPACING * 40 + Duration::from_secs(1), "{next_free:?}");
    }
}

/// `kill -9` of a process writing triggers leaves every trigger whole (trigger row, all its runs,
/// their events and its idempotency key) or absent.
mod crash {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use cigw_core::config::DatabaseSettings;
    use cigw_store::{CreateOutcome, IdempotencyKey, Store, StoreError};
    use serde_json::json;

    use crate::suite::{new_trigger, t};

    const CHILD_URL: &str = "CIGW_STORE_CRASH_CHILD_URL";
    const WRITERS: usize = 4;
    const RUNS_PER_TRIGGER: usize = 3;

    fn trigger_id(writer: usize, i: usize) -> String {
        format!("crash-{writer}-{i}")
    }

    fn key(writer: usize, i: usize) -> IdempotencyKey {
        IdempotencyKey {
            scope: "crash".into(),
            key: trigger_id(writer, i),
            fingerprint: json!({"writer": writer, "i": i}),
            response: json!({"trigger_id": trigger_id(writer, i)}),
            expires_at: t(86_400),
        }
    }

    /// The child: write triggers from several tasks until killed.
    async fn child(url: String) -> ! {
        let settings = DatabaseSettings { url, ..DatabaseSettings::default() };
        let store = cigw_store::open(&settings).await.expect("child opens the store");
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let mut trig = new_trigger(&["a", "b", "c"], t(0));
                    trig.id = trigger_id(w, i);
                    trig.idempotency = Some(key(w, i));
                    store.create_trigger(trig).await.expect("child write");
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
        unreachable!("the writers loop until the process is killed")
    }

    async fn count_whole(store: &dyn Store, writer: usize) -> usize {
        let mut i = 0;
        while store.get_trigger(&trigger_id(writer, i)).await.is_ok() {
            i += 1;
        }
        i
    }

    async fn run(db: crate::TestDb, test_name: &str) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_URL, &db.settings.url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the writer process");
        // Let it commit a good number of triggers, then kill it mid-stream.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let written = count_whole(db.store.as_ref(), 0).await;
            if written >= 25 {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the writer process exited early: {status}");
            }
            assert!(std::time::Instant::now() < deadline, "the writer process wrote only {written} triggers in 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().expect("SIGKILL the writer");
        child.wait().unwrap();

        // A fresh handle, as a restarted gateway would open it.
        let store = cigw_store::open(&db.settings).await.unwrap();
        store.migrate().await.unwrap();
        let mut whole = 0;
        for w in 0..WRITERS {
            let written = count_whole(store.as_ref(), w).await;
            whole += written;
            // Every trigger before the first absent one is whole; none after it exists.
            for i in 0..written {
                let trig = store.get_trigger(&trigger_id(w, i)).await.unwrap();
                assert_eq!(trig.runs.len(), RUNS_PER_TRIGGER, "trigger {} lost runs", trig.id);
                for run in &trig.runs {
                    let events = store
                        .events_after(
                            0,
                            &cigw_store::EventFilter { run_id: Some(run.id.clone()), ..Default::default() },
                            10,
                        )
                        .await
                        .unwrap();
                    assert_eq!(events.len(), 1, "run {} lost its created event", run.id);
                }
                let mut replay = new_trigger(&["a"], t(1));
                replay.idempotency = Some(key(w, i));
                assert_eq!(
                    store.create_trigger(replay).await.unwrap(),
                    CreateOutcome::Replayed { trigger_id: trig.id.clone(), response: key(w, i).response },
                    "the key of {} was lost",
                    trig.id
                );
            }
            for i in written..written + 50 {
                assert!(
                    matches!(store.get_trigger(&trigger_id(w, i)).await, Err(StoreError::NotFound { .. })),
                    "trigger {} exists after a gap",
                    trigger_id(w, i)
                );
            }
            // The next key is absent too (no key without its trigger).
            let mut next = new_trigger(&["a"], t(1));
            next.idempotency = Some(key(w, written));
            assert!(matches!(store.create_trigger(next).await.unwrap(), CreateOutcome::Created(_)));
        }
        assert!(whole >= 25);
        eprintln!("{whole} whole triggers survived the SIGKILL");
        let mut total_runs = 0;
        let mut cursor = None;
        loop {
            let filter = cigw_store::RunFilter { limit: 1000, ..Default::default() };
            let page = store.list_runs(&filter, cursor.as_deref()).await.unwrap();
            total_runs += page.runs.len();
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(total_runs, whole * RUNS_PER_TRIGGER + WRITERS, "no orphan runs");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        let db = if let Ok(url) = std::env::var(CHILD_URL) { child(url).await } else { crate::TestDb::sqlite().await };
        run(db, "crash::sqlite").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        let db =
            if let Ok(url) = std::env::var(CHILD_URL) { child(url).await } else { crate::TestDb::postgres().await };
        run(db, "crash::postgres").await;
    }
}

/// PostgreSQL event ids without a global lock (migration 0009): an event whose transaction is
/// still open holds every later id back from readers until it ends, so a reader tailing by id
/// never skips it; a rolled-back one stops holding anything back. SQLite's single writer cannot
/// have two writes open, so this is PostgreSQL's own test.
mod event_horizon {
    use cigw_store::EventFilter;
    use sqlx::Connection;

    async fn ids_after(store: &dyn cigw_store::Store, after: i64) -> Vec<i64> {
        store.events_after(after, &EventFilter::default(), 100).await.unwrap().into_iter().map(|e| e.id).collect()
    }

    async fn open_event(url: &str) -> (sqlx::PgConnection, i64) {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO run_events (id, run_id, trigger_id, target, kind, state, data, created_at)
             OVERRIDING SYSTEM VALUE
             VALUES (cigw_next_event_id(), 'r-open', 't-open', 'web', 'created', 'pending', '{}', now())
             RETURNING id",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        (conn, id)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn readers_wait_for_an_older_open_event() {
        let db = super::TestDb::postgres().await;
        let ctx = db.ctx();
        let run = crate::suite::create(&ctx.store, crate::suite::new_trigger(&["web"], crate::suite::t(0))).await;
        let run = run.runs[0].id.clone();
        let store = ctx.store.as_ref();
        let base = store.last_event_id().await.unwrap();
        let before = crate::suite::append_some_events(store, &run, 2).await;
        let (mut open, held) = open_event(&ctx.settings.url).await;
        assert!(held > *before.last().unwrap());
        let later = crate::suite::append_some_events(store, &run, 3).await;
        assert!(later.iter().all(|id| *id > held), "later writers drew later ids");

        // Committed events after the open one stay unread, and "from now" starts below it.
        assert_eq!(ids_after(store, base).await, before);
        assert_eq!(store.last_event_id().await.unwrap(), *before.last().unwrap());

        sqlx::query("COMMIT").execute(&mut open).await.unwrap();
        let mut all = before.clone();
        all.push(held);
        all.extend(&later);
        assert_eq!(ids_after(store, base).await, all, "every id, in order, once the older one committed");

        // A rolled-back writer holds nothing back once it has ended.
        let (mut aborted, _) = open_event(&ctx.settings.url).await;
        let after_abort = crate::suite::append_some_events(store, &run, 1).await;
        assert_eq!(ids_after(store, *all.last().unwrap()).await, Vec::<i64>::new());
        sqlx::query("ROLLBACK").execute(&mut aborted).await.unwrap();
        assert_eq!(ids_after(store, *all.last().unwrap()).await, after_abort);
        assert_eq!(store.last_event_id().await.unwrap(), *after_abort.last().unwrap());
    }
}
