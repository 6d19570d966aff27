//! The behaviour suite, written once against `Arc<dyn Store>` and instantiated per backend in
//! `tests/store.rs`.

#![allow(unreachable_pub)]

mod chains;
pub use chains::*;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use cigw_core::config::{DatabaseSettings, RetentionSettings};
use cigw_core::{GitRef, ParamValue, Parameters, ProviderKind, ProviderRunRef, RunState, RunStatus};
use cigw_store::*;
use futures::StreamExt;
use serde_json::json;

mod outbox;
pub use outbox::*;

mod rolling_upgrade;
pub use rolling_upgrade::*;

/// What a suite test gets: a migrated, empty store, and the settings to open another handle
/// on the same database (a second replica or process).
pub struct Ctx {
    pub store: Arc<dyn Store>,
    pub settings: DatabaseSettings,
}

impl Ctx {
    pub async fn another(&self) -> Arc<dyn Store> {
        cigw_store::open(&self.settings).await.expect("open a second handle")
    }

    /// Which database this test runs on.
    pub fn backend(&self) -> Backend {
        cigw_store::backend_of(&self.settings.url).unwrap()
    }
}

pub fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

pub fn id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub fn params() -> Parameters {
    let mut p = Parameters::new();
    p.insert("env", ParamValue::String("staging".into()), false);
    p.insert("deploy_key", ParamValue::String("s3cr3t-value".into()), true);
    p.insert("retries", ParamValue::Int(3), false);
    p
}

pub fn new_run(target: &str, at: DateTime<Utc>) -> NewRun {
    NewRun {
        id: id(),
        target: target.into(),
        provider: ProviderKind::Circleci,
        account: "main".into(),
        git_ref: GitRef::branch("main").with_sha("abcdef1"),
        parameters: params(),
        chain_parent: None,
        rerun_of: None,
        rerun_failed_only: false,
        dispatch_at: at,
    }
}

pub fn new_trigger(targets: &[&str], at: DateTime<Utc>) -> NewTrigger {
    NewTrigger {
        id: id(),
        source: "api".into(),
        requested_by: "token-ci".into(),
        request: json!({"targets": targets, "ref": {"branch": "main"}}),
        labels: json!({"team": "web"}),
        created_at: at,
        runs: targets.iter().map(|tg| new_run(tg, at)).collect(),
        idempotency: None,
        chain_firing: None,
        schedule_slot: None,
        hook_delivery: None,
    }
}

/// Append `n` events to `run_id`, each committed on its own; their ids in order.
pub async fn append_some_events(store: &dyn Store, run_id: &str, n: usize) -> Vec<i64> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let event =
            NewEvent { run_id: run_id.into(), kind: EventKind::Approved, data: json!({"i": i}), created_at: t(0) };
        ids.push(store.append_event(event).await.expect("append_event").id);
    }
    ids
}

pub async fn create(store: &Arc<dyn Store>, trigger: NewTrigger) -> TriggerRecord {
    match store.create_trigger(trigger).await.expect("create_trigger") {
        CreateOutcome::Created(t) => t,
        other => panic!("expected Created, got {other:?}"),
    }
}

/// One pending run of target `a`, created at `t(0)`.
async fn one_run(store: &Arc<dyn Store>) -> RunRecord {
    create(store, new_trigger(&["a"], t(0))).await.runs.remove(0)
}

/// A run dispatched (queued, provider build `build`) and not leased.
async fn dispatched(store: &Arc<dyn Store>, build: &str) -> RunRecord {
    let run = one_run(store).await;
    let claimed = store.claim_dispatch("d", t(1), t(61), 10).await.unwrap();
    assert!(claimed.iter().any(|r| r.id == run.id));
    let outcome = DispatchOutcome::Started { run_ref: ProviderRunRef::new(build), next_poll_at: t(5) };
    store.record_dispatch(&run.id, "d", outcome, t(2)).await.unwrap().run
}

fn status(state: RunState, raw: &str, at: DateTime<Utc>) -> RunStatus {
    let mut s = RunStatus::new(state, raw);
    s.observed_at = at;
    s
}

pub(crate) async fn events_of(store: &Arc<dyn Store>, run_id: &str) -> Vec<EventRecord> {
    let filter = EventFilter { run_id: Some(run_id.into()), ..Default::default() };
    store.events_after(0, &filter, 1000).await.unwrap()
}

fn is_conflict(e: &StoreError) -> bool {
    matches!(e, StoreError::Conflict { .. })
}

// ---------------------------------------------------------------------------------------------

pub async fn create_trigger_stores_everything(ctx: Ctx) {
    let s = &ctx.store;
    let trig = new_trigger(&["a", "b"], t(0));
    let created = create(s, trig.clone()).await;
    assert_eq!(created.runs.len(), 2);
    let stored = s.get_trigger(&trig.id).await.unwrap();
    assert_eq!(stored, created, "what create_trigger returns is what is stored");
    assert_eq!(stored.source, "api");
    assert_eq!(stored.request, trig.request);
    assert_eq!(stored.labels, json!({"team": "web"}));
    for (run, new) in stored.runs.iter().zip(&trig.runs) {
        assert_eq!(run.id, new.id);
        assert_eq!(run.trigger_id, trig.id);
        assert_eq!(run.state, RunState::Pending);
        assert_eq!(run.provider, ProviderKind::Circleci);
        assert_eq!(run.git_ref, GitRef::branch("main").with_sha("abcdef1"));
        assert_eq!(run.parameters, params(), "secrets are stored so the run can be dispatched");
        assert_eq!(run.requested_by, "token-ci");
        assert_eq!(run.next_dispatch_at, Some(t(0)));
        assert_eq!(run.dispatch_attempts, 0);
        assert!(!format!("{run:?}").contains("s3cr3t-value"), "Debug masks secret parameters");
        let events = events_of(s, &run.id).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Created);
        assert_eq!(events[0].state, RunState::Pending);
        assert_eq!(events[0].trigger_id, trig.id);
        assert_eq!(events[0].data["parameters"]["deploy_key"], "***", "events carry masked parameters");
        assert_eq!(events[0].data["parameters"]["env"], "staging");
    }
    assert_eq!(runs_of_trigger(s, &trig.id).await, stored.runs);
    assert_eq!(s.get_run(&trig.runs[1].id).await.unwrap(), stored.runs[1]);
}

pub async fn bad_input_and_missing_rows(ctx: Ctx) {
    let s = &ctx.store;
    let mut empty = new_trigger(&["a"], t(0));
    empty.runs.clear();
    match s.create_trigger(empty).await {
        Err(StoreError::Invalid { field: "runs", .. }) => {}
        other => panic!("expected Invalid runs, got {other:?}"),
    }
    assert!(matches!(s.get_run("nope").await, Err(StoreError::NotFound { .. })));
    assert!(matches!(s.get_trigger("nope").await, Err(StoreError::NotFound { .. })));
    assert!(matches!(s.request_cancel("nope", t(0)).await, Err(StoreError::NotFound { .. })));
    let page = s.list_runs(&RunFilter { limit: 0, ..Default::default() }, None).await;
    assert!(matches!(page, Err(StoreError::Invalid { field: "limit", .. })));
    let page = s.list_runs(&RunFilter::default(), Some("garbage")).await;
    assert!(matches!(page, Err(StoreError::Invalid { field: "cursor", .. })));
    // A duplicate trigger id is a conflict and leaves nothing half-written.
    let trig = new_trigger(&["a"], t(0));
    create(s, trig.clone()).await;
    let mut dup = new_trigger(&["b"], t(1));
    dup.id = trig.id.clone();
    let run_id = dup.runs[0].id.clone();
    assert!(is_conflict(&s.create_trigger(dup).await.unwrap_err()));
    assert!(matches!(s.get_run(&run_id).await, Err(StoreError::NotFound { .. })));
    s.ping().await.unwrap();
    assert!(s.describe().starts_with(ctx.backend().as_str()));
}

pub async fn idempotency_keys(ctx: Ctx) {
    let s = &ctx.store;
    let key = |fingerprint: serde_json::Value, expires: DateTime<Utc>| IdempotencyKey {
        scope: "token-1".into(),
        key: "k-1".into(),
        fingerprint,
        response: json!({"answer": 1}),
        expires_at: expires,
    };
    let mut first = new_trigger(&["a"], t(0));
    first.idempotency = Some(key(json!({"a": 1, "b": [1, 2]}), t(100)));
    let first = create(s, first).await;

    // Equal body (as JSON: key order does not matter) → replay, nothing stored.
    let mut again = new_trigger(&["a"], t(10));
    again.idempotency = Some(key(json!({"b": [1, 2], "a": 1}), t(110)));
    let again_run = again.runs[0].id.clone();
    assert_eq!(
        s.create_trigger(again).await.unwrap(),
        CreateOutcome::Replayed { trigger_id: first.id.clone(), response: json!({"answer": 1}) }
    );
    assert!(matches!(s.get_run(&again_run).await, Err(StoreError::NotFound { .. })));

    // Different body → conflict.
    let mut other = new_trigger(&["a"], t(20));
    other.idempotency = Some(key(json!({"a": 2}), t(120)));
    assert_eq!(s.create_trigger(other).await.unwrap(), CreateOutcome::KeyConflict { trigger_id: first.id.clone() });

    // Same key under another token's scope is independent.
    let mut scoped = new_trigger(&["a"], t(30));
    scoped.idempotency = Some(IdempotencyKey { scope: "token-2".into(), ..key(json!({"a": 2}), t(130)) });
    create(s, scoped).await;

    // Expired (at t(100)) → treated as absent and replaced by the new one.
    let mut late = new_trigger(&["a"], t(100));
    late.idempotency = Some(key(json!({"a": 3}), t(200)));
    let late = create(s, late).await;
    let mut replay_late = new_trigger(&["a"], t(150));
    replay_late.idempotency = Some(key(json!({"a": 3}), t(250)));
    assert_eq!(
        s.create_trigger(replay_late).await.unwrap(),
        CreateOutcome::Replayed { trigger_id: late.id, response: json!({"answer": 1}) }
    );
}

pub async fn concurrent_same_key_creates_once(ctx: Ctx) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = ctx.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut trig = new_trigger(&["a"], t(0));
            trig.idempotency = Some(IdempotencyKey {
                scope: "tok".into(),
                key: "same".into(),
                fingerprint: json!({"x": 1}),
                response: json!({"trigger": trig.id}),
                expires_at: t(1000),
            });
            s.create_trigger(trig).await.unwrap()
        }));
    }
    let mut created = 0;
    let mut replayed = 0;
    for task in tasks {
        match task.await.unwrap() {
            CreateOutcome::Created(_) => created += 1,
            CreateOutcome::Replayed { .. } => replayed += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((created, replayed), (1, 7));
    let page = ctx.store.list_runs(&RunFilter::default(), None).await.unwrap();
    assert_eq!(page.runs.len(), 1);
}

/// A write that fails half-way (its second run repeats the first run's id) leaves nothing
/// behind, alone or among concurrent writes that SQLite commits together, and takes none of them
/// down with it.
pub async fn a_failing_write_undoes_only_itself(ctx: Ctx) {
    let half_written = |at| {
        let mut trig = new_trigger(&["a", "b"], at);
        trig.runs[1].id = trig.runs[0].id.clone();
        trig
    };
    let alone = half_written(t(0));
    assert!(ctx.store.create_trigger(alone.clone()).await.is_err(), "a repeated run id is refused");
    assert!(ctx.store.get_trigger(&alone.id).await.is_err(), "nothing of the failed write is kept");
    assert!(ctx.store.get_run(&alone.runs[0].id).await.is_err());

    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = ctx.store.clone();
        let trig = if i % 4 == 1 { half_written(t(i)) } else { new_trigger(&["a"], t(i)) };
        tasks.push(tokio::spawn(async move { (trig.clone(), s.create_trigger(trig).await) }));
    }
    let (mut kept, mut refused) = (0, 0);
    for task in tasks {
        let (trig, outcome) = task.await.unwrap();
        let stored = ctx.store.get_trigger(&trig.id).await;
        if trig.runs.len() == 2 {
            assert!(outcome.is_err(), "the half-written trigger is refused");
            assert!(stored.is_err(), "and not kept");
            assert!(ctx.store.get_run(&trig.runs[0].id).await.is_err(), "nor its first run");
            refused += 1;
        } else {
            assert!(matches!(outcome, Ok(CreateOutcome::Created(_))), "{outcome:?}");
            let stored = stored.expect("a good write beside a failing one is kept");
            assert_eq!(stored.runs.len(), 1);
            kept += 1;
        }
    }
    assert_eq!((kept, refused), (30, 10));
    let events = ctx.store.events_after(0, &EventFilter::default(), 1000).await.unwrap();
    assert_eq!(events.len(), 30, "one `created` event per kept run, none of the refused ones");
}

