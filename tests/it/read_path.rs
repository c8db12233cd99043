//! The read path: message pages cut in SQL (one statement for a page of projects), and
//! statement counts that stay the same however many projects, messages and runs a page holds.

use codekraft::agent::provider::ModelResponse;
use codekraft::entity::message::{self, MessageType, Role};
use codekraft::entity::run::{self, RunStatus};
use codekraft::events::{record_event, RunEventData};
use codekraft::services::fragment::{create_fragment, NewFragment};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::on_both_backends;
use crate::support::app::{Backend, TestApp};
use crate::versions::{file_map, quiet_app, seeded_project};

/// Adds a finished run to the project (like its first one) and its answer: an ASSISTANT result
/// with its fragment, and the model response it came from.
async fn add_answer(app: &TestApp, project_id: Uuid) {
    let db = &app.server.state.db;
    let first_run = run::Entity::find()
        .filter(run::Column::ProjectId.eq(project_id))
        .one(db)
        .await
        .unwrap()
        .expect("the project's first run");
    let run = run::ActiveModel {
        id: Set(Uuid::now_v7()),
        status: Set(RunStatus::Succeeded),
        ..first_run.into_active_model().reset_all()
    }
    .insert(db)
    .await
    .unwrap();
    let message = message::ActiveModel {
        id: Set(Uuid::now_v7()),
        project_id: Set(project_id),
        run_id: Set(Some(run.id)),
        role: Set(Role::Assistant),
        message_type: Set(MessageType::Result),
        content: Set("an answer".to_owned()),
        created_at: Set(chrono::Utc::now()),
    }
    .insert(db)
    .await
    .unwrap();
    let new = NewFragment {
        message_id: message.id,
        sandbox_url: "http://preview.invalid".to_owned(),
        title: "An answer".to_owned(),
        draft: false,
    };
    create_fragment(db, new, &file_map(&[("app/page.tsx", "page")]))
        .await
        .unwrap();
    let response = ModelResponse {
        text: "an answer".to_owned(),
        ..ModelResponse::default()
    };
    record_event(
        db,
        project_id,
        run.id,
        RunEventData::ModelResponse(response),
    )
    .await
    .unwrap();
}

