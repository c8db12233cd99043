//! The `codekraft` binary as separate processes on one database: a server killed mid-run hands
//! the run over to the next one, several servers share the queue and the event stream, and a
//! command printing hundreds of megabytes leaves the server's memory flat.
//! The sandbox is the real E2B client against the fake E2B server (the binary has no fakes):
//! its commands run for real.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::process::{Child, Command};

use crate::support::app::{error_code, TEST_SECRET};
use crate::support::client::GqlClient;
use crate::support::fake_e2b::FakeE2b;
use crate::support::fake_llm::{
    gemini_call_part, gemini_chunk, gemini_text_chunk, gemini_text_reply, FakeLlm, Reply,
};
use crate::support::ws_client::{self, TRANSPORT_WS};

struct ServerProcess {
    child: Child,
    addr: String,
    client: GqlClient,
}

impl std::ops::Deref for ServerProcess {
    type Target = GqlClient;

    fn deref(&self) -> &GqlClient {
        &self.client
    }
}

impl ServerProcess {
    async fn spawn(
        database_url: &str,
        data_dir: &std::path::Path,
        fake_e2b: &FakeE2b,
        extra: &[(&str, String)],
    ) -> Self {
        Self::spawn_logging_to(database_url, data_dir, fake_e2b, extra, None).await
    }

