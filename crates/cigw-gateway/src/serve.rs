//! Running the gateway: the HTTP server and the engine, with graceful shutdown.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::engine::Engine;
use crate::router::{build_router, metrics_router};
use crate::state::AppState;
use connection::{Connections, Limits};

mod connection;

/// Serve the API on `listener` and run the engine until `shutdown` resolves. With
/// `server.metrics_listen` set, `/metrics` is served on that address instead of `listener`.
///
/// On shutdown the listener stops accepting, event streams and long-polls end, in-flight
/// requests finish, the engine finishes the provider calls under way and releases its leases,
/// all within `server.shutdown_grace`; connections still open then are closed.
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
///
/// Connections are served under `[server]`'s limits (see [`connection`]). Shutdown takes at most
/// `server.shutdown_grace` from the signal: connections still open when it ends are closed, and
/// the engine is no longer waited for.
pub async fn serve_with_metrics(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let server = &state.settings.server;
    let grace = server.shutdown_grace;
    let connections = Connections::new(Limits {
        header_read_timeout: server.header_read_timeout,
        idle_timeout: server.idle_timeout,
        max_connections: server.max_connections,
    });
    let (stop, stopped) = watch::channel(false);
    // The notification cursor exists before the first request is served, so every run event of
    // this server is notified. A store that fails here is retried by the feed later.
    let feed = match crate::notifications::prepare(&state).await {
        Ok(feed) => feed,
        Err(e) => {
            tracing::warn!(error = %e, "starting the notification feed failed; retrying in the background");
            None
        }
    };
    let retry_feed = feed.is_none() && !state.settings.notifications.is_empty();
    let notifications = tokio::spawn({
        let (state, stopped) = (state.clone(), stop.subscribe());
        async move {
            let feed =
                if retry_feed { crate::notifications::prepare_until(&state, stopped.clone()).await } else { feed };
            crate::notifications::run(state, feed, stopped).await
        }
    });
    let schedules = tokio::spawn(crate::schedules::run(state.clone(), stop.subscribe()));
    let engine = tokio::spawn(Engine::new(state.clone()).run(stopped));
    let metrics = metrics_listener.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving /metrics");
        }
        let (connections, app, stopped) = (connections.clone(), metrics_router(state.clone()), stop.subscribe());
        tokio::spawn(async move { connections.accept(listener, app, stopped).await })
    });
    let signal = {
        let (stop, closing) = (stop.clone(), state.clone());
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: no new requests");
            closing.begin_closing();
            let _ = stop.send(true);
        })
    };
    let served = connections.accept(listener, build_router(state.clone()), stop.subscribe()).await;
    // The accept loop also ends on its own error; the rest of the shutdown is the same then.
    let deadline = Instant::now() + grace.max(Duration::from_millis(100));
    signal.abort();
    state.begin_closing();
    let _ = stop.send(true);
    if let Some(metrics) = metrics {
        match metrics.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "the metrics listener failed"),
            Err(e) => tracing::warn!(error = %e, "the metrics listener task failed"),
            Ok(Ok(())) => {}
        }
    }
    connections.finish();
    if !connections.wait_closed(deadline).await {
        tracing::warn!(
            open = connections.open(),
            grace_secs = grace.as_secs(),
            "closing the connections still open at the end of the grace period"
        );
        connections.close();
        connections.wait_closed(Instant::now() + Duration::from_secs(1)).await;
    }
    if tokio::time::timeout_at(deadline.max(Instant::now() + Duration::from_millis(100)), engine).await.is_err() {
        tracing::warn!(grace_secs = grace.as_secs(), "the engine did not stop within the grace period");
    }
    // The scheduler stops at its next await; a firing under way is one transaction either way.
    schedules.abort();
    // Deliveries under way finish within their timeout; a row whose outcome is not recorded is
    // sent again once its lease ends (at least once).
    if tokio::time::timeout_at(deadline.max(Instant::now() + Duration::from_millis(100)), notifications).await.is_err()
    {
        tracing::warn!("the notification worker did not stop within the grace period");
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
