//! Runs our node conformance checks (`tests/conformance/`: graphql-http's server audit and the
//! graphql-ws protocol checks) against a running server and asserts they pass.
//!
//! `npm ci` runs once per test process, and only when `tests/conformance/node_modules` is missing
//! or older than `package-lock.json`. Without `node` on the PATH the checks are skipped with a
//! message, unless `CODEKRAFT_REQUIRE_NODE=1` (set it in CI).

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use tokio::{process::Command, sync::OnceCell};

/// What to check and how.
#[derive(Clone, Debug)]
pub struct NodeConformance {
    pub http_url: String,
    pub ws_url: String,
    /// Sent as `Authorization: Bearer …` (HTTP) and in `connection_init` (WS).
    pub token: Option<String>,
    /// A query that succeeds for the token's viewer.
    pub query: String,
    /// A subscription that completes by itself.
    pub sub_doc: String,
    /// A subscription that stays open.
    pub long_sub_doc: String,
    /// Check that `connection_init` without / with a bad token closes 4403.
    pub expect_auth: bool,
    /// The server's WS init timeout, to check the 4408 close (keep it short in tests).
    pub init_timeout: Option<Duration>,
    /// Also check the legacy `graphql-ws` subprotocol.
    pub legacy: bool,
}

impl NodeConformance {
    pub fn new(http_url: &str, ws_url: &str, sub_doc: &str, long_sub_doc: &str) -> Self {
        Self {
            http_url: http_url.to_owned(),
            ws_url: ws_url.to_owned(),
            token: None,
            query: "{ __typename }".to_owned(),
            sub_doc: sub_doc.to_owned(),
            long_sub_doc: long_sub_doc.to_owned(),
            expect_auth: false,
            init_timeout: None,
            legacy: false,
        }
    }

    /// Runs `audit.mjs` then `ws.mjs`, printing their output; panics unless both pass.
    pub async fn run(&self) {
        if let Some(outcome) = self.outcome().await {
            assert!(
                outcome.http_ok,
                "GraphQL-over-HTTP audit failed (see above)"
            );
            assert!(
                outcome.ws_ok,
                "GraphQL-over-WebSocket checks failed (see above)"
            );
        }
    }

    /// Runs both scripts and prints their output; `None` when node is unavailable (skipped).
    pub async fn outcome(&self) -> Option<ConformanceOutcome> {
        let dir = prepared_conformance_dir().await?;
        let mut audit_args = vec![self.http_url.clone()];
        let mut ws_args = vec![
            self.ws_url.clone(),
            "--query".into(),
            self.query.clone(),
            "--sub".into(),
            self.sub_doc.clone(),
            "--long-sub".into(),
            self.long_sub_doc.clone(),
        ];
        if let Some(token) = &self.token {
            for args in [&mut audit_args, &mut ws_args] {
                args.extend(["--token".into(), token.clone()]);
            }
        }
        if self.expect_auth {
            ws_args.push("--expect-auth".into());
        }
        if let Some(timeout) = self.init_timeout {
            ws_args.extend(["--init-timeout-ms".into(), timeout.as_millis().to_string()]);
        }
        if self.legacy {
            ws_args.push("--legacy".into());
        }
        let audit = node(&dir, "audit.mjs", &audit_args).await;
        let ws = node(&dir, "ws.mjs", &ws_args).await;
        report("audit.mjs", &audit);
        report("ws.mjs", &ws);
        Some(ConformanceOutcome {
            http_ok: audit.status.success(),
            ws_ok: ws.status.success(),
        })
    }
}

/// Whether each script passed (exit code 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConformanceOutcome {
    pub http_ok: bool,
    pub ws_ok: bool,
}

/// The lead's entry point: audit `http_url`, check `ws_url` (graphql-transport-ws + legacy,
/// auth when a token is given) with a completing and a long-running subscription.
pub async fn run_node_conformance(
    http_url: &str,
    ws_url: &str,
    token: Option<&str>,
    sub_doc: &str,
    long_sub_doc: &str,
) {
    let mut check = NodeConformance::new(http_url, ws_url, sub_doc, long_sub_doc);
    check.token = token.map(str::to_owned);
    check.expect_auth = token.is_some();
    check.legacy = true;
    check.run().await;
}

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

/// `tests/conformance` with its node_modules installed; `None` when node is unavailable and
/// not required.
async fn prepared_conformance_dir() -> Option<PathBuf> {
    static PREPARED: OnceCell<Option<PathBuf>> = OnceCell::const_new();
    PREPARED
        .get_or_init(|| async {
            let has_node = Command::new("node")
                .arg("--version")
                .output()
                .await
                .is_ok_and(|o| o.status.success());
            if !has_node {
                if std::env::var("CODEKRAFT_REQUIRE_NODE").as_deref() == Ok("1") {
                    panic!("node is required (CODEKRAFT_REQUIRE_NODE=1) but not on the PATH");
                }
                eprintln!("SKIPPED node conformance checks: node is not on the PATH");
                return None;
            }
            let dir = conformance_dir();
            if !node_modules_fresh(&dir) {
                let out = Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund"])
                    .current_dir(&dir)
                    .output()
                    .await
                    .expect("run npm ci");
                report("npm ci", &out);
                assert!(out.status.success(), "npm ci failed in {}", dir.display());
            }
            Some(dir)
        })
        .await
        .clone()
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

async fn node(dir: &Path, script: &str, args: &[String]) -> Output {
    Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(dir)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run node {script}: {e}"))
}

fn report(what: &str, out: &Output) {
    println!("----- {what} ({}) -----", out.status);
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}
