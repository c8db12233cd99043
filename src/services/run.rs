//! Runs seen from the API: read, cancel, retry. Executing them is `jobs` + `agent`.

use std::collections::HashMap;

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect,
    TransactionTrait,
};
use uuid::Uuid;

use super::page::page_per_group;
use super::Viewer;
use crate::entity::run::{self, RunStatus};
use crate::entity::{fragment, message, project, run_event};
use crate::error::{AppError, AppResult};
use crate::events::{record_event, BusMessage, EventBus, EventKind, RunEventData};

pub async fn find_run(
    db: &impl ConnectionTrait,
    viewer: Viewer,
    run_id: Uuid,
) -> AppResult<run::Model> {
    run::find_for_owner(viewer.user_id, run_id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound("run"))
}

/// Runs of the project that are queued or executing.
pub async fn active_run_ids(db: &impl ConnectionTrait, project_id: Uuid) -> AppResult<Vec<Uuid>> {
    Ok(run::Entity::find()
        .select_only()
        .column(run::Column::Id)
        .filter(run::Column::ProjectId.eq(project_id))
        .filter(run::Column::Status.is_in([RunStatus::Queued, RunStatus::Running]))
        .into_tuple()
        .all(db)
        .await?)
}

/// What one user's generations may take, beside the credits.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    /// Runs queued or running at once.
    pub max_active: u32,
    /// Estimated model cost per credit window; `None`: no cap.
    pub max_spend_usd_per_window: Option<f64>,
}

impl RunLimits {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            max_active: config.max_active_runs_per_user,
            max_spend_usd_per_window: config.user_max_spend_usd_per_window,
        }
    }
}

/// Refuses another generation while the user has `limits.max_active` runs queued or running,
/// or their spending cap is reached. Call it after the credit (whose row update serialises
/// one user's concurrent requests until the commit).
pub async fn ensure_run_slot(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    limits: RunLimits,
) -> AppResult<()> {
    super::credits::spend_left(db, user_id, limits.max_spend_usd_per_window).await?;
    let limit = limits.max_active;
    let active = run::Entity::find()
        .inner_join(project::Entity)
        .filter(project::Column::OwnerId.eq(user_id))
        .filter(run::Column::Status.is_in([RunStatus::Queued, RunStatus::Running]))
        .count(db)
        .await?;
    if active >= u64::from(limit) {
        return Err(AppError::TooManyRuns { limit });
    }
    Ok(())
}

/// Stops a queued or running run. A queued one ends at once; a running one is told (on every
/// server process) to stop, and ends CANCELLED. A cancelled run keeps its credit.
pub async fn cancel_run<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    bus: &dyn EventBus,
    viewer: Viewer,
    run_id: Uuid,
) -> AppResult<run::Model> {
    let txn = db.begin().await?;
    let found = find_run(&txn, viewer, run_id).await?;
    if found.status.is_finished() {
        return Err(AppError::Conflict(format!(
            "the run has already ended ({:?})",
            found.status
        )));
    }
    let ended = run::Entity::update_many()
        .col_expr(run::Column::Status, Expr::value(RunStatus::Cancelled))
        .col_expr(run::Column::FinishedAt, Expr::value(Utc::now()))
        .col_expr(run::Column::LeaseOwner, Expr::value(Option::<String>::None))
        .col_expr(
            run::Column::LeaseUntil,
            Expr::value(Option::<chrono::DateTime<Utc>>::None),
        )
        .filter(run::Column::Id.eq(run_id))
        .filter(run::Column::Status.is_in([RunStatus::Queued, RunStatus::Running]))
        .exec(&txn)
        .await?
        .rows_affected
        == 1;
    if ended {
        let spend = super::run_outcome::Spend {
            input_tokens: found.input_tokens,
            output_tokens: found.output_tokens,
            cost_usd: found.cost_usd,
        };
        super::run_outcome::record_finished(
            &txn,
            &found,
            RunStatus::Cancelled,
            None,
            spend,
            crate::events::StopReason::Cancelled,
        )
        .await?;
    }
    txn.commit().await?;
    bus.publish(BusMessage::CancelRun(run_id)).await;
    bus.publish(BusMessage::ProjectEvents(found.project_id))
        .await;
    find_run(db, viewer, run_id).await
}

