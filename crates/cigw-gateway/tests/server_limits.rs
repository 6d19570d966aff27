//! The server's connection limits on a real listener: header-read timeout (slowloris), idle
//! timeout (silent and keep-alive connections), the connection cap, event streams outliving the
//! idle timeout, and a shutdown bounded by `server.shutdown_grace`.

mod api_support;

use std::net::SocketAddr;
use std::time::Duration;

use api_support::{ADMIN, App};
use cigw_core::config::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous bound for what should happen within a second or two.
const SOON: Duration = Duration::from_secs(15);

/// A gateway serving on an ephemeral port until `stop` is sent.
struct Server {
    addr: SocketAddr,
    app: App,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<std::io::Result<()>>,
}

async fn serve(adjust: impl FnOnce(&mut Settings)) -> Server {
    let app = App::with_settings(adjust).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let served = tokio::spawn(cigw_gateway::serve::serve_with_metrics(listener, None, app.state.clone(), shutdown));
    Server { addr, app, stop: Some(stop), served }
}

fn limits(header_read: Duration, idle: Duration) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| {
        s.server.header_read_timeout = header_read;
        s.server.idle_timeout = idle;
    }
}

/// Whether the server closes `stream` within `limit` (reading and discarding what it sends).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Send one GET and read one response head (with `Content-Length` body) on a kept-alive connection.
async fn get_on(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {ADMIN}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection closed before the response: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    return text;
                }
            }
        }
    };
    tokio::time::timeout(SOON, read).await.expect("a response in time")
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let server = serve(limits(Duration::from_secs(30), Duration::from_millis(300))).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_within(&mut silent, SOON).await, "a connection that never sends is closed");
}

#[tokio::test]
async fn a_request_whose_headers_trickle_in_is_closed_after_the_header_read_timeout() {
    let server = serve(limits(Duration::from_millis(500), Duration::from_secs(60))).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n").await.unwrap();
    // One header byte every 100 ms: never idle, never complete.
    let trickle = async {
        for _ in 0..600 {
            if slow.write_all(b"X").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(trickle.await, "the server closed the connection while its headers trickled in");
}

#[tokio::test]
async fn a_keep_alive_connection_outlives_the_header_timeout_and_closes_after_the_idle_timeout() {
    let server = serve(limits(Duration::from_millis(300), Duration::from_secs(10))).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    assert!(get_on(&mut conn, "/healthz").await.starts_with("HTTP/1.1 200"));
    // Longer than the header timeout, well within the idle timeout: the connection is reused.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(get_on(&mut conn, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut conn, SOON + Duration::from_secs(10)).await, "an idle keep-alive connection is closed");
}

#[tokio::test]
async fn an_event_stream_is_not_cut_by_the_idle_timeout() {
    let server = serve(limits(Duration::from_millis(300), Duration::from_millis(300))).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = format!("GET /v1/events HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {ADMIN}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 8192];
    while !seen.contains("\r\n\r\n") {
        let n = tokio::time::timeout(SOON, stream.read(&mut buf)).await.expect("response head").unwrap();
        assert!(n > 0, "closed before the head: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    // Many idle timeouts pass with nothing sent either way (keep-alive comments every 15 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let run =
        server.app.trigger(serde_json::json!({"targets": ["web-e2e"], "ref": {"branch": "main"}})).await.remove(0);
    server.app.state.notify_events();
    let arrived = async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream was closed: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains(&run) {
                return;
            }
        }
    };
    tokio::time::timeout(SOON, arrived).await.expect("the event arrived on the open stream");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let server = serve(|s: &mut Settings| {
        s.server.max_connections = 2;
        s.server.header_read_timeout = Duration::from_secs(60);
        s.server.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let first = TcpStream::connect(server.addr).await.unwrap();
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    assert!(get_on(&mut second, "/healthz").await.starts_with("HTTP/1.1 200"), "the second is served");
    // The third connects (the kernel's backlog) but is not served while two are open.
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";
    third.write_all(request).await.unwrap();
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_secs(1), third.read(&mut buf)).await;
    assert!(early.is_err(), "a third connection was served while the cap of 2 was reached");
    drop(first);
    let n = tokio::time::timeout(SOON, third.read(&mut buf)).await.expect("served once a slot is free").unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn shutdown_closes_the_connections_still_open_when_the_grace_ends() {
    let mut server = serve(|s: &mut Settings| {
        s.server.header_read_timeout = Duration::from_secs(120);
        s.server.idle_timeout = Duration::from_secs(120);
        s.server.shutdown_grace = Duration::from_millis(500);
    })
    .await;
    let mut open = Vec::new();
    for i in 0..20 {
        let mut conn = TcpStream::connect(server.addr).await.unwrap();
        if i % 2 == 0 {
            conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: te").await.unwrap();
        }
        open.push(conn);
    }
    let mut kept_alive = TcpStream::connect(server.addr).await.unwrap();
    assert!(get_on(&mut kept_alive, "/healthz").await.starts_with("HTTP/1.1 200"));
    open.push(kept_alive);
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.stop.take().unwrap().send(()).unwrap();
    let served = tokio::time::timeout(SOON, &mut server.served).await;
    assert!(served.is_ok(), "serve() returned within the grace (plus slack) despite open connections");
    served.unwrap().unwrap().unwrap();
    for conn in &mut open {
        assert!(closed_within(conn, SOON).await, "every connection was closed");
    }
}
