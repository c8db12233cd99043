//! The real app on the local sandbox backend (workspaces and `next dev` on this machine, the
//! template's dependencies from `target/sandbox-cache`, see `sandbox_local.rs`): what the
//! offline model writes type-checks and shows the prompt as text, and deleting a project
//! while its run or a restore is in flight leaves no workspace, dev server or handle behind.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use codekraft::agent::provider::{ModelProvider, OfflineProvider};
use codekraft::app::{self, AppBuilder, Server};
use codekraft::config::{Config, SandboxProviderKind};
use codekraft::sandbox::local::{LocalSandboxConfig, LocalSandboxProvider};
use codekraft::sandbox::{
    CommandSpec, FileMap, OutputSink, Sandbox, SandboxError, SandboxProvider,
};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::app::{error_code, free_loopback_port, test_config, Backend};
use crate::support::client::GqlClient;
use crate::support::fake_llm::{gemini_call_part, gemini_chunk, gemini_text_chunk, FakeLlm, Reply};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A server on the local sandbox backend, listening before its config is made so previews
/// (`PUBLIC_URL`) point at it.
struct LocalApp {
    server: Server,
    client: GqlClient,
    local: Arc<LocalSandboxProvider>,
    _data_dir: TempDir,
}

impl std::ops::Deref for LocalApp {
    type Target = GqlClient;

    fn deref(&self) -> &GqlClient {
        &self.client
    }
}

impl LocalApp {
    /// With the sandbox backend built from the config (its previews proxied), or `gated` in
    /// front of it when the test needs to hold `connect`.
    async fn start(models: Arc<dyn ModelProvider>, gated: bool) -> (Self, Option<Arc<Gated>>) {
        // Next to the dependency cache: workspaces hard-link it, so one filesystem.
        let root = manifest_dir().join("target/sandbox-tests");
        std::fs::create_dir_all(&root).unwrap();
        let data_dir = tempfile::tempdir_in(root).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = test_config(Backend::Sqlite, data_dir.path(), None).await;
        config.preview_bind = Some(free_loopback_port());
        config.sandbox_provider = Some(SandboxProviderKind::Local);
        config.sandbox_template_dir = manifest_dir().join("sandbox-templates/next-js");
        config.sandbox_cache_dir = Some(manifest_dir().join("target/sandbox-cache"));
        config.sandbox_warm_pool = 0;
        // The agent's build check, as in production: the page must type-check.
        config.agent_check_command = Config::defaults().agent_check_command;
        // Only the backend built from the config has its previews proxied to fetch them.
        config.agent_preview_check = !gated;
        let mut builder = AppBuilder::new(config.clone()).models(models);
        let gate = gated.then(|| {
            let origin = config.preview_origin().expect("a preview origin");
            let mut local = LocalSandboxConfig::new(&config.data_dir, origin);
            local.template_dir = config.sandbox_template_dir.clone();
            local.cache_dir = manifest_dir().join("target/sandbox-cache");
            Arc::new(Gated {
                local: Arc::new(LocalSandboxProvider::new(local)),
                hold: Mutex::new(None),
                arrived: tokio::sync::Notify::new(),
                open: tokio::sync::Semaphore::new(0),
            })
        });
        if let Some(gate) = &gate {
            builder = builder.sandboxes(gate.clone());
        }
        let state = builder.build().await.expect("building the app");
        let local = match (&gate, &state.local_sandboxes) {
            (Some(gate), _) => gate.local.clone(),
            (None, Some(local)) => local.clone(),
            (None, None) => panic!("the app is not on the local sandbox backend"),
        };
        let server = app::start(state, listener).await.expect("starting the app");
        let app = LocalApp {
            client: GqlClient::new(server.addr),
            server,
            local,
            _data_dir: data_dir,
        };
        (app, gate)
    }

    async fn wait_for_succeeded_run(&self, token: &str, run_id: &str) {
        let run = self.wait_for_run(token, run_id).await;
        assert_eq!(run["status"], "SUCCEEDED", "{run}");
    }

