//! Chains and supersede, on both backends: supersede decided under the dispatcher's lease,
//! chain firings once per upstream run, joins that keep each target's latest result and fire
//! once, expiry with events, and trigger trees.

use std::collections::BTreeSet;
use std::time::Duration;

use cigw_core::{GitRef, RunState};
use cigw_store::*;

use super::{Ctx, create, events_of, new_trigger, t};

fn firing(chain: &str, upstream: &RunRecord, root: &str, depth: u32, join_key: Option<&str>) -> ChainFiring {
    ChainFiring {
        chain: chain.into(),
        upstream_run_id: upstream.id.clone(),
        parents: vec![upstream.id.clone()],
        root_trigger_id: root.into(),
        depth,
        join_key: join_key.map(str::to_string),
    }
}

fn chained(chain: &ChainFiring, target: &str, secs: i64) -> NewTrigger {
    let mut trigger = new_trigger(&[target], t(secs));
    trigger.source = format!("chain:{}", chain.chain);
    trigger.runs[0].chain_parent = Some(chain.upstream_run_id.clone());
    trigger.chain_firing = Some(chain.clone());
    trigger
}

async fn claim_one(s: &std::sync::Arc<dyn Store>, owner: &str, secs: i64) -> Vec<RunRecord> {
    s.claim_dispatch(owner, t(secs), t(secs + 60), 100).await.unwrap()
}

pub async fn supersede_skips_older_unsent_runs_linking_the_newest(ctx: Ctx) {
    let s = &ctx.store;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(create(s, new_trigger(&["a"], t(i))).await.runs[0].id.clone());
    }
    let mut other_branch = new_trigger(&["a"], t(1));
    other_branch.runs[0].git_ref = GitRef::branch("feature");
    let other_branch = create(s, other_branch).await.runs.remove(0);
    let claimed = claim_one(s, "d", 10).await;
    assert_eq!(claimed.len(), 6);
    let newest = ids.last().unwrap().clone();
    let mut skipped = 0;
    for run in &claimed {
        match s.supersede(&run.id, "d", t(11)).await.unwrap() {
            Some(u) => {
                skipped += 1;
                assert_eq!(u.run.state, RunState::Skipped);
                assert!(u.run.lease_owner.is_none() && u.run.next_dispatch_at.is_none());
                let message = u.run.message.clone().unwrap();
                assert!(message.contains(&newest), "links the newest run: {message}");
                let events = events_of(s, &run.id).await;
                let last = events.last().unwrap();
                assert_eq!(last.kind, EventKind::Superseded);
                assert_eq!(last.data["detail"]["superseded_by"], newest.as_str());
                assert_eq!(last.data["detail"]["links"]["superseded_by"], format!("/v1/runs/{newest}"));
            }
            None => assert!(run.id == newest || run.id == other_branch.id, "only the newest of each branch stays"),
        }
    }
    assert_eq!(skipped, 4);
    // Not the lease holder: a conflict, nothing changes.
    let mut late = new_trigger(&["a"], t(20));
    late.runs[0].git_ref = GitRef::branch("feature");
    create(s, late).await;
    assert!(matches!(s.supersede(&other_branch.id, "someone-else", t(21)).await, Err(StoreError::Conflict { .. })));
    // A run that may have reached its provider is never superseded.
    s.record_dispatch(
        &other_branch.id,
        "d",
        DispatchOutcome::MaybeSent { sent_at: t(12), at: t(13), reason: "timeout".into() },
        t(12),
    )
    .await
    .unwrap();
    let again = claim_one(s, "d", 30).await;
    assert!(again.iter().any(|r| r.id == other_branch.id));
    assert_eq!(s.supersede(&other_branch.id, "d", t(31)).await.unwrap(), None);
    assert_eq!(s.get_run(&other_branch.id).await.unwrap().state, RunState::Pending);
}

