//! Configuration from the environment, `.env` and command-line flags. Every key is documented in
//! the README's configuration table; the names are a public interface.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::sandbox::local::PreviewOrigin;

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
    Anthropic,
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

/// An amount of US dollars: finite and not negative.
fn parse_usd(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(usd) if usd.is_finite() && usd >= 0.0 => Ok(usd),
        _ => Err(format!(
            "{value:?} is not an amount of USD (a number, 0 or more)"
        )),
    }
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
    /// Address of the preview listener of local sandboxes: a port apart from BIND, so that a
    /// generated app cannot read the web client's storage. Unset: BIND's host, port + 1.
    #[arg(long, env = "PREVIEW_BIND")]
    pub preview_bind: Option<SocketAddr>,
    /// Origin of a local preview, `{id}` (the sandbox id) being the host's first label: a
    /// wildcard domain reaching PREVIEW_BIND, e.g. https://{id}.preview.example.com.
    /// Unset: http://{id}.localhost:PORT, PORT being PREVIEW_BIND's.
    #[arg(long, env = "PREVIEW_PUBLIC_URL")]
    pub preview_public_url: Option<PreviewOrigin>,
    /// HS256 secret for built-in accounts; unset: generated once and kept in DATA_DIR.
    #[arg(long, env = "AUTH_JWT_SECRET", hide_env_values = true)]
    pub auth_jwt_secret: Option<String>,
    /// JWKS URL of an external issuer (Clerk); enables RS256 session tokens.
    #[arg(long, env = "AUTH_JWKS_URL")]
    pub auth_jwks_url: Option<String>,
    /// Expected `iss` of external tokens.
    #[arg(long, env = "AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// Accepted `aud` values of external tokens, comma-separated; unset: not checked.
    #[arg(long, env = "AUTH_AUDIENCE", value_delimiter = ',')]
    pub auth_audience: Vec<String>,
    /// Accepted `azp` (authorized parties, Clerk) of external tokens, comma-separated; unset:
    /// not checked, set: a token must name one.
    #[arg(long, env = "AUTH_AUTHORIZED_PARTIES", value_delimiter = ',')]
    pub auth_authorized_parties: Vec<String>,
    /// Claim of external tokens that carries the plan (`free`/`pro`); unset: the plan in the DB.
    #[arg(long, env = "AUTH_PLAN_CLAIM")]
    pub auth_plan_claim: Option<String>,
    /// Lifetime of built-in accounts' tokens (revocable with `signOut`).
    #[arg(long, env = "AUTH_TOKEN_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub auth_token_ttl_secs: u64,
    /// Comma-separated origins allowed by CORS; unset: same origin only.
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// `pretty` or `json` log lines (filter with RUST_LOG).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
    /// How long a WebSocket may stay open without `connection_init` (then closed with 4408).
    #[arg(long, env = "WS_INIT_TIMEOUT_MS", default_value_t = 10_000)]
    pub ws_init_timeout_ms: u64,
    /// Behind a reverse proxy: the header that carries the client's address (e.g.
    /// `X-Forwarded-For`, its last entry is used). Unset: the connection's peer address; the
    /// header is then ignored, as any client can send it.
    #[arg(long, env = "TRUSTED_PROXY_HEADER")]
    pub trusted_proxy_header: Option<axum::http::HeaderName>,
    /// Mutation fields one client address may run per minute (a token bucket of that size).
    #[arg(long, env = "RATE_LIMIT_ADDRESS_MUTATIONS_PER_MINUTE", default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_address_mutations_per_minute: u32,
    /// Mutation fields one signed-in user may run per minute.
    #[arg(long, env = "RATE_LIMIT_USER_MUTATIONS_PER_MINUTE", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_user_mutations_per_minute: u32,
    /// `signUp`s one client address may run per hour.
    #[arg(long, env = "RATE_LIMIT_ADDRESS_SIGN_UPS_PER_HOUR", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_address_sign_ups_per_hour: u32,
    /// `signIn`s one client address may run per minute.
    #[arg(long, env = "RATE_LIMIT_ADDRESS_SIGN_INS_PER_MINUTE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_address_sign_ins_per_minute: u32,
    /// Password hashes (argon2, 19 MiB and a CPU each) computed at once.
    #[arg(long, env = "PASSWORD_HASH_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub password_hash_concurrency: u32,
    /// How long a sign-up or sign-in waits for a hashing slot before it is RATE_LIMITED.
    #[arg(long, env = "PASSWORD_HASH_WAIT_MS", default_value_t = 2_000)]
    pub password_hash_wait_ms: u64,
    /// Highest cost of one GraphQL document: each field costs 1, list fields their page size
    /// times their selection, heavy fields (fragment files, transcripts) more.
    #[arg(long, env = "GRAPHQL_MAX_COMPLEXITY", default_value_t = 10_000)]
    pub graphql_max_complexity: usize,
    /// Deepest nesting of fields in one GraphQL document.
    #[arg(long, env = "GRAPHQL_MAX_DEPTH", default_value_t = 20)]
    pub graphql_max_depth: usize,
    /// Most fields (aliases included, fragments counted where spread) in one GraphQL document.
    #[arg(long, env = "GRAPHQL_MAX_FIELDS", default_value_t = 300)]
    pub graphql_max_fields: usize,
    /// Largest WebSocket message (and frame) in bytes, at most the HTTP body limit (2 MiB);
    /// a larger one closes the socket with 1009.
    #[arg(long, env = "WS_MAX_MESSAGE_BYTES", default_value_t = 256 * 1024)]
    pub ws_max_message_bytes: usize,
    /// Operations (subscriptions, queries) running at once on one WebSocket.
    #[arg(long, env = "WS_MAX_SUBSCRIPTIONS", default_value_t = 32)]
    pub ws_max_subscriptions: usize,
    /// Open WebSockets and SSE streams of one user on this server.
    #[arg(long, env = "WS_MAX_CONNECTIONS_PER_USER", default_value_t = 16)]
    pub ws_max_connections_per_user: usize,
    /// Seconds between checks of an open WebSocket's or SSE stream's session or API key in the
    /// database: one revoked on another server closes its sockets here by the next check.
    #[arg(long, env = "SOCKET_CREDENTIAL_CHECK_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub socket_credential_check_secs: u64,
    /// Seconds between keep-alive comments on an idle SSE stream (`/graphql/stream`).
    #[arg(long, env = "SSE_KEEP_ALIVE_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub sse_keep_alive_secs: u64,
    /// API keys one user may hold (revoked and expired ones do not count).
    #[arg(long, env = "API_KEYS_MAX_PER_USER", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub api_keys_max_per_user: u32,
    /// Webhooks one user may have.
    #[arg(long, env = "WEBHOOKS_MAX_PER_USER", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub webhooks_max_per_user: u32,
    /// Seconds a webhook endpoint has to answer one delivery (1 to 15).
    #[arg(long, env = "WEBHOOK_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=15))]
    pub webhook_timeout_secs: u64,
    /// Let webhooks target loopback, private, link-local and other non-global addresses
    /// (development only: it lets users reach the server's own network).
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,
    /// Multiplies the webhook retry delays and the time after which a failing endpoint is
    /// disabled: 1 is the real schedule (5 s to 10 h, 5 days), tests use far less.
    #[arg(long, env = "WEBHOOK_RETRY_SCALE", default_value_t = 1.0, value_parser = parse_scale)]
    pub webhook_retry_scale: f64,
    /// Directory of the built web client served at `/`.
    #[arg(long, env = "WEB_CLIENT_DIR", default_value = "./web-client")]
    pub web_client_dir: PathBuf,

    /// `gemini`, `openai`, `anthropic`, `offline` or `replay`; unset: gemini when a Gemini key is
    /// set, else offline.
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
    #[arg(long, env = "ANTHROPIC_API_KEY", hide_env_values = true)]
    pub anthropic_api_key: Option<String>,
    #[arg(
        long,
        env = "ANTHROPIC_BASE_URL",
        default_value = crate::agent::provider::anthropic::DEFAULT_ANTHROPIC_BASE_URL
    )]
    pub anthropic_base_url: String,
    #[arg(
        long,
        env = "ANTHROPIC_MODEL",
        default_value = crate::agent::provider::anthropic::DEFAULT_ANTHROPIC_MODEL
    )]
    pub anthropic_model: String,
    /// Recorded transcript (JSON list of model responses) for MODEL_PROVIDER=replay.
    #[arg(long, env = "REPLAY_FILE")]
    pub replay_file: Option<PathBuf>,
    /// Runs executed at once by this process (0: an API-only process that runs none).
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 2)]
    pub worker_concurrency: usize,
    /// Model steps a run may take before it ends with an error.
    #[arg(long, env = "AGENT_MAX_STEPS", default_value_t = 30)]
    pub agent_max_steps: u32,
    /// Wall-clock seconds a run may take before it ends FAILED (its work so far is kept).
    #[arg(long, env = "AGENT_MAX_RUN_SECS", default_value_t = 1800)]
    pub agent_max_run_secs: u64,
    /// Estimated model cost (USD) one run may reach: it stops before its next model call once
    /// it has (its work kept). Unset: no limit.
    #[arg(long, env = "AGENT_MAX_RUN_USD", value_parser = parse_usd)]
    pub agent_max_run_usd: Option<f64>,
    /// Estimated model cost (USD) one user's runs may reach per credit window: then new runs
    /// are refused (SPEND_CAP_REACHED) and a running one stops. Unset: no cap.
    #[arg(long, env = "USER_MAX_SPEND_USD_PER_WINDOW", value_parser = parse_usd)]
    pub user_max_spend_usd_per_window: Option<f64>,
    /// Generations one user may have queued or running at once, over all their projects.
    #[arg(long, env = "MAX_ACTIVE_RUNS_PER_USER", default_value_t = 2)]
    pub max_active_runs_per_user: u32,
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
    /// Bytes of one agent command's output (stdout and stderr together) that stream as events;
    /// the rest is counted in one `truncated` event. The model gets head and tail either way.
    #[arg(long, env = "AGENT_OUTPUT_STREAM_BYTES", default_value_t = 1024 * 1024)]
    pub agent_output_stream_bytes: usize,
    /// Token budget of one model request of the agent (at least 4096); unset: the model's
    /// default. Seen tool results are cut and older turns dropped to stay under it.
    #[arg(long, env = "AGENT_CONTEXT_TOKENS", value_parser = clap::value_parser!(u64).range(crate::agent::context::MIN_CONTEXT_TOKENS..))]
    pub agent_context_tokens: Option<u64>,
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
    /// Jail local sandbox commands (needs root, bubblewrap and passt). Off, or without a
    /// working jail, the server serves one account only.
    #[arg(long, env = "SANDBOX_JAIL", default_value_t = true, action = clap::ArgAction::Set)]
    pub sandbox_jail: bool,
    /// Jailed sandboxes run as host users SANDBOX_UID_BASE + 0..65535.
    #[arg(long, env = "SANDBOX_UID_BASE", default_value_t = crate::sandbox::local::DEFAULT_UID_BASE)]
    pub sandbox_uid_base: u32,
    /// Processes and threads one jailed sandbox may have at once.
    #[arg(long, env = "SANDBOX_MAX_PROCESSES", default_value_t = 1024)]
    pub sandbox_max_processes: u64,
    /// Address space of one jailed process, in MiB.
    #[arg(long, env = "SANDBOX_MAX_MEMORY_MB", default_value_t = 4096)]
    pub sandbox_max_memory_mb: u64,
    /// Memory of all of one jailed sandbox's processes together, in MiB (cgroups, where the
    /// host offers them).
    #[arg(long, env = "SANDBOX_CGROUP_MEMORY_MB", default_value_t = 4096)]
    pub sandbox_cgroup_memory_mb: u64,
    /// Largest file a jailed process may write, in MiB.
    #[arg(long, env = "SANDBOX_MAX_FILE_MB", default_value_t = 1024)]
    pub sandbox_max_file_mb: u64,
    /// Hosts jailed sandboxes may reach (comma-separated `host`, `host:port` or `*.domain`;
    /// port 443 unless given), through the egress proxy. Nothing else is reachable.
    #[arg(
        long,
        env = "SANDBOX_EGRESS_ALLOW",
        default_value = "registry.npmjs.org"
    )]
    pub sandbox_egress_allow: String,
}

