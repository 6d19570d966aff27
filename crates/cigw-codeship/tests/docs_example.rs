//! The TOML example of `docs/providers/codeship.md` configures an account and a target cleanly.

use cigw_core::catalog::Catalog;
use cigw_core::config::{Problems, Settings};
use cigw_core::provider::ProviderFactory;
use std::sync::Arc;

#[test]
fn the_documented_example_passes_the_configuration_checks() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/providers/codeship.md")).unwrap();
    let example = doc.split("```toml\n").nth(1).and_then(|rest| rest.split("```").next()).expect("a toml block");
    // The example reads its secrets from the environment; the test cannot set variables, so it
    // swaps them for literals (which only add warnings).
    let example = example.replace("env:CODESHIP_EMAIL", "ci@example.com").replace("env:CODESHIP_PASSWORD", "pw");
    let raw = serde_json::to_value(toml::from_str::<toml::Value>(&example).unwrap()).unwrap();
    let mut problems = Problems::default();
    let settings = Settings::from_raw(&raw, &mut problems);
    let factories: Vec<Arc<dyn ProviderFactory>> = vec![Arc::new(cigw_codeship::CodeshipFactory)];
    let catalog = Catalog::build(&settings, &factories, &mut problems);
    assert!(!problems.has_errors(), "{:?}", problems.all());
    assert_eq!(catalog.targets["web-tests"].target.locator(), "0059df30-7701-0135-8810-6e5f001a2e3c");
}