pub async fn concurrent_supersedes_across_replicas_keep_one(ctx: Ctx) {
    let s = &ctx.store;
    let other = ctx.another().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(create(s, new_trigger(&["burst"], t(i))).await.runs[0].id.clone());
    }
    // Two replicas claim half each and decide at once.
    let (mine, theirs) =
        tokio::join!(s.claim_dispatch("r1", t(30), t(90), 10), other.claim_dispatch("r2", t(30), t(90), 10));
    let (mine, theirs) = (mine.unwrap(), theirs.unwrap());
    assert_eq!(mine.len() + theirs.len(), 20);
    let decide = |store: std::sync::Arc<dyn Store>, owner: &'static str, runs: Vec<RunRecord>| async move {
        let mut kept = Vec::new();
        for r in runs {
            if store.supersede(&r.id, owner, t(31)).await.unwrap().is_none() {
                kept.push(r.id);
            }
        }
        kept
    };
    let (a, b) = tokio::join!(decide(s.clone(), "r1", mine), decide(other.clone(), "r2", theirs));
    let kept: Vec<String> = a.into_iter().chain(b).collect();
    assert_eq!(kept, [ids[19].clone()], "only the newest is left to send");
    for id in &ids[..19] {
        let run = s.get_run(id).await.unwrap();
        assert_eq!(run.state, RunState::Skipped);
        assert!(run.message.unwrap().contains(&ids[19]));
    }
}

pub async fn chain_firings_record_links_and_trees(ctx: Ctx) {
    let s = &ctx.store;
    let root = create(s, new_trigger(&["a", "b"], t(0))).await;
    let up = &root.runs[0];
    let f = firing("a-to-c", up, &root.id, 1, None);
    let other = ctx.another().await;
    let (x, y) = tokio::join!(s.create_trigger(chained(&f, "c", 5)), other.create_trigger(chained(&f, "c", 5)));
    let outcomes = [x.unwrap(), y.unwrap()];
    let created: Vec<&TriggerRecord> =
        outcomes.iter().filter_map(|o| if let CreateOutcome::Created(t) = o { Some(t) } else { None }).collect();
    assert_eq!(created.len(), 1, "two replicas firing the same transition store one trigger: {outcomes:?}");
    let down = created[0].clone();
    assert!(outcomes.iter().any(|o| *o == CreateOutcome::ChainAlreadyFired { trigger_id: down.id.clone() }));

    let link = s.chain_link(&down.id).await.unwrap().unwrap();
    assert_eq!((link.chain.as_str(), link.root_trigger_id.as_str(), link.depth), ("a-to-c", root.id.as_str(), 1));
    assert_eq!(link.parents, std::slice::from_ref(&up.id));
    assert_eq!(s.chain_link(&root.id).await.unwrap(), None);

    // A grandchild, then the tree from any member.
    let f2 = firing("c-to-d", &down.runs[0], &root.id, 2, None);
    let grand = create(s, chained(&f2, "d", 9)).await;
    for from in [&root.id, &down.id, &grand.id] {
        let tree = s.trigger_tree(from).await.unwrap();
        assert_eq!(tree.root_trigger_id, root.id);
        let ids: Vec<&str> = tree.triggers.iter().map(|(t, _)| t.id.as_str()).collect();
        assert_eq!(ids, [root.id.as_str(), down.id.as_str(), grand.id.as_str()]);
        assert_eq!(tree.triggers[2].1.as_ref().unwrap().depth, 2);
    }
    assert!(matches!(s.trigger_tree("no-such-trigger").await, Err(StoreError::NotFound { .. })));
}

fn arrival(chain: &str, key: &str, target: &str, run: &RunRecord, state: RunState, event_id: i64) -> JoinArrival {
    JoinArrival {
        chain: chain.into(),
        join_key: key.into(),
        all_of: vec!["a".into(), "b".into()],
        target: target.into(),
        member: JoinMember { run_id: run.id.clone(), state, done: state == RunState::Succeeded, event_id },
        ttl: Duration::from_secs(3600),
        now: t(event_id),
    }
}

