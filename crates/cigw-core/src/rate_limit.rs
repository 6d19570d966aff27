//! A request budget written as `N/s`, `N/min` or `N/h`, and the limiter that enforces it.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::CallKind;
use serde::{Deserialize, Deserializer};

/// So many requests per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per period.
    pub requests: NonZeroU32,
    /// The period.
    pub per: Duration,
}

const EXPECTED: &str = "expected `<requests>/s`, `<requests>/min` or `<requests>/h`, e.g. \"10/s\" or \"60/min\"";

impl RateLimit {
    /// `requests` per `per`.
    pub const fn new(requests: NonZeroU32, per: Duration) -> Self {
        Self { requests, per }
    }

    /// Parse `N/s`, `N/min` or `N/h` (also `sec`, `second`, `m`, `minute`, `hour`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (n, unit) = text.trim().split_once('/').ok_or_else(|| format!("`{text}`: {EXPECTED}"))?;
        let requests: NonZeroU32 =
            n.trim().parse().map_err(|_| format!("`{text}`: the request count must be a positive integer"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(format!("`{text}`: {EXPECTED}")),
        };
        Ok(Self { requests, per })
    }

    /// The even spacing between requests.
    pub fn per_request(&self) -> Duration {
        (self.per / self.requests.get()).max(Duration::from_nanos(1))
    }

    /// A limiter allowing bursts of up to the whole budget.
    pub fn limiter(&self) -> DefaultDirectRateLimiter {
        RateLimiter::direct(self.quota().allow_burst(self.requests))
    }

    /// A limiter spacing requests evenly (burst of one), so every window of `per` stays within
    /// the budget whatever the server's window boundaries are.
    pub fn smooth_limiter(&self) -> DefaultDirectRateLimiter {
        RateLimiter::direct(self.quota())
    }

    fn quota(&self) -> Quota {
        Quota::with_period(self.per_request()).unwrap_or_else(|| Quota::per_second(self.requests))
    }
}

/// The share of an account's budget that reads (status, lists, cancels, approvals) may use;
/// the rest is kept for calls that start builds, so following many runs never starves dispatch.
pub const READ_SHARE: f64 = 0.75;

/// One account's request budget in this process, shared by all its targets: every call takes a
/// slot of the whole budget, and reads also take one of a smaller budget ([`READ_SHARE`]), so
/// however many reads wait, a trigger finds a free slot within a few request spacings. Replicas
/// on PostgreSQL share one budget per credential instead ([`crate::shared_budget`]).
pub struct Budget {
    all: DefaultDirectRateLimiter,
    reads: DefaultDirectRateLimiter,
}

impl Budget {
    /// A budget allowing bursts of up to the whole budget (as [`RateLimit::limiter`]).
    pub fn bursty(limit: &RateLimit) -> Self {
        Self { all: limit.limiter(), reads: Self::read_share(limit).limiter() }
    }

    /// A budget spacing requests evenly (as [`RateLimit::smooth_limiter`]).
    pub fn smooth(limit: &RateLimit) -> Self {
        Self { all: limit.smooth_limiter(), reads: Self::read_share(limit).smooth_limiter() }
    }

    /// Wait until a call of `kind` may be made, and take its slot.
    pub async fn until_ready(&self, kind: CallKind) {
        if kind == CallKind::Idempotent {
            self.reads.until_ready().await;
        }
        self.all.until_ready().await;
    }

    /// [`Budget::until_ready`] bounded by the current work budget
    /// ([`crate::retry::until_budget_end`]): `RateLimited` when the slot comes too late.
    pub async fn admit(&self, kind: CallKind) -> crate::Result<()> {
        crate::retry::until_budget_end(self.until_ready(kind)).await
    }

    fn read_share(limit: &RateLimit) -> RateLimit {
        let reads = ((f64::from(limit.requests.get()) * READ_SHARE).floor() as u32).max(1);
        RateLimit { requests: NonZeroU32::new(reads).unwrap_or(NonZeroU32::MIN), per: limit.per }
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget").finish_non_exhaustive()
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s".to_string(),
            60 => "min".to_string(),
            3600 => "h".to_string(),
            _ => format!("{}s", self.per.as_secs_f64()),
        };
        write!(f, "{}/{unit}", self.requests)
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Err(serde::de::Error::custom(format!("`{n}` has no unit: {EXPECTED}"))),
            Raw::Text(t) => RateLimit::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(RateLimit::parse("10/s").unwrap().per, Duration::from_secs(1));
        assert_eq!(RateLimit::parse(" 60 / min ").unwrap().requests.get(), 60);
        assert_eq!(RateLimit::parse("5/hour").unwrap().per, Duration::from_secs(3600));
        assert_eq!(RateLimit::parse("120/minute").unwrap().to_string(), "120/min");
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(RateLimit::parse("0/s").unwrap_err().contains("positive integer"));
        assert!(RateLimit::parse("10/week").unwrap_err().contains("expected"));
        assert!(RateLimit::parse("fast").unwrap_err().contains("expected"));
        let e = serde_json::from_value::<RateLimit>(serde_json::json!(30)).unwrap_err().to_string();
        assert!(e.contains("has no unit"), "{e}");
        assert_eq!(serde_json::from_value::<RateLimit>(serde_json::json!("2/s")).unwrap().to_string(), "2/s");
    }

    #[test]
    fn limiters_enforce_the_budget() {
        let limit = RateLimit::parse("3/h").unwrap();
        let bursty = limit.limiter();
        assert!((0..3).all(|_| bursty.check().is_ok()));
        assert!(bursty.check().is_err());
        let smooth = limit.smooth_limiter();
        assert!(smooth.check().is_ok());
        assert!(smooth.check().is_err());
        assert_eq!(limit.per_request(), Duration::from_secs(1200));
    }

    #[tokio::test]
    async fn reads_leave_a_share_of_the_budget_to_calls_that_start_builds() {
        // 4 per 10 minutes: after the burst, the next slot is minutes away.
        let limit = RateLimit::new(NonZeroU32::new(4).unwrap(), Duration::from_secs(600));
        let budget = Budget::bursty(&limit);
        let soon = Duration::from_millis(200);
        for _ in 0..3 {
            assert!(tokio::time::timeout(soon, budget.until_ready(CallKind::Idempotent)).await.is_ok());
        }
        assert!(
            tokio::time::timeout(soon, budget.until_ready(CallKind::Idempotent)).await.is_err(),
            "reads may use only their share"
        );
        assert!(
            tokio::time::timeout(soon, budget.until_ready(CallKind::StartsBuild)).await.is_ok(),
            "a trigger still finds the slot kept for it"
        );
    }
}
