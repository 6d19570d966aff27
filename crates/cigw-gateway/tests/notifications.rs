//! Outbound notifications end to end inside the gateway library: run events → outbox → signed
//! CDEvents POSTed to a local receiver. The receiver misbehaves (refuses connections, answers
//! 503 and 500 and 410, hangs past the timeout) and every event still arrives, in order per run,
//! or ends dead-lettered and is redelivered on request.

mod api_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api_support::{ADMIN, App};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use cigw_core::RunState;
use cigw_core::config::{Problems, Settings};
use cigw_core::notification::Notification;
use cigw_core::signature::standard_webhooks as sw;
use cigw_gateway::notifications::{self, Worker};
use cigw_store::{OutboxFilter, OutboxStatus};
use parking_lot::Mutex;
use serde_json::{Value, json};

const KEY_NEW: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const KEY_OLD: &str = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0";

/// What the receiver does with the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Accept,
    Status(u16),
    Hang(Duration),
}

/// One request the receiver saw.
#[derive(Debug, Clone)]
struct Seen {
    headers: HeaderMap,
    body: Value,
    raw: Bytes,
    answered: u16,
}

#[derive(Debug)]
struct Receiver {
    mode: Mutex<Mode>,
    seen: Mutex<Vec<Seen>>,
}

impl Receiver {
    fn accepted(&self) -> Vec<Seen> {
        self.seen.lock().iter().filter(|s| (200..300).contains(&s.answered)).cloned().collect()
    }
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, raw: Bytes) -> (StatusCode, HeaderMap) {
    let mode = *r.mode.lock();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let answered = match mode {
        Mode::Accept => 200,
        Mode::Status(code) => code,
        Mode::Hang(_) => 0,
    };
    // Recorded on arrival: a hung request is dropped by the gateway before any answer.
    r.seen.lock().push(Seen { headers, body, raw, answered });
    if let Mode::Hang(d) = mode {
        tokio::time::sleep(d).await;
    }
    let mut out = HeaderMap::new();
    if answered == 503 {
        out.insert("retry-after", "0".parse().unwrap());
    }
    (StatusCode::from_u16(answered.max(200)).unwrap(), out)
}

/// Serve the receiver on `addr` (`127.0.0.1:0` for any port).
async fn serve_receiver(addr: SocketAddr, receiver: Arc<Receiver>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let local = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(receiver);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    local
}

fn receiver(mode: Mode) -> Arc<Receiver> {
    Arc::new(Receiver { mode: Mutex::new(mode), seen: Mutex::new(Vec::new()) })
}

fn notification(name: &str, addr: SocketAddr, extra: Value) -> Notification {
    let mut table = json!({"url": format!("http://{addr}/hook"), "secrets": [KEY_NEW, KEY_OLD],
        "timeout": "400ms", "connect_timeout": "200ms", "backoff_base": "10ms", "backoff_cap": "40ms",
        "max_attempts": 200});
    for (k, v) in extra.as_object().unwrap() {
        table[k] = v.clone();
    }
    let mut problems = Problems::default();
    let n = Notification::parse(name, &table, &mut problems);
    assert!(!problems.has_errors(), "{problems:?}");
    n.unwrap()
}

async fn app_with(notifications: Vec<Notification>) -> App {
    App::with_settings(move |s: &mut Settings| {
        s.server.public_url = Some("https://cigw.example.com/".into());
        s.notifications = notifications.into_iter().map(|n| (n.name.clone(), n)).collect();
    })
    .await
}

/// Consume every run event into the outbox, as the feed does.
async fn feed(app: &App) {
    let mut feed = notifications::prepare(&app.state).await.unwrap().expect("notifications are configured");
    let mut consume = |cursor: String, page: Vec<cigw_store::EventRecord>| {
        let state = app.state.clone();
        async move { notifications::enqueue(&state, &cursor, &page).await.map(|_| ()) }
    };
    while feed.step(&app.state, &mut consume).await.unwrap() > 0 {}
}

/// A run taken through queued → running → `end`.
async fn run_to(app: &App, body: Value, end: RunState) -> String {
    let id = app.trigger(body).await.remove(0);
    app.dispatch(&id).await;
    app.observe(&id, RunState::Running).await;
    app.finish(&id, end).await;
    id
}

