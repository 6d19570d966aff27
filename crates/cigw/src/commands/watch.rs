//! `cigw watch`: follow the gateway's event stream (`GET /v1/events`, Server-Sent Events),
//! reconnecting with `Last-Event-ID` after a drop so no event is missed.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::progress::is_terminal;
use super::{connect, s, show_time, time};
use crate::client::sse::Parser;
use crate::client::{Client, ClientError, ConnectArgs, api_error};

/// Flags of `cigw watch`.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// Only events of this target.
    #[arg(long)]
    target: Option<String>,
    /// Only events of this trigger's runs (its history first, then live).
    #[arg(long = "trigger", value_name = "TRIGGER_ID")]
    trigger: Option<String>,
    /// Only events of this run (its history first, then live); the watch ends when the run finishes.
    #[arg(long = "run", value_name = "RUN_ID")]
    run: Option<String>,
    /// Only events that leave a run in this state.
    #[arg(long)]
    state: Option<String>,
    /// Start after this event id (replays what came after it); without it a watch of
    /// everything or of a target starts at the current end.
    #[arg(long, value_name = "EVENT_ID")]
    after: Option<String>,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    max_events: Option<u64>,
    /// Print each event as one line of JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Run `cigw watch`.
pub(crate) async fn run(args: WatchArgs) -> ExitCode {
    let client = match connect(&args.connect) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut query: Vec<(&'static str, String)> = Vec::new();
    for (key, value) in
        [("target", &args.target), ("trigger_id", &args.trigger), ("run_id", &args.run), ("state", &args.state)]
    {
        if let Some(v) = value {
            query.push((key, v.clone()));
        }
    }
    // A run's or trigger's history is short and worth seeing whole; a wider watch starts now.
    if args.after.is_none() && (args.run.is_some() || args.trigger.is_some()) {
        query.push(("from", "0".into()));
    }
    let options = Options { max_events: args.max_events, stop_when_run_ends: args.run.clone(), ..Options::default() };
    let json = args.json;
    let result = follow(&client, &query, args.after.clone(), &options, &mut |event, raw| {
        if json {
            println!("{raw}");
        } else {
            println!("{}", event_line(event));
        }
    })
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

/// `created_at  target  run  kind  state  data`.
fn event_line(e: &Value) -> String {
    let mut line = format!(
        "{}  {}  {}  {}  {}",
        show_time(time(e, "created_at")),
        s(e, "target"),
        s(e, "run_id"),
        s(e, "kind"),
        s(e, "state")
    );
    let data = e.get("data").map(super::event_summary).unwrap_or_default();
    if !data.is_empty() {
        line.push_str("  ");
        line.push_str(&data);
    }
    line
}

/// How the stream is followed.
#[derive(Debug, Clone)]
struct Options {
    max_events: Option<u64>,
    stop_when_run_ends: Option<String>,
    /// Wait before the first reconnect (the server's `retry:` overrides it).
    first_backoff: Duration,
    max_backoff: Duration,
    /// Consecutive failed connection attempts before giving up.
    max_failures: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_events: None,
            stop_when_run_ends: None,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(15),
            max_failures: 20,
        }
    }
}

