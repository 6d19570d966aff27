//! Running the gateway: the HTTP server and the engine, with graceful shutdown.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::engine::Engine;
use crate::router::{build_router, metrics_router};
use crate::state::AppState;

/// Serve the API on `listener` and run the engine until `shutdown` resolves. With
/// `server.metrics_listen` set, `/metrics` is served on that address instead of `listener`.
///
/// On shutdown the listener stops accepting, event streams and long-polls end, in-flight
/// requests finish, the engine finishes the provider calls under way (up to
/// `server.shutdown_grace`) and releases its leases.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics_listener = match &state.settings.server.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("binding server.metrics_listen {addr}: {e}")))?,
        ),
        None => None,
    };
    serve_with_metrics(listener, metrics_listener, state, shutdown).await
}

/// [`serve`] with the metrics listener already bound (tests bind `127.0.0.1:0`); `None` serves
/// `/metrics` on the main listener unless `server.metrics_listen` is set.
pub async fn serve_with_metrics(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.settings.server.shutdown_grace;
    let (stop, stopped) = watch::channel(false);
    let engine = tokio::spawn(Engine::new(state.clone()).run(stopped));
    let metrics = metrics_listener.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving /metrics");
        }
        let app = metrics_router(state.clone());
        let mut stopped = stop.subscribe();
        tokio::spawn(async move {
            let until_stopped = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            axum::serve(listener, app).with_graceful_shutdown(until_stopped).await
        })
    });
    let app = build_router(state.clone());
    let stop_engine = stop.clone();
    let closing = state.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new requests");
            closing.begin_closing();
            let _ = stop_engine.send(true);
        })
        .await;
    let _ = stop.send(true);
    if let Some(metrics) = metrics {
        match metrics.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "the metrics listener failed"),
            Err(e) => tracing::warn!(error = %e, "the metrics listener task failed"),
            Ok(Ok(())) => {}
        }
    }
    if tokio::time::timeout(grace.max(Duration::from_millis(100)), engine).await.is_err() {
        tracing::warn!(grace_secs = grace.as_secs(), "the engine did not stop within the grace period");
    }
    served
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
