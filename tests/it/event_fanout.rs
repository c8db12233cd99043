//! Live events reach many subscribers at the cost of one read per batch per process: a feed per
//! watched project, exactly-once delivery whatever a subscriber missed, and several servers
//! sharing one PostgreSQL database.

use std::sync::Arc;

use codekraft::events::{event_stream, EventFilter, EventHub};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::on_both_backends;
use crate::support::app::{Backend, TestApp};
use crate::support::ws_client::WsClient;

const PROJECT_EVENTS: &str =
    "subscription($id: ID!, $after: Int) { projectEvents(projectId: $id, after: $after) { seq kind } }";

/// A project whose first run has finished: its version can be restored again and again, and
/// each restore stores two events (MESSAGE_CREATED, FRAGMENT_CREATED) in one transaction.
struct Restorable {
    project_id: String,
    fragment_id: String,
    /// The project's latest event so far.
    last_seq: i64,
}

async fn restorable_project(app: &TestApp, token: &str) -> Restorable {
    let (project_id, run_id) = app.create_project(token, "a todo app").await;
    assert_eq!(
        app.wait_for_run(token, &run_id).await["status"],
        "SUCCEEDED"
    );
    let data = app
        .data(
            Some(token),
            "query($id: ID!, $run: ID!) { project(id: $id) { messages { edges { node { fragment { id } } } } } run(id: $run) { events { seq } } }",
            json!({ "id": project_id, "run": run_id }),
        )
        .await;
    let fragment_id = data["project"]["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|edge| edge["node"]["fragment"]["id"].as_str())
        .expect("the first run made a version")
        .to_owned();
    let last_seq = data["run"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["seq"].as_i64().unwrap())
        .max()
        .unwrap();
    Restorable {
        project_id,
        fragment_id,
        last_seq,
    }
}

async fn restore(app: &TestApp, token: &str, project: &mut Restorable) {
    app.data(
        Some(token),
        "mutation($id: ID!) { restoreFragment(fragmentId: $id) { id } }",
        json!({ "id": project.fragment_id }),
    )
    .await;
    project.last_seq += 2;
}

/// A subscriber of `project`'s events after its latest so far.
async fn subscriber(app: &TestApp, token: &str, project: &Restorable) -> WsClient {
    let mut ws = app.ws(token).await;
    ws.send_json(json!({ "id": "s", "type": "subscribe", "payload": {
        "query": PROJECT_EVENTS,
        "variables": { "id": project.project_id, "after": project.last_seq },
    }}))
    .await;
    ws
}

/// Reads `next` events until sequence number `until`; returns the numbers read.
async fn read_through(ws: &mut WsClient, until: i64) -> Vec<i64> {
    let mut seqs = Vec::new();
    while seqs.last() != Some(&until) {
        let message = ws.recv().await;
        assert_eq!(message["type"], "next", "{message}");
        seqs.push(
            message["payload"]["data"]["projectEvents"]["seq"]
                .as_i64()
                .unwrap(),
        );
    }
    seqs
}

/// Database statements the server runs while `restores` versions are restored, each delivered
/// to every subscriber before the next.
async fn statements_for_restores(
    app: &TestApp,
    token: &str,
    project: &mut Restorable,
    subscribers: &mut [WsClient],
    restores: usize,
) -> u64 {
    let before = app.db_statements();
    for _ in 0..restores {
        restore(app, token, project).await;
        for ws in subscribers.iter_mut() {
            read_through(ws, project.last_seq).await;
        }
    }
    app.db_statements() - before
}

on_both_backends!(
    a_batch_costs_the_same_statements_for_one_subscriber_or_ten,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let token = app.sign_up("many-tabs@example.com").await;
        let mut project = restorable_project(&app, &token).await;

        let mut measured = Vec::new();
        for count in [1, 10] {
            let mut subscribers = Vec::new();
            for _ in 0..count {
                subscribers.push(subscriber(&app, &token, &project).await);
            }
            // Every subscriber has read the history and joined the feed.
            statements_for_restores(&app, &token, &mut project, &mut subscribers, 1).await;
            measured.push(
                statements_for_restores(&app, &token, &mut project, &mut subscribers, 3).await,
            );
        }
        let (one, ten) = (measured[0], measured[1]);
        // Reading per subscriber would cost 9 × 3 more reads here. A worker's idle poll (one
        // statement every 2 s) may fall into either window.
        assert!(
            ten <= one + 2,
            "3 restores cost {one} statements with one subscriber but {ten} with ten"
        );
    }
);

