//! Anthropic Messages API client with tool use and streaming (llm-apis.md §3).
//!
//! Always streams (`"stream": true`). Content blocks are accumulated by their `index`; a
//! `tool_use` block's `input_json_delta` pieces are joined and parsed once the stream ends (an
//! unparseable string is kept as a JSON string so the agent reports a tool error to the model).
//! The assistant message is kept in [`ModelResponse::raw`] as `{"role":"assistant","content":
//! [blocks]}` and sent back verbatim (thinking blocks and their signatures included).
//!
//! Prompt caching: the system prompt (and so the tools before it) and the newest message carry
//! `cache_control: ephemeral`, so each step of the tool loop re-reads the previous step's prefix
//! from the cache.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::openai_compat::parse_arguments;
use super::pricing::{anthropic_price, ModelPrice};
use super::retry::{self, Failure, RetryPolicy};
use super::sse::{SseDecoder, SseEvent};
use super::{
    ChatMessage, ChatRequest, DeltaSink, ModelError, ModelProvider, ModelResponse, TokenUsage,
    ToolCall,
};

pub const DEFAULT_ANTHROPIC_MODEL: &str = "claude-sonnet-4-5";
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Largest streamed answer we accumulate; a server that sends more is broken or hostile.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Clone)]
pub struct AnthropicConfig {
    pub api_key: String,
    pub model: String,
    /// Without `/v1`, e.g. `https://api.anthropic.com`.
    pub base_url: String,
    /// `max_tokens` of every request (the API requires it).
    pub max_output_tokens: u32,
    /// Connect timeout and the longest silence allowed while reading a response.
    pub timeout: Duration,
    /// Retries after the first attempt on 408/429/5xx/529/connect errors.
    pub max_retries: u32,
}

impl AnthropicConfig {
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            model: DEFAULT_ANTHROPIC_MODEL.to_owned(),
            base_url: DEFAULT_ANTHROPIC_BASE_URL.to_owned(),
            max_output_tokens: 16_384,
            timeout: Duration::from_secs(120),
            max_retries: 3,
        }
    }
}

impl fmt::Debug for AnthropicConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicConfig")
            .field("api_key", &"<redacted>")
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("max_output_tokens", &self.max_output_tokens)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    config: AnthropicConfig,
    client: reqwest::Client,
    retry: RetryPolicy,
    price: ModelPrice,
}

impl AnthropicProvider {
    pub fn new(config: AnthropicConfig) -> Result<Self, ModelError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .read_timeout(config.timeout)
            .build()
            .map_err(|e| ModelError::Unavailable(format!("cannot build HTTP client: {e}")))?;
        let retry = RetryPolicy::with_max_retries(config.max_retries);
        let price = anthropic_price(&config.model).unwrap_or(ModelPrice::FREE);
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

    async fn attempt(
        &self,
        body: &Value,
        on_delta: DeltaSink<'_>,
    ) -> Result<ModelResponse, Failure> {
        let url = format!("{}/v1/messages", self.config.base_url.trim_end_matches('/'));
        let request = self
            .client
            .post(url)
            .header("x-api-key", &self.config.api_key)
            .header("anthropic-version", ANTHROPIC_VERSION)
            .json(body);
        let response = retry::send(request).await?;
        let is_sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|ct| ct.starts_with("text/event-stream"));
        let mut acc = StreamAccumulator::default();
        if !is_sse {
            // A proxy that ignored `stream: true` answers one whole message.
            let text = response
                .text()
                .await
                .map_err(|e| retry::transport_failure(&e))?;
            let message: Value = serde_json::from_str(&text).map_err(|e| {
                Failure::fatal(ModelError::Protocol(format!("invalid JSON response: {e}")))
            })?;
            acc.on_whole_message(&message, on_delta);
            return acc.finish();
        }
        let mut stream = response.bytes_stream();
        let mut decoder = SseDecoder::new();
        let mut received = 0usize;
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
            received += bytes.len();
            if received > MAX_RESPONSE_BYTES {
                return Err(Failure::fatal(ModelError::Protocol(format!(
                    "response larger than {MAX_RESPONSE_BYTES} bytes"
                ))));
            }
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
impl ModelProvider for AnthropicProvider {
    fn name(&self) -> &'static str {
        "anthropic"
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
        let body = build_request_body(&self.config, request);
        retry::with_retries(&self.retry, |_| self.attempt(&body, on_delta)).await
    }
}

