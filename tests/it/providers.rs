//! Model providers against the local fakes (`support::fake_llm`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use codekraft::agent::provider::retry::RetryPolicy;
use codekraft::agent::provider::{
    AnthropicConfig, AnthropicProvider, ChatMessage, ChatRequest, GeminiConfig, GeminiProvider,
    ModelError, ModelProvider, ModelResponse, OfflineProvider, OpenAiCompatProvider, OpenAiConfig,
    ReplayProvider, TokenUsage, ToolCall, ToolSpec, REPLY_MARKER, TITLE_MARKER,
};
use serde_json::{json, Value};

use crate::support::fake_llm::{
    anthropic_message, anthropic_text_block, anthropic_text_reply, anthropic_tool_use_block,
    gemini_call_part, gemini_chunk, gemini_text_chunk, openai_chunk, openai_usage_chunk, FakeLlm,
    Reply, INVALID_API_KEY,
};

/// Collects streamed deltas.
#[derive(Default)]
struct Deltas(Mutex<Vec<String>>);

impl Deltas {
    fn sink(&self) -> impl Fn(&str) + Send + Sync + '_ {
        move |d: &str| self.0.lock().unwrap().push(d.to_owned())
    }

    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

fn fast_retries(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        ..RetryPolicy::default()
    }
}

fn gemini(fake: &FakeLlm) -> GeminiProvider {
    let config = GeminiConfig {
        base_url: fake.base_url(),
        timeout: Duration::from_secs(5),
        ..GeminiConfig::new("test-key")
    };
    GeminiProvider::new(config)
        .unwrap()
        .with_retry_policy(fast_retries(3))
}

fn openai(fake: &FakeLlm) -> OpenAiCompatProvider {
    let config = OpenAiConfig {
        api_key: Some("sk-test".into()),
        timeout: Duration::from_secs(5),
        ..OpenAiConfig::new(fake.openai_base_url(), "qwen3:8b")
    };
    OpenAiCompatProvider::new(config)
        .unwrap()
        .with_retry_policy(fast_retries(3))
}

fn tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "terminal".into(),
            description: "Run a shell command in the sandbox.".into(),
            parameters: json!({ "type": "object", "properties": { "command": { "type": "string" } }, "required": ["command"] }),
        },
        ToolSpec {
            name: "createOrUpdateFiles".into(),
            description: "Write files.".into(),
            parameters: json!({ "type": "object", "properties": { "files": { "type": "array" } } }),
        },
        ToolSpec {
            name: "readFiles".into(),
            description: "Read files.".into(),
            parameters: json!({ "type": "object", "properties": { "files": { "type": "array" } } }),
        },
    ]
}

fn user_request(text: &str) -> ChatRequest {
    ChatRequest {
        system: "You build Next.js apps.".into(),
        messages: vec![ChatMessage::User { text: text.into() }],
        tools: tools(),
    }
}

