//! Runs that cannot be farmed: a cap on one user's active runs, a wall-clock limit per run,
//! retries that cost a credit and queue at the back.

use std::sync::Arc;
use std::time::Duration;

use codekraft::agent::provider::ReplayProvider;
use codekraft::entity::{run, usage};
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::on_both_backends;
use crate::runs::{call, gemini, run_of};
use crate::support::app::{error_code, Backend, TestApp};
use crate::support::fake_llm::{gemini_call_part, gemini_chunk, FakeLlm, Reply};

const CREATE: &str = "mutation($p: String!) { createProject(prompt: $p) { run { id } } }";
const RETRY: &str = "mutation($id: ID!) { retryRun(runId: $id) { status } }";

async fn consumed(app: &TestApp, token: &str) -> i64 {
    let data = app
        .data(Some(token), "{ usage { consumed } }", json!({}))
        .await;
    data["usage"]["consumed"].as_i64().unwrap()
}

/// Marks a run FAILED as a worker would after a step-limit failure (the credit kept).
async fn fail_in_place(app: &TestApp, run_id: &str) {
    let db = &app.server.state.db;
    let found = run::Entity::find_by_id(run_id.parse::<Uuid>().unwrap())
        .one(db)
        .await
        .unwrap()
        .unwrap();
    let mut failed: run::ActiveModel = found.into();
    failed.status = Set(run::RunStatus::Failed);
    failed.error = Set(Some("the agent did not finish within 3 steps".into()));
    failed.update(db).await.unwrap();
}

on_both_backends!(
    a_user_has_at_most_the_configured_runs_active,
    |backend: Backend| async move {
        let app = TestApp::builder(backend)
            .config(|c| {
                c.worker_concurrency = 0;
                c.max_active_runs_per_user = 2;
            })
            .start()
            .await;
        let token = app.sign_up("farmer@example.com").await;
        let (_, first) = app.create_project(&token, "one").await;
        app.create_project(&token, "two").await;
        let third = app.gql(Some(&token), CREATE, json!({ "p": "three" })).await;
        assert_eq!(error_code(&third), "TOO_MANY_RUNS", "{third}");
        assert_eq!(
            consumed(&app, &token).await,
            2,
            "the refused one took no credit"
        );
        // Another user is not affected.
        let other = app.sign_up("neighbour@example.com").await;
        app.create_project(&other, "mine").await;
        // A slot frees when a run ends.
        app.data(
            Some(&token),
            "mutation($id: ID!) { cancelRun(runId: $id) { status } }",
            json!({ "id": first }),
        )
        .await;
        app.create_project(&token, "three").await;
    }
);

