//! Runs through GraphQL driven by the Anthropic client and by OpenAI-compatible models that
//! cannot call tools, each against the local fake server.

use std::sync::Arc;
use std::time::Duration;

use codekraft::agent::provider::retry::RetryPolicy;
use codekraft::agent::provider::{
    AnthropicConfig, AnthropicProvider, OpenAiCompatProvider, OpenAiConfig,
};
use serde_json::json;

use crate::runs::run_of;
use crate::support::app::{Backend, TestApp};
use crate::support::fake_llm::{
    anthropic_message, anthropic_text_block, anthropic_text_reply, anthropic_tool_use_block,
    openai_chunk, FakeLlm, Reply,
};

const FILES: &str = "query($id: ID!) { project(id: $id) { messages { edges { node { type content fragment { files } } } } } }";

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        ..RetryPolicy::default()
    }
}

fn anthropic(fake: &FakeLlm) -> Arc<AnthropicProvider> {
    let config = AnthropicConfig {
        base_url: fake.base_url(),
        ..AnthropicConfig::new("sk-ant-test")
    };
    Arc::new(
        AnthropicProvider::new(config)
            .unwrap()
            .with_retry_policy(fast_retries()),
    )
}

fn openai(fake: &FakeLlm, model: &str) -> Arc<OpenAiCompatProvider> {
    Arc::new(
        OpenAiCompatProvider::new(OpenAiConfig::new(fake.openai_base_url(), model))
            .unwrap()
            .with_retry_policy(fast_retries()),
    )
}

#[tokio::test]
async fn anthropic_run_writes_a_file() {
    let page = "export default function Page() { return <h1>Claude</h1>; }";
    let input = json!({ "files": [{ "path": "app/page.tsx", "content": page }] }).to_string();
    let (head, tail) = input.split_at(input.len() / 2);
    let fake = FakeLlm::start([
        Reply::anthropic_error(429, "rate_limit_error", "slow down")
            .with_header("retry-after", "0"),
        Reply::anthropic_stream(anthropic_message(
            anthropic_tool_use_block(0, "toolu_write", "createOrUpdateFiles", &[head, tail]),
            "tool_use",
            900,
            60,
        )),
        Reply::anthropic_stream(anthropic_message(
            anthropic_text_block(
                0,
                &["<task_summary>A page that ", "says Claude.</task_summary>"],
            ),
            "end_turn",
            1000,
            20,
        )),
        anthropic_text_reply("Claude Page"),
        anthropic_text_reply("Your page is ready!"),
    ])
    .await;
    let app = TestApp::builder(Backend::Sqlite)
        .models(anthropic(&fake))
        .start()
        .await;
    let token = app.sign_up("claude@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "a page that says Claude").await;
    assert_eq!(
        app.wait_for_run(&token, &run_id).await["status"],
        "SUCCEEDED"
    );

    let run = run_of(&app, &token, &run_id).await;
    assert_eq!(run["inputTokens"], 900 + 1000 + 20 + 20);
    assert!(run["costUsd"].as_f64().unwrap() > 0.0);
    let data = app
        .data(Some(&token), FILES, json!({ "id": project_id }))
        .await;
    let answer = &data["project"]["messages"]["edges"][1]["node"];
    assert_eq!(answer["content"], "Your page is ready!");
    assert_eq!(answer["fragment"]["files"]["app/page.tsx"], page);

    let requests = fake.requests();
    assert_eq!(requests.len(), 5, "one 429, then four answers");
    let second_step = &requests[2].body["messages"];
    assert_eq!(second_step[1]["content"][0]["id"], "toolu_write");
    assert_eq!(second_step[2]["content"][0]["tool_use_id"], "toolu_write");
}

#[tokio::test]
async fn a_model_that_cannot_call_tools_fails_the_run_with_a_named_error() {
    let refused = Reply::openai_error(
        400,
        "registry.ollama.ai/library/gemma:2b does not support tools",
        "invalid_request_error",
    );
    let prose_only = Reply::openai_stream([openai_chunk(
        json!({ "content": "Sure! Here is the code:\n```tsx\nexport default function Page() {}\n```" }),
        Some("stop"),
    )]);
    for (reply, email) in [
        (refused, "refused@example.com"),
        (prose_only, "prose@example.com"),
    ] {
        let fake = FakeLlm::start([reply]).await;
        let app = TestApp::builder(Backend::Sqlite)
            .models(openai(&fake, "gemma:2b"))
            .start()
            .await;
        let token = app.sign_up(email).await;
        let (_, run_id) = app.create_project(&token, "a todo app").await;
        assert_eq!(app.wait_for_run(&token, &run_id).await["status"], "FAILED");
        let run = run_of(&app, &token, &run_id).await;
        let error = run["error"].as_str().unwrap();
        assert!(
            error.starts_with("MODEL_CANNOT_CALL_TOOLS: ") && error.contains("gemma:2b"),
            "{error}"
        );
        assert_eq!(run["creditRefunded"], true, "{run}");
        assert_eq!(fake.request_count(), 1, "no retry, no helper prompts");
    }
}
