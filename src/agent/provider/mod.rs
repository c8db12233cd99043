//! Model providers behind one trait: Gemini, OpenAI-compatible, Anthropic, offline and replay.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod anthropic;
pub mod gemini;
pub mod offline;
pub mod openai_compat;
pub mod pricing;
pub mod replay;
pub mod retry;
pub mod sse;

pub use anthropic::{AnthropicConfig, AnthropicProvider};
pub use gemini::{GeminiConfig, GeminiProvider};
pub use offline::{OfflineProvider, REPLY_MARKER, TITLE_MARKER};
pub use openai_compat::{OpenAiCompatProvider, OpenAiConfig};
pub use replay::ReplayProvider;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Network failure, timeout or a retryable status that stayed after the retries.
    #[error("model unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request (bad key, bad request): retrying will not help.
    #[error("model rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// The provider answered something we could not understand.
    #[error("model protocol error: {0}")]
    Protocol(String),
    /// The model cannot call tools (a small local model): the agent cannot work with it.
    #[error("the model {model} cannot call tools")]
    ToolsUnsupported { model: String },
    /// A replay transcript has no more responses.
    #[error("replay exhausted")]
    ReplayExhausted,
}

/// A tool the model may call; `parameters` is a JSON schema object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolCall {
    /// Provider's call id (OpenAI) or one we made up (Gemini has none).
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// One turn of the conversation, provider-neutral.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum ChatMessage {
    User {
        text: String,
    },
    Assistant {
        text: String,
        tool_calls: Vec<ToolCall>,
        /// Provider data that must be echoed back verbatim on the next request (Gemini's
        /// model `content` with its thought signatures).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw: Option<Value>,
    },
    ToolResult {
        call_id: String,
        name: String,
        content: Value,
        is_error: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatRequest {
    pub system: String,
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolSpec>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// What the model said in one step. Serialisable: transcripts are lists of these.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ModelResponse {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: TokenUsage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<Value>,
}

/// Receives text deltas while a response streams.
pub type DeltaSink<'a> = &'a (dyn Fn(&str) + Send + Sync);

#[async_trait]
pub trait ModelProvider: Send + Sync {
    /// `gemini`, `openai`, `anthropic`, `offline`, `replay`.
    fn name(&self) -> &'static str;
    fn model(&self) -> &str;
    /// Whether this provider is a stand-in that runs without any model (the UI says so).
    fn is_offline(&self) -> bool {
        false
    }
    /// Whether the model may be unable to call tools (any model behind an OpenAI-compatible
    /// endpoint): a first answer without a tool call on a project with no files then means
    /// [`ModelError::ToolsUnsupported`] rather than a summary of nothing.
    fn may_lack_tool_support(&self) -> bool {
        false
    }
    /// Estimated cost in US dollars of `usage` on this model (0 where unknown or free).
    fn estimate_cost_usd(&self, usage: TokenUsage) -> f64;
    async fn complete(
        &self,
        request: &ChatRequest,
        on_delta: DeltaSink<'_>,
    ) -> Result<ModelResponse, ModelError>;
}
