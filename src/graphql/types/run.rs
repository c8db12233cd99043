use async_graphql::{ComplexObject, Context, Enum, SimpleObject, ID};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{to_id, RunEvent};
use crate::entity::run::{self, RunStatus as Status};
use crate::entity::run_event;
use crate::graphql::context::ContextExt;
use crate::graphql::error::GqlResult;
use crate::graphql::limits;
use crate::graphql::loaders::{
    EventsByRun, EventsPage, LoadedRun, TranscriptByRun, TranscriptPage, DEFAULT_EVENTS, MAX_EVENTS,
};

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
    /// Pages of its events and transcript loaded with it (see `load_message_pages`).
    #[graphql(skip)]
    pub preloaded_events: Option<(EventsPage, Vec<run_event::Model>)>,
    #[graphql(skip)]
    pub preloaded_transcript: Option<(TranscriptPage, Vec<serde_json::Value>)>,
}

impl From<LoadedRun> for Run {
    fn from(loaded: LoadedRun) -> Self {
        Self {
            preloaded_events: loaded.events,
            preloaded_transcript: loaded.transcript,
            ..loaded.run.into()
        }
    }
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
            preloaded_events: None,
            preloaded_transcript: None,
        }
    }
}

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
        let page = TranscriptPage::parse(first, after).gql()?;
        let responses = match &self.preloaded_transcript {
            Some((preloaded, responses)) if *preloaded == page => responses.clone(),
            _ => ctx
                .loader::<TranscriptByRun>()
                .load_one((self.uuid, page))
                .await?
                .unwrap_or_default(),
        };
        Ok(async_graphql::Json(responses))
    }

    /// The run's stored events in order, after the sequence number `after`.
    #[graphql(complexity = "limits::list_cost(first, MAX_EVENTS, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<i64>,
        #[graphql(default_with = "DEFAULT_EVENTS")] first: i32,
    ) -> async_graphql::Result<Vec<RunEvent>> {
        let page = EventsPage::parse(after, first).gql()?;
        let rows = match &self.preloaded_events {
            Some((preloaded, rows)) if *preloaded == page => rows.clone(),
            _ => ctx
                .loader::<EventsByRun>()
                .load_one((self.uuid, page))
                .await?
                .unwrap_or_default(),
        };
        Ok(rows.into_iter().map(RunEvent::from).collect())
    }
}
