//! `forkProject`: a new project from any version, leaving the source as it was.

use serde_json::json;

use crate::on_both_backends;
use crate::support::app::{error_code, Backend};
use crate::versions::{add_version, file_map, new_project, quiet_app};

const FORK: &str =
    "mutation($id: ID!, $name: String) { forkProject(fragmentId: $id, name: $name) { id name } }";
const VERSIONS: &str = "query($id: ID!) { project(id: $id) { name messages { edges { node { id role type content fragment { id title files } } } } } usage { consumed } }";

on_both_backends!(
    a_fork_starts_from_an_earlier_version,
    |backend: Backend| async move {
        let app = quiet_app(backend).await;
        let token = app.sign_up("fork@example.com").await;
        let project_id = new_project(&app, &token).await;
        let first_files = file_map(&[("app/page.tsx", "first\n"), ("lib/a.ts", "a\n")]);
        let first = add_version(&app, project_id, &first_files).await;
        add_version(&app, project_id, &file_map(&[("app/page.tsx", "second\n")])).await;
        add_version(&app, project_id, &file_map(&[("app/page.tsx", "third\n")])).await;
        let original = app
            .data(Some(&token), VERSIONS, json!({ "id": project_id }))
            .await;

        let forked = app
            .data(Some(&token), FORK, json!({ "id": first, "name": null }))
            .await;
        let fork_id = forked["forkProject"]["id"].as_str().unwrap();
        assert_ne!(fork_id, project_id.to_string());
        assert_eq!(forked["forkProject"]["name"], "versioned-app-fork");

        let fork = app
            .data(Some(&token), VERSIONS, json!({ "id": fork_id }))
            .await;
        let messages = fork["project"]["messages"]["edges"].as_array().unwrap();
        assert_eq!(messages.len(), 1, "{fork}");
        let message = &messages[0]["node"];
        assert_eq!(message["role"], "ASSISTANT");
        assert_eq!(message["type"], "RESULT");
        assert_eq!(
            message["content"],
            "Forked from the version \u{201c}A version\u{201d} of versioned-app."
        );
        assert_eq!(message["fragment"]["files"], json!(first_files));
        let sandbox = app.sandboxes.sandbox(fork_id.parse().unwrap()).unwrap();
        for (path, content) in &first_files {
            assert_eq!(&sandbox.files()[path], content, "{path} in the new sandbox");
        }
        assert_eq!(
            fork["usage"]["consumed"], original["usage"]["consumed"],
            "free"
        );

        let after = app
            .data(Some(&token), VERSIONS, json!({ "id": project_id }))
            .await;
        assert_eq!(after, original, "the source project is untouched");

        let named = app
            .data(
                Some(&token),
                FORK,
                json!({ "id": first, "name": "  mine  " }),
            )
            .await;
        assert_eq!(named["forkProject"]["name"], "mine");
        let unnamed = app
            .gql(Some(&token), FORK, json!({ "id": first, "name": " " }))
            .await;
        assert_eq!(error_code(&unnamed), "BAD_USER_INPUT");

        let mallory = app.sign_up("mallory-fork@example.com").await;
        let theirs = app
            .gql(Some(&mallory), FORK, json!({ "id": first, "name": null }))
            .await;
        assert_eq!(error_code(&theirs), "NOT_FOUND", "{theirs}");
    }
);
