//! Credits: each plan gets an allowance per 30-day window; a generation costs one.

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, Set};
use uuid::Uuid;

use crate::entity::usage;
use crate::entity::user::Plan;
use crate::error::{AppError, AppResult};

pub const WINDOW_DAYS: i64 = 30;

pub fn allowance(plan: Plan) -> i32 {
    match plan {
        Plan::Free => 5,
        Plan::Pro => 100,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UsageSummary {
    pub plan: Plan,
    pub limit: i32,
    pub consumed: i32,
    pub remaining: i32,
    pub resets_at: DateTime<Utc>,
}

fn window() -> Duration {
    Duration::days(WINDOW_DAYS)
}

/// Creates the user's usage row (a fresh window). Part of creating a user.
pub async fn open_usage(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<()> {
    usage::ActiveModel {
        user_id: Set(user_id),
        consumed: Set(0),
        window_start: Set(Utc::now()),
    }
    .insert(db)
    .await?;
    Ok(())
}

pub async fn usage_summary(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    plan: Plan,
) -> AppResult<UsageSummary> {
    let row = usage::Entity::find_by_id(user_id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound("usage"))?;
    let now = Utc::now();
    let limit = allowance(plan);
    let (consumed, resets_at) = if row.window_start + window() <= now {
        (0, now + window())
    } else {
        (row.consumed, row.window_start + window())
    };
    Ok(UsageSummary {
        plan,
        limit,
        consumed,
        remaining: (limit - consumed).max(0),
        resets_at,
    })
}

/// Takes one credit, atomically: each step is one conditional `UPDATE`, so concurrent calls
/// can never take more than the allowance. Put it first in a transaction (on SQLite a write as
/// the first statement waits for the lock instead of failing).
pub async fn consume_credit(db: &impl ConnectionTrait, user_id: Uuid, plan: Plan) -> AppResult<()> {
    let now = Utc::now();
    // An expired window starts afresh with this credit taken.
    let restart = Query::update()
        .table(usage::Entity)
        .value(usage::Column::Consumed, 1)
        .value(usage::Column::WindowStart, now)
        .and_where(usage::Column::UserId.eq(user_id))
        .and_where(usage::Column::WindowStart.lte(now - window()))
        .to_owned();
    let backend = db.get_database_backend();
    if db.execute(backend.build(&restart)).await?.rows_affected() == 1 {
        return Ok(());
    }
    let take = Query::update()
        .table(usage::Entity)
        .value(
            usage::Column::Consumed,
            Expr::col(usage::Column::Consumed).add(1),
        )
        .and_where(usage::Column::UserId.eq(user_id))
        .and_where(usage::Column::Consumed.lt(allowance(plan)))
        .to_owned();
    if db.execute(backend.build(&take)).await?.rows_affected() == 1 {
        return Ok(());
    }
    let row = usage::Entity::find_by_id(user_id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound("usage"))?;
    Err(AppError::CreditsExhausted {
        reset_at: row.window_start + window(),
    })
}

/// Gives a credit back (a run that failed for a system reason).
pub async fn refund_credit(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<()> {
    let refund = Query::update()
        .table(usage::Entity)
        .value(
            usage::Column::Consumed,
            Expr::col(usage::Column::Consumed).sub(1),
        )
        .and_where(usage::Column::UserId.eq(user_id))
        .and_where(usage::Column::Consumed.gt(0))
        .to_owned();
    db.execute(db.get_database_backend().build(&refund)).await?;
    Ok(())
}
