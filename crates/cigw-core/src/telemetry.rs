//! One tracing set-up for the binary and the tests.

use std::io::IsTerminal;
use std::sync::Once;

use tracing_subscriber::EnvFilter;

/// Install the global subscriber: `RUST_LOG`-style filter from `CIGW_LOG` (default `info`),
/// JSON lines when `CIGW_LOG_FORMAT=json`, written to stderr, in colour only when stderr is a
/// terminal and `NO_COLOR` is unset.
pub fn init() {
    let filter = EnvFilter::try_from_env("CIGW_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("CIGW_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // Colours only for a person at a terminal: escape codes in a log file or a collector are noise.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    let result = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = result;
}

/// For tests: silent unless `TEST_LOG` is set, then like [`init`] at `debug`.
pub fn init_for_tests() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = EnvFilter::try_from_env("CIGW_LOG").unwrap_or_else(|_| EnvFilter::new("debug"));
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
    });
}
