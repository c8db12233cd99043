//! Projects and messages through GraphQL: create, follow up, list, rename, delete, errors,
//! isolation between users, and loader batching.

use codekraft::entity::fragment_file;
use codekraft::sandbox::Sandbox;
use sea_orm::{ActiveModelTrait, Set};
use serde_json::json;

use crate::on_both_backends;
use crate::support::app::{error_code, Backend, TestApp};

const PROJECT: &str = "query($id: ID!) { project(id: $id) { id name messages { edges { node { role type content fragment { title sandboxUrl files } run { status inputTokens outputTokens costUsd } } } } } }";

on_both_backends!(
    a_prompt_becomes_a_project_with_a_generated_app,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let token = app.sign_up("maker@example.com").await;
        let (project_id, run_id) = app
            .create_project(&token, "a todo app with dark mode")
            .await;
        assert_eq!(
            app.wait_for_run(&token, &run_id).await["status"],
            "SUCCEEDED"
        );

        let data = app
            .data(Some(&token), PROJECT, json!({ "id": project_id }))
            .await;
        let project = &data["project"];
        assert_eq!(project["name"], "todo-app-dark-mode");
        let messages = project["messages"]["edges"].as_array().unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0]["node"]["role"], "USER");
        assert_eq!(messages[0]["node"]["content"], "a todo app with dark mode");
        assert!(messages[0]["node"]["fragment"].is_null());
        let answer = &messages[1]["node"];
        assert_eq!(answer["role"], "ASSISTANT");
        assert_eq!(answer["type"], "RESULT");
        assert!(
            answer["content"].as_str().unwrap().contains("offline"),
            "{answer}"
        );
        let fragment = &answer["fragment"];
        assert!(fragment["sandboxUrl"]
            .as_str()
            .unwrap()
            .starts_with("http://fake-sandbox/"));
        let page = fragment["files"]["app/page.tsx"].as_str().unwrap();
        assert!(page.to_lowercase().contains("todo"), "{page}");
        assert!(answer["run"]["outputTokens"].as_i64().unwrap() > 0);

        // The file really is in the project's sandbox.
        let sandbox = app.sandboxes.sandbox(project_id.parse().unwrap()).unwrap();
        assert_eq!(
            sandbox.files().get("app/page.tsx").map(String::as_str),
            Some(page)
        );

        let usage = app
            .data(Some(&token), "{ usage { remaining consumed } }", json!({}))
            .await;
        assert_eq!(usage["usage"], json!({ "remaining": 4, "consumed": 1 }));
    }
);

on_both_backends!(
    a_follow_up_builds_on_the_same_sandbox,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let token = app.sign_up("follow@example.com").await;
        let (project_id, run_id) = app
            .create_project(&token, "a landing page for a bakery")
            .await;
        app.wait_for_run(&token, &run_id).await;
        let sent = app
        .data(
            Some(&token),
            "mutation($id: ID!) { sendMessage(projectId: $id, content: \"make it a todo list\") { message { role content } run { id status } } }",
            json!({ "id": project_id }),
        )
        .await;
        assert_eq!(sent["sendMessage"]["message"]["role"], "USER");
        let run_id = sent["sendMessage"]["run"]["id"].as_str().unwrap();
        assert_eq!(
            app.wait_for_run(&token, run_id).await["status"],
            "SUCCEEDED"
        );
        let data = app
            .data(Some(&token), PROJECT, json!({ "id": project_id }))
            .await;
        assert_eq!(
            data["project"]["messages"]["edges"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
        // One sandbox for the project, reconnected rather than created again.
        let project_uuid = project_id.parse().unwrap();
        assert!(app.sandboxes.sandbox(project_uuid).is_some());
        let latest =
            &data["project"]["messages"]["edges"][3]["node"]["fragment"]["files"]["app/page.tsx"];
        assert!(latest.as_str().unwrap().to_lowercase().contains("todo"));
    }
);

on_both_backends!(
    projects_are_paged_newest_first,
    |backend: Backend| async move {
        let app = TestApp::builder(backend)
            .config(|c| c.worker_concurrency = 1)
            .start()
            .await;
        let token = app.sign_up("pager@example.com").await;
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(
                app.create_project(&token, &format!("app number {n}"))
                    .await
                    .0,
            );
        }
        let query = "query($after: String) { projects(first: 2, after: $after) { edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }";
        let first = app.data(Some(&token), query, json!({})).await;
        let edges = first["projects"]["edges"].as_array().unwrap();
        assert_eq!(edges[0]["node"]["id"], ids[2]);
        assert_eq!(edges[1]["node"]["id"], ids[1]);
        assert_eq!(first["projects"]["pageInfo"]["hasNextPage"], true);
        let cursor = first["projects"]["pageInfo"]["endCursor"].clone();
        let second = app
            .data(Some(&token), query, json!({ "after": cursor }))
            .await;
        let edges = second["projects"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), 1);
        assert_eq!(edges[0]["node"]["id"], ids[0]);
        assert_eq!(second["projects"]["pageInfo"]["hasNextPage"], false);
    }
);

