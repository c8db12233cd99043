//! Previews of local sandboxes on the preview listener, an origin per sandbox: the real app and
//! local backend, with a stand-in for `next dev` (see `support::stand_in_next`). Requests go to
//! 127.0.0.1 with the Host a browser would send (`{id}.localhost:{port}`), since glibc may not
//! resolve `*.localhost`. `web_client.rs` checks the isolation itself in Chromium.

use std::sync::Arc;

use codekraft::sandbox::{FileMap, Sandbox, SandboxProvider};
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

use crate::support::app::{Backend, TestApp};
use crate::support::stand_in_next::StandInTemplate;

async fn start() -> (StandInTemplate, TestApp) {
    let template = StandInTemplate::build();
    let app = TestApp::builder(Backend::Sqlite)
        .local_sandboxes(&template.path())
        .start()
        .await;
    (template, app)
}

async fn new_sandbox(app: &TestApp) -> Arc<dyn Sandbox> {
    app.local_sandboxes()
        .connect(Uuid::new_v4(), None, &FileMap::new())
        .await
        .expect("a local sandbox from the stand-in template")
}

/// A GET of `path` on the preview listener, sent with `host` as its Host header.
async fn get(app: &TestApp, host: &str, path: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://{}{path}", app.preview_addr()))
        .header(reqwest::header::HOST, host)
        .send()
        .await
        .unwrap()
}

fn host_of(app: &TestApp, sandbox: &dyn Sandbox) -> String {
    format!("{}.localhost:{}", sandbox.id(), app.preview_addr().port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sandbox_is_served_on_a_host_of_its_own() {
    let (_template, app) = start().await;
    let (a, b) = (new_sandbox(&app).await, new_sandbox(&app).await);
    let (host_a, host_b) = (host_of(&app, a.as_ref()), host_of(&app, b.as_ref()));
    assert_eq!(
        a.preview_url().await.unwrap(),
        format!("http://{host_a}/preview/{}/", a.id())
    );

    for (sandbox, host) in [(&a, &host_a), (&b, &host_b)] {
        let page = get(&app, host, &format!("/preview/{}/", sandbox.id())).await;
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        let base_path = format!(r#"<h1 id="base-path">/preview/{}</h1>"#, sandbox.id());
        assert!(html.contains(&base_path), "{html}");
    }
    // The Host decides, not the path: A's dev server answers for B's path (outside its base).
    let crossed = get(&app, &host_a, &format!("/preview/{}/", b.id())).await;
    assert_eq!(crossed.status(), 404);
    assert_eq!(
        crossed.text().await.unwrap(),
        format!("outside the base path /preview/{}\n", a.id())
    );
    // A Host without a sandbox, or with one that does not exist.
    let port = app.preview_addr().port();
    let path = format!("/preview/{}/", a.id());
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("{}.localhost:{port}", Uuid::new_v4()),
    ] {
        let refused = get(&app, &host, &path).await;
        assert_eq!(refused.status(), 404, "{host}");
        assert!(
            !refused.text().await.unwrap().contains("base-path"),
            "{host}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_works_on_the_preview_origin() {
    let (_template, app) = start().await;
    let sandbox = new_sandbox(&app).await;
    let host = host_of(&app, sandbox.as_ref());
    let mut request = format!("ws://{host}/preview/{}/_next/hmr", sandbox.id())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", format!("http://{host}").parse().unwrap());
    let stream = tokio::net::TcpStream::connect(app.preview_addr())
        .await
        .unwrap();
    let (mut socket, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("the HMR socket through the preview listener");
    assert_eq!(response.status(), 101);
    let message = socket.next().await.unwrap().unwrap();
    assert_eq!(message.to_text().unwrap(), r#"{"action":"built"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_responses_lose_cookies_service_worker_scope_and_clear_site_data() {
    let (_template, app) = start().await;
    let sandbox = new_sandbox(&app).await;
    let path = format!("/preview/{}/unsafe-headers", sandbox.id());
    const UNSAFE: [&str; 3] = ["set-cookie", "service-worker-allowed", "clear-site-data"];

    // The dev server does send them …
    let local = app
        .local_sandboxes()
        .sandbox(sandbox.id().parse().unwrap())
        .await
        .unwrap();
    let port = local.ensure_dev_server().await.unwrap();
    let direct = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .unwrap();
    for name in UNSAFE {
        assert!(
            direct.headers().contains_key(name),
            "the stand-in sends {name}"
        );
    }

    // … and the browser never sees them.
    let proxied = get(&app, &host_of(&app, sandbox.as_ref()), &path).await;
    assert_eq!(proxied.status(), 200);
    for name in UNSAFE {
        assert!(!proxied.headers().contains_key(name), "{name} went through");
    }
    assert_eq!(proxied.headers()["x-stand-in"], "kept");
    assert_eq!(proxied.text().await.unwrap(), "unsafe headers\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_main_listener_redirects_old_preview_links_to_the_preview_origin() {
    let (_template, app) = start().await;
    let sandbox = new_sandbox(&app).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let old_link = no_redirects
        .get(app.url(&format!("/preview/{}/_next/x?q=1", sandbox.id())))
        .send()
        .await
        .unwrap();
    assert_eq!(old_link.status(), 307);
    assert_eq!(
        old_link.headers()["location"],
        format!(
            "http://{}/preview/{}/_next/x?q=1",
            host_of(&app, sandbox.as_ref()),
            sandbox.id()
        )
        .as_str()
    );
    assert!(!old_link.text().await.unwrap().contains("base-path"));
    let not_a_sandbox = no_redirects
        .get(app.url("/preview/not-a-sandbox/"))
        .send()
        .await
        .unwrap();
    assert_eq!(not_a_sandbox.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_checks_its_preview_on_the_preview_origin() {
    let (_template, app) = start().await;
    let token = app.sign_up("preview-check@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "a counter").await;
    assert_eq!(
        app.wait_for_run(&token, &run_id).await["status"],
        "SUCCEEDED"
    );
    let data = app
        .data(
            Some(&token),
            "query($id: ID!) { project(id: $id) { messages { edges { node { fragment { sandboxUrl } } } } } }",
            json!({ "id": project_id }),
        )
        .await;
    let host = format!("{project_id}.localhost:{}", app.preview_addr().port());
    assert_eq!(
        data["project"]["messages"]["edges"][1]["node"]["fragment"]["sandboxUrl"],
        format!("http://{host}/preview/{project_id}/")
    );
    // The check fetched the page on the preview origin (the dev server's own readiness probe
    // goes to 127.0.0.1 directly).
    let local = app
        .local_sandboxes()
        .sandbox(project_id.parse().unwrap())
        .await
        .unwrap();
    let log_path = app
        .local_sandboxes()
        .workspace_dir(local.sandbox_id())
        .join("dev-server.log");
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(
        log.contains(&format!("GET /preview/{project_id}/ host={host}")),
        "{log}"
    );
}
