//! `GET /v1/events` (Server-Sent Events: replay with `Last-Event-ID`, filters, scopes, live
//! following, slow clients, shutdown) and the `?wait=` long-poll of `GET /v1/runs/{id}`.

mod api_support;

use std::time::{Duration, Instant};

use api_support::{ADMIN, App, request};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use cigw_core::RunState;
use cigw_gateway::api::LAST_EVENT_ID;
use cigw_gateway::state::StreamSettings;
use cigw_store::EventFilter;
use futures::StreamExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Generous bound for things that should happen at once.
const SOON: Duration = Duration::from_secs(5);

/// One parsed SSE message.
#[derive(Debug, Clone)]
struct Message {
    id: i64,
    data: Value,
}

/// An open stream, read message by message.
struct Stream {
    body: axum::body::BodyDataStream,
    pending: String,
    comments: usize,
}

impl Stream {
    /// The next message, or `None` when the stream ended; panics after `SOON`.
    async fn next(&mut self) -> Option<Message> {
        self.next_within(SOON).await.expect("no message in time")
    }

    /// The next message within `limit`: `Err` on timeout, `Ok(None)` when the stream ended.
    async fn next_within(&mut self, limit: Duration) -> Result<Option<Message>, ()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let frame: String = self.pending.drain(..end + 2).collect();
                let (mut id, mut data) = (None, String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse::<i64>().unwrap());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    } else if line.starts_with(':') {
                        self.comments += 1;
                    } else {
                        assert!(!line.starts_with("event:"), "messages carry no event field: {frame:?}");
                    }
                }
                if let Some(id) = id {
                    return Ok(Some(Message { id, data: serde_json::from_str(&data).unwrap() }));
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Err(()),
                Ok(None) => return Ok(None),
                Ok(Some(chunk)) => self.pending.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap()),
            }
        }
    }

    /// Read `n` messages.
    async fn take(&mut self, n: usize) -> Vec<Message> {
        let mut out = Vec::new();
        while out.len() < n {
            out.push(self.next().await.expect("the stream ended early"));
        }
        out
    }
}

async fn app_with(streams: StreamSettings) -> App {
    let mut app = App::new().await;
    app.state.streams = streams;
    app.router = cigw_gateway::build_router(app.state.clone());
    app
}

fn quick() -> StreamSettings {
    StreamSettings {
        keep_alive: Duration::from_secs(15),
        poll_interval: Duration::from_millis(50),
        buffer: 64,
        slow_client_grace: Duration::from_millis(200),
        page: 3,
    }
}

async fn open(app: &App, path: &str, token: &str, last_event_id: Option<i64>) -> Stream {
    let mut req = request(Method::GET, path, Some(token), None);
    if let Some(id) = last_event_id {
        req.headers_mut().insert(LAST_EVENT_ID, id.to_string().parse().unwrap());
    }
    let response = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
    Stream { body: response.into_body().into_data_stream(), pending: String::new(), comments: 0 }
}

/// All stored events (ids), in order.
async fn all_event_ids(app: &App, filter: &EventFilter) -> Vec<i64> {
    app.store().events_after(0, filter, 1000).await.unwrap().iter().map(|e| e.id).collect()
}