#[tokio::test]
async fn a_run_past_its_wall_clock_limit_fails_and_keeps_its_work() {
    let page = json!({ "files": [{ "path": "app/page.tsx", "content": "half done" }] });
    let fake = FakeLlm::start([
        Reply::gemini_stream([gemini_chunk(
            vec![gemini_call_part("createOrUpdateFiles", page, None)],
            Some("STOP"),
            None,
        )]),
        Reply::gemini_stream([gemini_chunk(vec![json!({ "text": "slow" })], None, None)])
            .with_delay(Duration::from_secs(60)),
    ])
    .await;
    let app = TestApp::builder(Backend::Sqlite)
        .models(gemini(&fake))
        .config(|c| c.agent_max_run_secs = 1)
        .start()
        .await;
    let token = app.sign_up("dawdler@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "anything").await;
    assert_eq!(
        app.wait_for_run_within(&token, &run_id, Duration::from_secs(30))
            .await["status"],
        "FAILED"
    );
    let run = run_of(&app, &token, &run_id).await;
    assert_eq!(
        run["error"], "the agent did not finish within 1 seconds",
        "{run}"
    );
    assert_eq!(run["creditRefunded"], false, "the prompt's work was done");
    assert_eq!(
        app.assistant_messages(&token, &project_id).await[0]["type"],
        "ERROR"
    );
    let sandbox = app.sandboxes.sandbox(project_id.parse().unwrap()).unwrap();
    assert_eq!(sandbox.files()["app/page.tsx"], "half done");
}

#[tokio::test]
async fn retrying_a_step_limit_failure_takes_a_credit() {
    let endless = (0..20)
        .map(|_| call("listFiles", json!({ "dir": "." })))
        .collect();
    let app = TestApp::builder(Backend::Sqlite)
        .models(Arc::new(ReplayProvider::from_responses(endless)))
        .config(|c| c.agent_max_steps = 2)
        .start()
        .await;
    let token = app.sign_up("persistent@example.com").await;
    let (_, run_id) = app.create_project(&token, "loop forever").await;
    assert_eq!(app.wait_for_run(&token, &run_id).await["status"], "FAILED");
    assert_eq!(consumed(&app, &token).await, 1);

    app.data(Some(&token), RETRY, json!({ "id": run_id })).await;
    assert_eq!(consumed(&app, &token).await, 2, "the retry took a credit");
    assert_eq!(app.wait_for_run(&token, &run_id).await["status"], "FAILED");

    // With the allowance spent, a retry is refused and the run stays FAILED.
    let db = &app.server.state.db;
    let me = app.data(Some(&token), "{ me { id } }", json!({})).await;
    let user_id: Uuid = me["me"]["id"].as_str().unwrap().parse().unwrap();
    let mut spent: usage::ActiveModel = usage::Entity::find_by_id(user_id)
        .one(db)
        .await
        .unwrap()
        .unwrap()
        .into();
    spent.consumed = Set(5);
    spent.update(db).await.unwrap();
    let refused = app.gql(Some(&token), RETRY, json!({ "id": run_id })).await;
    assert_eq!(error_code(&refused), "CREDITS_EXHAUSTED", "{refused}");
    assert_eq!(run_of(&app, &token, &run_id).await["status"], "FAILED");
}

on_both_backends!(
    a_retried_run_queues_behind_runs_queued_before_the_retry,
    |backend: Backend| async move {
        let app = TestApp::builder(backend)
            .config(|c| c.worker_concurrency = 0)
            .start()
            .await;
        let token = app.sign_up("queuer@example.com").await;
        let (_, older) = app.create_project(&token, "first").await;
        fail_in_place(&app, &older).await;
        let (_, waiting) = app.create_project(&token, "second").await;
        app.data(Some(&token), RETRY, json!({ "id": older })).await;

        let db = &app.server.state.db;
        let lease = chrono::Duration::seconds(30);
        let claim = || codekraft::jobs::queue::claim_next_run(db, "test-worker", lease);
        let first = claim().await.unwrap().expect("a queued run");
        assert_eq!(first.id.to_string(), waiting);
        let second = claim().await.unwrap().expect("the retried run");
        assert_eq!(second.id.to_string(), older);
    }
);

/// A model that writes a page and reports `input_tokens` for it (Gemini 2.5 Flash prices:
/// 100,000 tokens are $0.03), then would go on forever.
async fn expensive_writer(input_tokens: u64) -> FakeLlm {
    let page = json!({ "files": [{ "path": "app/page.tsx", "content": "half done" }] });
    let usage = json!({ "promptTokenCount": input_tokens, "candidatesTokenCount": 10, "totalTokenCount": input_tokens + 10 });
    FakeLlm::start([
        Reply::gemini_stream([gemini_chunk(
            vec![gemini_call_part("createOrUpdateFiles", page, None)],
            Some("STOP"),
            Some(usage),
        )]),
        Reply::gemini_stream([gemini_chunk(
            vec![json!({ "text": "<task_summary>More.</task_summary>" })],
            Some("STOP"),
            None,
        )]),
    ])
    .await
}

const FINISHED: &str =
    "query($id: ID!) { run(id: $id) { status error costUsd events(first: 100) { kind data {
    ... on RunFinished { status stopReason costUsd }
} } } }";

