//! The provider request budgets the replicas share (`cigw_core::shared_budget`): one row per
//! credential in `rate_budgets`, booked by `cigw_book_budget` (migration 0010) on the server's
//! clock, so the replicas' clocks do not matter.

use std::time::Duration;

use async_trait::async_trait;
use cigw_core::error::BoxError;
use cigw_core::shared_budget::{Booked, BudgetKey, SharedBudget};
use sqlx::postgres::PgPool;

/// The shared budgets in the gateway's PostgreSQL database.
#[derive(Debug, Clone)]
pub(super) struct PgBudget {
    pool: PgPool,
}

impl PgBudget {
    pub(super) fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[async_trait]
impl SharedBudget for PgBudget {
    async fn book(&self, key: &BudgetKey, spacing: Duration, ahead: Duration, want: u32) -> Result<Booked, BoxError> {
        let (slots, backlog_us): (i32, i64) =
            sqlx::query_as("SELECT booked, backlog_us FROM cigw_book_budget($1, $2, $3, $4)")
                .bind(key.as_str())
                .bind(micros(spacing).max(1))
                .bind(micros(ahead))
                .bind(i32::try_from(want).unwrap_or(i32::MAX))
                .fetch_one(&self.pool)
                .await?;
        Ok(Booked {
            slots: u32::try_from(slots).unwrap_or(0),
            backlog: Duration::from_micros(u64::try_from(backlog_us).unwrap_or(0)),
        })
    }
}