on_both_backends!(rename_and_delete, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let token = app.sign_up("owner@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "a weather dashboard").await;
    app.wait_for_run(&token, &run_id).await;
    let renamed = app
        .data(
            Some(&token),
            "mutation($id: ID!) { renameProject(id: $id, name: \"  Sky  \") { name } }",
            json!({ "id": project_id }),
        )
        .await;
    assert_eq!(renamed["renameProject"]["name"], "Sky");
    let empty = app
        .gql(
            Some(&token),
            "mutation($id: ID!) { renameProject(id: $id, name: \"   \") { name } }",
            json!({ "id": project_id }),
        )
        .await;
    assert_eq!(error_code(&empty), "BAD_USER_INPUT");

    let fragment_id = {
        let data = app.data(Some(&token), "query($id: ID!) { project(id: $id) { messages { edges { node { fragment { id } } } } } }", json!({ "id": project_id })).await;
        data["project"]["messages"]["edges"][1]["node"]["fragment"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let deleted = app
        .data(
            Some(&token),
            "mutation($id: ID!) { deleteProject(id: $id) { id } }",
            json!({ "id": project_id }),
        )
        .await;
    assert_eq!(deleted["deleteProject"]["id"], project_id);
    // Everything that hung off it is gone.
    for (query, id) in [
        ("query($id: ID!) { project(id: $id) { id } }", &project_id),
        ("query($id: ID!) { run(id: $id) { id } }", &run_id),
        ("query($id: ID!) { fragment(id: $id) { id } }", &fragment_id),
    ] {
        let response = app.gql(Some(&token), query, json!({ "id": id })).await;
        assert_eq!(error_code(&response), "NOT_FOUND", "{query}");
    }
    let listed = app
        .data(
            Some(&token),
            "{ projects { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(listed["projects"]["edges"], json!([]));
    // Its sandbox was removed with it.
    let sandbox = app.sandboxes.sandbox(project_id.parse().unwrap()).unwrap();
    assert!(sandbox.is_killed());
    // The rows themselves are gone (foreign keys cascade), not just hidden.
    for table in ["project", "message", "fragment", "run", "run_event"] {
        assert_eq!(app.count_rows(table).await, 0, "{table}");
    }
});

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.sign_up("careless@example.com").await;
    let long = "x".repeat(10_001);
    let cases = [
        (
            "mutation { createProject(prompt: \"   \") { run { id } } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "mutation($p: String!) { createProject(prompt: $p) { run { id } } }",
            json!({ "p": long }),
            "BAD_USER_INPUT",
        ),
        (
            "{ project(id: \"not-a-uuid\") { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "{ projects(first: 1000) { edges { cursor } } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "{ projects(after: \"%%%\") { edges { cursor } } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "{ project(id: \"00000000-0000-7000-8000-000000000000\") { id } }",
            json!({}),
            "NOT_FOUND",
        ),
        ("{ nope }", json!({}), "GRAPHQL_VALIDATION_FAILED"),
        (
            "{ projects(first: \"x\") { edges { cursor } } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        ("{ me { ", json!({}), "GRAPHQL_PARSE_FAILED"),
    ];
    for (query, variables, code) in cases {
        let response = app.gql(Some(&token), query, variables).await;
        assert_eq!(error_code(&response), code, "{query}: {response}");
    }
    // Nothing was created or charged by the refused requests.
    let usage = app
        .data(
            Some(&token),
            "{ usage { consumed } projects { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(usage["usage"]["consumed"], 0);
    assert_eq!(usage["projects"]["edges"], json!([]));
}

on_both_backends!(
    another_users_objects_do_not_exist,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let alice = app.sign_up("alice@example.com").await;
        let bob = app.sign_up("bob@example.com").await;
        let (project_id, run_id) = app.create_project(&alice, "alice's secret app").await;
        app.wait_for_run(&alice, &run_id).await;
        let fragment_id = {
            let data = app.data(Some(&alice), "query($id: ID!) { project(id: $id) { messages { edges { node { fragment { id } } } } } }", json!({ "id": project_id })).await;
            data["project"]["messages"]["edges"][1]["node"]["fragment"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let attempts = [
        ("query($id: ID!) { project(id: $id) { id } }", &project_id),
        ("query($id: ID!) { fragment(id: $id) { id } }", &fragment_id),
        ("query($id: ID!) { run(id: $id) { id } }", &run_id),
        ("mutation($id: ID!) { sendMessage(projectId: $id, content: \"hijack\") { run { id } } }", &project_id),
        ("mutation($id: ID!) { renameProject(id: $id, name: \"mine\") { id } }", &project_id),
        ("mutation($id: ID!) { deleteProject(id: $id) { id } }", &project_id),
        ("mutation($id: ID!) { cancelRun(runId: $id) { id } }", &run_id),
        ("mutation($id: ID!) { retryRun(runId: $id) { id } }", &run_id),
        (
            "mutation($id: ID!) { openPreview(projectId: $id) { url } }",
            &project_id,
        ),
        (
            "mutation($id: ID!) { restoreFragment(fragmentId: $id) { id } }",
            &fragment_id,
        ),
    ];
        for (query, id) in attempts {
            let response = app.gql(Some(&bob), query, json!({ "id": id })).await;
            assert_eq!(error_code(&response), "NOT_FOUND", "{query}: {response}");
        }
        // Subscriptions too: the stream is refused with NOT_FOUND.
        for (query, id) in [
            (
                "subscription($id: ID!) { projectEvents(projectId: $id) { seq } }",
                &project_id,
            ),
            (
                "subscription($id: ID!) { runEvents(runId: $id) { seq } }",
                &run_id,
            ),
        ] {
            let mut ws = app.ws(&bob).await;
            ws.send_json(json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": { "id": id } } })).await;
            // The subscription field itself fails: a `next` with the error, then `complete`.
            let reply = ws.recv().await;
            assert_eq!(reply["type"], "next", "{reply}");
            assert_eq!(
                reply["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
                "{reply}"
            );
            assert_eq!(ws.recv().await["type"], "complete");
        }
        // Bob's list is empty; alice's project is unchanged and bob was not charged.
        let bobs = app
            .data(
                Some(&bob),
                "{ projects { edges { cursor } } usage { consumed } }",
                json!({}),
            )
            .await;
        assert_eq!(
            bobs,
            json!({ "projects": { "edges": [] }, "usage": { "consumed": 0 } })
        );
        let still = app
            .data(Some(&alice), PROJECT, json!({ "id": project_id }))
            .await;
        assert_eq!(still["project"]["name"], "alice-s-secret-app");
        assert_eq!(
            still["project"]["messages"]["edges"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
);

on_both_backends!(
    nested_relations_are_batched,
    |backend: Backend| async move {
        let app = TestApp::builder(backend)
            .config(|c| c.worker_concurrency = 0)
            .start()
            .await;
        let token = app.sign_up("batch@example.com").await;
        let query = "query($n: Int!) { projects(first: $n) { edges { node { id messages { edges { node { id fragment { id } run { status } } } } } } } }";
        let mut counts = Vec::new();
        for total in [5, 50] {
            let existing = app
                .data(
                    Some(&token),
                    "{ projects(first: 100) { edges { cursor } } }",
                    json!({}),
                )
                .await;
            let have = existing["projects"]["edges"].as_array().unwrap().len();
            for n in have..total {
                crate::support::app::seed_project(&app, &token, n).await;
            }
            let before = app.db_statements();
            let data = app.data(Some(&token), query, json!({ "n": total })).await;
            let after = app.db_statements();
            assert_eq!(data["projects"]["edges"].as_array().unwrap().len(), total);
            counts.push(after - before);
        }
        assert_eq!(
            counts[0], counts[1],
            "statements for 5 and for 50 projects: {counts:?}"
        );
    }
);

on_both_backends!(
    an_earlier_version_can_be_restored,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let token = app.sign_up("undo@example.com").await;
        let (project_id, run_id) = app.create_project(&token, "a todo list").await;
        app.wait_for_run(&token, &run_id).await;
        let sent = app
        .data(Some(&token), "mutation($id: ID!) { sendMessage(projectId: $id, content: \"a weather page instead\") { run { id } } }", json!({ "id": project_id }))
        .await;
        app.wait_for_run(&token, sent["sendMessage"]["run"]["id"].as_str().unwrap())
            .await;
        let versions = "query($id: ID!) { project(id: $id) { messages { edges { node { role fragment { id title files } } } } } }";
        let data = app
            .data(Some(&token), versions, json!({ "id": project_id }))
            .await;
        let first = data["project"]["messages"]["edges"][1]["node"]["fragment"].clone();
        let first_page = first["files"]["app/page.tsx"].as_str().unwrap().to_owned();
        let sandbox = app.sandboxes.sandbox(project_id.parse().unwrap()).unwrap();
        assert_ne!(sandbox.files()["app/page.tsx"], first_page);
        // The second version also made a page of its own (as a model would).
        let second = &data["project"]["messages"]["edges"][3]["node"]["fragment"];
        let about = "export default function About() {}";
        let about_hash = codekraft::services::file_blob::content_hash(about);
        codekraft::services::file_blob::store_contents(
            &app.server.state.db,
            [(about_hash.as_str(), about)],
        )
        .await
        .unwrap();
        fragment_file::ActiveModel {
            fragment_id: Set(second["id"].as_str().unwrap().parse().unwrap()),
            path: Set("app/about/page.tsx".to_owned()),
            hash: Set(about_hash),
        }
        .insert(&app.server.state.db)
        .await
        .unwrap();
        sandbox
            .write_file("app/about/page.tsx", "export default function About() {}")
            .await
            .unwrap();

        let restored = app
        .data(Some(&token), "mutation($id: ID!) { restoreFragment(fragmentId: $id) { role content fragment { title files } } }", json!({ "id": first["id"] }))
        .await;
        assert_eq!(restored["restoreFragment"]["role"], "ASSISTANT");
        assert_eq!(
            restored["restoreFragment"]["fragment"]["title"],
            first["title"]
        );
        assert_eq!(
            sandbox.files()["app/page.tsx"],
            first_page,
            "the sandbox holds the old version again"
        );
        assert!(
            !sandbox.files().contains_key("app/about/page.tsx"),
            "a file only the later version had is gone"
        );
        // It is the newest version now: a lost sandbox is rebuilt from it, and it cost nothing.
        let data = app
            .data(Some(&token), versions, json!({ "id": project_id }))
            .await;
        assert_eq!(
            data["project"]["messages"]["edges"]
                .as_array()
                .unwrap()
                .len(),
            5
        );
        let usage = app
            .data(Some(&token), "{ usage { consumed } }", json!({}))
            .await;
        assert_eq!(usage["usage"]["consumed"], 2);
        let preview = app
            .data(
                Some(&token),
                "mutation($id: ID!) { openPreview(projectId: $id) { url sandboxId } }",
                json!({ "id": project_id }),
            )
            .await;
        assert!(preview["openPreview"]["url"]
            .as_str()
            .unwrap()
            .starts_with("http://fake-sandbox/"));
    }
);

/// The offline model keeps the first version and adds each follow-up to it: a follow-up never
/// starts from a blank template.
#[tokio::test]
async fn an_offline_follow_up_keeps_what_was_built() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.sign_up("baker@example.com").await;
    let (project_id, run_id) = app
        .create_project(&token, "a landing page for my bakery")
        .await;
    app.wait_for_run(&token, &run_id).await;
    let sent = app
        .data(
            Some(&token),
            "mutation($id: ID!) { sendMessage(projectId: $id, content: \"add opening hours\") { run { id } } }",
            json!({ "id": project_id }),
        )
        .await;
    app.wait_for_run(&token, sent["sendMessage"]["run"]["id"].as_str().unwrap())
        .await;
    let page = &app
        .sandboxes
        .sandbox(project_id.parse().unwrap())
        .unwrap()
        .files()["app/page.tsx"];
    assert!(page.contains("Landing page for my bakery"), "{page}");
    assert!(page.contains("add opening hours"), "{page}");
    let data = app
        .data(Some(&token), PROJECT, json!({ "id": project_id }))
        .await;
    let reply = data["project"]["messages"]["edges"][3]["node"]["content"]
        .as_str()
        .unwrap();
    assert!(reply.starts_with("I updated your app"), "{reply}");
    // The follow-up read the page before writing it.
    let run = app
        .data(
            Some(&token),
            "query($id: ID!) { run(id: $id) { events { kind data { ... on ToolCallStarted { name } } } } }",
            json!({ "id": sent["sendMessage"]["run"]["id"] }),
        )
        .await;
    let tools: Vec<&str> = run["run"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "TOOL_CALL_STARTED")
        .map(|e| e["data"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["readFiles", "createOrUpdateFiles", "terminal"]);
}
