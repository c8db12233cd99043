//! What clients see of a server-side failure: the public message and a code, never the detail.

use sea_orm::ConnectionTrait;
use serde_json::json;

use crate::support::app::{error_code, Backend, TestApp};

#[tokio::test]
async fn a_database_error_reaches_the_client_as_an_opaque_internal_error() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.sign_up("unlucky@example.com").await;
    app.server
        .state
        .db
        .execute_unprepared("DROP TABLE usage")
        .await
        .unwrap();
    let response = app
        .gql(Some(&token), "{ usage { consumed } }", json!({}))
        .await;
    assert_eq!(error_code(&response), "INTERNAL", "{response}");
    assert_eq!(response["errors"][0]["message"], "internal error");
    let shown = response.to_string();
    assert!(!shown.to_lowercase().contains("no such table"), "{shown}");
}