fn web(branch: &str) -> Value {
    json!({"targets": ["web-e2e"], "ref": {"branch": branch}})
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_misses_nothing_and_repeats_nothing() {
    let app = app_with(quick()).await;
    let first = app.trigger(web("main")).await.remove(0);
    let second = app.trigger(web("main")).await.remove(0);

    let mut stream = open(&app, "/v1/events?from=0", ADMIN, None).await;
    let before = stream.take(2).await;
    assert_eq!(before[0].data["run_id"], first.as_str());
    assert_eq!(before[0].data["kind"], "created");
    assert_eq!(before[0].data["target"], "web-e2e");
    assert!(before[0].data["trigger_id"].is_string());
    let last_seen = before[1].id;
    drop(stream); // the client goes away

    // While it is gone: the runs move on.
    app.dispatch(&first).await;
    app.observe(&first, RunState::Running).await;
    app.finish(&second, RunState::Canceled).await;
    app.finish(&first, RunState::Succeeded).await;

    let mut resumed = open(&app, "/v1/events", ADMIN, Some(last_seen)).await;
    let all = all_event_ids(&app, &EventFilter::default()).await;
    let missed: Vec<i64> = all.iter().copied().filter(|id| *id > last_seen).collect();
    assert!(missed.len() >= 4, "{all:?}");
    let after: Vec<i64> = resumed.take(missed.len()).await.iter().map(|m| m.id).collect();
    assert_eq!(after, missed, "exactly the events after {last_seen}, in order");

    // Then it follows live.
    let third = app.trigger(web("main")).await.remove(0);
    let live = resumed.next().await.unwrap();
    assert_eq!(live.data["run_id"], third.as_str());
    assert!(live.id > *after.last().unwrap());
    let stored = app.store().events_after(live.id - 1, &EventFilter::default(), 1).await.unwrap();
    assert_eq!(live.data["kind"], stored[0].kind.as_str());
    assert_eq!(live.data["state"], stored[0].state.as_str());
}

#[tokio::test]
async fn the_query_parameter_replays_like_the_header_and_no_start_means_the_current_end() {
    let app = app_with(quick()).await;
    let old = app.trigger(web("main")).await.remove(0);
    let mut from_end = open(&app, "/v1/events", ADMIN, None).await;
    let all = all_event_ids(&app, &EventFilter::default()).await;
    let mut by_query = open(&app, &format!("/v1/events?last_event_id={}", all[0] - 1), ADMIN, None).await;
    assert_eq!(by_query.next().await.unwrap().data["run_id"], old.as_str());

    let new = app.trigger(web("main")).await.remove(0);
    let first = from_end.next().await.unwrap();
    assert_eq!(first.data["run_id"], new.as_str(), "a stream without a start sees only new events");
}

#[tokio::test]
async fn the_stream_needs_a_token_with_read() {
    let app = app_with(quick()).await;
    let reply = app.call(Method::GET, "/v1/events", None, None).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    let cancel_only = app.token("canceller", &["cancel"]).await;
    let reply = app.get("/v1/events", &cancel_only).await;
    reply.assert_error(StatusCode::FORBIDDEN, "missing_scope");
    let reader = app.token("reader", &["read"]).await;
    app.trigger(web("main")).await;
    let mut stream = open(&app, "/v1/events?from=0", &reader, None).await;
    assert_eq!(stream.next().await.unwrap().data["kind"], "created");
}

#[tokio::test]
async fn bad_filters_and_ids_are_refused_with_the_field_named() {
    let app = app_with(quick()).await;
    for (path, field) in
        [("/v1/events?state=green", "state"), ("/v1/events?from=-4", "from"), ("/v1/events?colour=red", "colour")]
    {
        let reply = app.get(path, ADMIN).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}: {}", reply.text);
        assert!(reply.text.contains(field), "{path}: {}", reply.text);
    }
    let mut req = request(Method::GET, "/v1/events", Some(ADMIN), None);
    req.headers_mut().insert(LAST_EVENT_ID, "yesterday".parse().unwrap());
    let reply = app.send(req).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.text.contains("Last-Event-ID"), "{}", reply.text);
}

