//! Serves a simulator's router on 127.0.0.1 with faults and recording layered in.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

use super::Harness;
use super::faults::{Fault, FaultResponses};

/// Largest request body the harness buffers for recording.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Closes the connection a request arrived on.
#[derive(Clone)]
struct ConnectionKill(Arc<Notify>);

/// A running simulator server. Stops when dropped or on [`SimServer::stop`].
#[derive(Debug)]
pub struct SimServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl SimServer {
    /// Serve `router` on an ephemeral 127.0.0.1 port.
    pub async fn start(harness: &Harness, router: Router, responses: FaultResponses) -> std::io::Result<SimServer> {
        Self::start_on(harness, router, responses, "127.0.0.1:0").await
    }

    /// Serve `router` on `addr`.
    pub async fn start_on(
        harness: &Harness,
        router: Router,
        responses: FaultResponses,
        addr: &str,
    ) -> std::io::Result<SimServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let harness = harness.clone();
        let app = router.layer(axum::middleware::from_fn(move |req: Request, next: axum::middleware::Next| {
            let harness = harness.clone();
            let responses = responses.clone();
            async move { inject(harness, responses, req, next).await }
        }));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let kill = Arc::new(Notify::new());
                        let k = ConnectionKill(kill.clone());
                        let svc = app.clone().map_request(move |mut req: Request<hyper::body::Incoming>| {
                            req.extensions_mut().insert(k.clone());
                            req
                        });
                        let mut stopped = stopped.clone();
                        tokio::spawn(async move {
                            let conn = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
                            tokio::select! {
                                _ = conn => {}
                                _ = kill.notified() => {}
                                _ = stopped.changed() => {}
                            }
                        });
                    }
                    _ = stopped.changed() => break,
                }
            }
        });
        Ok(SimServer { addr, stop })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting and close every connection.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn inject(harness: Harness, responses: FaultResponses, req: Request, next: axum::middleware::Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, BODY_LIMIT).await.unwrap_or_default();
    harness.recorder().record(&parts.method, &parts.uri, &parts.headers, bytes.clone());
    let kill = parts.extensions.get::<ConnectionKill>().cloned();
    let faults = harness.faults().pick(&parts.method, parts.uri.path());
    let req = Request::from_parts(parts, Body::from(bytes));
    let mut drop_after = false;
    let mut hang_after = None;
    for fault in faults {
        match fault {
            Fault::Latency(d) => tokio::time::sleep(d).await,
            Fault::RateLimit { retry_after } => return (responses.rate_limited)(retry_after),
            Fault::ServerError { status } => return (responses.server_error)(status),
            Fault::ResetBeforeProcessing => return hang_up(kill).await,
            Fault::DropAfterProcessing => drop_after = true,
            Fault::HangAfterProcessing(d) => hang_after = Some(d),
        }
    }
    let response = next.run(req).await;
    if let Some(d) = hang_after {
        tokio::time::sleep(d).await;
        return hang_up(kill).await;
    }
    if drop_after {
        return hang_up(kill).await;
    }
    response
}

/// Close the connection without answering.
async fn hang_up(kill: Option<ConnectionKill>) -> Response {
    if let Some(k) = kill {
        k.0.notify_one();
    }
    // The connection task drops this future when it closes the socket.
    std::future::pending().await
}