pub async fn claim_dispatch_leases(ctx: Ctx) {
    let s = &ctx.store;
    let run = one_run(s).await;
    let mut later = new_trigger(&["b"], t(0));
    later.runs[0].dispatch_at = t(50);
    let later = create(s, later).await.runs.remove(0);

    let claimed = s.claim_dispatch("d1", t(1), t(31), 10).await.unwrap();
    assert_eq!(claimed.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![run.id.clone()], "not yet due runs wait");
    assert_eq!(claimed[0].dispatch_attempts, 1);
    assert_eq!(claimed[0].lease_owner.as_deref(), Some("d1"));
    assert_eq!(claimed[0].lease_until, Some(t(31)));

    assert!(s.claim_dispatch("d2", t(10), t(40), 10).await.unwrap().is_empty(), "a held lease is skipped");
    // d1 crashed: after its lease ends, d2 gets the run and sees a second attempt.
    let reclaimed = s.claim_dispatch("d2", t(60), t(90), 10).await.unwrap();
    let ids: Vec<_> = reclaimed.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, vec![run.id.clone(), later.id.clone()], "oldest due first");
    assert_eq!(reclaimed[0].dispatch_attempts, 2);
    // The crashed owner can no longer record anything.
    let stale = s.record_dispatch(&run.id, "d1", DispatchOutcome::Refused { message: "x".into() }, t(61)).await;
    assert!(is_conflict(&stale.unwrap_err()));
    assert_eq!(s.get_run(&run.id).await.unwrap().state, RunState::Pending);
    assert_eq!(s.release_leases("d2").await.unwrap(), 2);
    assert!(s.get_run(&run.id).await.unwrap().lease_owner.is_none());
    assert_eq!(s.claim_dispatch("d3", t(61), t(91), 1).await.unwrap().len(), 1, "limit is honoured");
}

pub async fn concurrent_claimers_never_share(ctx: Ctx) {
    let s = &ctx.store;
    let mut all = BTreeSet::new();
    for i in 0..12 {
        let trig = create(s, new_trigger(&["a", "b", "c", "d", "e"], t(i))).await;
        all.extend(trig.runs.into_iter().map(|r| r.id));
    }
    let other = ctx.another().await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = if w % 2 == 0 { s.clone() } else { other.clone() };
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store.claim_dispatch(&format!("w{w}"), t(100), t(400), 3).await.unwrap();
                if got.is_empty() {
                    break mine;
                }
                mine.extend(got.into_iter().map(|r| r.id));
            }
        }));
    }
    let mut seen = Vec::new();
    for task in tasks {
        seen.extend(task.await.unwrap());
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), unique.len(), "a run was claimed twice");
    assert_eq!(unique, all, "every due run was claimed");
}

pub async fn record_dispatch_outcomes(ctx: Ctx) {
    let s = &ctx.store;
    let trig = create(s, new_trigger(&["a", "b", "c", "d", "e"], t(0))).await;
    let ids: Vec<String> = trig.runs.iter().map(|r| r.id.clone()).collect();
    assert_eq!(s.claim_dispatch("d", t(1), t(60), 10).await.unwrap().len(), 5);

    let run_ref =
        ProviderRunRef { number: Some(42), url: Some("https://ci/p/42".into()), ..ProviderRunRef::new("p-1") };
    let started = s
        .record_dispatch(&ids[0], "d", DispatchOutcome::Started { run_ref: run_ref.clone(), next_poll_at: t(10) }, t(2))
        .await
        .unwrap();
    assert_eq!(started.moved_from, Some(RunState::Pending));
    let r = s.get_run(&ids[0]).await.unwrap();
    assert_eq!(r, started.run);
    assert_eq!(
        (r.state, r.provider_ref.clone(), r.next_poll_at, r.queued_at),
        (RunState::Queued, Some(run_ref), Some(t(10)), Some(t(2)))
    );
    assert!(r.lease_owner.is_none() && r.next_dispatch_at.is_none());

    let unconfirmed = DispatchOutcome::Unconfirmed { sent_at: t(2), deadline: t(300), next_poll_at: t(20) };
    let r = s.record_dispatch(&ids[1], "d", unconfirmed, t(3)).await.unwrap().run;
    assert_eq!(
        (r.state, r.unconfirmed, r.sent_at, r.confirm_deadline),
        (RunState::Queued, true, Some(t(2)), Some(t(300)))
    );

    let r = s
        .record_dispatch(&ids[2], "d", DispatchOutcome::NothingToRun { message: "no workflows".into() }, t(3))
        .await
        .unwrap()
        .run;
    assert_eq!((r.state, r.message.as_deref(), r.finished_at), (RunState::Skipped, Some("no workflows"), Some(t(3))));

    let r = s
        .record_dispatch(&ids[3], "d", DispatchOutcome::Refused { message: "bad branch".into() }, t(3))
        .await
        .unwrap()
        .run;
    assert_eq!((r.state, r.message.as_deref()), (RunState::Error, Some("bad branch")));

    let retry = DispatchOutcome::RetryAt { at: t(30), reason: "rate limited".into() };
    let u = s.record_dispatch(&ids[4], "d", retry, t(3)).await.unwrap();
    assert_eq!((u.run.state, u.moved_from, u.run.next_dispatch_at), (RunState::Pending, None, Some(t(30))));
    assert!(u.run.lease_owner.is_none());
    assert!(s.claim_dispatch("d", t(29), t(60), 10).await.unwrap().is_empty());
    let again = s.claim_dispatch("d", t(30), t(60), 10).await.unwrap();
    assert_eq!((again.len(), again[0].dispatch_attempts), (1, 2));

    // Each outcome wrote exactly one event after `created`.
    let kinds: Vec<Vec<String>> = futures::future::join_all(ids.iter().map(|id| events_of(s, id)))
        .await
        .into_iter()
        .map(|evs| evs.into_iter().map(|e| e.kind.to_string()).collect())
        .collect();
    for k in &kinds[..4] {
        assert_eq!(k, &vec!["created".to_string(), "dispatched".to_string()]);
    }
    assert_eq!(kinds[4], vec!["created".to_string(), "dispatch_retry".to_string()]);
    let ev = events_of(s, &ids[0]).await.pop().unwrap();
    assert_eq!(
        (ev.state, ev.data["from"].as_str(), ev.data["to"].as_str()),
        (RunState::Queued, Some("pending"), Some("queued"))
    );
    // A terminal run cannot be dispatched again.
    assert!(s.record_dispatch(&ids[2], "d", DispatchOutcome::Refused { message: "x".into() }, t(4)).await.is_err());
}

pub async fn adoption_is_unique(ctx: Ctx) {
    let s = &ctx.store;
    let first = dispatched(s, "build-1").await;
    assert_eq!(s.provider_ref_owner("a", "build-1", 1).await.unwrap(), Some(first.id.clone()));
    assert_eq!(s.provider_ref_owner("a", "build-1", 2).await.unwrap(), None);
    assert_eq!(s.provider_ref_owner("other", "build-1", 1).await.unwrap(), None);

    // An unconfirmed run cannot adopt a build another run owns; it can adopt a free one.
    let trig = create(s, new_trigger(&["a"], t(0))).await;
    let run = &trig.runs[0];
    s.claim_dispatch("d", t(1), t(60), 10).await.unwrap();
    let unconfirmed = DispatchOutcome::Unconfirmed { sent_at: t(1), deadline: t(300), next_poll_at: t(20) };
    s.record_dispatch(&run.id, "d", unconfirmed, t(2)).await.unwrap();
    assert!(is_conflict(&s.adopt(&run.id, ProviderRunRef::new("build-1"), t(3)).await.unwrap_err()));
    let adopted = s.adopt(&run.id, ProviderRunRef::new("build-2"), t(3)).await.unwrap().run;
    assert!(!adopted.unconfirmed);
    assert_eq!(adopted.next_poll_at, Some(t(3)));
    assert_eq!(
        s.adopt(&run.id, ProviderRunRef::new("build-2"), t(4)).await.unwrap().run.provider_ref,
        adopted.provider_ref
    );
    assert!(is_conflict(&s.adopt(&run.id, ProviderRunRef::new("build-3"), t(4)).await.unwrap_err()));
    assert_eq!(events_of(s, &run.id).await.last().unwrap().kind, EventKind::Adopted);
    // A second attempt of the same build is a different key (a Codeship restart).
    let third = one_run(s).await;
    let attempt2 = ProviderRunRef { attempt: 2, ..ProviderRunRef::new("build-1") };
    s.adopt(&third.id, attempt2, t(5)).await.unwrap();

    // Two adopters of one build at once: exactly one conflict, from any handle.
    let other = ctx.another().await;
    let a = one_run(s).await;
    let b = one_run(s).await;
    let (ra, rb) = tokio::join!(
        s.adopt(&a.id, ProviderRunRef::new("build-9"), t(6)),
        other.adopt(&b.id, ProviderRunRef::new("build-9"), t(6)),
    );
    let conflicts = [&ra, &rb].iter().filter(|r| r.as_ref().is_err_and(is_conflict)).count();
    let oks = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
    assert_eq!((oks, conflicts), (1, 1), "{ra:?} / {rb:?}");
    let owner = s.provider_ref_owner("a", "build-9", 1).await.unwrap().unwrap();
    assert!(owner == a.id || owner == b.id);

    // record_dispatch(Started) with an owned build is refused the same way.
    let c = one_run(s).await;
    s.claim_dispatch("d", t(7), t(60), 10).await.unwrap();
    let taken = DispatchOutcome::Started { run_ref: ProviderRunRef::new("build-9"), next_poll_at: t(8) };
    assert!(is_conflict(&s.record_dispatch(&c.id, "d", taken, t(7)).await.unwrap_err()));
    assert_eq!(s.get_run(&c.id).await.unwrap().state, RunState::Pending);
}

/// A run first seen at its end (a short build read once, after its callback) keeps the
/// provider's start time, so its duration (the dashboard's median) is known; a start time seen
/// while it ran is not replaced.
pub async fn a_run_first_seen_finished_keeps_the_providers_start(ctx: Ctx) {
    let s = &ctx.store;
    let run = dispatched(s, "b-quick").await;
    assert_eq!(s.claim_poll("t", t(5), t(35), 10).await.unwrap().len(), 1);
    let mut done = status(RunState::Succeeded, "success", t(9));
    done.started_at = Some(t(3));
    done.finished_at = Some(t(8));
    let r = s.apply_status(&run.id, "t", &done, None).await.unwrap().run;
    assert_eq!((r.state, r.started_at, r.finished_at), (RunState::Succeeded, Some(t(3)), Some(t(8))));

    let seen_running = dispatched(s, "b-seen").await;
    assert_eq!(s.claim_poll("t", t(5), t(35), 10).await.unwrap().len(), 1);
    s.apply_status(&seen_running.id, "t", &status(RunState::Running, "running", t(6)), Some(t(7))).await.unwrap();
    assert_eq!(s.claim_poll("t", t(7), t(37), 10).await.unwrap().len(), 1);
    let mut ended = status(RunState::Succeeded, "success", t(9));
    ended.started_at = Some(t(2));
    let r = s.apply_status(&seen_running.id, "t", &ended, None).await.unwrap().run;
    assert_eq!(r.started_at, Some(t(6)), "the start seen while it ran stays");
}

