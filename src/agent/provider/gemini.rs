//! Google Gemini API (`v1beta`) client: `streamGenerateContent?alt=sse` with function calling
//! (llm-apis.md §1).
//!
//! The model turn is kept verbatim: every streamed part (thought summaries, signature-only
//! empty-text parts, function calls with their `thoughtSignature`) is stored in order in
//! [`ModelResponse::raw`] as one `{"role":"model","parts":[…]}` content, and sent back unchanged
//! when the agent returns it as [`ChatMessage::Assistant`]`.raw`.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use super::pricing::{gemini_price, ModelPrice};
use super::retry::{self, Failure, RetryPolicy};
use super::sse::{SseDecoder, SseEvent};
use super::{
    ChatMessage, ChatRequest, DeltaSink, ModelError, ModelProvider, ModelResponse, TokenUsage,
    ToolCall,
};

pub const DEFAULT_GEMINI_MODEL: &str = "gemini-2.5-flash";
pub const DEFAULT_GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com";
/// Documented placeholder for function calls in history that did not come from Gemini (§1.5.5).
pub const DUMMY_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

#[derive(Clone)]
pub struct GeminiConfig {
    pub api_key: String,
    /// e.g. `gemini-2.5-flash` (a `models/` prefix is accepted).
    pub model: String,
    /// Without trailing `/v1beta`, e.g. `https://generativelanguage.googleapis.com`.
    pub base_url: String,
    /// Connect timeout and the longest silence allowed while reading a response.
    pub timeout: Duration,
    /// Retries after the first attempt on 429/5xx/connect errors.
    pub max_retries: u32,
}

impl GeminiConfig {
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            model: DEFAULT_GEMINI_MODEL.to_owned(),
            base_url: DEFAULT_GEMINI_BASE_URL.to_owned(),
            timeout: Duration::from_secs(120),
            max_retries: 3,
        }
    }
}

impl fmt::Debug for GeminiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeminiConfig")
            .field("api_key", &"<redacted>")
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct GeminiProvider {
    config: GeminiConfig,
    client: reqwest::Client,
    retry: RetryPolicy,
    price: ModelPrice,
}

impl GeminiProvider {
    pub fn new(config: GeminiConfig) -> Result<Self, ModelError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .read_timeout(config.timeout)
            .build()
            .map_err(|e| ModelError::Unavailable(format!("cannot build HTTP client: {e}")))?;
        let retry = RetryPolicy::with_max_retries(config.max_retries);
        let price = gemini_price(&config.model).unwrap_or(ModelPrice::FREE);
        Ok(Self {
            config,
            client,
            retry,
            price,
        })
    }

    /// Replaces the backoff policy (its `max_retries` wins over the config's).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// One-shot `:generateContent` (no streaming, no deltas), with the same retries. Handy for
    /// short helper prompts; [`ModelProvider::complete`] streams.
    pub async fn generate(&self, request: &ChatRequest) -> Result<ModelResponse, ModelError> {
        let body = build_request_body(request);
        retry::with_retries(&self.retry, |_| self.attempt(&body, false, &|_| {})).await
    }

    fn url(&self, stream: bool) -> String {
        let model = self
            .config
            .model
            .strip_prefix("models/")
            .unwrap_or(&self.config.model);
        let method = if stream {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        format!(
            "{}/v1beta/models/{model}:{method}",
            self.config.base_url.trim_end_matches('/')
        )
    }

    async fn attempt(
        &self,
        body: &Value,
        stream: bool,
        on_delta: DeltaSink<'_>,
    ) -> Result<ModelResponse, Failure> {
        let request = self
            .client
            .post(self.url(stream))
            .header("x-goog-api-key", &self.config.api_key)
            .json(body);
        let response = retry::send(request).await?;
        let is_sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|ct| ct.starts_with("text/event-stream"));
        let mut acc = StreamAccumulator::default();
        if !is_sse {
            // `:generateContent`, or a proxy that ignored `alt=sse`: one JSON response or an
            // array of chunks.
            let text = response
                .text()
                .await
                .map_err(|e| retry::transport_failure(&e))?;
            let value: Value = serde_json::from_str(&text).map_err(|e| {
                Failure::fatal(ModelError::Protocol(format!("invalid JSON response: {e}")))
            })?;
            let chunks = match value {
                Value::Array(items) => items,
                other => vec![other],
            };
            for chunk in chunks {
                acc.on_chunk(chunk, on_delta)?;
            }
            return acc.finish();
        }
        let mut stream = response.bytes_stream();
        let mut decoder = SseDecoder::new();
        while let Some(bytes) = stream.next().await {
            let bytes = match bytes {
                Ok(bytes) => bytes,
                Err(e) if acc.delivered => {
                    return Err(Failure::fatal(ModelError::Unavailable(format!(
                        "stream interrupted: {e}"
                    ))));
                }
                Err(e) => return Err(retry::transport_failure(&e)),
            };
            for event in decoder.push(&bytes) {
                acc.on_event(event, on_delta)?;
            }
        }
        if let Some(event) = decoder.finish() {
            acc.on_event(event, on_delta)?;
        }
        acc.finish()
    }
}

