//! `cigw sandbox` prints the admin token only when it made it up: a token the user gave (flag or
//! `CIGW_SANDBOX_ADMIN_TOKEN`) is a secret of theirs and never echoed.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

const GIVEN: &str = "cigw_sandbox-given-token-0123456789abcdefghijklmnopqrstu";

/// Start the sandbox with `configure`, read its stdout up to the end of the banner, stop it, and
/// return (stdout, stderr).
async fn banner(configure: impl FnOnce(&mut Command)) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_cigw"));
    command
        .args(["sandbox", "--port", "0", "--speed", "20", "--db"])
        .arg(dir.path().join("sandbox.db"))
        .env_remove("CIGW_SANDBOX_ADMIN_TOKEN")
        .env_remove("CIGW_CONFIG")
        .env("CIGW_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    configure(&mut command);
    let mut child = command.spawn().expect("spawn cigw sandbox");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            stdout.push_str(&line);
            stdout.push('\n');
            if line.contains("Press Ctrl-C to stop") {
                return;
            }
        }
    };
    let finished = tokio::time::timeout(Duration::from_secs(60), read).await;
    child.kill().await.unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
    assert!(finished.is_ok(), "no banner within a minute:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

#[tokio::test]
async fn a_token_from_the_environment_or_the_flag_is_not_printed() {
    let from_env = banner(|c| {
        c.env("CIGW_SANDBOX_ADMIN_TOKEN", GIVEN);
    })
    .await;
    let from_flag = banner(|c| {
        c.args(["--admin-token", GIVEN]);
    })
    .await;
    for (stdout, stderr) in [from_env, from_flag] {
        assert!(stdout.contains("cigw sandbox is running"), "{stdout}");
        assert!(!stdout.contains(GIVEN), "the given token was printed:\n{stdout}");
        assert!(!stderr.contains(GIVEN), "the given token was logged:\n{stderr}");
        assert!(stdout.contains("Admin token the one you gave (not shown)"), "{stdout}");
    }
}

#[tokio::test]
async fn a_generated_token_is_printed_so_the_user_can_use_it() {
    let (stdout, _) = banner(|_| {}).await;
    let line = stdout.lines().find(|l| l.trim_start().starts_with("Admin token")).expect("an admin token line");
    let token = line.split_whitespace().last().unwrap();
    assert!(cigw_gateway::auth::is_well_formed(token), "{line}");
    assert!(stdout.contains(&format!("CIGW_TOKEN={token}")), "{stdout}");
    let ui = stdout.lines().find(|l| l.trim_start().starts_with("Web UI")).expect("a web UI line");
    assert!(ui.contains("http://127.0.0.1:") && ui.contains("/ui") && ui.contains("admin token"), "{ui}");
}

/// Start the sandbox and keep it running; returns the child and the banner.
async fn running_sandbox(dir: &std::path::Path) -> (tokio::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cigw"))
        .args(["sandbox", "--port", "0", "--speed", "20", "--db"])
        .arg(dir.join("sandbox.db"))
        .env_remove("CIGW_SANDBOX_ADMIN_TOKEN")
        .env_remove("CIGW_CONFIG")
        .env("CIGW_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn cigw sandbox");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            stdout.push_str(&line);
            stdout.push('\n');
            if line.contains("Press Ctrl-C to stop") {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read).await.expect("a banner within a minute");
    (child, stdout)
}

#[tokio::test]
async fn the_printed_github_hook_lines_trigger_a_build() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, banner) = running_sandbox(dir.path()).await;
    let export = banner.lines().find(|l| l.trim_start().starts_with("export CIGW_URL=")).expect("an export line");
    let start = banner.find("Send a signed GitHub push").expect("a hook section");
    let section: Vec<&str> = banner[start..].lines().skip(1).take_while(|l| !l.trim().is_empty()).collect();
    assert!(section.iter().any(|l| l.contains("openssl dgst -sha256 -hmac sandbox-github-secret")), "{banner}");
    // Exactly what a newcomer would paste, run by a shell.
    let script = format!("{}\n{}\n", export.trim(), section.join("\n"));
    let out = Command::new("bash").arg("-c").arg(&script).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script}\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(answer["matched"], true, "{answer}");
    assert_eq!(answer["rule"], "push-to-branch", "{answer}");
    assert_eq!(answer["runs"][0]["target"], "api-build", "{answer}");
    child.kill().await.unwrap();
}