pub async fn tracking_applies_forward_only(ctx: Ctx) {
    let s = &ctx.store;
    let run = dispatched(s, "b-1").await;
    assert!(s.claim_poll("t", t(4), t(34), 10).await.unwrap().is_empty(), "not due before next_poll_at");
    let pending = one_run(s).await;
    let claimed = s.claim_poll("t", t(5), t(35), 10).await.unwrap();
    assert_eq!(
        claimed.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![run.id.clone()],
        "only dispatched runs are polled"
    );
    assert!(s.claim_poll("t2", t(6), t(36), 10).await.unwrap().is_empty(), "leased");
    assert!(is_conflict(
        &s.apply_status(&run.id, "t2", &status(RunState::Running, "running", t(6)), Some(t(9))).await.unwrap_err()
    ));

    let mut running = status(RunState::Running, "running", t(6));
    running.started_at = Some(t(5));
    let u = s.apply_status(&run.id, "t", &running, Some(t(16))).await.unwrap();
    assert_eq!(u.moved_from, Some(RunState::Queued));
    assert!(!u.stale);
    let r = s.get_run(&run.id).await.unwrap();
    assert_eq!(r, u.run);
    assert_eq!(
        (r.state, r.raw_status.as_deref(), r.started_at, r.observed_at),
        (RunState::Running, Some("running"), Some(t(5)), Some(t(6)))
    );
    assert_eq!((r.next_poll_at, r.lease_owner.clone()), (Some(t(16)), None));
    let ev = events_of(s, &run.id).await.pop().unwrap();
    assert_eq!((ev.kind, ev.state), (EventKind::StateChanged, RunState::Running));
    assert_eq!(ev.data["detail"]["raw_status"], "running");

    // An older observation is dropped; a backward move is not a move; both keep polling.
    s.claim_poll("t", t(16), t(46), 10).await.unwrap();
    let old = s.apply_status(&run.id, "t", &status(RunState::Succeeded, "success", t(4)), Some(t(20))).await.unwrap();
    assert!(old.stale);
    assert_eq!((old.run.state, old.moved_from), (RunState::Running, None));
    s.claim_poll("t", t(20), t(50), 10).await.unwrap();
    let back = s.apply_status(&run.id, "t", &status(RunState::Queued, "queued", t(20)), Some(t(30))).await.unwrap();
    assert_eq!((back.run.state, back.moved_from, back.stale), (RunState::Running, None, false));
    assert_eq!(events_of(s, &run.id).await.len(), 3, "created, dispatched, one state change");

    s.claim_poll("t", t(30), t(60), 10).await.unwrap();
    let mut done = status(RunState::Failed, "failed", t(31));
    done.finished_at = Some(t(29));
    done.message = Some("tests failed".into());
    let u = s.apply_status(&run.id, "t", &done, Some(t(40))).await.unwrap();
    assert_eq!(u.moved_from, Some(RunState::Running));
    assert_eq!((u.run.state, u.run.finished_at, u.run.next_poll_at), (RunState::Failed, Some(t(29)), None));
    assert_eq!(u.run.message.as_deref(), Some("tests failed"));
    assert!(s.claim_poll("t", t(100), t(130), 10).await.unwrap().is_empty(), "terminal runs are not polled");
    s.poll_now(&run.id, t(101)).await.unwrap();
    assert_eq!(s.get_run(&run.id).await.unwrap().next_poll_at, None, "poll_now leaves ended runs alone");
    assert_eq!(s.get_run(&pending.id).await.unwrap().next_poll_at, None);
}

pub async fn status_messages_follow_the_current_state(ctx: Ctx) {
    let s = &ctx.store;
    let run = dispatched(s, "b-1").await;
    let mut blocked = status(RunState::Blocked, "pending-approval", t(6));
    blocked.message = Some("waiting at an approval step".into());
    s.claim_poll("t", t(5), t(35), 10).await.unwrap();
    let u = s.apply_status(&run.id, "t", &blocked, Some(t(16))).await.unwrap();
    assert_eq!(u.run.message.as_deref(), Some("waiting at an approval step"));
    s.claim_poll("t", t(16), t(46), 10).await.unwrap();
    let same = s.apply_status(&run.id, "t", &status(RunState::Blocked, "pending-approval", t(17)), Some(t(20))).await;
    assert_eq!(same.unwrap().run.message.as_deref(), Some("waiting at an approval step"), "same state keeps it");
    s.claim_poll("t", t(20), t(50), 10).await.unwrap();
    let u = s.apply_status(&run.id, "t", &status(RunState::Running, "running", t(21)), Some(t(30))).await.unwrap();
    assert_eq!(u.moved_from, Some(RunState::Blocked));
    assert_eq!(u.run.message, None, "a new state without a message clears the old one");
}

pub async fn poll_now_and_unconfirmed_runs(ctx: Ctx) {
    let s = &ctx.store;
    let run = dispatched(s, "b-1").await;
    s.poll_now(&run.id, t(3)).await.unwrap();
    assert_eq!(s.claim_poll("t", t(3), t(33), 10).await.unwrap().len(), 1);
    assert!(matches!(s.poll_now("missing", t(3)).await, Err(StoreError::NotFound { .. })));

    let un = one_run(s).await;
    s.claim_dispatch("d", t(4), t(60), 10).await.unwrap();
    s.record_dispatch(
        &un.id,
        "d",
        DispatchOutcome::Unconfirmed { sent_at: t(4), deadline: t(10), next_poll_at: t(5) },
        t(4),
    )
    .await
    .unwrap();
    let due = s.claim_poll("t", t(5), t(35), 10).await.unwrap();
    assert_eq!(due.iter().filter(|r| r.id == un.id).count(), 1, "unconfirmed runs are tracked for correlation");
    // Past its deadline the gateway ends it.
    let u = s
        .set_state(&un.id, RunState::Error, Some("accepted but no build appeared".into()), EventKind::Error, t(11))
        .await
        .unwrap();
    assert_eq!((u.run.state, u.moved_from), (RunState::Error, Some(RunState::Queued)));
    assert!(u.run.lease_owner.is_none() && u.run.next_poll_at.is_none());
    assert_eq!(u.run.message.as_deref(), Some("accepted but no build appeared"));
    let ev = events_of(s, &un.id).await.pop().unwrap();
    assert_eq!((ev.kind, ev.state), (EventKind::Error, RunState::Error));
    // The machine refuses moves out of a terminal state: nothing changes, no event.
    let refused = s.set_state(&un.id, RunState::Running, None, EventKind::StateChanged, t(12)).await.unwrap();
    assert_eq!((refused.run.state, refused.moved_from), (RunState::Error, None));
    assert_eq!(events_of(s, &un.id).await.len(), 3);
}

pub async fn cancel_requests(ctx: Ctx) {
    let s = &ctx.store;
    // Pending, not being dispatched: canceled at once, never dispatched.
    let pending = one_run(s).await;
    let u = s.request_cancel(&pending.id, t(1)).await.unwrap();
    assert_eq!(
        (u.run.state, u.moved_from, u.run.cancel_requested),
        (RunState::Canceled, Some(RunState::Pending), true)
    );
    assert!(s.claim_dispatch("d", t(2), t(60), 10).await.unwrap().is_empty());
    let ev = events_of(s, &pending.id).await.pop().unwrap();
    assert_eq!((ev.kind, ev.state), (EventKind::CancelRequested, RunState::Canceled));
    assert!(is_conflict(&s.request_cancel(&pending.id, t(3)).await.unwrap_err()), "terminal");

    // Queued at the provider: canceling, due for a poll so the gateway cancels there.
    let queued = dispatched(s, "b-1").await;
    let u = s.request_cancel(&queued.id, t(3)).await.unwrap();
    assert_eq!((u.run.state, u.run.cancel_requested, u.run.next_poll_at), (RunState::Canceling, true, Some(t(3))));
    let again = s.request_cancel(&queued.id, t(4)).await.unwrap();
    assert_eq!((again.run.state, again.moved_from), (RunState::Canceling, None));
    s.claim_poll("t", t(4), t(34), 10).await.unwrap();
    let u = s.apply_status(&queued.id, "t", &status(RunState::Canceled, "canceled", t(5)), Some(t(9))).await.unwrap();
    assert_eq!(u.run.state, RunState::Canceled);

    // Pending but being dispatched: canceling; a dispatch that did not send ends it canceled,
    // one that did send keeps it canceling with the build recorded.
    let racing = one_run(s).await;
    let other = one_run(s).await;
    s.claim_dispatch("d", t(6), t(60), 10).await.unwrap();
    assert_eq!(s.request_cancel(&racing.id, t(7)).await.unwrap().run.state, RunState::Canceling);
    assert_eq!(s.request_cancel(&other.id, t(7)).await.unwrap().run.state, RunState::Canceling);
    let u = s
        .record_dispatch(&racing.id, "d", DispatchOutcome::RetryAt { at: t(20), reason: "429".into() }, t(8))
        .await
        .unwrap();
    assert_eq!((u.run.state, u.run.next_dispatch_at), (RunState::Canceled, None));
    let started = DispatchOutcome::Started { run_ref: ProviderRunRef::new("b-2"), next_poll_at: t(9) };
    let u = s.record_dispatch(&other.id, "d", started, t(8)).await.unwrap();
    assert_eq!((u.run.state, u.run.cancel_requested), (RunState::Canceling, true));
    assert_eq!(u.run.provider_ref.map(|r| r.id).as_deref(), Some("b-2"));
}

pub async fn reruns(ctx: Ctx) {
    let s = &ctx.store;
    let original = dispatched(s, "b-1").await;
    let mut rerun = new_run("a", t(10));
    rerun.rerun_of = Some(original.id.clone());
    rerun.rerun_failed_only = true;
    let created = s.create_rerun(&original.trigger_id, rerun.clone(), t(10)).await.unwrap();
    assert_eq!(
        (created.state, created.rerun_of.as_deref(), created.rerun_failed_only),
        (RunState::Pending, Some(original.id.as_str()), true)
    );
    assert_eq!(created.requested_by, original.requested_by);
    let runs = runs_of_trigger(s, &original.trigger_id).await;
    assert_eq!(runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![original.id.clone(), created.id.clone()]);
    let ev = events_of(s, &original.id).await.pop().unwrap();
    assert_eq!((ev.kind, ev.data["rerun_id"].as_str()), (EventKind::Rerun, Some(created.id.as_str())));
    assert_eq!(events_of(s, &created.id).await[0].kind, EventKind::Created);

    let mut orphan = new_run("a", t(11));
    assert!(matches!(
        s.create_rerun(&original.trigger_id, orphan.clone(), t(11)).await,
        Err(StoreError::Invalid { field: "rerun_of", .. })
    ));
    orphan.rerun_of = Some(original.id.clone());
    assert!(matches!(s.create_rerun("no-trigger", orphan, t(11)).await, Err(StoreError::NotFound { .. })));
}

