//! Live events at scale: N graphql-ws subscribers on one project of a release-built server
//! (its own process), events triggered through the API (`restoreFragment`: two events in one
//! transaction each), and per event: delivered, missed, duplicated, stored→received latency
//! (p50/p99), and the server's resident memory.
//!
//! ```sh
//! cargo bench --bench events                                   # 5,000 subscribers × 50 events, SQLite
//! cargo bench --bench events -- --subscribers 1000 --events 20
//! cargo bench --bench events -- --database-url postgres://… --servers 2   # subscribers spread over two servers
//! ```
//!
//! The server is this same executable started with `--serve`: the real app (release build, the
//! offline model) with the in-memory sandbox, so a restore costs no disk or `npm`.
//! `BENCH_SERVER_WRAPPER=heaptrack` runs the server under a heap profiler.

#[path = "support/server_process.rs"]
mod server_process;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use codekraft::app::{self, AppBuilder};
use codekraft::config::Config;
use codekraft::sandbox::fake::FakeSandboxProvider;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use server_process::ServerProcess;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

const EVENTS_PER_RESTORE: usize = 2;
const SUBSCRIBE: &str = "subscription($id: ID!, $after: Int) { projectEvents(projectId: $id, after: $after) { seq createdAt } }";

struct Options {
    subscribers: usize,
    events: usize,
    database_url: Option<String>,
    servers: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        subscribers: 5_000,
        events: 50,
        database_url: std::env::var("BENCH_DATABASE_URL").ok(),
        servers: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().context("a value after the flag");
        match arg.as_str() {
            "--subscribers" => options.subscribers = value()?.parse()?,
            "--events" => options.events = value()?.parse()?,
            "--database-url" => options.database_url = Some(value()?),
            "--servers" => options.servers = value()?.parse()?,
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    if options.servers > 1 && options.database_url.is_none() {
        bail!("several servers share a PostgreSQL database: pass --database-url");
    }
    Ok(options)
}

fn main() -> anyhow::Result<()> {
    server_process::main_with(serve(), async { bench(options()?).await })
}

/// The server process: `--serve <data dir> <worker concurrency> [database url]`; prints its
/// address once it listens.
async fn serve() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut config = Config::defaults();
    config.data_dir = PathBuf::from(&args[2]);
    config.worker_concurrency = args[3].parse()?;
    config.database_url = args.get(4).cloned();
    config.auth_jwt_secret = Some("events-bench-secret-0123456789abcdef".into());
    config.agent_check_command = String::new();
    config.agent_preview_check = false;
    config.ws_max_connections_per_user = 1_000_000;
    config.rate_limit_user_mutations_per_minute = 1_000_000;
    config.rate_limit_address_mutations_per_minute = 1_000_000;
    let state = AppBuilder::new(config)
        .sandboxes(Arc::new(FakeSandboxProvider::new()))
        .build()
        .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = app::start(state, listener).await?;
    println!("{}", server.addr);
    std::future::pending::<()>().await;
    Ok(())
}

struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    async fn gql(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let response: Value = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?;
        if let Some(errors) = response.get("errors") {
            bail!("{query}: {errors}");
        }
        Ok(response["data"].clone())
    }
}

/// A `next` message of the subscription.
#[derive(Deserialize)]
struct Next<'a> {
    #[serde(borrow)]
    payload: Payload<'a>,
}

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow)]
    data: Data<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data<'a> {
    #[serde(borrow)]
    project_events: Event<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    seq: i64,
    created_at: &'a str,
}

/// What one subscriber saw.
#[derive(Default)]
struct Received {
    latencies_us: Vec<u64>,
    duplicates: usize,
    seqs: HashSet<i64>,
}

async fn subscribe(
    ws_url: String,
    token: String,
    project_id: String,
    after: i64,
    expected: usize,
    delivered: Arc<AtomicU64>,
    ready: Arc<Semaphore>,
) -> anyhow::Result<Received> {
    let permit = ready.acquire().await?;
    let mut request = ws_url.into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    // A small read buffer: tungstenite zeroes it before every read (its default is 128 KiB).
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    socket.send(Message::text(init.to_string())).await?;
    socket.next().await.context("connection_ack")??;
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": {
        "query": SUBSCRIBE, "variables": { "id": project_id, "after": after } } });
    socket.send(Message::text(subscribe.to_string())).await?;
    drop(permit);
    let mut received = Received::default();
    while received.seqs.len() < expected {
        let Some(message) = socket.next().await else {
            bail!("the server closed the socket")
        };
        let Message::Text(text) = message? else {
            continue;
        };
        let now = Utc::now();
        let message: Next<'_> = serde_json::from_str(&text)
            .with_context(|| format!("unexpected message {}", text.as_str()))?;
        let Event { seq, created_at } = message.payload.data.project_events;
        let stored: DateTime<Utc> = created_at.parse()?;
        let latency = (now - stored).num_microseconds().unwrap_or(0).max(0);
        if received.seqs.insert(seq) {
            received.latencies_us.push(u64::try_from(latency)?);
            delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            received.duplicates += 1;
        }
    }
    Ok(received)
}

