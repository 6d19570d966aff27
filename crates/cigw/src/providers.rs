//! The provider adapters compiled into this binary.

use std::sync::Arc;

use cigw_core::provider::ProviderFactory;

/// Every adapter's factory.
pub(crate) fn factories() -> Vec<Arc<dyn ProviderFactory>> {
    vec![
        Arc::new(cigw_circleci::CircleciFactory),
        Arc::new(cigw_codefresh::CodefreshFactory),
        Arc::new(cigw_codeship::CodeshipFactory),
    ]
}

#[cfg(test)]
mod tests {
    use cigw_core::ProviderKind;

    #[test]
    fn one_factory_per_provider_kind() {
        let kinds: Vec<ProviderKind> = super::factories().iter().map(|f| f.kind()).collect();
        assert_eq!(kinds, ProviderKind::ALL.to_vec());
    }
}
