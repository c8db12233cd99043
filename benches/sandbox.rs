//! Sandbox figures (a `harness = false` bench; prints its measurements).
//!
//!     cargo bench --profile dev --bench sandbox             # warm + cold + fake
//!     cargo bench --profile dev --bench sandbox -- --warm-only
//!
//! - warm: `connect` (new project, template deps cached in `target/sandbox-cache`) to the preview
//!   URL answering 200 through the preview proxy; target < 5 s. Also a restart: an existing
//!   workspace, dev server stopped, to 200.
//! - cold: the one-time `npm ci` of the template into an empty cache dir (network: npm registry).
//! - fake: operations per second of `FakeSandboxProvider` (for agent benchmarks).
//!
//! The dev profile is enough: the time is spent in node, not in this crate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codekraft::sandbox::fake::FakeSandboxProvider;
use codekraft::sandbox::local::{LocalSandboxConfig, LocalSandboxProvider};
use codekraft::sandbox::{CommandSpec, FileMap, SandboxProvider};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WARM_RUNS: usize = 3;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn config(data_dir: PathBuf, cache_dir: PathBuf, base: &str) -> LocalSandboxConfig {
    let mut config = LocalSandboxConfig::new(data_dir, base);
    config.template_dir = manifest_dir().join("sandbox-templates/next-js");
    config.cache_dir = cache_dir;
    config
}

async fn wait_for_200(client: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(response) = client.get(url).send().await {
            if response.status() == 200 {
                let _ = response.bytes().await;
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} never answered 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

async fn warm(root: &std::path::Path) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = config(
        root.join("warm-data"),
        manifest_dir().join("target/sandbox-cache"),
        &base,
    );
    let provider = Arc::new(LocalSandboxProvider::new(config));
    let warm_up = Instant::now();
    provider.warm_up().await.expect("template dependencies");
    println!(
        "sandbox/warm: dependency cache ready in {:.2?} (bwrap: {})",
        warm_up.elapsed(),
        provider.is_jailed()
    );
    let router = codekraft::http::preview::router(provider.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let client = reqwest::Client::new();

    let mut totals = Vec::new();
    let mut projects = Vec::new();
    for run in 1..=WARM_RUNS {
        let project = Uuid::new_v4();
        let started = Instant::now();
        let sandbox = provider
            .connect(project, None, &FileMap::new())
            .await
            .unwrap();
        let connected = started.elapsed();
        let url = sandbox.preview_url().await.unwrap();
        let preview = started.elapsed();
        wait_for_200(&client, &url).await;
        let total = started.elapsed();
        println!(
            "sandbox/warm run {run}: connect {connected:.2?}, preview_url {preview:.2?}, \
             first 200 {total:.2?}"
        );
        let log_path = provider
            .sandbox(project)
            .await
            .unwrap()
            .dev_server_log_path();
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        for line in log
            .lines()
            .filter(|l| l.contains("Ready in") || l.contains(" in "))
        {
            println!("    next: {}", line.trim());
        }
        totals.push(total);
        projects.push(project);
        // One dev server at a time, like a single user.
        provider.shutdown().await;
    }
    let median_total = median(totals);
    println!(
        "sandbox/warm: connect -> preview 200, median of {WARM_RUNS}: {median_total:.2?} \
         (target < 5s: {})",
        if median_total < Duration::from_secs(5) {
            "met"
        } else {
            "MISSED"
        }
    );

    // Restart: the workspace exists, the dev server was stopped (idle or server restart).
    let mut restarts = Vec::new();
    for project in &projects {
        let started = Instant::now();
        let sandbox = provider
            .connect(*project, Some(&project.to_string()), &FileMap::new())
            .await
            .unwrap();
        let url = sandbox.preview_url().await.unwrap();
        wait_for_200(&client, &url).await;
        restarts.push(started.elapsed());
        provider.shutdown().await;
    }
    println!(
        "sandbox/warm: reconnect + dev server restart -> 200, median: {:.2?}",
        median(restarts)
    );
}

async fn cold(root: &std::path::Path) {
    let cache = root.join("cold-cache");
    let provider = LocalSandboxProvider::new(config(
        root.join("cold-data"),
        cache.clone(),
        "http://127.0.0.1:9",
    ));
    let started = Instant::now();
    match provider.warm_up().await {
        Ok(_) => println!(
            "sandbox/cold: first install of the template dependencies (npm ci, empty npm cache): {:.2?}",
            started.elapsed()
        ),
        Err(err) => println!("sandbox/cold: install failed: {err}"),
    }
    let started = Instant::now();
    provider
        .connect(Uuid::new_v4(), None, &FileMap::new())
        .await
        .unwrap();
    println!(
        "sandbox/cold: first workspace after it: {:.2?}",
        started.elapsed()
    );
}

async fn fake() {
    let provider = FakeSandboxProvider::new();
    let sandbox = provider
        .connect(Uuid::new_v4(), None, &FileMap::new())
        .await
        .unwrap();
    let n = 100_000;
    let started = Instant::now();
    for i in 0..n {
        let path = format!("app/file{}.tsx", i % 100);
        sandbox
            .write_file(&path, "export default 1;")
            .await
            .unwrap();
        sandbox.read_file(&path).await.unwrap();
        sandbox
            .run_command(
                CommandSpec::new("echo ok", Duration::from_secs(1)),
                &|_| {},
                CancellationToken::new(),
            )
            .await
            .unwrap();
    }
    let per_op = started.elapsed() / (3 * n);
    println!(
        "sandbox/fake: {per_op:.2?} per operation (write, read, run) over {} ops",
        3 * n
    );
}

#[tokio::main]
async fn main() {
    let warm_only = std::env::args().any(|a| a == "--warm-only");
    let scratch = manifest_dir().join("target/sandbox-bench");
    std::fs::create_dir_all(&scratch).unwrap();
    let root = tempfile::tempdir_in(&scratch).unwrap();
    fake().await;
    warm(root.path()).await;
    if !warm_only {
        cold(root.path()).await;
    }
}
