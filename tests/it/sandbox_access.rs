//! Failing closed: without isolated sandboxes (local sandboxes with no working jail) the server
//! serves its first account only, says so in `serverInfo`, and refuses everyone else's
//! generations, previews and restores with `SANDBOX_UNAVAILABLE`.

use codekraft::sandbox::local::{LocalSandboxConfig, LocalSandboxProvider, PreviewOrigin};
use codekraft::sandbox::{SandboxIsolation, SandboxProvider};
use serde_json::json;

use crate::on_both_backends;
use crate::support::app::{error_code, Backend, TestApp};

const SERVER_INFO: &str = "{ serverInfo { sandboxIsolation sandboxIsolationProblem } }";

#[test]
fn local_sandboxes_without_a_jail_serve_one_account() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LocalSandboxConfig::new(dir.path(), PreviewOrigin::localhost(9));
    config.use_jail = false;
    let provider = LocalSandboxProvider::new(config);
    assert!(!provider.is_jailed());
    assert!(matches!(
        provider.isolation(),
        SandboxIsolation::SingleAccount { reason } if reason.contains("turned off")
    ));
}

on_both_backends!(
    without_isolation_only_the_first_account_may_use_sandboxes,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let info = app.data(None, SERVER_INFO, json!({})).await;
        assert_eq!(info["serverInfo"]["sandboxIsolation"], "ISOLATED");
        assert!(info["serverInfo"]["sandboxIsolationProblem"].is_null());

        let owner = app.sign_up("owner@example.com").await;
        let (project_id, run_id) = app.create_project(&owner, "a todo app").await;
        assert_eq!(
            app.wait_for_run(&owner, &run_id).await["status"],
            "SUCCEEDED"
        );

        app.sandboxes
            .set_isolation(SandboxIsolation::SingleAccount {
                reason: "bubblewrap is missing".into(),
            });
        let info = app.data(None, SERVER_INFO, json!({})).await;
        assert_eq!(info["serverInfo"]["sandboxIsolation"], "SINGLE_ACCOUNT");
        assert_eq!(
            info["serverInfo"]["sandboxIsolationProblem"],
            "bubblewrap is missing"
        );

        let other = app.sign_up("other@example.com").await;
        let refused = app
            .gql(
                Some(&other),
                "mutation { createProject(prompt: \"a blog\") { project { id } } }",
                json!({}),
            )
            .await;
        assert_eq!(error_code(&refused), "SANDBOX_UNAVAILABLE", "{refused}");
        let message = refused["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("first account"), "{message}");
        assert_eq!(app.count_rows("project").await, 1, "nothing was stored");

        // The first account keeps working: follow-ups and previews.
        let follow_up = app
            .data(
                Some(&owner),
                "mutation($id: ID!) { sendMessage(projectId: $id, content: \"add a footer\") { run { id } } }",
                json!({ "id": project_id }),
            )
            .await;
        let run_id = follow_up["sendMessage"]["run"]["id"].as_str().unwrap();
        assert_eq!(
            app.wait_for_run(&owner, run_id).await["status"],
            "SUCCEEDED"
        );
        let preview = app
            .data(
                Some(&owner),
                "mutation($id: ID!) { openPreview(projectId: $id) { url } }",
                json!({ "id": project_id }),
            )
            .await;
        assert!(preview["openPreview"]["url"].is_string(), "{preview}");
    }
);