/// The ids of the edges of a `messages` connection.
fn message_ids(connection: &Value) -> Vec<String> {
    connection["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["node"]["id"].as_str().unwrap().to_owned())
        .collect()
}

on_both_backends!(
    message_pages_follow_the_cursor,
    |backend: Backend| async move {
        let app = quiet_app(backend).await;
        let token = app.sign_up("pages@example.com").await;
        let short = seeded_project(&app, &token, 0).await;
        add_answer(&app, short).await;
        let long = seeded_project(&app, &token, 1).await;
        for _ in 0..4 {
            add_answer(&app, long).await;
        }
        let one = "query($id: ID!, $first: Int, $after: String) { project(id: $id) { messages(first: $first, after: $after) { edges { cursor node { id } } pageInfo { hasNextPage hasPreviousPage } } } }";
        let all = app
            .data(Some(&token), one, json!({ "id": long, "first": 100 }))
            .await;
        let all = message_ids(&all["project"]["messages"]);
        assert_eq!(all.len(), 5);
        let mut sorted = all.clone();
        sorted.sort_by_key(|id| id.parse::<Uuid>().unwrap());
        assert_eq!(all, sorted, "oldest first");

        // Newest project first in the list: `long`, then `short`.
        let list = "query($after: String) { projects { edges { node { messages(first: 2, after: $after) { edges { cursor node { id } } pageInfo { hasNextPage hasPreviousPage } } } } } }";
        let mut after: Option<String> = None;
        let mut seen = Vec::new();
        for (page, more) in [(0, true), (1, true), (2, false)] {
            let vars = json!({ "after": after });
            let listed = app.data(Some(&token), list, vars.clone()).await;
            let single = app
                .data(
                    Some(&token),
                    one,
                    json!({ "id": long, "first": 2, "after": after }),
                )
                .await;
            let connection = &listed["projects"]["edges"][0]["node"]["messages"];
            assert_eq!(connection, &single["project"]["messages"], "page {page}");
            assert_eq!(connection["pageInfo"]["hasNextPage"], more, "page {page}");
            assert_eq!(connection["pageInfo"]["hasPreviousPage"], after.is_some());
            seen.extend(message_ids(connection));
            after = connection["edges"]
                .as_array()
                .unwrap()
                .last()
                .map(|edge| edge["cursor"].as_str().unwrap().to_owned());
            if page == 0 {
                let short_page = &listed["projects"]["edges"][1]["node"]["messages"];
                assert_eq!(message_ids(short_page).len(), 2);
                assert_eq!(short_page["pageInfo"]["hasNextPage"], false);
            }
        }
        assert_eq!(seen, all);

        // Two selections with different pages each get their own.
        let aliased = app
            .data(
                Some(&token),
                "{ projects { edges { node { a: messages(first: 1) { edges { node { id } } } b: messages(first: 3) { edges { node { id } } pageInfo { hasNextPage } } none: messages(first: 0) { edges { node { id } } pageInfo { hasNextPage } } } } } }",
                json!({}),
            )
            .await;
        let node = &aliased["projects"]["edges"][0]["node"];
        assert_eq!(message_ids(&node["a"]), all[..1]);
        assert_eq!(message_ids(&node["b"]), all[..3]);
        assert_eq!(node["b"]["pageInfo"]["hasNextPage"], true);
        assert_eq!(message_ids(&node["none"]), Vec::<String>::new());
        assert_eq!(node["none"]["pageInfo"]["hasNextPage"], true);
    }
);

on_both_backends!(
    read_path_statements_do_not_grow_with_the_page,
    |backend: Backend| async move {
        let app = TestApp::builder(backend)
            .config(|c| {
                c.worker_concurrency = 0;
                c.graphql_max_complexity = usize::MAX;
            })
            .start()
            .await;
        let token = app.sign_up("statements@example.com").await;
        let query = "{ projects(first: 20) { edges { node { id name messages(first: 10) { edges { node { id role content fragment { id title sandboxUrl } run { status events(first: 5) { seq } transcript(first: 5) } } } } } } } }";
        let mut projects: Vec<Uuid> = Vec::new();
        let mut counts = Vec::new();
        // (projects, messages per project): the page grows in each direction.
        for (total, messages) in [(2, 2), (2, 8), (8, 8)] {
            for project_id in &projects {
                for _ in message_count(&app, &token, *project_id).await..messages {
                    add_answer(&app, *project_id).await;
                }
            }
            while projects.len() < total {
                let project_id = seeded_project(&app, &token, projects.len()).await;
                for _ in 1..messages {
                    add_answer(&app, project_id).await;
                }
                projects.push(project_id);
            }
            let before = app.db_statements();
            let data = app.data(Some(&token), query, json!({})).await;
            let after = app.db_statements();
            let edges = data["projects"]["edges"].as_array().unwrap();
            assert_eq!(edges.len(), total);
            for edge in edges {
                let messages_of = edge["node"]["messages"]["edges"].as_array().unwrap();
                assert_eq!(messages_of.len(), messages);
                let answer = &messages_of[messages - 1]["node"];
                assert_eq!(answer["fragment"]["title"], "An answer");
                assert!(!answer["run"]["events"].as_array().unwrap().is_empty());
                let transcript = answer["run"]["transcript"].as_array().unwrap();
                assert_eq!(transcript.len(), 1);
            }
            counts.push(after - before);
        }
        assert!(
            counts.iter().all(|count| *count == counts[0]),
            "statements for 2×2, 2×8 and 8×8 messages: {counts:?}"
        );
    }
);

async fn message_count(app: &TestApp, token: &str, project_id: Uuid) -> usize {
    let data = app
        .data(
            Some(token),
            "query($id: ID!) { project(id: $id) { messages(first: 100) { edges { cursor } } } }",
            json!({ "id": project_id }),
        )
        .await;
    data["project"]["messages"]["edges"]
        .as_array()
        .unwrap()
        .len()
}
