//! Re-serves a recorded transcript: a JSON list of [`ModelResponse`]s, returned in order.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{ChatRequest, DeltaSink, ModelError, ModelProvider, ModelResponse, TokenUsage};

/// Environment variable naming the transcript file.
pub const REPLAY_FILE_ENV: &str = "REPLAY_FILE";

#[derive(Debug)]
pub struct ReplayProvider {
    responses: Mutex<VecDeque<ModelResponse>>,
}

impl ReplayProvider {
    pub fn from_responses(responses: Vec<ModelResponse>) -> Self {
        Self {
            responses: Mutex::new(responses.into()),
        }
    }

    /// Reads a transcript file (a JSON array of `ModelResponse`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ModelError::Protocol(format!("cannot read replay file {}: {e}", path.display()))
        })?;
        let responses: Vec<ModelResponse> = serde_json::from_str(&text).map_err(|e| {
            ModelError::Protocol(format!("invalid replay file {}: {e}", path.display()))
        })?;
        Ok(Self::from_responses(responses))
    }

    /// Reads the transcript named by `REPLAY_FILE`; `None` when the variable is unset.
    pub fn from_env() -> Option<Result<Self, ModelError>> {
        let path = std::env::var_os(REPLAY_FILE_ENV)?;
        Some(Self::from_file(path))
    }

    /// Responses not served yet.
    pub fn remaining(&self) -> usize {
        self.responses.lock().map(|r| r.len()).unwrap_or(0)
    }
}

#[async_trait]
impl ModelProvider for ReplayProvider {
    fn name(&self) -> &'static str {
        "replay"
    }

    fn model(&self) -> &str {
        "replay"
    }

    fn estimate_cost_usd(&self, _usage: TokenUsage) -> f64 {
        0.0
    }

    async fn complete(
        &self,
        _request: &ChatRequest,
        on_delta: DeltaSink<'_>,
    ) -> Result<ModelResponse, ModelError> {
        let next = self
            .responses
            .lock()
            .map_err(|_| ModelError::Protocol("replay state poisoned".into()))?
            .pop_front();
        let response = next.ok_or(ModelError::ReplayExhausted)?;
        if !response.text.is_empty() {
            on_delta(&response.text);
        }
        Ok(response)
    }
}
