//! The configuration example of docs/providers/circleci.md loads without problems.

use std::sync::Arc;

use cigw_circleci::CircleciFactory;
use cigw_core::GitRef;
use cigw_core::catalog::Catalog;
use cigw_core::config::{Problems, Settings};
use cigw_core::provider::ProviderFactory;

const DOC: &str = include_str!("../../../docs/providers/circleci.md");

#[test]
fn the_documented_example_builds_its_targets() {
    let start = DOC.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + DOC[start..].find("```").unwrap();
    // The secrets come from the environment in the example; literals stand in for them here.
    let text = DOC[start..end]
        .replace("env:CIRCLECI_TOKEN", "example-token")
        .replace("env:CIRCLECI_WEBHOOK_SECRET", "example-secret");
    let raw: serde_json::Value = serde_json::to_value(toml::from_str::<toml::Value>(&text).unwrap()).unwrap();
    let mut problems = Problems::default();
    let settings = Settings::from_raw(&raw, &mut problems);
    let factories: Vec<Arc<dyn ProviderFactory>> = vec![Arc::new(CircleciFactory)];
    let catalog = Catalog::build(&settings, &factories, &mut problems);
    assert!(!problems.has_errors(), "{problems:?}");
    let api = &catalog.targets["api-build"].target;
    assert_eq!(api.locator(), "gh/acme/api");
    assert!(api.check_ref(&GitRef::branch("main").with_sha("abcdef1")).is_err());
    let mobile = &catalog.targets["mobile-e2e"].target;
    assert!(mobile.locator().starts_with("circleci/43G3lM5RtfFE7v5sa4nWAU/44n9wujWcTnVZ2b5S8Fnat"));
    assert!(mobile.check_ref(&GitRef::branch("main").with_sha("abcdef1")).is_ok());
}
