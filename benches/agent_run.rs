//! Server time of a 20-step run against a zero-latency model and the in-memory sandbox
//! (target: under 100 ms per run). Prints the figures; run with `cargo bench --bench agent_run`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use codekraft::agent::provider::{
    ChatMessage, ChatRequest, DeltaSink, ModelError, ModelProvider, ModelResponse, TokenUsage,
    ToolCall,
};
use codekraft::app::{self, AppBuilder};
use codekraft::config::Config;
use codekraft::entity::run::{self, RunStatus};
use codekraft::entity::user::Plan;
use codekraft::sandbox::fake::FakeSandboxProvider;
use codekraft::services::{self, Viewer};
use sea_orm::EntityTrait;

const STEPS: usize = 20;
const RUNS: usize = 30;

/// Answers instantly: 19 tool calls (writes, commands, reads in turn), then the summary.
struct InstantModel {
    calls: AtomicUsize,
}

#[async_trait]
impl ModelProvider for InstantModel {
    fn name(&self) -> &'static str {
        "bench"
    }
    fn model(&self) -> &str {
        "instant"
    }
    fn estimate_cost_usd(&self, _usage: TokenUsage) -> f64 {
        0.0
    }
    async fn complete(
        &self,
        request: &ChatRequest,
        on_delta: DeltaSink<'_>,
    ) -> Result<ModelResponse, ModelError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let usage = TokenUsage {
            input_tokens: 1000,
            output_tokens: 100,
        };
        if request.tools.is_empty() {
            return Ok(ModelResponse {
                text: "Bench App".into(),
                usage,
                ..Default::default()
            });
        }
        let step = request
            .messages
            .iter()
            .filter(|m| matches!(m, ChatMessage::Assistant { .. }))
            .count();
        if step + 1 >= STEPS {
            on_delta("<task_summary>done</task_summary>");
            return Ok(ModelResponse {
                text: "<task_summary>done</task_summary>".into(),
                usage,
                ..Default::default()
            });
        }
        let (name, arguments) = match step % 3 {
            0 => (
                "createOrUpdateFiles",
                serde_json::json!({ "files": [{ "path": format!("app/c{step}.tsx"), "content": "export const x = 1;\n".repeat(40) }] }),
            ),
            1 => (
                "terminal",
                serde_json::json!({ "command": format!("echo step {step}") }),
            ),
            _ => (
                "readFiles",
                serde_json::json!({ "files": [format!("app/c{}.tsx", step - 2)] }),
            ),
        };
        Ok(ModelResponse {
            tool_calls: vec![ToolCall {
                id: format!("c{step}"),
                name: name.into(),
                arguments,
            }],
            usage,
            ..Default::default()
        })
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = Config::defaults();
        config.data_dir = data_dir.path().to_path_buf();
        config.auth_jwt_secret = Some("bench-secret-0123456789abcdefghijkl".into());
        config.agent_check_command = String::new();
        config.worker_concurrency = 1;
        let model = Arc::new(InstantModel { calls: AtomicUsize::new(0) });
        let state = AppBuilder::new(config)
            .models(model.clone())
            .sandboxes(Arc::new(FakeSandboxProvider::new()))
            .build()
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = app::start(state.clone(), listener).await.unwrap();
        let user = services::user::sign_up(&state.db, &state.password_hashing, "bench@example.com", "bench password").await.unwrap();
        let viewer = Viewer { user_id: user.id, plan: Plan::Pro };

        let wall = Instant::now();
        let mut server_times = Vec::new();
        for n in 0..RUNS {
            let (_, generation) = services::project::create_project(&state.db, state.bus.as_ref(), viewer, &format!("bench app {n}"), services::run::RunLimits::from_config(&state.config))
                .await
                .unwrap();
            let finished = loop {
                let found = run::Entity::find_by_id(generation.run.id).one(&state.db).await.unwrap().unwrap();
                if found.status.is_finished() {
                    break found;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            assert_eq!(finished.status, RunStatus::Succeeded, "{:?}", finished.error);
            let took = finished.finished_at.unwrap() - finished.started_at.unwrap();
            server_times.push(took.to_std().unwrap());
        }
        let wall = wall.elapsed();
        server_times.sort();
        let mean = server_times.iter().sum::<Duration>() / RUNS as u32;
        let p50 = server_times[RUNS / 2];
        let p95 = server_times[RUNS * 95 / 100];
        println!("agent_run: {RUNS} runs of {STEPS} model steps (zero-latency model, in-memory sandbox, SQLite)");
        println!("  server time per run: mean {mean:?}, p50 {p50:?}, p95 {p95:?}, max {:?} (target < 100ms)", server_times[RUNS - 1]);
        println!("  wall time: {wall:?} ({:.1} runs/s), model calls: {}", RUNS as f64 / wall.as_secs_f64(), model.calls.load(Ordering::Relaxed));
        server.shutdown().await.unwrap();
    });
}