    /// `tsc --noEmit` of the whole app in the project's workspace (the template's TypeScript).
    async fn type_check(&self, project_id: Uuid) {
        let sandbox = self.local.sandbox(project_id).await.expect("the sandbox");
        let output = sandbox
            .run_command(
                CommandSpec::new(
                    "npx --no-install tsc --noEmit --pretty false",
                    Duration::from_secs(300),
                ),
                &mut OutputSink::discard(),
                CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_eq!(output.exit_code, 0, "tsc: {output:?}");
    }

    /// After the project was deleted: its workspace is gone, no process of it runs (the dev
    /// server's port is closed), and the provider holds no handle for it.
    async fn assert_nothing_left(&self, project_id: Uuid, dev_server_ports: &[u16]) {
        let workspace = self.local.workspace_dir(project_id);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let processes = sandbox_processes(&workspace);
            if !workspace.exists() && processes.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "left behind: workspace exists = {}, processes {processes:?}",
                workspace.exists()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            matches!(
                self.local.sandbox(project_id).await,
                Err(SandboxError::NotFound(_))
            ),
            "the provider still holds a handle"
        );
        for port in dev_server_ports {
            assert!(
                tokio::net::TcpStream::connect(("127.0.0.1", *port))
                    .await
                    .is_err(),
                "the dev server still listens on {port}"
            );
        }
    }
}

/// Processes of a sandbox (commands and dev server alike run with `HOME` in its workspace),
/// with their command lines.
fn sandbox_processes(workspace: &Path) -> Vec<String> {
    let home = format!("HOME={}", workspace.join("home").display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|var| var == home.as_bytes()) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    found
}

