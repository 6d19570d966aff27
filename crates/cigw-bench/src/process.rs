//! Child processes the benchmark measures from outside: started, waited for, read (RSS), stopped.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// A running child process, killed when dropped.
pub(crate) struct Proc {
    /// What it is, for messages.
    pub(crate) name: String,
    child: Child,
}

impl Proc {
    /// Start `program args…` with its output in `log` (a file, so a chatty child never blocks on a
    /// full pipe and its logging costs what it costs in production).
    pub(crate) fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<Proc> {
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err).kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(Proc { name: name.to_string(), child })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Resident set size in bytes, from `/proc/<pid>/status`.
    pub(crate) fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS line")?;
        let kb: u64 = line.split_whitespace().nth(1).context("VmRSS value")?.parse()?;
        Ok(kb * 1024)
    }

    /// CPU time used so far (user + system, every thread), from `/proc/<pid>/stat`.
    pub(crate) fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the command name (in parentheses, which may hold spaces): utime and
        // stime are the 12th and 13th, in clock ticks.
        let rest = stat.rsplit_once(')').context("no command name in stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11).context("utime")?.parse::<u64>()? + fields.get(12).context("stime")?.parse::<u64>()?;
        // Linux reports them in USER_HZ, which its ABI fixes at 100 per second.
        Ok(Duration::from_millis(ticks * 10))
    }

    /// Stop it with SIGTERM and wait up to `grace`, then kill.
    pub(crate) async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            // The `kill` command keeps this crate free of unsafe; failing means it already exited.
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }

    /// Fail if it has exited (with its status).
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status}); see its log", self.name);
        }
        Ok(())
    }
}

/// Poll `url` until it answers 200, every `every`; the time from `since` to the first 200.
pub(crate) async fn wait_ready(
    proc: &mut Proc,
    url: &str,
    since: Instant,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    loop {
        if let Ok(resp) = client.get(url).send().await
            && resp.status().is_success()
        {
            return Ok(since.elapsed());
        }
        proc.check_alive()?;
        if since.elapsed() > limit {
            bail!("{} was not ready at {url} within {limit:?}", proc.name);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released: good enough for a benchmark).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
