use std::sync::Arc;

use async_graphql::{Enum, Object, SimpleObject, Union, ID};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::message::{MessageRole, MessageType};
use super::run::RunStatus;
use super::to_id;
use crate::entity::run_event;
use crate::events::{self, EventKind, StoredEvent};

/// What a run event reports; `data` is the object of the same name.
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
    BuildDiagnostics,
    MessageCreated,
    MessageDeleted,
    FragmentCreated,
    DraftDiscarded,
    RunFinished,
}

/// A run event shared, not copied, by the subscribers it reaches: fields are read from the
/// stored event when a query selects them.
pub struct RunEvent(Arc<StoredEvent>);

impl From<Arc<StoredEvent>> for RunEvent {
    fn from(event: Arc<StoredEvent>) -> Self {
        Self(event)
    }
}

impl From<run_event::Model> for RunEvent {
    fn from(row: run_event::Model) -> Self {
        Self(Arc::new(StoredEvent::from(row)))
    }
}

/// A persisted step of a run, or a change outside one (a restored version). `seq` grows by
/// one per project: resume a subscription with `after: <last seq seen>` to get every missed
/// event exactly once.
#[Object]
impl RunEvent {
    async fn seq(&self) -> i64 {
        self.0.row.seq
    }

    /// `null` for an event outside a run.
    async fn run_id(&self) -> Option<ID> {
        self.0.row.run_id.map(to_id)
    }

    async fn kind(&self) -> RunEventKind {
        // An unreadable row (say, from a newer version) shows as its run's lifecycle event.
        match &self.0.data {
            Ok(data) => data.kind(),
            Err(_) => EventKind::parse(&self.0.row.kind).unwrap_or(EventKind::RunQueued),
        }
        .into()
    }

    async fn data(&self) -> RunEventData {
        match &self.0.data {
            Ok(data) => data.clone().into(),
            Err(reason) => RunEventData::UnreadableEvent(UnreadableEvent {
                kind: self.0.row.kind.clone(),
                reason: reason.clone(),
            }),
        }
    }

    /// The stored fields of `data` as JSON.
    #[graphql(deprecation = "use data")]
    async fn payload(&self) -> async_graphql::Json<Value> {
        async_graphql::Json(self.0.row.payload.clone())
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.row.created_at
    }
}

/// What happened, one object per `RunEventKind`.
#[derive(Union)]
pub enum RunEventData {
    RunQueued(RunQueued),
    RunStarted(RunStarted),
    SandboxReady(SandboxReady),
    ModelTextDelta(ModelTextDelta),
    ModelResponse(ModelResponse),
    ToolCallStarted(ToolCallStarted),
    ToolOutput(ToolOutput),
    FileWritten(FileWritten),
    ToolCallFinished(ToolCallFinished),
    BuildDiagnostics(BuildDiagnostics),
    MessageCreated(MessageCreated),
    MessageDeleted(MessageDeleted),
    FragmentCreated(FragmentCreated),
    DraftDiscarded(DraftDiscarded),
    RunFinished(RunFinished),
    UnreadableEvent(UnreadableEvent),
}

/// A generation waits for a worker.
#[derive(SimpleObject)]
pub struct RunQueued {
    /// Queued again by `retryRun`.
    pub retry: bool,
}

/// A worker took the run; `attempt` counts its tries.
#[derive(SimpleObject)]
pub struct RunStarted {
    pub attempt: i32,
}

/// The project's sandbox is up.
#[derive(SimpleObject)]
pub struct SandboxReady {
    pub sandbox_id: String,
    pub preview_url: String,
}

/// Streamed model text; neighbouring deltas arrive merged.
#[derive(SimpleObject)]
pub struct ModelTextDelta {
    pub text: String,
}

/// One whole model response: a step of the run's transcript.
#[derive(SimpleObject)]
pub struct ModelResponse {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(SimpleObject)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: async_graphql::Json<Value>,
}

