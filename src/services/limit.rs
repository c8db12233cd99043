//! Counts failed sign-ins per email in a sliding window, so guessing passwords is slow. The
//! attempts are rows, so every server on the database counts the same ones.

use chrono::{TimeDelta, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, Set,
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
    /// Counts an attempt against `email` before its password is checked, so attempts at the
    /// same moment (on any server) count each other: RATE_LIMITED, and not counted, when the
    /// window already holds the limit. The attempt stays counted unless it succeeds
    /// ([`Self::reset`]). Attempts that have left the window are deleted here, every email's at
    /// once: emails tried once and never again would otherwise stay forever.
    pub async fn begin_attempt(&self, db: &impl ConnectionTrait, email: &str) -> AppResult<()> {
        let now = Utc::now();
        sign_in_failure::Entity::delete_many()
            .filter(sign_in_failure::Column::FailedAt.lte(now - self.window))
            .exec(db)
            .await?;
        let attempt = sign_in_failure::ActiveModel {
            id: Set(Uuid::now_v7()),
            email: Set(email.to_owned()),
            failed_at: Set(now),
        }
        .insert(db)
        .await?;
        let in_window = sign_in_failure::Entity::find()
            .filter(sign_in_failure::Column::Email.eq(email))
            .filter(sign_in_failure::Column::FailedAt.gt(now - self.window))
            .count(db)
            .await?;
        if in_window > self.max_failures {
            sign_in_failure::Entity::delete_by_id(attempt.id)
                .exec(db)
                .await?;
            // The window frees a place when its oldest failure leaves it.
            let oldest = sign_in_failure::Entity::find()
                .filter(sign_in_failure::Column::Email.eq(email))
                .filter(sign_in_failure::Column::FailedAt.gt(now - self.window))
                .order_by_asc(sign_in_failure::Column::FailedAt)
                .one(db)
                .await?
                .map_or(now, |failure| failure.failed_at);
            let wait = (oldest + self.window - now).to_std().unwrap_or_default();
            return Err(AppError::rate_limited(wait));
        }
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
