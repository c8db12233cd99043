use async_graphql::{ComplexObject, Context, Enum, SimpleObject, ID};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::{to_id, RunEvent};
use crate::entity::run::{self, RunStatus as Status};
use crate::entity::run_event;
use crate::error::AppError;
use crate::graphql::context::ContextExt;
use crate::graphql::error::GqlResult;
use crate::graphql::limits;
use crate::services::page::{page_size, MAX_PAGE};
use crate::services::run::list_transcript;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl From<Status> for RunStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Queued => Self::Queued,
            Status::Running => Self::Running,
            Status::Succeeded => Self::Succeeded,
            Status::Failed => Self::Failed,
            Status::Cancelled => Self::Cancelled,
        }
    }
}

/// One generation: a queued job the agent works through.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Run {
    pub id: ID,
    pub project_id: ID,
    pub status: RunStatus,
    pub attempts: i32,
    pub error: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Estimated from the model's price list; 0 for local and offline models.
    pub cost_usd: f64,
    /// The credit went back because the run failed for a system reason.
    pub credit_refunded: bool,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    #[graphql(skip)]
    pub uuid: Uuid,
}

impl From<run::Model> for Run {
    fn from(model: run::Model) -> Self {
        Self {
            id: to_id(model.id),
            uuid: model.id,
            project_id: to_id(model.project_id),
            status: model.status.into(),
            attempts: model.attempts,
            error: model.error,
            input_tokens: model.input_tokens,
            output_tokens: model.output_tokens,
            cost_usd: model.cost_usd,
            credit_refunded: model.credit_refunded,
            created_at: model.created_at,
            started_at: model.started_at,
            finished_at: model.finished_at,
        }
    }
}

const MAX_EVENTS: i32 = 1000;

#[ComplexObject]
impl Run {
    /// The run's model responses in order, `first` (at most 100) after the first `after` of
    /// them: the pages together are a `REPLAY_FILE` that re-runs the run deterministically with
    /// `MODEL_PROVIDER=replay`. A page shorter than `first` is the last.
    #[graphql(complexity = "limits::transcript_cost(first)")]
    async fn transcript(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        #[graphql(default = 0)] after: i32,
    ) -> async_graphql::Result<async_graphql::Json<Vec<serde_json::Value>>> {
        let first = page_size(first, MAX_PAGE).gql()?;
        let skip = u64::try_from(after)
            .map_err(|_| AppError::bad_input("`after` must not be negative"))
            .gql()?;
        let responses = list_transcript(&ctx.state().db, self.uuid, first, skip)
            .await
            .gql()?;
        Ok(async_graphql::Json(responses))
    }

    /// The run's stored events in order, after the sequence number `after`.
    #[graphql(complexity = "limits::list_cost(first, MAX_EVENTS, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<i64>,
        #[graphql(default = 500)] first: i32,
    ) -> async_graphql::Result<Vec<RunEvent>> {
        if !(0..=MAX_EVENTS).contains(&first) {
            return Err(AppError::bad_input(format!(
                "`first` must be between 0 and {MAX_EVENTS}"
            )))
            .gql();
        }
        let rows = run_event::Entity::find()
            .filter(run_event::Column::RunId.eq(self.uuid))
            .filter(run_event::Column::Seq.gt(after.unwrap_or(0)))
            .order_by_asc(run_event::Column::Seq)
            .limit(first as u64)
            .all(&ctx.state().db)
            .await
            .map_err(AppError::from)
            .gql()?;
        Ok(rows.into_iter().map(RunEvent::from).collect())
    }
}
