//! The measurements of issue 17, each from outside the process it measures: `wrk` against the
//! HTTP port, arrival times at the provider stand-in, RSS from `/proc`, `/readyz` from a client.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::gateway::{Gateway, Setup, TOKEN};
use crate::load::{self, Load, Measured};
use crate::process::{Proc, free_port, wait_ready};
use crate::report::Report;
use crate::stand_in::{Arrival, Counts};

/// The request every load sends: one target, a branch, the run id filled in by cigw.
const BODY: &str = r#"{"targets":["api-build"],"ref":{"branch":"main"}}"#;

/// What every scenario shares.
pub(crate) struct Ctx {
    /// The release `cigw` binary.
    pub(crate) cigw: PathBuf,
    /// This binary (references and the stand-in are started from it).
    pub(crate) me: PathBuf,
    /// Scratch directory (configs, databases, logs).
    pub(crate) dir: PathBuf,
    /// Length of each `wrk` run.
    pub(crate) duration: Duration,
    /// `wrk` connections.
    pub(crate) connections: u32,
    /// Runs in flight for the memory figure.
    pub(crate) in_flight: usize,
    /// Terminal runs in the database for the start-up figure.
    pub(crate) stored_runs: usize,
    /// The figures.
    pub(crate) report: Report,
    http: reqwest::Client,
    auth: String,
}

impl Ctx {
    /// A context; `dir` must exist.
    pub(crate) fn new(cigw: PathBuf, me: PathBuf, dir: PathBuf, duration: Duration, connections: u32) -> Self {
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(256).build().unwrap();
        Ctx {
            cigw,
            me,
            dir,
            duration,
            connections,
            in_flight: 10_000,
            stored_runs: 100_000,
            report: Report::default(),
            http,
            auth: format!("Bearer {TOKEN}"),
        }
    }

    fn load<'a>(&'a self, url: &'a str, headers: &'a [(&'a str, &'a str)]) -> Load<'a> {
        Load { url, body: BODY, headers, connections: self.connections, threads: 2, duration: self.duration }
    }
}

/// The stand-in process and where its simulators listen.
struct StandIn {
    proc: Proc,
    control: String,
    overrides: std::collections::BTreeMap<String, String>,
}

impl StandIn {
    async fn start(ctx: &Ctx, speed: f64, run_for: &str, label: &str) -> anyhow::Result<StandIn> {
        let port = free_port()?;
        let log = ctx.dir.join(format!("{label}.log"));
        let args =
            ["stand-in", "--speed", &speed.to_string(), "--run-for", run_for, "--control-port", &port.to_string()];
        let mut proc = Proc::spawn(label, &ctx.me, &args, &[], &log)?;
        let control = format!("http://127.0.0.1:{port}");
        wait_ready(&mut proc, &format!("{control}/counts"), Instant::now(), Duration::from_secs(30)).await?;
        let overrides = ctx.http.get(format!("{control}/overrides")).send().await?.json().await?;
        Ok(StandIn { proc, control, overrides })
    }

    async fn counts(&self, ctx: &Ctx) -> anyhow::Result<Counts> {
        Ok(ctx.http.get(format!("{}/counts", self.control)).send().await?.json().await?)
    }

    async fn arrivals(&self, ctx: &Ctx) -> anyhow::Result<HashMap<String, i64>> {
        let list: Vec<Arrival> = ctx.http.get(format!("{}/arrivals", self.control)).send().await?.json().await?;
        Ok(list.into_iter().map(|a| (a.run_id, a.at_us)).collect())
    }
}

fn setup_for(stand_in: &StandIn) -> Setup {
    Setup { overrides: stand_in.overrides.clone(), ..Setup::default() }
}

fn measured(m: &Measured) -> Value {
    json!({"req_per_s": m.rps.round(), "p50_ms": m.p50_ms, "p99_ms": m.p99_ms, "non_2xx": m.non_2xx, "socket_errors": m.socket_errors})
}