const EPHEMERAL: &str = "ephemeral";

/// The Messages request body for `request` (§3).
pub fn build_request_body(config: &AnthropicConfig, request: &ChatRequest) -> Value {
    let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in &request.messages {
        let (role, blocks) = match message {
            ChatMessage::User { text } => ("user", text_block(text).into_iter().collect()),
            ChatMessage::Assistant { raw: Some(raw), .. } if is_assistant_message(raw) => (
                "assistant",
                raw["content"].as_array().cloned().unwrap_or_default(),
            ),
            ChatMessage::Assistant {
                text, tool_calls, ..
            } => ("assistant", assistant_blocks(text, tool_calls)),
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
                let mut block =
                    json!({ "type": "tool_result", "tool_use_id": call_id, "content": text });
                if *is_error {
                    block["is_error"] = json!(true);
                }
                ("user", vec![block])
            }
        };
        if blocks.is_empty() {
            continue;
        }
        // Roles alternate: tool results and a following note share one user message, the
        // results first as the API requires.
        match messages.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => messages.push((role, blocks)),
        }
    }
    if let Some(block) = messages
        .last_mut()
        .and_then(|(_, blocks)| blocks.last_mut())
    {
        block["cache_control"] = json!({ "type": EPHEMERAL });
    }
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect();

    let mut body = json!({
        "model": config.model,
        "max_tokens": config.max_output_tokens,
        "messages": messages,
        "stream": true,
    });
    if !request.system.is_empty() {
        body["system"] = json!([{ "type": "text", "text": request.system,
                                  "cache_control": { "type": EPHEMERAL } }]);
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                let schema = if tool.parameters.is_null() {
                    json!({ "type": "object" })
                } else {
                    tool.parameters.clone()
                };
                json!({ "name": tool.name, "description": tool.description, "input_schema": schema })
            })
            .collect();
        body["tools"] = json!(tools);
    }
    body
}

/// The API rejects empty text blocks.
fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({ "type": "text", "text": text }))
}

fn is_assistant_message(raw: &Value) -> bool {
    raw.get("role").and_then(Value::as_str) == Some("assistant")
        && raw
            .get("content")
            .and_then(Value::as_array)
            .is_some_and(|blocks| !blocks.is_empty())
}

/// A turn we did not get from Anthropic (another provider, a transcript).
fn assistant_blocks(text: &str, tool_calls: &[ToolCall]) -> Vec<Value> {
    let mut blocks: Vec<Value> = text_block(text).into_iter().collect();
    for call in tool_calls {
        blocks.push(tool_use_block(&call.id, &call.name, &call.arguments));
    }
    blocks
}

/// `input` must be an object: anything else (arguments that did not parse) is sent as `{}`.
fn tool_use_block(id: &str, name: &str, arguments: &Value) -> Value {
    let input = match arguments {
        Value::Object(_) => arguments.clone(),
        _ => json!({}),
    };
    json!({ "type": "tool_use", "id": id, "name": name, "input": input })
}

fn parse_usage(usage: &Value) -> TokenUsage {
    let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
    // Cached prompt tokens are prompt tokens too: the context size and the (conservative) cost
    // estimate count them at the input price.
    TokenUsage {
        input_tokens: count("input_tokens")
            + count("cache_creation_input_tokens")
            + count("cache_read_input_tokens"),
        output_tokens: count("output_tokens"),
    }
}

