//! The run queue. Runs are rows: a worker claims one atomically (`UPDATE … RETURNING`, with
//! `FOR UPDATE SKIP LOCKED` on PostgreSQL so processes never take the same run), keeps its lease
//! alive with heartbeats, and ends it with a conditional update — a run that was cancelled or
//! whose lease was lost meanwhile is left alone.

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait, QueryFilter,
    Statement, TransactionTrait,
};
use uuid::Uuid;

use super::JobError;
use crate::agent::runner::{RunOutput, RunUsage};
use crate::entity::run::{self, RunStatus};
use crate::events::{BusMessage, EventBus};
use crate::services::run_outcome::{self, Failure, Spend, Version};

/// Claims the run queued longest ago (a retry queues again at the back), or a running one whose lease expired (its worker died).
pub async fn claim_next_run(
    db: &DatabaseConnection,
    worker_id: &str,
    lease: Duration,
) -> Result<Option<run::Model>, JobError> {
    let now = Utc::now();
    let backend = db.get_database_backend();
    let lock = match backend {
        DatabaseBackend::Postgres => "FOR UPDATE SKIP LOCKED",
        _ => "",
    };
    let sql = format!(
        "UPDATE run SET status = 'RUNNING', lease_owner = $1, lease_until = $2, \
         attempts = attempts + 1, started_at = COALESCE(started_at, $3) \
         WHERE id = (SELECT id FROM run \
           WHERE status = 'QUEUED' OR (status = 'RUNNING' AND lease_until < $3) \
           ORDER BY queued_at, id LIMIT 1 {lock}) \
         RETURNING *"
    );
    let statement = Statement::from_sql_and_values(
        backend,
        sql,
        [worker_id.into(), (now + lease).into(), now.into()],
    );
    Ok(run::Entity::find().from_raw_sql(statement).one(db).await?)
}

/// Extends the lease. `false` when the run is no longer ours to work on (cancelled, or the
/// lease was lost and another worker took it).
pub async fn heartbeat(
    db: &DatabaseConnection,
    run_id: Uuid,
    worker_id: &str,
    lease: Duration,
) -> Result<bool, JobError> {
    let updated = run::Entity::update_many()
        .col_expr(run::Column::LeaseUntil, Expr::value(Utc::now() + lease))
        .filter(owned_running(run_id, worker_id))
        .exec(db)
        .await?;
    Ok(updated.rows_affected == 1)
}

fn owned_running(run_id: Uuid, worker_id: &str) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(run::Column::Id.eq(run_id))
        .add(run::Column::Status.eq(RunStatus::Running))
        .add(run::Column::LeaseOwner.eq(worker_id))
}

async fn end_run<C: ConnectionTrait>(
    txn: &C,
    run_id: Uuid,
    worker_id: &str,
    status: RunStatus,
    error: Option<String>,
    usage: RunUsage,
    refunded: bool,
) -> Result<bool, JobError> {
    let ended = run::Entity::update_many()
        .col_expr(run::Column::Status, Expr::value(status))
        .col_expr(run::Column::Error, Expr::value(error))
        .col_expr(run::Column::FinishedAt, Expr::value(Utc::now()))
        .col_expr(
            run::Column::LeaseUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            run::Column::InputTokens,
            Expr::value(usage.tokens.input_tokens as i64),
        )
        .col_expr(
            run::Column::OutputTokens,
            Expr::value(usage.tokens.output_tokens as i64),
        )
        .col_expr(run::Column::CostUsd, Expr::value(usage.cost_usd))
        .col_expr(run::Column::CreditRefunded, Expr::value(refunded))
        .filter(owned_running(run_id, worker_id))
        .exec(txn)
        .await?;
    Ok(ended.rows_affected == 1)
}

/// What the run spent, as its RUN_FINISHED event reports it.
fn spend(usage: RunUsage) -> Spend {
    Spend {
        input_tokens: usage.tokens.input_tokens as i64,
        output_tokens: usage.tokens.output_tokens as i64,
        cost_usd: usage.cost_usd,
    }
}

/// Ends the run SUCCEEDED and stores its outcome in one transaction. Does nothing (returns
/// `false`) if the run is no longer this worker's.
pub async fn succeed_run(
    db: &DatabaseConnection,
    bus: &dyn EventBus,
    run: &run::Model,
    worker_id: &str,
    output: RunOutput,
    usage: RunUsage,
) -> Result<bool, JobError> {
    let txn = db.begin().await?;
    if !end_run(
        &txn,
        run.id,
        worker_id,
        RunStatus::Succeeded,
        None,
        usage,
        false,
    )
    .await?
    {
        return Ok(false);
    }
    let version = Version {
        sandbox_url: output.sandbox_url,
        title: output.title,
        files: output.files,
    };
    let reason = output.stop_reason;
    run_outcome::record_success(&txn, run, output.reply, version, spend(usage), reason).await?;
    txn.commit().await?;
    bus.publish(BusMessage::ProjectEvents(run.project_id)).await;
    Ok(true)
}

/// Ends the run FAILED and stores its outcome (see `run_outcome::record_failure`).
pub async fn fail_run(
    db: &DatabaseConnection,
    bus: &dyn EventBus,
    run: &run::Model,
    worker_id: &str,
    failure: Failure,
    usage: RunUsage,
) -> Result<bool, JobError> {
    let txn = db.begin().await?;
    if !end_run(
        &txn,
        run.id,
        worker_id,
        RunStatus::Failed,
        Some(failure.error.clone()),
        usage,
        failure.system_failure,
    )
    .await?
    {
        return Ok(false);
    }
    run_outcome::record_failure(&txn, run, failure, spend(usage)).await?;
    txn.commit().await?;
    bus.publish(BusMessage::ProjectEvents(run.project_id)).await;
    Ok(true)
}

/// Keeps what a run cancelled by its user wrote as a draft version. Does nothing (returns
/// `false`) unless the run is CANCELLED and has no reply yet.
pub async fn keep_cancelled_draft(
    db: &DatabaseConnection,
    bus: &dyn EventBus,
    run: &run::Model,
    draft: Version,
) -> Result<bool, JobError> {
    let txn = db.begin().await?;
    let cancelled = run::Entity::find_by_id(run.id)
        .filter(run::Column::Status.eq(RunStatus::Cancelled))
        .one(&txn)
        .await?
        .is_some();
    let replied = crate::entity::message::Entity::find()
        .filter(crate::entity::message::Column::RunId.eq(run.id))
        .filter(crate::entity::message::Column::Role.eq(crate::entity::message::Role::Assistant))
        .one(&txn)
        .await?
        .is_some();
    if !cancelled || replied {
        return Ok(false);
    }
    run_outcome::record_cancelled_draft(&txn, run, draft).await?;
    txn.commit().await?;
    bus.publish(BusMessage::ProjectEvents(run.project_id)).await;
    Ok(true)
}

/// Stores the usage so far (a crash keeps what was spent).
pub async fn save_usage(
    db: &DatabaseConnection,
    run_id: Uuid,
    worker_id: &str,
    usage: RunUsage,
) -> Result<(), JobError> {
    run::Entity::update_many()
        .col_expr(
            run::Column::InputTokens,
            Expr::value(usage.tokens.input_tokens as i64),
        )
        .col_expr(
            run::Column::OutputTokens,
            Expr::value(usage.tokens.output_tokens as i64),
        )
        .col_expr(run::Column::CostUsd, Expr::value(usage.cost_usd))
        .filter(owned_running(run_id, worker_id))
        .exec(db)
        .await?;
    Ok(())
}