async fn reference(ctx: &Ctx, kind: &str) -> anyhow::Result<Measured> {
    let port = free_port()?;
    let db = ctx.dir.join(format!("reference-{kind}.db")).display().to_string();
    let log = ctx.dir.join(format!("reference-{kind}.log"));
    let mut proc = Proc::spawn(
        &format!("reference {kind}"),
        &ctx.me,
        &["reference", kind, "--port", &port.to_string(), "--db", &db],
        &[],
        &log,
    )?;
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&mut proc, &format!("{url}/readyz"), Instant::now(), Duration::from_secs(10)).await?;
    let m = load::run(&ctx.load(&format!("{url}/v1/triggers"), &[]), &ctx.dir).await?;
    proc.stop(Duration::from_secs(2)).await;
    Ok(m)
}

/// Targets 1 and 5 (idle part): intake with dispatch held back, beside bare axum and axum + one
/// SQLite insert; the idle RSS and start-up time of that gateway on an empty database.
pub(crate) async fn intake(ctx: &mut Ctx) -> anyhow::Result<f64> {
    let bare = reference(ctx, "bare").await?;
    let sqlite = reference(ctx, "sqlite").await?;
    let setup = Setup { timings: vec![("dispatch_delay", "1h".into())], ..Setup::default() };
    let gw = Gateway::start(&ctx.cigw, &setup, &ctx.dir, "intake").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = gw.proc.rss_bytes()?;
    // One request first: a misconfigured run fails here with the gateway's answer.
    post_trigger(&ctx.http, &ctx.auth, &gw.url, BODY).await?;
    let m = load::run(&ctx.load(&format!("{}/v1/triggers", gw.url), &[("Authorization", ctx.auth.as_str())]), &ctx.dir)
        .await?;
    let share = m.rps / sqlite.rps;
    ctx.report.add(
        "intake_only",
        "POST /v1/triggers, dispatch held back",
        measured(&m),
        Some(json!({"axum_sqlite_req_per_s": sqlite.rps.round(), "axum_sqlite_p99_ms": sqlite.p99_ms,
                    "bare_axum_req_per_s": bare.rps.round(), "cigw_share_of_axum_sqlite": (share * 100.0).round() / 100.0})),
        Some(">= 90% of axum + SQLite insert; p99 <= 10 ms"),
    );
    ctx.report.add(
        "rss_idle",
        "RSS idle (cigw serve, empty database)",
        json!({"mb": mb(idle)}),
        None,
        Some("<= 25 MB"),
    );
    ctx.report.add(
        "ready_empty",
        "start to /readyz OK, empty database",
        json!({"ms": gw.ready_after.as_millis()}),
        None,
        None,
    );
    gw.proc.stop(Duration::from_secs(5)).await;
    Ok(m.rps)
}