on_both_backends!(
    a_subscriber_is_not_woken_by_another_projects_events,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let token = app.sign_up("two-projects@example.com").await;
        let mut watched = restorable_project(&app, &token).await;
        let mut other = restorable_project(&app, &token).await;

        let unwatched = statements_for_restores(&app, &token, &mut other, &mut [], 6).await;
        let mut ws = subscriber(&app, &token, &watched).await;
        // The subscriber has caught up and joined its project's feed.
        restore(&app, &token, &mut watched).await;
        read_through(&mut ws, watched.last_seq).await;
        let while_watching = statements_for_restores(&app, &token, &mut other, &mut [], 6).await;
        // A worker's idle poll (one statement every 2 s) may fall into either window.
        assert!(
            while_watching <= unwatched + 1,
            "another project's 6 restores cost {unwatched} statements, {while_watching} while this one is watched"
        );
        // Nothing of the other project reached the socket: the next event is its own.
        restore(&app, &token, &mut watched).await;
        assert_eq!(
            read_through(&mut ws, watched.last_seq).await,
            [watched.last_seq - 1, watched.last_seq]
        );
    }
);

on_both_backends!(
    a_subscriber_that_falls_behind_the_feed_still_gets_every_event_once,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let token = app.sign_up("slow-reader@example.com").await;
        let mut project = restorable_project(&app, &token).await;
        let state = &app.server.state;
        // A feed that keeps two batches for a subscriber that does not read.
        let hub = EventHub::new(state.db.clone(), 2);
        let shutdown = CancellationToken::new();
        hub.start(state.bus.as_ref(), shutdown.clone());
        let filter = EventFilter {
            project_id: project.project_id.parse::<Uuid>().unwrap(),
            run_id: None,
            after: project.last_seq - 1,
        };
        let mut reader = event_stream(state.db.clone(), Arc::clone(&hub), filter).boxed();
        let mut laggard = event_stream(state.db.clone(), Arc::clone(&hub), filter).boxed();
        // Both have read the history and joined the feed.
        let start = project.last_seq;
        for stream in [&mut reader, &mut laggard] {
            assert_eq!(stream.next().await.unwrap().unwrap().row.seq, start);
        }

        // Ten batches, each read by `reader` before the next is written.
        for _ in 0..10 {
            restore(&app, &token, &mut project).await;
            let mut got = Vec::new();
            while got.last() != Some(&project.last_seq) {
                got.push(reader.next().await.unwrap().unwrap().row.seq);
            }
        }
        let mut got = Vec::new();
        while got.last() != Some(&project.last_seq) {
            got.push(laggard.next().await.unwrap().unwrap().row.seq);
        }
        assert_eq!(got, ((start + 1)..=project.last_seq).collect::<Vec<_>>());
        shutdown.cancel();
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_listener_that_reconnects_loses_no_event() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let token = app.sign_up("listener@example.com").await;
    let mut project = restorable_project(&app, &token).await;
    let mut ws = subscriber(&app, &token, &project).await;
    restore(&app, &token, &mut project).await;
    let start = project.last_seq;
    read_through(&mut ws, start).await;

    // Cut the server's LISTEN connection; notifications sent until it is back are lost.
    let admin = sqlx::PgPool::connect(&app.database_url()).await.unwrap();
    let cut: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(cut, [(true,)], "the server listens on one connection");
    for _ in 0..3 {
        restore(&app, &token, &mut project).await;
    }
    assert_eq!(
        read_through(&mut ws, project.last_seq).await,
        ((start + 1)..=project.last_seq).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_one_server_follows_a_run_executed_by_another() {
    // The API server runs no worker; the second server on the same database executes the run.
    let api = TestApp::builder(Backend::Postgres)
        .config(|config| config.worker_concurrency = 0)
        .start()
        .await;
    let worker = TestApp::builder(Backend::Postgres)
        .database_url(api.database_url())
        .start()
        .await;
    let token = api.sign_up("two-servers@example.com").await;
    let (_, run_id) = api.create_project(&token, "a weather app").await;
    let mut ws = api.ws(&token).await;
    ws.send_json(json!({ "id": "r", "type": "subscribe", "payload": {
        "query": "subscription($id: ID!) { runEvents(runId: $id) { seq kind runId payload } }",
        "variables": { "id": run_id },
    }}))
    .await;
    let mut events: Vec<Value> = Vec::new();
    loop {
        let message = ws.recv().await;
        if message["type"] == "complete" {
            break;
        }
        assert_eq!(message["type"], "next", "{message}");
        events.push(message["payload"]["data"]["runEvents"].clone());
    }
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in ["RUN_QUEUED", "RUN_STARTED", "TOOL_CALL_STARTED"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let finished = events.last().unwrap();
    assert_eq!(finished["kind"], "RUN_FINISHED");
    assert_eq!(finished["payload"]["status"], "SUCCEEDED");
    assert!(events.iter().all(|e| e["runId"] == run_id.as_str()));
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
    // The worker server's sandbox did the work.
    assert!(worker.sandboxes.connect_count() > 0);
    assert_eq!(api.sandboxes.connect_count(), 0);
}
