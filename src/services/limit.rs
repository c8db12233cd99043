//! Counts failed sign-ins per email in a sliding window, so guessing passwords is slow. The
//! failures are rows, so every server on the database counts the same ones.

use chrono::{TimeDelta, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set,
};
use uuid::Uuid;

use crate::entity::sign_in_failure;
use crate::error::{AppError, AppResult};

#[derive(Debug, Clone, Copy)]
pub struct SignInLimiter {
    max_failures: u64,
    window: TimeDelta,
}

impl Default for SignInLimiter {
    /// 10 failures per email in 15 minutes.
    fn default() -> Self {
        Self {
            max_failures: 10,
            window: TimeDelta::minutes(15),
        }
    }
}

impl SignInLimiter {
    /// RATE_LIMITED while `email` has used up its failures in the window.
    pub async fn check(&self, db: &impl ConnectionTrait, email: &str) -> AppResult<()> {
        let recent = sign_in_failure::Entity::find()
            .filter(sign_in_failure::Column::Email.eq(email))
            .filter(sign_in_failure::Column::FailedAt.gt(Utc::now() - self.window))
            .count(db)
            .await?;
        if recent >= self.max_failures {
            return Err(AppError::RateLimited);
        }
        Ok(())
    }

    /// Counts a failure against `email`. Failures that have left the window are deleted here,
    /// every email's at once: emails tried once and never again would otherwise stay forever.
    pub async fn record_failure(&self, db: &impl ConnectionTrait, email: &str) -> AppResult<()> {
        let now = Utc::now();
        sign_in_failure::Entity::delete_many()
            .filter(sign_in_failure::Column::FailedAt.lte(now - self.window))
            .exec(db)
            .await?;
        sign_in_failure::ActiveModel {
            id: Set(Uuid::now_v7()),
            email: Set(email.to_owned()),
            failed_at: Set(now),
        }
        .insert(db)
        .await?;
        Ok(())
    }

    /// Forgets `email`'s failures (it signed in).
    pub async fn reset(&self, db: &impl ConnectionTrait, email: &str) -> AppResult<()> {
        sign_in_failure::Entity::delete_many()
            .filter(sign_in_failure::Column::Email.eq(email))
            .exec(db)
            .await?;
        Ok(())
    }
}
