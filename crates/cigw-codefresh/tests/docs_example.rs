//! The configuration example of docs/providers/codefresh.md loads without problems.

use std::sync::Arc;

use cigw_codefresh::CodefreshFactory;
use cigw_core::catalog::Catalog;
use cigw_core::config::{Problems, Settings};
use cigw_core::provider::ProviderFactory;

const DOC: &str = include_str!("../../../docs/providers/codefresh.md");

#[test]
fn the_documented_example_builds_a_target() {
    let start = DOC.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + DOC[start..].find("```").unwrap();
    // The key comes from the environment in the example; a literal stands in for it here.
    let text = DOC[start..end].replace("env:CODEFRESH_API_KEY", "65f0aaaabbbbccccddddeeee.example");
    let raw: serde_json::Value = serde_json::to_value(toml::from_str::<toml::Value>(&text).unwrap()).unwrap();
    let mut problems = Problems::default();
    let settings = Settings::from_raw(&raw, &mut problems);
    let factories: Vec<Arc<dyn ProviderFactory>> = vec![Arc::new(CodefreshFactory)];
    let catalog = Catalog::build(&settings, &factories, &mut problems);
    assert!(!problems.has_errors(), "{problems:?}");
    let target = &catalog.targets["api-build"].target;
    assert_eq!(target.locator(), "demo/api-build");
    assert!(target.capabilities().approve && !target.capabilities().tag);
}
