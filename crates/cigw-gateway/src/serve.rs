//! Running the gateway: the HTTP server and the engine, with graceful shutdown.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::engine::Engine;
use crate::router::build_router;
use crate::state::AppState;

/// Serve the API on `listener` and run the engine until `shutdown` resolves.
///
/// On shutdown the listener stops accepting, in-flight requests finish, the engine finishes the
/// provider calls under way (up to `server.shutdown_grace`) and releases its leases.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let grace = state.settings.server.shutdown_grace;
    let (stop, stopped) = watch::channel(false);
    let engine = tokio::spawn(Engine::new(state.clone()).run(stopped));
    let app = build_router(state.clone());
    let stop_engine = stop.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new requests");
            let _ = stop_engine.send(true);
        })
        .await;
    let _ = stop.send(true);
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
