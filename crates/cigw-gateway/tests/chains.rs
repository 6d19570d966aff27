//! The chain consumer over a real store: two consumers reading the same events fire once, a
//! refused firing is logged and passed (the feed never sticks), the depth limit stops a runaway
//! tree, and events that are not a move into an end state fire nothing.

mod api_support;

use api_support::App;
use cigw_core::RunState;
use cigw_core::chain::Chain;
use cigw_core::config::{Problems, Settings};
use cigw_gateway::chains::{Outcome, feed};
use cigw_gateway::state::AppState;
use cigw_store::{EventKind, NewEvent};
use serde_json::{Value, json};

fn chain(name: &str, table: Value) -> Chain {
    let mut problems = Problems::default();
    let parsed = Chain::parse(name, &table, &mut problems);
    assert!(!problems.has_errors(), "{problems:?}");
    parsed.unwrap()
}

async fn app_with(chains: Vec<Chain>) -> App {
    App::with_settings(move |s: &mut Settings| {
        s.chains = chains.into_iter().map(|c| (c.name.clone(), c)).collect();
    })
    .await
}

/// Another gateway process (a replica) on the same store and configuration.
fn replica(app: &App) -> AppState {
    AppState::new(app.state.store.clone(), (*app.state.catalog).clone(), (*app.state.settings).clone())
}

async fn runs_of(app: &App, target: &str) -> Vec<cigw_store::RunRecord> {
    app.runs().await.into_iter().filter(|r| r.target == target).collect()
}

#[tokio::test]
async fn two_consumers_reading_the_same_events_fire_once() {
    let app = app_with(vec![chain(
        "e2e-to-deploy",
        json!({"when": {"targets": ["web-e2e"]}, "then": {"targets": ["ship-deploy"], "labels": {"via": "chain"}}}),
    )])
    .await;
    let other = replica(&app);
    let ids = app.trigger(json!({"targets": ["web-e2e"], "ref": {"branch": "main", "sha": "abcdef12"}})).await;
    app.finish(&ids[0], RunState::Succeeded).await;
    let (a, b) = tokio::join!(feed::step(&app.state, 0), feed::step(&other, 0));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.0 > 0 && b.0 > 0, "both consumers moved their cursor");
    let deploys = runs_of(&app, "ship-deploy").await;
    assert_eq!(deploys.len(), 1, "one firing for one upstream transition");
    let deploy = &deploys[0];
    assert_eq!(deploy.chain_parent.as_deref(), Some(ids[0].as_str()));
    assert_eq!(deploy.git_ref.branch.as_deref(), Some("main"));
    assert_eq!(deploy.git_ref.sha.as_deref(), Some("abcdef12"), "a target that can pin a sha gets the upstream's");
    assert_eq!(deploy.requested_by, "chain:e2e-to-deploy");
    let trigger = app.store().get_trigger(&deploy.trigger_id).await.unwrap();
    assert_eq!(trigger.source, "chain:e2e-to-deploy");
    assert_eq!(trigger.labels, json!({"via": "chain"}));
    // Reading everything again (a restart that lost its cursor) fires nothing more.
    feed::step(&app.state, 0).await.unwrap();
    feed::step(&other, 0).await.unwrap();
    assert_eq!(runs_of(&app, "ship-deploy").await.len(), 1);
    assert_eq!(app.store().load_cursor(feed::CURSOR).await.unwrap().map(|c| c > 0), Some(true));
}

#[tokio::test]
async fn a_refused_firing_is_passed_and_the_feed_moves_on() {
    let app = app_with(vec![
        chain(
            "bad-template",
            json!({"when": {"targets": ["web-e2e"]},
                   "then": {"targets": ["circle-build"], "ref": {"branch": "{{ upstream.labels.missing }}"}}}),
        ),
        chain(
            "bad-parameter",
            json!({"when": {"targets": ["web-e2e"]}, "then": {"targets": ["web-e2e"], "parameters": {"retries": "many"}}}),
        ),
        chain("good", json!({"when": {"targets": ["web-smoke"], "states": ["failed"]}, "then": {"targets": ["circle-build"]}})),
    ])
    .await;
    let ids = app.trigger(json!({"targets": ["web-e2e"]})).await;
    app.finish(&ids[0], RunState::Succeeded).await;
    let events = app.store().events_after(0, &Default::default(), 100).await.unwrap();
    let end = events.iter().find(|e| e.run_id == ids[0] && e.state == RunState::Succeeded).unwrap();
    let outcomes = cigw_gateway::chains::handle_event(&app.state, end).await.unwrap();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    for o in &outcomes {
        let Outcome::Refused { message, .. } = o else { panic!("refused: {outcomes:?}") };
        assert!(message.contains("upstream.labels.missing") || message.contains("retries"), "{message}");
    }
    // A `failed` chain fires for a failed upstream; the feed got past the refused ones.
    let smoke = app.trigger(json!({"targets": ["web-smoke"], "parameters": {"api_key": "k-123"}})).await;
    app.finish(&smoke[0], RunState::Failed).await;
    let last = app.store().last_event_id().await.unwrap();
    let (cursor, _) = feed::step(&app.state, 0).await.unwrap();
    assert_eq!(cursor, last, "every event read was passed, the refused ones included");
    let builds = runs_of(&app, "circle-build").await;
    assert_eq!(builds.len(), 1);
    assert_eq!(builds[0].chain_parent.as_deref(), Some(smoke[0].as_str()));
}

#[tokio::test]
async fn the_depth_limit_stops_a_runaway_tree() {
    // A loop check-config would refuse; built directly to prove the runtime guard.
    let app = app_with(vec![chain(
        "again",
        json!({"when": {"targets": ["web-e2e"]}, "then": {"targets": ["web-e2e"]}, "max_depth": 2}),
    )])
    .await;
    let mut current = app.trigger(json!({"targets": ["web-e2e"]})).await.remove(0);
    let mut cursor = 0;
    for depth in 1..=3 {
        app.finish(&current, RunState::Succeeded).await;
        cursor = feed::step(&app.state, cursor).await.unwrap().0;
        let children: Vec<_> =
            app.runs().await.into_iter().filter(|r| r.chain_parent.as_deref() == Some(current.as_str())).collect();
        if depth <= 2 {
            assert_eq!(children.len(), 1, "depth {depth} fires");
            current = children[0].id.clone();
        } else {
            assert!(children.is_empty(), "depth {depth} is past the limit");
        }
    }
    let tree = app.store().trigger_tree(&app.store().get_run(&current).await.unwrap().trigger_id).await.unwrap();
    assert_eq!(tree.triggers.len(), 3);
}

#[tokio::test]
async fn events_that_are_not_a_move_into_an_end_state_fire_nothing() {
    let app =
        app_with(vec![chain("any", json!({"when": {"targets": ["web-e2e"]}, "then": {"targets": ["circle-build"]}}))])
            .await;
    let ids = app.trigger(json!({"targets": ["web-e2e"]})).await;
    app.finish(&ids[0], RunState::Succeeded).await;
    let cursor = app.store().last_event_id().await.unwrap();
    // A note appended to the ended run (as a rerun or a join expiry does) is not a transition.
    let note = app
        .store()
        .append_event(NewEvent {
            run_id: ids[0].clone(),
            kind: EventKind::Rerun,
            data: json!({"rerun_id": "x"}),
            created_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    assert!(!cigw_gateway::chains::is_terminal_transition(&note));
    feed::step(&app.state, cursor).await.unwrap();
    assert!(runs_of(&app, "circle-build").await.is_empty());
}
