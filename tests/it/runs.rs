//! The agent runtime end to end through GraphQL: scripted models (the real Gemini client against
//! the fake server, or a replayed transcript) driving the tool loop against the fake sandbox.

use std::sync::Arc;
use std::time::Duration;

use codekraft::agent::provider::retry::RetryPolicy;
use codekraft::agent::provider::{
    GeminiConfig, GeminiProvider, ModelResponse, ReplayProvider, TokenUsage, ToolCall,
};
use codekraft::sandbox::MAX_FILE_BYTES;
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::app::{Backend, TestApp};
use crate::support::fake_llm::{
    gemini_call_part, gemini_chunk, gemini_text_chunk, gemini_text_reply, FakeLlm, Reply,
};

const MESSAGES: &str = "query($id: ID!) { project(id: $id) { messages { edges { node { role type content fragment { title files } } } } } }";
const RUN: &str = "query($id: ID!) { run(id: $id) { status error attempts inputTokens outputTokens costUsd creditRefunded events(first: 500) { kind data {
    ... on ModelTextDelta { text }
    ... on ToolOutput { callId stream text truncated omittedBytes }
    ... on ToolCallFinished { ok toolError: error }
} } } }";

pub(crate) fn gemini(fake: &FakeLlm) -> Arc<GeminiProvider> {
    let mut config = GeminiConfig::new("test-key");
    config.base_url = fake.base_url();
    let retries = RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    Arc::new(
        GeminiProvider::new(config)
            .unwrap()
            .with_retry_policy(retries),
    )
}

fn usage(input: u64, output: u64) -> Value {
    json!({ "promptTokenCount": input, "candidatesTokenCount": output, "totalTokenCount": input + output })
}

pub(crate) fn call(name: &str, arguments: Value) -> ModelResponse {
    ModelResponse {
        tool_calls: vec![ToolCall {
            id: format!("call-{name}"),
            name: name.into(),
            arguments,
        }],
        usage: TokenUsage {
            input_tokens: 10,
            output_tokens: 5,
        },
        ..ModelResponse::default()
    }
}

fn text(text: &str) -> ModelResponse {
    ModelResponse {
        text: text.into(),
        usage: TokenUsage {
            input_tokens: 10,
            output_tokens: 5,
        },
        ..ModelResponse::default()
    }
}

/// A fresh app whose model answers with `responses`; `email` creates a project there and its
/// run succeeds. Returns the app, the token, the project id and the run.
async fn succeeded_replay(
    responses: Vec<ModelResponse>,
    email: &str,
) -> (TestApp, String, String, Value) {
    let app = TestApp::builder(Backend::Sqlite)
        .models(Arc::new(ReplayProvider::from_responses(responses)))
        .start()
        .await;
    let token = app.sign_up(email).await;
    let (project_id, run_id) = app.create_project(&token, "anything").await;
    assert_eq!(
        app.wait_for_run(&token, &run_id).await["status"],
        "SUCCEEDED"
    );
    let run = run_of(&app, &token, &run_id).await;
    (app, token, project_id, run)
}

pub(crate) async fn run_of(app: &TestApp, token: &str, run_id: &str) -> Value {
    app.data(Some(token), RUN, json!({ "id": run_id })).await["run"].clone()
}

