//! Closed-loop load with `wrk` (Debian package `wrk`): requests per second and latency percentiles.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

/// One `wrk` run: a POST with a JSON body and headers, `connections` over `threads`, for `duration`.
#[derive(Debug, Clone)]
pub(crate) struct Load<'a> {
    /// The URL.
    pub(crate) url: &'a str,
    /// The JSON body.
    pub(crate) body: &'a str,
    /// Extra headers.
    pub(crate) headers: &'a [(&'a str, &'a str)],
    /// Open connections.
    pub(crate) connections: u32,
    /// wrk threads.
    pub(crate) threads: u32,
    /// How long.
    pub(crate) duration: Duration,
}

/// What `wrk` measured.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Measured {
    /// Completed requests per second.
    pub(crate) rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Responses that were not 2xx/3xx (must be 0 for the figure to count).
    pub non_2xx: u64,
    /// Socket errors (connect, read, write, timeout).
    pub(crate) socket_errors: u64,
}

/// Run `wrk` and parse its `--latency` report.
pub(crate) async fn run(load: &Load<'_>, scratch: &Path) -> anyhow::Result<Measured> {
    let script = scratch.join(format!("wrk-{}.lua", uuid::Uuid::new_v4().simple()));
    let mut lua = String::from("wrk.method = \"POST\"\n");
    lua.push_str(&format!("wrk.body = {}\n", lua_string(load.body)));
    lua.push_str("wrk.headers[\"Content-Type\"] = \"application/json\"\n");
    for (k, v) in load.headers {
        // A space after `[`: `[[` would open a Lua long string.
        lua.push_str(&format!("wrk.headers[ {} ] = {}\n", lua_string(k), lua_string(v)));
    }
    std::fs::write(&script, lua)?;
    let out = tokio::process::Command::new("wrk")
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.duration.as_secs().max(1)))
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(load.url)
        .output()
        .await
        .context("running wrk (install it with `apt-get install wrk`)")?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("wrk failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
    }
    parse(&text)
}

fn lua_string(s: &str) -> String {
    // Lua long brackets need no escaping as long as the text has no `]==]`.
    format!("[==[{s}]==]")
}

/// Parse wrk's report.
pub(crate) fn parse(text: &str) -> anyhow::Result<Measured> {
    let mut m = Measured { rps: f64::NAN, p50_ms: f64::NAN, p99_ms: f64::NAN, non_2xx: 0, socket_errors: 0 };
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => m.rps = v.parse()?,
            (Some("50%"), Some(v)) => m.p50_ms = millis(v)?,
            (Some("99%"), Some(v)) => m.p99_ms = millis(v)?,
            _ => {}
        }
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            m.non_2xx = n.trim().parse()?;
        }
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            m.socket_errors = rest
                .split(',')
                .filter_map(|part| part.split_whitespace().last())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum();
        }
    }
    if m.rps.is_nan() || m.p99_ms.is_nan() {
        bail!("could not read wrk's report:\n{text}");
    }
    Ok(m)
}

/// `1.23ms`, `456.00us`, `1.02s`, `2.00m` in milliseconds.
fn millis(v: &str) -> anyhow::Result<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic()).context("latency unit")?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse()?;
    Ok(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        other => bail!("unknown latency unit `{other}`"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_wrk_report() {
        let report = "Running 10s test @ http://127.0.0.1:8080/v1/triggers
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     9.38ms    4.11ms  61.98ms   81.20%
    Req/Sec     1.72k   188.43     2.10k    70.00%
  Latency Distribution
     50%    8.62ms
     75%   10.86ms
     90%   13.95ms
     99%   25.02ms
  34321 requests in 10.01s, 20.33MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   3428.19
Transfer/sec:      2.03MB
";
        let m = parse(report).unwrap();
        assert_eq!(m.rps, 3428.19);
        assert_eq!(m.p50_ms, 8.62);
        assert_eq!(m.p99_ms, 25.02);
        assert_eq!(m.non_2xx, 7);
        assert_eq!(m.socket_errors, 5);
        assert_eq!(millis("456.00us").unwrap(), 0.456);
        assert_eq!(millis("1.50s").unwrap(), 1500.0);
        assert!(parse("garbage").is_err());
    }
}