/// Queues a FAILED run again with a fresh set of attempts, at the back of the queue. A retry is
/// a new generation and takes a credit like one: a failure that kept its credit (the step or
/// time limit) already spent it on work done, and one that was refunded got it back.
pub async fn retry_run<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    bus: &dyn EventBus,
    viewer: Viewer,
    run_id: Uuid,
    limits: RunLimits,
) -> AppResult<run::Model> {
    let txn = db.begin().await?;
    // The credit first: on SQLite a write as the first statement waits for the lock.
    super::credits::consume_credit(&txn, viewer.user_id, viewer.plan).await?;
    let found = find_run(&txn, viewer, run_id).await?;
    if found.status != RunStatus::Failed {
        return Err(AppError::Conflict(
            "only a failed run can be retried".to_owned(),
        ));
    }
    ensure_run_slot(&txn, viewer.user_id, limits).await?;
    if !active_run_ids(&txn, found.project_id).await?.is_empty() {
        return Err(AppError::Conflict(
            "a generation is already running for this project".to_owned(),
        ));
    }
    run::Entity::update_many()
        .col_expr(run::Column::Status, Expr::value(RunStatus::Queued))
        .col_expr(run::Column::Attempts, Expr::value(0))
        .col_expr(run::Column::Error, Expr::value(Option::<String>::None))
        .col_expr(
            run::Column::FinishedAt,
            Expr::value(Option::<chrono::DateTime<Utc>>::None),
        )
        .col_expr(run::Column::CreditRefunded, Expr::value(false))
        .col_expr(run::Column::QueuedAt, Expr::value(Utc::now()))
        .col_expr(
            run::Column::StartedAt,
            Expr::value(Option::<chrono::DateTime<Utc>>::None),
        )
        .filter(run::Column::Id.eq(run_id))
        .exec(&txn)
        .await?;
    // The failed attempt's ERROR reply goes: a run has one ASSISTANT message, its last outcome.
    // A reply holding a draft (the files the attempt wrote) stays, outside the run: written
    // work is only lost when the user discards it.
    let replies = message::Entity::find()
        .filter(message::Column::RunId.eq(run_id))
        .filter(message::Column::Role.eq(message::Role::Assistant))
        .all(&txn)
        .await?;
    let holding_drafts: Vec<Uuid> = fragment::Entity::find()
        .select_only()
        .column(fragment::Column::MessageId)
        .filter(fragment::Column::MessageId.is_in(replies.iter().map(|reply| reply.id)))
        .filter(fragment::Column::Draft.eq(true))
        .into_tuple()
        .all(&txn)
        .await?;
    for reply in replies {
        if holding_drafts.contains(&reply.id) {
            message::Entity::update_many()
                .col_expr(message::Column::RunId, Expr::value(Option::<Uuid>::None))
                .filter(message::Column::Id.eq(reply.id))
                .exec(&txn)
                .await?;
            continue;
        }
        message::Entity::delete_by_id(reply.id).exec(&txn).await?;
        record_event(
            &txn,
            found.project_id,
            run_id,
            RunEventData::MessageDeleted {
                message_id: reply.id,
            },
        )
        .await?;
    }
    record_event(
        &txn,
        found.project_id,
        run_id,
        RunEventData::RunQueued { retry: true },
    )
    .await?;
    txn.commit().await?;
    bus.publish(BusMessage::ProjectEvents(found.project_id))
        .await;
    bus.publish(BusMessage::RunQueued).await;
    find_run(db, viewer, run_id).await
}

/// Each run's model responses in order, `first` of them after skipping `skip`, in one
/// statement. The responses are only ever appended, so a position is a stable cursor. Callers
/// pass runs the viewer may see.
pub async fn list_transcripts(
    db: &impl ConnectionTrait,
    run_ids: &[Uuid],
    first: u64,
    skip: u64,
) -> AppResult<HashMap<Uuid, Vec<serde_json::Value>>> {
    let responses = run_event::Entity::find()
        .filter(run_event::Column::RunId.is_in(run_ids.iter().copied()))
        .filter(run_event::Column::Kind.eq(EventKind::ModelResponse.as_str()));
    let events = events_per_run(db, responses, skip, first).await?;
    Ok(events
        .into_iter()
        .map(|(run_id, rows)| (run_id, rows.into_iter().map(|row| row.payload).collect()))
        .collect())
}

/// Each run's stored events in order, `first` of them after the sequence number `after`, in
/// one statement. Callers pass runs the viewer may see.
pub async fn list_run_events(
    db: &impl ConnectionTrait,
    run_ids: &[Uuid],
    after: i64,
    first: u64,
) -> AppResult<HashMap<Uuid, Vec<run_event::Model>>> {
    let events = run_event::Entity::find()
        .filter(run_event::Column::RunId.is_in(run_ids.iter().copied()))
        .filter(run_event::Column::Seq.gt(after));
    events_per_run(db, events, 0, first).await
}

/// The events `select` finds, `take` of each run's after skipping `skip`, in `seq` order.
async fn events_per_run(
    db: &impl ConnectionTrait,
    select: sea_orm::Select<run_event::Entity>,
    skip: u64,
    take: u64,
) -> AppResult<HashMap<Uuid, Vec<run_event::Model>>> {
    let statement = page_per_group(
        db,
        select,
        run_event::Column::RunId,
        run_event::Column::Seq,
        skip,
        take,
    );
    let mut by_run: HashMap<Uuid, Vec<run_event::Model>> = HashMap::new();
    for row in run_event::Entity::find()
        .from_raw_sql(statement)
        .all(db)
        .await?
    {
        if let Some(run_id) = row.run_id {
            by_run.entry(run_id).or_default().push(row);
        }
    }
    Ok(by_run)
}

/// Sequence number of the run's RUN_FINISHED event, if it has one.
pub async fn finished_event_seq(db: &impl ConnectionTrait, run_id: Uuid) -> AppResult<Option<i64>> {
    use sea_orm::QueryOrder;
    Ok(run_event::Entity::find()
        .select_only()
        .column(run_event::Column::Seq)
        .filter(run_event::Column::RunId.eq(run_id))
        .filter(run_event::Column::Kind.eq(EventKind::RunFinished.as_str()))
        .order_by_desc(run_event::Column::Seq)
        .into_tuple()
        .one(db)
        .await?)
}
