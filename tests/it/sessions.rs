//! Sessions that end: `signOut` revokes its token and closes its sockets; a socket closes when
//! its token expires.

use serde_json::json;

use crate::on_both_backends;
use crate::support::app::{error_code, Backend, TestApp};

const SIGN_OUT: &str = "mutation { signOut }";

async fn sign_in(app: &TestApp, email: &str) -> String {
    let data = app
        .data(
            None,
            "mutation($email: String!) { signIn(email: $email, password: \"correct horse\") { token } }",
            json!({ "email": email }),
        )
        .await;
    data["signIn"]["token"].as_str().unwrap().to_owned()
}

on_both_backends!(
    sign_out_revokes_its_token_and_closes_its_sockets,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let token = app.sign_up("leaving@example.com").await;
        let other_session = sign_in(&app, "leaving@example.com").await;
        let mut socket = app.ws(&token).await;
        let mut other_socket = app.ws(&other_session).await;

        assert_eq!(app.count_rows("session").await, 2);
        let out = app.data(Some(&token), SIGN_OUT, json!({})).await;
        assert_eq!(out["signOut"], true);
        assert_eq!(
            app.count_rows("session").await,
            1,
            "revoked sessions are deleted"
        );

        let (code, reason) = socket.expect_close().await;
        assert_eq!((code, reason.as_str()), (4403, "the session has ended"));
        let refused = app.gql(Some(&token), "{ me { id } }", json!({})).await;
        assert_eq!(error_code(&refused), "UNAUTHENTICATED");
        let again = app.gql(Some(&token), SIGN_OUT, json!({})).await;
        assert_eq!(error_code(&again), "UNAUTHENTICATED");

        // The user's other session goes on, over HTTP and on its socket.
        let me = app
            .data(Some(&other_session), "{ me { id } }", json!({}))
            .await;
        assert!(me["me"]["id"].is_string());
        other_socket
            .send_json(
                json!({ "id": "1", "type": "subscribe", "payload": { "query": "{ me { id } }" } }),
            )
            .await;
        assert_eq!(other_socket.recv().await["type"], "next");
    }
);

#[tokio::test]
async fn a_revoked_token_cannot_open_a_socket() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.sign_up("gone@example.com").await;
    app.data(Some(&token), SIGN_OUT, json!({})).await;
    let mut ws =
        crate::support::ws_client::connect(&app.ws_url(), crate::support::ws_client::TRANSPORT_WS)
            .await;
    ws.send_json(json!({ "type": "connection_init", "payload": { "token": token } }))
        .await;
    assert_eq!(ws.expect_close().await.0, 4403);
}

#[tokio::test]
async fn a_socket_closes_with_4403_when_its_token_expires() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|config| config.auth_token_ttl_secs = 1)
        .start()
        .await;
    let token = app.sign_up("brief@example.com").await;
    let mut socket = app.ws(&token).await;
    let (code, reason) = socket.expect_close().await;
    assert_eq!((code, reason.as_str()), (4403, "the token has expired"));

    // The next sign-in prunes the expired session.
    assert_eq!(app.count_rows("session").await, 1);
    app.sign_up("next@example.com").await;
    assert_eq!(app.count_rows("session").await, 1);
}
