//! The one retry helper every adapter uses: exponential backoff with jitter on `backon`,
//! honouring `Retry-After`, bounded by an attempt cap and an overall deadline.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use backon::{ExponentialBuilder, Retryable};

use crate::error::{CallKind, Error, Result};

/// How hard to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// First backoff delay.
    pub min_delay: Duration,
    /// Largest backoff delay (and largest honoured `Retry-After`).
    pub max_delay: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// No retry starts later than this after the first attempt.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            max_retries: 5,
            deadline: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        Self { max_retries: 0, ..Self::default() }
    }
}

/// Called for every retry [`with_retry`] makes: the operation, the error that caused it and the
/// wait before the next attempt.
pub type RetryObserver = fn(operation: &str, error: &Error, delay: Duration);

static RETRY_OBSERVER: OnceLock<RetryObserver> = OnceLock::new();

tokio::task_local! {
    /// The moment by which the current piece of work must be done (see [`within_budget`]).
    static BUDGET_END: Instant;
}

/// Run `work` with a time budget ending at `end`: no retry started inside it (by
/// [`with_retry`], or an adapter's rate limiter) waits past that moment; the call fails with its
/// last error instead, so the caller can schedule the next attempt. The gateway runs every piece
/// of work on a leased run this way, so a rate-limited call is never abandoned mid-wait when the
/// lease ends (an abandoned trigger would have to be treated as possibly sent).
pub async fn within_budget<F: Future>(end: Instant, work: F) -> F::Output {
    BUDGET_END.scope(end, work).await
}

/// The end of the current task's budget, when it runs [`within_budget`].
pub fn budget_end() -> Option<Instant> {
    BUDGET_END.try_with(|end| *end).ok()
}

/// Wait for `wait` (a rate limiter, a concurrency permit) no longer than the current budget: when
/// the budget ends first the wait ends as `RateLimited` (nothing was sent), so the caller
/// schedules the call again instead of holding its run while it waits.
pub async fn until_budget_end<F: Future>(wait: F) -> crate::Result<F::Output> {
    match budget_end() {
        Some(end) => tokio::time::timeout_at(tokio::time::Instant::from_std(end), wait)
            .await
            .map_err(|_| crate::Error::RateLimited { retry_after: None }),
        None => Ok(wait.await),
    }
}

/// Whether waiting `delay` from now still ends within the current budget (always, without one).
pub fn fits_budget(delay: Duration) -> bool {
    budget_end().is_none_or(|end| Instant::now() + delay < end)
}

/// Install the process-wide retry observer (the gateway counts retries in its metrics). The first
/// installation wins; returns `false` when one was already installed.
pub fn set_retry_observer(observer: RetryObserver) -> bool {
    RETRY_OBSERVER.set(observer).is_ok()
}

/// Run `call` until it succeeds, fails with an error `kind` may not retry, or the policy is spent.
///
/// A `RateLimited` error with `retry_after` waits that long (capped at `max_delay`) instead of
/// the backoff delay; a retry that would start past the deadline is not made.
pub async fn with_retry<T, F, Fut>(policy: &RetryPolicy, kind: CallKind, operation: &str, call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = Instant::now();
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_retries)
        .with_jitter();
    let max_delay = policy.max_delay;
    let deadline = policy.deadline;
    call.retry(backoff)
        .when(|e: &Error| e.is_retryable(kind))
        .adjust(move |e: &Error, planned: Option<Duration>| {
            let planned = planned?;
            let delay = e.retry_after().map(|d| d.min(max_delay)).unwrap_or(planned);
            (started.elapsed() + delay <= deadline && fits_budget(delay)).then_some(delay)
        })
        .notify(|e: &Error, delay: Duration| {
            tracing::warn!(operation, error = %e, delay_ms = delay.as_millis() as u64, "retrying provider call");
            if let Some(observe) = RETRY_OBSERVER.get() {
                observe(operation, e, delay);
            }
        })
        .await
}

