//! The configured accounts and targets, built through the adapters' factories (schedules and
//! hooks, chains and notifications are checked against them here too).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{Problems, Settings};
use crate::provider::{ProviderAccount, ProviderFactory, ProviderKind};
use crate::{CiTarget, TargetSpec};

/// One configured target with its adapter.
#[derive(Debug, Clone)]
pub struct ConfiguredTarget {
    /// The provider-independent declaration.
    pub spec: TargetSpec,
    /// The adapter value driving it.
    pub target: Arc<dyn CiTarget>,
}

/// Every account and target the configuration declares.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Accounts by (kind, name).
    pub accounts: BTreeMap<(ProviderKind, String), Arc<dyn ProviderAccount>>,
    /// Targets by name.
    pub targets: BTreeMap<String, ConfiguredTarget>,
}

impl Catalog {
    /// Build accounts and targets, recording every problem (with its key path) instead of
    /// stopping at the first.
    pub fn build(settings: &Settings, factories: &[Arc<dyn ProviderFactory>], problems: &mut Problems) -> Catalog {
        let mut catalog = Catalog::default();
        for (kind, accounts) in &settings.providers {
            let Some(factory) = factories.iter().find(|f| f.kind() == *kind) else {
                problems.error(format!("providers.{kind}"), "this build of cigw has no adapter for this provider");
                continue;
            };
            for (name, table) in accounts {
                let path = format!("providers.{kind}.{name}");
                if let Some(account) = factory.account(name, &path, table, problems) {
                    catalog.accounts.insert((*kind, name.clone()), account);
                }
            }
        }
        for (name, target_settings) in &settings.targets {
            let path = format!("targets.{name}");
            let spec = target_settings.to_spec(name, &path, problems);
            let Some(account) = catalog.accounts.get(&(spec.provider, spec.account.clone())) else {
                let configured = settings_accounts(settings, spec.provider).any(|n| n == spec.account);
                if !configured {
                    let known: Vec<&str> = settings_accounts(settings, spec.provider).collect();
                    let hint = if known.is_empty() {
                        format!("no [providers.{}.*] account is configured", spec.provider)
                    } else {
                        format!("configured {} accounts: {}", spec.provider, known.join(", "))
                    };
                    problems.error(
                        format!("{path}.account"),
                        format!("no account `{}` under [providers.{}] ({hint})", spec.account, spec.provider),
                    );
                }
                // The account's own problems are reported at its path; still check the target's keys.
                if let Some(factory) = factories.iter().find(|f| f.kind() == spec.provider) {
                    factory.check_target(&spec, &path, &target_settings.provider_fields, problems);
                }
                continue;
            };
            if let Some(target) = account.target(&spec, &path, &target_settings.provider_fields, problems) {
                catalog.targets.insert(name.clone(), ConfiguredTarget { spec, target });
            }
        }
        for schedule in settings.schedules.values() {
            schedule.check(&catalog, problems);
        }
        for chain in settings.chains.values() {
            chain.check(&catalog, problems);
        }
        crate::chain::check_cycles(&settings.chains, problems);
        for hook in settings.hooks.values() {
            hook.check(&catalog, problems);
        }
        for notification in settings.notifications.values() {
            notification.check(&catalog, problems);
        }
        catalog
    }
}

/// The account names configured for `kind`, whether or not they built.
fn settings_accounts(settings: &Settings, kind: ProviderKind) -> impl Iterator<Item = &str> {
    settings.providers.get(&kind).into_iter().flat_map(|m| m.keys().map(String::as_str))
}