#[async_trait]
impl ModelProvider for GeminiProvider {
    fn name(&self) -> &'static str {
        "gemini"
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    fn estimate_cost_usd(&self, usage: TokenUsage) -> f64 {
        self.price.cost_usd(usage)
    }

    #[tracing::instrument(skip_all, fields(model = %self.config.model))]
    async fn complete(
        &self,
        request: &ChatRequest,
        on_delta: DeltaSink<'_>,
    ) -> Result<ModelResponse, ModelError> {
        let body = build_request_body(request);
        retry::with_retries(&self.retry, |_| self.attempt(&body, true, on_delta)).await
    }
}

/// The `GenerateContentRequest` for `request` (§1.3).
pub fn build_request_body(request: &ChatRequest) -> Value {
    // Ids Gemini itself put on function calls: only those are echoed in `functionResponse.id`
    // (ids of calls without one were made up by us).
    let gemini_ids: HashSet<&str> = request
        .messages
        .iter()
        .filter_map(|m| match m {
            ChatMessage::Assistant { raw: Some(raw), .. } => {
                raw.get("parts").and_then(Value::as_array)
            }
            _ => None,
        })
        .flatten()
        .filter_map(|part| part.get("functionCall")?.get("id")?.as_str())
        .collect();

    let mut contents = Vec::new();
    let mut responses: Vec<Value> = Vec::new();
    for message in &request.messages {
        if let ChatMessage::ToolResult {
            call_id,
            name,
            content,
            is_error,
        } = message
        {
            let key = if *is_error { "error" } else { "output" };
            let mut function_response = json!({ "name": name, "response": { key: content } });
            if gemini_ids.contains(call_id.as_str()) {
                function_response["id"] = json!(call_id);
            }
            responses.push(json!({ "functionResponse": function_response }));
            continue;
        }
        if !responses.is_empty() {
            contents.push(json!({ "role": "user", "parts": std::mem::take(&mut responses) }));
        }
        match message {
            ChatMessage::User { text } => {
                contents.push(json!({ "role": "user", "parts": [{ "text": text }] }))
            }
            ChatMessage::Assistant { raw: Some(raw), .. } if is_model_content(raw) => {
                contents.push(raw.clone())
            }
            ChatMessage::Assistant {
                text, tool_calls, ..
            } => {
                if let Some(content) = model_content_from_parts(text, tool_calls) {
                    contents.push(content);
                }
            }
            ChatMessage::ToolResult { .. } => unreachable!("handled above"),
        }
    }
    if !responses.is_empty() {
        contents.push(json!({ "role": "user", "parts": responses }));
    }

    let mut body = json!({ "contents": contents });
    if !request.system.is_empty() {
        body["systemInstruction"] = json!({ "parts": [{ "text": request.system }] });
    }
    if !request.tools.is_empty() {
        let declarations: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                let mut decl = json!({ "name": tool.name, "description": tool.description });
                if !tool.parameters.is_null() {
                    // A full JSON Schema goes in `parametersJsonSchema`, not the OpenAPI subset.
                    decl["parametersJsonSchema"] = tool.parameters.clone();
                }
                decl
            })
            .collect();
        body["tools"] = json!([{ "functionDeclarations": declarations }]);
        body["toolConfig"] = json!({ "functionCallingConfig": { "mode": "AUTO" } });
    }
    body
}

fn is_model_content(raw: &Value) -> bool {
    raw.get("role").and_then(Value::as_str) == Some("model")
        && raw
            .get("parts")
            .and_then(Value::as_array)
            .is_some_and(|p| !p.is_empty())
}