/// The ports the sandbox's dev servers listen on (`next dev … --port N`, the same in the
/// command lines of bubblewrap, the shell and node).
fn dev_server_ports(workspace: &Path) -> Vec<u16> {
    let mut ports: Vec<u16> = sandbox_processes(workspace)
        .iter()
        .filter(|cmdline| cmdline.contains("next dev"))
        .filter_map(|cmdline| cmdline.split("--port ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// What React renders for a prompt (stored trimmed): `&`, `<`, `>`, `"` and `'` escaped.
fn html_text(prompt: &str) -> String {
    prompt
        .trim()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
}

/// The preview's HTML, and its `<main>` (the generated page) for messages. The preview's
/// `*.localhost` host is reached on loopback (glibc may not resolve it) with its Host header.
async fn fetch_preview(url: &str) -> (String, String) {
    let parsed = reqwest::Url::parse(url).unwrap();
    let host = format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap());
    let mut loopback = parsed.clone();
    loopback.set_host(Some("127.0.0.1")).unwrap();
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(loopback)
        .header(reqwest::header::HOST, host)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let html = response.text().await.unwrap();
    let main = html
        .split_once("<main")
        .and_then(|(_, rest)| rest.split_once("</main>"))
        .map(|(main, _)| main.to_owned())
        .unwrap_or_else(|| panic!("no <main> in {html}"));
    (html, main)
}

const FRAGMENTS: &str = "query($id: ID!) { project(id: $id) { messages { edges { node { fragment { id sandboxUrl } } } } } }";

/// The project's newest fragment: `(id, sandboxUrl)`.
async fn newest_fragment(app: &LocalApp, token: &str, project_id: &str) -> (String, String) {
    let data = app
        .data(Some(token), FRAGMENTS, json!({ "id": project_id }))
        .await;
    let fragment = data["project"]["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find_map(|edge| edge["node"]["fragment"].as_object().cloned())
        .unwrap_or_else(|| panic!("no fragment in {data}"));
    let field = |name: &str| fragment[name].as_str().unwrap().to_owned();
    (field("id"), field("sandboxUrl"))
}

/// Breaks out of a string literal, a template literal, JSX, a script tag or into another
/// placeholder, in every way the offline model's templates could let it.
const HOSTILE_PROMPT: &str = "Build me a \"quoted\" 'single' `tick` ${process.exit(1)} page \
    __PROMPT__ __TITLE__ __CHANGES__ {curly} }\n\
    </script><b id=\"injected\">bold</b><script>alert(1)</script> \\\" \\u0041 \
    line\u{2028}separator\u{2029}paragraph */ // <!-- end";
/// A follow-up asking for the other template (a todo list, a client component).
const HOSTILE_FOLLOW_UP: &str = "now a todo list: \"}]; alert(2); [{\" `${1}` \
    </li><i id=\"injected-too\">x</i> __CHANGES__\u{2028}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_pages_type_check_and_show_hostile_prompts_as_text() {
    let (app, _) = LocalApp::start(Arc::new(OfflineProvider::new()), false).await;
    let token = app.sign_up("hostile@example.com").await;
    let (project_id, run_id) = app.create_project(&token, HOSTILE_PROMPT).await;
    let project_uuid: Uuid = project_id.parse().unwrap();
    app.wait_for_succeeded_run(&token, &run_id).await;
    app.type_check(project_uuid).await;
    let (_, url) = newest_fragment(&app, &token, &project_id).await;
    let (html, main) = fetch_preview(&url).await;
    assert!(
        main.contains(&html_text(HOSTILE_PROMPT)),
        "the prompt is not shown as text: {main}"
    );
    assert!(!html.contains("<b id=\"injected\""), "{main}");
    assert!(!html.contains("<script>alert(1)"), "{main}");

    let sent = app
        .data(
            Some(&token),
            "mutation($id: ID!, $content: String!) { sendMessage(projectId: $id, content: $content) { run { id } } }",
            json!({ "id": project_id, "content": HOSTILE_FOLLOW_UP }),
        )
        .await;
    let run_id = sent["sendMessage"]["run"]["id"].as_str().unwrap();
    app.wait_for_succeeded_run(&token, run_id).await;
    app.type_check(project_uuid).await;
    let page = app
        .local
        .sandbox(project_uuid)
        .await
        .unwrap()
        .read_file("app/page.tsx")
        .await
        .unwrap();
    assert!(page.starts_with("\"use client\";"), "the todo template");
    let (html, main) = fetch_preview(&url).await;
    for text in [HOSTILE_PROMPT, HOSTILE_FOLLOW_UP] {
        assert!(main.contains(&html_text(text)), "{text:?} not in {main}");
    }
    assert!(!html.contains("<i id=\"injected-too\""), "{main}");
    app.server.shutdown().await.unwrap();
}

/// Where a held `connect` waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Before the real provider connects (a project deleted now gets its sandbox back).
    BeforeConnect,
    /// After it connected, before the caller records the sandbox.
    AfterConnect,
}

/// The real local provider, whose next `connect` can be held at a gate until the test opens
/// it: to delete a project at exactly that point. Not a fake: everything else is the real
/// provider.
struct Gated {
    local: Arc<LocalSandboxProvider>,
    hold: Mutex<Option<Hold>>,
    arrived: tokio::sync::Notify,
    open: tokio::sync::Semaphore,
}

impl Gated {
    fn hold_next_connect(&self, at: Hold) {
        *self.hold.lock().unwrap() = Some(at);
    }

    async fn wait_until_held(&self) {
        tokio::time::timeout(Duration::from_secs(120), self.arrived.notified())
            .await
            .expect("no connect reached the gate");
    }

    fn open(&self) {
        self.open.add_permits(1);
    }

    async fn pass(&self, here: Hold) {
        let held = {
            let mut hold = self.hold.lock().unwrap();
            hold.take_if(|at| *at == here).is_some()
        };
        if held {
            self.arrived.notify_one();
            self.open.acquire().await.unwrap().forget();
        }
    }
}

#[async_trait]
impl SandboxProvider for Gated {
    async fn connect(
        &self,
        project_id: Uuid,
        existing_id: Option<&str>,
        restore: &FileMap,
    ) -> Result<Arc<dyn Sandbox>, SandboxError> {
        self.pass(Hold::BeforeConnect).await;
        let sandbox = self.local.connect(project_id, existing_id, restore).await?;
        self.pass(Hold::AfterConnect).await;
        Ok(sandbox)
    }

    async fn destroy(&self, project_id: Uuid, sandbox_id: &str) -> Result<(), SandboxError> {
        self.local.destroy(project_id, sandbox_id).await
    }

    fn kind(&self) -> &'static str {
        self.local.kind()
    }
}

