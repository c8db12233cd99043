//! Typed run events through GraphQL: every kind's `data`, rows in older shapes, and the README's
//! table of them.

use codekraft::agent::diagnostic::{Diagnostic, Severity};
use codekraft::agent::provider::{ModelResponse, TokenUsage, ToolCall};
use codekraft::entity::message::{MessageType, Role};
use codekraft::entity::run::RunStatus;
use codekraft::entity::run_event;
use codekraft::events::{record_event, EventKind, OutputStream, RunEventData, StopReason};
use sea_orm::{ActiveModelTrait, Set};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::on_both_backends;
use crate::support::app::{Backend, TestApp};

const EVENTS: &str = "query($id: ID!, $after: Int) { run(id: $id) { events(after: $after, first: 20) { seq kind data { ...Data } } } }
fragment Data on RunEventData {
  __typename
  ... on RunQueued { retry }
  ... on RunStarted { attempt }
  ... on SandboxReady { sandboxId previewUrl }
  ... on ModelTextDelta { text }
  ... on ModelResponse { text toolCalls { id name arguments } inputTokens outputTokens }
  ... on ToolCallStarted { callId name arguments }
  ... on ToolOutput { callId stream text truncated omittedBytes }
  ... on FileWritten { path bytes }
  ... on ToolCallFinished { callId name ok toolError: error }
  ... on BuildDiagnostics { round diagnostics { file line column code severity message } }
  ... on MessageCreated { messageId role type }
  ... on MessageDeleted { messageId }
  ... on FragmentCreated { fragmentId messageId sandboxUrl title draft }
  ... on DraftDiscarded { fragmentId }
  ... on RunFinished { status error inputTokens outputTokens costUsd stopReason }
  ... on UnreadableEvent { storedKind: kind reason }
}";

/// An event of `kind` and the `data` GraphQL gives for it. The match makes a new kind a compile
/// error here until it has an example.
fn example(kind: EventKind, id: Uuid) -> (RunEventData, Value) {
    match kind {
        EventKind::RunQueued => (
            RunEventData::RunQueued { retry: true },
            json!({ "__typename": "RunQueued", "retry": true }),
        ),
        EventKind::RunStarted => (
            RunEventData::RunStarted { attempt: 2 },
            json!({ "__typename": "RunStarted", "attempt": 2 }),
        ),
        EventKind::SandboxReady => (
            RunEventData::SandboxReady {
                sandbox_id: "sbx-1".into(),
                preview_url: "http://preview".into(),
            },
            json!({ "__typename": "SandboxReady", "sandboxId": "sbx-1", "previewUrl": "http://preview" }),
        ),
        EventKind::ModelTextDelta => (
            RunEventData::ModelTextDelta {
                text: "Writing".into(),
            },
            json!({ "__typename": "ModelTextDelta", "text": "Writing" }),
        ),
        EventKind::ModelResponse => (
            RunEventData::ModelResponse(ModelResponse {
                text: "Done".into(),
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "terminal".into(),
                    arguments: json!({ "command": "ls" }),
                }],
                usage: TokenUsage {
                    input_tokens: 10,
                    output_tokens: 5,
                },
                raw: Some(json!({ "provider": "data" })),
            }),
            json!({
                "__typename": "ModelResponse", "text": "Done",
                "toolCalls": [{ "id": "c1", "name": "terminal", "arguments": { "command": "ls" } }],
                "inputTokens": 10, "outputTokens": 5,
            }),
        ),
        EventKind::ToolCallStarted => (
            RunEventData::ToolCallStarted {
                call_id: "c1".into(),
                name: "terminal".into(),
                arguments: json!({ "command": "ls" }),
            },
            json!({ "__typename": "ToolCallStarted", "callId": "c1", "name": "terminal", "arguments": { "command": "ls" } }),
        ),
        EventKind::ToolOutput => (
            RunEventData::ToolOutput {
                call_id: "c1".into(),
                stream: Some(OutputStream::Stderr),
                text: "warn\n".into(),
                truncated: false,
                omitted_bytes: 0,
            },
            json!({
                "__typename": "ToolOutput", "callId": "c1", "stream": "STDERR", "text": "warn\n",
                "truncated": false, "omittedBytes": 0,
            }),
        ),
        EventKind::FileWritten => (
            RunEventData::FileWritten {
                path: "app/page.tsx".into(),
                bytes: 12,
            },
            json!({ "__typename": "FileWritten", "path": "app/page.tsx", "bytes": 12 }),
        ),
        EventKind::ToolCallFinished => (
            RunEventData::ToolCallFinished {
                call_id: "c1".into(),
                name: "terminal".into(),
                ok: false,
                error: Some(json!({ "exitCode": 1 })),
            },
            json!({
                "__typename": "ToolCallFinished", "callId": "c1", "name": "terminal", "ok": false,
                "toolError": { "exitCode": 1 },
            }),
        ),
        EventKind::BuildDiagnostics => (
            RunEventData::BuildDiagnostics {
                round: 2,
                diagnostics: vec![Diagnostic {
                    file: Some("app/page.tsx".into()),
                    line: Some(3),
                    column: Some(7),
                    code: Some("TS2322".into()),
                    severity: Severity::Error,
                    message: "Type 'string' is not assignable to type 'number'.".into(),
                }],
            },
            json!({
                "__typename": "BuildDiagnostics", "round": 2,
                "diagnostics": [{
                    "file": "app/page.tsx", "line": 3, "column": 7, "code": "TS2322",
                    "severity": "ERROR", "message": "Type 'string' is not assignable to type 'number'.",
                }],
            }),
        ),
        EventKind::MessageCreated => (
            RunEventData::MessageCreated {
                message_id: id,
                role: Role::Assistant,
                message_type: MessageType::Error,
            },
            json!({ "__typename": "MessageCreated", "messageId": id, "role": "ASSISTANT", "type": "ERROR" }),
        ),
        EventKind::MessageDeleted => (
            RunEventData::MessageDeleted { message_id: id },
            json!({ "__typename": "MessageDeleted", "messageId": id }),
        ),
        EventKind::FragmentCreated => (
            RunEventData::FragmentCreated {
                fragment_id: id,
                message_id: id,
                sandbox_url: "http://preview".into(),
                title: "Todo app".into(),
                draft: true,
            },
            json!({
                "__typename": "FragmentCreated", "fragmentId": id, "messageId": id,
                "sandboxUrl": "http://preview", "title": "Todo app", "draft": true,
            }),
        ),
        EventKind::DraftDiscarded => (
            RunEventData::DraftDiscarded { fragment_id: id },
            json!({ "__typename": "DraftDiscarded", "fragmentId": id }),
        ),
        EventKind::RunFinished => (
            RunEventData::RunFinished {
                status: RunStatus::Failed,
                error: Some("boom".into()),
                input_tokens: 10,
                output_tokens: 5,
                cost_usd: 0.25,
                stop_reason: Some(StopReason::CostLimit),
            },
            json!({
                "__typename": "RunFinished", "status": "FAILED", "error": "boom",
                "inputTokens": 10, "outputTokens": 5, "costUsd": 0.25, "stopReason": "COST_LIMIT",
            }),
        ),
    }
}

