//! The read path under load: requests per second of four authenticated queries (the table of
//! issue 12) against a release-built server process, driven by `wrk` (8 connections, 5 s
//! each), on seeded data: 20 projects × 10 messages, each ASSISTANT message a version. Also
//! the storage one-file follow-ups add.
//!
//! ```sh
//! cargo bench --bench read_path                                  # SQLite
//! cargo bench --bench read_path -- --database-url postgres://…   # or BENCH_DATABASE_URL
//! cargo bench --bench read_path -- --seconds 10 --connections 16
//! ```
//!
//! Needs `wrk` (Debian: `apt-get install wrk`). The server is this same executable started
//! with `--serve`: the real app (release build) with the in-memory sandbox; it seeds its data
//! through the services before it listens.

#[path = "support/server_process.rs"]
mod server_process;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use codekraft::app::{self, AppBuilder, AppState};
use codekraft::config::Config;
use codekraft::entity::user::Plan;
use codekraft::sandbox::fake::FakeSandboxProvider;
use codekraft::sandbox::FileMap;
use codekraft::services::run_outcome::{record_version, Version};
use codekraft::services::{project, user, Viewer};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};
use server_process::ServerProcess;

const PROJECTS: usize = 20;
/// Messages per project: the first USER message, then versions.
const MESSAGES: usize = 10;
/// Files of a seeded app, and bytes of each.
const FILES: usize = 30;
const FILE_BYTES: usize = 2_000;
const PASSWORD: &str = "correct horse battery";

/// The four queries of the issue's table.
const QUERIES: [(&str, &str); 4] = [
    ("me", "{ me { id } }"),
    ("projects", "{ projects(first: 20) { edges { node { id name } } } }"),
    (
        "projects + messages",
        "{ projects(first: 20) { edges { node { messages(first: 10) { edges { node { id } } } } } } }",
    ),
    (
        "projects + messages + fragments",
        "{ projects(first: 20) { edges { node { id name messages(first: 10) { edges { node { id role content createdAt fragment { id title sandboxUrl } } } } } } } }",
    ),
];

struct Options {
    database_url: Option<String>,
    seconds: u32,
    connections: u32,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        database_url: std::env::var("BENCH_DATABASE_URL").ok(),
        seconds: 5,
        connections: 8,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().context("a value after the flag");
        match arg.as_str() {
            "--database-url" => options.database_url = Some(value()?),
            "--seconds" => options.seconds = value()?.parse()?,
            "--connections" => options.connections = value()?.parse()?,
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(options)
}

fn main() -> anyhow::Result<()> {
    server_process::main_with(serve(), async { bench(options()?).await })
}

/// The server process: `--serve <data dir> <email> [database url]`. Seeds the user's data,
/// then prints the storage figures as one JSON line and its address as the next.
async fn serve() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut config = Config::defaults();
    config.data_dir = PathBuf::from(&args[2]);
    config.database_url = args.get(4).cloned();
    config.worker_concurrency = 0;
    config.auth_jwt_secret = Some("read-path-bench-secret-0123456789abcdef".into());
    config.rate_limit_address_sign_ins_per_minute = 1_000_000;
    let state = AppBuilder::new(config)
        .sandboxes(Arc::new(FakeSandboxProvider::new()))
        .build()
        .await?;
    let storage = seed(&state, &args[3]).await?;
    println!("{storage}");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = app::start(state, listener).await?;
    println!("{}", server.addr);
    std::future::pending::<()>().await;
    Ok(())
}

/// A user with `PROJECTS` projects of `MESSAGES` messages, each version a one-file follow-up of
/// the one before. Returns what the versions of the first project stored.
async fn seed(state: &AppState, email: &str) -> anyhow::Result<Value> {
    let user = user::sign_up(&state.db, &state.password_hashing, email, PASSWORD).await?;
    let viewer = Viewer {
        user_id: user.id,
        plan: Plan::Pro,
    };
    let mut files: FileMap = (0..FILES)
        .map(|n| {
            let content = format!("// part {n}\n{}", "x".repeat(FILE_BYTES));
            (format!("app/part{n}.tsx"), content)
        })
        .collect();
    let mut storage = json!({});
    for n in 0..PROJECTS {
        let name = format!("bench app {n}");
        let created = project::create_project(
            &state.db,
            state.bus.as_ref(),
            viewer,
            &name,
            codekraft::services::run::RunLimits {
                max_active: u32::MAX,
                max_spend_usd_per_window: None,
            },
        )
        .await?;
        let project_id = created.0.id;
        let before = stored_bytes(state).await?;
        let mut first_version_bytes = 0;
        for version in 1..MESSAGES {
            files.insert(
                "app/page.tsx".to_owned(),
                format!(
                    "export default function Page() {{ return <p>version {version} of {n}</p> }}"
                ),
            );
            let version = Version {
                sandbox_url: format!("https://{project_id}.preview.invalid"),
                title: format!("Version {version}"),
                files: files.clone(),
            };
            record_version(
                &state.db,
                project_id,
                None,
                "Here it is.".to_owned(),
                version,
            )
            .await?;
            if first_version_bytes == 0 {
                first_version_bytes = stored_bytes(state).await? - before;
            }
        }
        if n == 0 {
            let follow_ups = (MESSAGES - 2) as i64;
            let added = stored_bytes(state).await? - before - first_version_bytes;
            storage = json!({
                "app_bytes": FILES * FILE_BYTES,
                "first_version_bytes": first_version_bytes,
                "follow_ups": follow_ups,
                "follow_up_bytes": added,
            });
        }
    }
    Ok(storage)
}