pub async fn joins_keep_the_latest_result_and_fire_once(ctx: Ctx) {
    let s = &ctx.store;
    let root = create(s, new_trigger(&["a", "b"], t(0))).await;
    let (a, b) = (&root.runs[0], &root.runs[1]);
    let j = s.record_join_arrival(arrival("fan", &root.id, "a", a, RunState::Failed, 10)).await.unwrap();
    assert_eq!((j.state, j.waiting_for()), (JoinState::Open, vec!["a".to_string(), "b".to_string()]));
    let j = s.record_join_arrival(arrival("fan", &root.id, "b", b, RunState::Succeeded, 11)).await.unwrap();
    assert_eq!(j.waiting_for(), ["a"], "a failed upstream blocks the join");
    // Firing a join that is not complete stores nothing.
    let early = chained(&firing("fan", b, &root.id, 1, Some(&root.id)), "c", 12);
    assert_eq!(s.create_trigger(early).await.unwrap(), CreateOutcome::JoinNotReady);
    // A rerun of `a` succeeds; an older event read late changes nothing.
    let rerun = create(s, new_trigger(&["a"], t(13))).await.runs.remove(0);
    let j = s.record_join_arrival(arrival("fan", &root.id, "a", &rerun, RunState::Succeeded, 14)).await.unwrap();
    assert!(j.complete());
    let j = s.record_join_arrival(arrival("fan", &root.id, "a", a, RunState::Failed, 10)).await.unwrap();
    assert!(j.complete(), "a re-read older event does not undo the rerun's result");
    assert_eq!(j.members["a"].run_id, rerun.id);
    assert_eq!(s.open_joins().await.unwrap().len(), 1);

    // Both completing arrivals fire, on two replicas: one trigger.
    let other = ctx.another().await;
    let by_a = chained(&firing("fan", &rerun, &root.id, 1, Some(&root.id)), "c", 15);
    let by_b = chained(&firing("fan", b, &root.id, 1, Some(&root.id)), "c", 15);
    let (x, y) = tokio::join!(s.create_trigger(by_a), other.create_trigger(by_b));
    let outcomes = [x.unwrap(), y.unwrap()];
    assert_eq!(outcomes.iter().filter(|o| matches!(o, CreateOutcome::Created(_))).count(), 1, "{outcomes:?}");
    assert!(outcomes.iter().any(|o| matches!(o, CreateOutcome::ChainAlreadyFired { .. })), "{outcomes:?}");
    assert!(s.open_joins().await.unwrap().is_empty());
    let fired = s.record_join_arrival(arrival("fan", &root.id, "b", b, RunState::Succeeded, 20)).await.unwrap();
    assert_eq!(fired.state, JoinState::Fired, "a fired join stays fired");
    assert!(fired.trigger_id.is_some());
}

pub async fn half_complete_joins_expire_with_events(ctx: Ctx) {
    let s = &ctx.store;
    let root = create(s, new_trigger(&["a", "b"], t(0))).await;
    let a = &root.runs[0];
    let mut arr = arrival("fan", "abc1234", "a", a, RunState::Succeeded, 10);
    arr.ttl = Duration::from_secs(60);
    s.record_join_arrival(arr.clone()).await.unwrap();
    assert_eq!(s.expire_join("fan", "abc1234", t(69)).await.unwrap(), None, "not due yet");
    let expired = s.expire_join("fan", "abc1234", t(70)).await.unwrap().expect("due");
    assert_eq!((expired.state, expired.waiting_for()), (JoinState::Expired, vec!["b".to_string()]));
    assert_eq!(s.expire_join("fan", "abc1234", t(71)).await.unwrap(), None, "once");
    let events = events_of(s, &a.id).await;
    let ev = events.iter().find(|e| e.kind == EventKind::JoinExpired).expect("a join_expired event");
    assert_eq!(ev.data["chain"], "fan");
    assert_eq!(ev.data["waiting_for"], serde_json::json!(["b"]));
    assert!(s.open_joins().await.unwrap().is_empty());
    // A later arrival opens a new round.
    arr.member.event_id = 80;
    arr.now = t(80);
    let round = s.record_join_arrival(arr).await.unwrap();
    assert_eq!((round.state, round.opened_at), (JoinState::Open, t(80)));
    let keys: BTreeSet<String> = s.open_joins().await.unwrap().into_iter().map(|j| j.join_key).collect();
    assert_eq!(keys, BTreeSet::from(["abc1234".to_string()]));
}