/// The model called a tool.
#[derive(SimpleObject)]
pub struct ToolCallStarted {
    pub call_id: String,
    pub name: String,
    pub arguments: async_graphql::Json<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::events::OutputStream")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Streamed output of a tool call. Past `AGENT_OUTPUT_STREAM_BYTES`, once: `truncated` with
/// the bytes left out (and no stream).
#[derive(SimpleObject)]
pub struct ToolOutput {
    pub call_id: String,
    pub stream: Option<OutputStream>,
    pub text: String,
    pub truncated: bool,
    pub omitted_bytes: u64,
}

/// A tool wrote a file of the app.
#[derive(SimpleObject)]
pub struct FileWritten {
    pub path: String,
    /// 0 for events stored before sizes were recorded.
    pub bytes: u64,
}

/// A tool call ended; `error` is what the model was told.
#[derive(SimpleObject)]
pub struct ToolCallFinished {
    pub call_id: String,
    pub name: String,
    pub ok: bool,
    /// What the tool told the model when it failed.
    pub error: Option<async_graphql::Json<Value>>,
}

/// What a build check found; an empty list: it passed. `round` counts the run's checks from 1.
#[derive(SimpleObject)]
pub struct BuildDiagnostics {
    pub round: u32,
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::agent::diagnostic::Severity")]
pub enum DiagnosticSeverity {
    Error,
    Warning,
    Info,
}

/// One problem of the build (`tsc`, or the error `next dev` reports for the page). `file` is
/// relative to the app root, null for a problem of the whole build.
#[derive(SimpleObject)]
pub struct Diagnostic {
    pub file: Option<String>,
    pub line: Option<u32>,
    pub column: Option<u32>,
    /// `TS2304` for `tsc`.
    pub code: Option<String>,
    pub severity: DiagnosticSeverity,
    pub message: String,
}

impl From<crate::agent::diagnostic::Diagnostic> for Diagnostic {
    fn from(d: crate::agent::diagnostic::Diagnostic) -> Self {
        Self {
            file: d.file,
            line: d.line,
            column: d.column,
            code: d.code,
            severity: d.severity.into(),
            message: d.message,
        }
    }
}

/// A message was stored; `runId` is null for a restored version.
#[derive(SimpleObject)]
pub struct MessageCreated {
    pub message_id: ID,
    pub role: MessageRole,
    #[graphql(name = "type")]
    pub message_type: MessageType,
}

/// A failed run's error reply, removed when the run is retried.
#[derive(SimpleObject)]
pub struct MessageDeleted {
    pub message_id: ID,
}

/// A version of the app was stored; `runId` is null for a restored version.
#[derive(SimpleObject)]
pub struct FragmentCreated {
    pub fragment_id: ID,
    pub message_id: ID,
    pub sandbox_url: String,
    pub title: String,
    /// What a cancelled or failed run wrote, kept to restore (`restoreFragment`) or discard
    /// (`discardDraft`).
    pub draft: bool,
}

/// A draft version was discarded.
#[derive(SimpleObject)]
pub struct DraftDiscarded {
    pub fragment_id: ID,
}

/// The run ended: the last event of a run.
#[derive(SimpleObject)]
pub struct RunFinished {
    pub status: RunStatus,
    pub error: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    /// Null for runs that ended before reasons were recorded.
    pub stop_reason: Option<StopReason>,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::events::StopReason")]
pub enum StopReason {
    /// The model finished and the build check passed (or there is none).
    Completed,
    /// The build check still failed when the fix rounds were spent.
    FixRoundsSpent,
    /// A fix round left the same diagnostics as the round before.
    RepeatedDiagnostics,
    /// `AGENT_MAX_STEPS`.
    StepLimit,
    /// `AGENT_MAX_RUN_SECS`.
    TimeLimit,
    /// `AGENT_MAX_RUN_USD`.
    CostLimit,
    /// `USER_MAX_SPEND_USD_PER_WINDOW`.
    SpendCap,
    Cancelled,
    /// Anything else that failed it (the model, the sandbox, the server).
    Error,
}

/// A stored event this server cannot read (its `kind` is then RUN_QUEUED).
#[derive(SimpleObject)]
pub struct UnreadableEvent {
    /// The stored kind.
    pub kind: String,
    pub reason: String,
}

impl From<events::RunEventData> for RunEventData {
    fn from(data: events::RunEventData) -> Self {
        use events::RunEventData as Data;
        match data {
            Data::RunQueued { retry } => Self::RunQueued(RunQueued { retry }),
            Data::RunStarted { attempt } => Self::RunStarted(RunStarted { attempt }),
            Data::SandboxReady {
                sandbox_id,
                preview_url,
            } => Self::SandboxReady(SandboxReady {
                sandbox_id,
                preview_url,
            }),
            Data::ModelTextDelta { text } => Self::ModelTextDelta(ModelTextDelta { text }),
            Data::ModelResponse(response) => Self::ModelResponse(ModelResponse {
                text: response.text,
                tool_calls: response
                    .tool_calls
                    .into_iter()
                    .map(|call| ToolCall {
                        id: call.id,
                        name: call.name,
                        arguments: async_graphql::Json(call.arguments),
                    })
                    .collect(),
                input_tokens: response.usage.input_tokens,
                output_tokens: response.usage.output_tokens,
            }),
            Data::ToolCallStarted {
                call_id,
                name,
                arguments,
            } => Self::ToolCallStarted(ToolCallStarted {
                call_id,
                name,
                arguments: async_graphql::Json(arguments),
            }),
            Data::ToolOutput {
                call_id,
                stream,
                text,
                truncated,
                omitted_bytes,
            } => Self::ToolOutput(ToolOutput {
                call_id,
                stream: stream.map(Into::into),
                text,
                truncated,
                omitted_bytes,
            }),
            Data::FileWritten { path, bytes } => Self::FileWritten(FileWritten { path, bytes }),
            Data::ToolCallFinished {
                call_id,
                name,
                ok,
                error,
            } => Self::ToolCallFinished(ToolCallFinished {
                call_id,
                name,
                ok,
                error: error.map(async_graphql::Json),
            }),
            Data::BuildDiagnostics { round, diagnostics } => {
                Self::BuildDiagnostics(BuildDiagnostics {
                    round,
                    diagnostics: diagnostics.into_iter().map(Into::into).collect(),
                })
            }
            Data::MessageCreated {
                message_id,
                role,
                message_type,
            } => Self::MessageCreated(MessageCreated {
                message_id: to_id(message_id),
                role: role.into(),
                message_type: message_type.into(),
            }),
            Data::MessageDeleted { message_id } => Self::MessageDeleted(MessageDeleted {
                message_id: to_id(message_id),
            }),
            Data::FragmentCreated {
                fragment_id,
                message_id,
                sandbox_url,
                title,
                draft,
            } => Self::FragmentCreated(FragmentCreated {
                fragment_id: to_id(fragment_id),
                message_id: to_id(message_id),
                sandbox_url,
                title,
                draft,
            }),
            Data::DraftDiscarded { fragment_id } => Self::DraftDiscarded(DraftDiscarded {
                fragment_id: to_id(fragment_id),
            }),
            Data::RunFinished {
                status,
                error,
                input_tokens,
                output_tokens,
                cost_usd,
                stop_reason,
            } => Self::RunFinished(RunFinished {
                status: status.into(),
                error,
                input_tokens,
                output_tokens,
                cost_usd,
                stop_reason: stop_reason.map(Into::into),
            }),
        }
    }
}