/// The stream events we act on (§3); others (`ping`, `content_block_stop`, new ones) are ignored.
const KNOWN_EVENTS: [&str; 6] = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "message_delta",
    "message_stop",
    "error",
];

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Done,
}

/// One content block being streamed: the block as started, plus the `input_json_delta` pieces
/// of a `tool_use` block.
struct PendingBlock {
    block: Value,
    partial_json: String,
}

#[derive(Default)]
struct StreamAccumulator {
    /// Whether text has been handed to the caller (no retry after that).
    delivered: bool,
    done: bool,
    started: bool,
    blocks: BTreeMap<u64, PendingBlock>,
    usage: TokenUsage,
    stop_reason: Option<String>,
}

impl StreamAccumulator {
    fn on_event(&mut self, event: SseEvent, on_delta: DeltaSink<'_>) -> Result<Flow, Failure> {
        let data: Value = match serde_json::from_str(event.data.trim()) {
            Ok(data) => data,
            // Event types added later may carry anything.
            Err(_)
                if event
                    .event
                    .as_deref()
                    .is_some_and(|name| !KNOWN_EVENTS.contains(&name)) =>
            {
                return Ok(Flow::Continue)
            }
            Err(e) => {
                return Err(Failure::fatal(ModelError::Protocol(format!(
                    "invalid SSE event: {e}"
                ))))
            }
        };
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default();
        match kind {
            "message_start" => {
                self.started = true;
                if let Some(usage) = data.pointer("/message/usage") {
                    self.usage = parse_usage(usage);
                }
            }
            "content_block_start" => {
                let index = block_index(&data)?;
                let block = data.get("content_block").cloned().unwrap_or(Value::Null);
                self.blocks.insert(
                    index,
                    PendingBlock {
                        block,
                        partial_json: String::new(),
                    },
                );
            }
            "content_block_delta" => {
                let index = block_index(&data)?;
                let pending = self.blocks.get_mut(&index).ok_or_else(|| {
                    Failure::fatal(ModelError::Protocol(format!(
                        "delta for block {index} that never started"
                    )))
                })?;
                let delta = data.get("delta").cloned().unwrap_or(Value::Null);
                let piece = |key: &str| delta.get(key).and_then(Value::as_str).unwrap_or("");
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = piece("text");
                        append(&mut pending.block, "text", text);
                        if !text.is_empty() {
                            self.delivered = true;
                            on_delta(text);
                        }
                    }
                    Some("input_json_delta") => {
                        pending.partial_json.push_str(piece("partial_json"))
                    }
                    Some("thinking_delta") => {
                        append(&mut pending.block, "thinking", piece("thinking"))
                    }
                    Some("signature_delta") => {
                        pending.block["signature"] = json!(piece("signature"))
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(reason.to_owned());
                }
                if let Some(usage) = data.get("usage") {
                    // Cumulative counts; input counts only where this event repeats them.
                    let update = parse_usage(usage);
                    self.usage.output_tokens = update.output_tokens;
                    if update.input_tokens > 0 {
                        self.usage.input_tokens = update.input_tokens;
                    }
                }
            }
            "message_stop" => {
                self.done = true;
                return Ok(Flow::Done);
            }
            "error" => {
                let detail = data
                    .get("error")
                    .map(Value::to_string)
                    .unwrap_or_else(|| data.to_string());
                let error = ModelError::Unavailable(format!("error in stream: {detail}"));
                return Err(if self.delivered {
                    Failure::fatal(error)
                } else {
                    Failure::retryable(error)
                });
            }
            // `ping`, `content_block_stop` and event types added later.
            _ => {}
        }
        Ok(Flow::Continue)
    }

    /// A non-streamed `message` (§3 response body).
    fn on_whole_message(&mut self, message: &Value, on_delta: DeltaSink<'_>) {
        self.started = message.get("type").and_then(Value::as_str) == Some("message");
        self.done = true;
        if let Some(usage) = message.get("usage") {
            self.usage = parse_usage(usage);
        }
        self.stop_reason = message
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let blocks = message.get("content").and_then(Value::as_array);
        for (index, block) in blocks.into_iter().flatten().enumerate() {
            if let Some(text) = block.get("text").and_then(Value::as_str) {
                if !text.is_empty() {
                    on_delta(text);
                }
            }
            let partial_json = block.get("input").map(Value::to_string).unwrap_or_default();
            self.blocks.insert(
                index as u64,
                PendingBlock {
                    block: block.clone(),
                    partial_json,
                },
            );
        }
    }

    fn finish(self) -> Result<ModelResponse, Failure> {
        if !self.started {
            return Err(Failure::retryable(ModelError::Protocol(
                "stream without message_start".into(),
            )));
        }
        if !self.done {
            let error = ModelError::Unavailable("stream ended before message_stop".into());
            return Err(if self.delivered {
                Failure::fatal(error)
            } else {
                Failure::retryable(error)
            });
        }
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        let mut content = Vec::new();
        for PendingBlock {
            mut block,
            partial_json,
        } in self.blocks.into_values()
        {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => {
                    let piece = block.get("text").and_then(Value::as_str).unwrap_or("");
                    if piece.is_empty() {
                        continue;
                    }
                    text.push_str(piece);
                }
                Some("tool_use") => {
                    let id = block.get("id").and_then(Value::as_str).unwrap_or_default();
                    let name = block
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if id.is_empty() || name.is_empty() {
                        return Err(Failure::fatal(ModelError::Protocol(
                            "tool_use block without id or name".into(),
                        )));
                    }
                    let arguments = parse_arguments(&partial_json);
                    tool_calls.push(ToolCall {
                        id: id.to_owned(),
                        name: name.to_owned(),
                        arguments: arguments.clone(),
                    });
                    block = tool_use_block(id, name, &arguments);
                }
                _ => {}
            }
            content.push(block);
        }
        if self.stop_reason.as_deref() == Some("refusal") && text.is_empty() {
            return Err(Failure::fatal(ModelError::Rejected {
                status: 200,
                message: "the model refused to answer".into(),
            }));
        }
        let raw = (!content.is_empty()).then(|| json!({ "role": "assistant", "content": content }));
        Ok(ModelResponse {
            text,
            tool_calls,
            usage: self.usage,
            raw,
        })
    }
}

