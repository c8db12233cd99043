//! GraphQL over Server-Sent Events (`/graphql/stream`): the auth and limits of graphql-ws.

use serde_json::json;

use crate::api_keys::create_key;
use crate::on_both_backends;
use crate::support::app::{Backend, TestApp};
use crate::support::sse_client::{self, SseStream};
use crate::support::ws_client::{self, TRANSPORT_WS};

const RUN_EVENTS: &str = "subscription($id: ID!) { runEvents(runId: $id) { seq kind } }";
const PROJECT_EVENTS: &str =
    "subscription($id: ID!) { projectEvents(projectId: $id) { seq kind } }";

fn stream_url(app: &TestApp) -> String {
    app.url("/graphql/stream")
}

on_both_backends!(
    a_key_follows_a_build_to_its_end_over_sse,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let token = app.sign_up("ci@example.com").await;
        let (_, key) = create_key(&app, &token, &["GENERATE"]).await;
        let (_, run_id) = app.create_project(&key, "a todo app").await;

        let response = sse_client::post(
            &stream_url(&app),
            Some(&key),
            RUN_EVENTS,
            json!({ "id": run_id }),
        )
        .await;
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let mut stream = SseStream::new(response);
        let mut kinds = Vec::new();
        loop {
            let event = stream.expect_event().await;
            assert_eq!(event.event, "next", "{event:?}");
            let kind = event.json()["data"]["runEvents"]["kind"]
                .as_str()
                .unwrap()
                .to_owned();
            kinds.push(kind.clone());
            if kind == "RUN_FINISHED" {
                break;
            }
        }
        assert_eq!(kinds[..2], ["MESSAGE_CREATED", "RUN_QUEUED"], "{kinds:?}");
        assert!(kinds.iter().any(|kind| kind == "FILE_WRITTEN"), "{kinds:?}");
        assert_eq!(stream.expect_event().await.event, "complete");
        assert_eq!(stream.next_event().await, None, "the stream ends");
    }
);

#[tokio::test]
async fn queries_and_refused_mutations_stream_one_result() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.sign_up("reader@example.com").await;
    let (_, read_key) = create_key(&app, &token, &["READ"]).await;
    let mut me = SseStream::new(
        sse_client::post(
            &stream_url(&app),
            Some(&read_key),
            "{ me { id } }",
            json!({}),
        )
        .await,
    );
    assert!(me.expect_event().await.json()["data"]["me"]["id"].is_string());
    assert_eq!(me.expect_event().await.event, "complete");

    let mut create = SseStream::new(
        sse_client::post(
            &stream_url(&app),
            Some(&read_key),
            "mutation { createProject(prompt: \"a blog\") { project { id } } }",
            json!({}),
        )
        .await,
    );
    let refused = create.expect_event().await.json();
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    assert_eq!(create.expect_event().await.event, "complete");
    assert_eq!(app.count_rows("project").await, 0);
}

#[tokio::test]
async fn no_credentials_are_401_and_a_wrong_accept_406_before_streaming() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.sign_up("curl@example.com").await;
    let url = stream_url(&app);
    let anonymous = sse_client::post(&url, None, "{ me { id } }", json!({})).await;
    assert_eq!(anonymous.status(), 401);
    let bad_key = sse_client::post(&url, Some("ckp_typo"), "{ me { id } }", json!({})).await;
    assert_eq!(bad_key.status(), 401);

    let json_only = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&token)
        .header("Accept", "application/json")
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(json_only.status(), 406);

    let not_json = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&token)
        .header("Accept", "text/event-stream")
        .body("{ me { id } }")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 415);
}

on_both_backends!(
    revoking_a_key_closes_its_stream,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let token = app.sign_up("dashboard@example.com").await;
        let (project_id, _) = app.create_project(&token, "a todo app").await;
        let (key_id, key) = create_key(&app, &token, &["READ"]).await;
        let mut stream = SseStream::new(
            sse_client::post(
                &stream_url(&app),
                Some(&key),
                PROJECT_EVENTS,
                json!({ "id": project_id }),
            )
            .await,
        );
        assert_eq!(stream.expect_event().await.event, "next");
        app.data(
            Some(&token),
            "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
            json!({ "id": key_id }),
        )
        .await;
        // Events may still be on their way; then the stream ends, without `complete`.
        while let Some(event) = stream.next_event().await {
            assert_eq!(event.event, "next", "{event:?}");
        }
    }
);

