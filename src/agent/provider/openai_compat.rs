//! OpenAI-compatible Chat Completions client (llm-apis.md §2): OpenAI, Ollama `/v1`, vLLM,
//! llama.cpp `llama-server`, OpenRouter.
//!
//! Always streams (`"stream": true`), accumulating `delta.content` and tool-call fragments keyed
//! by `index`. `arguments` strings are parsed once the stream ends; an unparseable string is
//! kept as a JSON string value so the agent can report a tool error to the model. The assembled
//! assistant message (with `arguments` exactly as received) is kept in [`ModelResponse::raw`]
//! and sent back verbatim.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::pricing::ModelPrice;
use super::retry::{self, Failure, RetryPolicy};
use super::sse::{SseDecoder, SseEvent};
use super::{
    ChatMessage, ChatRequest, DeltaSink, ModelError, ModelProvider, ModelResponse, TokenUsage,
    ToolCall,
};

#[derive(Clone)]
pub struct OpenAiConfig {
    /// Up to and including the version segment, e.g. `http://localhost:11434/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<String>,
    pub model: String,
    /// Connect timeout and the longest silence allowed while reading a response.
    pub timeout: Duration,
    /// Retries after the first attempt on 408/429/5xx/connect errors.
    pub max_retries: u32,
    /// Send `stream_options: {"include_usage": true}` (a few old servers reject it).
    pub stream_usage: bool,
    /// Price used for cost estimates; free by default (local models).
    pub price: ModelPrice,
}

impl OpenAiConfig {
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            timeout: Duration::from_secs(300),
            max_retries: 3,
            stream_usage: true,
            price: ModelPrice::FREE,
        }
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("stream_usage", &self.stream_usage)
            .field("price", &self.price)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct OpenAiCompatProvider {
    config: OpenAiConfig,
    client: reqwest::Client,
    retry: RetryPolicy,
}

impl OpenAiCompatProvider {
    pub fn new(config: OpenAiConfig) -> Result<Self, ModelError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .read_timeout(config.timeout)
            .build()
            .map_err(|e| ModelError::Unavailable(format!("cannot build HTTP client: {e}")))?;
        let retry = RetryPolicy::with_max_retries(config.max_retries);
        Ok(Self {
            config,
            client,
            retry,
        })
    }

    /// Replaces the backoff policy (its `max_retries` wins over the config's).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Ollama refuses `tools` for a model without tool support with a 400 "… does not support
    /// tools"; other servers word it alike.
    fn name_missing_tool_support(&self, failure: Failure) -> Failure {
        match &failure.error {
            ModelError::Rejected {
                status: 400,
                message,
            } if message
                .to_ascii_lowercase()
                .contains("does not support tools") =>
            {
                Failure::fatal(ModelError::ToolsUnsupported {
                    model: self.config.model.clone(),
                })
            }
            _ => failure,
        }
    }

    async fn attempt(
        &self,
        body: &Value,
        on_delta: DeltaSink<'_>,
    ) -> Result<ModelResponse, Failure> {
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        let mut request = self.client.post(url).json(body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = retry::send(request)
            .await
            .map_err(|failure| self.name_missing_tool_support(failure))?;
        let is_sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|ct| ct.starts_with("text/event-stream"));
        if !is_sse {
            // A server that ignored `stream: true` answers one `chat.completion`.
            let text = response
                .text()
                .await
                .map_err(|e| retry::transport_failure(&e))?;
            let value: Value = serde_json::from_str(&text).map_err(|e| {
                Failure::fatal(ModelError::Protocol(format!("invalid JSON response: {e}")))
            })?;
            return parse_completion(&value, on_delta);
        }
        let mut acc = StreamAccumulator::default();
        let mut stream = response.bytes_stream();
        let mut decoder = SseDecoder::new();
        'read: while let Some(bytes) = stream.next().await {
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
                if acc.on_event(event, on_delta)? == Flow::Done {
                    break 'read;
                }
            }
        }
        if !acc.done {
            if let Some(event) = decoder.finish() {
                acc.on_event(event, on_delta)?;
            }
        }
        acc.finish()
    }
}