#[tokio::test]
async fn filters_select_target_trigger_run_and_state() {
    let app = app_with(quick()).await;
    let web_run = app.trigger(web("main")).await.remove(0);
    let reply = app.post("/v1/triggers", ADMIN, json!({"targets": ["ship-deploy"], "ref": {"branch": "main"}})).await;
    let ship_trigger = reply.body["trigger_id"].as_str().unwrap().to_string();
    let ship_run = reply.body["runs"][0]["id"].as_str().unwrap().to_string();
    app.finish(&web_run, RunState::Canceled).await;
    app.dispatch(&ship_run).await;

    let targets =
        |msgs: &[Message]| msgs.iter().map(|m| m.data["target"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let mut s = open(&app, "/v1/events?from=0&target=web-e2e", ADMIN, None).await;
    let got = s.take(2).await;
    assert_eq!(targets(&got), vec!["web-e2e".to_string(); 2]);
    assert_eq!(got[1].data["state"], "canceled");

    let mut s = open(&app, &format!("/v1/events?from=0&trigger_id={ship_trigger}"), ADMIN, None).await;
    let got = s.take(2).await;
    assert!(got.iter().all(|m| m.data["trigger_id"] == ship_trigger.as_str()), "{got:?}");

    let mut s = open(&app, &format!("/v1/events?from=0&run_id={web_run}"), ADMIN, None).await;
    assert!(s.take(2).await.iter().all(|m| m.data["run_id"] == web_run.as_str()));

    let mut s = open(&app, "/v1/events?from=0&state=canceled", ADMIN, None).await;
    let only = s.next().await.unwrap();
    assert_eq!((only.data["run_id"].as_str().unwrap(), only.data["state"].as_str().unwrap()), (&*web_run, "canceled"));
    // Nothing else matches: the next thing is silence, not another message.
    assert!(s.next_within(Duration::from_millis(300)).await.is_err());
}

#[tokio::test]
async fn api_writes_wake_the_stream_before_its_poll_interval() {
    let app = app_with(StreamSettings { poll_interval: Duration::from_secs(600), ..quick() }).await;
    let run = app.trigger(web("main")).await.remove(0);
    let mut stream = open(&app, "/v1/events", ADMIN, None).await;
    // Let the follower start waiting, then cancel through the API (which wakes streams).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = app.post_empty(&format!("/v1/runs/{run}/cancel"), ADMIN).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let started = Instant::now();
    let msg = stream.next_within(Duration::from_secs(3)).await.expect("woken by the cancel").unwrap();
    assert_eq!(msg.data["kind"], "cancel_requested");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn idle_streams_get_keep_alive_comments() {
    let app = app_with(StreamSettings { keep_alive: Duration::from_millis(50), ..quick() }).await;
    let mut stream = open(&app, "/v1/events", ADMIN, None).await;
    assert!(stream.next_within(Duration::from_millis(400)).await.is_err());
    assert!(stream.comments >= 2, "saw {} keep-alive comments", stream.comments);
}

#[tokio::test]
async fn a_slow_client_is_disconnected_and_resumes_without_a_gap() {
    let streams = StreamSettings { buffer: 2, slow_client_grace: Duration::from_millis(100), page: 2, ..quick() };
    let app = app_with(streams).await;
    for _ in 0..6 {
        app.trigger(web("main")).await;
    }
    let clients = || async {
        let text = app.send(request(Method::GET, "/metrics", None, None)).await.text;
        prom_value(&text, "cigw_sse_clients").unwrap_or(0.0)
    };
    let baseline = clients().await;

    // A fast reader with the same tiny buffer gets everything.
    let mut fast = open(&app, "/v1/events?from=0", ADMIN, None).await;
    assert_eq!(fast.take(6).await.len(), 6);

    // A client that reads nothing: its buffer fills, and after the grace it is cut off.
    let mut slow = open(&app, "/v1/events?from=0", ADMIN, None).await;
    assert_eq!(clients().await, baseline + 2.0);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut got = Vec::new();
    while let Some(m) = slow.next_within(SOON).await.expect("the server ends the stream") {
        got.push(m);
    }
    assert!(got.is_empty(), "what was buffered is dropped, not delivered late: {got:?}");
    drop(slow);
    drop(fast);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = app.send(request(Method::GET, "/metrics", None, None)).await.text;
    assert!(prom_value(&text, "cigw_sse_disconnects_total{reason=\"slow_client\"}").unwrap_or(0.0) >= 1.0, "{text}");
    assert_eq!(prom_value(&text, "cigw_sse_clients").unwrap(), baseline);

    // Its reconnect starts where it left off (here: the beginning).
    let mut again = open(&app, "/v1/events", ADMIN, Some(0)).await;
    let ids: Vec<i64> = again.take(6).await.iter().map(|m| m.id).collect();
    assert_eq!(ids, all_event_ids(&app, &EventFilter::default()).await);
}

#[tokio::test]
async fn shutting_down_ends_open_streams() {
    let app = app_with(quick()).await;
    let mut stream = open(&app, "/v1/events", ADMIN, None).await;
    app.state.begin_closing();
    assert!(stream.next_within(SOON).await.expect("ended in time").is_none());
}

#[tokio::test]
async fn the_long_poll_answers_when_the_run_finishes() {
    let app = app_with(quick()).await;
    let run = app.trigger(web("main")).await.remove(0);
    app.dispatch(&run).await;
    let finisher = {
        let store = app.store().clone();
        let run = run.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            store
                .set_state(
                    &run,
                    RunState::Failed,
                    Some("boom".into()),
                    cigw_store::EventKind::StateChanged,
                    chrono::Utc::now(),
                )
                .await
                .unwrap();
        })
    };
    let started = Instant::now();
    let reply = app.get(&format!("/v1/runs/{run}?wait=20"), ADMIN).await;
    let took = started.elapsed();
    finisher.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["state"], "failed");
    assert!(reply.body["events"].as_array().unwrap().iter().any(|e| e["state"] == "failed"));
    assert!(took >= Duration::from_millis(250), "answered before the end: {took:?}");
    assert!(took < Duration::from_secs(5), "answered late: {took:?}");

    // A finished run answers at once.
    let started = Instant::now();
    let reply = app.get(&format!("/v1/runs/{run}?wait=20"), ADMIN).await;
    assert_eq!(reply.body["state"], "failed");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn the_long_poll_answers_at_its_timeout_with_the_current_state() {
    let app = app_with(quick()).await;
    let run = app.trigger(web("main")).await.remove(0);
    let started = Instant::now();
    let reply = app.get(&format!("/v1/runs/{run}?wait=0.4"), ADMIN).await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["state"], "pending");
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(3), "{took:?}");

    for bad in ["61", "-1", "soon"] {
        let reply = app.get(&format!("/v1/runs/{run}?wait={bad}"), ADMIN).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}: {}", reply.text);
        assert!(reply.text.contains("wait"), "{}", reply.text);
    }
    let reply = app.get("/v1/runs/nope?wait=5", ADMIN).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_long_poll_stays_under_the_request_timeout() {
    let mut app = App::with_settings(|s| s.server.request_timeout = Duration::from_millis(1500)).await;
    app.state.streams = quick();
    app.router = cigw_gateway::build_router(app.state.clone());
    let run = app.trigger(web("main")).await.remove(0);
    let started = Instant::now();
    let reply = app.get(&format!("/v1/runs/{run}?wait=60"), ADMIN).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["state"], "pending");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
}

#[tokio::test]
async fn the_stream_is_in_the_openapi_document() {
    let app = App::new().await;
    let reply = app.send(Request::get("/openapi.json").body(Body::empty()).unwrap()).await;
    let events = &reply.body["paths"]["/v1/events"]["get"];
    assert!(events["responses"]["200"]["content"]["text/event-stream"].is_object(), "{events}");
    let wait = &reply.body["paths"]["/v1/runs/{id}"]["get"]["parameters"];
    assert!(wait.as_array().unwrap().iter().any(|p| p["name"] == "wait"), "{wait}");
}

/// The value of one series line (`name{labels}` exactly as rendered, or a bare name).
fn prom_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ').and_then(|v| v.trim().parse().ok())
    })
}