fn assistant_turn(response: &ModelResponse) -> ChatMessage {
    ChatMessage::Assistant {
        text: response.text.clone(),
        tool_calls: response.tool_calls.clone(),
        raw: response.raw.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Gemini

#[tokio::test]
async fn gemini_streams_text_deltas_and_usage() {
    let fake = FakeLlm::start([Reply::gemini_stream([
        gemini_chunk(vec![json!({ "text": "**Planning**", "thought": true })], None, None),
        gemini_text_chunk(&["Hel"]),
        gemini_text_chunk(&["lo", " world"]),
        gemini_chunk(
            vec![json!({ "text": "", "thoughtSignature": "U0lH" })],
            Some("STOP"),
            Some(json!({ "promptTokenCount": 51, "candidatesTokenCount": 9, "thoughtsTokenCount": 55, "totalTokenCount": 115 })),
        ),
    ])
    .with_delay(Duration::from_millis(5))])
    .await;
    let provider = gemini(&fake);
    let deltas = Deltas::default();

    let response = provider
        .complete(&user_request("hi"), &deltas.sink())
        .await
        .unwrap();

    assert_eq!(deltas.all(), ["Hel", "lo", " world"]);
    assert_eq!(response.text, "Hello world");
    assert!(response.tool_calls.is_empty());
    assert_eq!(
        response.usage,
        TokenUsage {
            input_tokens: 51,
            output_tokens: 64
        }
    );
    let parts = response.raw.as_ref().unwrap()["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 5, "every streamed part is kept, in order");
    assert_eq!(parts[4], json!({ "text": "", "thoughtSignature": "U0lH" }));
    assert!(provider.estimate_cost_usd(response.usage) > 0.0);

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        request.path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    );
    assert_eq!(request.query.as_deref(), Some("alt=sse"));
    assert_eq!(request.header("x-goog-api-key"), Some("test-key"));
    assert_eq!(
        request.body["systemInstruction"],
        json!({ "parts": [{ "text": "You build Next.js apps." }] })
    );
    assert_eq!(
        request.body["contents"],
        json!([{ "role": "user", "parts": [{ "text": "hi" }] }])
    );
    let declarations = request.body["tools"][0]["functionDeclarations"]
        .as_array()
        .unwrap();
    assert_eq!(declarations.len(), 3);
    assert_eq!(declarations[0]["name"], "terminal");
    assert_eq!(
        declarations[0]["parametersJsonSchema"]["required"],
        json!(["command"])
    );
}

#[tokio::test]
async fn gemini_function_call_round_trip_echoes_signature_and_sends_function_response() {
    let signature = "CiQBjz1rX3cD0mVf1eXampleSignature==";
    let fake = FakeLlm::start([
        Reply::gemini_stream([gemini_chunk(
            vec![
                gemini_call_part("terminal", json!({ "command": "ls app" }), Some(signature)),
                gemini_call_part("readFiles", json!({ "files": ["app/page.tsx"] }), None),
            ],
            Some("STOP"),
            Some(json!({ "promptTokenCount": 58, "candidatesTokenCount": 15, "thoughtsTokenCount": 52 })),
        )]),
        Reply::gemini_stream([gemini_chunk(vec![json!({ "text": "All done." })], Some("STOP"), None)]),
    ])
    .await;
    let provider = gemini(&fake);
    let deltas = Deltas::default();
    let mut request = user_request("list the app");

    let first = provider.complete(&request, &deltas.sink()).await.unwrap();
    assert_eq!(first.text, "");
    assert_eq!(first.tool_calls.len(), 2);
    assert_eq!(first.tool_calls[0].name, "terminal");
    assert_eq!(
        first.tool_calls[0].arguments,
        json!({ "command": "ls app" })
    );
    assert_eq!(
        first.tool_calls[1].arguments,
        json!({ "files": ["app/page.tsx"] })
    );
    assert_ne!(
        first.tool_calls[0].id, first.tool_calls[1].id,
        "generated ids are unique"
    );
    assert_eq!(
        first.usage,
        TokenUsage {
            input_tokens: 58,
            output_tokens: 67
        }
    );

    request.messages.push(assistant_turn(&first));
    request.messages.push(ChatMessage::ToolResult {
        call_id: first.tool_calls[0].id.clone(),
        name: "terminal".into(),
        content: json!({ "stdout": "page.tsx\n", "exitCode": 0 }),
        is_error: false,
    });
    request.messages.push(ChatMessage::ToolResult {
        call_id: first.tool_calls[1].id.clone(),
        name: "readFiles".into(),
        content: json!("no such file"),
        is_error: true,
    });
    let second = provider.complete(&request, &deltas.sink()).await.unwrap();
    assert_eq!(second.text, "All done.");
    assert!(second.tool_calls.is_empty());

    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let contents = requests[1].body["contents"].as_array().unwrap().clone();
    assert_eq!(contents.len(), 3);
    assert_eq!(
        contents[1],
        json!({ "role": "model", "parts": [
            { "functionCall": { "name": "terminal", "args": { "command": "ls app" } }, "thoughtSignature": signature },
            { "functionCall": { "name": "readFiles", "args": { "files": ["app/page.tsx"] } } }
        ] }),
        "the model turn is echoed verbatim"
    );
    assert_eq!(
        contents[2],
        json!({ "role": "user", "parts": [
            { "functionResponse": { "name": "terminal", "response": { "output": { "stdout": "page.tsx\n", "exitCode": 0 } } } },
            { "functionResponse": { "name": "readFiles", "response": { "error": "no such file" } } }
        ] })
    );
}

#[tokio::test]
async fn gemini_call_ids_from_the_server_are_kept_and_echoed() {
    let fake = FakeLlm::start([
        Reply::gemini_stream([gemini_chunk(
            vec![json!({ "functionCall": { "name": "terminal", "args": { "command": "pwd" }, "id": "call_1" }, "thoughtSignature": "EpYE" })],
            None,
            None,
        )]),
        Reply::gemini_stream([gemini_text_chunk(&["ok"])]),
    ])
    .await;
    let provider = gemini(&fake);
    let mut request = user_request("where am I");
    let first = provider.complete(&request, &|_| {}).await.unwrap();
    assert_eq!(first.tool_calls[0].id, "call_1");
    request.messages.push(assistant_turn(&first));
    request.messages.push(ChatMessage::ToolResult {
        call_id: "call_1".into(),
        name: "terminal".into(),
        content: json!("/home"),
        is_error: false,
    });
    provider.complete(&request, &|_| {}).await.unwrap();
    let body = &fake.requests()[1].body;
    assert_eq!(
        body["contents"][2]["parts"][0]["functionResponse"]["id"],
        "call_1"
    );
}

#[tokio::test]
async fn gemini_retries_429_honouring_retry_info() {
    let fake = FakeLlm::start([
        Reply::gemini_rate_limited("0.3s"),
        Reply::gemini_stream([gemini_text_chunk(&["after the wait"])]),
    ])
    .await;
    let provider = gemini(&fake);
    let started = Instant::now();

    let response = provider
        .complete(&user_request("hi"), &|_| {})
        .await
        .unwrap();

    assert_eq!(response.text, "after the wait");
    assert_eq!(fake.request_count(), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waited {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn gemini_retries_5xx_then_gives_up() {
    let fake = FakeLlm::start([
        Reply::gemini_error(
            503,
            "UNAVAILABLE",
            "The model is overloaded. Please try again later.",
        ),
        Reply::gemini_error(500, "INTERNAL", "oops"),
        Reply::gemini_stream([gemini_text_chunk(&["ok"])]),
    ])
    .await;
    let provider = gemini(&fake);
    assert_eq!(
        provider
            .complete(&user_request("hi"), &|_| {})
            .await
            .unwrap()
            .text,
        "ok"
    );
    assert_eq!(fake.request_count(), 3);

    let fake =
        FakeLlm::start((0..5).map(|_| Reply::gemini_error(503, "UNAVAILABLE", "overloaded"))).await;
    let provider = gemini(&fake).with_retry_policy(fast_retries(2));
    let err = provider
        .complete(&user_request("hi"), &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, ModelError::Unavailable(ref m) if m.contains("overloaded")),
        "{err:?}"
    );
    assert_eq!(fake.request_count(), 3, "first attempt + 2 retries");
}

#[tokio::test]
async fn gemini_400_is_not_retried() {
    let fake = FakeLlm::start([
        Reply::gemini_error(
            400,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received. Unknown name \"foo\"",
        ),
        Reply::gemini_stream([gemini_text_chunk(&["never served"])]),
    ])
    .await;
    let provider = gemini(&fake);

    let err = provider
        .complete(&user_request("hi"), &|_| {})
        .await
        .unwrap_err();

    match err {
        ModelError::Rejected { status, message } => {
            assert_eq!(status, 400);
            assert!(message.contains("Unknown name"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn gemini_invalid_or_missing_key_is_rejected_once() {
    let fake = FakeLlm::start([]).await;
    let config = GeminiConfig {
        base_url: fake.base_url(),
        ..GeminiConfig::new(INVALID_API_KEY)
    };
    let provider = GeminiProvider::new(config)
        .unwrap()
        .with_retry_policy(fast_retries(3));
    let err = provider
        .complete(&user_request("hi"), &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, ModelError::Rejected { status: 400, ref message } if message.contains("API key not valid")),
        "{err:?}"
    );
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn gemini_never_retries_after_text_reached_the_caller() {
    let fake = FakeLlm::start([
        Reply::gemini_stream([gemini_text_chunk(&["partial "])])
            .with_delay(Duration::from_millis(5))
            .then_disconnect(),
        Reply::gemini_stream([gemini_text_chunk(&["second try"])]),
    ])
    .await;
    let provider = gemini(&fake);
    let deltas = Deltas::default();

    let err = provider
        .complete(&user_request("hi"), &deltas.sink())
        .await
        .unwrap_err();

    assert!(matches!(err, ModelError::Unavailable(_)), "{err:?}");
    assert_eq!(deltas.all(), ["partial "]);
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn gemini_retries_a_disconnect_before_any_text() {
    let fake = FakeLlm::start([
        Reply::raw_stream(["data: {\"candidates\": [{\"content\": {\"parts\": [{\"te"])
            .then_disconnect(),
        Reply::gemini_stream([gemini_text_chunk(&["second try"])]),
    ])
    .await;
    let provider = gemini(&fake);
    let response = provider
        .complete(&user_request("hi"), &|_| {})
        .await
        .unwrap();
    assert_eq!(response.text, "second try");
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn gemini_tolerates_sse_framing_edge_cases() {
    // CRLF separators split across chunks, comment lines, one JSON spread over two `data:`
    // lines, a bare `\r` separator, and EOF without a trailing blank line.
    let fake = FakeLlm::start([Reply::raw_stream([
        ": keep-alive\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"A\"}],\"role\": \"model\"}}]}\r",
        "\n\r\n",
        "data: {\"candidates\": [{\"content\":\r\ndata: {\"parts\": [{\"text\": \"B\"}],\"role\": \"model\"}}]}\r\n\r\n",
        ": another comment\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"C\"}],\"role\": \"model\"}}]}\r\r",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"D\"}],\"role\": \"model\"},\"finishReason\": \"STOP\"}],",
        "\"usageMetadata\": {\"promptTokenCount\": 3,\"candidatesTokenCount\": 4}}",
    ])
    .with_delay(Duration::from_millis(5))])
    .await;
    let provider = gemini(&fake);
    let deltas = Deltas::default();

    let response = provider
        .complete(&user_request("hi"), &deltas.sink())
        .await
        .unwrap();

    assert_eq!(deltas.all(), ["A", "B", "C", "D"]);
    assert_eq!(
        response.usage,
        TokenUsage {
            input_tokens: 3,
            output_tokens: 4
        }
    );
}

#[tokio::test]
async fn gemini_blocked_prompt_is_rejected() {
    let fake = FakeLlm::start([Reply::gemini_stream([json!({
        "promptFeedback": { "blockReason": "SAFETY" },
        "usageMetadata": { "promptTokenCount": 8 }
    })])])
    .await;
    let err = gemini(&fake)
        .complete(&user_request("bad"), &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, ModelError::Rejected { ref message, .. } if message.contains("SAFETY")),
        "{err:?}"
    );
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn gemini_read_timeout_is_unavailable() {
    let fake = FakeLlm::start([
        Reply::gemini_stream([gemini_text_chunk(&["late"])]).with_delay(Duration::from_secs(3))
    ])
    .await;
    let config = GeminiConfig {
        base_url: fake.base_url(),
        timeout: Duration::from_millis(300),
        max_retries: 0,
        ..GeminiConfig::new("test-key")
    };
    let provider = GeminiProvider::new(config).unwrap();
    let started = Instant::now();
    let err = provider
        .complete(&user_request("hi"), &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, ModelError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn gemini_unary_generate_content() {
    let fake = FakeLlm::start([Reply::json(
        200,
        json!({ "candidates": [{ "content": { "role": "model", "parts": [
                    { "functionCall": { "name": "terminal", "args": { "command": "ls" } }, "thoughtSignature": "c2ln" }
                ] }, "finishReason": "STOP", "index": 0 }],
                "usageMetadata": { "promptTokenCount": 58, "candidatesTokenCount": 15, "totalTokenCount": 73 },
                "modelVersion": "gemini-2.5-flash", "responseId": "r1" }),
    )])
    .await;
    let response = gemini(&fake).generate(&user_request("hi")).await.unwrap();
    assert_eq!(response.tool_calls[0].name, "terminal");
    assert_eq!(
        response.usage,
        TokenUsage {
            input_tokens: 58,
            output_tokens: 15
        }
    );
    assert_eq!(
        response.raw.unwrap()["parts"][0]["thoughtSignature"],
        "c2ln"
    );
    let request = &fake.requests()[0];
    assert_eq!(
        request.path,
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(request.query, None);
}

#[tokio::test]
async fn connect_errors_are_retried_then_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = GeminiConfig {
        base_url: format!("http://{addr}"),
        ..GeminiConfig::new("k")
    };
    let provider = GeminiProvider::new(config)
        .unwrap()
        .with_retry_policy(fast_retries(2));
    let err = provider
        .complete(&user_request("hi"), &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, ModelError::Unavailable(ref m) if m.contains("connect")),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// OpenAI-compatible

#[tokio::test]
async fn openai_streams_text_and_sends_the_documented_request() {
    let fake = FakeLlm::start([Reply::openai_stream([
        openai_chunk(json!({ "role": "assistant", "content": "" }), None),
        openai_chunk(json!({ "content": "Hello" }), None),
        openai_chunk(json!({ "content": " there" }), None),
        openai_chunk(json!({}), Some("stop")),
        openai_usage_chunk(12, 2),
    ])])
    .await;
    let provider = openai(&fake);
    let deltas = Deltas::default();

    let response = provider
        .complete(&user_request("hi"), &deltas.sink())
        .await
        .unwrap();

    assert_eq!(deltas.all(), ["Hello", " there"]);
    assert_eq!(response.text, "Hello there");
    assert_eq!(
        response.usage,
        TokenUsage {
            input_tokens: 12,
            output_tokens: 2
        }
    );
    assert_eq!(provider.estimate_cost_usd(response.usage), 0.0);

    let request = &fake.requests()[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.header("authorization"), Some("Bearer sk-test"));
    assert_eq!(request.body["model"], "qwen3:8b");
    assert_eq!(request.body["stream"], true);
    assert_eq!(
        request.body["stream_options"],
        json!({ "include_usage": true })
    );
    assert_eq!(
        request.body["messages"],
        json!([{ "role": "system", "content": "You build Next.js apps." }, { "role": "user", "content": "hi" }])
    );
    assert_eq!(request.body["tools"][0]["type"], "function");
    assert_eq!(request.body["tools"][0]["function"]["name"], "terminal");
    assert_eq!(
        request.body["tools"][0]["function"]["parameters"]["required"],
        json!(["command"])
    );
}

#[tokio::test]
async fn openai_tool_call_split_across_chunks_round_trip() {
    let fake = FakeLlm::start([
        Reply::openai_stream([
            openai_chunk(
                json!({ "role": "assistant", "content": null, "tool_calls": [
                    { "index": 0, "id": "call_abc123", "type": "function", "function": { "name": "terminal", "arguments": "" } }
                ] }),
                None,
            ),
            openai_chunk(json!({ "tool_calls": [{ "index": 0, "function": { "arguments": "{\"comm" } }] }), None),
            openai_chunk(json!({ "tool_calls": [
                { "index": 0, "id": null, "function": { "name": null, "arguments": "and\":\"ls " } },
                { "index": 1, "id": "call_def", "type": "function", "function": { "name": "readFiles", "arguments": "{\"files\":" } }
            ] }), None),
            openai_chunk(json!({ "tool_calls": [
                { "index": 0, "function": { "arguments": "app\"}" } },
                { "index": 1, "function": { "arguments": "[\"app/page.tsx\"]}" } }
            ] }), None),
            openai_chunk(json!({}), Some("tool_calls")),
            openai_usage_chunk(70, 15),
        ])
        .with_delay(Duration::from_millis(3)),
        Reply::openai_stream([openai_chunk(json!({ "content": "done" }), Some("stop"))]),
    ])
    .await;
    let provider = openai(&fake);
    let mut request = user_request("list");

    let first = provider.complete(&request, &|_| {}).await.unwrap();

    assert_eq!(
        first.tool_calls,
        vec![
            ToolCall {
                id: "call_abc123".into(),
                name: "terminal".into(),
                arguments: json!({ "command": "ls app" })
            },
            ToolCall {
                id: "call_def".into(),
                name: "readFiles".into(),
                arguments: json!({ "files": ["app/page.tsx"] })
            },
        ]
    );
    assert_eq!(
        first.usage,
        TokenUsage {
            input_tokens: 70,
            output_tokens: 15
        }
    );

    request.messages.push(assistant_turn(&first));
    request.messages.push(ChatMessage::ToolResult {
        call_id: "call_abc123".into(),
        name: "terminal".into(),
        content: json!("page.tsx\n"),
        is_error: false,
    });
    request.messages.push(ChatMessage::ToolResult {
        call_id: "call_def".into(),
        name: "readFiles".into(),
        content: json!({ "app/page.tsx": "export default …" }),
        is_error: false,
    });
    assert_eq!(
        provider.complete(&request, &|_| {}).await.unwrap().text,
        "done"
    );

    let messages = fake.requests()[1].body["messages"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        messages[2],
        json!({ "role": "assistant", "content": null, "tool_calls": [
            { "id": "call_abc123", "type": "function", "function": { "name": "terminal", "arguments": "{\"command\":\"ls app\"}" } },
            { "id": "call_def", "type": "function", "function": { "name": "readFiles", "arguments": "{\"files\":[\"app/page.tsx\"]}" } }
        ] })
    );
    assert_eq!(
        messages[3],
        json!({ "role": "tool", "tool_call_id": "call_abc123", "content": "page.tsx\n" })
    );
    assert_eq!(
        messages[4],
        json!({ "role": "tool", "tool_call_id": "call_def", "content": "{\"app/page.tsx\":\"export default …\"}" })
    );
}

#[tokio::test]
async fn openai_unparseable_arguments_become_a_string() {
    let fake = FakeLlm::start([Reply::openai_stream([
        openai_chunk(
            json!({ "tool_calls": [{ "index": 0, "id": "call_x", "type": "function",
                                     "function": { "name": "terminal", "arguments": "{\"command\": ls" } }] }),
            None,
        ),
        openai_chunk(json!({}), Some("tool_calls")),
    ])])
    .await;

    let response = openai(&fake)
        .complete(&user_request("hi"), &|_| {})
        .await
        .unwrap();

    assert_eq!(response.tool_calls.len(), 1);
    assert_eq!(response.tool_calls[0].name, "terminal");
    assert_eq!(
        response.tool_calls[0].arguments,
        Value::String("{\"command\": ls".into())
    );
}

#[tokio::test]
async fn openai_ollama_whole_call_in_one_chunk_and_eof_without_done() {
    // Ollama style single-chunk call; the stream ends without `data: [DONE]` or a blank line.
    let fake = FakeLlm::start([Reply::raw_stream([
        "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"id\":\"call_x1y2z3\",\"index\":0,\"type\":\"function\",\"function\":{\"name\":\"terminal\",\"arguments\":\"{\\\"command\\\":\\\"ls\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
        ": comment\n",
        "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}],",
        "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6,\"total_tokens\":11}}",
    ])
    .with_delay(Duration::from_millis(3))])
    .await;

    let response = openai(&fake)
        .complete(&user_request("hi"), &|_| {})
        .await
        .unwrap();

    assert_eq!(
        response.tool_calls,
        vec![ToolCall {
            id: "call_x1y2z3".into(),
            name: "terminal".into(),
            arguments: json!({ "command": "ls" })
        }]
    );
    assert_eq!(
        response.usage,
        TokenUsage {
            input_tokens: 5,
            output_tokens: 6
        }
    );
}

#[tokio::test]
async fn openai_crlf_comments_and_multi_line_data() {
    let fake = FakeLlm::start([Reply::raw_stream([
        ": OPENROUTER PROCESSING\r\n\r\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":\r\ndata: {\"content\":\"x\"}}]}\r\n\r\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"y\"}}]}\r\n\r\ndata: [DONE]",
    ])])
    .await;
    let deltas = Deltas::default();
    let response = openai(&fake)
        .complete(&user_request("hi"), &deltas.sink())
        .await
        .unwrap();
    assert_eq!(deltas.all(), ["x", "y"]);
    assert_eq!(response.text, "xy");
}

#[tokio::test]
async fn openai_429_with_retry_after_then_success() {
    let fake = FakeLlm::start([
        Reply::openai_error(429, "Rate limit reached", "rate_limit_exceeded")
            .with_header("retry-after", "0.2"),
        Reply::openai_stream([openai_chunk(json!({ "content": "ok" }), Some("stop"))]),
    ])
    .await;
    let started = Instant::now();
    let response = openai(&fake)
        .complete(&user_request("hi"), &|_| {})
        .await
        .unwrap();
    assert_eq!(response.text, "ok");
    assert_eq!(fake.request_count(), 2);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn openai_client_errors_and_billing_quota_are_not_retried() {
    for reply in [
        Reply::openai_error(401, "Incorrect API key provided", "invalid_api_key"),
        Reply::openai_error(404, "model not found", "model_not_found"),
        Reply::openai_error(429, "You exceeded your current quota", "insufficient_quota"),
    ] {
        let fake = FakeLlm::start([
            reply,
            Reply::openai_stream([openai_chunk(json!({ "content": "no" }), None)]),
        ])
        .await;
        let err = openai(&fake)
            .complete(&user_request("hi"), &|_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, ModelError::Rejected { .. }), "{err:?}");
        assert_eq!(fake.request_count(), 1);
    }
}

#[tokio::test]
async fn openai_mid_stream_error_after_text_is_not_retried() {
    let fake = FakeLlm::start([
        Reply::raw_stream([
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"error\":{\"message\":\"provider went away\",\"code\":502}}\n\n",
        ]),
        Reply::openai_stream([openai_chunk(json!({ "content": "retry" }), None)]),
    ])
    .await;
    let err = openai(&fake)
        .complete(&user_request("hi"), &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, ModelError::Unavailable(ref m) if m.contains("provider went away")),
        "{err:?}"
    );
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn openai_without_key_or_usage_option() {
    let fake = FakeLlm::start([Reply::openai_stream([openai_chunk(
        json!({ "content": "ok" }),
        Some("stop"),
    )])])
    .await;
    let config = OpenAiConfig {
        stream_usage: false,
        ..OpenAiConfig::new(fake.openai_base_url(), "llama3")
    };
    let provider = OpenAiCompatProvider::new(config).unwrap();
    let response = provider
        .complete(&user_request("hi"), &|_| {})
        .await
        .unwrap();
    assert_eq!(response.usage, TokenUsage::default());
    let request = &fake.requests()[0];
    assert_eq!(request.header("authorization"), None);
    assert!(request.body.get("stream_options").is_none());
}

// ---------------------------------------------------------------------------------------------
// Anthropic

fn anthropic(fake: &FakeLlm) -> AnthropicProvider {
    let config = AnthropicConfig {
        base_url: fake.base_url(),
        timeout: Duration::from_secs(5),
        ..AnthropicConfig::new("sk-ant-test")
    };
    AnthropicProvider::new(config)
        .unwrap()
        .with_retry_policy(fast_retries(3))
}

#[tokio::test]
async fn anthropic_tool_use_split_across_chunks_round_trip() {
    // The tool input arrives as four `input_json_delta` pieces, and the SSE frames themselves
    // are cut mid-line and mid-JSON across network chunks.
    let mut blocks = anthropic_text_block(0, &["Let me ", "look."]);
    blocks.push(json!({ "type": "ping" }));
    blocks.extend(anthropic_tool_use_block(
        1,
        "toolu_01",
        "terminal",
        &["", "{\"comm", "and\": \"ls ", "app\"}"],
    ));
    blocks.extend(anthropic_tool_use_block(
        2,
        "toolu_02",
        "readFiles",
        &["{\"files\": [\"app/page.tsx\"]}"],
    ));
    let events = anthropic_message(blocks, "tool_use", 120, 40);
    let frames: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    let pieces: Vec<String> = frames
        .as_bytes()
        .chunks(37)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let fake = FakeLlm::start([
        Reply::raw_stream(pieces).with_delay(Duration::from_millis(1)),
        anthropic_text_reply("Done."),
    ])
    .await;
    let provider = anthropic(&fake);
    let deltas = Deltas::default();
    let mut request = user_request("list the app");

    let first = provider.complete(&request, &deltas.sink()).await.unwrap();

    assert_eq!(deltas.all().concat(), "Let me look.");
    assert_eq!(first.text, "Let me look.");
    assert_eq!(
        first.tool_calls,
        vec![
            ToolCall {
                id: "toolu_01".into(),
                name: "terminal".into(),
                arguments: json!({ "command": "ls app" })
            },
            ToolCall {
                id: "toolu_02".into(),
                name: "readFiles".into(),
                arguments: json!({ "files": ["app/page.tsx"] })
            },
        ]
    );
    assert_eq!(
        first.usage,
        TokenUsage {
            input_tokens: 120,
            output_tokens: 40
        }
    );
    assert!(provider.estimate_cost_usd(first.usage) > 0.0);

    request.messages.push(assistant_turn(&first));
    request.messages.push(ChatMessage::ToolResult {
        call_id: "toolu_01".into(),
        name: "terminal".into(),
        content: json!("page.tsx\n"),
        is_error: false,
    });
    request.messages.push(ChatMessage::ToolResult {
        call_id: "toolu_02".into(),
        name: "readFiles".into(),
        content: json!("no such file"),
        is_error: true,
    });
    assert_eq!(
        provider.complete(&request, &|_| {}).await.unwrap().text,
        "Done."
    );

    let requests = fake.requests();
    let first_request = &requests[0];
    assert_eq!(first_request.path, "/v1/messages");
    assert_eq!(first_request.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(
        first_request.header("anthropic-version"),
        Some("2023-06-01")
    );
    assert_eq!(first_request.header("authorization"), None);
    let body = &first_request.body;
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(body["stream"], true);
    assert!(body["max_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        body["system"],
        json!([{ "type": "text", "text": "You build Next.js apps.", "cache_control": { "type": "ephemeral" } }])
    );
    assert_eq!(body["tools"][0]["name"], "terminal");
    assert_eq!(
        body["tools"][0]["input_schema"]["required"],
        json!(["command"])
    );

    let messages = requests[1].body["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 3);
    assert_eq!(
        messages[1],
        json!({ "role": "assistant", "content": [
            { "type": "text", "text": "Let me look." },
            { "type": "tool_use", "id": "toolu_01", "name": "terminal", "input": { "command": "ls app" } },
            { "type": "tool_use", "id": "toolu_02", "name": "readFiles", "input": { "files": ["app/page.tsx"] } }
        ] }),
        "the assistant turn is sent back as it came"
    );
    assert_eq!(
        messages[2],
        json!({ "role": "user", "content": [
            { "type": "tool_result", "tool_use_id": "toolu_01", "content": "page.tsx\n" },
            { "type": "tool_result", "tool_use_id": "toolu_02", "content": "no such file", "is_error": true,
              "cache_control": { "type": "ephemeral" } }
        ] })
    );
}

#[tokio::test]
async fn anthropic_429_with_retry_after_then_success() {
    let fake = FakeLlm::start([
        Reply::anthropic_error(
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
        )
        .with_header("retry-after", "1"),
        anthropic_text_reply("after the wait"),
    ])
    .await;
    let started = Instant::now();
    let response = anthropic(&fake)
        .complete(&user_request("hi"), &|_| {})
        .await
        .unwrap();
    assert_eq!(response.text, "after the wait");
    assert_eq!(fake.request_count(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the retry-after was honoured: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn anthropic_overload_and_mid_stream_errors_before_text_are_retried() {
    let overloaded_mid_stream = Reply::raw_stream([
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}}}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    ]);
    let fake = FakeLlm::start([
        Reply::anthropic_error(529, "overloaded_error", "Overloaded"),
        overloaded_mid_stream,
        anthropic_text_reply("third time"),
    ])
    .await;
    let response = anthropic(&fake)
        .complete(&user_request("hi"), &|_| {})
        .await
        .unwrap();
    assert_eq!(response.text, "third time");
    assert_eq!(fake.request_count(), 3);
}

#[tokio::test]
async fn anthropic_bad_key_is_rejected_once_without_echoing_it() {
    let fake = FakeLlm::start([]).await;
    let config = AnthropicConfig {
        base_url: fake.base_url(),
        ..AnthropicConfig::new(INVALID_API_KEY)
    };
    let provider = AnthropicProvider::new(config)
        .unwrap()
        .with_retry_policy(fast_retries(3));
    let err = provider
        .complete(&user_request("hi"), &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, ModelError::Rejected { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains(INVALID_API_KEY), "{err}");
    assert!(!format!("{provider:?}").contains(INVALID_API_KEY));
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn anthropic_stream_cut_after_text_is_not_retried() {
    let mut events = anthropic_message(anthropic_text_block(0, &["partial"]), "end_turn", 1, 1);
    events.truncate(3);
    let fake = FakeLlm::start([
        Reply::anthropic_stream(events)
            .with_delay(Duration::from_millis(5))
            .then_disconnect(),
        anthropic_text_reply("never"),
    ])
    .await;
    let err = anthropic(&fake)
        .complete(&user_request("hi"), &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, ModelError::Unavailable(_)), "{err:?}");
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn openai_model_without_tool_support_is_named() {
    let fake = FakeLlm::start([Reply::openai_error(
        400,
        "registry.ollama.ai/library/gemma:2b does not support tools",
        "invalid_request_error",
    )])
    .await;
    let err = openai(&fake)
        .complete(&user_request("hi"), &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, ModelError::ToolsUnsupported { ref model } if model == "qwen3:8b"),
        "{err:?}"
    );
    assert_eq!(fake.request_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Offline

/// Runs the offline provider like the agent loop would, answering every tool call with `ok`.
async fn run_offline_turn(
    provider: &OfflineProvider,
    request: &mut ChatRequest,
) -> Vec<ModelResponse> {
    let mut steps = Vec::new();
    for _ in 0..10 {
        let response = provider.complete(request, &|_| {}).await.unwrap();
        request.messages.push(assistant_turn(&response));
        for call in &response.tool_calls {
            request.messages.push(ChatMessage::ToolResult {
                call_id: call.id.clone(),
                name: call.name.clone(),
                content: json!("ok"),
                is_error: false,
            });
        }
        let finished = response.tool_calls.is_empty();
        steps.push(response);
        if finished {
            break;
        }
    }
    steps
}

#[tokio::test]
async fn offline_provider_runs_the_full_step_sequence_and_follow_ups() {
    let provider = OfflineProvider::new();
    assert!(provider.is_offline());
    assert_eq!(provider.name(), "offline");
    let mut request = user_request("Build me a todo app with <b>\"quotes\"</b>");

    let steps = run_offline_turn(&provider, &mut request).await;

    assert_eq!(steps.len(), 4);
    assert_eq!(steps[0].tool_calls[0].name, "createOrUpdateFiles");
    let file = &steps[0].tool_calls[0].arguments["files"][0];
    assert_eq!(file["path"], "app/page.tsx");
    let content = file["content"].as_str().unwrap();
    assert!(content.starts_with("\"use client\";"), "{content}");
    assert!(content.contains("useState"));
    assert!(
        content.contains(r#"const TITLE = "Todo app with \u003cb\u003e\"quotes\"\u003c/b\u003e";"#),
        "{content}"
    );
    assert!(content.contains("className="));
    assert_eq!(steps[1].tool_calls[0].name, "terminal");
    assert_eq!(
        steps[1].tool_calls[0].arguments,
        json!({ "command": "ls app" })
    );
    assert_eq!(steps[2].tool_calls[0].name, "readFiles");
    assert_eq!(
        steps[2].tool_calls[0].arguments,
        json!({ "files": ["app/page.tsx"] })
    );
    let summary = &steps[3].text;
    assert!(
        summary.contains("<task_summary>") && summary.contains("</task_summary>"),
        "{summary}"
    );
    assert!(
        summary.contains("offline") && summary.contains("app/page.tsx"),
        "{summary}"
    );
    assert!(steps.iter().all(|s| s.usage.input_tokens > 0));
    assert_eq!(provider.estimate_cost_usd(steps[0].usage), 0.0);

    // A follow-up reads the page first, then rewrites it keeping the first request and adding
    // the new one.
    request.messages.push(ChatMessage::User {
        text: "Now make a landing page for my bakery".into(),
    });
    let follow_up = run_offline_turn(&provider, &mut request).await;
    assert_eq!(follow_up.len(), 4);
    assert_eq!(follow_up[0].tool_calls[0].name, "readFiles");
    let content = follow_up[1].tool_calls[0].arguments["files"][0]["content"]
        .as_str()
        .unwrap();
    assert!(
        content.contains("Now make a landing page for my bakery"),
        "{content}"
    );
    assert!(
        content.contains("Todo app with"),
        "the first version stays: {content}"
    );
    assert_ne!(follow_up[0].tool_calls[0].id, steps[0].tool_calls[0].id);
    assert!(follow_up[3].text.contains("<task_summary>"));
}

#[tokio::test]
async fn offline_provider_is_deterministic_and_streams_text() {
    let provider = OfflineProvider::new();
    let mut a = user_request("a weather dashboard");
    let mut b = a.clone();
    let first = run_offline_turn(&provider, &mut a).await;
    let second = run_offline_turn(&provider, &mut b).await;
    assert_eq!(first, second);

    let deltas = Deltas::default();
    let response = provider.complete(&a, &deltas.sink()).await.unwrap();
    assert_eq!(deltas.all(), vec![response.text]);
}

#[tokio::test]
async fn offline_provider_answers_helper_prompts() {
    let provider = OfflineProvider::new();
    let helper = |system: &str, user: &str| ChatRequest {
        system: system.into(),
        messages: vec![ChatMessage::User { text: user.into() }],
        tools: vec![],
    };

    let title = provider
        .complete(&helper(TITLE_MARKER, "Build a todo app"), &|_| {})
        .await
        .unwrap();
    assert!(title.tool_calls.is_empty());
    assert!(title.text.contains("offline"), "{}", title.text);
    assert!(title.text.len() < 60, "{}", title.text);

    let title = provider
        .complete(
            &helper("Write a short title for this fragment.", "a bakery site"),
            &|_| {},
        )
        .await
        .unwrap();
    assert_eq!(title.text, "Bakery site (offline)");

    let reply = provider
        .complete(&helper(REPLY_MARKER, "Build a todo app"), &|_| {})
        .await
        .unwrap();
    assert!(reply.text.contains("offline mode"), "{}", reply.text);
    assert!(reply.tool_calls.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Replay

#[tokio::test]
async fn replay_serves_responses_in_order_then_exhausts() {
    let recorded = vec![
        ModelResponse {
            text: String::new(),
            tool_calls: vec![ToolCall {
                id: "c1".into(),
                name: "terminal".into(),
                arguments: json!({ "command": "ls" }),
            }],
            usage: TokenUsage {
                input_tokens: 10,
                output_tokens: 2,
            },
            raw: Some(json!({ "role": "model", "parts": [] })),
        },
        ModelResponse {
            text: "<task_summary>done</task_summary>".into(),
            ..ModelResponse::default()
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("transcript.json");
    std::fs::write(&path, serde_json::to_string_pretty(&recorded).unwrap()).unwrap();

    for provider in [
        ReplayProvider::from_responses(recorded.clone()),
        ReplayProvider::from_file(&path).unwrap(),
    ] {
        let deltas = Deltas::default();
        let request = user_request("anything");
        assert_eq!(
            provider.complete(&request, &deltas.sink()).await.unwrap(),
            recorded[0]
        );
        assert_eq!(
            provider.complete(&request, &deltas.sink()).await.unwrap(),
            recorded[1]
        );
        assert_eq!(deltas.all(), ["<task_summary>done</task_summary>"]);
        assert!(matches!(
            provider.complete(&request, &deltas.sink()).await,
            Err(ModelError::ReplayExhausted)
        ));
        assert_eq!(provider.name(), "replay");
    }

    std::fs::write(&path, "not json").unwrap();
    assert!(matches!(
        ReplayProvider::from_file(&path),
        Err(ModelError::Protocol(_))
    ));
}
