use async_graphql::{Enum, SimpleObject, ID};
use chrono::{DateTime, Utc};

use super::to_id;
use crate::entity::run_event;
use crate::events::EventKind;

/// What a run event reports; `payload`'s fields depend on it (see the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::events::EventKind")]
pub enum RunEventKind {
    RunQueued,
    RunStarted,
    SandboxReady,
    ModelTextDelta,
    ModelResponse,
    ToolCallStarted,
    ToolOutput,
    FileWritten,
    ToolCallFinished,
    MessageCreated,
    MessageDeleted,
    FragmentCreated,
    RunFinished,
}

/// A persisted step of a run, or a change outside one (a restored version). `seq` grows by
/// one per project: resume a subscription with `after: <last seq seen>` to get every missed
/// event exactly once.
#[derive(SimpleObject)]
pub struct RunEvent {
    pub seq: i64,
    /// `null` for an event outside a run.
    pub run_id: Option<ID>,
    pub kind: RunEventKind,
    pub payload: async_graphql::Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

impl From<run_event::Model> for RunEvent {
    fn from(model: run_event::Model) -> Self {
        // Rows are only written from `EventKind`s (a unit test checks they all read back); a
        // row from a newer version, say, is logged and shown as its run's lifecycle event.
        let kind = EventKind::parse(&model.kind).unwrap_or_else(|| {
            tracing::error!(kind = %model.kind, seq = model.seq, "unknown run event kind");
            EventKind::RunQueued
        });
        Self {
            seq: model.seq,
            run_id: model.run_id.map(to_id),
            kind: kind.into(),
            payload: async_graphql::Json(model.payload),
            created_at: model.created_at,
        }
    }
}