fn block_index(data: &Value) -> Result<u64, Failure> {
    data.get("index").and_then(Value::as_u64).ok_or_else(|| {
        Failure::fatal(ModelError::Protocol(
            "content block event without an index".into(),
        ))
    })
}

fn append(block: &mut Value, key: &str, piece: &str) {
    let mut joined = block
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    joined.push_str(piece);
    block[key] = json!(joined);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::provider::ToolSpec;

    fn event(name: &str, data: Value) -> SseEvent {
        SseEvent {
            event: Some(name.into()),
            data: data.to_string(),
        }
    }

    #[test]
    fn blocks_by_index_with_split_json_and_usage() {
        let mut acc = StreamAccumulator::default();
        let sink = |_: &str| {};
        for e in [
            event(
                "message_start",
                json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"usage":{"input_tokens":10,"cache_read_input_tokens":90,"output_tokens":1}}}),
            ),
            event(
                "content_block_start",
                json!({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}),
            ),
            event(
                "content_block_delta",
                json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}),
            ),
            event(
                "content_block_delta",
                json!({"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"c2ln"}}),
            ),
            event(
                "content_block_start",
                json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"terminal","input":{}}}),
            ),
            event(
                "content_block_delta",
                json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"comm"}}),
            ),
            event("ping", json!({"type":"ping"})),
            event(
                "content_block_delta",
                json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"and\": \"ls\"}"}}),
            ),
            event(
                "content_block_stop",
                json!({"type":"content_block_stop","index":1}),
            ),
            event(
                "message_delta",
                json!({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":42}}),
            ),
        ] {
            assert_eq!(acc.on_event(e, &sink).unwrap(), Flow::Continue);
        }
        assert_eq!(
            acc.on_event(event("message_stop", json!({"type":"message_stop"})), &sink)
                .unwrap(),
            Flow::Done
        );
        let response = acc.finish().unwrap();
        assert_eq!(
            response.tool_calls,
            vec![ToolCall {
                id: "toolu_1".into(),
                name: "terminal".into(),
                arguments: json!({"command":"ls"})
            }]
        );
        assert_eq!(
            response.usage,
            TokenUsage {
                input_tokens: 100,
                output_tokens: 42
            }
        );
        assert_eq!(
            response.raw.unwrap()["content"],
            json!([
                {"type":"thinking","thinking":"hmm","signature":"c2ln"},
                {"type":"tool_use","id":"toolu_1","name":"terminal","input":{"command":"ls"}}
            ])
        );
    }

    #[test]
    fn unknown_events_are_ignored_whatever_they_carry() {
        let mut acc = StreamAccumulator::default();
        let unknown = SseEvent {
            event: Some("future_event".into()),
            data: "not json".into(),
        };
        assert_eq!(acc.on_event(unknown, &|_| {}).unwrap(), Flow::Continue);
        let broken = SseEvent {
            event: Some("message_start".into()),
            data: "not json".into(),
        };
        assert!(!acc.on_event(broken, &|_| {}).unwrap_err().retryable);
    }

    #[test]
    fn a_stream_cut_before_message_stop_is_retryable() {
        let mut acc = StreamAccumulator::default();
        acc.on_event(
            event(
                "message_start",
                json!({"type":"message_start","message":{"usage":{}}}),
            ),
            &|_| {},
        )
        .unwrap();
        let failure = acc.finish().unwrap_err();
        assert!(failure.retryable);
    }

    #[test]
    fn request_body_merges_results_and_marks_cache_breakpoints() {
        let config = AnthropicConfig::new("k");
        let request = ChatRequest {
            system: "sys".into(),
            messages: vec![
                ChatMessage::User { text: "u".into() },
                ChatMessage::Assistant {
                    text: String::new(),
                    tool_calls: vec![
                        ToolCall {
                            id: "a".into(),
                            name: "t".into(),
                            arguments: json!({"x":1}),
                        },
                        ToolCall {
                            id: "b".into(),
                            name: "t".into(),
                            arguments: json!("{broken"),
                        },
                    ],
                    raw: None,
                },
                ChatMessage::ToolResult {
                    call_id: "a".into(),
                    name: "t".into(),
                    content: json!({"ok":true}),
                    is_error: false,
                },
                ChatMessage::ToolResult {
                    call_id: "b".into(),
                    name: "t".into(),
                    content: json!("bad arguments"),
                    is_error: true,
                },
                ChatMessage::User {
                    text: "note".into(),
                },
            ],
            tools: vec![ToolSpec {
                name: "t".into(),
                description: "d".into(),
                parameters: json!({"type":"object"}),
            }],
        };
        let body = build_request_body(&config, &request);
        assert_eq!(body["model"], DEFAULT_ANTHROPIC_MODEL);
        assert_eq!(body["max_tokens"], 16_384);
        assert_eq!(
            body["system"],
            json!([{"type":"text","text":"sys","cache_control":{"type":"ephemeral"}}])
        );
        assert_eq!(
            body["tools"],
            json!([{"name":"t","description":"d","input_schema":{"type":"object"}}])
        );
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[1]["content"][1]["input"], json!({}));
        assert_eq!(
            messages[2],
            json!({"role":"user","content":[
                {"type":"tool_result","tool_use_id":"a","content":"{\"ok\":true}"},
                {"type":"tool_result","tool_use_id":"b","content":"bad arguments","is_error":true},
                {"type":"text","text":"note","cache_control":{"type":"ephemeral"}}
            ]})
        );
    }
}