/// A model turn we did not get from Gemini (another provider, a transcript): rebuilt from the
/// neutral fields, with the documented dummy signature on the first call.
fn model_content_from_parts(text: &str, tool_calls: &[ToolCall]) -> Option<Value> {
    let mut parts = Vec::new();
    if !text.is_empty() {
        parts.push(json!({ "text": text }));
    }
    for (i, call) in tool_calls.iter().enumerate() {
        let args = match &call.arguments {
            Value::Object(_) => call.arguments.clone(),
            Value::String(s) => match serde_json::from_str::<Value>(s) {
                Ok(v @ Value::Object(_)) => v,
                _ => json!({ "raw": s }),
            },
            Value::Null => json!({}),
            other => json!({ "value": other }),
        };
        let mut part = json!({ "functionCall": { "name": call.name, "args": args } });
        if i == 0 {
            part["thoughtSignature"] = json!(DUMMY_THOUGHT_SIGNATURE);
        }
        parts.push(part);
    }
    (!parts.is_empty()).then(|| json!({ "role": "model", "parts": parts }))
}

/// Builds one [`ModelResponse`] from the streamed `GenerateContentResponse` chunks (§1.6).
#[derive(Default)]
struct StreamAccumulator {
    /// Whether text has been handed to the caller (no retry after that).
    delivered: bool,
    chunks: usize,
    saw_candidate: bool,
    parts: Vec<Value>,
    text: String,
    tool_calls: Vec<ToolCall>,
    usage: Option<TokenUsage>,
    finish_reason: Option<String>,
    block_reason: Option<String>,
}

impl StreamAccumulator {
    fn on_event(&mut self, event: SseEvent, on_delta: DeltaSink<'_>) -> Result<(), Failure> {
        if event.event.as_deref() == Some("error") {
            return Err(self.stream_error(&event.data));
        }
        let chunk: Value = serde_json::from_str(&event.data)
            .map_err(|e| Failure::fatal(ModelError::Protocol(format!("invalid SSE chunk: {e}"))))?;
        self.on_chunk(chunk, on_delta)
    }

    fn stream_error(&self, detail: &str) -> Failure {
        let error = ModelError::Unavailable(format!("error in stream: {detail}"));
        if self.delivered {
            Failure::fatal(error)
        } else {
            Failure::retryable(error)
        }
    }

    fn on_chunk(&mut self, chunk: Value, on_delta: DeltaSink<'_>) -> Result<(), Failure> {
        self.chunks += 1;
        if let Some(error) = chunk.get("error") {
            return Err(self.stream_error(&error.to_string()));
        }
        if let Some(usage) = chunk.get("usageMetadata") {
            self.usage = Some(parse_usage(usage));
        }
        if let Some(reason) = chunk
            .pointer("/promptFeedback/blockReason")
            .and_then(Value::as_str)
        {
            self.block_reason = Some(reason.to_owned());
        }
        let Some(candidate) = chunk.get("candidates").and_then(|c| c.get(0)) else {
            return Ok(());
        };
        self.saw_candidate = true;
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
        }
        let parts = candidate
            .pointer("/content/parts")
            .and_then(Value::as_array);
        for part in parts.into_iter().flatten() {
            self.parts.push(part.clone());
            let is_thought = part
                .get("thought")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if let Some(text) = part.get("text").and_then(Value::as_str) {
                if !is_thought && !text.is_empty() {
                    self.text.push_str(text);
                    self.delivered = true;
                    on_delta(text);
                }
            }
            if let Some(call) = part.get("functionCall") {
                self.tool_calls.push(parse_function_call(call)?);
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<ModelResponse, Failure> {
        if !self.saw_candidate {
            if let Some(reason) = self.block_reason {
                return Err(Failure::fatal(ModelError::Rejected {
                    status: 200,
                    message: format!("prompt blocked: {reason}"),
                }));
            }
            let error = ModelError::Protocol(format!(
                "response had no candidates ({} chunks)",
                self.chunks
            ));
            return Err(if self.chunks == 0 {
                Failure::retryable(error)
            } else {
                Failure::fatal(error)
            });
        }
        let has_content = self
            .parts
            .iter()
            .any(|p| p.get("text").is_some() || p.get("functionCall").is_some());
        if !has_content {
            let reason = self.finish_reason.as_deref().unwrap_or("none");
            return Err(Failure::fatal(ModelError::Protocol(format!(
                "model returned no content (finishReason {reason})"
            ))));
        }
        Ok(ModelResponse {
            text: self.text,
            tool_calls: self.tool_calls,
            usage: self.usage.unwrap_or_default(),
            raw: Some(json!({ "role": "model", "parts": self.parts })),
        })
    }
}

fn parse_function_call(call: &Value) -> Result<ToolCall, Failure> {
    let name = call.get("name").and_then(Value::as_str).ok_or_else(|| {
        Failure::fatal(ModelError::Protocol("functionCall without a name".into()))
    })?;
    let id = match call.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => format!("gemini_{}", uuid::Uuid::new_v4().simple()),
    };
    let arguments = match call.get("args") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(args) => args.clone(),
    };
    Ok(ToolCall {
        id,
        name: name.to_owned(),
        arguments,
    })
}

