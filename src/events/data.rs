//! What an event says: one variant per kind. Writers build it, rows store it (`kind` + the
//! variant's fields as camelCase JSON in `payload`), GraphQL and the README's table show it.
//!
//! Rows outlive the code that wrote them: a field added later has a default (or an alias for
//! its old name), so every row written since the first release still reads back.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::EventKind;
use crate::agent::diagnostic::Diagnostic;
use crate::agent::provider::ModelResponse;
use crate::entity::message::{MessageType, Role};
use crate::entity::run::RunStatus;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "payload",
    rename_all = "SCREAMING_SNAKE_CASE",
    rename_all_fields = "camelCase"
)]
pub enum RunEventData {
    RunQueued {
        /// Queued again by `retryRun`.
        #[serde(default)]
        retry: bool,
    },
    RunStarted {
        attempt: i32,
    },
    SandboxReady {
        sandbox_id: String,
        preview_url: String,
    },
    ModelTextDelta {
        text: String,
    },
    /// One whole model response: the run's transcript, which the replay provider can serve
    /// again (stored in the transcript's own format).
    ModelResponse(ModelResponse),
    ToolCallStarted {
        call_id: String,
        name: String,
        arguments: Value,
    },
    /// Streamed output of a tool call; once past the streaming limit, a last one with
    /// `truncated` and the bytes left out.
    ToolOutput {
        call_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<OutputStream>,
        #[serde(default, alias = "chunk")]
        text: String,
        #[serde(default)]
        truncated: bool,
        #[serde(default)]
        omitted_bytes: u64,
    },
    FileWritten {
        path: String,
        #[serde(default)]
        bytes: u64,
    },
    ToolCallFinished {
        call_id: String,
        name: String,
        ok: bool,
        /// What the tool told the model when it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<Value>,
    },
    /// What a build check found (nothing: it passed); `round` counts the run's checks from 1.
    BuildDiagnostics {
        round: u32,
        diagnostics: Vec<Diagnostic>,
    },
    /// Outside a run for a restored version.
    MessageCreated {
        message_id: Uuid,
        role: Role,
        #[serde(rename = "type")]
        message_type: MessageType,
    },
    /// A failed run's error reply, removed when the run is retried.
    MessageDeleted {
        message_id: Uuid,
    },
    /// Outside a run for a restored version.
    FragmentCreated {
        fragment_id: Uuid,
        message_id: Uuid,
        sandbox_url: String,
        title: String,
        /// What a cancelled or failed run wrote, kept to restore or discard.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        draft: bool,
    },
    /// Outside a run: `discardDraft`.
    DraftDiscarded {
        fragment_id: Uuid,
    },
    RunFinished {
        status: RunStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        input_tokens: i64,
        output_tokens: i64,
        cost_usd: f64,
        /// `None` in events stored before reasons were recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stop_reason: Option<StopReason>,
    },
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// The adjacently tagged form, which is exactly a row's two columns.
#[derive(Serialize, Deserialize)]
struct Row<K, P> {
    kind: K,
    payload: P,
}

impl RunEventData {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::RunQueued { .. } => EventKind::RunQueued,
            Self::RunStarted { .. } => EventKind::RunStarted,
            Self::SandboxReady { .. } => EventKind::SandboxReady,
            Self::ModelTextDelta { .. } => EventKind::ModelTextDelta,
            Self::ModelResponse(_) => EventKind::ModelResponse,
            Self::ToolCallStarted { .. } => EventKind::ToolCallStarted,
            Self::ToolOutput { .. } => EventKind::ToolOutput,
            Self::FileWritten { .. } => EventKind::FileWritten,
            Self::ToolCallFinished { .. } => EventKind::ToolCallFinished,
            Self::BuildDiagnostics { .. } => EventKind::BuildDiagnostics,
            Self::MessageCreated { .. } => EventKind::MessageCreated,
            Self::MessageDeleted { .. } => EventKind::MessageDeleted,
            Self::FragmentCreated { .. } => EventKind::FragmentCreated,
            Self::DraftDiscarded { .. } => EventKind::DraftDiscarded,
            Self::RunFinished { .. } => EventKind::RunFinished,
        }
    }

    /// The row's `payload` column.
    pub fn to_payload(&self) -> Result<Value, serde_json::Error> {
        let row: Row<EventKind, Value> = serde_json::from_value(serde_json::to_value(self)?)?;
        Ok(row.payload)
    }

    /// Reads a stored row's `kind` and `payload` back.
    pub fn from_row(kind: &str, payload: &Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(serde_json::to_value(Row { kind, payload })?)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::agent::provider::TokenUsage;

    // Every kind round-trips through the real database and GraphQL in tests/it/events.rs.

    /// Rows exactly as the untyped writers stored them before this enum existed.
    #[test]
    fn rows_in_the_old_payload_shapes_read_back() {
        let id = Uuid::from_u128(7);
        let old = |kind: &str, payload: Value| RunEventData::from_row(kind, &payload).unwrap();
        assert_eq!(
            old("RUN_QUEUED", json!({})),
            RunEventData::RunQueued { retry: false }
        );
        assert_eq!(
            old(
                "TOOL_OUTPUT",
                json!({ "callId": "c1", "stream": "stdout", "chunk": "1\n" })
            ),
            RunEventData::ToolOutput {
                call_id: "c1".into(),
                stream: Some(OutputStream::Stdout),
                text: "1\n".into(),
                truncated: false,
                omitted_bytes: 0,
            }
        );
        assert_eq!(
            old(
                "TOOL_OUTPUT",
                json!({ "callId": "c1", "truncated": true, "omittedBytes": 42 })
            ),
            RunEventData::ToolOutput {
                call_id: "c1".into(),
                stream: None,
                text: String::new(),
                truncated: true,
                omitted_bytes: 42,
            }
        );
        assert_eq!(
            old("FILE_WRITTEN", json!({ "path": "app/page.tsx" })),
            RunEventData::FileWritten {
                path: "app/page.tsx".into(),
                bytes: 0,
            }
        );
        assert_eq!(
            old(
                "TOOL_CALL_FINISHED",
                json!({ "callId": "c1", "name": "terminal", "ok": true })
            ),
            RunEventData::ToolCallFinished {
                call_id: "c1".into(),
                name: "terminal".into(),
                ok: true,
                error: None,
            }
        );
        assert_eq!(
            old(
                "MESSAGE_CREATED",
                json!({ "messageId": id, "role": "ASSISTANT", "type": "RESULT" })
            ),
            RunEventData::MessageCreated {
                message_id: id,
                role: Role::Assistant,
                message_type: MessageType::Result,
            }
        );
        assert_eq!(
            old(
                "RUN_FINISHED",
                json!({ "status": "SUCCEEDED", "error": null, "inputTokens": 3, "outputTokens": 4, "costUsd": 0.0 })
            ),
            RunEventData::RunFinished {
                status: RunStatus::Succeeded,
                error: None,
                input_tokens: 3,
                output_tokens: 4,
                cost_usd: 0.0,
                stop_reason: None,
            }
        );
        // A cancelled run's event had no `error` at all.
        assert_eq!(
            old(
                "RUN_FINISHED",
                json!({ "status": "CANCELLED", "inputTokens": 0, "outputTokens": 0, "costUsd": 0.0 })
            )
            .kind(),
            EventKind::RunFinished
        );
        assert_eq!(
            old(
                "MODEL_RESPONSE",
                json!({ "text": "t", "tool_calls": [], "usage": { "input_tokens": 1, "output_tokens": 2 } })
            ),
            RunEventData::ModelResponse(ModelResponse {
                text: "t".into(),
                tool_calls: vec![],
                usage: TokenUsage {
                    input_tokens: 1,
                    output_tokens: 2,
                },
                raw: None,
            })
        );
        for (kind, payload) in [
            ("RUN_STARTED", json!({ "attempt": 1 })),
            (
                "SANDBOX_READY",
                json!({ "sandboxId": "s", "previewUrl": "http://p" }),
            ),
            ("MODEL_TEXT_DELTA", json!({ "text": "hi" })),
            (
                "TOOL_CALL_STARTED",
                json!({ "callId": "c1", "name": "terminal", "arguments": {} }),
            ),
            ("MESSAGE_DELETED", json!({ "messageId": id })),
            (
                "FRAGMENT_CREATED",
                json!({ "fragmentId": id, "messageId": id, "sandboxUrl": "http://p", "title": "t" }),
            ),
        ] {
            let data = old(kind, payload.clone());
            assert_eq!(data.kind().as_str(), kind);
            assert_eq!(
                data.to_payload().unwrap(),
                payload,
                "{kind} keeps its shape"
            );
        }
    }

    #[test]
    fn an_unknown_kind_or_a_malformed_payload_is_an_error() {
        assert!(RunEventData::from_row("NOT_A_KIND", &json!({})).is_err());
        assert!(RunEventData::from_row("RUN_STARTED", &json!({ "attempt": "x" })).is_err());
        assert!(RunEventData::from_row("FILE_WRITTEN", &json!(null)).is_err());
    }
}