/// Parse a `Retry-After` header value: delta-seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn quick(max_retries: usize) -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_retries,
            deadline: Duration::from_secs(5),
        }
    }

    async fn count_calls(policy: RetryPolicy, kind: CallKind, make: fn() -> Error) -> (usize, Result<()>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let result = with_retry(&policy, kind, "test", move || {
            c.fetch_add(1, Ordering::SeqCst);
            async move { Err::<(), _>(make()) }
        })
        .await;
        (calls.load(Ordering::SeqCst), result)
    }

    #[tokio::test]
    async fn retries_idempotent_calls_up_to_the_cap() {
        let (calls, result) = count_calls(quick(3), CallKind::Idempotent, || Error::maybe_sent("timeout")).await;
        assert_eq!(calls, 4);
        assert!(matches!(result, Err(Error::MaybeSent { .. })));
    }

    #[tokio::test]
    async fn never_retries_a_trigger_that_may_have_been_sent() {
        let (calls, _) = count_calls(quick(3), CallKind::StartsBuild, || Error::maybe_sent("timeout")).await;
        assert_eq!(calls, 1);
        let (calls, _) = count_calls(quick(3), CallKind::StartsBuild, || Error::not_sent("refused")).await;
        assert_eq!(calls, 4);
    }

    #[tokio::test]
    async fn terminal_errors_are_not_retried() {
        let (calls, _) = count_calls(quick(3), CallKind::Idempotent, || Error::NotFound { message: "x".into() }).await;
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn succeeds_after_transient_failures() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let value = with_retry(&quick(5), CallKind::Idempotent, "test", move || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move { if n < 2 { Err(Error::not_sent("refused")) } else { Ok(n) } }
        })
        .await
        .unwrap();
        assert_eq!(value, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after_instead_of_the_backoff() {
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_secs(60),
            max_retries: 1,
            deadline: Duration::from_secs(120),
        };
        let start = tokio::time::Instant::now();
        let (calls, _) = count_calls(policy, CallKind::StartsBuild, || Error::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
        })
        .await;
        assert_eq!(calls, 2);
        assert!(start.elapsed() >= Duration::from_secs(7), "waited {:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_capped_by_max_delay() {
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_secs(2),
            max_retries: 1,
            deadline: Duration::from_secs(120),
        };
        let start = tokio::time::Instant::now();
        let (calls, _) = count_calls(policy, CallKind::Idempotent, || Error::RateLimited {
            retry_after: Some(Duration::from_secs(3600)),
        })
        .await;
        assert_eq!(calls, 2);
        assert!(start.elapsed() < Duration::from_secs(3), "waited {:?}", start.elapsed());
    }

    #[tokio::test]
    async fn stops_when_the_next_wait_passes_the_deadline() {
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_secs(60),
            max_retries: 10,
            deadline: Duration::from_secs(1),
        };
        let (calls, result) = count_calls(policy, CallKind::Idempotent, || Error::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
        })
        .await;
        assert_eq!(calls, 1);
        assert!(matches!(result, Err(Error::RateLimited { .. })));
    }

    #[tokio::test]
    async fn never_waits_past_the_budget_of_the_work() {
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_secs(61),
            max_retries: 5,
            deadline: Duration::from_secs(180),
        };
        let started = Instant::now();
        let end = started + Duration::from_secs(2);
        let (calls, result) = within_budget(
            end,
            count_calls(policy, CallKind::StartsBuild, || Error::RateLimited {
                retry_after: Some(Duration::from_secs(61)),
            }),
        )
        .await;
        assert_eq!(calls, 1, "the 61s wait does not fit a 2s budget");
        assert!(matches!(result, Err(Error::RateLimited { .. })));
        assert!(started.elapsed() < Duration::from_secs(2), "returned at once: {:?}", started.elapsed());
        assert!(budget_end().is_none(), "the budget belongs to the work only");
    }

    #[test]
    fn parses_retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_614_265_330);
        assert_eq!(parse_retry_after("12", now), Some(Duration::from_secs(12)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(90)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }
}