/// `usageMetadata` (running totals; the last chunk's wins). Thinking tokens are billed as output.
fn parse_usage(usage: &Value) -> TokenUsage {
    let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
    TokenUsage {
        input_tokens: count("promptTokenCount"),
        output_tokens: count("candidatesTokenCount") + count("thoughtsTokenCount"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::provider::ToolSpec;

    #[test]
    fn request_body_shape() {
        let raw = json!({"role":"model","parts":[
            {"functionCall":{"name":"readFiles","args":{"files":["a"]},"id":"g1"},"thoughtSignature":"SIG=="},
            {"functionCall":{"name":"terminal","args":{"command":"ls"}}}
        ]});
        let request = ChatRequest {
            system: "be nice".into(),
            messages: vec![
                ChatMessage::User { text: "hi".into() },
                ChatMessage::Assistant {
                    text: String::new(),
                    tool_calls: vec![],
                    raw: Some(raw.clone()),
                },
                ChatMessage::ToolResult {
                    call_id: "g1".into(),
                    name: "readFiles".into(),
                    content: json!("x"),
                    is_error: false,
                },
                ChatMessage::ToolResult {
                    call_id: "gemini_abc".into(),
                    name: "terminal".into(),
                    content: json!({"exit": 1}),
                    is_error: true,
                },
            ],
            tools: vec![ToolSpec {
                name: "terminal".into(),
                description: "run".into(),
                parameters: json!({"type":"object"}),
            }],
        };
        let body = build_request_body(&request);
        assert_eq!(
            body["systemInstruction"],
            json!({"parts":[{"text":"be nice"}]})
        );
        assert_eq!(body["contents"][1], raw);
        assert_eq!(
            body["contents"][2],
            json!({"role":"user","parts":[
                {"functionResponse":{"name":"readFiles","response":{"output":"x"},"id":"g1"}},
                {"functionResponse":{"name":"terminal","response":{"error":{"exit":1}}}}
            ]})
        );
        assert_eq!(
            body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"],
            json!({"type":"object"})
        );
        assert_eq!(body["toolConfig"]["functionCallingConfig"]["mode"], "AUTO");
    }

    #[test]
    fn foreign_history_gets_dummy_signature() {
        let calls = vec![
            ToolCall {
                id: "c1".into(),
                name: "a".into(),
                arguments: json!({"x":1}),
            },
            ToolCall {
                id: "c2".into(),
                name: "b".into(),
                arguments: json!("{not json"),
            },
        ];
        let content = model_content_from_parts("", &calls).unwrap();
        assert_eq!(
            content["parts"][0]["thoughtSignature"],
            DUMMY_THOUGHT_SIGNATURE
        );
        assert!(content["parts"][1].get("thoughtSignature").is_none());
        assert_eq!(
            content["parts"][1]["functionCall"]["args"],
            json!({"raw":"{not json"})
        );
        assert_eq!(model_content_from_parts("", &[]), None);
    }

    #[test]
    fn accumulates_parts_in_order() {
        let mut acc = StreamAccumulator::default();
        let seen = std::sync::Mutex::new(String::new());
        let sink = |d: &str| seen.lock().unwrap().push_str(d);
        for chunk in [
            json!({"candidates":[{"content":{"role":"model","parts":[{"text":"plan","thought":true}]}}]}),
            json!({"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]}}],"usageMetadata":{"promptTokenCount":5}}),
            json!({"candidates":[{"content":{"role":"model","parts":[{"text":"lo"}]}}]}),
            json!({"candidates":[{"content":{"role":"model","parts":[{"text":"","thoughtSignature":"S"}]},"finishReason":"STOP"}],
                   "usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":2,"thoughtsTokenCount":3}}),
        ] {
            acc.on_chunk(chunk, &sink).unwrap();
        }
        let response = acc.finish().unwrap();
        assert_eq!(response.text, "Hello");
        assert_eq!(*seen.lock().unwrap(), "Hello");
        assert_eq!(
            response.usage,
            TokenUsage {
                input_tokens: 5,
                output_tokens: 5
            }
        );
        let parts = response.raw.unwrap()["parts"].as_array().unwrap().clone();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[3], json!({"text":"","thoughtSignature":"S"}));
    }
}
