//! Run events: every step of a run is a row with a per-project sequence number (so a client that
//! reconnects resumes exactly where it left off) and a notification on the bus (so subscribers
//! wake up without polling).

mod bus;
mod data;
mod emitter;
mod postgres;

use std::collections::VecDeque;
use std::time::Duration;

use chrono::Utc;
use futures_util::{stream, Stream};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, SqlErr, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;
use uuid::Uuid;

pub use bus::{wait_for_work, BusMessage, EventBus, InProcessBus};
pub use data::{OutputStream, RunEventData};
pub use emitter::{DeltaRelay, Emitter};
pub use postgres::PostgresBus;

use crate::entity::run_event;

/// What happened: stored as the row's `kind`; the payload is the `RunEventData` variant of the
/// same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
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

impl EventKind {
    /// Every kind, in the order a run goes through them.
    pub const ALL: [Self; 13] = [
        Self::RunQueued,
        Self::RunStarted,
        Self::SandboxReady,
        Self::ModelTextDelta,
        Self::ModelResponse,
        Self::ToolCallStarted,
        Self::ToolOutput,
        Self::FileWritten,
        Self::ToolCallFinished,
        Self::MessageCreated,
        Self::MessageDeleted,
        Self::FragmentCreated,
        Self::RunFinished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunQueued => "RUN_QUEUED",
            Self::RunStarted => "RUN_STARTED",
            Self::SandboxReady => "SANDBOX_READY",
            Self::ModelTextDelta => "MODEL_TEXT_DELTA",
            Self::ModelResponse => "MODEL_RESPONSE",
            Self::ToolCallStarted => "TOOL_CALL_STARTED",
            Self::ToolOutput => "TOOL_OUTPUT",
            Self::FileWritten => "FILE_WRITTEN",
            Self::ToolCallFinished => "TOOL_CALL_FINISHED",
            Self::MessageCreated => "MESSAGE_CREATED",
            Self::MessageDeleted => "MESSAGE_DELETED",
            Self::FragmentCreated => "FRAGMENT_CREATED",
            Self::RunFinished => "RUN_FINISHED",
        }
    }

    pub fn parse(kind: &str) -> Option<Self> {
        use serde::de::IntoDeserializer;
        let name: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            kind.into_deserializer();
        Self::deserialize(name).ok()
    }
}

/// Inserts an event with the next sequence number of its project. Call it inside the
/// transaction that made the change it reports, then `EventBus::publish` after the commit.
///
/// The number is `MAX(seq) + 1` under a unique index: a concurrent writer that took the same
/// number fails and retries (in a savepoint, so the caller's transaction survives), so numbers
/// are gapless and grow in commit order.
pub async fn record_event<C>(
    db: &C,
    project_id: Uuid,
    run_id: impl Into<Option<Uuid>>,
    data: RunEventData,
) -> Result<run_event::Model, DbErr>
where
    C: ConnectionTrait + TransactionTrait,
{
    let run_id = run_id.into();
    let kind = data.kind();
    let payload = data
        .to_payload()
        .map_err(|err| DbErr::Json(format!("a {} event: {err}", kind.as_str())))?;
    let mut attempt = 0;
    loop {
        let savepoint = db.begin().await?;
        match insert_event(&savepoint, project_id, run_id, kind, payload.clone()).await {
            Ok(event) => {
                savepoint.commit().await?;
                return Ok(event);
            }
            Err(err)
                if attempt < 50
                    && matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) =>
            {
                savepoint.rollback().await?;
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(attempt)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

async fn insert_event(
    db: &impl ConnectionTrait,
    project_id: Uuid,
    run_id: Option<Uuid>,
    kind: EventKind,
    payload: Value,
) -> Result<run_event::Model, DbErr> {
    let next_seq = next_seq(db, project_id).await?;
    run_event::ActiveModel {
        id: Set(Uuid::new_v4()),
        project_id: Set(project_id),
        run_id: Set(run_id),
        seq: Set(next_seq),
        kind: Set(kind.as_str().to_owned()),
        payload: Set(payload),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await
}

async fn next_seq(db: &impl ConnectionTrait, project_id: Uuid) -> Result<i64, DbErr> {
    let statement = Query::select()
        .expr(Expr::col(run_event::Column::Seq).max())
        .from(run_event::Entity)
        .and_where(run_event::Column::ProjectId.eq(project_id))
        .to_owned();
    let row = db
        .query_one(db.get_database_backend().build(&statement))
        .await?;
    let max: Option<i64> = match row {
        Some(row) => row.try_get_by_index(0)?,
        None => None,
    };
    Ok(max.unwrap_or(0) + 1)
}

/// Which events a subscriber wants.
#[derive(Debug, Clone, Copy)]
pub struct EventFilter {
    pub project_id: Uuid,
    pub run_id: Option<Uuid>,
    /// Only events with a greater sequence number.
    pub after: i64,
}

const PAGE: u64 = 200;

/// Every stored event matching `filter`, then live ones as they are committed. The stream reads
/// from the table (the source of truth) each time the bus says the project changed, so a client
/// gets each event exactly once and in order, whatever it missed while away. It ends after an
/// error (reported as the last item) or when the bus closes.
pub fn event_stream(
    db: DatabaseConnection,
    bus: &dyn EventBus,
    filter: EventFilter,
) -> impl Stream<Item = Result<run_event::Model, DbErr>> {
    struct State {
        db: DatabaseConnection,
        filter: EventFilter,
        cursor: i64,
        buffered: VecDeque<run_event::Model>,
        wakeups: broadcast::Receiver<BusMessage>,
        done: bool,
    }
    // Subscribe before the first read, so nothing committed in between is missed.
    let state = State {
        wakeups: bus.subscribe(),
        db,
        cursor: filter.after,
        filter,
        buffered: VecDeque::new(),
        done: false,
    };
    stream::unfold(state, |mut state| async move {
        while !state.done {
            if let Some(event) = state.buffered.pop_front() {
                state.cursor = event.seq;
                return Some((Ok(event), state));
            }
            match page_after(&state.db, &state.filter, state.cursor).await {
                Ok(page) if !page.is_empty() => state.buffered.extend(page),
                Ok(_) => {
                    state.done =
                        !bus::wait_for_project(&mut state.wakeups, state.filter.project_id).await
                }
                Err(err) => {
                    state.done = true;
                    return Some((Err(err), state));
                }
            }
        }
        None
    })
}

async fn page_after(
    db: &DatabaseConnection,
    filter: &EventFilter,
    after: i64,
) -> Result<Vec<run_event::Model>, DbErr> {
    let mut query = run_event::Entity::find()
        .filter(run_event::Column::ProjectId.eq(filter.project_id))
        .filter(run_event::Column::Seq.gt(after))
        .order_by_asc(run_event::Column::Seq)
        .limit(PAGE);
    if let Some(run_id) = filter.run_id {
        query = query.filter(run_event::Column::RunId.eq(run_id));
    }
    query.all(db).await
}

#[cfg(test)]
mod tests {
    use super::EventKind;

    #[test]
    fn every_kind_reads_back_from_its_stored_name() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("NOT_A_KIND"), None);
    }
}