/// Tick the worker until `done` holds or `limit` passes.
async fn deliver_until(worker: &Worker, limit: Duration, mut done: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(tokio::time::Instant::now() < end, "not done within {limit:?}");
        if worker.tick().await == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn schema_validator(name: &str) -> jsonschema::Validator {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/resources/cdevents/schemas");
    let read = |path: String| -> Value { serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap() };
    let mut options = jsonschema::options().should_validate_formats(true);
    for entry in std::fs::read_dir(format!("{dir}/links")).unwrap() {
        let link = read(entry.unwrap().path().display().to_string());
        let id = link["$id"].as_str().unwrap().to_string();
        options = options.with_resource(id, jsonschema::Resource::from_contents(link).unwrap());
    }
    options.build(&read(format!("{dir}/{name}.json"))).unwrap()
}

fn assert_valid(event: &Value) {
    let name = match event["context"]["type"].as_str().unwrap() {
        "dev.cdevents.pipelinerun.queued.0.3.0" => "pipelinerunqueued",
        "dev.cdevents.pipelinerun.started.0.3.0" => "pipelinerunstarted",
        "dev.cdevents.pipelinerun.finished.0.3.0" => "pipelinerunfinished",
        other => panic!("unexpected type {other}"),
    };
    let validator = schema_validator(name);
    let errors: Vec<String> = validator.iter_errors(event).map(|e| format!("{e} at {}", e.instance_path)).collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{event:#}");
}

fn header<'a>(seen: &'a Seen, name: &str) -> &'a str {
    seen.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
}

fn verify(seen: &Seen, keys: &[&str]) -> Result<(), cigw_core::signature::SignatureError> {
    let keys: Vec<Vec<u8>> = keys.iter().map(|k| sw::key(k).unwrap()).collect();
    sw::verify(
        &keys,
        Some(header(seen, "webhook-id")),
        Some(header(seen, "webhook-timestamp")),
        Some(header(seen, "webhook-signature")),
        &seen.raw,
        chrono::Utc::now().timestamp(),
        sw::DEFAULT_TOLERANCE_SECS,
    )
}

