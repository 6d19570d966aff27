//! The "Adding a provider" list of docs/architecture.md is complete: every source file, manifest
//! and configuration file outside an existing provider's own crate and simulator that names that
//! provider is listed there, and every file the list names exists. Codeship stands for "a
//! provider": a new place that must know the providers names it too.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The provider's own places, which a new provider adds rather than touches.
const OWN: [&str; 2] = ["crates/cigw-codeship/", "crates/cigw-sim/src/codeship/"];

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Source files, manifests and configuration: where code, not prose, names a provider.
fn scanned_files(root: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    for krate in fs::read_dir(root.join("crates")).unwrap() {
        let krate = krate.unwrap().path();
        paths.push(krate.join("Cargo.toml"));
        files_under(&krate.join("src"), &mut paths);
    }
    files_under(&root.join("config"), &mut paths);
    paths.push(root.join("Cargo.toml"));
    let mut names: Vec<String> = paths
        .iter()
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"))
        .filter(|p| p.ends_with(".rs") || p.ends_with(".toml"))
        .filter(|p| !OWN.iter().any(|own| p.starts_with(own)))
        .collect();
    names.sort();
    names
}

/// Whether a line outside comments names the provider.
fn names_provider(path: &str, text: &str) -> bool {
    let comment = if path.ends_with(".toml") { "#" } else { "//" };
    text.lines().any(|line| !line.trim_start().starts_with(comment) && line.to_lowercase().contains("codeship"))
}

/// The backticked paths of the "Adding a provider" section.
fn listed_paths(doc: &str) -> BTreeSet<String> {
    let section =
        doc.split("\n## Adding a provider").nth(1).expect("docs/architecture.md has an 'Adding a provider' section");
    let section = section.split("\n## ").next().unwrap();
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| (s.starts_with("crates/") || s.starts_with("config/")) && !s.contains('<') && !s.contains('*'))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_file_that_names_a_provider_is_listed_in_the_architecture_doc() {
    let root = root();
    let listed = listed_paths(&fs::read_to_string(root.join("docs/architecture.md")).unwrap());
    let touching: Vec<String> = scanned_files(&root)
        .into_iter()
        .filter(|p| names_provider(p, &fs::read_to_string(root.join(p)).unwrap_or_default()))
        .collect();
    assert!(touching.iter().any(|p| p == "crates/cigw-core/src/provider.rs"), "the scan sees the provider kinds");
    let missing: Vec<&String> = touching.iter().filter(|p| !listed.contains(*p)).collect();
    assert!(
        missing.is_empty(),
        "these files name a provider but docs/architecture.md ('Adding a provider') does not list them: {missing:?}"
    );
}

#[test]
fn every_file_the_architecture_doc_lists_exists() {
    let root = root();
    let listed = listed_paths(&fs::read_to_string(root.join("docs/architecture.md")).unwrap());
    assert!(listed.len() >= 10, "the list was read: {listed:?}");
    let gone: Vec<&String> = listed.iter().filter(|p| !root.join(p.trim_end_matches('/')).exists()).collect();
    assert!(gone.is_empty(), "docs/architecture.md lists paths that do not exist: {gone:?}");
}
