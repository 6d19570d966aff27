//! The links in API answers, relative or under `server.public_url`.

use crate::state::AppState;

/// Links in answers: relative paths, or absolute under `server.public_url` when it is set.
#[derive(Debug, Clone)]
pub(crate) struct Links {
    base: String,
}

impl Links {
    pub(crate) fn new(state: &AppState) -> Self {
        let base = state.settings.server.public_url.as_deref().unwrap_or("").trim_end_matches('/').to_string();
        Self { base }
    }

    pub(crate) fn run(&self, id: &str) -> String {
        format!("{}/v1/runs/{id}", self.base)
    }

    pub(crate) fn run_events(&self, id: &str) -> String {
        format!("{}/v1/runs/{id}/events", self.base)
    }

    pub(crate) fn trigger(&self, id: &str) -> String {
        format!("{}/v1/triggers/{id}", self.base)
    }
}
