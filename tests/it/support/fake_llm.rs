//! Local fake Gemini, OpenAI-compatible and Anthropic servers speaking the wire format of
//! `llm-apis.md` §1, §2 and §3, for provider and agent tests.
//!
//! One server serves all three APIs:
//! - `POST /v1beta/models/{model}:{generateContent|streamGenerateContent}` (Gemini): requires
//!   `x-goog-api-key` or `?key=` (missing → 403 `PERMISSION_DENIED`; the key
//!   [`INVALID_API_KEY`] → 400 `API_KEY_INVALID`), and `alt=sse` for streaming.
//! - `POST {anything}/chat/completions` (OpenAI-compatible; use [`FakeLlm::openai_base_url`]).
//! - `POST /v1/messages` (Anthropic): requires `x-api-key` (missing or [`INVALID_API_KEY`] → 401
//!   `authentication_error`), `anthropic-version`, `model`, `max_tokens` and `messages`.
//!
//! Responses come from a script of [`Reply`]s served in order (an exhausted script answers 500).
//! Every request is captured so tests can assert what the client sent.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};

/// The API key the fake Gemini and Anthropic servers treat as invalid.
pub const INVALID_API_KEY: &str = "invalid-key";

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct CapturedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Value::Null` if it was not JSON).
    pub body: Value,
}

impl CapturedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
enum ReplyBody {
    Full(String),
    /// Written as separate body chunks (each flushed), optionally followed by a disconnect.
    Chunks {
        chunks: Vec<String>,
        abort: bool,
    },
}

/// One scripted response.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: ReplyBody,
    /// Waited before each body chunk (before the whole body for a full reply).
    delay: Duration,
}

impl Reply {
    /// A JSON body with this status.
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: ReplyBody::Full(serde_json::to_string_pretty(&body).expect("serialise")),
            delay: Duration::ZERO,
        }
    }

    /// A plain-text body with this status.
    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: ReplyBody::Full(body.to_owned()),
            delay: Duration::ZERO,
        }
    }

    /// A `200 text/event-stream` whose body is exactly these pieces, each sent as its own chunk
    /// (for hand-written framing: CRLF, comments, partial lines, EOF without a blank line).
    pub fn raw_stream<S: Into<String>>(pieces: impl IntoIterator<Item = S>) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            body: ReplyBody::Chunks {
                chunks: pieces.into_iter().map(Into::into).collect(),
                abort: false,
            },
            delay: Duration::ZERO,
        }
    }

    /// Gemini SSE: `data: <compact JSON>\r\n\r\n` per chunk, then the connection closes.
    pub fn gemini_stream(chunks: impl IntoIterator<Item = Value>) -> Self {
        Self::raw_stream(chunks.into_iter().map(|c| format!("data: {c}\r\n\r\n")))
    }

    /// OpenAI SSE: `data: <JSON>\n\n` per chunk, then `data: [DONE]\n\n`.
    pub fn openai_stream(chunks: impl IntoIterator<Item = Value>) -> Self {
        let mut pieces: Vec<String> = chunks
            .into_iter()
            .map(|c| format!("data: {c}\n\n"))
            .collect();
        pieces.push("data: [DONE]\n\n".into());
        Self::raw_stream(pieces)
    }

    /// A Google error body (§1.7).
    pub fn gemini_error(status: u16, grpc_status: &str, message: &str) -> Self {
        Self::json(
            status,
            json!({ "error": { "code": status, "message": message, "status": grpc_status } }),
        )
    }

    /// 429 `RESOURCE_EXHAUSTED` with `QuotaFailure`, `Help` and `RetryInfo.retryDelay` details.
    pub fn gemini_rate_limited(retry_delay: &str) -> Self {
        Self::json(
            429,
            json!({ "error": {
                "code": 429,
                "message": format!("You exceeded your current quota.\nPlease retry in {retry_delay}."),
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    { "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                      "violations": [{ "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                                       "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                                       "quotaDimensions": { "location": "global", "model": "gemini-2.5-flash" },
                                       "quotaValue": "10" }] },
                    { "@type": "type.googleapis.com/google.rpc.Help",
                      "links": [{ "description": "Learn more about Gemini API quotas",
                                  "url": "https://ai.google.dev/gemini-api/docs/rate-limits" }] },
                    { "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay }
                ]
            }}),
        )
    }

    /// An OpenAI-style error body (§2.5).
    pub fn openai_error(status: u16, message: &str, code: &str) -> Self {
        Self::json(
            status,
            json!({ "error": { "message": message, "type": "requests", "param": null, "code": code } }),
        )
    }

    /// Anthropic SSE: `event: <type>\ndata: <JSON>\n\n` per event, the name taken from the
    /// event's `type`.
    pub fn anthropic_stream(events: impl IntoIterator<Item = Value>) -> Self {
        Self::raw_stream(events.into_iter().map(|e| {
            let name = e["type"].as_str().unwrap_or("unknown").to_owned();
            format!("event: {name}\ndata: {e}\n\n")
        }))
    }

    /// An Anthropic error body (§3).
    pub fn anthropic_error(status: u16, error_type: &str, message: &str) -> Self {
        Self::json(
            status,
            json!({ "type": "error", "error": { "type": error_type, "message": message },
                    "request_id": "req_fake" }),
        )
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Waits this long before each body chunk.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Drops the connection after the last chunk instead of ending the body cleanly.
    pub fn then_disconnect(mut self) -> Self {
        if let ReplyBody::Chunks { abort, .. } = &mut self.body {
            *abort = true;
        }
        self
    }
}

/// Gemini chunk with text parts (one per string).
pub fn gemini_text_chunk(texts: &[&str]) -> Value {
    let parts: Vec<Value> = texts.iter().map(|t| json!({ "text": t })).collect();
    json!({ "candidates": [{ "content": { "parts": parts, "role": "model" }, "index": 0 }],
            "modelVersion": "gemini-2.5-flash", "responseId": "fake-response" })
}

/// A whole streamed Gemini answer that is just `text`.
pub fn gemini_text_reply(text: &str) -> Reply {
    Reply::gemini_stream([gemini_chunk(
        vec![json!({ "text": text })],
        Some("STOP"),
        None,
    )])
}

/// Gemini part with a function call and, optionally, its thought signature.
pub fn gemini_call_part(name: &str, args: Value, signature: Option<&str>) -> Value {
    let mut part = json!({ "functionCall": { "name": name, "args": args } });
    if let Some(signature) = signature {
        part["thoughtSignature"] = json!(signature);
    }
    part
}

/// Gemini chunk with the given parts, optional finish reason and usage.
pub fn gemini_chunk(parts: Vec<Value>, finish_reason: Option<&str>, usage: Option<Value>) -> Value {
    let mut candidate = json!({ "content": { "parts": parts, "role": "model" }, "index": 0 });
    if let Some(reason) = finish_reason {
        candidate["finishReason"] = json!(reason);
    }
    let mut chunk = json!({ "candidates": [candidate], "modelVersion": "gemini-2.5-flash", "responseId": "fake-response" });
    if let Some(usage) = usage {
        chunk["usageMetadata"] = usage;
    }
    chunk
}

/// OpenAI `chat.completion.chunk` with this delta and finish reason.
pub fn openai_chunk(delta: Value, finish_reason: Option<&str>) -> Value {
    json!({ "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_755_800_000, "model": "fake-model",
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }],
            "usage": null })
}

/// The final usage-only chunk sent with `stream_options.include_usage`.
pub fn openai_usage_chunk(prompt_tokens: u64, completion_tokens: u64) -> Value {
    json!({ "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_755_800_000, "model": "fake-model",
            "choices": [],
            "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                       "total_tokens": prompt_tokens + completion_tokens } })
}

/// The events of a whole streamed Anthropic message: `message_start`, the given content
/// block events, `message_delta` with `stop_reason` and usage, `message_stop`.
pub fn anthropic_message(
    blocks: Vec<Value>,
    stop_reason: &str,
    input_tokens: u64,
    output_tokens: u64,
) -> Vec<Value> {
    let mut events = vec![json!({ "type": "message_start", "message": {
        "id": "msg_fake", "type": "message", "role": "assistant", "content": [],
        "model": "claude-sonnet-4-5", "stop_reason": null, "stop_sequence": null,
        "usage": { "input_tokens": input_tokens, "output_tokens": 1 } } })];
    events.extend(blocks);
    events.push(json!({ "type": "message_delta",
        "delta": { "stop_reason": stop_reason, "stop_sequence": null },
        "usage": { "output_tokens": output_tokens } }));
    events.push(json!({ "type": "message_stop" }));
    events
}

/// The events of one text block at `index`, its text split into `pieces`.
pub fn anthropic_text_block(index: u64, pieces: &[&str]) -> Vec<Value> {
    let mut events = vec![json!({ "type": "content_block_start", "index": index,
                                  "content_block": { "type": "text", "text": "" } })];
    for piece in pieces {
        events.push(json!({ "type": "content_block_delta", "index": index,
                            "delta": { "type": "text_delta", "text": piece } }));
    }
    events.push(json!({ "type": "content_block_stop", "index": index }));
    events
}

/// The events of one `tool_use` block at `index`, its input JSON split into `json_pieces`.
pub fn anthropic_tool_use_block(
    index: u64,
    id: &str,
    name: &str,
    json_pieces: &[&str],
) -> Vec<Value> {
    let mut events = vec![json!({ "type": "content_block_start", "index": index,
        "content_block": { "type": "tool_use", "id": id, "name": name, "input": {} } })];
    for piece in json_pieces {
        events.push(json!({ "type": "content_block_delta", "index": index,
                            "delta": { "type": "input_json_delta", "partial_json": piece } }));
    }
    events.push(json!({ "type": "content_block_stop", "index": index }));
    events
}

/// A whole streamed Anthropic answer that is just `text`.
pub fn anthropic_text_reply(text: &str) -> Reply {
    Reply::anthropic_stream(anthropic_message(
        anthropic_text_block(0, &[text]),
        "end_turn",
        20,
        5,
    ))
}

#[derive(Default)]
struct FakeState {
    script: VecDeque<Reply>,
    requests: Vec<CapturedRequest>,
}

/// A running fake server; stopped when dropped.
pub struct FakeLlm {
    addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeLlm {
    /// Starts a fake on `127.0.0.1:0` that will answer with `script`, in order.
    pub async fn start(script: impl IntoIterator<Item = Reply>) -> Self {
        let state = Arc::new(Mutex::new(FakeState {
            script: script.into_iter().collect(),
            requests: Vec::new(),
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake LLM");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake LLM server");
        });
        Self { addr, state, task }
    }

    /// Gemini base URL (without `/v1beta`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// OpenAI-compatible base URL (with `/v1`).
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Appends replies to the script.
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<CapturedRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    /// Replies not served yet.
    pub fn remaining(&self) -> usize {
        self.state.lock().unwrap().script.len()
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(state): State<Arc<Mutex<FakeState>>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let captured = CapturedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    };
    let rejection = validate(&captured);
    let reply = {
        let mut state = state.lock().unwrap();
        state.requests.push(captured);
        match rejection {
            Some(reply) => reply,
            None => state.script.pop_front().unwrap_or_else(|| {
                Reply::gemini_error(500, "INTERNAL", "fake LLM script exhausted")
            }),
        }
    };
    into_response(reply)
}

/// Checks routing and auth the way the real services do; `Some` is the error reply.
fn validate(request: &CapturedRequest) -> Option<Reply> {
    if request.method != "POST" {
        return Some(Reply::gemini_error(
            405,
            "METHOD_NOT_ALLOWED",
            "only POST is faked",
        ));
    }
    if request.path.ends_with("/chat/completions") {
        if request.body.get("model").is_none() || request.body.get("messages").is_none() {
            return Some(Reply::openai_error(
                400,
                "model and messages are required",
                "invalid_request_error",
            ));
        }
        return None;
    }
    if request.path == "/v1/messages" {
        return validate_anthropic(request);
    }
    let Some(segment) = request.path.strip_prefix("/v1beta/models/") else {
        return Some(Reply::gemini_error(404, "NOT_FOUND", "unknown path"));
    };
    // The colon is part of one path segment: split on the last one.
    let Some((_model, action)) = segment.rsplit_once(':') else {
        return Some(Reply::gemini_error(404, "NOT_FOUND", "missing method"));
    };
    let query = request.query.as_deref().unwrap_or("");
    let query_key = query.split('&').find_map(|kv| kv.strip_prefix("key="));
    let Some(key) = request.header("x-goog-api-key").or(query_key) else {
        return Some(Reply::gemini_error(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers.",
        ));
    };
    if key == INVALID_API_KEY {
        return Some(Reply::json(
            400,
            json!({ "error": { "code": 400, "message": "API key not valid. Please pass a valid API key.",
                    "status": "INVALID_ARGUMENT",
                    "details": [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                  "reason": "API_KEY_INVALID", "domain": "googleapis.com" }] } }),
        ));
    }
    match action {
        "generateContent" => None,
        "streamGenerateContent" if query.split('&').any(|kv| kv == "alt=sse") => None,
        "streamGenerateContent" => Some(Reply::gemini_error(
            400,
            "INVALID_ARGUMENT",
            "the fake only streams with alt=sse",
        )),
        _ => Some(Reply::gemini_error(404, "NOT_FOUND", "unknown method")),
    }
}

fn validate_anthropic(request: &CapturedRequest) -> Option<Reply> {
    match request.header("x-api-key") {
        None | Some(INVALID_API_KEY) => {
            return Some(Reply::anthropic_error(
                401,
                "authentication_error",
                "invalid x-api-key",
            ))
        }
        Some(_) => {}
    }
    if request.header("anthropic-version").is_none() {
        return Some(Reply::anthropic_error(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
        ));
    }
    for field in ["model", "max_tokens", "messages"] {
        if request.body.get(field).is_none() {
            return Some(Reply::anthropic_error(
                400,
                "invalid_request_error",
                &format!("{field}: Field required"),
            ));
        }
    }
    None
}

fn into_response(reply: Reply) -> Response {
    let delay = reply.delay;
    let body = match reply.body {
        ReplyBody::Full(text) if delay.is_zero() => Body::from(text),
        ReplyBody::Full(text) => Body::from_stream(futures_util::stream::once(async move {
            tokio::time::sleep(delay).await;
            Ok::<_, std::io::Error>(Bytes::from(text))
        })),
        ReplyBody::Chunks { chunks, abort } => {
            let items: VecDeque<Option<String>> = chunks
                .into_iter()
                .map(Some)
                .chain(abort.then_some(None))
                .collect();
            Body::from_stream(futures_util::stream::unfold(
                items,
                move |mut items| async move {
                    let item = items.pop_front()?;
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let result = match item {
                        Some(chunk) => Ok(Bytes::from(chunk)),
                        None => Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "scripted disconnect",
                        )),
                    };
                    Some((result, items))
                },
            ))
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(reply.status).expect("valid status");
    for (name, value) in reply.headers {
        response.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(&value).expect("header value"),
        );
    }
    response
}
