//! The `cigw` client commands end to end: the real binary against a real gateway in front of the
//! simulators. `trigger --wait` exit codes (0 success, 1 failure, 2 canceled, 3 timeout, 4 usage
//! and auth), the other commands' output, and the live display in a pseudo-terminal.

mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{ADMIN_TOKEN, Gateway, is_terminal};

/// Builds take about 10 s simulated at 20× speed: half a second each.
async fn fast_gateway() -> Gateway {
    Gateway::start(20.0, Duration::from_secs(10)).await
}

fn command(gw: &Gateway, token: &str, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_cigw"));
    c.args(args)
        .env("CIGW_URL", &gw.url)
        .env("CIGW_TOKEN", token)
        .env_remove("CIGW_CONFIG")
        .env("CIGW_LOG", "warn")
        .kill_on_drop(true);
    c
}

/// Run `cigw ARGS` with the admin token, bounded in time.
async fn cigw(gw: &Gateway, args: &[&str]) -> Output {
    cigw_as(gw, ADMIN_TOKEN, args).await
}

async fn cigw_as(gw: &Gateway, token: &str, args: &[&str]) -> Output {
    let run = command(gw, token, args).output();
    tokio::time::timeout(Duration::from_secs(90), run).await.expect("cigw finished in time").expect("cigw ran")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

/// Both streams, for assertion messages.
fn both(o: &Output) -> String {
    format!("exit {:?}\n--- stdout\n{}--- stderr\n{}", o.status.code(), out(o), err(o))
}

/// The newest run of `target`, once there is one.
async fn newest_run(gw: &Gateway, target: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = gw.get_json(&format!("/v1/runs?target={target}&limit=1")).await;
        if let Some(run) = page["runs"].as_array().and_then(|r| r.first()) {
            return run.clone();
        }
        assert!(Instant::now() < deadline, "no run of {target} appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_0_when_all_succeed_and_1_when_one_fails() {
    let gw = fast_gateway().await;

    let o = cigw(&gw, &["trigger", "api-build", "web-e2e", "--branch", "main", "--wait", "--timeout", "60s"]).await;
    assert_eq!(code(&o), 0, "{}", both(&o));
    let text = out(&o);
    assert!(text.starts_with("trigger "), "{text}");
    // Not a terminal: one plain line per state change, then the summary table.
    assert!(text.contains("\napi-build (circleci) pending\n"), "{text}");
    assert!(text.contains("api-build (circleci) succeeded after"), "{text}");
    assert!(text.contains("web-e2e (codefresh) succeeded after"), "{text}");
    assert!(text.contains("TARGET     PROVIDER   STATE      ELAPSED"), "{text}");
    assert!(text.ends_with("2 runs: 2 succeeded\n"), "{text}");
    assert!(!text.contains('\u{1b}'), "no escape codes when stdout is not a terminal: {text:?}");

    let o =
        cigw(&gw, &["trigger", "api-build", "web-e2e", "--branch", "fail-unit", "--wait", "--timeout", "60s"]).await;
    assert_eq!(code(&o), 1, "{}", both(&o));
    assert!(out(&o).contains("api-build (circleci) failed after"), "{}", both(&o));
    // The Codefresh simulator has no failing branches: one failure among successes is enough for 1.
    assert!(out(&o).contains("2 runs: 1 failed, 1 succeeded"), "{}", both(&o));

    // --json with --wait prints the runs as the API gives them, once, at the end.
    let o = cigw(&gw, &["trigger", "legacy-basic", "--wait", "--json", "-p", "ignored=1"]).await;
    assert_eq!(code(&o), 4, "legacy-basic declares no parameters: {}", both(&o));
    let o = cigw(&gw, &["trigger", "legacy-basic", "--wait", "--json", "--label", "ticket=QA-1"]).await;
    assert_eq!(code(&o), 0, "{}", both(&o));
    let v: Value = serde_json::from_str(&out(&o)).expect("one JSON document");
    assert_eq!(v["runs"][0]["state"], "succeeded", "{v:#}");
    assert_eq!(v["runs"][0]["provider"], "codeship", "{v:#}");
    assert_eq!(v["timed_out"], false);
    let trigger = gw.get_json(&format!("/v1/triggers/{}", v["trigger_id"].as_str().unwrap())).await;
    assert_eq!(trigger["labels"], json!({"ticket": "QA-1"}), "{trigger:#}");

    // Without --wait: the trigger and its pending runs, exit 0 at once.
    let o = cigw(&gw, &["trigger", "api-build", "-p", "deploy_env=staging", "--idempotency-key", "k-1"]).await;
    assert_eq!(code(&o), 0, "{}", both(&o));
    assert!(out(&o).contains(": 1 run\n"), "{}", both(&o));
    let first_line = out(&o).lines().next().unwrap().to_string();
    let again = cigw(&gw, &["trigger", "api-build", "-p", "deploy_env=staging", "--idempotency-key", "k-1"]).await;
    assert_eq!(out(&again).lines().next().unwrap(), first_line, "the same key gives the same trigger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_2_when_canceled_and_3_on_timeout() {
    let gw = fast_gateway().await;

    // api-release holds for approval, so it is still blocked when the timeout passes.
    let started = Instant::now();
    let o = cigw(&gw, &["trigger", "api-release", "--wait", "--timeout", "2s"]).await;
    assert_eq!(code(&o), 3, "{}", both(&o));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(out(&o).contains("timed out; still unfinished: api-release"), "{}", both(&o));

    // web-deploy waits for approval too; cancel it with `cigw cancel` while a --wait follows it.
    let waiting = command(&gw, ADMIN_TOKEN, &["trigger", "web-deploy", "--wait", "--timeout", "60s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let run = newest_run(&gw, "web-deploy").await;
    let id = run["id"].as_str().unwrap().to_string();
    gw.wait_for_run(&id, Duration::from_secs(30), |s| s == "blocked").await;
    let c = cigw(&gw, &["cancel", &id]).await;
    assert_eq!(code(&c), 0, "{}", both(&c));
    assert!(out(&c).starts_with(&format!("cancel requested: run {id} (web-deploy) is ")), "{}", both(&c));
    let o = tokio::time::timeout(Duration::from_secs(60), waiting.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(code(&o), 2, "{}", both(&o));
    assert!(out(&o).contains("web-deploy (codefresh) canceled after"), "{}", both(&o));

    // Canceling it again is a conflict, reported with the API's code: a usage error.
    let again = cigw(&gw, &["cancel", &id]).await;
    assert_eq!(code(&again), 4, "{}", both(&again));
    assert!(err(&again).contains("run_finished"), "{}", both(&again));

    // A whole trigger: `cancel --trigger`.
    let (status, body) = gw.post_json("/v1/triggers", json!({"targets": ["api-release", "web-deploy"]})).await;
    assert_eq!(status, 202, "{body}");
    let trigger = body["trigger_id"].as_str().unwrap();
    let c = cigw(&gw, &["cancel", "--trigger", trigger]).await;
    assert_eq!(code(&c), 0, "{}", both(&c));
    assert!(out(&c).starts_with(&format!("cancel requested for trigger {trigger}\nTARGET")), "{}", both(&c));
    for run in body["runs"].as_array().unwrap() {
        let done = gw.wait_for_run(run["id"].as_str().unwrap(), Duration::from_secs(30), is_terminal).await;
        assert_eq!(done["state"], "canceled", "{done:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_auth_errors_exit_4_and_say_what_was_wrong() {
    let gw = fast_gateway().await;

    let o =
        cigw_as(&gw, "cigw_not-a-real-token-0123456789abcdefghijklmnopqrstuvw", &["trigger", "api-build", "--wait"])
            .await;
    assert_eq!(code(&o), 4, "{}", both(&o));
    assert!(err(&o).contains("unauthenticated"), "{}", both(&o));
    assert!(err(&o).contains("hint: check --token"), "{}", both(&o));

    let o = cigw_as(&gw, "", &["runs"]).await;
    assert_eq!(code(&o), 4, "{}", both(&o));
    assert!(err(&o).contains("no API token"), "{}", both(&o));

    let o = cigw(&gw, &["trigger", "api-build", "--branch", "a", "--tag", "b"]).await;
    assert_eq!(code(&o), 4, "clap usage errors exit 4: {}", both(&o));

    let o = cigw(&gw, &["trigger", "api-biuld", "--wait"]).await;
    assert_eq!(code(&o), 4, "{}", both(&o));
    assert!(err(&o).contains("unknown target `api-biuld`"), "{}", both(&o));
    assert!(err(&o).contains("api-build") && err(&o).contains("legacy-pro"), "the known targets: {}", both(&o));

    let o = cigw(&gw, &["trigger", "api-build", "-p", "deploy_env=moon", "-p", "colour=red"]).await;
    assert_eq!(code(&o), 4, "{}", both(&o));
    let e = err(&o);
    assert!(e.contains("colour"), "{e}");
    assert!(e.contains("parameters of `api-build`:"), "{e}");
    assert!(e.contains("deploy_env: string, default none, one of none|staging|production"), "{e}");
    assert!(e.contains("cigw_run_id: string"), "{e}");

    // A trigger-only token may start runs but not follow them.
    let o = cigw(&gw, &["token", "create", "--name", "trigger-only", "--scope", "trigger:api-build", "--json"]).await;
    assert_eq!(code(&o), 0, "{}", both(&o));
    let created: Value = serde_json::from_str(&out(&o)).unwrap();
    let secret = created["secret"].as_str().unwrap();
    let o = cigw_as(&gw, secret, &["trigger", "api-build", "--wait"]).await;
    assert_eq!(code(&o), 4, "{}", both(&o));
    assert!(err(&o).contains("--wait needs the `read` scope"), "{}", both(&o));
    let o = cigw_as(&gw, secret, &["trigger", "web-e2e"]).await;
    assert_eq!(code(&o), 4, "{}", both(&o));
    assert!(err(&o).contains("trigger:web-e2e"), "{}", both(&o));

    // The gateway is not there at all: not a usage error.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let o = command(&gw, ADMIN_TOKEN, &["runs"]).env("CIGW_URL", format!("http://127.0.0.1:{dead}")).output().await;
    let o = o.unwrap();
    assert_eq!(code(&o), 1, "{}", both(&o));
    assert!(err(&o).contains("cannot connect"), "{}", both(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_status_targets_watch_approve_and_rerun() {
    let gw = fast_gateway().await;
    let (status, body) =
        gw.post_json("/v1/triggers", json!({"targets": ["api-build"], "ref": {"branch": "fail-lint"}})).await;
    assert_eq!(status, 202, "{body}");
    let id = body["runs"][0]["id"].as_str().unwrap().to_string();
    let trigger = body["trigger_id"].as_str().unwrap().to_string();
    gw.wait_for_run(&id, Duration::from_secs(30), is_terminal).await;

    let o = cigw(&gw, &["runs", "--target", "api-build", "--state", "failed", "--since", "1h"]).await;
    assert_eq!(code(&o), 0, "{}", both(&o));
    let text = out(&o);
    assert!(text.starts_with("RUN "), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with(&id) && l.contains("failed") && l.contains("branch fail-lint")),
        "{text}"
    );
    let o = cigw(&gw, &["runs", "--trigger", &trigger, "--json"]).await;
    let page: Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(page["runs"][0]["id"], id.as_str());
    let o = cigw(&gw, &["runs", "--state", "exploded"]).await;
    assert_eq!(code(&o), 4, "{}", both(&o));
    assert!(err(&o).contains("state"), "{}", both(&o));

    let o = cigw(&gw, &["status", &id]).await;
    assert_eq!(code(&o), 0, "{}", both(&o));
    let text = out(&o);
    assert!(text.contains(&format!("run           {id}\n")), "{text}");
    assert!(text.contains("target        api-build (circleci, account sandbox)\n"), "{text}");
    assert!(text.contains("state         failed"), "{text}");
    assert!(text.contains("events:\n"), "{text}");
    assert!(text.contains("created"), "{text}");
    let o = cigw(&gw, &["status", "no-such-run"]).await;
    assert_eq!(code(&o), 4, "{}", both(&o));
    assert!(err(&o).contains("not_found"), "{}", both(&o));

    // The whole history of one run, ending by itself because the run has finished.
    let o = cigw(&gw, &["watch", "--run", &id]).await;
    assert_eq!(code(&o), 0, "{}", both(&o));
    let text = out(&o);
    let first = text.lines().next().unwrap_or_default();
    assert!(first.contains(&format!("  api-build  {id}  created  pending")), "{text}");
    assert!(text.trim_end().ends_with("failed") || text.contains("  failed  "), "{text}");
    let o = cigw(&gw, &["watch", "--trigger", &trigger, "--json", "--max-events", "2"]).await;
    assert_eq!(code(&o), 0, "{}", both(&o));
    let events: Vec<Value> = out(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e["trigger_id"] == trigger.as_str()), "{events:?}");
    assert!(events[0]["id"].as_i64() < events[1]["id"].as_i64());

    let o = cigw(&gw, &["rerun", &id, "--failed-only"]).await;
    assert_eq!(code(&o), 0, "{}", both(&o));
    assert!(out(&o).starts_with(&format!("rerun of {id}: run ")), "{}", both(&o));
    assert!(out(&o).contains("failed parts only"), "{}", both(&o));

    // Approve a held release, deny another.
    let o = cigw(&gw, &["trigger", "api-release", "--json"]).await;
    let release: Value = serde_json::from_str(&out(&o)).unwrap_or_else(|e| panic!("{e}: {}", both(&o)));
    let release = release["runs"][0]["id"].as_str().unwrap().to_string();
    gw.wait_for_run(&release, Duration::from_secs(30), |s| s == "blocked").await;
    let o = cigw(&gw, &["approve", &release]).await;
    assert_eq!(code(&o), 0, "{}", both(&o));
    assert!(out(&o).starts_with(&format!("approved: run {release} (api-release) is ")), "{}", both(&o));
    let done = gw.wait_for_run(&release, Duration::from_secs(30), is_terminal).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let o = cigw(&gw, &["approve", &release, "--deny"]).await;
    assert_eq!(code(&o), 4, "{}", both(&o));
    assert!(err(&o).contains("run_not_blocked"), "{}", both(&o));

    let o = cigw(&gw, &["targets"]).await;
    assert_eq!(code(&o), 0, "{}", both(&o));
    let text = out(&o);
    for name in ["api-build", "api-lint", "api-release", "web-e2e", "web-deploy", "legacy-basic", "legacy-pro"] {
        assert!(text.lines().any(|l| l.starts_with(name)), "{name}: {text}");
    }
    assert!(text.contains("cigw_run_id,deploy_env"), "{text}");
    let o = cigw(&gw, &["targets", "web-e2e"]).await;
    assert!(out(&o).contains("SENTRY_TOKEN: string, secret"), "{}", both(&o));
    assert!(out(&o).contains("BROWSER: string, default chromium, one of chromium|firefox"), "{}", both(&o));
    let o = cigw(&gw, &["targets", "nope"]).await;
    assert_eq!(code(&o), 4, "{}", both(&o));
    assert!(err(&o).contains("known targets: api-build"), "{}", both(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_a_gateway_restart_without_missing_or_repeating_events() {
    let mut gw = fast_gateway().await;
    let o = cigw(&gw, &["trigger", "api-release", "--json"]).await;
    let accepted: Value = serde_json::from_str(&out(&o)).unwrap_or_else(|e| panic!("{e}: {}", both(&o)));
    let run = accepted["runs"][0]["id"].as_str().unwrap().to_string();
    gw.wait_for_run(&run, Duration::from_secs(30), |s| s == "blocked").await;

    let mut watch = command(&gw, ADMIN_TOKEN, &["watch", "--run", &run, "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(watch.stdout.take().unwrap()));
    let mut events: Vec<Value> = Vec::new();
    // The history up to `blocked` arrives first.
    while !events.iter().any(|e| e["state"] == "blocked") {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap();
        events.push(serde_json::from_str(&line.expect("a line before the end")).unwrap());
    }

    gw.kill();
    gw.spawn().await;
    let (status, body) = gw.post_json(&format!("/v1/runs/{run}/approve"), json!({})).await;
    assert_eq!(status, 202, "{body}");

    let rest = tokio::time::timeout(Duration::from_secs(60), async {
        let mut rest = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            rest.push(serde_json::from_str::<Value>(&line).unwrap());
        }
        rest
    })
    .await
    .expect("the watch ends when the run finishes");
    let status = watch.wait().await.unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut watch.stderr.take().unwrap(), &mut stderr).await.unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("event stream"), "the drop was noticed: {stderr}");
    events.extend(rest);
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "no repeats, in order: {ids:?}");
    let all = gw.get_json(&format!("/v1/runs/{run}/events")).await;
    let expected: Vec<i64> = all["events"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, expected, "every event of the run, none missed");
    assert!(events.iter().any(|e| e["kind"] == "approved"), "{events:?}");
    assert_eq!(events.last().unwrap()["state"], "succeeded", "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_create_list_and_revoke() {
    let gw = fast_gateway().await;
    let o = cigw(
        &gw,
        &[
            "token",
            "create",
            "--button",
            "--target",
            "web-e2e",
            "--target",
            "api-build",
            "--origin",
            "https://qa.example.com",
            "--expires-in",
            "30d",
            "--rate-limit",
            "60",
        ],
    )
    .await;
    assert_eq!(code(&o), 0, "{}", both(&o));
    let text = out(&o);
    assert!(text.starts_with("created token button-web-e2e-api-build ("), "{text}");
    assert!(text.contains("scopes: trigger:web-e2e trigger:api-build\n"), "{text}");
    assert!(text.contains("origins: https://qa.example.com\n"), "{text}");
    assert!(text.contains("expires: "), "{text}");
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("secret (shown only now): "))
        .unwrap_or_else(|| panic!("{text}"))
        .to_string();
    assert!(secret.starts_with("cigw_") && secret.len() >= 48, "{secret:?}\n{text}");

    // The button token may trigger web-e2e and read nothing (a button follows its own run
    // through a watch link instead, see docs/ui.md).
    let o = cigw_as(&gw, &secret, &["trigger", "web-e2e"]).await;
    assert_eq!(code(&o), 0, "{}", both(&o));
    let o = cigw_as(&gw, &secret, &["runs"]).await;
    assert_eq!(code(&o), 4, "a button token reads nothing: {}", both(&o));
    assert!(err(&o).contains("missing_scope"), "{}", both(&o));

    let o = cigw(&gw, &["token", "list"]).await;
    assert_eq!(code(&o), 0, "{}", both(&o));
    let row = out(&o)
        .lines()
        .find(|l| l.contains("button-web-e2e-api-build"))
        .map(String::from)
        .unwrap_or_else(|| panic!("{}", both(&o)));
    assert!(row.contains("trigger:web-e2e,trigger:api-build") && row.contains("60/min"), "{row}");
    assert!(!out(&o).contains(&secret), "secrets are never listed");

    let o = cigw(&gw, &["token", "revoke", "button-web-e2e-api-build"]).await;
    assert_eq!(code(&o), 0, "{}", both(&o));
    assert!(out(&o).starts_with("revoked token "), "{}", both(&o));
    let o = cigw_as(&gw, &secret, &["runs"]).await;
    assert_eq!(code(&o), 4, "a revoked token is refused: {}", both(&o));
    let o = cigw(&gw, &["token", "revoke", "button-web-e2e-api-build"]).await;
    assert_eq!(code(&o), 4, "{}", both(&o));
    assert!(err(&o).contains("not_found"), "{}", both(&o));

    let o = cigw(&gw, &["token", "create", "--name", "bad name!", "--scope", "fly"]).await;
    assert_eq!(code(&o), 4, "{}", both(&o));
    assert!(err(&o).contains("invalid_token_request"), "{}", both(&o));
    assert!(err(&o).contains("name") && err(&o).contains("scopes"), "every problem is listed: {}", both(&o));
}

/// The live display in a pseudo-terminal: spinner lines redrawn in place, then the summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_display_draws_in_a_terminal() {
    use expectrl::process::unix::WaitStatus;
    use expectrl::{Eof, Expect, Session};

    let gw = Gateway::start(10.0, Duration::from_secs(20)).await;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cigw"));
    cmd.args(["trigger", "api-build", "web-e2e", "--branch", "main", "--wait", "--timeout", "60s"])
        .env("CIGW_URL", &gw.url)
        .env("CIGW_TOKEN", ADMIN_TOKEN)
        .env("CIGW_LOG", "warn")
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR");
    let (output, status) = tokio::task::spawn_blocking(move || {
        let mut session = Session::spawn(cmd).expect("spawn in a pty");
        session.set_expect_timeout(Some(Duration::from_secs(90)));
        let captured = session.expect(Eof).expect("the command ends");
        let output = String::from_utf8_lossy(captured.as_bytes()).into_owned();
        let status = session.get_process().wait().expect("exit status");
        (output, status)
    })
    .await
    .unwrap();
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}\n{output}");
    // indicatif redraws lines in place with cursor movement and line clearing.
    assert!(output.contains("\u{1b}[2K") || output.contains("\u{1b}[1A"), "no redraws: {output:?}");
    assert!(output.contains("running") || output.contains("queued"), "intermediate states drawn: {output:?}");
    assert!(output.contains('✔'), "finished runs are marked: {output:?}");
    assert!(output.contains("api-build  circleci"), "aligned live lines: {output:?}");
    assert!(output.contains("2 runs: 2 succeeded"), "{output:?}");
    assert!(!output.contains("(circleci) running after"), "plain lines are for pipes only: {output:?}");
}
