//! Our node conformance checks (`tests/conformance/`) against the toy server, plus a negative
//! control: async-graphql-axum's stock services must fail them.

use std::time::Duration;

use crate::support::{
    conformance::{run_node_conformance, NodeConformance},
    toy::{spawn_toy_server, ToyOptions},
};

const SUB: &str = "subscription { countdown(from: 3) }";
const LONG_SUB: &str = "subscription { ticks }";

#[tokio::test]
async fn toy_server_passes_the_node_conformance_checks() {
    let options = ToyOptions {
        token: Some("s3cret".into()),
        init_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let server = spawn_toy_server("127.0.0.1:0".parse().unwrap(), options).await;
    let mut check = NodeConformance::new(&server.http_url(), &server.ws_url(), SUB, LONG_SUB);
    check.token = Some("s3cret".into());
    check.query = "{ hello viewer }".into();
    check.expect_auth = true;
    check.init_timeout = Some(Duration::from_millis(300));
    check.legacy = true;
    check.run().await;
}

#[tokio::test]
async fn run_node_conformance_passes_without_a_token() {
    let server = spawn_toy_server("127.0.0.1:0".parse().unwrap(), ToyOptions::default()).await;
    run_node_conformance(&server.http_url(), &server.ws_url(), None, SUB, LONG_SUB).await;
}

#[tokio::test]
async fn stock_async_graphql_axum_services_fail_the_checks() {
    let server = spawn_toy_server("127.0.0.1:0".parse().unwrap(), ToyOptions::default()).await;
    let stock_http = format!("http://{}/stock/graphql", server.addr);
    let stock_ws = format!("ws://{}/stock/graphql/ws", server.addr);
    let check = NodeConformance::new(&stock_http, &stock_ws, SUB, LONG_SUB);
    if let Some(outcome) = check.outcome().await {
        assert!(
            !outcome.http_ok,
            "the stock HTTP service unexpectedly passed the audit"
        );
        assert!(
            !outcome.ws_ok,
            "the stock WS service unexpectedly passed the checks"
        );
    }
}

/// The real app, with a real token, against the same checks.
#[tokio::test]
async fn the_app_passes_the_node_conformance_checks() {
    use crate::support::app::{Backend, TestApp};
    let app = TestApp::builder(Backend::Sqlite)
        .config(|c| c.ws_init_timeout_ms = 300)
        .start()
        .await;
    let token = app.sign_up("conformance@example.com").await;
    let (_, run_id) = app.create_project(&token, "a finished app").await;
    app.wait_for_run(&token, &run_id).await;
    let run = app
        .data(
            Some(&token),
            "query($id: ID!) { run(id: $id) { projectId } }",
            serde_json::json!({ "id": run_id }),
        )
        .await;
    let project_id = run["run"]["projectId"].as_str().unwrap();
    // Completes after replaying the finished run; the project stream stays open after its history.
    let sub = format!("subscription {{ runEvents(runId: \"{run_id}\") {{ seq kind }} }}");
    let long_sub =
        format!("subscription {{ projectEvents(projectId: \"{project_id}\") {{ seq }} }}");
    let mut check = NodeConformance::new(&app.url("/graphql"), &app.ws_url(), &sub, &long_sub);
    check.token = Some(token);
    check.query = "{ me { id } usage { remaining } }".into();
    check.expect_auth = true;
    check.init_timeout = Some(Duration::from_millis(300));
    check.legacy = true;
    check.run().await;
}