#[async_trait]
impl ModelProvider for OpenAiCompatProvider {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    fn may_lack_tool_support(&self) -> bool {
        true
    }

    fn estimate_cost_usd(&self, usage: TokenUsage) -> f64 {
        self.config.price.cost_usd(usage)
    }

    #[tracing::instrument(skip_all, fields(model = %self.config.model))]
    async fn complete(
        &self,
        request: &ChatRequest,
        on_delta: DeltaSink<'_>,
    ) -> Result<ModelResponse, ModelError> {
        let body = build_request_body(&self.config, request);
        retry::with_retries(&self.retry, |_| self.attempt(&body, on_delta)).await
    }
}

/// The chat-completions request body for `request` (§2.2).
pub fn build_request_body(config: &OpenAiConfig, request: &ChatRequest) -> Value {
    let mut messages = Vec::new();
    if !request.system.is_empty() {
        messages.push(json!({ "role": "system", "content": request.system }));
    }
    for message in &request.messages {
        messages.push(match message {
            ChatMessage::User { text } => json!({ "role": "user", "content": text }),
            ChatMessage::Assistant { raw: Some(raw), .. }
                if raw.get("role").and_then(Value::as_str) == Some("assistant") =>
            {
                raw.clone()
            }
            ChatMessage::Assistant {
                text, tool_calls, ..
            } => assistant_message(text, tool_calls),
            ChatMessage::ToolResult {
                call_id,
                content,
                is_error,
                ..
            } => {
                let text = match content {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let text = if *is_error {
                    format!("Error: {text}")
                } else {
                    text
                };
                json!({ "role": "tool", "tool_call_id": call_id, "content": text })
            }
        });
    }
    let mut body = json!({ "model": config.model, "messages": messages, "stream": true });
    if config.stream_usage {
        body["stream_options"] = json!({ "include_usage": true });
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                let mut function = json!({ "name": tool.name, "description": tool.description });
                if !tool.parameters.is_null() {
                    function["parameters"] = tool.parameters.clone();
                }
                json!({ "type": "function", "function": function })
            })
            .collect();
        body["tools"] = json!(tools);
    }
    body
}

fn assistant_message(text: &str, tool_calls: &[ToolCall]) -> Value {
    let content = if text.is_empty() && !tool_calls.is_empty() {
        Value::Null
    } else {
        json!(text)
    };
    let mut message = json!({ "role": "assistant", "content": content });
    if !tool_calls.is_empty() {
        let calls: Vec<Value> = tool_calls
            .iter()
            .map(|call| {
                let arguments = match &call.arguments {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                json!({ "id": call.id, "type": "function", "function": { "name": call.name, "arguments": arguments } })
            })
            .collect();
        message["tool_calls"] = json!(calls);
    }
    message
}

/// A tool call's `arguments` string as JSON: `{}` when empty, the raw string when unparseable.
pub fn parse_arguments(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_owned()))
}

fn new_call_id() -> String {
    format!("call_{}", uuid::Uuid::new_v4().simple())
}

fn parse_usage(usage: &Value) -> Option<TokenUsage> {
    let usage = usage.as_object()?;
    let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
    Some(TokenUsage {
        input_tokens: count("prompt_tokens"),
        output_tokens: count("completion_tokens"),
    })
}

/// A non-streaming `chat.completion` body (§2.3).
fn parse_completion(value: &Value, on_delta: DeltaSink<'_>) -> Result<ModelResponse, Failure> {
    if let Some(error) = value.get("error") {
        return Err(Failure::retryable(ModelError::Unavailable(format!(
            "error response: {error}"
        ))));
    }
    let message = value.pointer("/choices/0/message").ok_or_else(|| {
        Failure::fatal(ModelError::Protocol(
            "response without choices[0].message".into(),
        ))
    })?;
    let text = message
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut acc = StreamAccumulator::default();
    for (index, call) in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        acc.on_tool_call_fragment(call, index as u64);
    }
    if !text.is_empty() {
        on_delta(&text);
    }
    acc.text = text;
    acc.usage = value.get("usage").and_then(parse_usage);
    acc.saw_chunk = true;
    acc.finish()
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Done,
}