pub async fn events_read_and_append(ctx: Ctx) {
    let s = &ctx.store;
    let t1 = create(s, new_trigger(&["a", "b"], t(0))).await;
    let t2 = create(s, new_trigger(&["a"], t(1))).await;
    let all = s.events_after(0, &EventFilter::default(), 100).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(s.last_event_id().await.unwrap(), all[2].id);
    let by_target =
        s.events_after(0, &EventFilter { target: Some("a".into()), ..Default::default() }, 100).await.unwrap();
    assert_eq!(by_target.len(), 2);
    let by_trigger =
        s.events_after(0, &EventFilter { trigger_id: Some(t1.id.clone()), ..Default::default() }, 100).await.unwrap();
    assert_eq!(by_trigger.len(), 2);
    let after = s.events_after(all[0].id, &EventFilter::default(), 1).await.unwrap();
    assert_eq!(after, vec![all[1].clone()], "after_id and limit");

    let run = &t2.runs[0];
    let appended = s
        .append_event(NewEvent {
            run_id: run.id.clone(),
            kind: EventKind::Approved,
            data: json!({"by": "qa"}),
            created_at: t(5),
        })
        .await
        .unwrap();
    assert!(appended.id > all[2].id);
    assert_eq!(
        (appended.state, appended.target.as_str(), appended.trigger_id.as_str()),
        (RunState::Pending, "a", t2.id.as_str())
    );
    assert_eq!(appended.created_at, t(5));
    let by_state = s
        .events_after(
            0,
            &EventFilter { state: Some(RunState::Pending), run_id: Some(run.id.clone()), ..Default::default() },
            100,
        )
        .await
        .unwrap();
    assert_eq!(by_state.last(), Some(&appended));
    let missing = s
        .append_event(NewEvent {
            run_id: "nope".into(),
            kind: EventKind::Approved,
            data: json!(null),
            created_at: t(5),
        })
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })));
}

