//! The files under `deploy/` agree with the binary and with each other:
//! - `deploy/cigw.toml` passes `cigw check-config` once the variables its `env:` secrets name are
//!   set, environment overrides (`CIGW__…`) apply to it, and a missing variable is reported;
//! - the Dockerfile's `ENTRYPOINT` + `CMD` is a command line the binary accepts, and run with the
//!   deploy configuration it serves and passes the image's health check script;
//! - every YAML file under `deploy/` parses, and compose and Kubernetes mount the configuration
//!   where `CMD` reads it, pass every secret it names and probe the right endpoints;
//! - every Kubernetes manifest is valid for Kubernetes 1.30 by the official JSON schemas vendored
//!   in `deploy/k8s/schemas/` (strict: an unknown field fails), and the manifests agree with
//!   each other and with the gateway (replicas, disruption budget, grace period, user, sizing).
//!
//! No network: the only server is the debug binary on 127.0.0.1 with a SQLite file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use yaml_rust2::Yaml;

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

    // The URLs compose and the Kubernetes Secret example give (their password comes from
    // PGPASSWORD) are accepted too.
    let compose = document(&deploy_yaml(), "compose.yaml")["services"]["cigw"]["environment"]["CIGW__DATABASE__URL"]
        .as_str()
        .unwrap()
        .to_string();
    for url in [compose, kubernetes_database_url()] {
        let out = cigw_with_secrets()
            .args(["check-config", "--config"])
            .arg(repo_file("deploy/cigw.toml"))
            .env("CIGW__DATABASE__URL", &url)
            .output()
            .unwrap();
        assert!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stdout));
    }

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
    // A container's log goes to a file or a collector, never a terminal: plain text only.
    let text = log();
    assert!(text.contains("INFO"), "the gateway logged nothing at info: {text}");
    assert!(!text.contains('\u{1b}'), "terminal escape codes in a log file:\n{text}");
    let down = healthcheck(&listen, "/healthz");
    assert_eq!(down.status.code(), Some(1), "a stopped gateway is unhealthy: {down:?}");
}

/// A YAML text as JSON values, one per document (empty documents dropped).
fn yaml_documents(text: &str) -> Result<Vec<Value>, String> {
    let docs = yaml_rust2::YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    docs.iter().filter(|d| !d.is_null()).map(yaml_to_json).collect()
}

fn yaml_to_json(yaml: &Yaml) -> Result<Value, String> {
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(_) => Value::from(yaml.as_f64().ok_or_else(|| format!("not a number: {yaml:?}"))?),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect::<Result<_, _>>()?),
        Yaml::Hash(map) => {
            let mut object = serde_json::Map::new();
            for (key, value) in map {
                let key = match key {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    other => return Err(format!("a mapping key that is not a string: {other:?}")),
                };
                object.insert(key, yaml_to_json(value)?);
            }
            Value::Object(object)
        }
        Yaml::Alias(_) | Yaml::BadValue => return Err(format!("unsupported YAML node: {yaml:?}")),
    })
}

