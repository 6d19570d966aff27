//! `cigw check-config` run as a user would: the example passes; a file with five different
//! mistakes has all five named with their key paths; no secret value is ever printed.

use std::process::Command;

fn cigw() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cigw"));
    c.env_remove("CIGW_CONFIG").env("CIGW_LOG", "warn");
    c
}

fn repo_file(rel: &str) -> String {
    format!("{}/../../{rel}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_example_configuration_passes() {
    let out = cigw()
        .args(["check-config", "--config", &repo_file("config/example.toml")])
        .env("CIGW_ADMIN_TOKEN", "cigw_example-admin-token-value")
        .env("CIRCLECI_TOKEN", "circle-secret-value-1")
        .env("CIRCLECI_WEBHOOK_SECRET", "circle-hook-secret-2")
        .env("CODEFRESH_API_KEY", "codefresh-secret-value-3")
        .env("CODESHIP_EMAIL", "ci@example.com")
        .env("CODESHIP_PASSWORD", "codeship-secret-value-4")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
    for target in ["api-build", "mobile-e2e", "web-e2e", "deploy-staging", "legacy-monolith", "legacy-docker"] {
        assert!(stdout.contains(&format!("  {target}: ")), "{target} listed:\n{stdout}");
    }
    assert!(
        stdout.contains("parameter deploy_env: string, default \"none\", one of \"none\", \"staging\", \"production\""),
        "{stdout}"
    );
    assert!(stdout.contains("parameter SENTRY_TOKEN: string, secret"), "{stdout}");
    for secret in [
        "circle-secret-value-1",
        "circle-hook-secret-2",
        "codefresh-secret-value-3",
        "codeship-secret-value-4",
        "example-admin-token",
    ] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret} leaked");
    }
}

#[test]
fn five_mistakes_are_all_reported_with_their_key_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        r#"
[server]
listne = "127.0.0.1:9000"            # 1. unknown key

[providers.circleci.main]
token = "env:CIGW_TEST_UNSET_CIRCLE_TOKEN"   # 2. unresolvable env: secret

[targets.api]
provider = "circleci"
account = "main"
project_slug = "gh/only-two"          # 3. invalid locator

[targets.api.parameters.retries]
type = "integer"
default = "three"                     # 4. default of the wrong type