pub async fn events_never_skip_under_concurrent_writers(ctx: Ctx) {
    let done_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader_store = ctx.store.clone();
    let flag = done_flag.clone();
    let reader = tokio::spawn(async move {
        let mut last = 0;
        let mut seen = Vec::new();
        loop {
            let finished = flag.load(std::sync::atomic::Ordering::SeqCst);
            let batch = reader_store.events_after(last, &EventFilter::default(), 1000).await.unwrap();
            for e in &batch {
                seen.push(e.id);
                last = e.id;
            }
            if finished && batch.is_empty() {
                break seen;
            }
            tokio::task::yield_now().await;
        }
    });
    let other = ctx.another().await;
    let mut writers = Vec::new();
    for w in 0..6 {
        let store = if w % 2 == 0 { ctx.store.clone() } else { other.clone() };
        writers.push(tokio::spawn(async move {
            for i in 0..15 {
                let trig = create(&store, new_trigger(&["a", "b"], t(i))).await;
                store
                    .append_event(NewEvent {
                        run_id: trig.runs[0].id.clone(),
                        kind: EventKind::Approved,
                        data: json!({"w": w}),
                        created_at: t(i),
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    done_flag.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let all: Vec<i64> =
        ctx.store.events_after(0, &EventFilter::default(), 1000).await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(all.len(), 6 * 15 * 3);
    assert_eq!(seen, all, "the tailing reader saw every event id, in order");
}

pub async fn list_runs_pages(ctx: Ctx) {
    let s = &ctx.store;
    let mut ids = Vec::new();
    for i in 0..7 {
        let target = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(create(s, new_trigger(&[target], t(i))).await.runs.remove(0).id);
    }
    // Two runs created at the same instant still page without loss.
    let twins = create(s, new_trigger(&["even", "odd"], t(7))).await;
    ids.extend(twins.runs.iter().map(|r| r.id.clone()));

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s.list_runs(&RunFilter { limit: 3, ..Default::default() }, cursor.as_deref()).await.unwrap();
        seen.extend(page.runs.iter().map(|r| (r.created_at, r.id.clone())));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 9);
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first, strictly");
    assert_eq!(seen.iter().map(|(_, id)| id.clone()).collect::<HashSet<_>>(), ids.iter().cloned().collect());

    let even = s.list_runs(&RunFilter { target: Some("even".into()), ..Default::default() }, None).await.unwrap();
    assert_eq!(even.runs.len(), 5);
    assert!(even.next_cursor.is_none());
    let since = s.list_runs(&RunFilter { since: Some(t(5)), ..Default::default() }, None).await.unwrap();
    assert_eq!(since.runs.len(), 4);
    let of_trigger =
        s.list_runs(&RunFilter { trigger_id: Some(twins.id.clone()), ..Default::default() }, None).await.unwrap();
    assert_eq!(of_trigger.runs.len(), 2);
    s.request_cancel(&ids[0], t(8)).await.unwrap();
    let canceled =
        s.list_runs(&RunFilter { state: Some(RunState::Canceled), ..Default::default() }, None).await.unwrap();
    assert_eq!(canceled.runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![ids[0].clone()]);
    let mut counts = s.count_runs_by_state().await.unwrap();
    counts.sort_by_key(|(state, _)| state.as_str());
    assert_eq!(counts, vec![(RunState::Canceled, 1), (RunState::Pending, 8)]);
}

pub async fn tokens(ctx: Ctx) {
    let s = &ctx.store;
    let token = |id: &str, name: &str, hash: &str| NewToken {
        id: id.into(),
        name: name.into(),
        hash: hash.into(),
        scopes: vec!["read".into(), "trigger:web-*".into()],
        expires_at: Some(t(1000)),
        allowed_origins: vec!["https://qa.example".into()],
        rate_limit_per_minute: Some(60),
        created_at: t(0),
    };
    let created = s.create_token(token("t1", "ci", "h1")).await.unwrap();
    assert_eq!(s.find_token_by_hash("h1").await.unwrap(), Some(created.clone()));
    assert_eq!(created.scopes, vec!["read".to_string(), "trigger:web-*".to_string()]);
    assert!(is_conflict(&s.create_token(token("t2", "ci", "h2")).await.unwrap_err()), "live names are unique");
    s.create_token(token("t3", "alpha", "h3")).await.unwrap();
    assert_eq!(s.list_tokens().await.unwrap().iter().map(|t| t.name.clone()).collect::<Vec<_>>(), vec!["alpha", "ci"]);
    s.touch_token("t1", t(50)).await.unwrap();
    assert_eq!(s.find_token_by_hash("h1").await.unwrap().unwrap().last_used_at, Some(t(50)));
    s.revoke_token("t1", t(60)).await.unwrap();
    assert_eq!(s.find_token_by_hash("h1").await.unwrap(), None);
    assert!(matches!(s.revoke_token("t1", t(61)).await, Err(StoreError::NotFound { .. })));
    s.create_token(token("t4", "ci", "h4")).await.expect("a revoked token's name is free again");
    assert_eq!(s.list_tokens().await.unwrap().len(), 2);
}

pub async fn ui_sessions(ctx: Ctx) {
    let s = &ctx.store;
    let ui = NewSession {
        hash: "sess-hash".into(),
        kind: SessionKind::Ui,
        token_hash: Some("token-hash".into()),
        run_id: None,
        created_at: t(0),
        expires_at: t(100),
    };
    let stored = s.create_session(ui.clone()).await.unwrap();
    assert_eq!(stored, ui);
    assert_eq!(s.find_session("sess-hash", t(99)).await.unwrap(), Some(ui.clone()));
    assert_eq!(ctx.another().await.find_session("sess-hash", t(1)).await.unwrap(), Some(ui.clone()), "any replica");
    assert_eq!(s.find_session("sess-hash", t(100)).await.unwrap(), None, "expired");
    assert_eq!(s.find_session("other", t(1)).await.unwrap(), None);
    assert!(s.create_session(ui.clone()).await.is_err(), "a hash is stored once");

    let watch = NewSession {
        hash: "watch-hash".into(),
        kind: SessionKind::Watch,
        token_hash: None,
        run_id: Some("run-1".into()),
        created_at: t(150),
        expires_at: t(300),
    };
    s.create_session(watch.clone()).await.unwrap();
    assert_eq!(s.find_session("watch-hash", t(200)).await.unwrap(), Some(watch));
    assert_eq!(s.find_session("sess-hash", t(50)).await.unwrap(), None, "expired rows are deleted on the next create");

    s.delete_session("watch-hash").await.unwrap();
    assert_eq!(s.find_session("watch-hash", t(200)).await.unwrap(), None, "signed out");
    s.delete_session("watch-hash").await.expect("deleting twice succeeds");
}

pub async fn deliveries_chains_and_cursors(ctx: Ctx) {
    let s = &ctx.store;
    assert!(s.record_delivery("hook:github", "d-1", t(0), t(100)).await.unwrap());
    assert!(!s.record_delivery("hook:github", "d-1", t(50), t(150)).await.unwrap(), "a repeat");
    assert!(s.record_delivery("hook:gitlab", "d-1", t(50), t(150)).await.unwrap(), "per source");
    assert!(s.record_delivery("hook:github", "d-1", t(100), t(200)).await.unwrap(), "expired counts as new");
    assert!(!s.record_delivery("hook:github", "d-1", t(150), t(250)).await.unwrap());

    let upstream = one_run(s).await;
    record_chain_firing(&ctx, "deploy", &upstream.id, 1).await;
    assert_eq!(chain_firing(&ctx, "deploy", &upstream.id).await, Some(None));
    let firing_of = ChainFiring {
        chain: "deploy".into(),
        upstream_run_id: upstream.id.clone(),
        parents: vec![upstream.id.clone()],
        root_trigger_id: upstream.trigger_id.clone(),
        depth: 1,
        join_key: None,
    };
    let mut downstream = new_trigger(&["deploy-staging"], t(3));
    downstream.source = "chain:deploy".into();
    downstream.runs[0].chain_parent = Some(upstream.id.clone());
    downstream.chain_firing = Some(firing_of.clone());
    let down = create(s, downstream).await;
    assert_eq!(down.runs[0].chain_parent.as_deref(), Some(upstream.id.as_str()));
    assert_eq!(chain_firing(&ctx, "deploy", &upstream.id).await, Some(Some(down.id.clone())));
    let mut repeat = new_trigger(&["deploy-staging"], t(4));
    repeat.chain_firing = Some(firing_of);
    assert_eq!(s.create_trigger(repeat).await.unwrap(), CreateOutcome::ChainAlreadyFired { trigger_id: down.id });
    assert_eq!(chain_firing(&ctx, "other", &upstream.id).await, None);

    assert_eq!(load_cursor(&ctx, "chains").await, None);
    s.save_cursor("chains", 17).await.unwrap();
    s.save_cursor("chains", 42).await.unwrap();
    assert_eq!(load_cursor(&ctx, "chains").await, Some(42));
}

pub async fn prune_by_retention(ctx: Ctx) {
    let s = &ctx.store;
    let day = 86_400;
    let retention = RetentionSettings {
        runs: Duration::from_secs(10 * day as u64),
        idempotency_keys: Duration::from_secs(day as u64),
        deliveries: Duration::from_secs(2 * day as u64),
        outbox: Duration::from_secs(3 * day as u64),
    };
    // An old finished trigger (both runs terminal), an old trigger with one run still active,
    // and a recent finished one.
    let mut old = new_trigger(&["a", "b"], t(0));
    old.idempotency = Some(IdempotencyKey {
        scope: "tok".into(),
        key: "k".into(),
        fingerprint: json!(1),
        response: json!(1),
        expires_at: t(day),
    });
    let old = create(s, old).await;
    for r in &old.runs {
        s.request_cancel(&r.id, t(10)).await.unwrap();
    }
    let mixed = create(s, new_trigger(&["a", "b"], t(0))).await;
    s.request_cancel(&mixed.runs[0].id, t(10)).await.unwrap();
    let recent = create(s, new_trigger(&["a"], t(9 * day))).await;
    s.request_cancel(&recent.runs[0].id, t(9 * day)).await.unwrap();
    record_chain_firing(&ctx, "deploy", &old.runs[0].id, 11).await;
    s.record_delivery("hook", "old", t(0), t(day)).await.unwrap();
    s.record_delivery("hook", "new", t(11 * day), t(12 * day)).await.unwrap();
    delivered_notification(&ctx, 1).await;
    let events_before = s.events_after(0, &EventFilter::default(), 1000).await.unwrap().len();

    let report = s.prune(t(11 * day), &retention).await.unwrap();
    assert_eq!(
        report,
        PruneReport {
            runs: 3,
            events: 6,
            triggers: 1,
            idempotency_keys: 1,
            deliveries: 1,
            outbox: 1,
            chain_firings: 1,
            schedule_firings: 0,
            chain_joins: 0,
            hook_deliveries: 0,
        }
    );
    assert!(matches!(s.get_trigger(&old.id).await, Err(StoreError::NotFound { .. })));
    let mixed_left = s.get_trigger(&mixed.id).await.unwrap();
    assert_eq!(mixed_left.runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![mixed.runs[1].id.clone()]);
    assert_eq!(s.get_trigger(&recent.id).await.unwrap().runs.len(), 1);
    assert_eq!(s.events_after(0, &EventFilter::default(), 1000).await.unwrap().len(), events_before - 6);
    assert!(s.record_delivery("hook", "old", t(11 * day), t(12 * day)).await.unwrap());
    assert!(!s.record_delivery("hook", "new", t(11 * day), t(12 * day)).await.unwrap());
    assert_eq!(s.prune(t(11 * day), &retention).await.unwrap(), PruneReport::default(), "idempotent");
    // Event ids keep growing after pruning (Last-Event-ID stays meaningful).
    let before = s.last_event_id().await.unwrap();
    create(s, new_trigger(&["a"], t(11 * day))).await;
    assert!(s.last_event_id().await.unwrap() > before);
}

async fn next(w: &mut futures::stream::BoxStream<'static, ()>) -> Result<Option<()>, tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(5), w.next()).await
}

/// Take the wake-ups already sent until none comes for 200 ms.
async fn quiet(w: &mut futures::stream::BoxStream<'static, ()>) {
    while tokio::time::timeout(Duration::from_millis(200), w.next()).await.is_ok() {}
}

/// New work wakes the engines: this handle's, and (PostgreSQL) every other replica's.
pub async fn wakeups_follow_commits(ctx: Ctx) {
    let s = &ctx.store;
    let mut wakes = s.wakeups();
    assert_eq!(next(&mut wakes).await.expect("listening"), Some(()));
    let other = ctx.another().await;
    let mut there = other.wakeups();
    assert_eq!(next(&mut there).await.expect("listening"), Some(()));
    let replicas = ctx.backend() == Backend::Postgres;

    create(s, new_trigger(&["a"], t(0))).await;
    assert_eq!(next(&mut wakes).await.expect("a wake-up after create_trigger"), Some(()));
    if replicas {
        assert_eq!(next(&mut there).await.expect("another replica wakes too"), Some(()));
    }
    let run = dispatched(s, "b").await;
    quiet(&mut wakes).await;
    quiet(&mut there).await;
    s.poll_now(&run.id, t(3)).await.unwrap();
    assert_eq!(next(&mut wakes).await.expect("a wake-up after poll_now"), Some(()));
    if replicas {
        assert_eq!(next(&mut there).await.expect("another replica wakes after poll_now"), Some(()));
    }

    // A burst of writes may be told in fewer wake-ups, but its last commit is always followed by one.
    quiet(&mut wakes).await;
    quiet(&mut there).await;
    let burst = (0..20).map(|i| create(s, new_trigger(&["a"], t(10 + i))));
    futures::future::join_all(burst).await;
    assert_eq!(next(&mut wakes).await.expect("a wake-up after the burst"), Some(()));
    if replicas {
        assert_eq!(next(&mut there).await.expect("another replica wakes after the burst"), Some(()));
    }
}

async fn next_change(changes: &mut futures::stream::BoxStream<'static, AuthChange>) -> AuthChange {
    let next = tokio::time::timeout(Duration::from_secs(5), changes.next()).await;
    next.expect("an announcement in time").expect("the stream goes on")
}

/// Token and session changes are announced once committed, to this handle and (PostgreSQL) to
/// every other replica's; refused changes announce nothing.
pub async fn auth_changes_follow_commits(ctx: Ctx) {
    let s = &ctx.store;
    let mut here = s.auth_changes();
    assert_eq!(next_change(&mut here).await, AuthChange::All, "listening now: catch up");
    let other = ctx.another().await;
    let mut there = other.auth_changes();
    assert_eq!(next_change(&mut there).await, AuthChange::All);
    let replicas = ctx.backend() == Backend::Postgres;

    let token = NewToken {
        id: "t1".into(),
        name: "ci".into(),
        hash: "h1".into(),
        scopes: vec!["read".into()],
        expires_at: None,
        allowed_origins: vec!["https://qa.example".into()],
        rate_limit_per_minute: None,
        created_at: t(0),
    };
    s.create_token(token.clone()).await.unwrap();
    let created = AuthChange::Token { id: "t1".into() };
    assert_eq!(next_change(&mut here).await, created);
    assert!(s.create_token(token).await.is_err());
    s.revoke_token("t1", t(1)).await.unwrap();
    assert_eq!(next_change(&mut here).await, created, "revoked");
    assert!(s.revoke_token("t1", t(2)).await.is_err());
    if replicas {
        assert_eq!(next_change(&mut there).await, created, "another replica hears of the new token");
        assert_eq!(next_change(&mut there).await, created, "and of its revocation");
    }

    let session = NewSession {
        hash: "sess-hash".into(),
        kind: SessionKind::Ui,
        token_hash: Some("h1".into()),
        run_id: None,
        created_at: t(0),
        expires_at: t(100),
    };
    s.create_session(session).await.unwrap();
    s.delete_session("sess-hash").await.unwrap();
    s.delete_session("sess-hash").await.unwrap();
    let ended = AuthChange::Session { hash: "sess-hash".into() };
    assert_eq!(next_change(&mut here).await, ended);
    if replicas {
        assert_eq!(next_change(&mut there).await, ended);
    }
    let more = tokio::time::timeout(Duration::from_millis(300), here.next()).await;
    assert!(more.is_err(), "nothing else was announced: {more:?}");
}

pub async fn secrets_stay_out_of_errors_and_debug(ctx: Ctx) {
    let s = &ctx.store;
    let trig = create(s, new_trigger(&["a"], t(0))).await;
    let run = s.get_run(&trig.runs[0].id).await.unwrap();
    assert_eq!(run.parameters.get("deploy_key").unwrap().value, ParamValue::String("s3cr3t-value".into()));
    for text in [format!("{run:?}"), format!("{trig:?}"), format!("{s:?}")] {
        assert!(!text.contains("s3cr3t-value"), "{text}");
    }
    let mut dup = new_trigger(&["a"], t(1));
    dup.runs[0].id = run.id.clone();
    let err = s.create_trigger(dup).await.unwrap_err();
    assert!(!err.to_string().contains("s3cr3t-value"));
}

// ---- query plans, gauges and secrets at rest ----

/// Run one statement on a connection of its own (seeding, ANALYZE), outside the store.
pub(crate) async fn raw_exec(ctx: &Ctx, sql: &str) {
    use sqlx::Connection;
    match ctx.backend() {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&ctx.settings.url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&ctx.settings.url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
    }
}

/// SQLite: fold the write-ahead log into the database and cut it to nothing, waiting for a
/// checkpoint already under way (the store's checkpointer) to finish first.
async fn truncate_wal(ctx: &Ctx) {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&ctx.settings.url).await.unwrap();
    for _ in 0..200 {
        let (busy,): (i64,) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&mut c).await.unwrap();
        if busy == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the write-ahead log could not be truncated within 5 s");
}

/// `t(secs)` as an SQL literal of the backend's time column type.
fn sql_time(ctx: &Ctx, secs: i64) -> String {
    let at = t(secs);
    match ctx.backend() {
        Backend::Sqlite => at.timestamp_micros().to_string(),
        Backend::Postgres => format!("to_timestamp({})", at.timestamp()),
    }
}

/// The runs of a trigger, oldest first.
/// The runs of one trigger read through the run list (its own query, not `get_trigger`'s), in
/// the order they were created.
async fn runs_of_trigger(s: &Arc<dyn Store>, trigger_id: &str) -> Vec<RunRecord> {
    let filter = RunFilter { trigger_id: Some(trigger_id.to_string()), limit: 100, ..RunFilter::default() };
    let mut runs = s.list_runs(&filter, None).await.unwrap().runs;
    runs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    runs
}

/// Record that `chain` fired for `upstream` at `t(secs)`, as the chain engine would.
async fn record_chain_firing(ctx: &Ctx, chain: &str, upstream: &str, secs: i64) {
    let at = sql_time(ctx, secs);
    raw_exec(
        ctx,
        &format!("INSERT INTO chain_firings (chain, upstream_run_id, fired_at) VALUES ('{chain}', '{upstream}', {at})"),
    )
    .await;
}

/// The trigger a recorded chain firing produced (`Some(None)`: recorded, no trigger yet).
async fn chain_firing(ctx: &Ctx, chain: &str, upstream: &str) -> Option<Option<String>> {
    let sql =
        format!("SELECT trigger_id FROM chain_firings WHERE chain = '{chain}' AND upstream_run_id = '{upstream}'");
    raw_optional_texts(ctx, &sql).await
}

/// A named cursor's stored value.
async fn load_cursor(ctx: &Ctx, name: &str) -> Option<i64> {
    let sql = format!("SELECT CAST(value AS TEXT) FROM cursors WHERE name = '{name}'");
    raw_optional_texts(ctx, &sql).await.map(|v| v.expect("a value").parse().unwrap())
}

/// An outbox row delivered at `t(secs)`.
async fn delivered_notification(ctx: &Ctx, secs: i64) {
    let at = sql_time(ctx, secs);
    let payload = match ctx.backend() {
        Backend::Sqlite => "'{}'",
        Backend::Postgres => "'{}'::jsonb",
    };
    raw_exec(
        ctx,
        &format!(
            "INSERT INTO outbox (notification, event_id, payload, status, attempts, next_attempt_at, created_at, finished_at)
             VALUES ('n', 1, {payload}, 'delivered', 1, {at}, {at}, {at})"
        ),
    )
    .await;
}

/// The optional text of the first row of a one-column query, read on a connection of its own
/// (`None`: no row).
pub(crate) async fn raw_optional_texts(ctx: &Ctx, sql: &str) -> Option<Option<String>> {
    use sqlx::Connection;
    match ctx.backend() {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&ctx.settings.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_optional(&mut c).await.unwrap()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&ctx.settings.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_optional(&mut c).await.unwrap()
        }
    }
}

/// The text of one text column of one row, read with SQL on a connection of its own: what is
/// on disk, not what the store makes of it.
async fn raw_text(ctx: &Ctx, sql_sqlite: &str, sql_pg: &str, id: &str) -> Vec<String> {
    use sqlx::Connection;
    match ctx.backend() {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&ctx.settings.url).await.unwrap();
            sqlx::query_scalar(sql_sqlite).bind(id).fetch_all(&mut c).await.unwrap()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&ctx.settings.url).await.unwrap();
            sqlx::query_scalar(sql_pg).bind(id).fetch_all(&mut c).await.unwrap()
        }
    }
}

async fn stored_parameters(ctx: &Ctx, run_id: &str) -> String {
    raw_text(
        ctx,
        "SELECT parameters FROM runs WHERE id = ?1",
        "SELECT parameters::text FROM runs WHERE id = $1",
        run_id,
    )
    .await
    .remove(0)
}

/// Plans of the frequent queries, printed for the failure message.
pub(crate) async fn plan(ctx: &Ctx, q: HotQuery) -> String {
    let lines = cigw_store::testing::explain(&ctx.settings, &q).await.unwrap();
    eprintln!("{q:?}:\n  {}", lines.join("\n  "));
    lines.join("\n")
}

/// Whether `plan` reads `table` whole (a SQLite `SCAN table` without an index, a PostgreSQL
/// `Seq Scan on table`).
pub(crate) fn scans_table(plan: &str, table: &str) -> bool {
    plan.lines().any(|l| {
        let l = l.trim();
        l == format!("SCAN {table}") || l.starts_with(&format!("SCAN {table} ")) && !l.contains(" USING ")
    }) || plan.contains(&format!("Seq Scan on {table} "))
}

pub(crate) fn uses_index(plan: &str, index: &str) -> bool {
    plan.contains(&format!("INDEX {index} "))
        || plan.contains(&format!("INDEX {index}\n"))
        || plan.ends_with(&format!("INDEX {index}"))
        || plan.contains(&format!(" using {index} on "))
        || plan.contains(&format!(" on {index} "))
        || plan.contains(&format!(" on {index}\n"))
}

pub async fn frequent_queries_use_indexes(ctx: Ctx) {
    let s = &ctx.store;
    // 2,000 runs of 10 targets, most of them finished, as in a long retention; PostgreSQL plans
    // from statistics, so it gets them (autovacuum keeps them in production).
    let mut first = None;
    for i in 0..40 {
        let targets: Vec<String> = (0..50).map(|n| format!("t{}", n % 10)).collect();
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        let trig = create(s, new_trigger(&targets, t(i))).await;
        first.get_or_insert(trig.id);
    }
    let first = first.unwrap();
    let run = one_run(s).await;
    // Enough tokens that PostgreSQL's planner prefers the index to reading the table.
    let created = if ctx.backend() == Backend::Sqlite { "0" } else { "now()" };
    raw_exec(
        &ctx,
        &format!(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 1000)
             INSERT INTO api_tokens (id, name, hash, scopes, allowed_origins, created_at)
             SELECT 'tok-' || n, 'ci-' || n, 'h-' || n, '[]', '[]', {created} FROM g"
        ),
    )
    .await;
    // All but 51 runs finished.
    raw_exec(
        &ctx,
        &format!(
            "UPDATE runs SET state = 'succeeded', next_dispatch_at = NULL WHERE trigger_id <> '{first}' AND id <> '{}'",
            run.id
        ),
    )
    .await;
    if ctx.backend() == Backend::Postgres {
        raw_exec(&ctx, "VACUUM ANALYZE").await;
    }

    let events = |filter: EventFilter, after_id: i64| HotQuery::EventsAfter { after_id, filter };
    let p = plan(&ctx, events(EventFilter { run_id: Some(run.id.clone()), ..Default::default() }, 0)).await;
    assert!(uses_index(&p, "run_events_run") && !scans_table(&p, "run_events"), "events of one run: {p}");
    let p = plan(&ctx, events(EventFilter::default(), 1500)).await;
    assert!(
        !scans_table(&p, "run_events") && (p.contains("PRIMARY KEY") || uses_index(&p, "run_events_pkey")),
        "events after an id: {p}"
    );
    let p = plan(&ctx, events(EventFilter { trigger_id: Some(run.trigger_id.clone()), ..Default::default() }, 0)).await;
    assert!(uses_index(&p, "run_events_trigger") && !scans_table(&p, "run_events"), "events of a trigger: {p}");
    // A target's events: its own index, or the primary key when the planner expects the target
    // to be common enough after that id (PostgreSQL here); never the whole table.
    let p = plan(&ctx, events(EventFilter { target: Some("t3".into()), ..Default::default() }, 1500)).await;
    assert!(!scans_table(&p, "run_events"), "events of a target: {p}");

    let runs = |filter: RunFilter, cursor: Option<String>| HotQuery::ListRuns { filter, cursor };
    let cursor = Some(format!("{}.{}", t(20).timestamp_micros(), run.id));
    for (filter, index) in [
        (RunFilter { target: Some("t3".into()), ..Default::default() }, "runs_target_newest"),
        (RunFilter { state: Some(RunState::Pending), ..Default::default() }, "runs_state_newest"),
        (RunFilter { trigger_id: Some(run.trigger_id.clone()), ..Default::default() }, "runs_trigger"),
        (RunFilter { since: Some(t(30)), ..Default::default() }, "runs_newest"),
        (RunFilter::default(), "runs_newest"),
    ] {
        for cursor in [None, cursor.clone()] {
            let p = plan(&ctx, runs(filter.clone(), cursor)).await;
            assert!(uses_index(&p, index) && !scans_table(&p, "runs"), "runs with {filter:?}: {p}");
        }
    }
    let p = plan(&ctx, HotQuery::ClaimDispatch).await;
    assert!(uses_index(&p, "runs_due_dispatch") && !scans_table(&p, "runs"), "dispatch claim: {p}");
    let p = plan(&ctx, HotQuery::ClaimPoll).await;
    assert!(uses_index(&p, "runs_due_poll") && !scans_table(&p, "runs"), "poll claim: {p}");
    let p = plan(&ctx, HotQuery::TokenByHash).await;
    assert!(uses_index(&p, "api_tokens_hash") && !scans_table(&p, "api_tokens"), "token by hash: {p}");
    let p = plan(&ctx, HotQuery::CountRunsByState).await;
    assert!(uses_index(&p, "runs_active") && !scans_table(&p, "runs"), "runs per state: {p}");
    let p = plan(&ctx, HotQuery::CountUnconfirmed).await;
    assert!(uses_index(&p, "runs_active") && !scans_table(&p, "runs"), "unconfirmed runs: {p}");
    let p = plan(&ctx, HotQuery::OldestDueDispatch).await;
    assert!(uses_index(&p, "runs_due_dispatch") && !scans_table(&p, "runs"), "oldest due dispatch: {p}");
}

