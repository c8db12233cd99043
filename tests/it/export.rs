//! `GET /projects/{id}/export.zip`: a version's files as a zip, for their owner only.

use std::io::{Cursor, Read};

use codekraft::sandbox::FileMap;
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::app::{Backend, TestApp};
use crate::versions::{add_version, file_map, new_project, quiet_app};

async fn export(app: &TestApp, token: Option<&str>, path: &str) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("GET export.zip")
}

/// The archive's files, by path, and the folder they are in.
async fn unzip(response: reqwest::Response) -> (String, FileMap) {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/zip");
    let bytes = response.bytes().await.unwrap();
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut folder = None;
    let mut files = FileMap::new();
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).unwrap();
        let name = entry.name().unwrap().into_owned();
        let (top, path) = name.split_once('/').unwrap();
        let (top, path) = (top.to_owned(), path.to_owned());
        assert_eq!(folder.get_or_insert_with(|| top.clone()), &top);
        let mut content = String::new();
        entry.read_to_string(&mut content).unwrap();
        files.insert(path, content);
    }
    (folder.unwrap(), files)
}

on_both_backends!(
    an_export_holds_the_version_s_files,
    |backend: Backend| async move {
        let app = quiet_app(backend).await;
        let token = app.sign_up("export@example.com").await;
        let project_id = new_project(&app, &token).await;
        let first_files = file_map(&[("app/page.tsx", "first\n"), ("package.json", "{}")]);
        let first = add_version(&app, project_id, &first_files).await;
        // Big enough to take many chunks of the stream.
        let big: String = (0..40_000).map(|n| format!("line {n}\n")).collect();
        let latest_files = file_map(&[("app/page.tsx", "latest\n"), ("data/big.txt", &big)]);
        add_version(&app, project_id, &latest_files).await;

        let path = format!("/projects/{project_id}/export.zip");
        let response = export(&app, Some(&token), &path).await;
        assert_eq!(
            response.headers()["content-disposition"],
            "attachment; filename=\"versioned-app.zip\""
        );
        let (folder, mut files) = unzip(response).await;
        assert_eq!(folder, "versioned-app");
        let readme = files.remove("README-codekraft.md").expect("a README");
        assert!(readme.contains("npm install") && readme.contains("npm run dev"));
        assert_eq!(files, latest_files);

        let (_, mut files) =
            unzip(export(&app, Some(&token), &format!("{path}?fragment={first}")).await).await;
        files.remove("README-codekraft.md");
        assert_eq!(files, first_files);
    }
);

on_both_backends!(
    only_the_owner_exports_and_only_a_version,
    |backend: Backend| async move {
        let app = quiet_app(backend).await;
        let alice = app.sign_up("alice-export@example.com").await;
        let project_id = new_project(&app, &alice).await;
        let path = format!("/projects/{project_id}/export.zip");

        let none_yet = export(&app, Some(&alice), &path).await;
        assert_eq!(none_yet.status(), 404);
        let body: Value = none_yet.json().await.unwrap();
        assert_eq!(
            body,
            json!({ "error": { "code": "NOT_FOUND", "message": "version not found" } })
        );

        let version = add_version(&app, project_id, &file_map(&[("a.ts", "secret")])).await;
        let mallory = app.sign_up("mallory-export@example.com").await;
        let theirs = export(&app, Some(&mallory), &path).await;
        assert_eq!(theirs.status(), 404);
        let body: Value = theirs.json().await.unwrap();
        assert_eq!(body["error"]["message"], "project not found");
        // Nor through a project of one's own.
        let own = new_project(&app, &mallory).await;
        let through_own = export(
            &app,
            Some(&mallory),
            &format!("/projects/{own}/export.zip?fragment={version}"),
        )
        .await;
        assert_eq!(through_own.status(), 404);

        assert_eq!(export(&app, None, &path).await.status(), 401);
        assert_eq!(export(&app, Some("not-a-token"), &path).await.status(), 401);
    }
);
