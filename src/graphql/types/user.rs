use async_graphql::{Enum, SimpleObject, ID};
use chrono::{DateTime, Utc};

use super::to_id;
use crate::entity::user;
use crate::services::credits::UsageSummary;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum Plan {
    Free,
    Pro,
}

impl From<user::Plan> for Plan {
    fn from(plan: user::Plan) -> Self {
        match plan {
            user::Plan::Free => Self::Free,
            user::Plan::Pro => Self::Pro,
        }
    }
}

#[derive(SimpleObject)]
pub struct User {
    pub id: ID,
    pub email: Option<String>,
    pub plan: Plan,
    pub created_at: DateTime<Utc>,
}

impl From<user::Model> for User {
    fn from(model: user::Model) -> Self {
        Self {
            id: to_id(model.id),
            email: model.email,
            plan: model.plan.into(),
            created_at: model.created_at,
        }
    }
}

/// Credits of the current 30-day window.
#[derive(SimpleObject)]
pub struct Usage {
    pub plan: Plan,
    /// Credits per window.
    pub limit: i32,
    pub consumed: i32,
    pub remaining: i32,
    /// When the window renews.
    pub resets_at: DateTime<Utc>,
    /// Estimated model cost (USD) of the viewer's runs in this window.
    pub spent_usd: f64,
    /// What the runs may spend per window (`USER_MAX_SPEND_USD_PER_WINDOW`); null: no cap.
    pub spend_cap_usd: Option<f64>,
}

impl From<UsageSummary> for Usage {
    fn from(summary: UsageSummary) -> Self {
        Self {
            plan: summary.plan.into(),
            limit: summary.limit,
            consumed: summary.consumed,
            remaining: summary.remaining,
            resets_at: summary.resets_at,
            spent_usd: summary.spent_usd,
            spend_cap_usd: summary.spend_cap_usd,
        }
    }
}

#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Bearer token for `Authorization: Bearer …` (HTTP) and `connection_init` (WS).
    pub token: String,
    pub user: User,
}