/// An app that never runs its queued runs, a user's project and its run.
async fn idle_project(backend: Backend) -> (TestApp, String, Uuid, Uuid) {
    let app = TestApp::builder(backend)
        .config(|c| c.worker_concurrency = 0)
        .start()
        .await;
    let token = app.sign_up("events@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "a todo app").await;
    (
        app,
        token,
        project_id.parse().unwrap(),
        run_id.parse().unwrap(),
    )
}

/// The run's events after `after`, as GraphQL gives them.
async fn events_after(app: &TestApp, token: &str, run_id: Uuid, after: i64) -> Vec<Value> {
    let data = app
        .data(
            Some(token),
            EVENTS,
            json!({ "id": run_id.to_string(), "after": after }),
        )
        .await;
    data["run"]["events"].as_array().unwrap().clone()
}

on_both_backends!(
    every_kind_reads_back_as_its_own_type,
    |backend| async move {
        let (app, token, project_id, run_id) = idle_project(backend).await;
        let db = &app.server.state.db;
        let id = Uuid::now_v7();
        let mut expected = Vec::new();
        let mut first_seq = None;
        for kind in EventKind::ALL {
            let (data, graphql) = example(kind, id);
            let row = record_event(db, project_id, run_id, data).await.unwrap();
            first_seq.get_or_insert(row.seq);
            expected.push(json!({ "seq": row.seq, "kind": kind.as_str(), "data": graphql }));
        }
        let events = events_after(&app, &token, run_id, first_seq.unwrap() - 1).await;
        assert_eq!(events, expected);

        // Every kind is in the union, and nothing else but the stand-in for unreadable rows.
        let types = app
            .data(
                Some(&token),
                r#"{ union: __type(name: "RunEventData") { possibleTypes { name } }
                 kinds: __type(name: "RunEventKind") { enumValues { name } } }"#,
                json!({}),
            )
            .await;
        let mut members: Vec<&str> = types["union"]["possibleTypes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        let mut mapped: Vec<&str> = expected
            .iter()
            .map(|e| e["data"]["__typename"].as_str().unwrap())
            .chain(["UnreadableEvent"])
            .collect();
        members.sort_unstable();
        mapped.sort_unstable();
        assert_eq!(members, mapped);
        let kinds: Vec<&str> = types["kinds"]["enumValues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["name"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, EventKind::ALL.map(EventKind::as_str));
    }
);

/// Stores a row as it is, bypassing `RunEventData`.
async fn insert_raw(
    app: &TestApp,
    project_id: Uuid,
    run_id: Uuid,
    seq: i64,
    kind: &str,
    payload: Value,
) {
    run_event::ActiveModel {
        id: Set(Uuid::new_v4()),
        project_id: Set(project_id),
        run_id: Set(Some(run_id)),
        seq: Set(seq),
        kind: Set(kind.to_owned()),
        payload: Set(payload),
        created_at: Set(chrono::Utc::now()),
    }
    .insert(&app.server.state.db)
    .await
    .unwrap();
}

#[tokio::test]
async fn old_rows_read_back_and_unreadable_ones_say_so() {
    let (app, token, project_id, run_id) = idle_project(Backend::Sqlite).await;
    // The project's run wrote seqs 1 and 2 when it was queued.
    let rows = [
        (
            "TOOL_OUTPUT",
            json!({ "callId": "c1", "stream": "stdout", "chunk": "1\n" }),
        ),
        (
            "TOOL_OUTPUT",
            json!({ "callId": "c1", "truncated": true, "omittedBytes": 42 }),
        ),
        ("FILE_WRITTEN", json!({ "path": "app/page.tsx" })),
        ("RUN_STARTED", json!({ "attempt": "first" })),
        ("FROM_THE_FUTURE", json!({})),
    ];
    for (seq, (kind, payload)) in (3..).zip(rows) {
        insert_raw(&app, project_id, run_id, seq, kind, payload).await;
    }
    let events = events_after(&app, &token, run_id, 2).await;
    let data: Vec<&Value> = events.iter().map(|e| &e["data"]).collect();
    assert_eq!(
        data[..3],
        [
            &json!({
                "__typename": "ToolOutput", "callId": "c1", "stream": "STDOUT", "text": "1\n",
                "truncated": false, "omittedBytes": 0,
            }),
            &json!({
                "__typename": "ToolOutput", "callId": "c1", "stream": null, "text": "",
                "truncated": true, "omittedBytes": 42,
            }),
            &json!({ "__typename": "FileWritten", "path": "app/page.tsx", "bytes": 0 }),
        ]
    );
    for (event, stored_kind) in events[3..].iter().zip(["RUN_STARTED", "FROM_THE_FUTURE"]) {
        assert_eq!(event["data"]["__typename"], "UnreadableEvent", "{event}");
        assert_eq!(event["data"]["storedKind"], stored_kind);
        assert!(!event["data"]["reason"].as_str().unwrap().is_empty());
    }
    assert_eq!(events[3]["kind"], "RUN_STARTED");
}

const TABLE_START: &str = "<!-- event kinds: generated by tests/it/events.rs -->\n";
const TABLE_END: &str = "<!-- end of event kinds -->";

/// `RUN_QUEUED` → `RunQueued`: the `data` type of a kind.
fn type_name(kind: EventKind) -> String {
    kind.as_str()
        .split('_')
        .map(|word| word[..1].to_owned() + &word[1..].to_lowercase())
        .collect()
}

/// The README's table of event kinds is generated from the schema; it must not drift.
#[tokio::test]
async fn the_readme_table_of_event_kinds_matches_the_schema() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let union = app
        .data(
            None,
            r#"{ __type(name: "RunEventData") { possibleTypes { name description fields { name } } } }"#,
            json!({}),
        )
        .await;
    let types = union["__type"]["possibleTypes"].as_array().unwrap();
    let mut table = String::from("| kind | `data` | |\n|---|---|---|\n");
    for kind in EventKind::ALL {
        let name = type_name(kind);
        let object = types
            .iter()
            .find(|t| t["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} is not in RunEventData"));
        let fields: Vec<&str> = object["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        let description = object["description"].as_str().unwrap_or("");
        table += &format!(
            "| `{}` | `{name} {{ {} }}` | {} |\n",
            kind.as_str(),
            fields.join(", "),
            description.replace('\n', " ").replace('|', "\\|"),
        );
    }
    let generated = format!("{TABLE_START}{table}{TABLE_END}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let committed = readme
        .find(TABLE_START)
        .and_then(|start| {
            Some(&readme[start..start + readme[start..].find(TABLE_END)? + TABLE_END.len()])
        })
        .unwrap_or("");
    assert!(
        committed == generated,
        "README.md's table of event kinds is out of date; replace it with:\n{generated}"
    );
}
