//! `cigw sandbox` runs its own notification receiver: a newcomer's first trigger shows up there
//! as signed CDEvents (queued, started, finished), listed at the URL the banner prints.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn the_sandbox_receiver_gets_signed_events_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cigw"))
        .args(["sandbox", "--port", "0", "--speed", "20", "--run-for", "2s", "--db"])
        .arg(dir.path().join("sandbox.db"))
        .env_remove("CIGW_SANDBOX_ADMIN_TOKEN")
        .env_remove("CIGW_CONFIG")
        .env("CIGW_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn cigw sandbox");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut api, mut token, mut notices) = (String::new(), String::new(), String::new());
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.first().copied() {
                Some("API") => api = words[1].to_string(),
                Some("Admin") => token = words.last().unwrap().to_string(),
                Some("Notices") => notices = words[1].to_string(),
                _ => {}
            }
            if line.contains("Press Ctrl-C to stop") {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read).await.expect("a banner");
    assert!(notices.starts_with("http://127.0.0.1:") && notices.ends_with("/events"), "{notices}");
    let http = reqwest::Client::new();
    let reply = http
        .post(format!("{api}/triggers"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"targets": ["web-e2e"], "ref": {"branch": "main"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 202);
    let run_id = reply.json::<Value>().await.unwrap()["runs"][0]["id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let listed: Value = http.get(&notices).send().await.unwrap().json().await.unwrap();
        let types: Vec<String> = listed["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"]["subject"]["id"] == run_id.as_str())
            .map(|e| e["event"]["context"]["type"].as_str().unwrap().to_string())
            .collect();
        if types.iter().any(|t| t.contains(".finished.")) {
            assert!(types.iter().any(|t| t.contains(".queued.")), "{types:?}");
            assert_eq!(listed["refused"], 0, "every event's signature verified");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no finished event for {run_id}: {listed:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    child.kill().await.unwrap();
}
