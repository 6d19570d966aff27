//! The notification outbox: idempotent enqueue with its cursor, leased claims that keep each
//! run's events in order, outcomes, redelivery, listing and pruning.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cigw_core::config::RetentionSettings;
use cigw_store::*;
use serde_json::json;

use super::{Ctx, t};

fn row(notification: &str, event_id: i64, run_id: &str, secs: i64) -> NewOutboxRow {
    NewOutboxRow {
        notification: notification.into(),
        event_id,
        run_id: run_id.into(),
        payload: json!({"context": {"id": format!("{notification}-{event_id}")}, "n": event_id}),
        created_at: t(secs),
    }
}

fn ids(rows: &[OutboxRecord]) -> Vec<i64> {
    rows.iter().map(|r| r.event_id).collect()
}

fn is_conflict(e: &StoreError) -> bool {
    matches!(e, StoreError::Conflict { .. })
}

pub async fn outbox_enqueue_is_idempotent_and_moves_the_cursor_forward(ctx: Ctx) {
    let s = &ctx.store;
    assert_eq!(s.load_cursor("notifications").await.unwrap(), None);
    super::create(s, super::new_trigger(&["a"], t(0))).await;
    let head = s.last_event_id().await.unwrap();
    assert_eq!(s.start_cursor("notifications").await.unwrap(), head, "a new cursor starts at the newest event");
    assert_eq!(s.start_cursor("notifications").await.unwrap(), head, "and stays where it was");

    let rows = vec![row("n", head + 1, "r1", 1), row("m", head + 1, "r1", 1), row("n", head + 2, "r1", 1)];
    assert_eq!(s.enqueue_outbox("notifications", head + 2, rows.clone()).await.unwrap(), 3);
    assert_eq!(s.load_cursor("notifications").await.unwrap(), Some(head + 2));
    // A second consumer that read the same events (another replica) adds nothing, and its older
    // position never moves the cursor back.
    assert_eq!(s.enqueue_outbox("notifications", head + 1, rows).await.unwrap(), 0);
    assert_eq!(s.load_cursor("notifications").await.unwrap(), Some(head + 2));
    let all = s.list_outbox(&OutboxFilter::default(), None).await.unwrap();
    assert_eq!(all.rows.len(), 3);
    let first = all.rows.last().unwrap();
    assert_eq!((first.status, first.attempts, first.next_attempt_at), (OutboxStatus::Pending, 0, t(1)));
    assert_eq!(first.payload["n"], json!(head + 1));
    assert_eq!(s.count_outbox(OutboxStatus::Pending).await.unwrap(), 3);
    // An empty batch still moves the cursor (events no notification wanted).
    s.enqueue_outbox("notifications", head + 10, vec![]).await.unwrap();
    assert_eq!(s.load_cursor("notifications").await.unwrap(), Some(head + 10));
}