[targets.web]
provider = "circleci"
account = "missing"                   # 5. account that does not exist
project_slug = "gh/acme/web"
"#,
    )
    .unwrap();
    let out = cigw().args(["check-config", "--config"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let errors: Vec<&str> = stdout.lines().filter(|l| l.starts_with("error: ")).collect();
    let has = |prefix: &str| errors.iter().any(|l| l.starts_with(&format!("error: {prefix}")));
    assert!(has("server.listne: unknown key"), "{stdout}");
    assert!(
        has("providers.circleci.main.token: environment variable `CIGW_TEST_UNSET_CIRCLE_TOKEN` is not set"),
        "{stdout}"
    );
    assert!(has("targets.api.project_slug: "), "{stdout}");
    assert!(
        has("targets.api.parameters.retries: default has type string, but the parameter is declared integer"),
        "{stdout}"
    );
    assert!(has("targets.web.account: no account `missing` under [providers.circleci]"), "{stdout}");
    assert!(stdout.contains("problem(s) found"), "{stdout}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = cigw().args(["check-config", "--config", "/nonexistent/cigw.toml"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("/nonexistent/cigw.toml"), "{stdout}");
}

#[test]
fn parameters_on_a_codeship_target_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("codeship.toml");
    std::fs::write(
        &path,
        r#"
[providers.codeship.legacy]
email = "ci@example.com"
password = "a-literal-password-for-a-sandbox"
organization = "1c5b3a4e-2f6d-4c8e-9a7b-5d3e1f2a4b6c"

[targets.old]
provider = "codeship"
account = "legacy"
project_uuid = "0c3ab2a0-1b6b-0136-5a3a-4e9d2e4d1b2f"
project_type = "basic"

[targets.old.parameters.flag]
type = "boolean"
"#,
    )
    .unwrap();
    let out = cigw().args(["check-config", "--config"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("error: targets.old.parameters")), "{stdout}");
    assert!(stdout.contains("warning: providers.codeship.legacy.password: secret written as a literal"), "{stdout}");
    assert!(!stdout.contains("a-literal-password-for-a-sandbox"), "{stdout}");
}

#[test]
fn bad_schedules_are_refused_with_their_key_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedules.toml");
    let sandbox = std::fs::read_to_string(repo_file("config/sandbox.toml")).unwrap();
    std::fs::write(
        &path,
        format!(
            r#"{sandbox}
[schedules.typo]
cron = "0 25 * * *"
zone = "Europe/Berlinn"
targets = ["api-build"]

[schedules.wrong]
cron = "30 2 * * *"
targets = ["api-build", "no-such-target"]
parameters = {{ undeclared = "x" }}
missed = "later"
"#
        ),
    )
    .unwrap();
    let out = cigw().args(["check-config", "--config"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for key in ["schedules.typo.cron: ", "schedules.typo.zone: ", "schedules.wrong.missed: "] {
        assert!(stdout.lines().any(|l| l.starts_with(&format!("error: {key}"))), "{key}: {stdout}");
    }
    let fixed = std::fs::read_to_string(&path).unwrap().replace("missed = \"later\"", "");
    std::fs::write(&path, fixed).unwrap();
    let out = cigw().args(["check-config", "--config"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for key in
        ["schedules.wrong.targets[1]: unknown target `no-such-target`", "schedules.wrong.parameters.undeclared: "]
    {
        assert!(stdout.lines().any(|l| l.starts_with(&format!("error: {key}"))), "{key}: {stdout}");
    }
}

#[test]
fn the_sandbox_schedule_passes() {
    let out = cigw().args(["check-config", "--config", &repo_file("config/sandbox.toml")]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("  api-lint-every-2-minutes: */2 * * * * (UTC) → api-lint, missed slots: skip\n"),
        "{stdout}"
    );
}

#[test]
fn chain_cycles_and_unknown_targets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chains.toml");
    std::fs::write(
        &path,
        r#"
[providers.codefresh.main]
api_key = "a-literal-codefresh-key-for-a-test"

[targets.a]
provider = "codefresh"
account = "main"
pipeline = "p/a"

[targets.b]
provider = "codefresh"
account = "main"
pipeline = "p/b"

[targets.c]
provider = "codefresh"
account = "main"
pipeline = "p/c"
debounce = "0s"

[chains.a-to-b]
when.targets = ["a"]
then.targets = ["b"]

[chains.b-to-a]
when.targets = ["b"]
then.targets = ["a"]

[chains.to-nowhere]
when.all_of = ["a", "ghost"]
then.targets = ["phantom"]

[chains.by-header]
when.targets = ["c"]
when.all = [{ header = "X-Event", equals = "push" }]
then.targets = ["b"]
then.parameters = { missing = "{{ upstream.sha }}" }
"#,
    )
    .unwrap();
    let out = cigw().args(["check-config", "--config"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let errors: Vec<&str> = stdout.lines().filter(|l| l.starts_with("error: ")).collect();
    let has = |text: &str| errors.iter().any(|l| l.contains(text));
    assert!(has("chains form a cycle: a -> b -> a (through chains a-to-b, b-to-a)"), "{stdout}");
    assert!(has("chains.to-nowhere.when.all_of[1]: unknown target `ghost`"), "{stdout}");
    assert!(has("chains.to-nowhere.then.targets[0]: unknown target `phantom`"), "{stdout}");
    assert!(has("chains.by-header.when: chain conditions test the upstream run with `pointer`"), "{stdout}");
    assert!(has("targets.c.debounce: must be longer than 0s"), "{stdout}");
    assert!(!stdout.contains("a-literal-codefresh-key-for-a-test"), "{stdout}");
    // The sandbox's own chains pass.
    let ok = cigw().args(["check-config", "--config", &repo_file("config/sandbox.toml")]).output().unwrap();
    let ok_out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{ok_out}");
    assert!(ok_out.contains("  api-build-to-web-e2e: any of api-build succeeded → web-e2e"), "{ok_out}");
    assert!(
        ok_out.contains(
            "  lint-and-e2e-to-legacy: all of api-lint, web-e2e (join by sha, expires after 30m) succeeded → legacy-pro"
        ),
        "{ok_out}"
    );
}

#[test]
fn hooks_are_listed_and_bad_ones_refused_with_their_key_paths() {
    let out = cigw().args(["check-config", "--config", &repo_file("config/sandbox.toml")]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("  github: POST /hooks/github, scheme github, 1 secret(s), rules push-to-branch → api-build\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("sandbox-github-secret"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hooks.toml");
    let sandbox = std::fs::read_to_string(repo_file("config/sandbox.toml")).unwrap();
    std::fs::write(
        &path,
        format!(
            r#"{sandbox}
[hooks.open]
scheme = "none"
[[hooks.open.rules]]
targets = ["api-build"]

[hooks.broken]
scheme = "gitlab"
secrets = ["env:CIGW_SURELY_UNSET_GITLAB_SECRET"]
[[hooks.broken.rules]]
name = "mr"
all = [{{ pointer = "/object_attributes/action", equals = "open" }}]
targets = ["api-build", "no-such-target"]
ref = {{ branch = "{{{{ body.object_attributes.source_branch " }}
"#
        ),
    )
    .unwrap();
    let out = cigw().args(["check-config", "--config"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for line in [
        "warning: hooks.open.scheme: `none`",
        "error: hooks.broken.secrets[0]: environment variable `CIGW_SURELY_UNSET_GITLAB_SECRET` is not set",
        "error: hooks.broken.rules[0].ref.branch: ",
    ] {
        assert!(stdout.lines().any(|l| l.starts_with(line)), "{line}: {stdout}");
    }
    // With the secret and the template fixed, the unknown target is reported at its path.
    let fixed = std::fs::read_to_string(&path)
        .unwrap()
        .replace("env:CIGW_SURELY_UNSET_GITLAB_SECRET", "a-literal")
        .replace("source_branch \"", "source_branch }}\"");
    std::fs::write(&path, fixed).unwrap();
    let out = cigw().args(["check-config", "--config"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("error: hooks.broken.rules[0].targets[1]: unknown target `no-such-target`")),
        "{stdout}"
    );
}