/// A finite factor from 0 to 1000.
fn parse_scale(value: &str) -> Result<f64, String> {
    let scale: f64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    if scale.is_finite() && (0.0..=1000.0).contains(&scale) {
        Ok(scale)
    } else {
        Err(format!("{value} is not between 0 and 1000"))
    }
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

    /// PREVIEW_BIND, else BIND's host with the next port. `None` when that is no fixed port
    /// (BIND's port is 0 or 65535, or PREVIEW_BIND's is 0): preview links need one.
    pub fn preview_bind(&self) -> Option<SocketAddr> {
        let bind = match self.preview_bind {
            Some(bind) => bind,
            None if self.bind.port() == 0 => return None,
            None => SocketAddr::new(self.bind.ip(), self.bind.port().checked_add(1)?),
        };
        (bind.port() != 0).then_some(bind)
    }

    /// Where browsers reach local previews: PREVIEW_PUBLIC_URL, else `*.localhost` on
    /// PREVIEW_BIND's port. `None` like [`Config::preview_bind`].
    pub fn preview_origin(&self) -> Option<PreviewOrigin> {
        match &self.preview_public_url {
            Some(origin) => Some(origin.clone()),
            None => Some(PreviewOrigin::localhost(self.preview_bind()?.port())),
        }
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
    fn previews_are_on_the_next_port_of_their_own_origin_by_default() {
        let mut config = Config::defaults();
        assert_eq!(
            config.preview_bind(),
            Some("127.0.0.1:8081".parse().unwrap())
        );
        assert_eq!(
            config.preview_origin(),
            Some(PreviewOrigin::localhost(8081))
        );
        config.bind = "0.0.0.0:3000".parse().unwrap();
        assert_eq!(config.preview_bind(), Some("0.0.0.0:3001".parse().unwrap()));
        assert_eq!(
            config.preview_origin(),
            Some(PreviewOrigin::localhost(3001))
        );
        config.preview_bind = Some("127.0.0.1:9000".parse().unwrap());
        assert_eq!(
            config.preview_origin(),
            Some(PreviewOrigin::localhost(9000))
        );

        let wildcard: PreviewOrigin = "https://{id}.preview.example.com".parse().unwrap();
        config.preview_public_url = Some(wildcard.clone());
        assert_eq!(config.preview_origin(), Some(wildcard));
    }

    #[test]
    fn previews_need_a_fixed_port() {
        let mut config = Config::defaults();
        for bind in ["127.0.0.1:0", "127.0.0.1:65535"] {
            config.bind = bind.parse().unwrap();
            assert_eq!(config.preview_bind(), None, "BIND {bind}");
            assert_eq!(config.preview_origin(), None, "BIND {bind}");
        }
        config.preview_bind = Some("127.0.0.1:0".parse().unwrap());
        assert_eq!(config.preview_bind(), None);
        config.preview_bind = Some("127.0.0.1:8081".parse().unwrap());
        assert_eq!(
            config.preview_bind(),
            Some("127.0.0.1:8081".parse().unwrap())
        );
    }

    #[test]
    fn preview_public_url_must_give_each_sandbox_its_own_origin() {
        let parse = |url: &str| Cli::try_parse_from(["codekraft", "--preview-public-url", url]);
        let cli = parse("https://{id}.preview.example.com").unwrap();
        assert_eq!(
            cli.config.preview_public_url.unwrap().to_string(),
            "https://{id}.preview.example.com"
        );
        let shared = parse("https://previews.example.com")
            .unwrap_err()
            .to_string();
        assert!(shared.contains("first label"), "{shared}");
    }

    #[test]
    fn rate_limits_are_positive_and_the_proxy_header_is_a_header_name() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["codekraft"], args].concat());
        assert!(parse(&["--rate-limit-address-sign-ups-per-hour", "0"]).is_err());
        assert!(parse(&["--password-hash-concurrency", "0"]).is_err());
        assert!(parse(&["--trusted-proxy-header", "not a header"]).is_err());
        assert!(parse(&["--webhook-timeout-secs", "16"]).is_err());
        assert!(parse(&["--webhook-retry-scale", "-1"]).is_err());
        assert!(parse(&["--webhook-retry-scale", "NaN"]).is_err());
        assert_eq!(
            parse(&["--webhook-retry-scale", "0.001"])
                .unwrap()
                .config
                .webhook_retry_scale,
            0.001
        );
        let cli = parse(&["--trusted-proxy-header", "X-Forwarded-For"]).unwrap();
        assert_eq!(
            cli.config.trusted_proxy_header.unwrap().as_str(),
            "x-forwarded-for"
        );
    }

    #[test]
    fn anthropic_keys_and_the_context_budget_floor() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["codekraft"], args].concat());
        let cli = parse(&["--model-provider", "anthropic", "--anthropic-api-key", "k"]).unwrap();
        assert_eq!(
            cli.config.model_provider_kind(),
            ModelProviderKind::Anthropic
        );
        assert_eq!(cli.config.anthropic_model, "claude-sonnet-4-5");
        assert_eq!(cli.config.anthropic_base_url, "https://api.anthropic.com");
        assert_eq!(cli.config.agent_context_tokens, None);
        assert!(parse(&["--agent-context-tokens", "4095"]).is_err());
        let cli = parse(&["--agent-context-tokens", "4096"]).unwrap();
        assert_eq!(cli.config.agent_context_tokens, Some(4096));
    }

    #[test]
    fn budgets_in_usd_are_finite_and_not_negative() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["codekraft"], args].concat());
        assert_eq!(parse(&[]).unwrap().config.agent_max_run_usd, None);
        let cli = parse(&[
            "--agent-max-run-usd",
            "0.5",
            "--user-max-spend-usd-per-window",
            "20",
        ])
        .unwrap();
        assert_eq!(cli.config.agent_max_run_usd, Some(0.5));
        assert_eq!(cli.config.user_max_spend_usd_per_window, Some(20.0));
        for bad in ["-1", "NaN", "inf", "lots"] {
            assert!(parse(&["--agent-max-run-usd", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_ignore_the_environment_and_pick_embedded_parts() {
        let config = Config::defaults();
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert!(config.database_url().starts_with("sqlite://"));
        assert_eq!(config.model_provider_kind(), ModelProviderKind::Offline);
        assert_eq!(config.sandbox_provider_kind(), SandboxProviderKind::Local);
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
