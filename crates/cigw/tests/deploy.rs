//! The files under `deploy/` agree with the binary and with each other:
//! - `deploy/cigw.toml` passes `cigw check-config` once the variables its `env:` secrets name are
//!   set, environment overrides (`CIGW__…`) apply to it, and a missing variable is reported;
//! - the Dockerfile's `ENTRYPOINT` + `CMD` is a command line the binary accepts, and run with the
//!   deploy configuration it serves and passes the image's health check script;
//! - every YAML file under `deploy/` parses (python3 with PyYAML, which `scripts/test` installs;
//!   the test fails, saying so, when it is missing), and compose and Kubernetes mount the configuration where `CMD`
//!   reads it, pass every secret it names and probe the right endpoints.
//!
//! No network: the only server is the debug binary on 127.0.0.1 with a SQLite file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const ADMIN_TOKEN: &str = "cigw_deploy-test-admin-token-0123456789abcdefghijklmnop";

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn cigw() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cigw"));
    c.env_remove("CIGW_CONFIG").env("CIGW_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("CIGW__") {
            c.env_remove(key);
        }
    }
    c
}

/// The variable names of the `"env:NAME"` secrets in `deploy/cigw.toml`.
fn secret_vars() -> Vec<String> {
    let toml = read("deploy/cigw.toml");
    let mut names: Vec<String> = toml
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split("\"env:").skip(1).map(|rest| rest.split('"').next().unwrap().to_string()))
        .collect();
    names.sort();
    names.dedup();
    assert!(
        names.contains(&"CIGW_ADMIN_TOKEN".to_string()),
        "deploy/cigw.toml takes the admin token from env: {names:?}"
    );
    names
}

/// `cigw` with every secret of `deploy/cigw.toml` set to a dummy value.
fn cigw_with_secrets() -> Command {
    let mut c = cigw();
    for name in secret_vars() {
        let value = if name == "CIGW_ADMIN_TOKEN" { ADMIN_TOKEN.to_string() } else { format!("dummy-{name}") };
        c.env(name, value);
    }
    c
}

#[test]
fn the_deploy_configuration_passes_check_config_with_env_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("cigw.db").display());
    let out = cigw_with_secrets()
        .args(["check-config", "--config"])
        .arg(repo_file("deploy/cigw.toml"))
        .env("CIGW__DATABASE__URL", &db)
        .env("CIGW__SERVER__LISTEN", "127.0.0.1:18080")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(stdout.contains(&format!("database: {db}\n")), "CIGW__DATABASE__URL applied:\n{stdout}");
    assert!(stdout.contains("listen: 127.0.0.1:18080\n"), "CIGW__SERVER__LISTEN applied:\n{stdout}");
    assert!(!stdout.contains("dummy-") && !stderr.contains("dummy-"), "a secret was printed:\n{stdout}\n{stderr}");

    // The URL compose and Kubernetes give (its password comes from PGPASSWORD) is accepted too.
    let out = cigw_with_secrets()
        .args(["check-config", "--config"])
        .arg(repo_file("deploy/cigw.toml"))
        .env("CIGW__DATABASE__URL", "postgres://cigw@postgres:5432/cigw")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // Without one of the variables it names, the configuration is refused at that key.
    let out = cigw_with_secrets()
        .args(["check-config", "--config"])
        .arg(repo_file("deploy/cigw.toml"))
        .env("CIGW__DATABASE__URL", &db)
        .env_remove("CIRCLECI_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("environment variable `CIRCLECI_TOKEN` is not set"), "{stdout}");
}

/// The instructions of the Dockerfile's last stage, continuation lines joined, comments dropped.
fn final_stage_instructions() -> Vec<(String, String)> {
    let text = read("deploy/Dockerfile");
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let start = joined.iter().rposition(|l| l.starts_with("FROM ")).expect("a FROM");
    joined[start..]
        .iter()
        .map(|l| {
            let (op, rest) = l.split_once(' ').unwrap_or((l, ""));
            (op.to_ascii_uppercase(), rest.trim().to_string())
        })
        .collect()
}

fn instruction(ops: &[(String, String)], name: &str) -> String {
    ops.iter().rev().find(|(op, _)| op == name).map(|(_, rest)| rest.clone()).unwrap_or_else(|| panic!("no {name}"))
}

fn exec_form(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("not an exec-form JSON array: {json}: {e}"))
}

/// `ENTRYPOINT` and `CMD` of the runtime image.
fn docker_command() -> (Vec<String>, Vec<String>) {
    let ops = final_stage_instructions();
    (exec_form(&instruction(&ops, "ENTRYPOINT")), exec_form(&instruction(&ops, "CMD")))
}

/// The value after `--config` in the image's `CMD`.
fn image_config_path() -> String {
    let (_, cmd) = docker_command();
    let at = cmd.iter().position(|a| a == "--config").expect("CMD passes --config");
    cmd[at + 1].clone()
}