#[derive(Default)]
struct PendingCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

#[derive(Default)]
struct StreamAccumulator {
    /// Whether text has been handed to the caller (no retry after that).
    delivered: bool,
    done: bool,
    saw_chunk: bool,
    text: String,
    /// Calls in order of appearance; `by_index` maps a stream `index` to its current call.
    calls: Vec<PendingCall>,
    by_index: BTreeMap<u64, usize>,
    usage: Option<TokenUsage>,
}

impl StreamAccumulator {
    fn on_event(&mut self, event: SseEvent, on_delta: DeltaSink<'_>) -> Result<Flow, Failure> {
        if event.event.as_deref() == Some("error") {
            return Err(self.stream_error(&event.data));
        }
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(Flow::Done);
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| Failure::fatal(ModelError::Protocol(format!("invalid SSE chunk: {e}"))))?;
        if let Some(error) = chunk.get("error") {
            return Err(self.stream_error(&error.to_string()));
        }
        self.saw_chunk = true;
        if let Some(usage) = chunk.get("usage").and_then(parse_usage) {
            self.usage = Some(usage);
        }
        let Some(delta) = chunk.pointer("/choices/0/delta") else {
            return Ok(Flow::Continue);
        };
        if let Some(text) = delta.get("content").and_then(Value::as_str) {
            if !text.is_empty() {
                self.text.push_str(text);
                self.delivered = true;
                on_delta(text);
            }
        }
        for (position, fragment) in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let index = fragment
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            self.on_tool_call_fragment(fragment, index);
        }
        Ok(Flow::Continue)
    }

    fn stream_error(&self, detail: &str) -> Failure {
        let error = ModelError::Unavailable(format!("error in stream: {detail}"));
        if self.delivered {
            Failure::fatal(error)
        } else {
            Failure::retryable(error)
        }
    }

    /// Applies one tool-call fragment (or a whole call). `null` fields mean "no update"; a new,
    /// different `id` at an index that already has one starts a new call.
    fn on_tool_call_fragment(&mut self, fragment: &Value, index: u64) {
        let id = fragment
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let slot = match self.by_index.get(&index) {
            Some(&slot)
                if id.is_none()
                    || self.calls[slot]
                        .id
                        .as_deref()
                        .is_none_or(|old| Some(old) == id) =>
            {
                slot
            }
            _ => {
                self.calls.push(PendingCall::default());
                self.by_index.insert(index, self.calls.len() - 1);
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[slot];
        if let Some(id) = id {
            call.id = Some(id.to_owned());
        }
        let function = fragment.get("function");
        if let Some(name) = function.and_then(|f| f.get("name")).and_then(Value::as_str) {
            if call.name.is_empty() {
                call.name = name.to_owned();
            }
        }
        match function.and_then(|f| f.get("arguments")) {
            Some(Value::String(piece)) => call.arguments.push_str(piece),
            // Ollama-native style object arguments.
            Some(args @ Value::Object(_)) => call.arguments.push_str(&args.to_string()),
            _ => {}
        }
    }

    fn finish(self) -> Result<ModelResponse, Failure> {
        if !self.saw_chunk {
            return Err(Failure::retryable(ModelError::Protocol(
                "empty stream".into(),
            )));
        }
        let mut tool_calls = Vec::new();
        let mut raw_calls = Vec::new();
        for call in self.calls {
            if call.name.is_empty() {
                return Err(Failure::fatal(ModelError::Protocol(
                    "tool call without a function name".into(),
                )));
            }
            let id = call.id.unwrap_or_else(new_call_id);
            raw_calls.push(json!({
                "id": id,
                "type": "function",
                "function": { "name": call.name, "arguments": call.arguments },
            }));
            tool_calls.push(ToolCall {
                id,
                name: call.name,
                arguments: parse_arguments(&call.arguments),
            });
        }
        let content = if self.text.is_empty() && !raw_calls.is_empty() {
            Value::Null
        } else {
            json!(self.text)
        };
        let mut raw = json!({ "role": "assistant", "content": content });
        if !raw_calls.is_empty() {
            raw["tool_calls"] = json!(raw_calls);
        }
        Ok(ModelResponse {
            text: self.text,
            tool_calls,
            usage: self.usage.unwrap_or_default(),
            raw: Some(raw),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::provider::ToolSpec;

    fn event(data: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: data.into(),
        }
    }

    #[test]
    fn arguments_parsing() {
        assert_eq!(parse_arguments(""), json!({}));
        assert_eq!(parse_arguments("{\"a\":1}"), json!({"a":1}));
        assert_eq!(parse_arguments("{\"a\":"), json!("{\"a\":"));
    }

    #[test]
    fn fragments_by_index_and_reused_index() {
        let mut acc = StreamAccumulator::default();
        let sink = |_: &str| {};
        for data in [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"terminal","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":null,"function":{"name":null,"arguments":"{\"command\""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":\"ls\"}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"b","function":{"name":"readFiles","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#,
        ] {
            assert_eq!(acc.on_event(event(data), &sink).unwrap(), Flow::Continue);
        }
        assert_eq!(acc.on_event(event("[DONE]"), &sink).unwrap(), Flow::Done);
        let response = acc.finish().unwrap();
        assert_eq!(response.tool_calls.len(), 2);
        assert_eq!(
            response.tool_calls[0],
            ToolCall {
                id: "a".into(),
                name: "terminal".into(),
                arguments: json!({"command":"ls"})
            }
        );
        assert_eq!(response.tool_calls[1].name, "readFiles");
        assert_eq!(
            response.usage,
            TokenUsage {
                input_tokens: 7,
                output_tokens: 3
            }
        );
        assert_eq!(
            response.raw.unwrap()["tool_calls"][0]["function"]["arguments"],
            "{\"command\":\"ls\"}"
        );
    }

    #[test]
    fn request_body_round_trips_raw_and_tool_results() {
        let config = OpenAiConfig::new("http://x/v1", "m");
        let raw = json!({"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"t","arguments":"{ \"a\" : 1 }"}}]});
        let request = ChatRequest {
            system: "sys".into(),
            messages: vec![
                ChatMessage::User { text: "u".into() },
                ChatMessage::Assistant {
                    text: String::new(),
                    tool_calls: vec![],
                    raw: Some(raw.clone()),
                },
                ChatMessage::ToolResult {
                    call_id: "c".into(),
                    name: "t".into(),
                    content: json!({"ok":true}),
                    is_error: false,
                },
                ChatMessage::Assistant {
                    text: "done".into(),
                    tool_calls: vec![ToolCall {
                        id: "d".into(),
                        name: "t".into(),
                        arguments: json!({"b":2}),
                    }],
                    raw: None,
                },
            ],
            tools: vec![ToolSpec {
                name: "t".into(),
                description: "d".into(),
                parameters: json!({"type":"object"}),
            }],
        };
        let body = build_request_body(&config, &request);
        assert_eq!(
            body["messages"][0],
            json!({"role":"system","content":"sys"})
        );
        assert_eq!(body["messages"][2], raw);
        assert_eq!(
            body["messages"][3],
            json!({"role":"tool","tool_call_id":"c","content":"{\"ok\":true}"})
        );
        assert_eq!(
            body["messages"][4]["tool_calls"][0]["function"]["arguments"],
            "{\"b\":2}"
        );
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(body["tools"][0]["function"]["name"], "t");
    }
}