async fn delete_project(app: &LocalApp, token: &str, project_id: &str) {
    let deleted = app
        .data(
            Some(token),
            "mutation($id: ID!) { deleteProject(id: $id) { id } }",
            json!({ "id": project_id }),
        )
        .await;
    assert_eq!(deleted["deleteProject"]["id"], project_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_project_mid_run_leaves_no_sandbox_behind() {
    // The model writes a page, runs a long command in the sandbox… and stalls in its next
    // answer, the run in the middle of its tool loop.
    let write = gemini_call_part(
        "createOrUpdateFiles",
        json!({ "files": [{ "path": "app/page.tsx", "content": "export default function Page() { return <p>hi</p>; }\n" }] }),
        None,
    );
    let fake = FakeLlm::start([
        Reply::gemini_stream([gemini_chunk(vec![write], Some("STOP"), None)]),
        Reply::gemini_stream([gemini_text_chunk(&["thinking"])])
            .with_delay(Duration::from_secs(600)),
    ])
    .await;
    let mut gemini = codekraft::agent::provider::GeminiConfig::new("test-key");
    gemini.base_url = fake.base_url();
    gemini.timeout = Duration::from_secs(900);
    let models = Arc::new(codekraft::agent::provider::GeminiProvider::new(gemini).unwrap());
    let (app, _) = LocalApp::start(models, false).await;
    let token = app.sign_up("deleter@example.com").await;
    let (project_id, _) = app.create_project(&token, "an app").await;
    let project_uuid: Uuid = project_id.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while fake.request_count() < 2 {
        assert!(Instant::now() < deadline, "the run never got to its stall");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let workspace = app.local.workspace_dir(project_uuid);
    let ports = dev_server_ports(&workspace);
    assert_eq!(ports.len(), 1, "the run's dev server: {ports:?}");
    delete_project(&app, &token, &project_id).await;
    app.assert_nothing_left(project_uuid, &ports).await;
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_project_while_its_run_connects_leaves_no_sandbox_behind() {
    let (app, gate) = LocalApp::start(Arc::new(OfflineProvider::new()), true).await;
    let gate = gate.unwrap();
    // The run's first connect creates the workspace, then is held before it is recorded:
    // the deletion finds no sandbox id and cancels the run.
    gate.hold_next_connect(Hold::AfterConnect);
    let token = app.sign_up("early-deleter@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "an app").await;
    let project_uuid: Uuid = project_id.parse().unwrap();
    gate.wait_until_held().await;
    assert!(app.local.workspace_dir(project_uuid).join("app").exists());
    delete_project(&app, &token, &project_id).await;
    let gone = app
        .gql(
            Some(&token),
            "query($id: ID!) { run(id: $id) { id } }",
            json!({ "id": run_id }),
        )
        .await;
    assert_eq!(error_code(&gone), "NOT_FOUND");
    gate.open();
    app.assert_nothing_left(project_uuid, &[]).await;
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_project_mid_restore_leaves_no_sandbox_behind() {
    let (app, gate) = LocalApp::start(Arc::new(OfflineProvider::new()), true).await;
    let gate = gate.unwrap();
    let token = app.sign_up("restorer@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "a bakery website").await;
    let project_uuid: Uuid = project_id.parse().unwrap();
    app.wait_for_succeeded_run(&token, &run_id).await;
    let (fragment_id, _) = newest_fragment(&app, &token, &project_id).await;
    let workspace = app.local.workspace_dir(project_uuid);
    let ports = dev_server_ports(&workspace);
    assert_eq!(ports.len(), 1, "the run's dev server: {ports:?}");

    // The restore is held just before it connects the sandbox; the project is deleted then,
    // and the restore would bring the workspace and its dev server back.
    gate.hold_next_connect(Hold::BeforeConnect);
    let restore = {
        let client = GqlClient::new(app.server.addr);
        let token = token.clone();
        tokio::spawn(async move {
            client
                .gql(
                    Some(&token),
                    "mutation($id: ID!) { restoreFragment(fragmentId: $id) { id } }",
                    json!({ "id": fragment_id }),
                )
                .await
        })
    };
    gate.wait_until_held().await;
    delete_project(&app, &token, &project_id).await;
    app.assert_nothing_left(project_uuid, &ports).await;
    gate.open();
    let restored: Value = restore.await.unwrap();
    // The restore connected a new workspace, found the project gone and removed it again.
    app.assert_nothing_left(project_uuid, &ports).await;
    assert_eq!(error_code(&restored), "NOT_FOUND", "{restored}");
    app.server.shutdown().await.unwrap();
}