fn kinds(run: &Value) -> Vec<String> {
    run["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

on_both_backends!(gemini_drives_the_tool_loop, |backend: Backend| async move {
    let page = "export default function Page() { return <h1>Pomodoro</h1>; }";
    let fake = FakeLlm::start([
        Reply::gemini_stream([
            gemini_text_chunk(&["Writing the page."]),
            gemini_chunk(
                vec![gemini_call_part(
                    "createOrUpdateFiles",
                    json!({ "files": [{ "path": "app/page.tsx", "content": page }] }),
                    Some("sig-1"),
                )],
                Some("STOP"),
                Some(usage(100, 20)),
            ),
        ]),
        Reply::gemini_stream([gemini_chunk(
            vec![gemini_call_part(
                "terminal",
                json!({ "command": "echo built" }),
                None,
            )],
            Some("STOP"),
            Some(usage(150, 10)),
        )]),
        Reply::gemini_stream([gemini_chunk(
            vec![json!({ "text": "<task_summary>A pomodoro timer page.</task_summary>" })],
            Some("STOP"),
            Some(usage(200, 15)),
        )]),
        Reply::gemini_stream([gemini_chunk(
            vec![json!({ "text": "Pomodoro Timer" })],
            Some("STOP"),
            Some(usage(30, 3)),
        )]),
        Reply::gemini_stream([gemini_chunk(
            vec![json!({ "text": "Your pomodoro timer is ready!" })],
            Some("STOP"),
            Some(usage(30, 8)),
        )]),
    ])
    .await;
    let app = TestApp::builder(backend)
        .models(gemini(&fake))
        .start()
        .await;
    let token = app.sign_up("gem@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "a pomodoro timer").await;
    assert_eq!(
        app.wait_for_run(&token, &run_id).await["status"],
        "SUCCEEDED"
    );

    let run = run_of(&app, &token, &run_id).await;
    assert_eq!(run["inputTokens"], 100 + 150 + 200 + 30 + 30);
    assert_eq!(run["outputTokens"], 20 + 10 + 15 + 3 + 8);
    assert!(run["costUsd"].as_f64().unwrap() > 0.0);
    let kinds = kinds(&run);
    let position = |kind: &str| {
        kinds
            .iter()
            .position(|k| k == kind)
            .unwrap_or_else(|| panic!("{kind} in {kinds:?}"))
    };
    assert!(position("RUN_STARTED") < position("SANDBOX_READY"));
    assert!(position("SANDBOX_READY") < position("MODEL_TEXT_DELTA"));
    assert!(position("FILE_WRITTEN") < position("TOOL_OUTPUT"));
    assert!(position("TOOL_OUTPUT") < position("FRAGMENT_CREATED"));
    assert_eq!(kinds.last().unwrap(), "RUN_FINISHED");

    let data = app
        .data(Some(&token), MESSAGES, json!({ "id": project_id }))
        .await;
    let answer = &data["project"]["messages"]["edges"][1]["node"];
    assert_eq!(answer["content"], "Your pomodoro timer is ready!");
    assert_eq!(answer["fragment"]["title"], "Pomodoro Timer");
    assert_eq!(answer["fragment"]["files"]["app/page.tsx"], page);

    // The second request carried the tool result and echoed the thought signature verbatim.
    let requests = fake.requests();
    let second = &requests[1].body;
    let contents = second["contents"].as_array().unwrap();
    let model_turn = &contents[contents.len() - 2];
    assert_eq!(model_turn["parts"][1]["thoughtSignature"], "sig-1");
    assert!(contents.last().unwrap()["parts"][0]["functionResponse"].is_object());
});

#[tokio::test]
async fn a_rate_limit_is_waited_out() {
    let fake = FakeLlm::start([
        Reply::gemini_rate_limited("0.05s"),
        Reply::gemini_stream([gemini_chunk(
            vec![json!({ "text": "<task_summary>Nothing to do.</task_summary>" })],
            Some("STOP"),
            Some(usage(5, 5)),
        )]),
        gemini_text_reply("Title"),
        gemini_text_reply("Done."),
    ])
    .await;
    let app = TestApp::builder(Backend::Sqlite)
        .models(gemini(&fake))
        .start()
        .await;
    let token = app.sign_up("patient@example.com").await;
    let (_, run_id) = app.create_project(&token, "anything").await;
    assert_eq!(
        app.wait_for_run(&token, &run_id).await["status"],
        "SUCCEEDED"
    );
    assert_eq!(fake.request_count(), 4);
}

#[tokio::test]
async fn an_unreachable_model_fails_the_run_and_gives_the_credit_back() {
    let fake = FakeLlm::start([
        Reply::gemini_error(503, "UNAVAILABLE", "overloaded"),
        Reply::gemini_error(503, "UNAVAILABLE", "overloaded"),
        Reply::gemini_error(503, "UNAVAILABLE", "overloaded"),
    ])
    .await;
    let app = TestApp::builder(Backend::Sqlite)
        .models(gemini(&fake))
        .start()
        .await;
    let token = app.sign_up("unlucky@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "anything").await;
    assert_eq!(app.wait_for_run(&token, &run_id).await["status"], "FAILED");
    let run = run_of(&app, &token, &run_id).await;
    assert_eq!(run["creditRefunded"], true);
    let usage = app
        .data(Some(&token), "{ usage { consumed } }", json!({}))
        .await;
    assert_eq!(usage["usage"]["consumed"], 0);
    let data = app
        .data(Some(&token), MESSAGES, json!({ "id": project_id }))
        .await;
    let messages = data["project"]["messages"]["edges"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "exactly one ASSISTANT message");
    assert_eq!(messages[1]["node"]["type"], "ERROR");
}

/// A provider's error text can echo keys and internal URLs: it goes to the log, not the user.
#[tokio::test]
async fn a_provider_error_detail_stays_out_of_the_run_and_its_reply() {
    const SECRET: &str = "sk-live-0123456789";
    const INTERNAL_URL: &str = "https://internal.provider.example/v1beta";
    let detail = format!("API key {SECRET} not valid for {INTERNAL_URL}");
    let fake = FakeLlm::start([Reply::gemini_error(400, "INVALID_ARGUMENT", &detail)]).await;
    let app = TestApp::builder(Backend::Sqlite)
        .models(gemini(&fake))
        .start()
        .await;
    let token = app.sign_up("leaky@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "anything").await;
    assert_eq!(app.wait_for_run(&token, &run_id).await["status"], "FAILED");
    let run = run_of(&app, &token, &run_id).await;
    assert_eq!(run["error"], "the model refused the request", "{run}");
    let data = app
        .data(Some(&token), MESSAGES, json!({ "id": project_id }))
        .await;
    let everything_shown = format!("{run}{data}");
    assert!(
        data.to_string().contains("the model refused the request"),
        "{data}"
    );
    for secret in [SECRET, INTERNAL_URL, "INVALID_ARGUMENT"] {
        assert!(
            !everything_shown.contains(secret),
            "{secret} reached the user: {everything_shown}"
        );
    }
}

#[tokio::test]
async fn a_failing_command_is_reported_to_the_model_which_fixes_it() {
    let replay = ReplayProvider::from_responses(vec![
        call("terminal", json!({ "command": "npm install left-pad" })),
        call(
            "terminal",
            json!({ "command": "npm install left-pad@1.3.0" }),
        ),
        call(
            "createOrUpdateFiles",
            json!({ "files": [{ "path": "app/page.tsx", "content": "ok" }] }),
        ),
        text("<task_summary>Installed a working version.</task_summary>"),
        text("Left Pad"),
        text("Fixed it."),
    ]);
    let app = TestApp::builder(Backend::Sqlite)
        .models(Arc::new(replay))
        .start()
        .await;
    app.sandboxes
        .script_command("left-pad@1.3.0", 0, "added 1 package\n", "");
    app.sandboxes
        .fail_command("left-pad", 1, "npm ERR! 404 Not Found\n");
    let token = app.sign_up("fixer@example.com").await;
    let (_, run_id) = app.create_project(&token, "pad things").await;
    assert_eq!(
        app.wait_for_run(&token, &run_id).await["status"],
        "SUCCEEDED"
    );
    let run = run_of(&app, &token, &run_id).await;
    let finished: Vec<&Value> = run["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "TOOL_CALL_FINISHED")
        .collect();
    assert_eq!(finished[0]["data"]["ok"], false);
    assert_eq!(finished[0]["data"]["toolError"]["exitCode"], 1);
    assert!(finished[0]["data"]["toolError"]["stderr"]
        .as_str()
        .unwrap()
        .contains("404"));
    assert_eq!(finished[1]["data"]["ok"], true);
    let stderr_chunk = run["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "TOOL_OUTPUT" && e["data"]["stream"] == "STDERR");
    assert!(stderr_chunk.is_some(), "stderr streamed as it came");
}

/// The `data` of the run's events of `kind`.
fn data_of<'a>(run: &'a Value, kind: &str) -> Vec<&'a Value> {
    run["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| &e["data"])
        .collect()
}

#[tokio::test]
async fn output_past_the_stream_limit_ends_in_one_truncated_marker() {
    let replay = ReplayProvider::from_responses(vec![
        call("terminal", json!({ "command": "npm run noisy" })),
        text("<task_summary>Ran it.</task_summary>"),
        text("Noisy"),
        text("Done."),
    ]);
    let app = TestApp::builder(Backend::Sqlite)
        .models(Arc::new(replay))
        .config(|c| c.agent_output_stream_bytes = 1000)
        .start()
        .await;
    let noisy = "line\n".repeat(1000);
    app.sandboxes
        .script_command("noisy", 0, &noisy, "warning\n");
    let token = app.sign_up("noisy@example.com").await;
    let (_, run_id) = app.create_project(&token, "anything").await;
    assert_eq!(
        app.wait_for_run(&token, &run_id).await["status"],
        "SUCCEEDED"
    );
    let run = run_of(&app, &token, &run_id).await;
    let output = data_of(&run, "TOOL_OUTPUT");
    let streamed: String = output.iter().filter_map(|p| p["text"].as_str()).collect();
    assert_eq!(streamed, noisy[..1000]);
    assert_eq!(output.iter().filter(|p| p["truncated"] == true).count(), 1);
    assert_eq!(
        output.last().unwrap(),
        &&json!({
            "callId": "call-terminal", "stream": null, "text": "", "truncated": true,
            "omittedBytes": 4000 + 8,
        })
    );
}

#[tokio::test]
async fn streamed_model_text_is_stored_whole_and_in_order() {
    let words: Vec<String> = (0..200).map(|i| format!("w{i} ")).collect();
    let summary = "<task_summary>Said it.</task_summary>";
    let mut chunks: Vec<Value> = words.iter().map(|w| gemini_text_chunk(&[w])).collect();
    chunks.push(gemini_chunk(
        vec![json!({ "text": summary })],
        Some("STOP"),
        Some(usage(5, 5)),
    ));
    let fake = FakeLlm::start([
        Reply::gemini_stream(chunks),
        gemini_text_reply("Words"),
        gemini_text_reply("Said."),
    ])
    .await;
    let app = TestApp::builder(Backend::Sqlite)
        .models(gemini(&fake))
        .start()
        .await;
    let token = app.sign_up("talker@example.com").await;
    let (_, run_id) = app.create_project(&token, "anything").await;
    assert_eq!(
        app.wait_for_run(&token, &run_id).await["status"],
        "SUCCEEDED"
    );
    let run = run_of(&app, &token, &run_id).await;
    let kinds = kinds(&run);
    let first_response = kinds.iter().position(|k| k == "MODEL_RESPONSE").unwrap();
    assert!(
        kinds[first_response..]
            .iter()
            .all(|k| k != "MODEL_TEXT_DELTA"),
        "deltas of the coding step only, before its response: {kinds:?}"
    );
    let text: String = data_of(&run, "MODEL_TEXT_DELTA")
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, words.concat() + summary);
}

#[tokio::test]
async fn malformed_tool_arguments_go_back_to_the_model() {
    let (_app, _token, _, run) = succeeded_replay(
        vec![
            call("createOrUpdateFiles", json!("{not json")),
            call("readFiles", json!({ "files": ["../../etc/passwd"] })),
            call("noSuchTool", json!({})),
            text("<task_summary>Gave up politely.</task_summary>"),
            text("Title"),
            text("Reply"),
        ],
        "sloppy@example.com",
    )
    .await;
    let errors: Vec<String> = run["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "TOOL_CALL_FINISHED")
        .map(|e| e["data"]["toolError"].to_string())
        .collect();
    assert_eq!(errors.len(), 3);
    assert!(errors[0].contains("invalid arguments"), "{errors:?}");
    assert!(errors[1].contains("refused"), "{errors:?}");
    assert!(errors[2].contains("unknown tool"), "{errors:?}");
}

#[tokio::test]
async fn an_edit_that_would_pass_the_file_cap_is_refused() {
    let big = format!("{}MARK", "a".repeat(MAX_FILE_BYTES - 100));
    let (app, _token, project_id, run) = succeeded_replay(
        vec![
            call(
                "createOrUpdateFiles",
                json!({ "files": [{ "path": "big.txt", "content": big }] }),
            ),
            call(
                "editFile",
                json!({ "path": "big.txt", "search": "MARK", "replace": "b".repeat(200) }),
            ),
            text("<task_summary>Tried.</task_summary>"),
            text("Title"),
            text("Reply"),
        ],
        "editor@example.com",
    )
    .await;
    let finished: Vec<&Value> = run["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "TOOL_CALL_FINISHED")
        .collect();
    assert_eq!(finished.len(), 2);
    assert!(
        finished[0]["data"]["toolError"].is_null(),
        "{}",
        finished[0]
    );
    let error = finished[1]["data"]["toolError"].to_string();
    assert!(
        error.contains(&format!("larger than {MAX_FILE_BYTES} bytes")),
        "{error}"
    );
    let sandbox = app.sandboxes.sandbox(project_id.parse().unwrap()).unwrap();
    assert_eq!(sandbox.files()["big.txt"], big);
}

#[tokio::test]
async fn the_step_cap_ends_the_run_with_an_error_message() {
    let endless: Vec<ModelResponse> = (0..10)
        .map(|_| call("listFiles", json!({ "dir": "." })))
        .collect();
    let app = TestApp::builder(Backend::Sqlite)
        .models(Arc::new(ReplayProvider::from_responses(endless)))
        .config(|c| c.agent_max_steps = 3)
        .start()
        .await;
    let token = app.sign_up("looper@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "loop forever").await;
    assert_eq!(app.wait_for_run(&token, &run_id).await["status"], "FAILED");
    let run = run_of(&app, &token, &run_id).await;
    assert!(run["error"].as_str().unwrap().contains("3 steps"), "{run}");
    // The model did its work: the credit stays spent.
    assert_eq!(run["creditRefunded"], false);
    let data = app
        .data(Some(&token), MESSAGES, json!({ "id": project_id }))
        .await;
    assert_eq!(
        data["project"]["messages"]["edges"][1]["node"]["type"],
        "ERROR"
    );
}

#[tokio::test]
async fn the_same_type_error_twice_ends_the_fix_loop_with_an_honest_reply() {
    let replay = ReplayProvider::from_responses(vec![
        text("<task_summary>First try.</task_summary>"),
        call(
            "editFile",
            json!({ "path": "app/page.tsx", "search": "a", "replace": "b" }),
        ),
        text("<task_summary>Second try.</task_summary>"),
        text("Title"),
        text("Here is your app."),
        // A third fix round would have asked for this.
        text("<task_summary>Third try.</task_summary>"),
    ]);
    let app = TestApp::builder(Backend::Sqlite)
        .models(Arc::new(replay))
        .config(|c| {
            c.agent_check_command = "tsc --noEmit --pretty false".into();
            c.agent_max_fix_rounds = 5;
        })
        .start()
        .await;
    app.sandboxes.fail_command(
        "tsc",
        2,
        "app/page.tsx(1,1): error TS2304: Cannot find name 'x'.\n",
    );
    let token = app.sign_up("checker@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "anything").await;
    assert_eq!(
        app.wait_for_run(&token, &run_id).await["status"],
        "SUCCEEDED"
    );
    let events = app
        .data(
            Some(&token),
            "query($id: ID!) { run(id: $id) { events(first: 500) { kind data {
                ... on BuildDiagnostics { round diagnostics { file line column code severity message } }
            } } } }",
            json!({ "id": run_id }),
        )
        .await;
    let events = events["run"]["events"].as_array().unwrap();
    let checks: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "BUILD_DIAGNOSTICS")
        .map(|e| &e["data"])
        .collect();
    let diagnostic = json!({
        "file": "app/page.tsx", "line": 1, "column": 1, "code": "TS2304",
        "severity": "ERROR", "message": "Cannot find name 'x'.",
    });
    assert_eq!(
        checks,
        [
            &json!({ "round": 1, "diagnostics": [diagnostic.clone()] }),
            &json!({ "round": 2, "diagnostics": [diagnostic] }),
        ]
    );
    let responses = events
        .iter()
        .filter(|e| e["kind"] == "MODEL_RESPONSE")
        .count();
    // The first try, one fix round (an edit, then its summary), then title and reply.
    assert_eq!(responses, 5);
    // The reply names what is still broken; the version is kept.
    let data = app
        .data(Some(&token), MESSAGES, json!({ "id": project_id }))
        .await;
    let reply = &data["project"]["messages"]["edges"][1]["node"];
    let content = reply["content"].as_str().unwrap();
    assert!(content.starts_with("Here is your app."), "{content}");
    assert!(
        content.contains("same errors")
            && content.contains("- app/page.tsx:1:1 TS2304: Cannot find name 'x'."),
        "{content}"
    );
    assert_eq!(reply["type"], "RESULT");
    assert!(reply["fragment"]["title"].is_string());
}

#[tokio::test]
async fn cancelling_a_run_stops_it_quickly_and_keeps_the_credit() {
    let fake =
        FakeLlm::start([Reply::gemini_stream([gemini_text_chunk(&["slow"])])
            .with_delay(Duration::from_secs(30))])
        .await;
    let app = TestApp::builder(Backend::Sqlite)
        .models(gemini(&fake))
        .start()
        .await;
    let token = app.sign_up("impatient@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "anything").await;
    // Wait until the model call is in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fake.request_count() == 0 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = std::time::Instant::now();
    let cancelled = app
        .data(
            Some(&token),
            "mutation($id: ID!) { cancelRun(runId: $id) { status } }",
            json!({ "id": run_id }),
        )
        .await;
    assert_eq!(cancelled["cancelRun"]["status"], "CANCELLED");
    // The worker lets go of it: the project can take a new message at once.
    let usage = app
        .data(Some(&token), "{ usage { consumed } }", json!({}))
        .await;
    assert_eq!(usage["usage"]["consumed"], 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let data = app
        .data(Some(&token), MESSAGES, json!({ "id": project_id }))
        .await;
    assert_eq!(
        data["project"]["messages"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "no ASSISTANT message for a cancelled run"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let again = app
        .gql(
            Some(&token),
            "mutation($id: ID!) { cancelRun(runId: $id) { status } }",
            json!({ "id": run_id }),
        )
        .await;
    assert_eq!(crate::support::app::error_code(&again), "CONFLICT");
}

#[tokio::test]
async fn a_failed_run_can_be_retried() {
    let fake = FakeLlm::start([
        Reply::gemini_error(503, "UNAVAILABLE", "overloaded"),
        Reply::gemini_error(503, "UNAVAILABLE", "overloaded"),
        Reply::gemini_error(503, "UNAVAILABLE", "overloaded"),
        gemini_text_reply("<task_summary>Second time lucky.</task_summary>"),
        gemini_text_reply("Lucky"),
        gemini_text_reply("It worked this time."),
    ])
    .await;
    let app = TestApp::builder(Backend::Sqlite)
        .models(gemini(&fake))
        .start()
        .await;
    let token = app.sign_up("again@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "anything").await;
    assert_eq!(app.wait_for_run(&token, &run_id).await["status"], "FAILED");
    let failed = app
        .data(
            Some(&token),
            "query($id: ID!) { project(id: $id) { messages { edges { node { id type } } } } }",
            json!({ "id": project_id }),
        )
        .await;
    let error_reply = failed["project"]["messages"]["edges"][1]["node"].clone();
    assert_eq!(error_reply["type"], "ERROR");
    let retried = app
        .data(
            Some(&token),
            "mutation($id: ID!) { retryRun(runId: $id) { status } }",
            json!({ "id": run_id }),
        )
        .await;
    // Queued again (a worker may already have taken it).
    assert_ne!(retried["retryRun"]["status"], "FAILED");
    assert_eq!(
        app.wait_for_run(&token, &run_id).await["status"],
        "SUCCEEDED"
    );
    let data = app
        .data(Some(&token), MESSAGES, json!({ "id": project_id }))
        .await;
    let messages = data["project"]["messages"]["edges"].as_array().unwrap();
    assert_eq!(
        messages.len(),
        2,
        "the ERROR reply was replaced: {messages:?}"
    );
    assert_eq!(messages[1]["node"]["type"], "RESULT");
    assert_eq!(messages[1]["node"]["content"], "It worked this time.");
    // Open tabs learn that the ERROR reply went.
    let events = app
        .data(
            Some(&token),
            "query($id: ID!) { run(id: $id) { events { kind data { ... on MessageDeleted { messageId } } } } }",
            json!({ "id": run_id }),
        )
        .await;
    let deleted: Vec<&Value> = events["run"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["kind"] == "MESSAGE_DELETED")
        .collect();
    assert_eq!(deleted.len(), 1, "{events}");
    assert_eq!(deleted[0]["data"]["messageId"], error_reply["id"]);
    // The refunded credit was taken again for the retry.
    let usage = app
        .data(Some(&token), "{ usage { consumed } }", json!({}))
        .await;
    assert_eq!(usage["usage"]["consumed"], 1);
    let again = app
        .gql(
            Some(&token),
            "mutation($id: ID!) { retryRun(runId: $id) { status } }",
            json!({ "id": run_id }),
        )
        .await;
    assert_eq!(crate::support::app::error_code(&again), "CONFLICT");
}

/// A run whose workers kept dying (lease expired with its attempts spent) ends FAILED with one
/// ERROR reply and its credit back, instead of being retried forever.
#[tokio::test]
async fn a_run_out_of_attempts_fails_cleanly() {
    use codekraft::entity::run;
    use sea_orm::{ActiveModelTrait, EntityTrait, Set};

    let app = TestApp::builder(Backend::Sqlite)
        .config(|c| c.worker_concurrency = 0)
        .start()
        .await;
    let token = app.sign_up("cursed@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "anything").await;
    let state = app.server.state.clone();
    // As left by a worker that died during its third attempt.
    let stuck = run::Entity::find_by_id(run_id.parse::<uuid::Uuid>().unwrap())
        .one(&state.db)
        .await
        .unwrap()
        .unwrap();
    let mut stuck: run::ActiveModel = stuck.into();
    stuck.status = Set(run::RunStatus::Running);
    stuck.attempts = Set(3);
    stuck.lease_owner = Set(Some("dead-worker".into()));
    stuck.lease_until = Set(Some(chrono::Utc::now() - chrono::Duration::seconds(5)));
    stuck.update(&state.db).await.unwrap();

    let mut config = (*state.config).clone();
    config.worker_concurrency = 1;
    codekraft::jobs::start_workers(codekraft::app::AppState {
        config: Arc::new(config),
        ..state
    });
    let run = app.wait_for_run(&token, &run_id).await;
    assert_eq!(run["status"], "FAILED");
    assert_eq!(app.assistant_messages(&token, &project_id).await.len(), 1);
    let usage = app
        .data(Some(&token), "{ usage { consumed } }", json!({}))
        .await;
    assert_eq!(usage["usage"]["consumed"], 0, "the credit was given back");
}

/// A run's transcript is a replay file: served again, it rebuilds the same app.
#[tokio::test]
async fn a_run_replays_from_its_transcript() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.sign_up("recorder@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "a recipe book").await;
    app.wait_for_run(&token, &run_id).await;
    let run = app
        .data(
            Some(&token),
            "query($id: ID!) { run(id: $id) { transcript } }",
            json!({ "id": run_id }),
        )
        .await;
    let transcript = run["run"]["transcript"].clone();
    assert_eq!(
        transcript.as_array().unwrap().len(),
        6,
        "4 loop steps, title, reply"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), transcript.to_string()).unwrap();

    let replay = ReplayProvider::from_file(file.path()).unwrap();
    let replayed = TestApp::builder(Backend::Sqlite)
        .models(Arc::new(replay))
        .start()
        .await;
    let token2 = replayed.sign_up("player@example.com").await;
    let (project2, run2) = replayed.create_project(&token2, "anything at all").await;
    assert_eq!(
        replayed.wait_for_run(&token2, &run2).await["status"],
        "SUCCEEDED"
    );
    let original = latest_fragment(&app, &token, &project_id).await;
    let again = latest_fragment(&replayed, &token2, &project2).await;
    assert_eq!(original["files"], again["files"]);
    assert_eq!(original["title"], again["title"]);
}

/// `transcript(first, after)` pages through the responses; the pages together are the whole.
#[tokio::test]
async fn a_transcript_comes_in_pages() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.sign_up("pager@example.com").await;
    let (_, run_id) = app.create_project(&token, "a timer").await;
    app.wait_for_run(&token, &run_id).await;
    let page = |first: i32, after: i32| {
        let (app, token, run_id) = (&app, &token, &run_id);
        async move {
            app.data(
                Some(token),
                "query($id: ID!, $first: Int, $after: Int!) { run(id: $id) { transcript(first: $first, after: $after) } }",
                json!({ "id": run_id, "first": first, "after": after }),
            )
            .await["run"]["transcript"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let whole = app
        .data(
            Some(&token),
            "query($id: ID!) { run(id: $id) { transcript } }",
            json!({ "id": run_id }),
        )
        .await["run"]["transcript"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(whole.len(), 6);
    let first = page(4, 0).await;
    let second = page(4, 4).await;
    assert_eq!(
        (first.len(), second.len()),
        (4, 2),
        "a short page is the last"
    );
    assert_eq!([first, second].concat(), whole);
    assert!(page(4, 6).await.is_empty());
}

async fn latest_fragment(app: &TestApp, token: &str, project_id: &str) -> Value {
    let data = app
        .data(Some(token), MESSAGES, json!({ "id": project_id }))
        .await;
    data["project"]["messages"]["edges"][1]["node"]["fragment"].clone()
}

/// `next dev`'s answer for a page that type-checks but cannot render.
const NEXT_ERROR_PAGE: &str = r#"<!DOCTYPE html><html><body><script id="__NEXT_DATA__" type="application/json">{"props":{"pageProps":{"statusCode":500}},"page":"/_error","err":{"name":"Error","source":"server","message":"./app/page.tsx:1:10\nError: You're importing a module that depends on `useState` into a React Server Component module. This API is only available in Client Components."}}</script></body></html>"#;

#[tokio::test]
async fn a_preview_that_does_not_render_gets_a_fix_round() {
    let counter = "import { useState } from \"react\";\nexport default function Page() { const [n, setN] = useState(0); return <button onClick={() => setN(n + 1)}>{n}</button>; }\n";
    let fake = FakeLlm::start([
        Reply::gemini_stream([gemini_chunk(
            vec![gemini_call_part(
                "createOrUpdateFiles",
                json!({ "files": [{ "path": "app/page.tsx", "content": counter }] }),
                None,
            )],
            Some("STOP"),
            None,
        )]),
        gemini_text_reply("<task_summary>A counter.</task_summary>"),
        Reply::gemini_stream([gemini_chunk(
            vec![gemini_call_part(
                "createOrUpdateFiles",
                json!({ "files": [{ "path": "app/page.tsx", "content": format!("\"use client\";\n{counter}") }] }),
                None,
            )],
            Some("STOP"),
            None,
        )]),
        gemini_text_reply("<task_summary>A counter, as a client component.</task_summary>"),
        gemini_text_reply("Counter"),
        gemini_text_reply("Your counter is ready."),
    ])
    .await;
    let app = TestApp::builder(Backend::Sqlite)
        .models(gemini(&fake))
        .start()
        .await;
    // The preview renders the project's page like `next dev` would: a hook needs "use client".
    let sandboxes = app.sandboxes.clone();
    let preview = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let sandboxes = sandboxes.clone();
        async move {
            let project = uri.path().trim_matches('/').parse().unwrap();
            let page = sandboxes.sandbox(project).unwrap().files()["app/page.tsx"].clone();
            if page.contains("useState") && !page.starts_with("\"use client\"") {
                (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    NEXT_ERROR_PAGE,
                )
            } else {
                (axum::http::StatusCode::OK, "<button>0</button>")
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    app.sandboxes
        .set_preview_base(&format!("http://{}", listener.local_addr().unwrap()));
    tokio::spawn(async move { axum::serve(listener, preview).await.unwrap() });

    let token = app.sign_up("hooks@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "a counter").await;
    assert_eq!(
        app.wait_for_run(&token, &run_id).await["status"],
        "SUCCEEDED"
    );
    // The model was shown the page's error, and its fix is what was kept.
    let fix_request = fake.requests()[2].body.to_string();
    assert!(
        fix_request.contains(r#"\"file\":\"app/page.tsx\",\"line\":1,\"column\":10"#)
            && fix_request.contains("React Server Component"),
        "{fix_request}"
    );
    let data = app
        .data(Some(&token), MESSAGES, json!({ "id": project_id }))
        .await;
    let reply = &data["project"]["messages"]["edges"][1]["node"];
    assert_eq!(reply["content"], "Your counter is ready.");
    assert!(reply["fragment"]["files"]["app/page.tsx"]
        .as_str()
        .unwrap()
        .starts_with("\"use client\""));
    assert_eq!(fake.remaining(), 0);
}

#[tokio::test]
async fn fix_rounds_that_change_the_errors_are_bounded() {
    let replay = ReplayProvider::from_responses(vec![
        text("<task_summary>First try.</task_summary>"),
        text("<task_summary>Second try.</task_summary>"),
        text("<task_summary>Third try.</task_summary>"),
        text("Title"),
        text("Reply"),
    ]);
    let app = TestApp::builder(Backend::Sqlite)
        .models(Arc::new(replay))
        .config(|c| c.agent_max_fix_rounds = 2)
        .start()
        .await;
    // Each look at the page finds another error, so no round repeats the one before.
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let preview = axum::Router::new().fallback(move || {
        let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let page = NEXT_ERROR_PAGE.replace("`useState`", &format!("`useHook{n}`"));
        async move { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, page) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    app.sandboxes
        .set_preview_base(&format!("http://{}", listener.local_addr().unwrap()));
    tokio::spawn(async move { axum::serve(listener, preview).await.unwrap() });

    let token = app.sign_up("rounds@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "anything").await;
    assert_eq!(
        app.wait_for_run(&token, &run_id).await["status"],
        "SUCCEEDED"
    );
    let run = run_of(&app, &token, &run_id).await;
    let kinds = kinds(&run);
    assert_eq!(
        kinds.iter().filter(|k| *k == "BUILD_DIAGNOSTICS").count(),
        3
    );
    // The first try and 2 fix rounds, then title and reply.
    assert_eq!(kinds.iter().filter(|k| *k == "MODEL_RESPONSE").count(), 5);
    let data = app
        .data(Some(&token), MESSAGES, json!({ "id": project_id }))
        .await;
    let reply = data["project"]["messages"]["edges"][1]["node"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reply.starts_with("Reply")
            && reply.contains("after the fix rounds")
            && reply.contains("useHook2"),
        "{reply}"
    );
}