/// How far dispatch is behind: the oldest due run no claimer holds; runs due later, runs being
/// dispatched and runs already sent do not count, and a lease that ran out counts again.
pub async fn the_oldest_due_dispatch_is_the_oldest_unclaimed_one(ctx: Ctx) {
    let s = &ctx.store;
    assert_eq!(s.oldest_due_dispatch(t(100)).await.unwrap(), None, "nothing waits");
    let mut early = new_trigger(&["a", "b"], t(0));
    early.runs[1].dispatch_at = t(3);
    create(s, early).await;
    create(s, new_trigger(&["c"], t(5))).await;
    create(s, new_trigger(&["d"], t(50))).await;
    assert_eq!(s.oldest_due_dispatch(t(1)).await.unwrap(), Some(t(0)));
    // The claim takes the oldest (due at 0): the next one waits from 3.
    let claimed = s.claim_dispatch("d1", t(10), t(20), 1).await.unwrap();
    assert_eq!(claimed[0].next_dispatch_at, Some(t(0)));
    assert_eq!(s.oldest_due_dispatch(t(10)).await.unwrap(), Some(t(3)));
    // Sent: it no longer waits. The other two claimed and sent too: only the one due at 50
    // is left, not yet due at 10.
    let started = |b: &str| DispatchOutcome::Started { run_ref: ProviderRunRef::new(b), next_poll_at: t(60) };
    s.record_dispatch(&claimed[0].id, "d1", started("b1"), t(11)).await.unwrap();
    for run in s.claim_dispatch("d1", t(12), t(20), 2).await.unwrap() {
        assert_eq!(s.oldest_due_dispatch(t(12)).await.unwrap(), None, "claimed runs are under way");
        s.record_dispatch(&run.id, "d1", started(&run.id), t(13)).await.unwrap();
    }
    assert_eq!(s.oldest_due_dispatch(t(13)).await.unwrap(), None);
    // Claimed by a claimer that died: waiting again once its lease ran out.
    s.claim_dispatch("gone", t(51), t(60), 1).await.unwrap();
    assert_eq!(s.oldest_due_dispatch(t(55)).await.unwrap(), None);
    assert_eq!(s.oldest_due_dispatch(t(60)).await.unwrap(), Some(t(50)));
}

pub async fn run_gauges_are_exact_without_scanning(ctx: Ctx) {
    let s = &ctx.store;
    // What a scan would say, to compare the gauges with after each step.
    async fn by_listing(s: &Arc<dyn Store>) -> (Vec<(RunState, u64)>, u64) {
        let page = s.list_runs(&RunFilter { limit: 1000, ..Default::default() }, None).await.unwrap();
        let mut counts = std::collections::BTreeMap::new();
        for r in &page.runs {
            *counts.entry(r.state.as_str()).or_insert(0u64) += 1;
        }
        let unconfirmed = page.runs.iter().filter(|r| r.unconfirmed && !r.state.is_terminal()).count() as u64;
        let counts = counts.into_iter().map(|(k, n)| (k.parse().unwrap(), n)).collect();
        (counts, unconfirmed)
    }
    async fn check(s: &Arc<dyn Store>, step: &str) {
        let (want, want_unconfirmed) = by_listing(s).await;
        assert_eq!(s.count_runs_by_state().await.unwrap(), want, "{step}");
        assert_eq!(s.count_unconfirmed_runs().await.unwrap(), want_unconfirmed, "{step}");
    }
    check(s, "empty").await;
    let trig = create(s, new_trigger(&["a", "b", "c", "d", "e", "f"], t(0))).await;
    let ids: Vec<String> = trig.runs.iter().map(|r| r.id.clone()).collect();
    check(s, "created").await;
    s.request_cancel(&ids[5], t(1)).await.unwrap();
    check(s, "one canceled before dispatch").await;
    assert_eq!(s.claim_dispatch("d", t(2), t(60), 10).await.unwrap().len(), 5);
    let started = |b: &str| DispatchOutcome::Started { run_ref: ProviderRunRef::new(b), next_poll_at: t(5) };
    s.record_dispatch(&ids[0], "d", started("b0"), t(3)).await.unwrap();
    s.record_dispatch(&ids[1], "d", started("b1"), t(3)).await.unwrap();
    let unconfirmed = DispatchOutcome::Unconfirmed { sent_at: t(3), deadline: t(300), next_poll_at: t(5) };
    s.record_dispatch(&ids[2], "d", unconfirmed.clone(), t(3)).await.unwrap();
    s.record_dispatch(&ids[3], "d", unconfirmed, t(3)).await.unwrap();
    s.record_dispatch(&ids[4], "d", DispatchOutcome::Refused { message: "no".into() }, t(3)).await.unwrap();
    check(s, "dispatched").await;
    assert_eq!(s.count_unconfirmed_runs().await.unwrap(), 2);
    s.adopt(&ids[2], ProviderRunRef::new("b2"), t(4)).await.unwrap();
    s.set_state(&ids[3], RunState::Error, Some("no build appeared".into()), EventKind::Error, t(4)).await.unwrap();
    assert_eq!(s.count_unconfirmed_runs().await.unwrap(), 0, "an ended run is no longer unconfirmed");
    check(s, "adopted and expired").await;
    assert_eq!(s.claim_poll("p", t(10), t(70), 10).await.unwrap().len(), 3);
    s.apply_status(&ids[0], "p", &status(RunState::Succeeded, "success", t(11)), None).await.unwrap();
    s.apply_status(&ids[1], "p", &status(RunState::Running, "running", t(11)), Some(t(20))).await.unwrap();
    check(s, "tracked").await;
    // A refused move changes no count.
    s.set_state(&ids[0], RunState::Failed, None, EventKind::Error, t(12)).await.unwrap();
    check(s, "refused move").await;
    let counts = s.count_runs_by_state().await.unwrap();
    assert_eq!(
        counts,
        vec![
            (RunState::Canceled, 1),
            (RunState::Error, 2),
            (RunState::Queued, 1),
            (RunState::Running, 1),
            (RunState::Succeeded, 1)
        ]
    );
    // Pruning the finished runs takes them out of the counts too.
    let retention = RetentionSettings {
        runs: Duration::from_secs(1),
        idempotency_keys: Duration::from_secs(1),
        deliveries: Duration::from_secs(1),
        outbox: Duration::from_secs(1),
    };
    assert_eq!(s.prune(t(1000), &retention).await.unwrap().runs, 4);
    check(s, "pruned").await;
    assert_eq!(s.count_runs_by_state().await.unwrap(), vec![(RunState::Queued, 1), (RunState::Running, 1)]);
}