#[test]
fn the_dockerfile_command_line_is_accepted_by_the_binary() {
    let ops = final_stage_instructions();
    let (entrypoint, cmd) = docker_command();
    assert_eq!(entrypoint, ["cigw"]);
    assert_eq!(cmd, ["serve", "--config", "/etc/cigw/cigw.toml"]);
    assert_eq!(image_config_path(), "/etc/cigw/cigw.toml");

    let out = cigw().args(&cmd).arg("--help").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cigw {cmd:?} --help: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Usage: cigw serve") && stdout.contains("--config"), "{stdout}");

    // The image listens where it says, runs unprivileged, and ships the health check it calls.
    assert_eq!(instruction(&ops, "EXPOSE"), "8080");
    assert!(instruction(&ops, "ENV").contains("CIGW__SERVER__LISTEN=0.0.0.0:8080"));
    let user = instruction(&ops, "USER");
    assert!(!user.starts_with("root") && !user.starts_with("0"), "USER {user}");
    assert!(instruction(&ops, "VOLUME").contains("/var/lib/cigw"));
    let health = instruction(&ops, "HEALTHCHECK");
    let health_cmd = exec_form(health.split_once(" CMD ").expect("HEALTHCHECK … CMD [..]").1);
    let installed = format!("deploy/healthcheck.sh /usr/local/bin/{}", health_cmd[0]);
    assert!(
        ops.iter().any(|(op, rest)| op == "COPY" && rest.ends_with(&installed)),
        "the HEALTHCHECK's {} is copied from deploy/healthcheck.sh",
        health_cmd[0]
    );
}

fn healthcheck(listen: &str, path: &str) -> std::process::Output {
    Command::new("bash")
        .arg(repo_file("deploy/healthcheck.sh"))
        .arg(path)
        .env("CIGW__SERVER__LISTEN", listen)
        .output()
        .expect("bash is needed to run deploy/healthcheck.sh")
}

#[test]
fn the_image_command_serves_the_deploy_configuration_and_passes_the_health_check() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let log_path = dir.path().join("cigw.log");
    let (_, mut cmd) = docker_command();
    let config = image_config_path();
    for arg in &mut cmd {
        if *arg == config {
            *arg = repo_file("deploy/cigw.toml").display().to_string();
        }
    }
    let mut child = cigw_with_secrets()
        .args(&cmd)
        .env("CIGW__SERVER__LISTEN", &listen)
        .env("CIGW__DATABASE__URL", format!("sqlite://{}", dir.path().join("cigw.db").display()))
        .env("CIGW_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if healthcheck(&listen, "/readyz").status.success() {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("cigw {cmd:?} exited with {status}; log:\n{}", log());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no 200 from /readyz within 30 s; log:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ok = healthcheck(&listen, "/healthz");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let not_found = healthcheck(&listen, "/no-such-endpoint");
    assert_eq!(not_found.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&not_found.stderr).contains("answered 404"), "{not_found:?}");

    child.kill().unwrap();
    child.wait().unwrap();
    let down = healthcheck(&listen, "/healthz");
    assert_eq!(down.status.code(), Some(1), "a stopped gateway is unhealthy: {down:?}");
}

