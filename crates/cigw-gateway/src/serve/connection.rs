//! Accepting and serving HTTP/1.1 connections under limits: a cap on open connections, a
//! header-read timeout, a keep-alive idle timeout, and a shutdown that first asks every
//! connection to finish and then closes the ones still open.
//!
//! hyper's own `header_read_timeout` starts counting as soon as a connection waits for a request,
//! so it would also close keep-alive connections after that (short) time; the two timeouts are
//! therefore watched here, from what the connection reads and which responses are in progress.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

/// The connection limits of one server (from `[server]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Time from the first byte of a request to its last header byte.
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with no request in progress.
    pub idle_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
}

/// The open connections of one process (the API and the metrics listener share them).
#[derive(Debug)]
pub(crate) struct Connections {
    limits: Limits,
    slots: Arc<Semaphore>,
    /// Turns true at shutdown: connections finish their request in progress and close.
    finishing: watch::Sender<bool>,
    /// Turns true when the shutdown grace has passed: connections close at once.
    closing: watch::Sender<bool>,
}

impl Connections {
    pub(crate) fn new(limits: Limits) -> Arc<Self> {
        let limits = Limits { max_connections: limits.max_connections.max(1), ..limits };
        Arc::new(Self {
            limits,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            finishing: watch::channel(false).0,
            closing: watch::channel(false).0,
        })
    }

    /// Open connections right now.
    pub(crate) fn open(&self) -> usize {
        self.limits.max_connections - self.slots.available_permits()
    }

    /// Accept connections on `listener` and serve `app` on each until `stop` turns true. When
    /// `max_connections` are open, further clients wait in the listen backlog.
    pub(crate) async fn accept(
        self: &Arc<Self>,
        listener: TcpListener,
        app: Router,
        mut stop: watch::Receiver<bool>,
    ) -> io::Result<()> {
        loop {
            let permit = tokio::select! {
                permit = self.slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return Ok(()),
                },
                _ = turned_true(&mut stop) => return Ok(()),
            };
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(e) if is_per_connection(&e) => continue,
                    Err(e) => {
                        // Out of file descriptors and the like: wait for connections to close.
                        tracing::error!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
                _ = turned_true(&mut stop) => return Ok(()),
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(self.clone().serve_one(stream, app.clone(), permit));
        }
    }

    /// Ask every connection to close after its request in progress.
    pub(crate) fn finish(&self) {
        self.finishing.send_replace(true);
    }

    /// Close every connection at once.
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Wait until no connection is open, or `deadline`; whether none is left.
    pub(crate) async fn wait_closed(&self, deadline: Instant) -> bool {
        loop {
            if self.open() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn serve_one(self: Arc<Self>, stream: TcpStream, app: Router, _slot: OwnedSemaphorePermit) {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched { inner: stream, activity: activity.clone() });
        let service = hyper::service::service_fn({
            let activity = activity.clone();
            move |request: hyper::Request<Incoming>| {
                let guard = Activity::begin(&activity);
                let app = app.clone();
                async move {
                    let response = app.oneshot(request.map(Body::new)).await?;
                    Ok::<_, Infallible>(response.map(|body| Body::new(Guarded { inner: body, _guard: guard })))
                }
            }
        });
        let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
        tokio::pin!(connection);
        let mut finishing = self.finishing.subscribe();
        let mut closing = self.closing.subscribe();
        let mut asked_to_finish = false;
        loop {
            tokio::select! {
                done = connection.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                reason = activity.expired(self.limits) => {
                    tracing::debug!(reason, "closing a connection");
                    return;
                }
                _ = turned_true(&mut finishing), if !asked_to_finish => {
                    connection.as_mut().graceful_shutdown();
                    asked_to_finish = true;
                }
                _ = turned_true(&mut closing) => return,
            }
        }
    }
}

/// Resolves once the flag is true (or its sender is gone).
async fn turned_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|value| *value).await;
}

/// Errors of one incoming connection, not of the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// What one connection is doing, for its timeouts.
#[derive(Debug)]
struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

#[derive(Debug)]
struct ActivityState {
    /// Requests whose response is not yet fully sent (an event stream stays in progress).
    in_flight: usize,
    /// When the connection last had no request in progress.
    idle_since: Instant,
    /// When the first byte of the next request arrived, while its headers are being read.
    head_started: Option<Instant>,
}

impl Activity {
    fn new() -> Self {
        let state = ActivityState { in_flight: 0, idle_since: Instant::now(), head_started: None };
        Self { state: Mutex::new(state), changed: Notify::new() }
    }

    /// A request's headers are complete and it is being answered.
    fn begin(this: &Arc<Self>) -> InFlight {
        {
            let mut state = this.state.lock();
            state.in_flight += 1;
            state.head_started = None;
        }
        this.changed.notify_one();
        InFlight(this.clone())
    }

    fn read_some(&self) {
        let started = {
            let mut state = self.state.lock();
            let start = state.in_flight == 0 && state.head_started.is_none();
            if start {
                state.head_started = Some(Instant::now());
            }
            start
        };
        if started {
            self.changed.notify_one();
        }
    }

    /// Resolves when a timeout closes the connection, with its name.
    async fn expired(&self, limits: Limits) -> &'static str {
        loop {
            let now = Instant::now();
            let next = {
                let state = self.state.lock();
                if state.in_flight > 0 {
                    None
                } else if let Some(started) = state.head_started {
                    let deadline = started + limits.header_read_timeout;
                    if now >= deadline {
                        return "header_read_timeout";
                    }
                    Some(deadline)
                } else {
                    let deadline = state.idle_since + limits.idle_timeout;
                    if now >= deadline {
                        return "idle_timeout";
                    }
                    Some(deadline)
                }
            };
            match next {
                Some(deadline) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        _ = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

/// A request in progress; dropped when its response has been sent (or abandoned).
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut state = self.0.state.lock();
            state.in_flight = state.in_flight.saturating_sub(1);
            if state.in_flight == 0 {
                state.idle_since = Instant::now();
                state.head_started = None;
            }
        }
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request counted as in progress until it is dropped.
struct Guarded {
    inner: Body,
    _guard: InFlight,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A TCP stream that reports the bytes it reads to its connection's [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_some();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