/// The row as stored, the events, and (SQLite) the database file never hold a secret value
/// once the run no longer needs it; until then it is there for every (re)send.
pub async fn secret_values_are_dropped_once_sent(ctx: Ctx) {
    let s = &ctx.store;
    const SECRET: &str = "s3cr3t-value";
    let trig = create(s, new_trigger(&["retried", "unconfirmed", "refused", "canceled"], t(0))).await;
    let [retried, unconfirmed, refused, canceled] = [0, 1, 2, 3].map(|i| trig.runs[i].id.clone());
    assert!(stored_parameters(&ctx, &retried).await.contains(SECRET), "a pending run keeps its secrets");

    s.request_cancel(&canceled, t(1)).await.unwrap();
    let claimed = s.claim_dispatch("d", t(1), t(60), 10).await.unwrap();
    assert_eq!(claimed.len(), 3);
    // Not sent (or ambiguous): the run is sent again later, with the secret value.
    let retry = DispatchOutcome::RetryAt { at: t(10), reason: "maybe_sent: timeout".into() };
    s.record_dispatch(&retried, "d", retry, t(2)).await.unwrap();
    assert!(stored_parameters(&ctx, &retried).await.contains(SECRET));
    let unconfirmed_outcome = DispatchOutcome::Unconfirmed { sent_at: t(2), deadline: t(300), next_poll_at: t(5) };
    s.record_dispatch(&unconfirmed, "d", unconfirmed_outcome, t(2)).await.unwrap();
    s.record_dispatch(&refused, "d", DispatchOutcome::Refused { message: "bad branch".into() }, t(2)).await.unwrap();

    let again = s.claim_dispatch("d2", t(10), t(70), 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].parameters.get("deploy_key").unwrap().value,
        ParamValue::String(SECRET.into()),
        "the retried dispatch sends the secret value"
    );
    let started = DispatchOutcome::Started { run_ref: ProviderRunRef::new("b-1"), next_poll_at: t(20) };
    let after = s.record_dispatch(&retried, "d2", started, t(11)).await.unwrap().run;
    assert_eq!(after, s.get_run(&retried).await.unwrap(), "what is returned is what is stored");
    assert_eq!(after.parameters.get("deploy_key").unwrap().value, ParamValue::String("***".into()));
    assert!(after.parameters.get("deploy_key").unwrap().secret);
    assert_eq!(after.parameters.get("env").unwrap().value, ParamValue::String("staging".into()));
    assert_eq!(after.parameters.get("retries").unwrap().value, ParamValue::Int(3));

    assert!(stored_parameters(&ctx, &unconfirmed).await.contains(SECRET), "not matched with a build yet");
    s.adopt(&unconfirmed, ProviderRunRef::new("b-2"), t(12)).await.unwrap();
    for id in [&retried, &unconfirmed, &refused, &canceled] {
        let stored = stored_parameters(&ctx, id).await;
        assert!(!stored.contains(SECRET), "run {id} still stores the secret: {stored}");
        assert!(stored.contains("staging"), "{stored}");
    }
    let events = raw_text(
        &ctx,
        "SELECT data FROM run_events WHERE trigger_id = ?1",
        "SELECT data::text FROM run_events WHERE trigger_id = $1",
        &trig.id,
    )
    .await;
    assert_eq!(events.len(), 10, "{events:?}");
    assert!(events.iter().all(|e| !e.contains(SECRET)), "{events:?}");

    if ctx.backend() == Backend::Sqlite {
        // Nothing left in the file either: the write-ahead log folded in, freed space zeroed.
        // The store's checkpointer may be copying at that moment: look again until the
        // truncating checkpoint completes (its first column says busy).
        truncate_wal(&ctx).await;
        let path = ctx.settings.url.trim_start_matches("sqlite://");
        for file in [path.to_string(), format!("{path}-wal")] {
            let bytes = std::fs::read(&file).unwrap_or_default();
            let found = bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes());
            assert!(!found, "{file} still holds the secret value");
        }
    }
}

/// A run update writes only the columns that changed: an index on columns a dispatch or a poll
/// does not change is left alone (SQLite rewrites the entry of every index on a column a
/// statement sets). Counted by a database trigger that fires when those columns are set.
pub async fn run_updates_write_only_changed_columns(ctx: Ctx) {
    let ddl: &[&str] = match ctx.backend() {
        Backend::Sqlite => &[
            "CREATE TABLE column_writes (n INTEGER NOT NULL)",
            "INSERT INTO column_writes VALUES (0)",
            "CREATE TRIGGER count_column_writes AFTER UPDATE OF trigger_id, target, created_at, branch ON runs \
             BEGIN UPDATE column_writes SET n = n + 1; END",
        ],
        Backend::Postgres => &[
            "CREATE TABLE column_writes (n INTEGER NOT NULL)",
            "INSERT INTO column_writes VALUES (0)",
            "CREATE FUNCTION count_column_writes() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN UPDATE column_writes SET n = n + 1; RETURN NULL; END $$",
            "CREATE TRIGGER count_column_writes AFTER UPDATE OF trigger_id, target, created_at, branch ON runs \
             FOR EACH ROW EXECUTE FUNCTION count_column_writes()",
        ],
    };
    for sql in ddl {
        raw_exec(&ctx, sql).await;
    }
    let s = &ctx.store;
    let run = dispatched(s, "build-cols").await;
    let claimed = s.claim_poll("p", t(6), t(66), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let update = s.apply_status(&run.id, "p", &status(RunState::Running, "running", t(7)), Some(t(20))).await.unwrap();
    assert_eq!(update.run.state, RunState::Running);
    s.request_cancel(&run.id, t(8)).await.unwrap();
    let stored = s.get_run(&run.id).await.unwrap();
    assert_eq!((stored.state, stored.cancel_requested), (RunState::Canceling, true), "the changes were written");
    assert_eq!(stored.provider_ref.map(|r| r.id).as_deref(), Some("build-cols"));
    let writes = raw_text(
        &ctx,
        "SELECT CAST(n AS TEXT) FROM column_writes WHERE $1 = $1",
        "SELECT n::text FROM column_writes WHERE $1 = $1",
        "x",
    )
    .await;
    assert_eq!(writes, ["0"], "a dispatch, a poll and a cancel set columns none of them changed");
}

/// Issue 12: sends that may have reached the provider are counted in typed columns (ambiguous
/// answers and claims that ended without an outcome), and such a run is never canceled blind.
pub async fn possibly_sent_dispatches_are_counted_and_never_canceled_blind(ctx: Ctx) {
    let s = &ctx.store;
    let run = one_run(s).await;
    let first = s.claim_dispatch("d1", t(1), t(31), 10).await.unwrap();
    assert_eq!((first[0].maybe_sent_count, first[0].last_maybe_sent_at), (0, None), "a first claim sent nothing");
    // d1 dies before sending: no send mark, nothing counted.
    let again = s.claim_dispatch("d1b", t(40), t(45), 10).await.unwrap();
    assert_eq!((again[0].maybe_sent_count, again[0].last_maybe_sent_at), (0, None), "died before sending");
    // d1b marks its send and dies mid-call: the next claim counts that send as possibly sent, no
    // later than the end of its lease.
    s.mark_sending(&run.id, "d1b", t(41)).await.unwrap();
    assert!(s.mark_sending(&run.id, "d1", t(42)).await.is_err(), "only the lease holder marks a send");
    let second = s.claim_dispatch("d2", t(60), t(90), 10).await.unwrap();
    assert_eq!((second[0].maybe_sent_count, second[0].last_maybe_sent_at), (1, Some(t(45))));
    assert_eq!(second[0].sending_since, None, "the claim takes the mark over into the count");
    let ambiguous = DispatchOutcome::MaybeSent { sent_at: t(61), at: t(70), reason: "timeout".into() };
    let u = s.record_dispatch(&run.id, "d2", ambiguous, t(62)).await.unwrap();
    assert_eq!((u.run.state, u.run.maybe_sent_count, u.run.last_maybe_sent_at), (RunState::Pending, 2, Some(t(61))));
    assert_eq!((u.run.next_dispatch_at, u.run.lease_owner.clone()), (Some(t(70)), None));
    let ev = events_of(s, &run.id).await.pop().unwrap();
    assert_eq!((ev.kind, ev.data["maybe_sent"].clone()), (EventKind::DispatchRetry, json!(true)));

    // Not leased and pending, yet possibly sent: canceling, still due for dispatch (to reconcile).
    let u = s.request_cancel(&run.id, t(63)).await.unwrap();
    assert_eq!((u.run.state, u.run.next_dispatch_at), (RunState::Canceling, Some(t(70))));
    s.claim_dispatch("d3", t(70), t(100), 10).await.unwrap();
    let keep_looking = DispatchOutcome::RetryAt { at: t(75), reason: "reconciling".into() };
    let u = s.record_dispatch(&run.id, "d3", keep_looking, t(71)).await.unwrap();
    assert_eq!(u.run.state, RunState::Canceling, "never canceled before the reconciliation ends");
    s.claim_dispatch("d4", t(75), t(105), 10).await.unwrap();
    let none_found = DispatchOutcome::Canceled { message: "canceled; no build was found".into() };
    let u = s.record_dispatch(&run.id, "d4", none_found, t(76)).await.unwrap();
    assert_eq!((u.run.state, u.run.message.as_deref()), (RunState::Canceled, Some("canceled; no build was found")));

    // A run that provably never reached the provider still cancels at once.
    let never = one_run(s).await;
    assert_eq!(s.request_cancel(&never.id, t(80)).await.unwrap().run.state, RunState::Canceled);
}

/// Issue 12: refreshes are coalesced to one provider read per run per gap.
pub async fn refreshes_coalesce_against_the_last_read(ctx: Ctx) {
    let s = &ctx.store;
    let run = dispatched(s, "b-1").await;
    let pending = one_run(s).await;
    let gap = Duration::from_secs(5);
    assert_eq!(s.poll_soon(&pending.id, t(3), gap).await.unwrap(), None, "nothing to read before dispatch");
    let claimed = s.claim_poll("t", t(10), t(40), 10).await.unwrap();
    assert_eq!((claimed.len(), claimed[0].last_polled_at), (1, Some(t(10))));
    s.apply_status(&run.id, "t", &status(RunState::Running, "running", t(10)), Some(t(100))).await.unwrap();
    // An occasional refresh reads at once, even just after a scheduled read.
    assert_eq!(s.poll_soon(&run.id, t(11), gap).await.unwrap(), Some(t(11)));
    s.claim_poll("t", t(11), t(41), 10).await.unwrap();
    s.apply_status(&run.id, "t", &status(RunState::Running, "running", t(11)), Some(t(100))).await.unwrap();
    // A burst: one read per gap after the last read, however many refreshes.
    for now in [12, 13, 14, 15] {
        assert_eq!(s.poll_soon(&run.id, t(now), gap).await.unwrap(), Some(t(16)), "one read per gap");
    }
    assert!(s.claim_poll("t", t(15), t(45), 10).await.unwrap().is_empty());
    assert_eq!(s.claim_poll("t", t(16), t(46), 10).await.unwrap().len(), 1);
    s.apply_status(&run.id, "t", &status(RunState::Running, "running", t(16)), Some(t(18))).await.unwrap();
    assert_eq!(s.poll_soon(&run.id, t(17), gap).await.unwrap(), Some(t(18)), "an earlier scheduled read stays");
    assert!(matches!(s.poll_soon("missing", t(17), gap).await.unwrap_err(), StoreError::NotFound { .. }));
}

/// Issue 12: the unconfirmed runs of a target, oldest send first.
pub async fn unconfirmed_runs_in_send_order(ctx: Ctx) {
    let s = &ctx.store;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(one_run(s).await.id);
    }
    let other = create(s, new_trigger(&["b"], t(0))).await.runs.remove(0);
    s.claim_dispatch("d", t(1), t(61), 10).await.unwrap();
    for (id, sent) in ids.iter().zip([3, 2, 4]).chain([(&other.id, 1)]) {
        let outcome = DispatchOutcome::Unconfirmed { sent_at: t(sent), deadline: t(300), next_poll_at: t(20) };
        s.record_dispatch(id, "d", outcome, t(5)).await.unwrap();
    }
    let got: Vec<String> = s.unconfirmed_runs("a", 10).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(got, [ids[1].clone(), ids[0].clone(), ids[2].clone()]);
    s.adopt(&ids[1], ProviderRunRef::new("b-9"), t(6)).await.unwrap();
    assert_eq!(s.unconfirmed_runs("a", 10).await.unwrap().len(), 2, "a matched run is no longer unconfirmed");
}

