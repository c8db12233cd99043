//! Run events: every step of a run is a row with a per-project sequence number (so a client that
//! reconnects resumes exactly where it left off) and a notification on the bus (so subscribers
//! wake up without polling).

mod bus;
mod data;
mod emitter;
mod hub;
mod postgres;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::{stream, Stream};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbErr, Set, SqlErr, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;
use uuid::Uuid;

pub use bus::{wait_for_work, BusMessage, EventBus, InProcessBus};
pub use hub::{EventBatch, EventHub, FeedReceiver, DEFAULT_FEED_CAPACITY};
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
    Ok(hub::max_seq(db, project_id).await? + 1)
}

/// Which events a subscriber wants.
#[derive(Debug, Clone, Copy)]
pub struct EventFilter {
    pub project_id: Uuid,
    pub run_id: Option<Uuid>,
    /// Only events with a greater sequence number.
    pub after: i64,
}

impl EventFilter {
    fn wants(&self, event: &run_event::Model) -> bool {
        self.run_id
            .is_none_or(|run_id| event.run_id == Some(run_id))
    }
}

/// Every stored event matching `filter`, then live ones as they are committed, each exactly once
/// and in order. The history comes from the table; live events come from the project's feed in
/// this process, and whenever the feed cannot vouch for continuity (a jump in `seq`, batches
/// dropped because this subscriber fell behind) the stream reads the table again. It ends after
/// an error (reported as the last item) or when the server shuts down.
pub fn event_stream(
    db: DatabaseConnection,
    hub: Arc<EventHub>,
    filter: EventFilter,
) -> impl Stream<Item = Result<run_event::Model, DbErr>> {
    let subscriber = Subscriber {
        db,
        hub,
        cursor: filter.after,
        filter,
        catching_up: true,
        buffered: VecDeque::new(),
        feed: None,
    };
    stream::unfold(Some(subscriber), |subscriber| async move {
        let mut subscriber = subscriber?;
        match subscriber.next().await {
            Ok(Some(event)) => Some((Ok(event), Some(subscriber))),
            Ok(None) => None,
            Err(err) => Some((Err(err), None)),
        }
    })
}

struct Subscriber {
    db: DatabaseConnection,
    hub: Arc<EventHub>,
    filter: EventFilter,
    /// Every event of the project up to here has been handled (buffered or filtered out).
    cursor: i64,
    /// The table must be read up to the project's latest event before the feed is trusted.
    catching_up: bool,
    buffered: VecDeque<run_event::Model>,
    feed: Option<FeedReceiver>,
}

impl Subscriber {
    async fn next(&mut self) -> Result<Option<run_event::Model>, DbErr> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                return Ok(Some(event));
            }
            let Some(feed) = self.feed.as_mut() else {
                // Joined before the first read, so nothing committed in between is missed.
                self.feed = Some(self.hub.subscribe(self.filter.project_id).await?);
                continue;
            };
            if self.catching_up {
                self.catch_up().await?;
                continue;
            }
            match feed.batches.recv().await {
                Ok(batch) if batch.after > self.cursor => self.catching_up = true,
                Ok(batch) => {
                    let (cursor, filter) = (self.cursor, self.filter);
                    let fresh = batch.events.iter().filter(|event| event.seq > cursor);
                    self.buffered
                        .extend(fresh.filter(|event| filter.wants(event)).cloned());
                    self.cursor = cursor.max(batch.last_seq());
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
            }
        }
    }

    /// Reads a page of the events after the cursor, up to the project's latest as the read began.
    async fn catch_up(&mut self) -> Result<(), DbErr> {
        let project_id = self.filter.project_id;
        let latest = hub::max_seq(&self.db, project_id).await?;
        if latest <= self.cursor {
            self.catching_up = false;
            return Ok(());
        }
        let page = hub::rows_after(&self.db, project_id, self.filter.run_id, self.cursor).await?;
        let full = u64::try_from(page.len()).is_ok_and(|len| len == hub::PAGE);
        let page = page.into_iter().filter(|event| event.seq <= latest);
        self.buffered.extend(page);
        match self.buffered.back() {
            Some(last) if full && last.seq < latest => self.cursor = last.seq,
            _ => {
                self.cursor = latest;
                self.catching_up = false;
            }
        }
        Ok(())
    }
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
