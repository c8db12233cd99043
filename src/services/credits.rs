//! Credits: each plan gets an allowance per 30-day window; a generation costs one. Beside the
//! credits the window holds the estimated model cost of the user's runs, which
//! `USER_MAX_SPEND_USD_PER_WINDOW` may cap.

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QuerySelect, Set};
use uuid::Uuid;

use crate::entity::user::Plan;
use crate::entity::{project, usage};
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
    /// Estimated model cost of the user's runs in this window.
    pub spent_usd: f64,
    pub spend_cap_usd: Option<f64>,
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
        spent_usd: Set(0.0),
    }
    .insert(db)
    .await?;
    Ok(())
}

pub async fn usage_summary(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    plan: Plan,
    spend_cap_usd: Option<f64>,
) -> AppResult<UsageSummary> {
    let window = current_window(db, user_id).await?;
    let limit = allowance(plan);
    Ok(UsageSummary {
        plan,
        limit,
        consumed: window.consumed,
        remaining: (limit - window.consumed).max(0),
        resets_at: window.resets_at,
        spent_usd: window.spent_usd,
        spend_cap_usd,
    })
}

/// The user's usage as of now: an expired window counts as a fresh one.
struct Window {
    consumed: i32,
    spent_usd: f64,
    resets_at: DateTime<Utc>,
}

async fn current_window(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<Window> {
    let row = usage::Entity::find_by_id(user_id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound("usage"))?;
    let now = Utc::now();
    Ok(if row.window_start + window() <= now {
        Window {
            consumed: 0,
            spent_usd: 0.0,
            resets_at: now + window(),
        }
    } else {
        Window {
            consumed: row.consumed,
            spent_usd: row.spent_usd,
            resets_at: row.window_start + window(),
        }
    })
}

/// What the user's runs may still spend in this window under `cap_usd` (`None`: no cap);
/// SPEND_CAP_REACHED when nothing is left.
pub async fn spend_left(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    cap_usd: Option<f64>,
) -> AppResult<Option<f64>> {
    let Some(cap_usd) = cap_usd else {
        return Ok(None);
    };
    let window = current_window(db, user_id).await?;
    if window.spent_usd >= cap_usd {
        return Err(AppError::SpendCapReached {
            cap_usd,
            reset_at: window.resets_at,
        });
    }
    Ok(Some(cap_usd - window.spent_usd))
}

/// What the runs of the project's owner may still spend under `cap_usd`: `Some(0.0)` once the
/// cap is reached (or the project is gone), `None` without a cap.
pub async fn project_spend_left(
    db: &impl ConnectionTrait,
    project_id: Uuid,
    cap_usd: Option<f64>,
) -> AppResult<Option<f64>> {
    if cap_usd.is_none() {
        return Ok(None);
    }
    let Some(owner) = project_owner(db, project_id).await? else {
        return Ok(Some(0.0));
    };
    match spend_left(db, owner, cap_usd).await {
        Err(AppError::SpendCapReached { .. }) => Ok(Some(0.0)),
        left => left,
    }
}

/// Adds a run's estimated model cost to the window of the project's owner.
pub async fn add_project_spend(
    db: &impl ConnectionTrait,
    project_id: Uuid,
    cost_usd: f64,
) -> AppResult<()> {
    if !(cost_usd.is_finite() && cost_usd > 0.0) {
        return Ok(());
    }
    let Some(user_id) = project_owner(db, project_id).await? else {
        return Ok(());
    };
    let add = Query::update()
        .table(usage::Entity)
        .value(
            usage::Column::SpentUsd,
            Expr::col(usage::Column::SpentUsd).add(cost_usd),
        )
        .and_where(usage::Column::UserId.eq(user_id))
        .to_owned();
    db.execute(db.get_database_backend().build(&add)).await?;
    Ok(())
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
        .value(usage::Column::SpentUsd, 0.0)
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

async fn project_owner(db: &impl ConnectionTrait, project_id: Uuid) -> AppResult<Option<Uuid>> {
    Ok(project::Entity::find_by_id(project_id)
        .select_only()
        .column(project::Column::OwnerId)
        .into_tuple()
        .one(db)
        .await?)
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
