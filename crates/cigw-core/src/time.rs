//! Converting the configuration's `std` durations into the `chrono` durations that times are
//! computed with.

use std::time::Duration;

/// `d` as a `chrono::Duration`; zero when it does not fit (over about 292 million years), which
/// configuration values never reach.
pub fn span(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_and_never_panics() {
        assert_eq!(span(Duration::from_millis(1500)), chrono::Duration::milliseconds(1500));
        assert_eq!(span(Duration::MAX), chrono::Duration::zero());
    }
}