/// Every YAML file under `deploy/`, parsed by python3 + PyYAML into JSON (one value per
/// document).
fn deploy_yaml() -> Vec<(String, Vec<Value>)> {
    let probe = match Command::new("python3").args(["-c", "import yaml"]).output() {
        Ok(out) => out,
        Err(e) => panic!("python3 is needed to parse the YAML files under deploy/ (cannot run it: {e})"),
    };
    assert!(
        probe.status.success(),
        "PyYAML is needed to parse the YAML files under deploy/ (scripts/test installs it with \
         `python3 -m pip install pyyaml`): {}",
        String::from_utf8_lossy(&probe.stderr).trim().lines().last().unwrap_or("no message")
    );
    let mut files = Vec::new();
    let mut dirs = vec![repo_file("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 5, "compose.yaml and the k8s manifests: {files:?}");
    const TO_JSON: &str = "import json, sys, yaml\n\
                           with open(sys.argv[1]) as f:\n    json.dump(list(yaml.safe_load_all(f)), sys.stdout)";
    files
        .into_iter()
        .map(|path| {
            let out = Command::new("python3").args(["-c", TO_JSON]).arg(&path).output().unwrap();
            assert!(
                out.status.success(),
                "{} does not parse:\n{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let docs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
            let rel = path.strip_prefix(repo_file("deploy")).unwrap().display().to_string();
            (rel, docs.into_iter().filter(|d| !d.is_null()).collect())
        })
        .collect()
}

fn document<'a>(files: &'a [(String, Vec<Value>)], file: &str) -> &'a Value {
    let (_, docs) = files.iter().find(|(name, _)| name == file).unwrap_or_else(|| panic!("deploy/{file} exists"));
    assert_eq!(docs.len(), 1, "one document in {file}");
    &docs[0]
}

#[test]
fn compose_and_kubernetes_mount_the_configuration_where_the_image_reads_it() {
    let config = image_config_path();
    let (config_dir, config_name) = config.rsplit_once('/').unwrap();
    // Plain-text checks, which need no YAML parser.
    assert!(read("deploy/compose.yaml").contains(&format!("./cigw.toml:{config}:ro")));
    assert!(read("deploy/k8s/deployment.yaml").contains(&format!("mountPath: {config_dir}\n")));

    let files = deploy_yaml();
    let secrets = secret_vars();

    // compose: the gateway mounts deploy/cigw.toml, waits for a healthy PostgreSQL 16, and gets
    // every secret from the environment.
    let compose = document(&files, "compose.yaml");
    let postgres = &compose["services"]["postgres"];
    assert!(postgres["image"].as_str().unwrap().starts_with("postgres:16"), "{postgres}");
    assert!(postgres["healthcheck"]["test"].to_string().contains("pg_isready"), "{postgres}");
    let gateway = &compose["services"]["cigw"];
    assert_eq!(gateway["depends_on"]["postgres"]["condition"], "service_healthy");
    let volumes: Vec<&str> = gateway["volumes"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(volumes.contains(&format!("./cigw.toml:{config}:ro").as_str()), "{volumes:?}");
    assert!(volumes.iter().any(|v| v.ends_with(":/var/lib/cigw")), "{volumes:?}");
    let env = gateway["environment"].as_object().unwrap();
    assert!(env["CIGW__DATABASE__URL"].as_str().unwrap().starts_with("postgres://"));
    for name in secrets.iter().chain([&"PGPASSWORD".to_string()]) {
        let value = env.get(name.as_str()).and_then(Value::as_str).unwrap_or_else(|| panic!("compose passes {name}"));
        assert!(value.starts_with("${"), "{name} comes from the environment, not a literal: {value}");
    }
    assert!(compose["volumes"].as_object().is_some_and(|v| !v.is_empty()), "named volumes");
    let dotenv = read("deploy/.env.example");
    for name in secrets.iter().map(String::as_str).chain(["POSTGRES_PASSWORD"]) {
        assert!(dotenv.contains(&format!("\n{name}=\n")), ".env.example has an empty {name}");
    }

    // Kubernetes: the ConfigMap holds deploy/cigw.toml; the Deployment mounts it where CMD reads
    // it, takes every secret from a Secret and probes /readyz and /healthz.
    let configmap = document(&files, "k8s/configmap.yaml");
    assert_eq!(
        configmap["data"][config_name].as_str(),
        Some(read("deploy/cigw.toml").as_str()),
        "ConfigMap = deploy/cigw.toml"
    );
    let deployment = document(&files, "k8s/deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    if let Some(args) = container["args"].as_array() {
        let args: Vec<&str> = args.iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(args, docker_command().1, "the Deployment's args are the image's CMD");
    }
    let config_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == configmap["metadata"]["name"])
        .expect("a volume of the ConfigMap");
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == config_volume["name"])
        .expect("the ConfigMap is mounted");
    assert_eq!(mount["mountPath"], config_dir);
    let items = config_volume["configMap"]["items"].as_array().unwrap();
    assert!(items.iter().any(|i| i["key"] == config_name && i["path"] == config_name), "{items:?}");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let env = container["env"].as_array().unwrap();
    for name in secrets.iter().chain([&"PGPASSWORD".to_string()]) {
        let var =
            env.iter().find(|e| e["name"] == name.as_str()).unwrap_or_else(|| panic!("the Deployment sets {name}"));
        assert!(var["valueFrom"]["secretKeyRef"]["name"].is_string(), "{name} comes from a Secret: {var}");
    }
    let url = env.iter().find(|e| e["name"] == "CIGW__DATABASE__URL").expect("CIGW__DATABASE__URL");
    assert!(url["value"].as_str().unwrap().starts_with("postgres://"), "replicas need PostgreSQL: {url}");

    let kustomization = document(&files, "k8s/kustomization.yaml");
    let resources = kustomization["resources"].to_string();
    for file in ["configmap.yaml", "deployment.yaml", "service.yaml"] {
        assert!(resources.contains(file), "kustomization lists {file}");
    }
}

#[test]
fn the_systemd_unit_runs_the_image_command_and_its_environment_file_names_every_secret() {
    let unit = read("deploy/systemd/cigw.service");
    let (_, cmd) = docker_command();
    assert!(unit.contains(&format!("ExecStart=/usr/local/bin/cigw {}\n", cmd.join(" "))), "{unit}");
    assert!(unit.contains("EnvironmentFile=/etc/cigw/cigw.env\n"));
    assert!(unit.contains("StateDirectory=cigw\n") && unit.contains("ProtectSystem=strict\n"));
    let env_example = read("deploy/systemd/cigw.env.example");
    for name in secret_vars() {
        assert!(env_example.contains(&format!("\n{name}=")), "cigw.env.example has {name}");
    }
}
