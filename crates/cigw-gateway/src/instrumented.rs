//! The instrumentation of provider calls: every configured target is wrapped so that its calls
//! are counted, timed and traced at this one place.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use cigw_core::catalog::{Catalog, ConfiguredTarget};
use cigw_core::{
    Capabilities, CiTarget, Decision, GitRef, ProviderKind, ProviderRunRef, RecentQuery, RerunOptions, RunCandidate,
    RunStatus, TriggerOutcome, TriggerSpec,
};
use tracing::Instrument;

use crate::metrics::{record_provider_call, within_provider_call};

/// A target whose provider calls are counted, timed and traced (span `provider_call` with
/// provider, target, operation, and a run's provider id and attempt; the engine's span around
/// it names the run). Wraps every configured target, so the engine and the API are measured at
/// this one place.
#[derive(Debug)]
pub struct InstrumentedTarget {
    name: String,
    inner: Arc<dyn CiTarget>,
}

impl InstrumentedTarget {
    /// Wrap `inner`, configured as target `name`.
    pub fn new(name: impl Into<String>, inner: Arc<dyn CiTarget>) -> Self {
        Self { name: name.into(), inner }
    }

    /// The catalog with every target wrapped.
    pub fn wrap_catalog(mut catalog: Catalog) -> Catalog {
        for (name, configured) in catalog.targets.iter_mut() {
            let wrapped: Arc<dyn CiTarget> = Arc::new(Self::new(name.clone(), configured.target.clone()));
            *configured = ConfiguredTarget { spec: configured.spec.clone(), target: wrapped };
        }
        catalog
    }

    async fn observe<T>(
        &self,
        operation: &'static str,
        span: tracing::Span,
        call: impl Future<Output = cigw_core::Result<T>>,
    ) -> cigw_core::Result<T> {
        let provider = self.inner.kind().as_str();
        let started = Instant::now();
        let result = within_provider_call(provider, operation, call).instrument(span.clone()).await;
        let elapsed = started.elapsed();
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        record_provider_call(provider, operation, outcome, elapsed);
        let elapsed_ms = elapsed.as_millis() as u64;
        span.in_scope(|| match &result {
            Ok(_) => tracing::debug!(elapsed_ms, "provider call succeeded"),
            Err(e) => tracing::debug!(elapsed_ms, error = %e, outcome, "provider call failed"),
        });
        result
    }

    fn span_for_run(&self, operation: &'static str, run: &ProviderRunRef) -> tracing::Span {
        tracing::info_span!(
            "provider_call",
            provider = self.inner.kind().as_str(),
            target = %self.name,
            operation,
            provider_id = %run.id,
            attempt = run.attempt,
        )
    }
}

#[async_trait]
impl CiTarget for InstrumentedTarget {
    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }

    fn locator(&self) -> String {
        self.inner.locator()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn check_ref(&self, git_ref: &GitRef) -> Result<(), String> {
        self.inner.check_ref(git_ref)
    }

    async fn trigger(&self, spec: &TriggerSpec) -> cigw_core::Result<TriggerOutcome> {
        let span = tracing::info_span!(
            "provider_call",
            provider = self.inner.kind().as_str(),
            target = %self.name,
            operation = "trigger",
        );
        self.observe("trigger", span, self.inner.trigger(spec)).await
    }

    async fn status(&self, run: &ProviderRunRef) -> cigw_core::Result<RunStatus> {
        self.observe("status", self.span_for_run("status", run), self.inner.status(run)).await
    }

    async fn cancel(&self, run: &ProviderRunRef) -> cigw_core::Result<()> {
        self.observe("cancel", self.span_for_run("cancel", run), self.inner.cancel(run)).await
    }

    async fn rerun(&self, run: &ProviderRunRef, options: RerunOptions) -> cigw_core::Result<TriggerOutcome> {
        self.observe("rerun", self.span_for_run("rerun", run), self.inner.rerun(run, options)).await
    }

    async fn approve(&self, run: &ProviderRunRef, decision: Decision) -> cigw_core::Result<()> {
        self.observe("approve", self.span_for_run("approve", run), self.inner.approve(run, decision)).await
    }

    async fn find_recent(&self, query: &RecentQuery) -> cigw_core::Result<Vec<RunCandidate>> {
        let span = tracing::info_span!(
            "provider_call",
            provider = self.inner.kind().as_str(),
            target = %self.name,
            operation = "find_recent",
        );
        self.observe("find_recent", span, self.inner.find_recent(query)).await
    }
}
