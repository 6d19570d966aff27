//! The write-ahead mark of a request that may start a build.
//!
//! The gateway must know, after a crash, whether a trigger may have left. Marking before the
//! adapter is called would also count the time the adapter waits for its rate budget, its
//! concurrency permit or a token exchange, when nothing has left yet; so the gateway sets a hook
//! for the task that sends ([`scope`]), and the adapter's transport runs it ([`before_send`]) right
//! before the request that may start a build goes out, once per attempt. Outside a scope (tests,
//! tools) marking does nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::Result;

/// Records that a build-starting request is about to leave; an error stops the request.
pub type Hook = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send + Sync>;

tokio::task_local! {
    static HOOK: Hook;
}

/// Run `f` with `hook` as the mark of every build-starting request it sends.
pub async fn scope<F: Future>(hook: Hook, f: F) -> F::Output {
    HOOK.scope(hook, f).await
}

/// Mark that a build-starting request is about to leave (a no-op outside [`scope`]).
pub async fn before_send() -> Result<()> {
    match HOOK.try_with(Arc::clone) {
        Ok(hook) => hook().await,
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::Error;

    #[tokio::test]
    async fn the_hook_runs_inside_its_scope_only() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let hook: Hook = Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        });
        before_send().await.unwrap();
        scope(hook, async {
            before_send().await.unwrap();
            before_send().await.unwrap();
        })
        .await;
        before_send().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failing_hook_stops_the_send() {
        let hook: Hook = Arc::new(|| Box::pin(async { Err(Error::not_sent("lease lost")) }));
        let result = scope(hook, before_send()).await;
        assert!(matches!(result, Err(Error::NotSent { .. })), "{result:?}");
    }
}