/// Target 2: intake with dispatch and tracking running against the stand-in for 60 s, in slices of
/// the load duration (p99 must not grow from one to the next).
///
/// Accepting a trigger is not the whole work: the figure is the rate at which triggers were both
/// accepted and sent to the provider within each slice, so a dispatcher that falls behind (its
/// backlog growing while requests are accepted fast) cannot pass for a fast gateway. The bench
/// account allows 64 calls in flight (8 by default): the stand-in answers in about a millisecond,
/// and at the default a call's permit, not the gateway's CPU, would set the pace.
pub(crate) async fn with_dispatch(ctx: &mut Ctx, intake_rps: f64) -> anyhow::Result<()> {
    let stand_in = StandIn::start(ctx, 1.0, "20s", "stand-in-dispatch").await?;
    let setup = Setup { concurrency: Some(64), ..setup_for(&stand_in) };
    let gw = Gateway::start(&ctx.cigw, &setup, &ctx.dir, "dispatch").await?;
    post_trigger(&ctx.http, &ctx.auth, &gw.url, BODY).await?;
    let mut slices = Vec::new();
    let mut reached = Vec::new();
    let mut accepted_total = 1.0;
    let mut sent_before = stand_in.counts(ctx).await?.triggers;
    let slice_count = (60.0 / ctx.duration.as_secs_f64().max(1.0)).round().max(1.0) as usize;
    for _ in 0..slice_count {
        let started = Instant::now();
        let m =
            load::run(&ctx.load(&format!("{}/v1/triggers", gw.url), &[("Authorization", ctx.auth.as_str())]), &ctx.dir)
                .await?;
        let sent = stand_in.counts(ctx).await?.triggers;
        reached.push((sent - sent_before) as f64 / started.elapsed().as_secs_f64());
        sent_before = sent;
        accepted_total += m.rps * ctx.duration.as_secs_f64();
        slices.push(m);
    }
    let rps: f64 = slices.iter().map(|m| m.rps).sum::<f64>() / slices.len() as f64;
    let reached_rps: f64 = reached.iter().sum::<f64>() / reached.len() as f64;
    let both = rps.min(reached_rps);
    ctx.report.add(
        "with_dispatch",
        "POST /v1/triggers with dispatch + tracking (60 s in slices): accepted and sent to the provider",
        json!({"req_per_s": both.round(), "accepted_per_s": rps.round(), "reached_provider_per_s": reached_rps.round(),
               "reached_provider_per_s_per_slice": reached.iter().map(|r| r.round()).collect::<Vec<_>>(),
               "not_yet_sent_at_end": (accepted_total - sent_before as f64).round().max(0.0),
               "p99_ms_per_slice": slices.iter().map(|m| m.p99_ms).collect::<Vec<_>>(),
               "non_2xx": slices.iter().map(|m| m.non_2xx).sum::<u64>()}),
        Some(
            json!({"intake_only_req_per_s": intake_rps.round(), "share": ((both / intake_rps) * 100.0).round() / 100.0}),
        ),
        Some(">= 60% of intake only; p99 not growing"),
    );
    gw.proc.stop(Duration::from_secs(5)).await;
    stand_in.proc.stop(Duration::from_secs(2)).await;
    Ok(())
}

