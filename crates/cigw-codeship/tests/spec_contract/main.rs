//! Every fixture of the official Go client (and the live capture) parses with the adapter's
//! types (and, for the endpoints the adapter does not read, the full shapes in `models.rs` here),
//! and no field of them is silently ignored: a field the types do not know would be a field the
//! adapter cannot see.

mod models;

use cigw_codeship::ProjectType;
use cigw_codeship::models::{AuthErrorBody, AuthResponse, Build, BuildEnvelope, BuildList, BuildStatus, ErrorsBody};
use models::{NewProject, PipelineList, ProjectEnvelope, ProjectList, ServiceList, StepList};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/resources/{name}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Parse `name` as `T`, failing on any field `T` would ignore.
fn parse<T: DeserializeOwned>(name: &str) -> T {
    let text = read(name).replace("%s", "build");
    let mut ignored = Vec::new();
    let mut de = serde_json::Deserializer::from_str(&text);
    let value: T =
        serde_ignored::deserialize(&mut de, |p| ignored.push(p.to_string())).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(ignored.is_empty(), "{name}: fields the adapter's types ignore: {ignored:?}");
    value
}

#[test]
fn every_fixture_is_covered_by_a_test() {
    let mut found = Vec::new();
    let root = format!("{}/tests/resources", env!("CARGO_MANIFEST_DIR"));
    let mut stack = vec![std::path::PathBuf::from(&root)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "json") {
                found.push(p.strip_prefix(&root).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    let covered = [
        "codeship-go/auth/success.json",
        "codeship-go/auth/two_factor.json",
        "codeship-go/auth/unauthorized.json",
        "codeship-go/builds/get.json",
        "codeship-go/builds/list.json",
        "codeship-go/builds/pipelines.json",
        "codeship-go/builds/services.json",
        "codeship-go/builds/steps.json",
        "codeship-go/errors.json",
        "codeship-go/not_found.json",
        "codeship-go/projects/create_basic.json",
        "codeship-go/projects/create_basic_request.json",
        "codeship-go/projects/create_pro.json",
        "codeship-go/projects/create_pro_request.json",
        "codeship-go/projects/get.json",
        "codeship-go/projects/list.json",
        "codeship-go/projects/update.json",
        "third-party/simonireilly-codeship-monitor/valid_build.json",
    ];
    assert_eq!(found, covered);
}

#[test]
fn auth_answers() {
    let ok: AuthResponse = parse("codeship-go/auth/success.json");
    assert_eq!(ok.access_token.as_ref().unwrap().expose_secret(), "token");
    assert_eq!(ok.expires_at, Some(9_999_999_999));
    assert_eq!(ok.organizations[0].name, "codeship");
    assert_eq!(ok.organizations[0].scopes.len(), 4);
    assert!(ok.error.is_none());
    let two_factor: AuthResponse = parse("codeship-go/auth/two_factor.json");
    assert!(two_factor.access_token.is_none());
    assert!(two_factor.error.unwrap().contains("two-factor authentication"));
    let refused: AuthErrorBody = parse("codeship-go/auth/unauthorized.json");
    assert_eq!(refused.error, "Unauthorized");
}

#[test]
fn builds() {
    let one: BuildEnvelope = parse("codeship-go/builds/get.json");
    assert_eq!(one.build.status, BuildStatus::Success);
    assert_eq!(one.build.organization_uuid.as_deref(), Some("28123g10-e33d-5533-b57f-111ef8d7b14f"));
    assert!(one.build.links.services.is_some() && one.build.links.pipelines.is_none());
    assert_eq!(one.build.branch_name().as_deref(), Some("test-branch"));
    let list: BuildList = parse("codeship-go/builds/list.json");
    assert_eq!((list.builds.len(), list.total, list.per_page, list.page), (2, Some(2), Some(30), Some(1)));
    let live: Build = parse("third-party/simonireilly-codeship-monitor/valid_build.json");
    assert!(live.allocated_at.is_none() && live.pr_number.is_none());
    assert!(live.links.pipelines.is_some(), "a Basic build");
    assert_eq!(live.branch_name().as_deref(), Some("issue/62_orm_adapter_pattern"));
}

#[test]
fn build_details() {
    let pipelines: PipelineList = parse("codeship-go/builds/pipelines.json");
    assert_eq!(pipelines.pipelines[0].status, BuildStatus::Success);
    assert!(pipelines.pipelines[0].metrics.as_ref().unwrap().contains_key("ami_id"));
    let services: ServiceList = parse("codeship-go/builds/services.json");
    assert_eq!(services.services[0].status, "finished");
    assert!(services.services[0].pulling_at.is_none());
    let steps: StepList = parse("codeship-go/builds/steps.json");
    assert_eq!(steps.steps[0].command.as_deref(), Some("./run-tests.sh"));
    assert!(steps.steps[0].steps.is_empty());
}

#[test]
fn errors() {
    let bad: ErrorsBody = parse("codeship-go/errors.json");
    assert_eq!(bad.errors, ["build"]);
    let missing: ErrorsBody = parse("codeship-go/not_found.json");
    assert_eq!(missing.errors, ["build not found"]);
}

#[test]
fn projects() {
    let get: ProjectEnvelope = parse("codeship-go/projects/get.json");
    assert_eq!(get.project.project_type, ProjectType::Pro);
    assert!(!format!("{get:?}").contains("aeskey"), "the AES key never reaches Debug");
    let list: ProjectList = parse("codeship-go/projects/list.json");
    let types: Vec<ProjectType> = list.projects.iter().map(|p| p.project_type).collect();
    assert_eq!(types, [ProjectType::Pro, ProjectType::Basic]);
    for (name, expected) in [
        ("codeship-go/projects/create_basic.json", ProjectType::Basic),
        ("codeship-go/projects/create_pro.json", ProjectType::Pro),
        ("codeship-go/projects/update.json", ProjectType::Pro),
    ] {
        let p: ProjectEnvelope = parse(name);
        assert_eq!(p.project.project_type, expected, "{name}");
    }
    for (name, expected) in [
        ("codeship-go/projects/create_basic_request.json", ProjectType::Basic),
        ("codeship-go/projects/create_pro_request.json", ProjectType::Pro),
    ] {
        let p: NewProject = parse(name);
        assert_eq!(p.project_type, expected, "{name}");
        assert_eq!(p.test_pipelines[0].commands, ["./run-tests.sh"]);
    }
}
