//! Limits of the real app's WebSocket endpoint: message size, operations per socket,
//! connections per user; and the viewer re-read for every operation.

use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::app::{Backend, TestApp};
use crate::support::ws_client::{connect, WsClient, TRANSPORT_WS};

const PROJECT_EVENTS: &str =
    "subscription($id: ID!) { projectEvents(projectId: $id) { seq kind } }";

async fn subscribe(ws: &mut WsClient, id: &str, query: &str, variables: Value) {
    ws.send_json(json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } }))
        .await;
}

/// The next message about operation `id`, skipping the others' messages.
async fn recv_for(ws: &mut WsClient, id: &str) -> Value {
    loop {
        let message = ws.recv().await;
        if message["id"] == id {
            return message;
        }
    }
}

#[tokio::test]
async fn a_message_over_the_limit_closes_the_socket_with_1009() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|config| config.ws_max_message_bytes = 1024)
        .start()
        .await;
    let token = app.sign_up("big@example.com").await;
    let mut ws = app.ws(&token).await;
    // At the limit: an ordinary (if padded) message.
    let query = format!("{{ me {{ id }} }} #{}", "x".repeat(900));
    let message = json!({ "id": "ok", "type": "subscribe", "payload": { "query": query } });
    assert!(message.to_string().len() <= 1024);
    ws.send_json(message).await;
    assert_eq!(recv_for(&mut ws, "ok").await["type"], "next");

    ws.send_text(&format!(
        r#"{{"type":"ping","payload":"{}"}}"#,
        "x".repeat(2048)
    ))
    .await;
    let (code, reason) = ws.expect_close().await;
    assert_eq!((code, reason.as_str()), (1009, "Message too big"));
}

#[tokio::test]
async fn the_message_limit_may_not_exceed_the_http_body_limit() {
    let mut config = crate::support::app::test_config(
        Backend::Sqlite,
        tempfile::tempdir().unwrap().path(),
        None,
    )
    .await;
    config.ws_max_message_bytes = codekraft::graphql::http::MAX_BODY_BYTES + 1;
    let built = codekraft::app::AppBuilder::new(config).build().await;
    let err = built.err().expect("the config is refused").to_string();
    assert!(err.contains("WS_MAX_MESSAGE_BYTES"), "{err}");
}

on_both_backends!(
    operations_over_the_cap_are_refused_with_an_error,
    |backend: Backend| async move {
        let app = TestApp::builder(backend)
            .config(|config| config.ws_max_subscriptions = 2)
            .start()
            .await;
        let token = app.sign_up("many@example.com").await;
        let (project_id, _) = app.create_project(&token, "a todo app").await;
        let mut ws = app.ws(&token).await;
        let variables = json!({ "id": project_id });
        subscribe(&mut ws, "1", PROJECT_EVENTS, variables.clone()).await;
        subscribe(&mut ws, "2", PROJECT_EVENTS, variables.clone()).await;
        subscribe(&mut ws, "3", PROJECT_EVENTS, variables.clone()).await;
        let refused = recv_for(&mut ws, "3").await;
        assert_eq!(refused["type"], "error", "{refused}");
        assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED");

        // Still usable: completing one makes room for another.
        ws.send_json(json!({ "id": "1", "type": "complete" })).await;
        subscribe(&mut ws, "4", PROJECT_EVENTS, variables).await;
        let accepted = recv_for(&mut ws, "4").await;
        assert_eq!(accepted["type"], "next", "{accepted}");
    }
);

#[tokio::test]
async fn connections_per_user_over_the_cap_are_refused_with_1013() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|config| config.ws_max_connections_per_user = 2)
        .start()
        .await;
    let token = app.sign_up("sockets@example.com").await;
    let other = app.sign_up("other@example.com").await;
    let first = app.ws(&token).await;
    let _second = app.ws(&token).await;

    let mut third = connect(&app.ws_url(), TRANSPORT_WS).await;
    third
        .send_json(json!({ "type": "connection_init", "payload": { "token": token } }))
        .await;
    let (code, reason) = third.expect_close().await;
    // "Try again later", not 4403: clients must not take it for a revoked session.
    assert_eq!(code, 1013);
    assert!(reason.contains("too many connections"), "{reason}");

    // Another user is not affected, and a closed socket frees its place.
    let _others = app.ws(&other).await;
    first.close().await;
    wait_for_a_free_place(&app, &token).await;
}

/// Connects until the server has noticed a closed socket (it does so asynchronously).
async fn wait_for_a_free_place(app: &TestApp, token: &str) {
    let deadline = tokio::time::Instant::now() + crate::support::ws_client::WAIT;
    loop {
        let mut ws = connect(&app.ws_url(), TRANSPORT_WS).await;
        ws.send_json(json!({ "type": "connection_init", "payload": { "token": token } }))
            .await;
        match ws.next_within(crate::support::ws_client::WAIT).await {
            Ok(ack) if ack["type"] == "connection_ack" => return,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "the closed socket's place was not freed: {other:?}"
            ),
        }
    }
}

on_both_backends!(
    a_plan_change_is_seen_on_the_next_subscribe,
    |backend: Backend| async move {
        use codekraft::entity::user;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};

        let app = TestApp::spawn(backend).await;
        let token = app.sign_up("upgrade@example.com").await;
        let mut ws = app.ws(&token).await;
        subscribe(&mut ws, "before", "{ usage { plan } }", json!({})).await;
        let before = recv_for(&mut ws, "before").await;
        assert_eq!(
            before["payload"]["data"]["usage"]["plan"], "FREE",
            "{before}"
        );

        user::Entity::update_many()
            .set(user::ActiveModel {
                plan: Set(user::Plan::Pro),
                ..Default::default()
            })
            .filter(user::Column::Email.eq("upgrade@example.com"))
            .exec(&app.server.state.db)
            .await
            .unwrap();

        subscribe(&mut ws, "after", "{ usage { plan } }", json!({})).await;
        let after = recv_for(&mut ws, "after").await;
        assert_eq!(after["payload"]["data"]["usage"]["plan"], "PRO", "{after}");
    }
);