    /// `spawn`, with the server's whole output (stdout and stderr) in `log` when given.
    async fn spawn_logging_to(
        database_url: &str,
        data_dir: &std::path::Path,
        fake_e2b: &FakeE2b,
        extra: &[(&str, String)],
        log: Option<&std::path::Path>,
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let e2b = fake_e2b.config();
        let mut command = Command::new(env!("CARGO_BIN_EXE_codekraft"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("BIND", &addr)
            .env("DATA_DIR", data_dir)
            .env("DATABASE_URL", database_url)
            .env("AUTH_JWT_SECRET", TEST_SECRET)
            .env("RUN_LEASE_SECS", "2")
            .env("AGENT_CHECK_COMMAND", "")
            .env("E2B_API_KEY", &e2b.api_key)
            .env("E2B_TEMPLATE", &e2b.template)
            .env("E2B_API_URL", e2b.api_url.clone().unwrap())
            .env("E2B_ENVD_URL", e2b.envd_url.clone().unwrap())
            .env("RUST_LOG", "codekraft=warn")
            .kill_on_drop(true);
        match log {
            Some(path) => {
                let file = std::fs::File::create(path).unwrap();
                command.stdout(file.try_clone().unwrap()).stderr(file);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::inherit());
            }
        }
        for (key, value) in extra {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawning codekraft");
        let server = Self {
            child,
            client: GqlClient::new(&addr),
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(server.url("/readyz"))
            .await
            .map(|r| r.status().is_success())
            .ok()
            != Some(true)
        {
            assert!(Instant::now() < deadline, "the server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn kill(&mut self) {
        // SIGKILL: no shutdown code runs, as when a machine dies.
        self.child.start_kill().unwrap();
    }
}

async fn database(backend: &str, dir: &std::path::Path) -> String {
    match backend {
        "sqlite" => format!("sqlite://{}?mode=rwc", dir.join("shared.db").display()),
        _ => crate::support::postgres::fresh_database_url().await,
    }
}

async fn killed_mid_run_then_restarted(backend: &str) {
    let data_dir = tempfile::tempdir().unwrap();
    let url = database(backend, data_dir.path()).await;
    let e2b = FakeE2b::start().await;
    let fake = FakeLlm::start([
        // The first server hangs in this call when it is killed.
        Reply::gemini_stream([gemini_text_chunk(&["thinking"])])
            .with_delay(Duration::from_secs(120)),
        gemini_text_reply("<task_summary>Done after a restart.</task_summary>"),
        gemini_text_reply("Survivor"),
        gemini_text_reply("Here it is."),
    ])
    .await;
    let model = [
        ("GEMINI_API_KEY", "test-key".to_owned()),
        ("GEMINI_BASE_URL", fake.base_url()),
    ];
    let mut first = ServerProcess::spawn(&url, data_dir.path(), &e2b, &model).await;
    let token = first.sign_up("survivor@example.com").await;
    let (project_id, run_id) = first.create_project(&token, "an app that survives").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.request_count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the first server never called the model"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill();
    first.child.wait().await.unwrap();

    let second = ServerProcess::spawn(&url, data_dir.path(), &e2b, &model).await;
    let run = second.wait_for_run(&token, &run_id).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(run["attempts"], 2, "taken over after the lease expired");
    assert_eq!(
        second.assistant_messages(&token, &project_id).await.len(),
        1,
        "exactly one ASSISTANT message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_hands_its_run_over_on_sqlite() {
    killed_mid_run_then_restarted("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_hands_its_run_over_on_postgres() {
    killed_mid_run_then_restarted("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_on_one_postgres_share_runs_and_events() {
    let data_dir = tempfile::tempdir().unwrap();
    let url = database("postgres", data_dir.path()).await;
    let e2b = FakeE2b::start().await;
    let workers = [("WORKER_CONCURRENCY", "2".to_owned())];
    let a = ServerProcess::spawn(&url, data_dir.path(), &e2b, &workers).await;
    let b = ServerProcess::spawn(&url, data_dir.path(), &e2b, &workers).await;
    // An API-only server: whatever it streams was produced by the others.
    let watcher = ServerProcess::spawn(
        &url,
        data_dir.path(),
        &e2b,
        &[("WORKER_CONCURRENCY", "0".to_owned())],
    )
    .await;

    let mut runs = Vec::new();
    for user in 0..4 {
        let token = a.sign_up(&format!("user{user}@example.com")).await;
        for n in 0..2 {
            let server = if n == 0 { &a } else { &b };
            let (project_id, run_id) = server
                .create_project(&token, &format!("app {user}-{n}"))
                .await;
            runs.push((token.clone(), project_id, run_id));
        }
    }
    let (token, project_id, _) = &runs[0];
    let mut ws =
        ws_client::connect(&format!("ws://{}/graphql/ws", watcher.addr), TRANSPORT_WS).await;
    ws.init(json!({ "Authorization": format!("Bearer {token}") }))
        .await;
    ws.send_json(json!({ "id": "1", "type": "subscribe", "payload": {
        "query": "subscription($id: ID!) { projectEvents(projectId: $id) { seq kind } }",
        "variables": { "id": project_id } } }))
        .await;
    loop {
        let message = ws.recv().await;
        assert_eq!(message["type"], "next", "{message}");
        if message["payload"]["data"]["projectEvents"]["kind"] == "RUN_FINISHED" {
            break;
        }
    }

    for (token, project_id, run_id) in &runs {
        let run = watcher.wait_for_run(token, run_id).await;
        assert_eq!(run["status"], "SUCCEEDED", "{run}");
        assert_eq!(run["attempts"], 1, "no run was taken twice");
        assert_eq!(watcher.assistant_messages(token, project_id).await.len(), 1);
    }
    // The API-only server refuses nothing it should serve.
    let stranger = watcher.gql(Some("bad"), "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&stranger), "UNAUTHENTICATED");
}

/// A kibibyte figure of `/proc/{pid}/status` (`VmRSS`, `VmHWM` for the peak).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A run that calls `terminal` with `command` once, then finishes.
fn terminal_run(command: &str) -> [Reply; 4] {
    [
        Reply::gemini_stream([gemini_chunk(
            vec![gemini_call_part(
                "terminal",
                json!({ "command": command }),
                None,
            )],
            Some("STOP"),
            None,
        )]),
        gemini_text_reply("<task_summary>Printed a lot.</task_summary>"),
        gemini_text_reply("Printer"),
        gemini_text_reply("Done printing."),
    ]
}

/// Every stored event of a run, paged through GraphQL.
async fn run_events(server: &ServerProcess, token: &str, run_id: &str) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    loop {
        let after = events
            .last()
            .map_or(0, |e: &serde_json::Value| e["seq"].as_i64().unwrap());
        let data = server
            .data(
                Some(token),
                "query($id: ID!, $after: Int) { run(id: $id) { events(after: $after, first: 1000) { seq kind payload } } }",
                json!({ "id": run_id, "after": after }),
            )
            .await;
        let page = data["run"]["events"].as_array().unwrap().clone();
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_printing_300_mb_stores_little_and_leaves_memory_flat() {
    const PRINTED: u64 = 300_000_000;
    const STREAM_LIMIT: u64 = 1024 * 1024;
    let data_dir = tempfile::tempdir().unwrap();
    let url = database("sqlite", data_dir.path()).await;
    let e2b = FakeE2b::start().await;
    // A small run first, so what the server allocates once (pools, caches) is in the baseline.
    let warm_up = format!("yes | head -c {}", 3 * STREAM_LIMIT);
    let fake = FakeLlm::start(terminal_run(&warm_up)).await;
    let model = [
        ("GEMINI_API_KEY", "test-key".to_owned()),
        ("GEMINI_BASE_URL", fake.base_url()),
    ];
    let server = ServerProcess::spawn(&url, data_dir.path(), &e2b, &model).await;
    let pid = server.child.id().unwrap();
    let token = server.sign_up("printer@example.com").await;
    let (_, run_id) = server.create_project(&token, "print a little").await;
    assert_eq!(
        server.wait_for_run(&token, &run_id).await["status"],
        "SUCCEEDED"
    );
    let baseline_kib = memory_kib(pid, "VmHWM");

    fake.push(terminal_run(&format!("yes | head -c {PRINTED}")));
    let (_, run_id) = server.create_project(&token, "print a lot").await;
    let run = server
        .wait_for_run_within(&token, &run_id, Duration::from_secs(600))
        .await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let peak_kib = memory_kib(pid, "VmHWM");

    let events = run_events(&server, &token, &run_id).await;
    let stored_bytes: usize = events.iter().map(|e| e["payload"].to_string().len()).sum();
    assert!(stored_bytes < 2_000_000, "{stored_bytes} bytes of events");
    let output: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "TOOL_OUTPUT")
        .map(|e| &e["payload"])
        .collect();
    let streamed: u64 = output
        .iter()
        .filter_map(|p| p["text"].as_str())
        .map(|chunk| chunk.len() as u64)
        .sum();
    assert_eq!(streamed, STREAM_LIMIT);
    let markers = output.iter().filter(|p| p["truncated"] == true).count();
    assert_eq!(markers, 1, "one truncated marker");
    let last = output.last().unwrap();
    assert_eq!(last["truncated"], true, "the marker comes last");
    assert_eq!(last["omittedBytes"], PRINTED - STREAM_LIMIT);

    let growth_mib = peak_kib.saturating_sub(baseline_kib) / 1024;
    assert!(
        growth_mib < 64,
        "peak memory grew by {growth_mib} MiB ({baseline_kib} → {peak_kib} KiB)"
    );
}

/// A whole run logged at debug level, with every secret in play (model key, E2B key, JWT secret,
/// a password, bearer tokens), mentions none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_of_a_whole_run_hold_no_secret() {
    const MODEL_KEY: &str = "gemini-key-SECRET-7f3a9c";
    const PASSWORD: &str = "correct-horse-SECRET-battery";
    let data_dir = tempfile::tempdir().unwrap();
    let url = database("sqlite", data_dir.path()).await;
    let e2b = FakeE2b::start().await;
    let fake = FakeLlm::start(terminal_run("echo built")).await;
    let log = data_dir.path().join("server.log");
    let env = [
        ("GEMINI_API_KEY", MODEL_KEY.to_owned()),
        ("GEMINI_BASE_URL", fake.base_url()),
        ("RUST_LOG", "debug".to_owned()),
    ];
    let server =
        ServerProcess::spawn_logging_to(&url, data_dir.path(), &e2b, &env, Some(&log)).await;

    let signed_up = server
        .data(
            None,
            "mutation($p: String!) { signUp(email: \"keeper@example.com\", password: $p) { token } }",
            json!({ "p": PASSWORD }),
        )
        .await;
    let signed_in = server
        .data(
            None,
            "mutation($p: String!) { signIn(email: \"keeper@example.com\", password: $p) { token } }",
            json!({ "p": PASSWORD }),
        )
        .await;
    let wrong = server
        .gql(
            None,
            "mutation($p: String!) { signIn(email: \"keeper@example.com\", password: $p) { token } }",
            json!({ "p": format!("{PASSWORD}-wrong") }),
        )
        .await;
    assert_eq!(error_code(&wrong), "BAD_USER_INPUT", "{wrong}");
    let token = signed_up["signUp"]["token"].as_str().unwrap().to_owned();
    let second_token = signed_in["signIn"]["token"].as_str().unwrap().to_owned();
    let (_, run_id) = server.create_project(&second_token, "an app").await;
    let run = server.wait_for_run(&token, &run_id).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let mut ws =
        ws_client::connect(&format!("ws://{}/graphql/ws", server.addr), TRANSPORT_WS).await;
    ws.init(json!({ "Authorization": format!("Bearer {token}") }))
        .await;
    ws.close().await;
    let refused = server
        .gql(Some("not-a-real-token"), "{ me { id } }", json!({}))
        .await;
    assert_eq!(error_code(&refused), "UNAUTHENTICATED");
    drop(server);

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("DEBUG"), "the server logged at debug level");
    assert!(logged.contains(&run_id), "the run was logged");
    let secrets = [
        ("the model key", MODEL_KEY.to_owned()),
        ("the E2B key", crate::support::fake_e2b::API_KEY.to_owned()),
        ("the JWT secret", TEST_SECRET.to_owned()),
        ("the password", PASSWORD.to_owned()),
        ("a bearer token", token.clone()),
        ("a bearer token", second_token.clone()),
        // A JWT's signature alone would do.
        (
            "a token's signature",
            token.rsplit('.').next().unwrap().to_owned(),
        ),
    ];
    for (what, secret) in secrets {
        assert!(!logged.contains(&secret), "{what} is in the log");
    }
}