#[tokio::test]
async fn sse_streams_count_with_websockets_against_the_connection_cap() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|config| config.ws_max_connections_per_user = 1)
        .start()
        .await;
    let token = app.sign_up("greedy@example.com").await;
    let (project_id, _) = app.create_project(&token, "a todo app").await;
    let url = stream_url(&app);
    let mut open = SseStream::new(
        sse_client::post(
            &url,
            Some(&token),
            PROJECT_EVENTS,
            json!({ "id": project_id }),
        )
        .await,
    );
    assert_eq!(open.expect_event().await.event, "next");

    let second = sse_client::post(&url, Some(&token), "{ me { id } }", json!({})).await;
    assert_eq!(second.status(), 429);
    assert!(second.headers().contains_key("retry-after"));
    let mut ws = ws_client::connect(&app.ws_url(), TRANSPORT_WS).await;
    ws.send_json(json!({ "type": "connection_init", "payload": { "token": token } }))
        .await;
    assert_eq!(ws.expect_close().await.0, 1013);
}

#[tokio::test]
async fn an_idle_stream_gets_keep_alive_comments() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|config| config.sse_keep_alive_secs = 1)
        .start()
        .await;
    let token = app.sign_up("idle@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "a todo app").await;
    app.wait_for_run(&token, &run_id).await;
    let mut stream = SseStream::new(
        sse_client::post(
            &stream_url(&app),
            Some(&token),
            PROJECT_EVENTS,
            json!({ "id": project_id }),
        )
        .await,
    );
    // The history, then nothing new: a comment line keeps proxies from closing the stream.
    loop {
        let block = stream.next_block().await.expect("the stream stays open");
        if block.starts_with(':') {
            break;
        }
        assert!(block.starts_with("event: next"), "{block}");
    }
}

#[tokio::test]
async fn signing_out_closes_the_sessions_streams() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.sign_up("leaving@example.com").await;
    let (project_id, _) = app.create_project(&token, "a todo app").await;
    let mut stream = SseStream::new(
        sse_client::post(
            &stream_url(&app),
            Some(&token),
            PROJECT_EVENTS,
            json!({ "id": project_id }),
        )
        .await,
    );
    assert_eq!(stream.expect_event().await.event, "next");
    app.data(Some(&token), "mutation { signOut }", json!({}))
        .await;
    while let Some(event) = stream.next_event().await {
        assert_eq!(event.event, "next", "{event:?}");
    }
}

on_both_backends!(
    a_key_revoked_on_another_server_closes_its_streams_and_sockets_here,
    |backend: Backend| async move {
        let check_often = |config: &mut codekraft::config::Config| {
            config.socket_credential_check_secs = 1;
        };
        let here = TestApp::builder(backend).config(check_often).start().await;
        let there = TestApp::builder(backend)
            .database_url(here.database_url())
            .config(check_often)
            .start()
            .await;
        let token = there.sign_up("two-servers@example.com").await;
        let (project_id, _) = there.create_project(&token, "a todo app").await;
        let (key_id, key) = create_key(&there, &token, &["READ"]).await;
        let mut stream = SseStream::new(
            sse_client::post(
                &stream_url(&here),
                Some(&key),
                PROJECT_EVENTS,
                json!({ "id": project_id }),
            )
            .await,
        );
        assert_eq!(stream.expect_event().await.event, "next");
        let mut socket = here.ws(&key).await;

        there
            .data(
                Some(&token),
                "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
                json!({ "id": key_id }),
            )
            .await;
        let (code, reason) = socket.expect_close().await;
        assert_eq!((code, reason.as_str()), (4403, "the API key was revoked"));
        while let Some(event) = stream.next_event().await {
            assert_eq!(event.event, "next", "{event:?}");
        }
    }
);

#[tokio::test]
async fn query_limits_and_rate_limits_apply_over_sse() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|config| {
            config.rate_limit_user_mutations_per_minute = 1;
            config.graphql_max_depth = 3;
        })
        .start()
        .await;
    let token = app.sign_up("limited@example.com").await;
    let url = stream_url(&app);
    let first_result = |query: &'static str| {
        let (url, token) = (url.clone(), token.clone());
        async move {
            let mut stream =
                SseStream::new(sse_client::post(&url, Some(&token), query, json!({})).await);
            let result = stream.expect_event().await.json();
            assert_eq!(stream.expect_event().await.event, "complete");
            result
        }
    };
    let deep =
        first_result("{ projects { edges { node { messages { edges { node { id } } } } } } }")
            .await;
    assert_eq!(
        deep["errors"][0]["extensions"]["code"], "QUERY_TOO_DEEP",
        "{deep}"
    );

    const RENAME: &str = "mutation { renameProject(id: \"00000000-0000-7000-8000-000000000000\", name: \"x\") { id } }";
    let charged = first_result(RENAME).await;
    assert_eq!(
        charged["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{charged}"
    );
    let limited = first_result(RENAME).await;
    assert_eq!(
        limited["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{limited}"
    );
}