/// A lease is renewed only by its owner and only while it still holds; a renewed lease keeps
/// other claimers off the run.
pub async fn leases_are_renewed_only_while_held(ctx: Ctx) {
    let s = &ctx.store;
    let run = one_run(s).await;
    let claimed = s.claim_dispatch("a", t(1), t(31), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(s.renew_lease(&run.id, "a", t(20), t(50)).await.unwrap(), "the owner renews a live lease");
    assert!(!s.renew_lease(&run.id, "b", t(21), t(60)).await.unwrap(), "another owner cannot");
    assert!(s.claim_dispatch("b", t(40), t(70), 10).await.unwrap().is_empty(), "the renewed lease still holds at 40");
    assert!(!s.renew_lease(&run.id, "a", t(50), t(80)).await.unwrap(), "a lease that ended is not renewed");
    let taken = s.claim_dispatch("b", t(51), t(81), 10).await.unwrap();
    assert_eq!(taken.len(), 1, "after it ended another claimer takes the run");
    assert_eq!(taken[0].maybe_sent_count, 0, "the abandoned attempt had not marked a send");
}

/// A provider callback (or hook delivery) that reaches several replicas at once is taken by
/// exactly one of them: the others see a repeat.
pub async fn callback_deliveries_are_taken_once_across_replicas(ctx: Ctx) {
    let replicas = [ctx.store.clone(), ctx.another().await, ctx.another().await];
    for n in 0..10 {
        let id = format!("workflow-completed-{n}");
        let takes = futures::future::join_all(
            replicas.iter().map(|s| s.record_delivery("callback:circleci:main", &id, t(n), t(n + 600))),
        )
        .await;
        let taken = takes.into_iter().map(Result::unwrap).filter(|taken| *taken).count();
        assert_eq!(taken, 1, "delivery {id} taken by {taken} replicas");
    }
}

pub async fn schedule_slots_fire_once_across_replicas(ctx: Ctx) {
    let s = &ctx.store;
    assert!(s.latest_schedule_firings().await.unwrap().is_empty());
    let slot = |name: &str, secs: i64| ScheduleSlot { schedule: name.into(), slot: t(secs) };
    let fire = |name: &str, secs: i64, at: i64| {
        let mut trigger = new_trigger(&["a"], t(at));
        trigger.source = format!("schedule:{name}");
        trigger.schedule_slot = Some(slot(name, secs));
        trigger
    };
    let first = create(s, fire("nightly", 60, 61)).await;
    assert_eq!(
        s.create_trigger(fire("nightly", 60, 62)).await.unwrap(),
        CreateOutcome::SlotAlreadyFired { trigger_id: first.id.clone() },
        "a repeat of the slot stores nothing"
    );

    // Two replicas racing for the same slots: each slot gets exactly one trigger.
    let other = ctx.another().await;
    let mut created = 0;
    for secs in [120, 180, 240] {
        let (a, b) = tokio::join!(
            s.create_trigger(fire("nightly", secs, secs)),
            other.create_trigger(fire("nightly", secs, secs))
        );
        let outcomes = [a.unwrap(), b.unwrap()];
        created += outcomes.iter().filter(|o| matches!(o, CreateOutcome::Created(_))).count();
        assert!(outcomes.iter().any(|o| matches!(o, CreateOutcome::SlotAlreadyFired { .. })), "{outcomes:?}");
    }
    assert_eq!(created, 3);
    let hourly = create(s, fire("hourly", 30, 31)).await;

    let latest = s.latest_schedule_firings().await.unwrap();
    let shown: Vec<(&str, DateTime<Utc>)> = latest.iter().map(|f| (f.schedule.as_str(), f.slot)).collect();
    assert_eq!(shown, [("hourly", t(30)), ("nightly", t(240))]);
    assert_eq!(latest[0].trigger_id, hourly.id);
    assert_eq!(latest[0].fired_at, t(31));

    // Firings past the runs retention go, except each schedule's latest, which the scheduler
    // resumes from.
    let retention = RetentionSettings { runs: Duration::from_secs(86_400), ..RetentionSettings::default() };
    let report = s.prune(t(3 * 86_400), &retention).await.unwrap();
    assert_eq!(report.schedule_firings, 3, "nightly's slots 60, 120 and 180: {report:?}");
    assert_eq!(s.latest_schedule_firings().await.unwrap(), latest);
    assert_eq!(s.prune(t(3 * 86_400), &retention).await.unwrap().schedule_firings, 0);
}

fn delivery(hook: &str, id: &str, secs: i64, keep: u32) -> NewHookDelivery {
    NewHookDelivery {
        hook: hook.into(),
        delivery_id: id.into(),
        received_at: t(secs),
        expires_at: t(secs + 3600),
        headers: json!({"x-github-event": "push"}),
        body: format!(r#"{{"n": {secs}, "nul": "\u0000"}}"#),
        outcome: "not_matched".into(),
        rule: None,
        status: 200,
        response: json!({"matched": false, "reason": "`/ref` is \"\\u0000\""}),
        keep,
    }
}

pub async fn hook_deliveries_dedupe_keep_and_prune(ctx: Ctx) {
    let s = &ctx.store;
    // A delivery that started nothing is remembered and may be handled again (it is replaced).
    assert_eq!(s.record_hook_delivery(delivery("gh", "d1", 0, 2)).await.unwrap(), None);
    assert_eq!(s.record_hook_delivery(delivery("gh", "d1", 1, 2)).await.unwrap(), None);
    let seen = s.get_hook_delivery("gh", "d1", t(2)).await.unwrap().unwrap();
    assert_eq!((seen.received_at, seen.kept, seen.trigger_id.as_deref()), (t(1), true, None));
    assert_eq!(seen.body.as_deref(), Some(r#"{"n": 1, "nul": "\u0000"}"#));
    assert_eq!(seen.headers, Some(json!({"x-github-event": "push"})));

    // A delivery that starts a trigger is stored in the trigger's transaction …
    let with_trigger = |id: &str, secs: i64| {
        let mut trigger = new_trigger(&["a"], t(secs));
        trigger.source = "hook:gh".into();
        let mut d = delivery("gh", id, secs, 2);
        d.outcome = "triggered".into();
        d.status = 202;
        d.response = json!({"matched": true, "trigger_id": trigger.id});
        trigger.hook_delivery = Some(d);
        trigger
    };
    let first = create(s, with_trigger("d1", 10)).await;
    // … and a repeat (here, on another replica at the same moment too) stores nothing.
    let other = ctx.another().await;
    let (a, b) = tokio::join!(s.create_trigger(with_trigger("d1", 11)), other.create_trigger(with_trigger("d1", 11)));
    for outcome in [a.unwrap(), b.unwrap()] {
        let CreateOutcome::DeliveryAlreadyHandled(record) = outcome else { panic!("{outcome:?}") };
        assert_eq!(record.trigger_id.as_deref(), Some(first.id.as_str()));
        assert_eq!(record.response, json!({"matched": true, "trigger_id": first.id}));
        assert_eq!(record.status, 202);
    }
    let Some(record) = s.record_hook_delivery(delivery("gh", "d1", 12, 2)).await.unwrap() else {
        panic!("a triggered delivery is not replaced")
    };
    assert_eq!(record.outcome, "triggered");
    let (a, b) = tokio::join!(s.create_trigger(with_trigger("d2", 20)), other.create_trigger(with_trigger("d2", 20)));
    let outcomes = [a.unwrap(), b.unwrap()];
    assert_eq!(outcomes.iter().filter(|o| matches!(o, CreateOutcome::Created(_))).count(), 1, "{outcomes:?}");
    assert_eq!(s.list_runs(&RunFilter { limit: 100, ..RunFilter::default() }, None).await.unwrap().runs.len(), 2);

    // Only the newest `keep` (2) keep headers and body; all stay remembered.
    assert_eq!(s.record_hook_delivery(delivery("gh", "d3", 30, 2)).await.unwrap(), None);
    assert_eq!(s.record_hook_delivery(delivery("other", "d1", 31, 2)).await.unwrap(), None);
    let listed = s.list_hook_deliveries("gh", t(40), 10).await.unwrap();
    let shown: Vec<(&str, bool)> = listed.iter().map(|d| (d.delivery_id.as_str(), d.kept)).collect();
    assert_eq!(shown, [("d3", true), ("d2", true), ("d1", false)]);
    assert!(listed.iter().all(|d| d.body.is_none() && d.headers.is_none()), "listings carry no bodies");
    let old = s.get_hook_delivery("gh", "d1", t(40)).await.unwrap().unwrap();
    assert_eq!((old.body, old.headers, old.trigger_id), (None, None, Some(first.id.clone())));

    let stats = s.hook_delivery_stats(t(40)).await.unwrap();
    assert_eq!(
        stats,
        [
            HookDeliveryStats { hook: "gh".into(), deliveries: 3, triggered: 2, last_received_at: Some(t(30)) },
            HookDeliveryStats { hook: "other".into(), deliveries: 1, triggered: 0, last_received_at: Some(t(31)) },
        ]
    );

    // Past their expiry they are forgotten: not found, and the id may start a trigger again.
    assert_eq!(s.get_hook_delivery("gh", "d1", t(10 + 3600)).await.unwrap(), None);
    assert!(matches!(s.create_trigger(with_trigger("d1", 10 + 3600)).await.unwrap(), CreateOutcome::Created(_)));
    let report = s.prune(t(40 + 3600), &RetentionSettings::default()).await.unwrap();
    assert_eq!(report.hook_deliveries, 3, "d2, d3 and other/d1: {report:?}");
    let left: Vec<String> =
        s.list_hook_deliveries("gh", t(40), 10).await.unwrap().into_iter().map(|d| d.delivery_id).collect();
    assert_eq!(left, ["d1"]);
    assert!(s.list_hook_deliveries("gh", t(0), 0).await.is_err(), "a zero limit is refused");
}
