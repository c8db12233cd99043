//! Configuration from the environment, `.env` and command-line flags. Every key is documented in
//! the README's configuration table; the names are a public interface.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "codekraft",
    version,
    about = "CodeKraft: an AI app builder served as a GraphQL API"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Run pending migrations, then serve the API, the web client and the workers (the default).
    Serve,
    /// Run pending migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL) to standard output.
    PrintSchema,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelProviderKind {
    Gemini,
    Openai,
    Offline,
    Replay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxProviderKind {
    Local,
    E2b,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address the server listens on.
    #[arg(long, env = "BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Where the SQLite database, the dev JWT secret and local sandboxes live.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Unset: a SQLite file in DATA_DIR. A postgres:// URL: PostgreSQL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// URL at which browsers reach this server (preview links); defaults to http://BIND.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Serve local previews on this address instead of under BIND: another origin, so a
    /// generated app in the preview cannot read the web client's storage. Unset: previews at
    /// PUBLIC_URL/preview/….
    #[arg(long, env = "PREVIEW_BIND")]
    pub preview_bind: Option<SocketAddr>,
    /// URL at which browsers reach PREVIEW_BIND; defaults to http://PREVIEW_BIND.
    #[arg(long, env = "PREVIEW_PUBLIC_URL")]
    pub preview_public_url: Option<String>,
    /// HS256 secret for built-in accounts; unset: generated once and kept in DATA_DIR.
    #[arg(long, env = "AUTH_JWT_SECRET", hide_env_values = true)]
    pub auth_jwt_secret: Option<String>,
    /// JWKS URL of an external issuer (Clerk); enables RS256 session tokens.
    #[arg(long, env = "AUTH_JWKS_URL")]
    pub auth_jwks_url: Option<String>,
    /// Expected `iss` of external tokens.
    #[arg(long, env = "AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// Claim of external tokens that carries the plan (`free`/`pro`); unset: the plan in the DB.
    #[arg(long, env = "AUTH_PLAN_CLAIM")]
    pub auth_plan_claim: Option<String>,
    /// Comma-separated origins allowed by CORS; unset: same origin only.
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// `pretty` or `json` log lines (filter with RUST_LOG).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
    /// How long a WebSocket may stay open without `connection_init` (then closed with 4408).
    #[arg(long, env = "WS_INIT_TIMEOUT_MS", default_value_t = 10_000)]
    pub ws_init_timeout_ms: u64,
    /// Directory of the built web client served at `/`.
    #[arg(long, env = "WEB_CLIENT_DIR", default_value = "./web-client")]
    pub web_client_dir: PathBuf,

    /// `gemini`, `openai`, `offline` or `replay`; unset: gemini when a Gemini key is set, else offline.
    #[arg(long, env = "MODEL_PROVIDER", value_enum)]
    pub model_provider: Option<ModelProviderKind>,
    /// Gemini API key (the seed's GOOGLE_AI_API_KEY is accepted too).
    #[arg(long, env = "GEMINI_API_KEY", hide_env_values = true)]
    pub gemini_api_key: Option<String>,
    #[arg(long, env = "GOOGLE_AI_API_KEY", hide = true, hide_env_values = true)]
    pub google_ai_api_key: Option<String>,
    #[arg(long, env = "GEMINI_MODEL", default_value = "gemini-2.5-flash")]
    pub gemini_model: String,
    #[arg(
        long,
        env = "GEMINI_BASE_URL",
        default_value = "https://generativelanguage.googleapis.com"
    )]
    pub gemini_base_url: String,
    /// OpenAI-compatible endpoint (Ollama: http://localhost:11434/v1).
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "http://localhost:11434/v1"
    )]
    pub openai_base_url: String,
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,
    #[arg(long, env = "OPENAI_MODEL", default_value = "qwen2.5-coder:7b")]
    pub openai_model: String,
    /// Recorded transcript (JSON list of model responses) for MODEL_PROVIDER=replay.
    #[arg(long, env = "REPLAY_FILE")]
    pub replay_file: Option<PathBuf>,
    /// Runs executed at once by this process (0: an API-only process that runs none).
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 2)]
    pub worker_concurrency: usize,
    /// Model steps a run may take before it ends with an error.
    #[arg(long, env = "AGENT_MAX_STEPS", default_value_t = 30)]
    pub agent_max_steps: u32,
    /// Rounds the agent gets to fix a build error before the run gives up.
    #[arg(long, env = "AGENT_MAX_FIX_ROUNDS", default_value_t = 2)]
    pub agent_max_fix_rounds: u32,
    /// Build check run in the sandbox after the model is done (empty: no check).
    #[arg(
        long,
        env = "AGENT_CHECK_COMMAND",
        default_value = "npx --no-install tsc --noEmit --pretty false"
    )]
    pub agent_check_command: String,
    /// After the build check, fetch the preview: a server error (a page that does not render)
    /// is fed back for a fix round too.
    #[arg(long, env = "AGENT_PREVIEW_CHECK", default_value_t = true, action = clap::ArgAction::Set)]
    pub agent_preview_check: bool,
    /// A running run's lease; a worker that stops heartbeating loses the run after this long.
    #[arg(long, env = "RUN_LEASE_SECS", default_value_t = 30)]
    pub run_lease_secs: u64,

    /// `local` or `e2b`; unset: e2b when E2B_API_KEY is set, else local.
    #[arg(long, env = "SANDBOX_PROVIDER", value_enum)]
    pub sandbox_provider: Option<SandboxProviderKind>,
    #[arg(long, env = "E2B_API_KEY", hide_env_values = true)]
    pub e2b_api_key: Option<String>,
    #[arg(long, env = "E2B_TEMPLATE", default_value = "codekraft-nextjs")]
    pub e2b_template: String,
    #[arg(long, env = "E2B_DOMAIN", default_value = "e2b.app")]
    pub e2b_domain: String,
    /// Control-plane base URL; unset: https://api.E2B_DOMAIN.
    #[arg(long, env = "E2B_API_URL")]
    pub e2b_api_url: Option<String>,
    /// envd base URL, replacing https://49983-{id}.E2B_DOMAIN (tests, self-hosted E2B).
    #[arg(long, env = "E2B_ENVD_URL")]
    pub e2b_envd_url: Option<String>,
    /// Lifetime of a hosted sandbox, extended while a project is active.
    #[arg(long, env = "SANDBOX_TIMEOUT_SECS", default_value_t = 1800)]
    pub sandbox_timeout_secs: u64,
    /// Idle time after which a local dev server is stopped (it starts again on demand).
    #[arg(long, env = "SANDBOX_IDLE_SECS", default_value_t = 900)]
    pub sandbox_idle_secs: u64,
    /// Time limit of one command the agent runs.
    #[arg(long, env = "SANDBOX_COMMAND_TIMEOUT_SECS", default_value_t = 300)]
    pub sandbox_command_timeout_secs: u64,
    /// Time limit of one sandbox file operation (read, write, list, remove, restore).
    #[arg(long, env = "SANDBOX_FILE_TIMEOUT_SECS", default_value_t = 10)]
    pub sandbox_file_timeout_secs: u64,
    /// Template of local sandboxes.
    #[arg(
        long,
        env = "SANDBOX_TEMPLATE_DIR",
        default_value = "./sandbox-templates/next-js"
    )]
    pub sandbox_template_dir: PathBuf,
    /// Shared npm dependency cache of local sandboxes; unset: DATA_DIR/cache.
    #[arg(long, env = "SANDBOX_CACHE_DIR")]
    pub sandbox_cache_dir: Option<PathBuf>,
    /// Local sandboxes kept ready (dev server running, first page compiled) for new projects.
    /// Each holds a `next dev` process (about 540 MiB resident); 0 turns the pool off.
    #[arg(long, env = "SANDBOX_WARM_POOL", default_value_t = 1)]
    pub sandbox_warm_pool: usize,
}