/// Bytes the file store holds: contents plus the manifests naming them.
async fn stored_bytes(state: &AppState) -> anyhow::Result<i64> {
    let sql = "SELECT CAST((SELECT COALESCE(SUM(size), 0) FROM file_blob) \
               + (SELECT COALESCE(SUM(16 + LENGTH(path) + LENGTH(hash)), 0) FROM fragment_file) AS BIGINT) AS n";
    let row = state
        .db
        .query_one(Statement::from_string(state.db.get_database_backend(), sql))
        .await?
        .context("a row")?;
    Ok(row.try_get::<i64>("", "n")?)
}

async fn bench(options: Options) -> anyhow::Result<()> {
    let wrk = which("wrk").context("`wrk` is not installed (Debian: apt-get install wrk)")?;
    let data = tempfile::tempdir()?;
    // A new user per run, so that a reused PostgreSQL database still works.
    let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    eprintln!("seeding {PROJECTS} projects × {MESSAGES} messages");
    let mut args = vec![data.path().as_os_str().to_owned(), email.clone().into()];
    args.extend(options.database_url.clone().map(Into::into));
    let server = ServerProcess::start(args).await?;
    let storage: Value = server
        .printed
        .iter()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .context("the server printed no storage figures")?;
    let url = format!("http://{}/graphql", server.addr);
    let http = reqwest::Client::new();
    let signed_in: Value = http
        .post(&url)
        .json(&json!({ "query": "mutation($email: String!, $password: String!) { signIn(email: $email, password: $password) { token } }", "variables": { "email": email, "password": PASSWORD } }))
        .send()
        .await?
        .json()
        .await?;
    let token = signed_in["data"]["signIn"]["token"]
        .as_str()
        .with_context(|| format!("sign-in: {signed_in}"))?
        .to_owned();

    let backend = if options.database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!(
        "read path ({backend}): wrk, {} connections, {} s per query, {PROJECTS} projects × {MESSAGES} messages",
        options.connections, options.seconds
    );
    for (name, query) in QUERIES {
        check_answer(&http, &url, &token, query).await?;
        let script = data.path().join("request.lua");
        std::fs::write(&script, wrk_script(query, &token))?;
        let output = tokio::process::Command::new(&wrk)
            .args(["-t2", &format!("-c{}", options.connections)])
            .arg(format!("-d{}s", options.seconds))
            .arg("-s")
            .arg(&script)
            .arg(&url)
            .output()
            .await?;
        let report = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "wrk failed: {report}{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        if let Some(line) = report.lines().find(|line| line.contains("Non-2xx")) {
            bail!("{name}: {}", line.trim());
        }
        let per_second = report
            .lines()
            .find_map(|line| line.strip_prefix("Requests/sec:"))
            .with_context(|| format!("no Requests/sec in wrk's report: {report}"))?
            .trim();
        let latency = report
            .lines()
            .find_map(|line| line.trim().strip_prefix("Latency"))
            .map(|line| line.split_whitespace().next().unwrap_or("?").to_owned())
            .unwrap_or_default();
        println!("  {name:<34} {per_second:>10} req/s   (mean latency {latency})");
    }
    let storage = &storage;
    let follow_ups = storage["follow_ups"].as_i64().unwrap_or(1).max(1);
    let added = storage["follow_up_bytes"].as_i64().unwrap_or(0);
    println!(
        "  storage: a {} B app stored {} B; {follow_ups} one-file follow-ups added {added} B ({} B each)",
        storage["app_bytes"],
        storage["first_version_bytes"],
        added / follow_ups
    );
    Ok(())
}

/// One request of the query, checked before it is measured: no errors, the whole page.
async fn check_answer(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
) -> anyhow::Result<()> {
    let answer: Value = http
        .post(url)
        .bearer_auth(token)
        .json(&json!({ "query": query }))
        .send()
        .await?
        .json()
        .await?;
    if answer.get("errors").is_some() || answer.get("data").is_none() {
        bail!("{query}: {answer}");
    }
    if let Some(projects) = answer["data"]["projects"]["edges"].as_array() {
        if projects.len() != PROJECTS {
            bail!("{query}: {} projects", projects.len());
        }
        let messages = &projects[0]["node"]["messages"]["edges"];
        if let Some(messages) = messages.as_array() {
            if messages.len() != MESSAGES {
                bail!("{query}: {} messages", messages.len());
            }
        }
    }
    Ok(())
}

/// A `wrk` script that POSTs the query with the token.
fn wrk_script(query: &str, token: &str) -> String {
    let body = json!({ "query": query }).to_string();
    format!(
        "wrk.method = \"POST\"\n\
         wrk.body = {}\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"Authorization\"] = \"Bearer {token}\"\n",
        lua_string(&body)
    )
}

/// A Lua long string holding `text` (no `]==]` occurs in a query).
fn lua_string(text: &str) -> String {
    format!("[==[{text}]==]")
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}