/// Every YAML file under `deploy/` (path relative to it), parsed into JSON values.
fn deploy_yaml() -> Vec<(String, Vec<Value>)> {
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
    assert!(files.len() >= 7, "compose.yaml and the k8s manifests: {files:?}");
    files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(repo_file("deploy")).unwrap().display().to_string();
            let docs = yaml_documents(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("deploy/{rel} does not parse: {e}"));
            (rel, docs)
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
    assert!(url["valueFrom"]["secretKeyRef"]["name"].is_string(), "the database URL comes from a Secret: {url}");
    let example = kubernetes_database_url();
    assert!(example.starts_with("postgres://"), "replicas need PostgreSQL: {example}");
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

/// The `database-url` of the Kubernetes Secret example: what the Deployment's
/// `CIGW__DATABASE__URL` holds.
fn kubernetes_database_url() -> String {
    let files = deploy_yaml();
    let url = &document(&files, "k8s/secret.example.yaml")["stringData"]["database-url"];
    url.as_str().expect("secret.example.yaml has a database-url").to_string()
}

/// The vendored schemas: Kubernetes 1.30, strict (see deploy/k8s/schemas/README.md).
const K8S_SCHEMAS: &str = "deploy/k8s/schemas/v1.30.0-local-strict";
/// The `$id` of the definitions file the kind schemas refer to.
const K8S_DEFINITIONS_ID: &str = "https://kubernetes.io/api/_definitions.json";

/// The validator of a manifest's `apiVersion` and `kind`, from the file kubernetes-validate names
/// `<kind>-<group>-<version>.json` (`apps/v1` → `apps-v1`, core `v1` → `v1`).
fn k8s_validator(manifest: &Value) -> Result<jsonschema::Validator, String> {
    let api_version = manifest["apiVersion"].as_str().ok_or("no apiVersion")?;
    let kind = manifest["kind"].as_str().ok_or("no kind")?;
    let group_version = match api_version.split_once('/') {
        Some((group, version)) => format!("{}-{version}", group.split('.').next().unwrap_or(group)),
        None => api_version.to_string(),
    };
    let file = format!("{K8S_SCHEMAS}/{}-{group_version}.json", kind.to_lowercase());
    let text = std::fs::read_to_string(repo_file(&file))
        .map_err(|e| format!("no vendored schema for {kind} {api_version} ({file}): {e}"))?;
    let schema: Value = serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    let definitions: Value = serde_json::from_str(&read(&format!("{K8S_SCHEMAS}/_definitions.json"))).unwrap();
    let definitions = jsonschema::Resource::from_contents(definitions).map_err(|e| e.to_string())?;
    jsonschema::options()
        .with_resource(K8S_DEFINITIONS_ID, definitions)
        .build(&schema)
        .map_err(|e| format!("{file}: {e}"))
}

/// What the vendored schemas find wrong with a manifest, one line each with its place.
fn k8s_errors(manifest: &Value) -> Vec<String> {
    match k8s_validator(manifest) {
        Ok(validator) => validator.iter_errors(manifest).map(|e| format!("{}: {e}", e.instance_path)).collect(),
        Err(e) => vec![e],
    }
}

#[test]
fn every_kubernetes_manifest_is_valid_for_kubernetes_1_30() {
    let files = deploy_yaml();
    let mut kinds = Vec::new();
    for (file, docs) in files.iter().filter(|(f, _)| f.starts_with("k8s/") && f != "k8s/kustomization.yaml") {
        for doc in docs {
            let errors = k8s_errors(doc);
            assert!(errors.is_empty(), "deploy/{file} is not valid for Kubernetes 1.30:\n{}", errors.join("\n"));
            kinds.push(doc["kind"].as_str().unwrap().to_string());
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service"]);
}

#[test]
fn the_schema_check_fails_on_a_wrong_field() {
    let one = |text: &str| yaml_documents(text).unwrap().remove(0);
    let deployment = read("deploy/k8s/deployment.yaml");
    assert_eq!(k8s_errors(&one(&deployment)), Vec::<String>::new(), "the real Deployment is valid");

    // One mistake at a time in the real Deployment, each found at its place.
    for (from, to, expected) in [
        ("  replicas: 3\n", "  replica: 3\n", "'replica' was unexpected"),
        ("readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true", "'readOnlyRootFileSystem' was unexpected"),
        (
            "failureThreshold: 60",
            "failureThreshold: sixty",
            "/spec/template/spec/containers/0/startupProbe/failureThreshold",
        ),
        (
            "terminationGracePeriodSeconds: 30",
            "terminationGracePeriodSeconds: 30s",
            "/spec/template/spec/terminationGracePeriodSeconds",
        ),
        ("              - key: cigw.toml\n", "              - name: cigw.toml\n", "\"key\" is a required property"),
    ] {
        assert!(deployment.contains(from), "deployment.yaml has {from:?}");
        let errors = k8s_errors(&one(&deployment.replacen(from, to, 1)));
        assert!(errors.iter().any(|e| e.contains(expected)), "{from:?} -> {to:?}: want {expected:?} in {errors:?}");
    }

    // A manifest written wrong from scratch: a misspelt field deep in a PodDisruptionBudget, and
    // a kind with no vendored schema.
    let pdb = "apiVersion: policy/v1\n\
               kind: PodDisruptionBudget\n\
               metadata: {name: cigw}\n\
               spec:\n  maxUnavailable: 1\n  selector:\n    matchLabel: {app: cigw}\n";
    let errors = k8s_errors(&one(pdb));
    assert!(
        errors.iter().any(|e| e.starts_with("/spec/selector") && e.contains("'matchLabel' was unexpected")),
        "{errors:?}"
    );
    let old = "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: cigw}\n";
    let errors = k8s_errors(&one(old));
    assert!(
        errors.len() == 1 && errors[0].contains("no vendored schema for Deployment extensions/v1beta1"),
        "{errors:?}"
    );
}

/// Kubernetes' `Mi`/`Gi` quantity in MiB.
fn mebibytes(quantity: &Value) -> u64 {
    let q = quantity.as_str().unwrap_or_else(|| panic!("a quantity: {quantity}"));
    match q.split_at(q.len() - 2) {
        (n, "Mi") => n.parse().unwrap(),
        (n, "Gi") => n.parse::<u64>().unwrap() * 1024,
        _ => panic!("write memory in Mi or Gi: {q}"),
    }
}

#[test]
fn the_kubernetes_manifests_agree_with_each_other_and_with_the_gateway() {
    let files = deploy_yaml();
    let deployment = document(&files, "k8s/deployment.yaml");
    let spec = &deployment["spec"];
    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    let selector = spec["selector"]["matchLabels"].as_object().unwrap();
    for (label, value) in selector {
        assert_eq!(&spec["template"]["metadata"]["labels"][label], value, "the pods carry the selector's {label}");
    }

    // Three replicas, replaced one at a time without losing capacity; the budget keeps two up.
    assert_eq!(spec["replicas"], 3);
    assert_eq!(spec["strategy"]["type"], "RollingUpdate");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let pdb = document(&files, "k8s/pdb.yaml");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"].as_object(), Some(selector));
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let service = document(&files, "k8s/service.yaml");
    assert_eq!(service["spec"]["selector"].as_object(), Some(selector));
    let target_port = &service["spec"]["ports"][0]["targetPort"];
    assert!(container["ports"].as_array().unwrap().iter().any(|p| p["name"] == *target_port), "{target_port}");

    // Probes: liveness and start-up on /healthz; readiness on /readyz, which needs a database
    // write and waits for it up to READY_TIMEOUT: the probe waits longer, so it sees the 503.
    assert_eq!(container["startupProbe"]["httpGet"]["path"], "/healthz");
    let ready_timeout = cigw_gateway::api::health::READY_TIMEOUT.as_secs();
    assert!(container["readinessProbe"]["timeoutSeconds"].as_u64().unwrap() > ready_timeout);

    // The pod gets SIGTERM after its preStop sleep, then cigw drains within shutdown_grace:
    // both must fit in the grace period, and compose and systemd give at least as much.
    assert!(!read("deploy/cigw.toml").contains("shutdown_grace"), "deploy/cigw.toml keeps the default grace");
    let drain = cigw_core::config::Settings::default().server.shutdown_grace.as_secs();
    let pre_stop = &container["lifecycle"]["preStop"]["exec"]["command"];
    assert_eq!(pre_stop[0], "sleep");
    let pre_stop: u64 = pre_stop[1].as_str().unwrap().parse().unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(pre_stop + drain < grace, "preStop {pre_stop} s + shutdown_grace {drain} s < {grace} s");
    let compose = document(&files, "compose.yaml");
    let compose_grace = humantime::parse_duration(compose["services"]["cigw"]["stop_grace_period"].as_str().unwrap());
    assert!(compose_grace.unwrap().as_secs() > drain);
    assert!(read("deploy/systemd/cigw.service").contains(&format!("TimeoutStopSec={grace}s\n")));

    // Non-root as the image's user, read-only root filesystem, no capabilities; compose too.
    let user = instruction(&final_stage_instructions(), "USER");
    let (uid, gid) = user.split_once(':').unwrap();
    assert_eq!(pod["securityContext"]["runAsUser"].to_string(), uid);
    assert_eq!(pod["securityContext"]["runAsGroup"].to_string(), gid);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let hardening = &container["securityContext"];
    assert_eq!(hardening["readOnlyRootFilesystem"], true);
    assert_eq!(hardening["allowPrivilegeEscalation"], false);
    assert_eq!(hardening["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let gateway = &compose["services"]["cigw"];
    assert_eq!(gateway["read_only"], true);
    assert_eq!(gateway["cap_drop"], serde_json::json!(["ALL"]));

    // Sizing from cigw-bench (docs/deployment.md#sizing): RSS 32 MB measured with 10,000 runs in
    // flight, against a budget of 100 MB. The request is at least twice the measured figure, the
    // limit at least twice the budget.
    let resources = &container["resources"];
    assert!(mebibytes(&resources["requests"]["memory"]) >= 2 * 32);
    assert!(mebibytes(&resources["limits"]["memory"]) >= 2 * 100);
    assert!(resources["requests"]["cpu"].is_string());

    // Every secret the Deployment reads is a key of the Secret example, whose values are
    // placeholders: no real secret is in the repository.
    let secret = document(&files, "k8s/secret.example.yaml");
    let keys = secret["stringData"].as_object().unwrap();
    for var in container["env"].as_array().unwrap().iter().filter(|e| e["valueFrom"].is_object()) {
        let reference = &var["valueFrom"]["secretKeyRef"];
        assert_eq!(reference["name"], secret["metadata"]["name"], "{var}");
        assert!(keys.contains_key(reference["key"].as_str().unwrap()), "secret.example.yaml has {var}");
    }
    for (key, value) in keys {
        let value = value.as_str().unwrap();
        if key == "database-url" {
            let authority = value.split_once("://").unwrap().1.split('/').next().unwrap();
            assert!(!authority.split('@').next().unwrap().contains(':'), "no password in the example URL: {value}");
        } else {
            assert_eq!(value, "REPLACE_ME", "{key} is a placeholder");
        }
    }

    // The kustomization applies every manifest but the Secret example, which would overwrite the
    // real Secret with placeholders.
    let kustomization = document(&files, "k8s/kustomization.yaml");
    let mut listed: Vec<&str> =
        kustomization["resources"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    listed.sort_unstable();
    let mut manifests: Vec<&str> = files
        .iter()
        .filter_map(|(f, _)| f.strip_prefix("k8s/"))
        .filter(|f| !f.contains('/') && *f != "kustomization.yaml" && *f != "secret.example.yaml")
        .collect();
    manifests.sort_unstable();
    assert_eq!(listed, manifests);
}