impl Config {
    /// Config for tests and embedding: the defaults, whatever the environment says.
    pub fn defaults() -> Self {
        let command = Cli::command().mut_args(|arg| arg.env(None));
        let matches = command.get_matches_from(["codekraft"]);
        Cli::from_arg_matches(&matches)
            .expect("the defaults parse")
            .config
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("codekraft.db").display()
            ),
        }
    }

    /// Where browsers reach local previews: PREVIEW_BIND's URL when it is set, else this server.
    pub fn preview_url(&self) -> String {
        let Some(bind) = self.preview_bind else {
            return self.public_url();
        };
        self.preview_public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bind}"))
            .trim_end_matches('/')
            .to_owned()
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.bind))
            .trim_end_matches('/')
            .to_owned()
    }

    pub fn gemini_key(&self) -> Option<&str> {
        self.gemini_api_key
            .as_deref()
            .or(self.google_ai_api_key.as_deref())
            .filter(|key| !key.is_empty())
    }

    pub fn model_provider_kind(&self) -> ModelProviderKind {
        self.model_provider
            .unwrap_or(if self.gemini_key().is_some() {
                ModelProviderKind::Gemini
            } else {
                ModelProviderKind::Offline
            })
    }

    pub fn sandbox_provider_kind(&self) -> SandboxProviderKind {
        self.sandbox_provider.unwrap_or(
            if self.e2b_api_key.as_deref().is_some_and(|k| !k.is_empty()) {
                SandboxProviderKind::E2b
            } else {
                SandboxProviderKind::Local
            },
        )
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.sandbox_command_timeout_secs)
    }

    pub fn file_timeout(&self) -> Duration {
        Duration::from_secs(self.sandbox_file_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_move_to_their_own_origin_with_preview_bind() {
        let mut config = Config::defaults();
        config.public_url = Some("https://codekraft.example/".into());
        assert_eq!(config.preview_url(), "https://codekraft.example");
        config.preview_bind = Some("127.0.0.1:8081".parse().unwrap());
        assert_eq!(config.preview_url(), "http://127.0.0.1:8081");
        config.preview_public_url = Some("https://previews.codekraft.example/".into());
        assert_eq!(config.preview_url(), "https://previews.codekraft.example");
    }

    #[test]
    fn defaults_ignore_the_environment_and_pick_embedded_parts() {
        let config = Config::defaults();
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert!(config.database_url().starts_with("sqlite://"));
        assert_eq!(config.model_provider_kind(), ModelProviderKind::Offline);
        assert_eq!(config.sandbox_provider_kind(), SandboxProviderKind::Local);
        assert_eq!(config.preview_url(), config.public_url());
        assert_eq!(config.public_url(), "http://127.0.0.1:8080");
    }

    #[test]
    fn a_key_selects_the_hosted_parts_and_flags_parse() {
        let cli = Cli::parse_from([
            "codekraft",
            "--gemini-api-key",
            "k",
            "--e2b-api-key",
            "e",
            "--database-url",
            "postgres://x@h/db",
            "migrate",
        ]);
        assert_eq!(cli.command, Some(Command::Migrate));
        assert_eq!(cli.config.model_provider_kind(), ModelProviderKind::Gemini);
        assert_eq!(cli.config.sandbox_provider_kind(), SandboxProviderKind::E2b);
        assert_eq!(cli.config.database_url(), "postgres://x@h/db");
    }
}