/// Follow the stream, calling `sink(event, raw_data)` per event, until an end condition or a
/// permanent error. Drops and 5xx answers reconnect with `Last-Event-ID`; 4xx answers end it.
async fn follow(
    client: &Client,
    query: &[(&'static str, String)],
    after: Option<String>,
    options: &Options,
    sink: &mut dyn FnMut(&Value, &str),
) -> Result<(), ClientError> {
    let mut parser = Parser::resuming(after);
    let mut seen: u64 = 0;
    let mut failures: u32 = 0;
    loop {
        let mut req = client.stream_request("/v1/events").query(query);
        if let Some(id) = &parser.last_id {
            req = req.header("Last-Event-ID", id);
        }
        let mut failure: Option<ClientError> = None;
        match req.send().await {
            Err(e) => failure = Some(client.transport(e)),
            Ok(mut response) => {
                let status = response.status();
                if !status.is_success() {
                    let body = response.bytes().await.unwrap_or_default();
                    let e = api_error(status, &body);
                    if status.is_client_error() && status.as_u16() != 429 {
                        return Err(e);
                    }
                    failure = Some(e);
                } else {
                    failures = 0;
                    loop {
                        match response.chunk().await {
                            Ok(Some(bytes)) => {
                                for message in parser.feed(&bytes) {
                                    let Ok(event) = serde_json::from_str::<Value>(&message.data) else {
                                        continue;
                                    };
                                    sink(&event, &message.data);
                                    seen += 1;
                                    if options.max_events.is_some_and(|m| seen >= m) {
                                        return Ok(());
                                    }
                                    if let Some(run) = &options.stop_when_run_ends
                                        && s(&event, "run_id") == run
                                        && is_terminal(s(&event, "state"))
                                    {
                                        return Ok(());
                                    }
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                failure = Some(client.transport(e));
                                break;
                            }
                        }
                    }
                    parser.reset_partial();
                }
            }
        }
        let delay = match &failure {
            None => parser.retry_ms.map(Duration::from_millis).unwrap_or(options.first_backoff),
            Some(e) => {
                failures += 1;
                if failures >= options.max_failures {
                    return Err(ClientError::Transport(format!(
                        "giving up after {failures} failed attempts to follow the event stream: {}",
                        e.to_string().trim().trim_start_matches("error: ")
                    )));
                }
                let base = parser.retry_ms.map(Duration::from_millis).unwrap_or(options.first_backoff);
                let backoff = base.saturating_mul(1 << (failures - 1).min(4)).min(options.max_backoff);
                eprintln!(
                    "warning: event stream: {} (retrying in {backoff:?})",
                    e.to_string().trim().trim_start_matches("error: ")
                );
                backoff
            }
        };
        if failure.is_none() {
            eprintln!(
                "warning: event stream closed; reconnecting after event {}",
                parser.last_id.as_deref().unwrap_or("(none)")
            );
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ConnectArgs;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Read one request head and return it.
    async fn read_head(sock: &mut tokio::net::TcpStream) -> String {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut byte).await.unwrap();
            assert!(n > 0, "client closed early");
            buf.extend_from_slice(&byte[..n]);
        }
        String::from_utf8_lossy(&buf).to_lowercase()
    }

    const OK_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

    fn client(port: u16) -> Client {
        Client::new(&ConnectArgs { url: format!("http://127.0.0.1:{port}"), token: Some("cigw_test".into()) }).unwrap()
    }

    fn ev(id: u32, run: &str, state: &str) -> String {
        format!(
            "id: {id}\ndata: {{\"id\":{id},\"run_id\":\"{run}\",\"target\":\"t\",\"kind\":\"state_changed\",\"state\":\"{state}\",\"data\":{{}},\"created_at\":\"2026-01-31T10:00:0{id}Z\"}}\n\n"
        )
    }

    #[tokio::test]
    async fn a_dropped_stream_resumes_after_the_last_whole_event() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut heads = Vec::new();
            // First connection: two events, half of a third, then the connection drops.
            let (mut sock, _) = listener.accept().await.unwrap();
            heads.push(read_head(&mut sock).await);
            let body = format!(
                "retry: 10\n: keep-alive\n\n{}{}id: 3\ndata: {{\"half",
                ev(1, "r1", "queued"),
                ev(2, "r1", "running")
            );
            sock.write_all(OK_HEAD.as_bytes()).await.unwrap();
            sock.write_all(body.as_bytes()).await.unwrap();
            drop(sock);
            // Second connection: must resume after 2; sends 3 and the terminal 4.
            let (mut sock, _) = listener.accept().await.unwrap();
            heads.push(read_head(&mut sock).await);
            sock.write_all(OK_HEAD.as_bytes()).await.unwrap();
            sock.write_all(format!("{}{}", ev(3, "r1", "running"), ev(4, "r1", "succeeded")).as_bytes()).await.unwrap();
            // Keep the socket open: the watch must end by itself when r1 finishes.
            tokio::time::sleep(Duration::from_secs(5)).await;
            heads
        });
        let mut got = Vec::new();
        let options = Options { stop_when_run_ends: Some("r1".into()), ..Options::default() };
        let query = [("run_id", "r1".to_string())];
        tokio::time::timeout(
            Duration::from_secs(5),
            follow(&client(port), &query, None, &options, &mut |e, _| got.push(e["id"].as_u64().unwrap())),
        )
        .await
        .expect("the watch ends when the run finishes")
        .unwrap();
        assert_eq!(got, vec![1, 2, 3, 4]);
        server.abort();
        let _ = server.await;
    }

    #[tokio::test]
    async fn the_resume_point_and_filters_are_sent_and_a_4xx_ends_the_watch() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let head = read_head(&mut sock).await;
            let body = r#"{"code":"missing_scope","message":"this token lacks the scope `read`"}"#;
            let answer = format!(
                "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(answer.as_bytes()).await.unwrap();
            head
        });
        let query = [("target", "web".to_string()), ("state", "failed".to_string())];
        let err =
            follow(&client(port), &query, Some("41".into()), &Options::default(), &mut |_, _| {}).await.unwrap_err();
        assert_eq!(err.code(), Some("missing_scope"));
        let head = server.await.unwrap();
        assert!(head.starts_with("get /v1/events?target=web&state=failed "), "{head}");
        assert!(head.contains("last-event-id: 41\r\n"), "{head}");
        assert!(head.contains("accept: text/event-stream\r\n"), "{head}");
        assert!(head.contains("authorization: bearer cigw_test\r\n"), "{head}");
    }

    #[tokio::test]
    async fn max_events_and_a_dead_gateway() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            read_head(&mut sock).await;
            sock.write_all(OK_HEAD.as_bytes()).await.unwrap();
            sock.write_all(
                format!("{}{}{}", ev(1, "a", "queued"), ev(2, "b", "queued"), ev(3, "c", "queued")).as_bytes(),
            )
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let mut n = 0;
        let options = Options { max_events: Some(2), ..Options::default() };
        follow(&client(port), &[], None, &options, &mut |_, _| n += 1).await.unwrap();
        assert_eq!(n, 2);
        server.abort();

        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let options = Options { first_backoff: Duration::from_millis(1), max_failures: 3, ..Options::default() };
        let err = follow(&client(dead), &[], None, &options, &mut |_, _| {}).await.unwrap_err();
        assert!(err.to_string().contains("giving up after 3 failed attempts"), "{err}");
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn event_lines() {
        let e = serde_json::json!({"id": 5, "run_id": "r1", "trigger_id": "t1", "target": "web", "kind": "state_changed",
            "state": "failed", "data": {"detail": {"raw_status": "error"}}, "created_at": "2026-01-31T10:00:00Z"});
        assert_eq!(event_line(&e), "2026-01-31T10:00:00Z  web  r1  state_changed  failed  raw_status=error");
        let quiet = serde_json::json!({"run_id": "r1", "target": "web", "kind": "created", "state": "pending",
            "data": {"git_ref": {}}, "created_at": "2026-01-31T10:00:00Z"});
        assert_eq!(event_line(&quiet), "2026-01-31T10:00:00Z  web  r1  created  pending");
    }
}