/// The (type suffix, state) of each accepted event of `run`, in arrival order.
fn story(seen: &[Seen], run: &str) -> Vec<(String, String)> {
    seen.iter()
        .filter(|s| s.body["subject"]["id"] == run)
        .map(|s| {
            let ty = s.body["context"]["type"].as_str().unwrap().split('.').nth(3).unwrap().to_string();
            (ty, s.body["customData"]["cigw"]["state"].as_str().unwrap().to_string())
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[tokio::test]
async fn events_match_the_cdevents_schemas_and_their_signatures_verify() {
    let rx = receiver(Mode::Accept);
    let addr = serve_receiver("127.0.0.1:0".parse().unwrap(), rx.clone()).await;
    let app = app_with(vec![notification("ops", addr, json!({}))]).await;
    notifications::prepare(&app.state).await.unwrap();
    let body = |target: &str| json!({"targets": [target], "parameters": {"api_key": "hunter2-secret"}});
    let ok = run_to(&app, body("web-e2e"), RunState::Succeeded).await;
    let failed = run_to(&app, body("web-e2e"), RunState::Failed).await;
    let skipped = app.trigger(json!({"targets": ["circle-build"]})).await.remove(0);
    app.finish(&skipped, RunState::Skipped).await;
    feed(&app).await;
    let worker = Worker::new(app.state.clone());
    deliver_until(&worker, Duration::from_secs(10), || rx.accepted().len() == 8).await;

    let seen = rx.accepted();
    for s in &seen {
        assert_valid(&s.body);
        assert_eq!(header(s, "content-type"), "application/json");
        assert_eq!(header(s, "ce-specversion"), "1.0");
        assert_eq!(header(s, "ce-type"), s.body["context"]["type"].as_str().unwrap());
        assert_eq!(header(s, "webhook-id"), s.body["context"]["id"].as_str().unwrap());
        // Two secrets (rotation): two `v1,` entries; a receiver that knows either one accepts.
        assert_eq!(header(s, "webhook-signature").split(' ').count(), 2);
        verify(s, &[KEY_NEW]).unwrap();
        verify(s, &[KEY_OLD]).unwrap();
        assert!(verify(s, &["whsec_dGhlLXdyb25nLWtleS1lbnRpcmVseQ=="]).is_err());
        assert!(!String::from_utf8_lossy(&s.raw).contains("hunter2"), "secret parameters are masked");
        assert_eq!(s.body["context"]["source"], "https://cigw.example.com");
    }
    let ids: std::collections::BTreeSet<&str> = seen.iter().map(|s| header(s, "webhook-id")).collect();
    assert_eq!(ids.len(), 8, "event ids are unique");
    assert_eq!(story(&seen, &ok), pairs(&[("queued", "pending"), ("started", "running"), ("finished", "succeeded")]));
    assert_eq!(story(&seen, &failed)[2], ("finished".to_string(), "failed".to_string()));
    assert_eq!(story(&seen, &skipped), pairs(&[("queued", "pending"), ("finished", "skipped")]));
    let finished = |run: &str| {
        seen.iter()
            .find(|s| s.body["subject"]["id"] == run && s.body["subject"]["content"]["outcome"].is_string())
            .unwrap()
    };
    assert_eq!(finished(&ok).body["subject"]["content"]["outcome"], "success");
    assert_eq!(finished(&failed).body["subject"]["content"]["outcome"], "failure");
    assert_eq!(finished(&skipped).body["subject"]["content"]["outcome"], "success", "skipped finishes as success");
    let s = finished(&ok);
    assert_eq!(s.body["subject"]["content"]["pipelineName"], "web-e2e");
    assert_eq!(s.body["customData"]["cigw"]["parameters"]["api_key"], "***");
    assert!(s.body["subject"]["content"]["uri"].as_str().unwrap().starts_with("http"));
    assert_eq!(
        finished(&skipped).body["subject"]["content"]["uri"],
        format!("https://cigw.example.com/v1/runs/{skipped}"),
        "without a provider URL the cigw run link"
    );

    // The conformance examples of the specification pass the same validators (the check is real).
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/resources/cdevents/conformance");
    for name in ["pipelinerun_queued", "pipelinerun_started", "pipelinerun_finished"] {
        let example: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}/{name}.json")).unwrap()).unwrap();
        assert_valid(&example);
        let mut broken = example.clone();
        broken["subject"]["content"]["colour"] = json!("red");
        assert!(!schema_validator(&name.replace('_', "")).is_valid(&broken), "{name}: unknown content is refused");
    }

    // Every row is delivered; a second pass sends nothing more.
    let rows = app.store().list_outbox(&OutboxFilter::default(), None).await.unwrap().rows;
    assert!(rows.iter().all(|r| r.status == OutboxStatus::Delivered && r.attempts == 1), "{rows:?}");
    assert_eq!(worker.tick().await, 0);
    assert_eq!(rx.seen.lock().len(), 8);
}

#[tokio::test]
async fn a_receiver_down_for_a_while_gets_every_event_in_order_once_it_is_back() {
    // A port nothing listens on yet: connections are refused.
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let app = app_with(vec![notification("ops", addr, json!({}))]).await;
    notifications::prepare(&app.state).await.unwrap();
    let mut runs = Vec::new();
    for end in [RunState::Succeeded, RunState::Failed, RunState::Canceled] {
        runs.push(run_to(&app, json!({"targets": ["web-e2e"]}), end).await);
    }
    feed(&app).await;
    let worker = Worker::new(app.state.clone());
    for _ in 0..5 {
        worker.tick().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let list = app.get("/v1/notifications/deliveries?status=pending", ADMIN).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let pending = list.body["deliveries"].as_array().unwrap();
    assert_eq!(pending.len(), 9);
    let first = pending.iter().find(|d| d["attempts"].as_u64().unwrap() > 1).expect("retried while refused");
    assert!(first["last_error"].as_str().unwrap().starts_with("could not connect"), "{first}");
    assert!(!first["last_error"].as_str().unwrap().contains(&addr.to_string()), "no URL in errors");

    // It comes back answering 503 (Retry-After: 0), then hangs past the timeout, then works.
    let rx = receiver(Mode::Status(503));
    serve_receiver(addr, rx.clone()).await;
    deliver_until(&worker, Duration::from_secs(10), || rx.seen.lock().len() >= 3).await;
    *rx.mode.lock() = Mode::Hang(Duration::from_secs(2));
    deliver_until(&worker, Duration::from_secs(10), || rx.seen.lock().iter().filter(|s| s.answered == 0).count() >= 1)
        .await;
    let rows = app.store().list_outbox(&OutboxFilter::default(), None).await.unwrap().rows;
    assert!(
        rows.iter().any(|r| r.last_error.as_deref().is_some_and(|e| e.starts_with("no answer within"))),
        "{rows:?}"
    );
    assert!(rows.iter().any(|r| r.last_status == Some(503)), "{rows:?}");
    *rx.mode.lock() = Mode::Accept;
    deliver_until(&worker, Duration::from_secs(20), || rx.accepted().len() >= 9).await;

    let seen = rx.accepted();
    assert_eq!(seen.len(), 9);
    let ends = ["succeeded", "failed", "canceled"];
    for (run, end) in runs.iter().zip(ends) {
        assert_eq!(story(&seen, run), pairs(&[("queued", "pending"), ("started", "running"), ("finished", end)]));
    }
    // Order per run held on every attempt, not only the accepted ones: no later event of a run
    // was ever sent while an earlier one was still undelivered.
    let all = rx.seen.lock().clone();
    for run in &runs {
        let attempts: Vec<i64> = all
            .iter()
            .filter(|s| s.body["subject"]["id"] == run.as_str())
            .map(|s| s.body["customData"]["cigw"]["event_id"].as_i64().unwrap())
            .collect();
        let mut sorted = attempts.clone();
        sorted.sort();
        assert_eq!(attempts, sorted, "{run}: sent out of order");
    }
    let rows = app.store().list_outbox(&OutboxFilter::default(), None).await.unwrap().rows;
    assert!(rows.iter().all(|r| r.status == OutboxStatus::Delivered), "{rows:?}");
}

#[tokio::test]
async fn a_receiver_that_never_comes_back_is_dead_lettered_and_can_be_redelivered() {
    let rx = receiver(Mode::Status(500));
    let addr = serve_receiver("127.0.0.1:0".parse().unwrap(), rx.clone()).await;
    let gone = receiver(Mode::Status(410));
    let gone_addr = serve_receiver("127.0.0.1:0".parse().unwrap(), gone.clone()).await;
    let app = app_with(vec![
        notification("ops", addr, json!({"max_attempts": 3, "states": ["succeeded"]})),
        notification("gone", gone_addr, json!({"states": ["succeeded"]})),
    ])
    .await;
    notifications::prepare(&app.state).await.unwrap();
    let run = run_to(&app, json!({"targets": ["web-e2e"]}), RunState::Succeeded).await;
    feed(&app).await;
    let worker = Worker::new(app.state.clone());
    let dead = |app: &App| {
        let store = app.store().clone();
        async move {
            store
                .list_outbox(&OutboxFilter { status: Some(OutboxStatus::Dead), ..Default::default() }, None)
                .await
                .unwrap()
        }
    };
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while dead(&app).await.rows.len() < 2 {
        assert!(tokio::time::Instant::now() < end, "not dead-lettered");
        worker.tick().await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    assert_eq!(rx.seen.lock().len(), 3, "the give-up limit");
    assert_eq!(gone.seen.lock().len(), 1, "410 Gone is not retried");

    let token = app.token("reader", &["read"]).await;
    app.get("/v1/notifications/deliveries", &token).await.assert_error(StatusCode::FORBIDDEN, "missing_scope");
    let list = app.get("/v1/notifications/deliveries?status=dead&notification=ops", ADMIN).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let d = &list.body["deliveries"][0];
    assert_eq!(
        (d["status"].as_str(), d["attempts"].as_u64(), d["max_attempts"].as_u64()),
        (Some("dead"), Some(3), Some(3))
    );
    assert_eq!(d["last_status"], 500);
    assert_eq!(d["run_id"], run.as_str());
    assert!(d["last_error"].as_str().unwrap().contains("gave up after 3 attempts"), "{d}");
    assert_eq!(d["event_type"], "dev.cdevents.pipelinerun.finished.0.3.0");
    assert!(d["next_attempt_at"].is_null());
    let id = d["id"].as_i64().unwrap();
    let detail = app.get(&format!("/v1/notifications/deliveries/{id}"), ADMIN).await;
    assert_eq!(detail.body["payload"]["subject"]["id"], run.as_str(), "{}", detail.text);
    let gone_row = app.get("/v1/notifications/deliveries?notification=gone", ADMIN).await;
    assert!(gone_row.body["deliveries"][0]["last_error"].as_str().unwrap().contains("410"), "{}", gone_row.text);

    // Bad requests change nothing.
    for (path, field) in [
        ("/v1/notifications/deliveries?status=lost", "status"),
        ("/v1/notifications/deliveries?limit=0", "limit"),
        ("/v1/notifications/deliveries?cursor=abc", "cursor"),
        ("/v1/notifications/deliveries?colour=red", "colour"),
        ("/v1/notifications/deliveries/abc", "id"),
    ] {
        let reply = app.get(path, ADMIN).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}: {}", reply.text);
        assert_eq!(reply.body["details"][0]["field"], field, "{path}: {}", reply.text);
    }
    app.post_empty("/v1/notifications/deliveries/999999/redeliver", ADMIN)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    app.post_empty(&format!("/v1/notifications/deliveries/{id}/redeliver"), &token)
        .await
        .assert_error(StatusCode::FORBIDDEN, "missing_scope");

    // The receiver is fixed; redelivery sends the same message again.
    *rx.mode.lock() = Mode::Accept;
    let again = app.post_empty(&format!("/v1/notifications/deliveries/{id}/redeliver"), ADMIN).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!((again.body["status"].as_str(), again.body["attempts"].as_u64()), (Some("pending"), Some(0)));
    app.post_empty(&format!("/v1/notifications/deliveries/{id}/redeliver"), ADMIN)
        .await
        .assert_error(StatusCode::CONFLICT, "delivery_pending");
    deliver_until(&worker, Duration::from_secs(10), || rx.accepted().len() == 1).await;
    let first_id = header(&rx.seen.lock()[0], "webhook-id").to_string();
    assert_eq!(header(&rx.accepted()[0], "webhook-id"), first_id, "the same webhook-id: receivers can dedupe");
    let row = app.store().get_outbox(id).await.unwrap();
    assert_eq!((row.status, row.attempts), (OutboxStatus::Delivered, 1));
}

#[tokio::test]
async fn a_restart_with_pending_rows_loses_nothing_and_sends_nothing_twice() {
    let rx = receiver(Mode::Accept);
    let addr = serve_receiver("127.0.0.1:0".parse().unwrap(), rx.clone()).await;
    let app = app_with(vec![notification("ops", addr, json!({}))]).await;
    notifications::prepare(&app.state).await.unwrap();
    let run = run_to(&app, json!({"targets": ["web-e2e"]}), RunState::Succeeded).await;
    feed(&app).await;
    // The first process claims everything and dies before sending (its lease runs out).
    let now = chrono::Utc::now();
    let claimed = app.store().claim_outbox("died", now, now + chrono::Duration::milliseconds(300), 100).await.unwrap();
    assert_eq!(claimed.len(), 1, "only the run's first event is claimable: order");
    // Consuming the same events again (a replica, or a page consumed twice) enqueues nothing.
    let page = app.store().events_after(0, &Default::default(), 1000).await.unwrap();
    assert_eq!(notifications::enqueue(&app.state, notifications::CURSOR, &page).await.unwrap(), 0);
    let restarted = Worker::new(app.state.clone());
    assert_eq!(restarted.tick().await, 0, "the dead process's lease still holds");
    tokio::time::sleep(Duration::from_millis(350)).await;
    deliver_until(&restarted, Duration::from_secs(10), || rx.accepted().len() == 3).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(restarted.tick().await, 0);
    assert_eq!(story(&rx.accepted(), &run).len(), 3);
    assert_eq!(rx.seen.lock().len(), 3, "each event sent once");
    // A new event after the restart continues from the stored cursor (a fresh feed).
    app.trigger(json!({"targets": ["web-e2e"]})).await;
    feed(&app).await;
    deliver_until(&restarted, Duration::from_secs(10), || rx.accepted().len() == 4).await;
}

#[tokio::test]
async fn two_workers_on_one_store_never_send_the_same_row() {
    let rx = receiver(Mode::Accept);
    let addr = serve_receiver("127.0.0.1:0".parse().unwrap(), rx.clone()).await;
    let app = app_with(vec![notification("ops", addr, json!({})), notification("audit", addr, json!({}))]).await;
    notifications::prepare(&app.state).await.unwrap();
    for _ in 0..6 {
        run_to(&app, json!({"targets": ["web-e2e"]}), RunState::Succeeded).await;
    }
    feed(&app).await;
    let (a, b) = (Worker::new(app.state.clone()), Worker::new(app.state.clone()));
    let spin = |w: Worker, rx: Arc<Receiver>| async move {
        let end = tokio::time::Instant::now() + Duration::from_secs(15);
        while rx.accepted().len() < 36 && tokio::time::Instant::now() < end {
            if w.tick().await == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    tokio::join!(spin(a, rx.clone()), spin(b, rx.clone()));
    let seen = rx.seen.lock().clone();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for s in &seen {
        *count.entry(header(s, "webhook-id").to_string()).or_default() += 1;
    }
    assert_eq!(count.len(), 36, "6 runs × 3 events × 2 notifications");
    assert!(count.values().all(|n| *n == 1), "a row was sent twice: {count:?}");
}