/// The run's RUN_FINISHED data.
async fn finished_event(app: &TestApp, token: &str, run_id: &str) -> (Value, Value) {
    let data = app
        .data(Some(token), FINISHED, json!({ "id": run_id }))
        .await;
    let run = data["run"].clone();
    let finished = run["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "RUN_FINISHED")
        .expect("a RUN_FINISHED event")["data"]
        .clone();
    (run, finished)
}

#[tokio::test]
async fn a_run_at_its_cost_budget_stops_before_the_next_model_call_and_keeps_its_work() {
    let fake = expensive_writer(100_000).await;
    let app = TestApp::builder(Backend::Sqlite)
        .models(gemini(&fake))
        .config(|c| c.agent_max_run_usd = Some(0.01))
        .start()
        .await;
    let token = app.sign_up("spender@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "anything").await;
    assert_eq!(app.wait_for_run(&token, &run_id).await["status"], "FAILED");
    let (run, finished) = finished_event(&app, &token, &run_id).await;
    assert_eq!(finished["stopReason"], "COST_LIMIT", "{run}");
    assert_eq!(
        run["error"],
        "the run reached its cost budget of $0.01 (estimated)"
    );
    assert_eq!(fake.request_count(), 1, "no model call past the budget");
    let spent = run["costUsd"].as_f64().unwrap();
    assert!(spent >= 0.01, "{run}");
    let sandbox = app.sandboxes.sandbox(project_id.parse().unwrap()).unwrap();
    assert_eq!(sandbox.files()["app/page.tsx"], "half done");
    // The window's spend counts it.
    let usage = app
        .data(
            Some(&token),
            "{ usage { spentUsd spendCapUsd } }",
            json!({}),
        )
        .await;
    assert_eq!(usage["usage"]["spentUsd"].as_f64().unwrap(), spent);
    assert_eq!(usage["usage"]["spendCapUsd"], Value::Null);
}

#[tokio::test]
async fn the_spend_cap_stops_a_running_run_and_refuses_a_new_one() {
    let fake = expensive_writer(100_000).await;
    let app = TestApp::builder(Backend::Sqlite)
        .models(gemini(&fake))
        .config(|c| c.user_max_spend_usd_per_window = Some(0.02))
        .start()
        .await;
    let token = app.sign_up("capped@example.com").await;
    let (_, run_id) = app.create_project(&token, "anything").await;
    assert_eq!(app.wait_for_run(&token, &run_id).await["status"], "FAILED");
    let (run, finished) = finished_event(&app, &token, &run_id).await;
    assert_eq!(finished["stopReason"], "SPEND_CAP", "{run}");
    assert_eq!(fake.request_count(), 1);

    let usage = app
        .data(
            Some(&token),
            "{ usage { consumed spentUsd spendCapUsd } }",
            json!({}),
        )
        .await;
    assert!(
        usage["usage"]["spentUsd"].as_f64().unwrap() >= 0.02,
        "{usage}"
    );
    assert_eq!(usage["usage"]["spendCapUsd"], 0.02);
    let refused = app
        .gql(Some(&token), CREATE, json!({ "p": "another" }))
        .await;
    assert_eq!(error_code(&refused), "SPEND_CAP_REACHED", "{refused}");
    assert!(refused["errors"][0]["extensions"]["resetAt"].is_string());
    assert_eq!(
        consumed(&app, &token).await,
        1,
        "the refused one took no credit"
    );
    // Another user has a window of their own.
    let other = app.sign_up("uncapped@example.com").await;
    let accepted = app.gql(Some(&other), CREATE, json!({ "p": "mine" })).await;
    assert!(accepted["errors"].is_null(), "{accepted}");
}

const REPLIES: &str = "query($id: ID!) { project(id: $id) { messages { edges { node { role type content fragment { id title draft files } } } } } }";

/// The project's ASSISTANT messages.
async fn replies(app: &TestApp, token: &str, project_id: &str) -> Vec<Value> {
    let data = app
        .data(Some(token), REPLIES, json!({ "id": project_id }))
        .await;
    data["project"]["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .filter(|m| m["role"] == "ASSISTANT")
        .collect()
}

#[tokio::test]
async fn a_run_stopped_by_its_budget_keeps_its_files_as_a_draft() {
    let fake = expensive_writer(100_000).await;
    let app = TestApp::builder(Backend::Sqlite)
        .models(gemini(&fake))
        .config(|c| c.agent_max_run_usd = Some(0.01))
        .start()
        .await;
    let token = app.sign_up("drafter@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "anything").await;
    assert_eq!(app.wait_for_run(&token, &run_id).await["status"], "FAILED");
    let replies = replies(&app, &token, &project_id).await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["type"], "ERROR");
    assert!(
        replies[0]["content"]
            .as_str()
            .unwrap()
            .contains("kept as a draft"),
        "{}",
        replies[0]
    );
    let draft = &replies[0]["fragment"];
    assert_eq!(draft["draft"], true);
    assert_eq!(draft["files"]["app/page.tsx"], "half done");
    // A draft is not the project's version: a follow-up does not build on it.
    let db = &app.server.state.db;
    let latest = codekraft::services::fragment::latest_fragment(db, project_id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(latest, None);

    // Retrying the run keeps the draft: its reply leaves the run instead of being deleted.
    let draft_id = draft["id"].as_str().unwrap().to_owned();
    app.data(
        Some(&token),
        "mutation($id: ID!) { retryRun(runId: $id) { status } }",
        json!({ "id": run_id }),
    )
    .await;
    let replies = self::replies(&app, &token, &project_id).await;
    let kept = replies
        .iter()
        .find(|reply| reply["fragment"]["id"] == draft_id.as_str())
        .unwrap_or_else(|| panic!("the draft went with the retry: {replies:?}"));
    assert_eq!(kept["fragment"]["files"]["app/page.tsx"], "half done");
}

#[tokio::test]
async fn a_cancelled_run_keeps_its_files_as_a_draft_that_restores_or_discards() {
    let page = json!({ "files": [{ "path": "app/page.tsx", "content": "begun" }] });
    let fake = FakeLlm::start([
        Reply::gemini_stream([gemini_chunk(
            vec![gemini_call_part("createOrUpdateFiles", page, None)],
            Some("STOP"),
            None,
        )]),
        Reply::gemini_stream([gemini_chunk(vec![json!({ "text": "slow" })], None, None)])
            .with_delay(Duration::from_secs(60)),
    ])
    .await;
    let app = TestApp::builder(Backend::Sqlite)
        .models(gemini(&fake))
        .start()
        .await;
    let token = app.sign_up("canceller@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "anything").await;
    // Wait until the second model call is in flight: the file is written.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fake.request_count() < 2 {
        assert!(std::time::Instant::now() < deadline, "the run never wrote");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.data(
        Some(&token),
        "mutation($id: ID!) { cancelRun(runId: $id) { status } }",
        json!({ "id": run_id }),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let draft = loop {
        let replies = replies(&app, &token, &project_id).await;
        if let Some(reply) = replies.first() {
            break reply.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no draft was kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(draft["type"], "RESULT");
    assert!(draft["content"].as_str().unwrap().contains("cancelled"));
    assert_eq!(draft["fragment"]["draft"], true);
    assert_eq!(draft["fragment"]["files"]["app/page.tsx"], "begun");
    let draft_id = draft["fragment"]["id"].as_str().unwrap().to_owned();
    let (_, finished) = finished_event(&app, &token, &run_id).await;
    assert_eq!(finished["stopReason"], "CANCELLED");

    // Restoring it makes its files the newest version.
    let restored = app
        .data(
            Some(&token),
            "mutation($id: ID!) { restoreFragment(fragmentId: $id) { fragment { id draft files } } }",
            json!({ "id": draft_id }),
        )
        .await;
    let restored = &restored["restoreFragment"]["fragment"];
    assert_eq!(restored["draft"], false);
    assert_eq!(restored["files"]["app/page.tsx"], "begun");

    // The draft can then go; a version that is not a draft cannot.
    const DISCARD: &str = "mutation($id: ID!) { discardDraft(fragmentId: $id) }";
    let refused = app
        .gql(Some(&token), DISCARD, json!({ "id": restored["id"] }))
        .await;
    assert_eq!(error_code(&refused), "CONFLICT", "{refused}");
    let stranger = app.sign_up("stranger@example.com").await;
    let hidden = app
        .gql(Some(&stranger), DISCARD, json!({ "id": draft_id }))
        .await;
    assert_eq!(error_code(&hidden), "NOT_FOUND", "{hidden}");
    let discarded = app
        .data(Some(&token), DISCARD, json!({ "id": draft_id }))
        .await;
    assert_eq!(discarded["discardDraft"], draft_id);
    let left: Vec<Value> = replies(&app, &token, &project_id)
        .await
        .into_iter()
        .filter(|m| !m["fragment"].is_null())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["fragment"]["id"], restored["id"]);
}
