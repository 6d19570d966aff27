//! Helpers shared by the integration tests: adapter accounts against a simulator or wiremock.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use cigw_codeship::{AccountConfig, CodeshipAccount};
use cigw_core::retry::RetryPolicy;
use cigw_sim::Harness;

/// A fast configuration: high local rate limit, tiny retry delays.
pub fn fast_config(base_url: &str, email: &str, password: &str, organization: &str) -> AccountConfig {
    let mut cfg = AccountConfig::new(email.into(), password.into(), organization)
        .with_base_url(url::Url::parse(base_url).expect("a base URL"));
    cfg.transport.rate_limit = Some(cigw_core::RateLimit::parse("100000/min").unwrap());
    cfg.transport.concurrency = 64;
    cfg.transport.timeout = Duration::from_secs(5);
    cfg.transport.retry = RetryPolicy {
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(20),
        max_retries: 3,
        deadline: Duration::from_secs(5),
    };
    cfg
}

/// An account reading time from the harness clock.
pub fn account_on(harness: &Harness, config: AccountConfig) -> CodeshipAccount {
    let h = harness.clone();
    CodeshipAccount::with_clock("sim", config, Arc::new(move || h.clock().now())).expect("an account")
}