pub async fn outbox_claims_keep_each_runs_order(ctx: Ctx) {
    let s = &ctx.store;
    let rows =
        vec![row("n", 1, "a", 0), row("n", 2, "a", 0), row("n", 3, "a", 0), row("n", 4, "b", 0), row("m", 2, "a", 0)];
    s.enqueue_outbox("c", 4, rows).await.unwrap();
    let claimed = s.claim_outbox("w1", t(10), t(70), 10).await.unwrap();
    let mut got: Vec<(String, i64)> = claimed.iter().map(|r| (r.notification.clone(), r.event_id)).collect();
    got.sort();
    assert_eq!(got, [("m".into(), 2), ("n".into(), 1), ("n".into(), 4)], "only the first pending event of each run");
    assert!(claimed.iter().all(|r| r.attempts == 1 && r.lease_owner.as_deref() == Some("w1")));
    assert!(s.claim_outbox("w2", t(11), t(70), 10).await.unwrap().is_empty(), "leased rows are not claimed again");
    let a1 = claimed.iter().find(|r| r.notification == "n" && r.event_id == 1).unwrap().id;
    for other in claimed.iter().filter(|r| r.id != a1) {
        s.record_outbox(other.id, "w1", OutboxOutcome::Delivered { status: 200 }, t(11)).await.unwrap();
    }

    // A retry keeps the run's later events back until it is delivered or dead-lettered.
    let err = s.record_outbox(a1, "w2", OutboxOutcome::Delivered { status: 200 }, t(12)).await.unwrap_err();
    assert!(is_conflict(&err), "{err:?}");
    let retry = OutboxOutcome::Retry { at: t(100), status: Some(503), error: "HTTP 503".into() };
    let r = s.record_outbox(a1, "w1", retry, t(12)).await.unwrap();
    assert_eq!(
        (r.status, r.last_status, r.last_error.as_deref()),
        (OutboxStatus::Pending, Some(503), Some("HTTP 503"))
    );
    assert_eq!((r.lease_owner, r.next_attempt_at, r.last_attempt_at), (None, t(100), Some(t(12))));
    assert!(s.claim_outbox("w1", t(50), t(110), 10).await.unwrap().is_empty(), "n/a/2 waits for n/a/1");
    let again = s.claim_outbox("w1", t(100), t(160), 10).await.unwrap();
    assert_eq!(ids(&again), [1]);
    assert_eq!(again[0].attempts, 2);
    let dead = OutboxOutcome::Dead { status: Some(410), error: "HTTP 410 Gone".into() };
    let r = s.record_outbox(a1, "w1", dead, t(101)).await.unwrap();
    assert_eq!((r.status, r.finished_at), (OutboxStatus::Dead, Some(t(101))));
    let next = s.claim_outbox("w1", t(102), t(160), 10).await.unwrap();
    assert_eq!(ids(&next), [2], "a dead-lettered event no longer holds the run back");
    assert!(is_conflict(
        &s.record_outbox(a1, "w1", OutboxOutcome::Delivered { status: 200 }, t(102)).await.unwrap_err()
    ));

    // A lease that ended (its worker died) lets another worker take the row; the first one's
    // late outcome is refused.
    let stolen = s.claim_outbox("w2", t(161), t(220), 10).await.unwrap();
    assert_eq!(ids(&stolen), [2]);
    assert_eq!(stolen[0].attempts, 2);
    assert!(is_conflict(
        &s.record_outbox(next[0].id, "w1", OutboxOutcome::Delivered { status: 200 }, t(162)).await.unwrap_err()
    ));
    let r = s.record_outbox(next[0].id, "w2", OutboxOutcome::Delivered { status: 204 }, t(162)).await.unwrap();
    assert_eq!((r.status, r.last_status, r.finished_at), (OutboxStatus::Delivered, Some(204), Some(t(162))));
    assert_eq!(ids(&s.claim_outbox("w2", t(163), t(220), 10).await.unwrap()), [3]);

    // Released leases (graceful shutdown) make a row claimable at once.
    assert!(s.release_leases("w2").await.unwrap() >= 1);
    assert_eq!(ids(&s.claim_outbox("w3", t(164), t(220), 10).await.unwrap()), [3]);
    assert!(matches!(s.get_outbox(999_999).await.unwrap_err(), StoreError::NotFound { .. }));
    assert!(matches!(s.claim_outbox("w", t(0), t(1), 0).await.unwrap_err(), StoreError::Invalid { .. }));
}

pub async fn outbox_redelivery_listing_and_pruning(ctx: Ctx) {
    let s = &ctx.store;
    let rows: Vec<_> = (1..=7).map(|i| row(if i % 2 == 0 { "even" } else { "odd" }, i, &format!("r{i}"), 0)).collect();
    s.enqueue_outbox("c", 7, rows).await.unwrap();
    let claimed = s.claim_outbox("w", t(1), t(60), 100).await.unwrap();
    assert_eq!(claimed.len(), 7);
    let by_event: BTreeMap<i64, i64> = claimed.iter().map(|r| (r.event_id, r.id)).collect();
    for (event, id) in &by_event {
        let outcome = match event {
            1 | 2 => OutboxOutcome::Dead { status: None, error: "connection refused".into() },
            3 => OutboxOutcome::Retry { at: t(500), status: Some(500), error: "HTTP 500".into() },
            _ => OutboxOutcome::Delivered { status: 200 },
        };
        s.record_outbox(*id, "w", outcome, t(2)).await.unwrap();
    }
    assert_eq!(s.count_outbox(OutboxStatus::Dead).await.unwrap(), 2);
    assert_eq!(s.count_outbox(OutboxStatus::Pending).await.unwrap(), 1);
    assert_eq!(s.count_outbox(OutboxStatus::Delivered).await.unwrap(), 4);

    // Listing: filters, newest first, cursor pages.
    let list = |f: OutboxFilter| async move { s.list_outbox(&f, None).await.unwrap() };
    let dead = list(OutboxFilter { status: Some(OutboxStatus::Dead), ..Default::default() }).await;
    assert_eq!(ids(&dead.rows), [2, 1]);
    let odd = list(OutboxFilter { notification: Some("odd".into()), ..Default::default() }).await;
    assert_eq!(ids(&odd.rows), [7, 5, 3, 1]);
    let run = list(OutboxFilter { run_id: Some("r5".into()), ..Default::default() }).await;
    assert_eq!(ids(&run.rows), [5]);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = s.list_outbox(&OutboxFilter { limit: 3, ..Default::default() }, cursor.as_deref()).await.unwrap();
        seen.extend(ids(&page.rows));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, [7, 6, 5, 4, 3, 2, 1]);
    for bad in ["x", "-1", "0", ""] {
        let e = s.list_outbox(&OutboxFilter::default(), Some(bad)).await.unwrap_err();
        assert!(matches!(e, StoreError::Invalid { field: "cursor", .. }), "{bad}: {e:?}");
    }

    // Redelivery: dead or delivered rows only, attempts counted afresh.
    let r = s.redeliver_outbox(by_event[&1], t(600)).await.unwrap();
    assert_eq!((r.status, r.attempts, r.next_attempt_at, r.finished_at), (OutboxStatus::Pending, 0, t(600), None));
    assert_eq!(r.last_error.as_deref(), Some("connection refused"), "the last error stays visible");
    assert!(is_conflict(&s.redeliver_outbox(by_event[&1], t(600)).await.unwrap_err()), "already pending");
    assert!(is_conflict(&s.redeliver_outbox(by_event[&3], t(600)).await.unwrap_err()), "still retrying");
    assert!(matches!(s.redeliver_outbox(123_456, t(600)).await.unwrap_err(), StoreError::NotFound { .. }));
    assert_eq!(s.redeliver_outbox(by_event[&4], t(600)).await.unwrap().status, OutboxStatus::Pending);
    let due: BTreeSet<i64> = ids(&s.claim_outbox("w", t(600), t(660), 10).await.unwrap()).into_iter().collect();
    assert_eq!(due, BTreeSet::from([1, 3, 4]));

    // Retention removes delivered and dead rows that finished before it, never pending ones.
    let day = 86_400;
    let retention = RetentionSettings { outbox: Duration::from_secs(day as u64), ..RetentionSettings::default() };
    let report = s.prune(t(2 * day), &retention).await.unwrap();
    assert_eq!(report.outbox, 4, "rows 2 (dead), 5, 6, 7 (delivered)");
    let left: BTreeSet<i64> =
        ids(&s.list_outbox(&OutboxFilter::default(), None).await.unwrap().rows).into_iter().collect();
    assert_eq!(left, BTreeSet::from([1, 3, 4]));
}

