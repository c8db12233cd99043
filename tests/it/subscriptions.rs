//! Live events over graphql-ws, backed by the persisted event log.

use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::app::{Backend, TestApp};
use crate::support::ws_client::WsClient;

const PROJECT_EVENTS: &str = "subscription($id: ID!, $after: Int) { projectEvents(projectId: $id, after: $after) { seq kind runId data {
    ... on RunFinished { status outputTokens }
    ... on FileWritten { path }
    ... on MessageCreated { messageId }
    ... on FragmentCreated { fragmentId }
} } }";
const RUN_EVENTS: &str =
    "subscription($id: ID!, $after: Int) { runEvents(runId: $id, after: $after) { seq kind } }";

async fn subscribe(ws: &mut WsClient, query: &str, variables: Value) {
    ws.send_json(json!({ "id": "s", "type": "subscribe", "payload": { "query": query, "variables": variables } }))
        .await;
}

/// Reads `next` messages until one of kind `until`; returns the events read.
async fn read_until(ws: &mut WsClient, until: &str) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let message = ws.recv().await;
        assert_eq!(message["type"], "next", "{message}");
        let event = message["payload"]["data"]
            .as_object()
            .and_then(|data| data.values().next())
            .cloned()
            .unwrap();
        let done = event["kind"] == until;
        events.push(event);
        if done {
            return events;
        }
    }
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["kind"].as_str().unwrap()).collect()
}

on_both_backends!(
    a_run_streams_its_steps_in_order,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.sandboxes.script_command("ls", 0, "page.tsx\n", "");
        let token = app.sign_up("watcher@example.com").await;
        let (project_id, _) = app.create_project(&token, "a todo app").await;
        let mut ws = app.ws(&token).await;
        subscribe(&mut ws, PROJECT_EVENTS, json!({ "id": project_id })).await;
        let events = read_until(&mut ws, "RUN_FINISHED").await;
        let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "gapless and ordered"
        );
        let kinds = kinds(&events);
        assert_eq!(
            &kinds[..4],
            [
                "MESSAGE_CREATED",
                "RUN_QUEUED",
                "RUN_STARTED",
                "SANDBOX_READY"
            ]
        );
        for expected in [
            "TOOL_CALL_STARTED",
            "FILE_WRITTEN",
            "TOOL_OUTPUT",
            "TOOL_CALL_FINISHED",
            "MODEL_RESPONSE",
        ] {
            assert!(
                kinds.contains(&expected),
                "{expected} missing from {kinds:?}"
            );
        }
        assert_eq!(
            &kinds[kinds.len() - 3..],
            ["MESSAGE_CREATED", "FRAGMENT_CREATED", "RUN_FINISHED"]
        );
        let finished = events.last().unwrap();
        assert_eq!(finished["data"]["status"], "SUCCEEDED");
        assert!(finished["data"]["outputTokens"].as_i64().unwrap() > 0);
        let written = events.iter().find(|e| e["kind"] == "FILE_WRITTEN").unwrap();
        assert_eq!(written["data"]["path"], "app/page.tsx");
    }
);

on_both_backends!(
    a_subscriber_that_reconnects_misses_nothing,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let token = app.sign_up("flaky@example.com").await;
        let (project_id, run_id) = app.create_project(&token, "a counter app").await;

        // Read a few events, drop the connection mid-run, then resume from the last one seen.
        let mut ws = app.ws(&token).await;
        subscribe(&mut ws, PROJECT_EVENTS, json!({ "id": project_id })).await;
        let mut seen = read_until(&mut ws, "RUN_STARTED").await;
        ws.close().await;
        let last = seen.last().unwrap()["seq"].as_i64().unwrap();
        let mut ws = app.ws(&token).await;
        subscribe(
            &mut ws,
            PROJECT_EVENTS,
            json!({ "id": project_id, "after": last }),
        )
        .await;
        seen.extend(read_until(&mut ws, "RUN_FINISHED").await);
        let seqs: Vec<i64> = seen.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "each event exactly once"
        );

        // A follow-up's events keep coming on the same open subscription.
        let sent = app
        .data(Some(&token), "mutation($id: ID!) { sendMessage(projectId: $id, content: \"add a reset button\") { run { id } } }", json!({ "id": project_id }))
        .await;
        let more = read_until(&mut ws, "RUN_FINISHED").await;
        assert_eq!(more[0]["seq"].as_i64().unwrap(), seqs.len() as i64 + 1);
        assert_eq!(more[0]["runId"], sent["sendMessage"]["run"]["id"]);

        // runEvents replays one run and completes after its RUN_FINISHED.
        let mut ws = app.ws(&token).await;
        subscribe(&mut ws, RUN_EVENTS, json!({ "id": run_id })).await;
        let replayed = read_until(&mut ws, "RUN_FINISHED").await;
        assert_eq!(replayed.len(), seen.len());
        assert_eq!(ws.recv().await["type"], "complete");
    }
);

on_both_backends!(
    a_restored_version_reaches_other_tabs_as_events_outside_a_run,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let token = app.sign_up("two-tabs@example.com").await;
        let (project_id, run_id) = app.create_project(&token, "a todo app").await;
        app.wait_for_run(&token, &run_id).await;
        let versions = app
            .data(
                Some(&token),
                "query($id: ID!) { project(id: $id) { messages { edges { node { fragment { id } } } } } }",
                json!({ "id": project_id }),
            )
            .await;
        let fragment_id = versions["project"]["messages"]["edges"][1]["node"]["fragment"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut other_tab = app.ws(&token).await;
        subscribe(&mut other_tab, PROJECT_EVENTS, json!({ "id": project_id })).await;
        let history = read_until(&mut other_tab, "RUN_FINISHED").await;
        let restored = app
            .data(
                Some(&token),
                "mutation($id: ID!) { restoreFragment(fragmentId: $id) { id fragment { id } } }",
                json!({ "id": fragment_id }),
            )
            .await;
        let live = read_until(&mut other_tab, "FRAGMENT_CREATED").await;
        assert_eq!(kinds(&live), ["MESSAGE_CREATED", "FRAGMENT_CREATED"]);
        assert_eq!(
            live[0]["seq"].as_i64().unwrap(),
            history.last().unwrap()["seq"].as_i64().unwrap() + 1
        );
        assert!(
            live.iter().all(|event| event["runId"].is_null()),
            "{live:?}"
        );
        assert_eq!(
            live[0]["data"]["messageId"],
            restored["restoreFragment"]["id"]
        );
        assert_eq!(
            live[1]["data"]["fragmentId"],
            restored["restoreFragment"]["fragment"]["id"]
        );
    }
);