async fn bench(options: Options) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let mut servers = Vec::new();
    for index in 0..options.servers {
        let dir = data.path().join(format!("server-{index}"));
        std::fs::create_dir_all(&dir)?;
        // The first server runs the project's first generation; the others only serve.
        let workers = usize::from(index == 0);
        let mut args = vec![dir.into_os_string(), workers.to_string().into()];
        args.extend(options.database_url.clone().map(Into::into));
        servers.push(ServerProcess::start(args).await?);
    }
    let http = reqwest::Client::new();
    let url = format!("http://{}/graphql", servers[0].addr);
    let signed_up: Value = http
        .post(&url)
        .json(&json!({ "query": "mutation { signUp(email: \"bench@example.com\", password: \"correct horse battery\") { token } }" }))
        .send()
        .await?
        .json()
        .await?;
    let token = signed_up["data"]["signUp"]["token"]
        .as_str()
        .with_context(|| format!("sign-up: {signed_up}"))?
        .to_owned();
    let api = Api { http, url, token };
    eprintln!("signed up; generating the project's first version");

    let created = api
        .gql(
            "mutation { createProject(prompt: \"a todo app\") { project { id } run { id } } }",
            json!({}),
        )
        .await?;
    let project_id = created["createProject"]["project"]["id"]
        .as_str()
        .context("project id")?
        .to_owned();
    let run_id = created["createProject"]["run"]["id"].clone();
    let run = loop {
        let run = api
            .gql(
                "query($id: ID!) { run(id: $id) { status events(first: 500) { seq } } }",
                json!({ "id": run_id }),
            )
            .await?;
        if !matches!(run["run"]["status"].as_str(), Some("QUEUED" | "RUNNING")) {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let last_seq = run["run"]["events"]
        .as_array()
        .and_then(|events| events.iter().filter_map(|e| e["seq"].as_i64()).max())
        .context("the first run's events")?;
    let fragment = api
        .gql(
            "query($id: ID!) { project(id: $id) { messages { edges { node { fragment { id } } } } } }",
            json!({ "id": project_id }),
        )
        .await?;
    let fragment_id = fragment["project"]["messages"]["edges"]
        .as_array()
        .and_then(|edges| {
            edges
                .iter()
                .find_map(|edge| edge["node"]["fragment"]["id"].as_str())
        })
        .context("the first run made no version")?
        .to_owned();
    let restore = || {
        api.gql(
            "mutation($id: ID!) { restoreFragment(fragmentId: $id) { id } }",
            json!({ "id": fragment_id }),
        )
    };

    eprintln!("subscribing {} clients", options.subscribers);
    let (idle_mib, _) = servers[0].memory_mib()?;
    let restores = options.events.div_ceil(EVENTS_PER_RESTORE);
    // One warm-up restore proves every subscriber is listening; it is not measured.
    let expected = (restores + 1) * EVENTS_PER_RESTORE;
    let delivered = Arc::new(AtomicU64::new(0));
    // Connections opened at once (the server's listen backlog is finite).
    let connecting = Arc::new(Semaphore::new(200));
    let started = Instant::now();
    let mut subscribers = Vec::new();
    for index in 0..options.subscribers {
        let addr = &servers[index % servers.len()].addr;
        subscribers.push(tokio::spawn(subscribe(
            format!("ws://{addr}/graphql/ws"),
            api.token.clone(),
            project_id.clone(),
            last_seq,
            expected,
            delivered.clone(),
            connecting.clone(),
        )));
    }
    let wait_for = |count: u64| {
        let delivered = delivered.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while delivered.load(Ordering::Relaxed) < count {
                if Instant::now() > deadline {
                    eprintln!(
                        "waited 20 s: {} of {count} events delivered",
                        delivered.load(Ordering::Relaxed)
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    let per_restore = (options.subscribers * EVENTS_PER_RESTORE) as u64;
    // A subscriber that joins after this restore reads it from the table: once all have it,
    // all are listening.
    restore().await?;
    wait_for(per_restore).await;
    let connected_in = started.elapsed();
    let (subscribed_mib, _) = servers[0].memory_mib()?;

    eprintln!("all subscribed; {restores} restores");
    let measured_from = delivered.load(Ordering::Relaxed);
    for round in 1..=restores {
        restore().await?;
        wait_for(per_restore * (round as u64 + 1)).await;
    }
    let mut latencies = Vec::new();
    let (mut missed, mut duplicates, mut failed) = (0, 0, 0);
    for subscriber in subscribers {
        match tokio::time::timeout(Duration::from_secs(5), subscriber).await {
            Ok(Ok(Ok(received))) => {
                // Skip the warm-up restore's events.
                latencies.extend(received.latencies_us.into_iter().skip(EVENTS_PER_RESTORE));
                duplicates += received.duplicates;
            }
            Ok(Ok(Err(err))) => {
                failed += 1;
                eprintln!("subscriber failed: {err:#}");
            }
            _ => failed += 1,
        }
    }
    let measured = delivered.load(Ordering::Relaxed) - measured_from;
    let wanted = (options.subscribers * restores * EVENTS_PER_RESTORE) as u64;
    missed += wanted.saturating_sub(measured);
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or(f64::NAN, |us| *us as f64 / 1000.0)
    };
    let (rss_mib, peak_mib) = servers[0].memory_mib()?;
    let backend = if options.database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!(
        "events: {} subscribers on {} server(s) ({backend}) × {} events",
        options.subscribers,
        servers.len(),
        restores * EVENTS_PER_RESTORE
    );
    println!(
        "  delivered {measured} of {wanted}, missed {missed}, duplicated {duplicates}, failed subscribers {failed}"
    );
    println!(
        "  stored→received latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(0.5),
        percentile(0.99),
        percentile(1.0)
    );
    println!(
        "  first server RSS: {idle_mib:.0} MiB idle, {subscribed_mib:.0} MiB subscribed, {rss_mib:.0} MiB after, {peak_mib:.0} MiB peak; all subscribed in {:.1} s",
        connected_in.as_secs_f64()
    );
    Ok(())
}