pub async fn concurrent_outbox_workers_never_share_a_row(ctx: Ctx) {
    let s = &ctx.store;
    let mut rows = Vec::new();
    for run in 0..10 {
        for event in 0..6 {
            rows.push(row("n", run * 100 + event, &format!("run{run}"), 0));
        }
    }
    s.enqueue_outbox("c", 10_000, rows).await.unwrap();
    let other = ctx.another().await;
    let log: Arc<parking_lot_free::Log> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..6 {
        let store = if w % 2 == 0 { s.clone() } else { other.clone() };
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("w{w}");
            let mut idle = 0;
            while idle < 20 {
                let got = store.claim_outbox(&owner, t(1), t(1000), 4).await.unwrap();
                if got.is_empty() {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                idle = 0;
                for r in got {
                    log.push((r.run_id.clone(), r.event_id, r.id));
                    store.record_outbox(r.id, &owner, OutboxOutcome::Delivered { status: 200 }, t(2)).await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let seen = log.take();
    let unique: BTreeSet<i64> = seen.iter().map(|(_, _, id)| *id).collect();
    assert_eq!(seen.len(), 60, "every row claimed once: {seen:?}");
    assert_eq!(unique.len(), 60, "a row was claimed twice");
    let mut per_run: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (run, event, _) in seen {
        per_run.entry(run).or_default().push(event);
    }
    for (run, events) in per_run {
        let mut sorted = events.clone();
        sorted.sort();
        assert_eq!(events, sorted, "{run}: a later event was claimed before an earlier one was delivered");
    }
}

/// A log shared by the workers of a test (std's mutex: no await while held).
mod parking_lot_free {
    use std::sync::Mutex;

    /// Claimed rows as (run, event id, row id), in claim order.
    #[derive(Default)]
    pub struct Log(Mutex<Vec<(String, i64, i64)>>);

    impl Log {
        pub fn push(&self, entry: (String, i64, i64)) {
            self.0.lock().unwrap().push(entry);
        }
        pub fn take(&self) -> Vec<(String, i64, i64)> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }
}

pub async fn outbox_claims_and_depth_use_indexes(ctx: Ctx) {
    let s = &ctx.store;
    // A long retention's worth of delivered rows and a few pending ones.
    let rows: Vec<_> = (1..=3000).map(|i| row("n", i, &format!("run{}", i % 500), 0)).collect();
    s.enqueue_outbox("c", 3000, rows).await.unwrap();
    super::raw_exec(&ctx, "UPDATE outbox SET status = 'delivered' WHERE event_id > 20").await;
    if ctx.backend() == Backend::Postgres {
        super::raw_exec(&ctx, "VACUUM ANALYZE").await;
    }
    let p = super::plan(&ctx, HotQuery::ClaimOutbox).await;
    assert!(!super::scans_table(&p, "outbox"), "outbox claim: {p}");
    let p = super::plan(&ctx, HotQuery::CountOutboxPending).await;
    assert!(super::uses_index(&p, "outbox_by_status") && !super::scans_table(&p, "outbox"), "outbox depth: {p}");
}
