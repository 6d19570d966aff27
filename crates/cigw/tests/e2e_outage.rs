//! A provider outage: the CircleCI and Codefresh simulators stop answering for a minute (their
//! ports refuse connections), then come back on the same ports. Triggers posted during the
//! outage get 202 and queue; builds that were running when it began are followed again; after
//! the return every run is delivered and ends `succeeded` with exactly one provider build,
//! counted by the simulators. Codeship stays up throughout and keeps being served.

mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use cigw_sim::codefresh::CodefreshSim;
use cigw_sim::harness::SimServer;
use serde_json::json;
use support::{Gateway, is_terminal};

/// How long the providers are down (real time).
const OUTAGE: Duration = Duration::from_secs(60);
/// A trigger is posted this often during the outage.
const POST_EVERY: Duration = Duration::from_secs(3);
/// Every run ends within this after the providers return.
const SETTLE: Duration = Duration::from_secs(90);

/// Start a server again on the port it had, waiting for the old listener to let go of it.
async fn serve_again<F, Fut>(start: F, what: &str) -> SimServer
where
    F: Fn() -> Fut,
    Fut: Future<Output = std::io::Result<SimServer>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match start().await {
            Ok(server) => return server,
            Err(e) if Instant::now() < deadline => {
                eprintln!("serving {what} again: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("could not serve {what} again on its port: {e}"),
        }
    }
}

/// Keep `addr` from being handed to another process while its server is down: a socket bound to
/// it but not listening. Connections to it are still refused, and the kernel gives no port in use
/// by a bound socket to a bind of port 0. Without it, a test running beside this one got the port
/// and answered 404, which ended runs as if the provider had said "no such pipeline".
fn hold_port(addr: std::net::SocketAddr) -> tokio::net::TcpSocket {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    // The server's closed connections linger in TIME_WAIT on this port; reuse lets us bind anyway.
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    // The stopped server lets go of its listener a moment after being told to.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match socket.bind(addr) {
            Ok(()) => return socket,
            Err(e) if Instant::now() < deadline => {
                eprintln!("holding {addr}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("holding {addr} while its server is down: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_long_provider_outage_queues_triggers_and_delivers_each_once_after_it() {
    // Builds last about 15 s (about 300 s simulated at 20×), so the ones started just before the
    // outage are still running when it begins and finish while the providers cannot be asked.
    let mut gw = Gateway::start(20.0, Duration::from_secs(240)).await;
    let harness = gw.providers.harness.clone();
    let circleci_addr = gw.providers.circleci_server.addr();
    let codefresh_addr = gw.providers.codefresh_server.addr();

    let mut before = Vec::new();
    for (i, target) in ["api-build", "web-e2e"].into_iter().enumerate() {
        before.extend(gw.trigger(json!({"targets": [target], "ref": {"branch": format!("before-{i}")}})).await);
    }
    for run in &before {
        gw.wait_for_run(run, Duration::from_secs(30), |s| s == "running").await;
    }

    // Down: the listeners close and every open connection with them.
    gw.providers.circleci_server.stop();
    gw.providers.codefresh_server.stop();
    let down_at = Instant::now();
    let held = [hold_port(circleci_addr), hold_port(codefresh_addr)];
    tokio::time::sleep(Duration::from_millis(300)).await;
    for addr in [circleci_addr, codefresh_addr] {
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "{addr} still accepts connections");
    }

    let mut during = Vec::new();
    let mut n = 0;
    while down_at.elapsed() + POST_EVERY < OUTAGE {
        n += 1;
        let targets = match n % 3 {
            0 => vec!["api-build"],
            1 => vec!["web-e2e"],
            _ => vec!["api-build", "web-e2e", "legacy-basic"],
        };
        // `trigger` asserts the 202.
        during.extend(gw.trigger(json!({"targets": targets, "ref": {"branch": format!("during-{n:02}")}})).await);
        tokio::time::sleep(POST_EVERY).await;
    }
    tokio::time::sleep(OUTAGE.saturating_sub(down_at.elapsed())).await;

    // Queued, not given up: nothing of CircleCI or Codefresh has ended while they were away.
    let runs = gw.runs_by_id().await;
    let mut ended_during = Vec::new();
    for id in before.iter().chain(&during) {
        let run = &runs[id];
        let state = run["state"].as_str().unwrap_or_default();
        if run["provider"] != "codeship" && is_terminal(state) {
            ended_during.push(format!("{id} ({}) {state}: {}", run["target"], run["message"]));
        }
    }

    // Back, on the same ports.
    drop(held);
    let circleci = gw.providers.circleci.clone();
    let codefresh = gw.providers.codefresh.clone();
    let (h, cc, cf) = (&harness, circleci_addr.to_string(), codefresh_addr.to_string());
    gw.providers.circleci_server =
        serve_again(|| SimServer::start_on(h, circleci.router(), circleci.fault_responses(), &cc), "CircleCI").await;
    gw.providers.codefresh_server =
        serve_again(|| SimServer::start_on(h, codefresh.router(), CodefreshSim::fault_responses(), &cf), "Codefresh")
            .await;
    let back_at = Instant::now();

    let all: Vec<String> = before.iter().chain(&during).cloned().collect();
    let runs = gw.wait_all_terminal(&all, SETTLE).await;
    let delivered_in = back_at.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let builds = harness.builds();
    let mut problems = Vec::new();
    let mut possible_duplicates = 0;
    for id in &all {
        let run = &runs[id];
        let key = if run["target"] == "legacy-basic" {
            format!("heads/{}", run["ref"]["branch"].as_str().unwrap_or_default())
        } else {
            id.clone()
        };
        let n = builds.count(&key);
        possible_duplicates += gw.count_events(id, "possible_duplicate").await;
        if run["state"] != "succeeded" || n != 1 {
            problems
                .push(format!("{id} ({}) ended {} with {n} build(s): {}", run["target"], run["state"], run["message"]));
        }
    }
    // A refused connection is never ambiguous, and a dispatch retrying through the outage keeps
    // its lease (renewed), so nothing here may be taken for a crash.
    let abandoned = gw.log().matches("dispatch lost its lease and was abandoned").count();
    let report = format!(
        "{} runs before and {} during a {OUTAGE:?} outage; all terminal {delivered_in:?} after the return; {} builds in all, \
         {possible_duplicates} possible_duplicate event(s), {abandoned} dispatch(es) abandoned at the lease budget",
        before.len(),
        during.len(),
        builds.total()
    );
    eprintln!("{report}");
    assert!(ended_during.is_empty(), "{report}\nruns that ended during the outage: {ended_during:#?}");
    assert!(problems.is_empty(), "{report}\n{}", problems.join("\n"));
    assert_eq!(possible_duplicates, 0, "a refused connection is never ambiguous: {report}");
    assert_eq!(abandoned, 0, "{report}");
}
