//! Bounded context through GraphQL: a long run with large tool results keeps every model
//! request under `AGENT_CONTEXT_TOKENS`, measured at the fake model server.

use serde_json::json;

use crate::runs::gemini;
use crate::support::app::{Backend, TestApp};
use crate::support::fake_llm::{gemini_call_part, gemini_chunk, gemini_text_reply, FakeLlm, Reply};

const BUDGET: u64 = 8_000;
const STEPS: usize = 60;
/// Lines of each command's output: about 12 KB, 3,000 tokens.
const LINES: usize = 1_100;
const LINE: &str = "abcdefghij";

fn output(step: usize) -> String {
    format!(
        "BEGIN-{step:02}\n{}END-{step:02}\n",
        format!("{LINE}\n").repeat(LINES)
    )
}

#[tokio::test]
async fn a_long_run_with_large_tool_results_stays_under_the_token_budget() {
    let mut script: Vec<Reply> = (0..STEPS)
        .map(|step| {
            Reply::gemini_stream([gemini_chunk(
                vec![gemini_call_part(
                    "terminal",
                    json!({ "command": format!("cat log-{step:02}.txt") }),
                    None,
                )],
                Some("STOP"),
                Some(json!({ "promptTokenCount": 50, "candidatesTokenCount": 10 })),
            )])
        })
        .collect();
    script.push(gemini_text_reply(
        "<task_summary>Read every log.</task_summary>",
    ));
    script.push(gemini_text_reply("Logs"));
    script.push(gemini_text_reply("I read them all."));
    let fake = FakeLlm::start(script).await;
    let app = TestApp::builder(Backend::Sqlite)
        .models(gemini(&fake))
        .config(|c| {
            c.agent_context_tokens = Some(BUDGET);
            c.agent_max_steps = STEPS as u32 + 5;
        })
        .start()
        .await;
    for step in 0..STEPS {
        app.sandboxes
            .script_command(&format!("log-{step:02}.txt"), 0, &output(step), "");
    }
    let token = app.sign_up("long@example.com").await;
    let (_, run_id) = app.create_project(&token, "read the logs").await;
    assert_eq!(
        app.wait_for_run(&token, &run_id).await["status"],
        "SUCCEEDED"
    );

    let bodies: Vec<String> = fake.requests().iter().map(|r| r.body.to_string()).collect();
    assert_eq!(bodies.len(), STEPS + 3);
    for (i, body) in bodies.iter().enumerate() {
        let tokens = body.len() as u64 / 4;
        assert!(tokens <= BUDGET, "request {i}: {tokens} tokens");
    }
    // Unbounded, the last coding request would carry all 60 outputs (about 180,000 tokens).
    let last = &bodies[STEPS];
    assert!(
        last.contains("END-59") && last.matches(LINE).count() >= LINES,
        "the newest result reaches the model whole"
    );
    assert!(
        last.matches(LINE).count() < 2 * LINES,
        "older results are cut"
    );
    assert!(last.contains("bytes omitted"), "a cut result is marked");
    assert!(last.contains("older messages"), "dropped turns are noted");
    assert!(last.contains("read the logs"), "the task is kept");
    assert!(!last.contains("BEGIN-00"), "the oldest turns are gone");
}