/// POST one trigger; the run ids and the wall-clock time (µs) the 202 arrived.
async fn post_trigger(http: &reqwest::Client, auth: &str, url: &str, body: &str) -> anyhow::Result<(Vec<String>, i64)> {
    let resp = http
        .post(format!("{url}/v1/triggers"))
        .header("Authorization", auth)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let at = chrono::Utc::now().timestamp_micros();
    if resp.status() != reqwest::StatusCode::ACCEPTED {
        bail!("trigger answered {}: {}", resp.status(), resp.text().await.unwrap_or_default());
    }
    let v: Value = resp.json().await?;
    let ids =
        v["runs"].as_array().context("runs")?.iter().filter_map(|r| r["id"].as_str().map(str::to_string)).collect();
    Ok((ids, at))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Target 3: from the 202 to the provider receiving the request, timed at the provider, at 20
/// and 100 triggers/s (open loop), then fan-out of one request to 100 targets beside one.
pub(crate) async fn dispatch_latency(ctx: &mut Ctx) -> anyhow::Result<()> {
    for rate in [20u32, 100] {
        let stand_in = StandIn::start(ctx, 1.0, "20s", &format!("stand-in-latency-{rate}")).await?;
        let gw = Gateway::start(&ctx.cigw, &setup_for(&stand_in), &ctx.dir, &format!("latency-{rate}")).await?;
        let sent: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        let until = Instant::now() + ctx.duration;
        let mut tasks = Vec::new();
        while Instant::now() < until {
            tick.tick().await;
            let (http, auth, url, sent) = (ctx.http.clone(), ctx.auth.clone(), gw.url.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                if let Ok((ids, at)) = post_trigger(&http, &auth, &url, BODY).await {
                    sent.lock().await.extend(ids.into_iter().map(|id| (id, at)));
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let arrivals = stand_in.arrivals(ctx).await?;
        let sent = sent.lock().await.clone();
        // A request can reach the provider before the client has read its 202: that counts as 0.
        let mut lat: Vec<f64> = sent
            .iter()
            .filter_map(|(id, at)| arrivals.get(id).map(|arr| ((arr - at) as f64 / 1000.0).max(0.0)))
            .collect();
        lat.sort_by(|a, b| a.total_cmp(b));
        ctx.report.add(
            &format!("dispatch_latency_{rate}"),
            &format!("202 -> provider received, {rate} triggers/s"),
            json!({"p50_ms": percentile(&lat, 50.0), "p99_ms": percentile(&lat, 99.0), "arrived": lat.len(), "sent": sent.len()}),
            None,
            Some(if rate == 100 { "p50 <= 5 ms, p99 <= 25 ms" } else { "(20/s: for comparison)" }),
        );
        gw.proc.stop(Duration::from_secs(5)).await;
        stand_in.proc.stop(Duration::from_secs(2)).await;
    }

    for own_accounts in [false, true] {
        fan_out(ctx, own_accounts).await?;
    }
    Ok(())
}

/// One request to 100 targets, all on one account (whose in-flight limit, 8 by default, the
/// calls queue for) or each on its own: 202 → the last provider arrival, beside one target.
async fn fan_out(ctx: &mut Ctx, own_accounts: bool) -> anyhow::Result<()> {
    let label = if own_accounts { "fanout-accounts" } else { "fanout" };
    let stand_in = StandIn::start(ctx, 1.0, "20s", &format!("stand-in-{label}")).await?;
    let setup = Setup { fan_out: 100, fan_out_accounts: own_accounts, ..setup_for(&stand_in) };
    let gw = Gateway::start(&ctx.cigw, &setup, &ctx.dir, label).await?;
    let all: Vec<String> = (0..100).map(|i| format!("\"fan-{i:03}\"")).collect();
    let wide = format!(r#"{{"targets":[{}],"ref":{{"branch":"main"}}}}"#, all.join(","));
    let mut one = Vec::new();
    let mut hundred = Vec::new();
    // CPU the gateway spends on the rounds (the 100-target requests are most of it): what a
    // dispatch costs it on this machine, which bounds how fast 100 of them can go out.
    let cpu_before = gw.proc.cpu_time()?;
    for round in 0..5 {
        for (body, out) in [(BODY, &mut one), (wide.as_str(), &mut hundred)] {
            let (ids, at) = post_trigger(&ctx.http, &ctx.auth, &gw.url, body).await?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let arrivals = stand_in.arrivals(ctx).await?;
                if let Some(last) = ids.iter().map(|id| arrivals.get(id).copied()).collect::<Option<Vec<i64>>>() {
                    let latest = last.into_iter().max().unwrap_or(at);
                    out.push(((latest - at) as f64 / 1000.0).max(0.0));
                    break;
                }
                if Instant::now() > deadline {
                    bail!("fan-out round {round}: not every run reached the provider within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let dispatches = (one.len() + 100 * hundred.len()) as f64;
    let gateway_cpu = (gw.proc.cpu_time()?.saturating_sub(cpu_before).as_micros() as f64 / dispatches).round();
    let (bare_one, bare_hundred) = bare_fan_out(ctx, &stand_in).await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    one.sort_by(|a, b| a.total_cmp(b));
    hundred.sort_by(|a, b| a.total_cmp(b));
    let (m1, m100) = (percentile(&one, 50.0), percentile(&hundred, 50.0));
    let (key, what) = if own_accounts {
        ("fan_out_100_accounts", "one request -> 100 targets on 100 accounts: 202 -> last provider call (median of 5)")
    } else {
        ("fan_out_100", "one request -> 100 targets on one account: 202 -> last provider call (median of 5)")
    };
    ctx.report.add(
        key,
        what,
        json!({
            "ms": m100,
            "gateway_cpu_us_per_dispatch": gateway_cpu,
            // 100 dispatches' gateway CPU spread over every core: no schedule sends them sooner.
            "gateway_cpu_floor_ms": tenths(gateway_cpu * 100.0 / cores / 1000.0),
        }),
        Some(json!({"one_target_ms": m1, "ratio": times(m100, m1),
                   "bare_http_one_ms": bare_one, "bare_http_100_ms": bare_hundred,
                   "bare_http_ratio": times(bare_hundred, bare_one)})),
        Some("within 3x of one target"),
    );
    gw.proc.stop(Duration::from_secs(5)).await;
    stand_in.proc.stop(Duration::from_secs(2)).await;
    Ok(())
}

/// `x` rounded to a tenth.
fn tenths(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// How many times `one` fits in `many`, to a tenth (NaN when `one` is not positive).
fn times(many: f64, one: f64) -> f64 {
    if one > 0.0 { tenths(many / one) } else { f64::NAN }
}

/// The floor under the fan-out figure on this machine: the same trigger requests sent straight
/// to the stand-in by one HTTP client, 1 and then 100 at once, with no gateway (and so nothing
/// stored) in between; 202-less, so timed from the moment the requests are sent to the last
/// arrival at the stand-in (median of 5 rounds each).
async fn bare_fan_out(ctx: &Ctx, stand_in: &StandIn) -> anyhow::Result<(f64, f64)> {
    let base = stand_in
        .overrides
        .get("providers.circleci.sandbox.base_url")
        .ok_or_else(|| anyhow::anyhow!("the stand-in names no CircleCI simulator"))?;
    let url = format!("{base}/project/{}/pipeline", cigw_sim::sandbox::CIRCLECI_PROJECT);
    let mut samples = [Vec::new(), Vec::new()];
    for round in 0..5 {
        for (slot, n) in [(0usize, 1usize), (1, 100)] {
            let ids: Vec<String> = (0..n).map(|i| format!("bare-{round}-{n}-{i}")).collect();
            let at = chrono::Utc::now().timestamp_micros();
            let sends = ids.iter().map(|id| {
                ctx.http
                    .post(&url)
                    .header("Circle-Token", "sim-circleci-token")
                    .json(&json!({"branch": "main", "parameters": {"cigw_run_id": id}}))
                    .send()
            });
            for answer in futures::future::join_all(sends).await {
                let status = answer?.status();
                if !status.is_success() {
                    bail!("the stand-in answered {status} to a bare trigger");
                }
            }
            let arrivals = stand_in.arrivals(ctx).await?;
            let last = ids.iter().filter_map(|id| arrivals.get(id)).max().copied().unwrap_or(at);
            samples[slot].push(((last - at) as f64 / 1000.0).max(0.0));
        }
    }
    for m in &mut samples {
        m.sort_by(|a, b| a.total_cmp(b));
    }
    Ok((percentile(&samples[0], 50.0), percentile(&samples[1], 50.0)))
}

const TERMINAL: [&str; 5] = ["succeeded", "failed", "error", "canceled", "skipped"];

async fn wait_terminal(ctx: &Ctx, url: &str, ids: &[String], limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    for id in ids {
        loop {
            let v: Value = ctx
                .http
                .get(format!("{url}/v1/runs/{id}"))
                .header("Authorization", &ctx.auth)
                .send()
                .await?
                .json()
                .await?;
            if v["state"].as_str().is_some_and(|s| TERMINAL.contains(&s)) {
                break;
            }
            if Instant::now() > deadline {
                bail!("run {id} still `{}` after {limit:?}", v["state"]);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// How many of the runs `ids` ended in each state.
async fn final_states(ctx: &Ctx, url: &str, ids: &[String]) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut ended = BTreeMap::new();
    for id in ids {
        let v: Value =
            ctx.http.get(format!("{url}/v1/runs/{id}")).header("Authorization", &ctx.auth).send().await?.json().await?;
        *ended.entry(v["state"].as_str().unwrap_or("?").to_string()).or_insert(0) += 1;
    }
    Ok(ended)
}

/// Target 4: provider calls per run after the trigger, for a 10-minute build, on a clock 60
/// times faster at the stand-in with the gateway's timings divided alike; polling only, then
/// with CircleCI callbacks.
pub(crate) async fn calls_per_run(ctx: &mut Ctx) -> anyhow::Result<()> {
    const SPEED: f64 = 60.0;
    const RUNS: usize = 20;
    let defaults = [
        ("poll_initial", 2.0),
        ("poll_max", 60.0),
        ("sweep_interval", 5.0),
        ("reconcile_grace", 30.0),
        ("unconfirmed_deadline", 300.0),
        ("retry_max_delay", 30.0),
    ];
    for callbacks in [false, true] {
        let label = if callbacks { "calls-callbacks" } else { "calls-polling" };
        let stand_in = StandIn::start(ctx, SPEED, "600s", &format!("stand-in-{label}")).await?;
        let timings = defaults.iter().map(|(k, secs)| (*k, format!("{}ms", (secs * 1000.0 / SPEED).round()))).collect();
        let setup = Setup { timings, callbacks, ..setup_for(&stand_in) };
        let gw = Gateway::start(&ctx.cigw, &setup, &ctx.dir, label).await?;
        if callbacks {
            ctx.http
                .post(format!("{}/webhook", stand_in.control))
                .json(&json!({"url": format!("{}/callbacks/circleci/bench", gw.url)}))
                .send()
                .await?
                .error_for_status()?;
        }
        let mut ids = Vec::new();
        for _ in 0..RUNS {
            ids.extend(post_trigger(&ctx.http, &ctx.auth, &gw.url, BODY).await?.0);
        }
        wait_terminal(ctx, &gw.url, &ids, Duration::from_secs(120)).await?;
        // Calls per run mean something only for runs that went the whole build: a run ending
        // early (e.g. `skipped` because its workflows came after `setup_grace`) costs fewer.
        let ended = final_states(ctx, &gw.url, &ids).await?;
        if ended.keys().any(|s| s != "succeeded") {
            bail!("{label}: the runs ended {ended:?}, not all `succeeded`: the figure would not be a whole build's");
        }
        let Counts { total, triggers, by_kind } = stand_in.counts(ctx).await?;
        let per_run = (total - triggers) as f64 / RUNS as f64;
        let by_kind: serde_json::Map<String, Value> =
            by_kind.into_iter().map(|(k, n)| (k, json!(tenths(n as f64 / RUNS as f64)))).collect();
        ctx.report.add(
            &format!("provider_calls_per_run_{}", if callbacks { "callbacks" } else { "polling" }),
            &format!(
                "provider calls per run after the trigger, 10-min build, {}",
                if callbacks { "with callbacks" } else { "polling only" }
            ),
            json!({"calls": tenths(per_run), "per_run_by_kind": by_kind}),
            Some(json!({"official Codefresh CLI (polls every 5 s)": 120})),
            Some(if callbacks { "<= 5" } else { "<= 15" }),
        );
        gw.proc.stop(Duration::from_secs(5)).await;
        stand_in.proc.stop(Duration::from_secs(2)).await;
    }
    Ok(())
}

/// Target 5 (load part): RSS while `cigw serve` tracks `in_flight` non-terminal runs (builds
/// that outlast the measurement), and start to `/readyz` with `stored_runs` runs stored.
pub(crate) async fn memory(ctx: &mut Ctx) -> anyhow::Result<()> {
    let stand_in = StandIn::start(ctx, 1.0, "2h", "stand-in-memory").await?;
    let gw = Gateway::start(&ctx.cigw, &setup_for(&stand_in), &ctx.dir, "memory").await?;
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (http, auth, url, next, total) =
                (ctx.http.clone(), ctx.auth.clone(), gw.url.clone(), next.clone(), ctx.in_flight);
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                    post_trigger(&http, &auth, &url, BODY).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while stand_in.counts(ctx).await?.triggers < ctx.in_flight as u64 {
        if Instant::now() > deadline {
            bail!("not every run was dispatched within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let dispatched_after = started.elapsed();
    // Let tracking settle into its steady polling before reading memory.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss = gw.proc.rss_bytes()?;
    ctx.report.add(
        "rss_in_flight",
        &format!("RSS of cigw serve tracking {} non-terminal runs", ctx.in_flight),
        json!({"mb": mb(rss), "all_dispatched_after_s": tenths(dispatched_after.as_secs_f64())}),
        None,
        Some("<= 100 MB"),
    );
    gw.proc.stop(Duration::from_secs(10)).await;
    stand_in.proc.stop(Duration::from_secs(2)).await;

    // A database holding `stored_runs` finished runs, written by the store as intake would.
    let db = ctx.dir.join("stored.db");
    let settings =
        cigw_core::config::DatabaseSettings { url: format!("sqlite://{}", db.display()), ..Default::default() };
    let store = cigw_store::open(&settings).await?;
    store.migrate().await?;
    crate::store_commits::measure(store.clone(), 32, ctx.stored_runs).await;
    drop(store);
    // Finished runs are what a long-lived database is mostly made of; pending ones would be
    // dispatched at start-up, which is not what this figure is about.
    let pool = sqlx::SqlitePool::connect(&settings.url).await?;
    sqlx::query(
        "UPDATE runs SET state = 'succeeded', finished_at = created_at, next_dispatch_at = NULL, next_poll_at = NULL",
    )
    .execute(&pool)
    .await?;
    // That update, one transaction over 100,000 rows and their indexes, left a WAL of about
    // 1.4 GB for the gateway to take over and checkpoint as it starts (the figure varied from
    // 51 to 552 ms across full runs). A gateway leaves no WAL behind when it stops and keeps it
    // small while it runs (`journal_size_limit`), so start from a database at rest.
    for _ in 0..100 {
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&pool).await?;
        if busy == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.close().await;
    let gw = Gateway::start_on(&ctx.cigw, &Setup::default(), &ctx.dir, "stored", db).await?;
    ctx.report.add(
        "ready_stored",
        &format!("start to /readyz OK, {} runs stored", ctx.stored_runs),
        json!({"ms": gw.ready_after.as_millis()}),
        None,
        Some("<= 200 ms"),
    );
    gw.proc.stop(Duration::from_secs(5)).await;
    Ok(())
}

/// Target 6: create-trigger commits per second straight into each store.
pub(crate) async fn store_commits(ctx: &mut Ctx, postgres: Option<String>) -> anyhow::Result<()> {
    let args = crate::store_commits::Args { writers: vec![1, 8, 32], triggers: 2000, postgres };
    let rows = crate::store_commits::run(&args).await?;
    let sqlite_32 = rows.first().and_then(|(_, v)| v.last()).copied();
    let last_of = |prefix: &str| rows.iter().find(|(l, _)| l.starts_with(prefix)).and_then(|(_, v)| v.last()).copied();
    let pg_32 = last_of(crate::store_commits::POSTGRES_DEFAULT_POOL);
    let pg_wide_32 = last_of(crate::store_commits::POSTGRES_WIDE_POOL);
    ctx.report.add(
        "store_commits",
        "create-trigger commits/s (1, 8, 32 writers)",
        crate::store_commits::to_json(&args, &rows),
        None,
        Some("PostgreSQL >= 1,500 at 32 writers"),
    );
    if let (Some(pg), Some(lite)) = (pg_32, sqlite_32) {
        ctx.report.add(
            "postgres_commits_32",
            "PostgreSQL create-trigger commits/s at 32 writers (default pool)",
            json!({"per_s": pg.round()}),
            Some(json!({"pool_of_32_per_s": pg_wide_32.map(f64::round), "sqlite_group_commit_per_s": lite.round()})),
            Some(">= 1,500"),
        );
    }
    Ok(())
}

fn mb(bytes: u64) -> f64 {
    tenths(bytes as f64 / 1_048_576.0)
}
