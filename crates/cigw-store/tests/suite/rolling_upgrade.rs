//! Rolling upgrades: a replica of this version keeps starting and working after a newer replica
//! applied an additive migration it does not know, and still refuses a database whose known
//! migration was changed.

use std::sync::{Arc, Mutex};

use cigw_core::RunState;
use cigw_store::*;
use serde_json::json;
use tracing::instrument::WithSubscriber;

use super::{Ctx, create, events_of, new_trigger, raw_exec, raw_optional_texts, t};

/// Log lines written while a future runs under [`Captured::subscriber`].
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        tracing_subscriber::fmt().with_writer(self.clone()).with_ansi(false).finish()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The newest migration version the database has recorded.
async fn latest_applied(ctx: &Ctx) -> i64 {
    let latest = raw_optional_texts(ctx, "SELECT CAST(MAX(version) AS TEXT) FROM _sqlx_migrations").await;
    latest.flatten().expect("migrations applied").parse().unwrap()
}

/// What the next release's migration would do, and how sqlx would record it: a nullable column,
/// a column with a default, a new table, and its row in `_sqlx_migrations`.
async fn apply_newer_migration(ctx: &Ctx, version: i64) {
    let checksum = match ctx.backend() {
        Backend::Sqlite => "X'0123456789abcdef'",
        Backend::Postgres => "'\\x0123456789abcdef'::bytea",
    };
    for sql in [
        "ALTER TABLE runs ADD COLUMN review_note TEXT".to_string(),
        "ALTER TABLE run_events ADD COLUMN origin TEXT".to_string(),
        "ALTER TABLE triggers ADD COLUMN priority INTEGER NOT NULL DEFAULT 0".to_string(),
        "CREATE TABLE replica_notes (id BIGINT PRIMARY KEY, note TEXT NOT NULL)".to_string(),
        format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ({version}, 'review notes', TRUE, {checksum}, 1)"
        ),
        // The newer replica already writes into what it added.
        "UPDATE runs SET review_note = 'seen by the newer replica'".to_string(),
        "INSERT INTO replica_notes (id, note) VALUES (1, 'from the newer replica')".to_string(),
    ] {
        raw_exec(ctx, &sql).await;
    }
}

pub async fn a_newer_additive_migration_leaves_this_version_working(ctx: Ctx) {
    let before = create(&ctx.store, new_trigger(&["a"], t(0))).await.runs.remove(0);
    let logs = Captured::default();
    ctx.store.migrate().with_subscriber(logs.subscriber()).await.unwrap();
    assert!(!logs.text().contains("ahead"), "nothing to say while the binary knows every migration: {}", logs.text());
    let newer = latest_applied(&ctx).await + 1;
    apply_newer_migration(&ctx, newer).await;

    // A replica of this version (re)starts: opening and migrating succeed, nothing is undone,
    // and it says that the database is ahead of it.
    let s = ctx.another().await;
    let logs = Captured::default();
    let migrated = s.migrate().with_subscriber(logs.subscriber()).await;
    migrated.expect("a database one additive migration ahead is accepted");
    let logs = logs.text();
    assert!(logs.contains("WARN") && logs.contains("the database schema is ahead of this cigw"), "{logs}");
    assert!(
        logs.contains(&format!("unknown=[{newer}]")) && logs.contains(&format!("known_up_to={}", newer - 1)),
        "{logs}"
    );
    s.migrate().await.expect("and again (every start migrates)");
    assert_eq!(latest_applied(&ctx).await, newer);

    // Intake, dispatch and tracking claims, events and reads all work on the wider schema.
    let old_run = s.get_run(&before.id).await.unwrap();
    assert_eq!(old_run.state, RunState::Pending);
    let mut trigger = new_trigger(&["a", "b"], t(10));
    trigger.idempotency = Some(IdempotencyKey {
        scope: "upgrade".into(),
        key: "k1".into(),
        fingerprint: json!({"n": 1}),
        response: json!({"ok": true}),
        expires_at: t(86_400),
    });
    let created = create(&s, trigger).await;
    assert_eq!(created.runs.len(), 2);

    let claimed = s.claim_dispatch("old-replica", t(20), t(80), 10).await.unwrap();
    assert_eq!(claimed.len(), 3, "the run from before the upgrade and the two new ones");
    let run = &created.runs[0];
    let outcome = DispatchOutcome::Started { run_ref: cigw_core::ProviderRunRef::new("b-1"), next_poll_at: t(25) };
    let update = s.record_dispatch(&run.id, "old-replica", outcome, t(21)).await.unwrap();
    assert_eq!(update.run.state, RunState::Queued);
    assert_eq!(s.release_leases("old-replica").await.unwrap(), 2);

    let polled = s.claim_poll("old-replica", t(30), t(90), 10).await.unwrap();
    assert_eq!(polled.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [run.id.as_str()]);
    let mut status = cigw_core::RunStatus::new(RunState::Succeeded, "success");
    status.observed_at = t(31);
    let update = s.apply_status(&run.id, "old-replica", &status, None).await.unwrap();
    assert_eq!(update.moved_from, Some(RunState::Queued));

    let kinds: Vec<EventKind> = events_of(&s, &run.id).await.iter().map(|e| e.kind).collect();
    assert_eq!(kinds.first(), Some(&EventKind::Created), "{kinds:?}");
    assert!(kinds.contains(&EventKind::Dispatched) && kinds.contains(&EventKind::StateChanged), "{kinds:?}");
    let all = s.events_after(0, &EventFilter::default(), 100).await.unwrap();
    assert!(all.len() >= 5, "{all:?}");

    // What the newer replica wrote is still there: this version left it alone.
    let note = raw_optional_texts(&ctx, &format!("SELECT review_note FROM runs WHERE id = '{}'", before.id)).await;
    assert_eq!(note, Some(Some("seen by the newer replica".into())));
    let kept = raw_optional_texts(&ctx, "SELECT note FROM replica_notes WHERE id = 1").await;
    assert_eq!(kept, Some(Some("from the newer replica".into())));
}

pub async fn a_changed_known_migration_is_refused(ctx: Ctx) {
    let checksum = match ctx.backend() {
        Backend::Sqlite => "X'00'",
        Backend::Postgres => "'\\x00'::bytea",
    };
    raw_exec(&ctx, &format!("UPDATE _sqlx_migrations SET checksum = {checksum} WHERE version = 1")).await;
    let s = ctx.another().await;
    let err = s.migrate().await.expect_err("a modified migration is not tolerated");
    assert!(matches!(err, StoreError::Migration { .. }), "{err:?}");
    assert!(err.to_string().contains("migration 1 was previously applied but has been modified"), "{err}");
}
