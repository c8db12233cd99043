//! The web client (`web-client/`) in a real browser: `tests/browser/e2e.mjs` drives Debian's
//! Chromium through playwright-core against the real app (offline model, fake sandbox; the local
//! backend for previews) and must pass every step. It saves `target/web-client.png` (and
//! `-code.png`, `-failure.png`).
//!
//! `npm ci` runs once in `tests/browser`, only when its node_modules is missing or older than
//! `package-lock.json`. Without `node` or Chromium (`/usr/bin/chromium`, or `$CHROMIUM`) the test
//! is skipped with a message, unless `CI=true`, `CODEKRAFT_REQUIRE_BROWSER=1` or
//! `CODEKRAFT_REQUIRE_NODE=1` (`scripts/test.sh` sets the latter and installs Debian's
//! `chromium`).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use codekraft::agent::provider::{
    ChatRequest, DeltaSink, ModelError, ModelProvider, ModelResponse, OfflineProvider, TokenUsage,
};
use codekraft::sandbox::{FileMap, SandboxProvider};
use tokio::process::Command;
use uuid::Uuid;

use crate::support::app::{Backend, TestApp};
use crate::support::stand_in_next::StandInTemplate;

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn report(what: &str, out: &Output) {
    println!("----- {what} ({}) -----", out.status);
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

/// Whether the browser test can run here; panics when it must (`CODEKRAFT_REQUIRE_BROWSER=1`,
/// or `CI=true`).
async fn browser_available() -> bool {
    let has_node = Command::new("node")
        .arg("--version")
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    let missing = match (has_node, chromium().exists()) {
        (true, true) => return true,
        (false, _) => "node is not on the PATH".to_owned(),
        (true, false) => format!("{} does not exist", chromium().display()),
    };
    let required = |var: &str| std::env::var(var).as_deref() == Ok("1");
    let in_ci = std::env::var("CI").as_deref() == Ok("true");
    if in_ci || required("CODEKRAFT_REQUIRE_BROWSER") || required("CODEKRAFT_REQUIRE_NODE") {
        panic!(
            "the browser test is required (CI, CODEKRAFT_REQUIRE_BROWSER / _NODE=1) but {missing}"
        );
    }
    eprintln!("SKIPPED web client browser test: {missing}");
    false
}

fn node_modules_fresh(dir: &Path) -> bool {
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        modified(dir.join("node_modules/.package-lock.json")),
        modified(dir.join("package-lock.json")),
    ) {
        (Some(installed), Some(locked)) => installed >= locked,
        _ => false,
    }
}

async fn npm_ci(dir: &Path) {
    // The browser tests run at once: one install, the others wait for it (two `npm ci` in one
    // folder break each other's `node_modules`).
    static INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _install = INSTALL.lock().await;
    if node_modules_fresh(dir) {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .output()
        .await
        .expect("run npm ci");
    report("npm ci (tests/browser)", &out);
    assert!(out.status.success(), "npm ci failed in {}", dir.display());
}

/// Runs `e2e.mjs` against `app` (with the scenario's own `args`); returns the screenshot path
/// after asserting success.
async fn run_e2e(app: &TestApp, scenario: &str, screenshot: &str, args: &[&str]) -> PathBuf {
    let dir = browser_dir();
    npm_ci(&dir).await;
    let screenshot = target_dir().join(screenshot);
    let out = Command::new("node")
        .arg("e2e.mjs")
        .arg(app.url(""))
        .args(["--scenario", scenario])
        .arg("--screenshot")
        .arg(&screenshot)
        .arg("--chromium")
        .arg(chromium())
        .args(args)
        .current_dir(&dir)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run node e2e.mjs");
    report("e2e.mjs", &out);
    assert!(
        out.status.success(),
        "the browser end-to-end test failed (see above)"
    );
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
    screenshot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_client_builds_an_app_in_a_browser() {
    if !browser_available().await {
        return;
    }
    let app = TestApp::spawn(Backend::Sqlite).await;
    let screenshot = run_e2e(&app, "main", "web-client.png", &[]).await;
    assert!(screenshot.with_file_name("web-client-code.png").exists());
}

/// A model that never answers its first call (so the run can be cancelled), refuses its second
/// (so the run fails and can be retried), then answers like the offline model.
struct CancelThenFail {
    calls: AtomicUsize,
    offline: OfflineProvider,
}

#[async_trait]
impl ModelProvider for CancelThenFail {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn model(&self) -> &str {
        "cancel-then-fail"
    }

    fn is_offline(&self) -> bool {
        true
    }

    fn estimate_cost_usd(&self, _usage: TokenUsage) -> f64 {
        0.0
    }

    async fn complete(
        &self,
        request: &ChatRequest,
        on_delta: DeltaSink<'_>,
    ) -> Result<ModelResponse, ModelError> {
        match self.calls.fetch_add(1, Ordering::SeqCst) {
            0 => {
                on_delta("Thinking very slowly…");
                tokio::time::sleep(Duration::from_secs(120)).await;
                Err(ModelError::Unavailable(
                    "the test model was not cancelled".into(),
                ))
            }
            1 => Err(ModelError::Rejected {
                status: 400,
                message: "the test model refuses this once".into(),
            }),
            _ => self.offline.complete(request, on_delta).await,
        }
    }
}

/// Cancel on a RUNNING run, Retry on a FAILED one. The browser checks that the retried run is
/// queued again and picked up, not that it succeeds: a FAILED run already has its ASSISTANT
/// ERROR message, and `idx_message_run_role` (one ASSISTANT message per run) makes
/// `succeed_run` fail when the retry tries to store its RESULT (the run then stays RUNNING).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_can_be_cancelled_and_retried_in_a_browser() {
    if !browser_available().await {
        return;
    }
    let model = CancelThenFail {
        calls: AtomicUsize::new(0),
        offline: OfflineProvider::new(),
    };
    let app = TestApp::builder(Backend::Sqlite)
        .models(Arc::new(model))
        .start()
        .await;
    run_e2e(&app, "runs", "web-client-runs.png", &[]).await;
}

/// A preview, in the web client's iframe and opened on its own like a shared link, reads
/// nothing of the web client's storage (the session token) nor of another preview's: each is an
/// origin of its own. The local backend runs with a stand-in for `next dev` (see
/// `support::stand_in_next`); the preview page is the stand-in's, the probing is `e2e.mjs`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_cannot_read_the_web_client_or_each_other_in_a_browser() {
    if !browser_available().await {
        return;
    }
    let template = StandInTemplate::build();
    let app = TestApp::builder(Backend::Sqlite)
        .local_sandboxes(&template.path())
        .start()
        .await;
    let other = app
        .local_sandboxes()
        .connect(Uuid::new_v4(), None, &FileMap::new())
        .await
        .unwrap();
    let other_url = other.preview_url().await.unwrap();
    run_e2e(
        &app,
        "previews",
        "web-client-previews.png",
        &["--other-preview", &other_url],
    )
    .await;
}

/// The API keys page: a key created with its scopes, its secret shown once and copied, used,
/// then revoked; a webhook created (to the server itself), its secret copied, its deliveries
/// listed, then deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_created_copied_and_revoked_in_a_browser() {
    if !browser_available().await {
        return;
    }
    let app = TestApp::builder(Backend::Sqlite)
        .config(|config| config.webhook_allow_private = true)
        .start()
        .await;
    run_e2e(&app, "api-keys", "web-client-api-keys.png", &[]).await;
}
