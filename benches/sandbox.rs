//! Sandbox figures (a `harness = false` bench; prints its measurements).
//!
//!     cargo bench --profile dev --bench sandbox             # warm + cold + fake
//!     cargo bench --profile dev --bench sandbox -- --warm-only
//!     cargo bench --profile dev --bench sandbox -- --jail-only
//!
//! - warm: `connect` (new project, template deps cached in `target/sandbox-cache`) to the preview
//!   URL answering 200 through the preview proxy; target < 5 s. Measured with the warm pool (the
//!   default: a spare with `next dev` running is handed over) and without it (a workspace is
//!   made and `next dev` started and compiled on demand). Also a restart: an existing
//!   workspace, dev server stopped, to 200.
//! - cold: the one-time `npm ci` of the template into an empty cache dir (network: npm registry).
//! - jail: the cost of a new workspace (template copied, dependencies linked, handed to the
//!   sandbox's user), of a sandbox's first command (its network namespace starts), and the
//!   median round trip of a jailed `echo` after that; target < 50 ms.
//! - fake: operations per second of `FakeSandboxProvider` (for agent benchmarks).
//!
//! The dev profile is enough: the time is spent in node, not in this crate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codekraft::sandbox::fake::FakeSandboxProvider;
use codekraft::sandbox::local::{LocalSandboxConfig, LocalSandboxProvider, PreviewOrigin};
use codekraft::sandbox::{CommandSpec, FileMap, OutputSink, SandboxProvider};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WARM_RUNS: usize = 3;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn config(data_dir: PathBuf, cache_dir: PathBuf, origin: PreviewOrigin) -> LocalSandboxConfig {
    let mut config = LocalSandboxConfig::new(data_dir, origin);
    config.template_dir = manifest_dir().join("sandbox-templates/next-js");
    config.cache_dir = cache_dir;
    config
}

