//! The HTTP client of one CircleCI account: the shared transport (rate limiter, concurrency cap,
//! retries) with CircleCI's token and its `next_page_token` pagination, shared by every target
//! of the account.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cigw_core::shared_budget::{BudgetKey, SharedBudget};
use cigw_core::transport::{Answer, Credential, Pacing, Request, Transport};
use cigw_core::{CallKind, ProviderKind, Result};
use reqwest::header::HeaderName;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;

use crate::config::{AccountConfig, AuthScheme};
use crate::error::parse_error;
use crate::models::Page;

/// The provider's name in messages.
pub const PROVIDER: &str = "CircleCI";

/// One account's HTTP client. `Debug` never shows the token.
#[derive(Debug)]
pub struct Client {
    transport: Transport,
    credential: Credential,
    config: AccountConfig,
}

impl Client {
    /// A client for `config`.
    pub fn new(config: AccountConfig) -> Result<Self> {
        let transport = Transport::new(PROVIDER, &config.transport, Pacing::Bursty)?;
        let credential = match config.auth {
            AuthScheme::CircleToken => Credential::header(HeaderName::from_static("circle-token"), &config.token)?,
            AuthScheme::Bearer => Credential::bearer(&config.token)?,
        };
        Ok(Self { transport, credential, config })
    }

    /// The resolved configuration.
    pub fn config(&self) -> &AccountConfig {
        &self.config
    }

    /// Draw the rate limit from `budget`, shared by every replica using this token on this server
    /// (see [`Transport::share_budget`]).
    pub fn share_budget(&self, budget: Arc<dyn SharedBudget>, account: &str) {
        let key = BudgetKey::of_credential(
            ProviderKind::Circleci,
            &self.config.transport.base_url,
            self.config.token.expose_secret(),
        );
        self.transport.share_budget(budget, key, account);
    }

    /// Send `request` with the account's token, retried by the rule for `kind`.
    pub async fn send(&self, kind: CallKind, operation: &str, request: Request) -> Result<Answer> {
        let request = request.credential(&self.credential);
        self.transport.send(kind, operation, &request, parse_error).await
    }

    /// A GET decoded as `T`.
    pub async fn get<T: DeserializeOwned>(&self, operation: &str, request: Request) -> Result<(T, Answer)> {
        let answer = self.send(CallKind::Idempotent, operation, request).await?;
        Ok((answer.json(operation)?, answer))
    }

    /// Every item of a paginated list, following `next_page_token` through `page-token`, up to
    /// the account's page cap. `keep_going` sees each page and can stop early. Returns the items
    /// and the `Date` of the last page.
    pub async fn get_all<T: DeserializeOwned>(
        &self,
        operation: &str,
        request: Request,
        mut keep_going: impl FnMut(&[T]) -> bool,
    ) -> Result<(Vec<T>, Option<DateTime<Utc>>)> {
        let max_pages = self.config.max_pages.max(1);
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        let mut date = None;
        for _ in 0..max_pages {
            let mut page_request = request.clone();
            if let Some(t) = &token {
                page_request = page_request.query("page-token", t.as_str());
            }
            let (page, answer): (Page<T>, Answer) = self.get(operation, page_request).await?;
            date = answer.date;
            let go_on = keep_going(&page.items);
            items.extend(page.items);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) if go_on => token = Some(t),
                _ => return Ok((items, date)),
            }
        }
        tracing::warn!(operation, pages = max_pages, "stopped following pages at the page cap");
        Ok((items, date))
    }
}
