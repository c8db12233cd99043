//! Credits are taken atomically: concurrent generations never exceed the allowance.

use futures_util::future::join_all;
use serde_json::json;

use crate::on_both_backends;
use crate::support::app::{error_code, Backend, TestApp};

on_both_backends!(
    twenty_concurrent_prompts_with_five_credits,
    |backend: Backend| async move {
        let app = TestApp::builder(backend)
            .config(|c| c.worker_concurrency = 0)
            .start()
            .await;
        let token = app.sign_up("eager@example.com").await;
        let requests = (0..20).map(|n| {
            let app = &app;
            let token = token.clone();
            async move {
                app.gql(
                    Some(&token),
                    "mutation($p: String!) { createProject(prompt: $p) { project { id } } }",
                    json!({ "p": format!("app {n}") }),
                )
                .await
            }
        });
        let responses = join_all(requests).await;
        let succeeded = responses
            .iter()
            .filter(|r| r.get("errors").is_none())
            .count();
        let exhausted: Vec<_> = responses
            .iter()
            .filter(|r| r.get("errors").is_some())
            .collect();
        assert_eq!(succeeded, 5, "{responses:?}");
        assert_eq!(exhausted.len(), 15);
        for response in exhausted {
            assert_eq!(error_code(response), "CREDITS_EXHAUSTED", "{response}");
            assert!(response["errors"][0]["extensions"]["resetAt"].is_string());
        }
        let data = app
            .data(
                Some(&token),
                "{ usage { remaining consumed } projects(first: 50) { edges { cursor } } }",
                json!({}),
            )
            .await;
        assert_eq!(data["usage"], json!({ "remaining": 0, "consumed": 5 }));
        assert_eq!(data["projects"]["edges"].as_array().unwrap().len(), 5);
    }
);

#[tokio::test]
async fn a_follow_up_without_credits_is_refused_and_stores_nothing() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.sign_up("spender@example.com").await;
    let mut last = None;
    for n in 0..5 {
        let (project, run) = app.create_project(&token, &format!("app {n}")).await;
        app.wait_for_run(&token, &run).await;
        last = Some(project);
    }
    let project = last.unwrap();
    let response = app
        .gql(
            Some(&token),
            "mutation($id: ID!) { sendMessage(projectId: $id, content: \"one more\") { run { id } } }",
            json!({ "id": project }),
        )
        .await;
    assert_eq!(error_code(&response), "CREDITS_EXHAUSTED");
    let data = app
        .data(
            Some(&token),
            "query($id: ID!) { project(id: $id) { messages { edges { cursor } } } }",
            json!({ "id": project }),
        )
        .await;
    assert_eq!(
        data["project"]["messages"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}
