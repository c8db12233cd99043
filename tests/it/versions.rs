//! Versions: files stored once (content-addressed), the version API (file list, single
//! files, diffs), and the migration of fragments that held their files inline.

use codekraft::entity::message::{self, MessageType, Role};
use codekraft::sandbox::FileMap;
use codekraft::services::fragment::{create_fragment, fragment_files, NewFragment};
use migration::{MigratorTrait, SchemaManager};
use sea_orm::{ActiveModelTrait, ConnectionTrait, Database, Set, Statement};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::on_both_backends;
use crate::support::app::{error_code, Backend, TestApp};

/// An app whose runs stay queued: versions come only from `add_version`.
pub async fn quiet_app(backend: Backend) -> TestApp {
    TestApp::builder(backend)
        .config(|c| c.worker_concurrency = 0)
        .start()
        .await
}

/// A project of the token's user (its first run stays queued).
pub async fn new_project(app: &TestApp, token: &str) -> Uuid {
    let (project_id, _) = app.create_project(token, "a versioned app").await;
    project_id.parse().unwrap()
}

/// Another project of the token's user, past the free plan's credits (see `seed_project`).
pub async fn seeded_project(app: &TestApp, token: &str, n: usize) -> Uuid {
    crate::support::app::seed_project(app, token, n).await;
    let newest = app
        .data(
            Some(token),
            "{ projects(first: 1) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    newest["projects"]["edges"][0]["node"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Stores a version of the project as a run would: an ASSISTANT result and its fragment.
pub async fn add_version(app: &TestApp, project_id: Uuid, files: &FileMap) -> Uuid {
    let db = &app.server.state.db;
    let message = message::ActiveModel {
        id: Set(Uuid::now_v7()),
        project_id: Set(project_id),
        run_id: Set(None),
        role: Set(Role::Assistant),
        message_type: Set(MessageType::Result),
        content: Set("a version".to_owned()),
        created_at: Set(chrono::Utc::now()),
    }
    .insert(db)
    .await
    .unwrap();
    let new = NewFragment {
        message_id: message.id,
        sandbox_url: "http://preview.invalid".to_owned(),
        title: "A version".to_owned(),
        draft: false,
    };
    create_fragment(db, new, files).await.unwrap().id
}

pub fn file_map(entries: &[(&str, &str)]) -> FileMap {
    entries
        .iter()
        .map(|(path, content)| (path.to_string(), content.to_string()))
        .collect()
}

/// Bytes the store holds: file contents plus the manifests naming them.
async fn stored_bytes(app: &TestApp) -> i64 {
    let db = &app.server.state.db;
    let mut total = 0;
    for sql in [
        "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS n FROM file_blob",
        // A manifest row: the fragment id (16 bytes), the path and the hash.
        "SELECT CAST(COALESCE(SUM(16 + LENGTH(path) + LENGTH(hash)), 0) AS BIGINT) AS n FROM fragment_file",
    ] {
        let row = db
            .query_one(Statement::from_string(db.get_database_backend(), sql))
            .await
            .unwrap()
            .unwrap();
        total += row.try_get::<i64>("", "n").unwrap();
    }
    total
}

on_both_backends!(
    one_file_follow_ups_store_only_what_changed,
    |backend: Backend| async move {
        let app = quiet_app(backend).await;
        let token = app.sign_up("growth@example.com").await;
        let project_id = new_project(&app, &token).await;
        // ~600 kB: 60 files of 10 kB.
        let mut files: FileMap = (0..60)
            .map(|n| {
                (
                    format!("app/part{n}.tsx"),
                    format!("// part {n}\n{}", "x".repeat(10_000)),
                )
            })
            .collect();
        add_version(&app, project_id, &files).await;
        let first = stored_bytes(&app).await;
        assert!(
            first > 600_000,
            "the first version stores the app: {first} bytes"
        );
        let mut previous = first;
        for follow_up in 0..10 {
            files.insert(
                "app/page.tsx".to_owned(),
                format!("export default () => <p>follow-up {follow_up}</p>;\n"),
            );
            add_version(&app, project_id, &files).await;
            let now = stored_bytes(&app).await;
            let growth = now - previous;
            assert!(
                growth < 10_000,
                "follow-up {follow_up} grew the store by {growth} bytes"
            );
            previous = now;
        }
    }
);

const VERSION_FILES: &str = "query($id: ID!, $path: String!) { project(id: $id) { messages { edges { node { fragment { id files fileList { path size hash } file(path: $path) missing: file(path: \"no/such/file.ts\") } } } } } }";

on_both_backends!(
    a_version_lists_its_files_and_gives_one,
    |backend: Backend| async move {
        let app = quiet_app(backend).await;
        let token = app.sign_up("list@example.com").await;
        let project_id = new_project(&app, &token).await;
        let files = file_map(&[
            ("app/page.tsx", "export default function Page() {}\n"),
            ("lib/é.ts", "export const é = 1;\n"),
        ]);
        add_version(&app, project_id, &files).await;
        let data = app
            .data(
                Some(&token),
                VERSION_FILES,
                json!({ "id": project_id, "path": "lib/é.ts" }),
            )
            .await;
        let fragment = &data["project"]["messages"]["edges"][1]["node"]["fragment"];
        assert_eq!(fragment["files"], json!(files));
        assert_eq!(
            fragment["fileList"],
            json!([
                {
                    "path": "app/page.tsx",
                    "size": 34,
                    "hash": codekraft::services::file_blob::content_hash(&files["app/page.tsx"]),
                },
                {
                    "path": "lib/é.ts",
                    "size": "export const é = 1;\n".len(),
                    "hash": codekraft::services::file_blob::content_hash(&files["lib/é.ts"]),
                },
            ])
        );
        assert_eq!(fragment["file"], files["lib/é.ts"].as_str());
        assert_eq!(fragment["missing"], Value::Null);

        // A path is at most 4 KiB.
        for (length, refused) in [(4096, false), (4097, true)] {
            let response = app
                .gql(
                    Some(&token),
                    VERSION_FILES,
                    json!({ "id": project_id, "path": "a".repeat(length) }),
                )
                .await;
            if refused {
                assert_eq!(error_code(&response), "BAD_USER_INPUT", "{response}");
            } else {
                assert!(response.get("errors").is_none(), "{response}");
            }
        }
    }
);

const DIFF: &str = "query($id: ID!, $against: ID!) { project(id: $id) { messages { edges { node { fragment { id diff(against: $against) { path status patch } } } } } } }";

on_both_backends!(
    a_diff_tells_added_removed_and_changed_files,
    |backend: Backend| async move {
        let app = quiet_app(backend).await;
        let token = app.sign_up("diff@example.com").await;
        let project_id = new_project(&app, &token).await;
        let first = add_version(
            &app,
            project_id,
            &file_map(&[
                ("app/page.tsx", "one\ntwo\n"),
                ("app/old.tsx", "old\n"),
                ("same.ts", "same\n"),
            ]),
        )
        .await;
        add_version(
            &app,
            project_id,
            &file_map(&[
                ("app/page.tsx", "one\nthree\n"),
                ("app/new.tsx", "new\n"),
                ("same.ts", "same\n"),
            ]),
        )
        .await;
        let data = app
            .data(
                Some(&token),
                DIFF,
                json!({ "id": project_id, "against": first }),
            )
            .await;
        let diff = &data["project"]["messages"]["edges"][2]["node"]["fragment"]["diff"];
        assert_eq!(
            diff,
            &json!([
                { "path": "app/new.tsx", "status": "ADDED", "patch": "--- /dev/null\n+++ b/app/new.tsx\n@@ -0,0 +1 @@\n+new\n" },
                { "path": "app/old.tsx", "status": "REMOVED", "patch": "--- a/app/old.tsx\n+++ /dev/null\n@@ -1 +0,0 @@\n-old\n" },
                { "path": "app/page.tsx", "status": "CHANGED", "patch": "--- a/app/page.tsx\n+++ b/app/page.tsx\n@@ -1,2 +1,2 @@\n one\n-two\n+three\n" },
            ])
        );

        // Against a version of someone else: as if it did not exist.
        let mallory = app.sign_up("mallory@example.com").await;
        let theirs = new_project(&app, &mallory).await;
        let their_version = add_version(&app, theirs, &file_map(&[("a", "b")])).await;
        let response = app
            .gql(
                Some(&token),
                DIFF,
                json!({ "id": project_id, "against": their_version }),
            )
            .await;
        assert_eq!(error_code(&response), "NOT_FOUND", "{response}");
    }
);

on_both_backends!(
    file_fields_of_many_versions_are_batched,
    |backend: Backend| async move {
        let app = quiet_app(backend).await;
        let token = app.sign_up("batched-files@example.com").await;
        let query = "query($n: Int!, $against: ID!) { projects(first: $n) { edges { node { messages(first: 3) { edges { node { fragment { fileList { path } file(path: \"app/page.tsx\") files diff(against: $against) { path status } } } } } } } } }";
        let mut counts = Vec::new();
        let mut projects = 0;
        let mut against = None;
        for total in [2, 8] {
            while projects < total {
                let project_id = seeded_project(&app, &token, projects).await;
                let page = format!("page {projects}");
                let first =
                    add_version(&app, project_id, &file_map(&[("app/page.tsx", &page)])).await;
                against.get_or_insert(first);
                add_version(
                    &app,
                    project_id,
                    &file_map(&[("app/page.tsx", &page), ("b", "b")]),
                )
                .await;
                projects += 1;
            }
            let variables = json!({ "n": total, "against": against });
            let before = app.db_statements();
            let data = app.data(Some(&token), query, variables).await;
            let after = app.db_statements();
            let edges = data["projects"]["edges"].as_array().unwrap();
            assert_eq!(edges.len(), total);
            assert_eq!(
                edges[0]["node"]["messages"]["edges"][2]["node"]["fragment"]["file"],
                format!("page {}", total - 1)
            );
            assert_eq!(
                edges[0]["node"]["messages"]["edges"][2]["node"]["fragment"]["diff"],
                json!([
                    { "path": "app/page.tsx", "status": "CHANGED" },
                    { "path": "b", "status": "ADDED" },
                ])
            );
            counts.push(after - before);
        }
        assert_eq!(
            counts[0], counts[1],
            "statements for 2 and for 8 projects: {counts:?}"
        );
    }
);

/// The migration to the content-addressed store, by name (later migrations may follow it).
const STORE_MIGRATION: &str = "m20261128_103000_content_addressed_files";

on_both_backends!(
    the_migration_keeps_every_file_of_existing_fragments,
    |backend: Backend| async move {
        let data_dir = tempfile::tempdir().unwrap();
        let url = match backend {
            Backend::Sqlite => format!(
                "sqlite://{}?mode=rwc",
                data_dir.path().join("old.db").display()
            ),
            Backend::Postgres => crate::support::postgres::fresh_database_url().await,
        };
        let db = Database::connect(url).await.unwrap();
        let before_store = migration::Migrator::migrations()
            .iter()
            .position(|m| m.name() == STORE_MIGRATION)
            .expect("the store migration is listed");
        migration::Migrator::up(&db, Some(before_store as u32))
            .await
            .unwrap();

        // Fragments the old way: every file inline, in JSON. More than one batch of them,
        // sharing contents, and one whose JSON is not a file map.
        let backend = db.get_database_backend();
        let user = Uuid::now_v7();
        let project = Uuid::now_v7();
        let now = chrono::Utc::now();
        let exec = |sql: &str, values: Vec<sea_orm::Value>| {
            db.execute(Statement::from_sql_and_values(backend, sql, values))
        };
        exec(
            "INSERT INTO \"user\" (id, auth_subject, plan, created_at) VALUES ($1, $2, 'FREE', $3)",
            vec![user.into(), "email:old@example.com".into(), now.into()],
        )
        .await
        .unwrap();
        exec(
            "INSERT INTO project (id, owner_id, name, created_at, updated_at) VALUES ($1, $2, 'old', $3, $3)",
            vec![project.into(), user.into(), now.into()],
        )
        .await
        .unwrap();
        let mut expected = Vec::new();
        for n in 0..45 {
            let message = Uuid::now_v7();
            let fragment = Uuid::now_v7();
            let files: FileMap = if n == 44 {
                FileMap::new()
            } else {
                file_map(&[
                    ("app/page.tsx", &format!("version {n}")),
                    ("package.json", "{\"name\":\"old\"}"),
                    ("lib/ü.ts", "export const ü = \"\\u00fc\";\n"),
                ])
            };
            let json_files = if n == 44 {
                json!(["not", "a", "map"])
            } else {
                json!(files)
            };
            exec(
                "INSERT INTO message (id, project_id, role, message_type, content, created_at) VALUES ($1, $2, 'ASSISTANT', 'RESULT', 'done', $3)",
                vec![message.into(), project.into(), now.into()],
            )
            .await
            .unwrap();
            exec(
                "INSERT INTO fragment (id, message_id, sandbox_url, title, files, created_at) VALUES ($1, $2, 'http://x', 'old', $3, $4)",
                vec![fragment.into(), message.into(), json_files.into(), now.into()],
            )
            .await
            .unwrap();
            expected.push((fragment, files));
        }

        migration::Migrator::up(&db, None).await.unwrap();
        for (fragment, files) in &expected {
            assert_eq!(&fragment_files(&db, *fragment).await.unwrap(), files);
        }
        let manager = SchemaManager::new(&db);
        assert!(
            !manager.has_column("fragment", "files").await.unwrap(),
            "the inline files are gone"
        );
        // The shared contents are stored once: 44 page versions, package.json, lib/ü.ts.
        let row = db
            .query_one(Statement::from_string(
                backend,
                "SELECT COUNT(*) AS n FROM file_blob",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.try_get::<i64>("", "n").unwrap(), 46);
    }
);

on_both_backends!(
    deleting_a_project_deletes_the_contents_only_it_had,
    |backend: Backend| async move {
        let app = quiet_app(backend).await;
        let token = app.sign_up("cleanup@example.com").await;
        let doomed = new_project(&app, &token).await;
        let kept = new_project(&app, &token).await;
        add_version(
            &app,
            doomed,
            &file_map(&[("a.ts", "only here"), ("s.ts", "shared")]),
        )
        .await;
        add_version(&app, doomed, &file_map(&[("a.ts", "only here too")])).await;
        let kept_version = add_version(&app, kept, &file_map(&[("s.ts", "shared")])).await;
        assert_eq!(app.count_rows("file_blob").await, 3);

        app.data(
            Some(&token),
            "mutation($id: ID!) { deleteProject(id: $id) { id } }",
            json!({ "id": doomed }),
        )
        .await;
        assert_eq!(
            app.count_rows("file_blob").await,
            1,
            "only the shared content stays"
        );
        assert_eq!(
            fragment_files(&app.server.state.db, kept_version)
                .await
                .unwrap(),
            file_map(&[("s.ts", "shared")])
        );
    }
);
