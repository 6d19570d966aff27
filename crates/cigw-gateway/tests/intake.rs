//! The intake function called directly, as webhook hooks, schedules and chains will call it:
//! no HTTP in between, the same checks and the same store.

mod api_support;

use api_support::App;
use cigw_gateway::auth::{Principal, Scope};
use cigw_gateway::intake::request::TriggerRequest;
use cigw_gateway::intake::{Intake, IntakeError, Submission, TriggerAccepted, intake};
use serde_json::{Value, json};

fn submission(body: Value) -> Submission {
    let text = body.to_string();
    Submission {
        source: "hook:test".into(),
        request: serde_json::from_str::<TriggerRequest>(&text).unwrap(),
        body: serde_json::value::RawValue::from_string(text).unwrap(),
    }
}

fn requester() -> Principal {
    Principal::new("hook-token", "hook:test", vec![Scope::parse("trigger").unwrap()])
}

#[tokio::test]
async fn one_invalid_parameter_refuses_both_targets_and_stores_nothing() {
    let app = App::new().await;
    let body = json!({
        "targets": ["web-e2e", "circle-build"],
        "overrides": {"web-e2e": {"parameters": {"retries": "many"}}}
    });
    let err = intake(&app.state, submission(body), &requester(), None).await.unwrap_err();
    let IntakeError::Invalid { code, problems, omitted, .. } = err else { panic!("not a validation error: {err:?}") };
    assert_eq!(code, "invalid_parameters");
    assert_eq!(omitted, 0);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].field, "overrides.web-e2e.parameters.retries");
    assert_eq!(app.run_count().await, 0);
}

#[tokio::test]
async fn a_repeated_idempotency_key_replays_the_same_runs() {
    let app = App::new().await;
    let body = json!({"targets": ["web-e2e", "circle-build"], "ref": {"branch": "main"}});
    let key = Some("hook-delivery-1".to_string());
    let first = intake(&app.state, submission(body.clone()), &requester(), key.clone()).await.unwrap();
    let Intake::Created(created) = first else { panic!("the first intake must store: {first:?}") };
    assert_eq!(created.runs.len(), 2);
    let trigger = app.store().get_trigger(&created.trigger_id).await.unwrap();
    assert_eq!((trigger.source.as_str(), trigger.requested_by.as_str()), ("hook:test", "hook:test"));

    let again = intake(&app.state, submission(body), &requester(), key).await.unwrap();
    let Intake::Replayed(response) = again else { panic!("the repeat must replay: {again:?}") };
    let replayed: TriggerAccepted = serde_json::from_value(response).unwrap();
    assert_eq!(replayed.trigger_id, created.trigger_id);
    let ids = |a: &TriggerAccepted| a.runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&replayed), ids(&created));
    assert_eq!(app.run_count().await, 2);
}

#[tokio::test]
async fn a_requester_without_the_scope_learns_nothing_about_the_targets() {
    let app = App::new().await;
    let narrow = Principal::new("t", "narrow", vec![Scope::parse("trigger:web-*").unwrap()]);
    let body = json!({"targets": ["web-e2e", "circle-build", "no-such-target"]});
    let err = intake(&app.state, submission(body), &narrow, None).await.unwrap_err();
    let IntakeError::MissingScopes(scopes) = err else { panic!("not a scope error: {err:?}") };
    assert_eq!(scopes, ["trigger:circle-build", "trigger:no-such-target"]);
    assert_eq!(app.run_count().await, 0);
}