/// Waits for a preview (`http://{id}.localhost:PORT/…`), reached on loopback as browsers do
/// (glibc does not resolve such names).
async fn wait_for_200(url: &str) {
    let host = reqwest::Url::parse(url)
        .unwrap()
        .host_str()
        .unwrap()
        .to_owned();
    let client = reqwest::Client::builder()
        .no_proxy()
        .resolve(&host, ([127, 0, 0, 1], 0).into())
        .build()
        .unwrap();
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

/// Resident memory of the processes working in the pool's spare workspaces (`next dev` and
/// its server), in KiB, from `/proc`.
fn spare_rss_kib(data_dir: &std::path::Path) -> u64 {
    let spares: Vec<PathBuf> = std::fs::read_dir(data_dir.join("sandboxes"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|workspace| workspace.join(".pooled").exists())
        .collect();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return 0;
    };
    processes
        .flatten()
        .filter(|process| {
            std::fs::read_link(process.path().join("cwd"))
                .is_ok_and(|cwd| spares.iter().any(|spare| cwd.starts_with(spare)))
        })
        .filter_map(|process| std::fs::read_to_string(process.path().join("status")).ok())
        .filter_map(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// New projects, one after another, each to its first 200. With `warm_pool` spares, the pool
/// is refilled between projects (not timed: in use, the refill runs while people work).
async fn warm(root: &std::path::Path, warm_pool: usize) {
    let label = if warm_pool == 0 {
        "warm, no pool"
    } else {
        "warm, pool"
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = config(
        root.join(format!("warm-data-{warm_pool}")),
        manifest_dir().join("target/sandbox-cache"),
        PreviewOrigin::localhost(listener.local_addr().unwrap().port()),
    );
    config.warm_pool = warm_pool;
    let data_dir = config.data_dir.clone();
    let provider = Arc::new(LocalSandboxProvider::new(config));
    let warm_up = Instant::now();
    provider.warm_up().await.expect("template dependencies");
    println!(
        "sandbox/{label}: dependency cache ready in {:.2?} (jailed: {})",
        warm_up.elapsed(),
        provider.is_jailed()
    );
    let router = codekraft::http::preview::router(provider.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let mut totals = Vec::new();
    let mut sandbox_ids = Vec::new();
    for run in 1..=WARM_RUNS {
        let filled = Instant::now();
        provider.fill_pool().await.expect("warm pool");
        if warm_pool > 0 {
            println!(
                "    pool refilled in {:.2?}; a waiting spare holds {} MiB (RSS)",
                filled.elapsed(),
                spare_rss_kib(&data_dir) / 1024
            );
        }
        let started = Instant::now();
        let sandbox = provider
            .connect(Uuid::new_v4(), None, &FileMap::new())
            .await
            .unwrap();
        let connected = started.elapsed();
        let url = sandbox.preview_url().await.unwrap();
        let preview = started.elapsed();
        wait_for_200(&url).await;
        let total = started.elapsed();
        println!(
            "sandbox/{label} run {run}: connect {connected:.2?}, preview_url {preview:.2?}, \
             first 200 {total:.2?}"
        );
        totals.push(total);
        let local = provider
            .sandbox(sandbox.id().parse().unwrap())
            .await
            .unwrap();
        // One dev server at a time besides the pool, like a single user.
        local.stop_dev_server().await;
        sandbox_ids.push(sandbox.id().to_owned());
    }
    let median_total = median(totals);
    println!(
        "sandbox/{label}: connect -> preview 200, median of {WARM_RUNS}: {median_total:.2?} \
         (target < 5s: {})",
        if median_total < Duration::from_secs(5) {
            "met"
        } else {
            "MISSED"
        }
    );

    if warm_pool == 0 {
        // Restart: the workspace exists, the dev server was stopped (idle or server restart).
        let mut restarts = Vec::new();
        for id in &sandbox_ids {
            let started = Instant::now();
            let sandbox = provider
                .connect(Uuid::new_v4(), Some(id), &FileMap::new())
                .await
                .unwrap();
            let url = sandbox.preview_url().await.unwrap();
            wait_for_200(&url).await;
            restarts.push(started.elapsed());
            provider.shutdown().await;
        }
        println!(
            "sandbox/{label}: reconnect + dev server restart -> 200, median: {:.2?}",
            median(restarts)
        );
    }
    provider.shutdown().await;
}

async fn cold(root: &std::path::Path) {
    let cache = root.join("cold-cache");
    let provider = LocalSandboxProvider::new(config(
        root.join("cold-data"),
        cache.clone(),
        PreviewOrigin::localhost(9),
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
                &mut OutputSink::discard(),
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

async fn echo(sandbox: &dyn codekraft::sandbox::Sandbox) -> Duration {
    let started = Instant::now();
    let output = sandbox
        .run_command(
            CommandSpec::new("echo hi", Duration::from_secs(30)),
            &mut OutputSink::discard(),
            CancellationToken::new(),
        )
        .await
        .expect("echo");
    assert_eq!(output.stdout, "hi\n");
    started.elapsed()
}

/// New workspaces and jailed commands.
async fn jail(root: &std::path::Path) {
    let config = config(
        root.join("jail-data"),
        manifest_dir().join("target/sandbox-cache"),
        PreviewOrigin::localhost(9),
    );
    let provider = LocalSandboxProvider::new(config);
    provider.warm_up().await.expect("template dependencies");
    let mut creations = Vec::new();
    let mut first_commands = Vec::new();
    let mut echoes = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let sandbox = provider
            .connect(Uuid::new_v4(), None, &FileMap::new())
            .await
            .expect("connect");
        creations.push(started.elapsed());
        first_commands.push(echo(&*sandbox).await);
        for _ in 0..20 {
            echoes.push(echo(&*sandbox).await);
        }
    }
    println!(
        "sandbox/jail (jailed: {}): new workspace median {:.2?}; first command (network namespace starts) median {:.2?}; echo round trip median {:.2?}, p90 {:.2?} over {} runs (target < 50 ms)",
        provider.is_jailed(),
        median(creations),
        median(first_commands),
        median(echoes.clone()),
        {
            let mut sorted = echoes.clone();
            sorted.sort();
            sorted[sorted.len() * 9 / 10]
        },
        echoes.len()
    );
}

#[tokio::main]
async fn main() {
    let warm_only = std::env::args().any(|a| a == "--warm-only");
    let jail_only = std::env::args().any(|a| a == "--jail-only");
    let scratch = manifest_dir().join("target/sandbox-bench");
    std::fs::create_dir_all(&scratch).unwrap();
    let root = tempfile::tempdir_in(&scratch).unwrap();
    jail(root.path()).await;
    if jail_only {
        return;
    }
    fake().await;
    warm(root.path(), 1).await;
    warm(root.path(), 0).await;
    if !warm_only {
        cold(root.path()).await;
    }
}
