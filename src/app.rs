//! The application: state shared by every handler and worker, the router, and `serve`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::agent::provider::{
    AnthropicConfig, AnthropicProvider, GeminiConfig, GeminiProvider, ModelProvider,
    OfflineProvider, OpenAiCompatProvider, OpenAiConfig, ReplayProvider,
};
use crate::auth::{AuthConfig, Authenticator, PasswordHashing};
use crate::config::{Config, ModelProviderKind, SandboxProviderKind};
use crate::events::{EventBus, EventHub, InProcessBus, PostgresBus, DEFAULT_FEED_CAPACITY};
use crate::sandbox::e2b::{E2bConfig, E2bSandboxProvider};
use crate::sandbox::egress;
use crate::sandbox::local::{JailLimits, LocalSandboxConfig, LocalSandboxProvider};
use crate::sandbox::SandboxProvider;
use crate::services::limit::SignInLimiter;
use crate::services::rate_limit::{RateLimits, FORGET_IDLE_EVERY};
use crate::services::socket::SocketRegistry;

/// Counters exposed at `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub db_statements: AtomicU64,
}

impl Metrics {
    pub fn db_statements(&self) -> u64 {
        self.db_statements.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub config: Arc<Config>,
    pub bus: Arc<dyn EventBus>,
    /// Live events of the projects watched here, read once per batch for all their subscribers.
    pub events: Arc<EventHub>,
    pub auth: Authenticator,
    pub sandboxes: Arc<dyn SandboxProvider>,
    pub models: Arc<dyn ModelProvider>,
    pub metrics: Arc<Metrics>,
    /// Failed sign-ins per email, counted in the database.
    pub sign_in_limiter: SignInLimiter,
    /// Token buckets on mutations, per client address and per user.
    pub rate_limits: Arc<RateLimits>,
    /// The bound on argon2 hashes at once.
    pub password_hashing: PasswordHashing,
    /// Open WebSockets per user and per session.
    pub sockets: SocketRegistry,
    /// The local sandbox backend, when it is the one in use: its previews are proxied.
    pub local_sandboxes: Option<Arc<LocalSandboxProvider>>,
    /// Cancelled when the server shuts down: workers and listeners stop on it.
    pub shutdown: CancellationToken,
}

/// Opens the database (creating the SQLite file's folder), counting statements.
pub async fn connect_database(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<DatabaseConnection> {
    let url = config.database_url();
    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
    }
    let mut options = ConnectOptions::new(url);
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        // Every pooled SQLite connection: cascading foreign keys, readers that do not block
        // the writer, and a busy writer waited for rather than failed on.
        .map_sqlx_sqlite_opts(|sqlite| {
            sqlite
                .foreign_keys(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10))
        });
    let mut db = Database::connect(options)
        .await
        .context("connecting to the database")?;
    let counter = metrics.clone();
    db.set_metric_callback(move |_| {
        counter.db_statements.fetch_add(1, Ordering::Relaxed);
    });
    Ok(db)
}

/// Builds the state from config; tests swap the network-edge parts (model, sandbox) in.
pub struct AppBuilder {
    config: Config,
    sandboxes: Option<Arc<dyn SandboxProvider>>,
    models: Option<Arc<dyn ModelProvider>>,
}

impl AppBuilder {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            sandboxes: None,
            models: None,
        }
    }

    pub fn sandboxes(mut self, sandboxes: Arc<dyn SandboxProvider>) -> Self {
        self.sandboxes = Some(sandboxes);
        self
    }

    pub fn models(mut self, models: Arc<dyn ModelProvider>) -> Self {
        self.models = Some(models);
        self
    }

    /// Connects, migrates and assembles the state.
    pub async fn build(self) -> anyhow::Result<AppState> {
        let config = self.config;
        anyhow::ensure!(
            config.ws_max_message_bytes <= crate::graphql::http::MAX_BODY_BYTES,
            "WS_MAX_MESSAGE_BYTES may be at most the HTTP body limit ({} bytes)",
            crate::graphql::http::MAX_BODY_BYTES
        );
        let metrics = Arc::new(Metrics::default());
        let db = connect_database(&config, &metrics).await?;
        migrate(&db).await?;
        let shutdown = CancellationToken::new();
        let bus: Arc<dyn EventBus> = match db.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => Arc::new(
                PostgresBus::start(db.get_postgres_connection_pool().clone(), shutdown.clone())
                    .await
                    .context("listening for events")?,
            ),
            _ => Arc::new(InProcessBus::new()),
        };
        let events = EventHub::new(db.clone(), DEFAULT_FEED_CAPACITY);
        events.start(bus.as_ref(), shutdown.clone());
        let jwt_secret = match &config.auth_jwt_secret {
            Some(secret) if !secret.is_empty() => secret.clone(),
            _ => crate::auth::load_or_create_secret(&config.data_dir)
                .context("loading the JWT secret")?,
        };
        let auth_config = AuthConfig {
            jwt_secret,
            jwks_url: config.auth_jwks_url.clone(),
            issuer: config.auth_issuer.clone(),
            plan_claim: config.auth_plan_claim.clone(),
            token_ttl: Duration::from_secs(config.auth_token_ttl_secs),
            authorized_parties: config.auth_authorized_parties.clone(),
            audience: config.auth_audience.clone(),
        };
        auth_config.validate().map_err(anyhow::Error::msg)?;
        let auth = Authenticator::new(auth_config);
        let (sandboxes, local_sandboxes) = match self.sandboxes {
            Some(sandboxes) => (sandboxes, None),
            None => sandbox_provider_from_config(&config)?,
        };
        let models = match self.models {
            Some(models) => models,
            None => model_provider_from_config(&config)?,
        };
        let password_hashing = PasswordHashing::new(
            usize::try_from(config.password_hash_concurrency).unwrap_or(1),
            Duration::from_millis(config.password_hash_wait_ms),
        );
        let sockets = SocketRegistry::new(config.ws_max_connections_per_user);
        Ok(AppState {
            db,
            rate_limits: Arc::new(RateLimits::from_config(&config)),
            password_hashing,
            config: Arc::new(config),
            bus,
            events,
            auth,
            sandboxes,
            models,
            metrics,
            sign_in_limiter: SignInLimiter::default(),
            sockets,
            local_sandboxes,
            shutdown,
        })
    }
}

fn model_provider_from_config(config: &Config) -> anyhow::Result<Arc<dyn ModelProvider>> {
    let timeout = Duration::from_secs(120);
    Ok(match config.model_provider_kind() {
        ModelProviderKind::Gemini => {
            let key = config
                .gemini_key()
                .context("MODEL_PROVIDER=gemini needs GEMINI_API_KEY")?;
            let mut gemini = GeminiConfig::new(key);
            gemini.model = config.gemini_model.clone();
            gemini.base_url = config.gemini_base_url.clone();
            gemini.timeout = timeout;
            Arc::new(GeminiProvider::new(gemini)?)
        }
        ModelProviderKind::Openai => {
            let mut openai = OpenAiConfig::new(&config.openai_base_url, &config.openai_model);
            openai.api_key = config.openai_api_key.clone().filter(|key| !key.is_empty());
            Arc::new(OpenAiCompatProvider::new(openai)?)
        }
        ModelProviderKind::Anthropic => {
            let key = config
                .anthropic_api_key
                .clone()
                .filter(|key| !key.is_empty())
                .context("MODEL_PROVIDER=anthropic needs ANTHROPIC_API_KEY")?;
            let mut anthropic = AnthropicConfig::new(key);
            anthropic.model = config.anthropic_model.clone();
            anthropic.base_url = config.anthropic_base_url.clone();
            anthropic.timeout = timeout;
            Arc::new(AnthropicProvider::new(anthropic)?)
        }
        ModelProviderKind::Replay => {
            let file = config
                .replay_file
                .as_ref()
                .context("MODEL_PROVIDER=replay needs REPLAY_FILE")?;
            Arc::new(ReplayProvider::from_file(file)?)
        }
        ModelProviderKind::Offline => {
            tracing::warn!("no model configured: generations come from the offline provider");
            Arc::new(OfflineProvider::new())
        }
    })
}

/// Why the preview listener of local sandboxes has no address.
const NO_PREVIEW_PORT: &str =
    "local previews need PREVIEW_BIND with a fixed port (BIND's port + 1 is not one)";

type SandboxProviders = (Arc<dyn SandboxProvider>, Option<Arc<LocalSandboxProvider>>);

fn sandbox_provider_from_config(config: &Config) -> anyhow::Result<SandboxProviders> {
    match config.sandbox_provider_kind() {
        SandboxProviderKind::Local => {
            let origin = config.preview_origin().context(NO_PREVIEW_PORT)?;
            let mut local = LocalSandboxConfig::new(&config.data_dir, origin);
            local.template_dir = config.sandbox_template_dir.clone();
            if let Some(cache) = &config.sandbox_cache_dir {
                local.cache_dir = cache.clone();
            }
            local.command_timeout = config.command_timeout();
            local.file_timeout = config.file_timeout();
            local.idle_timeout = Duration::from_secs(config.sandbox_idle_secs);
            local.warm_pool = config.sandbox_warm_pool;
            local.use_jail = config.sandbox_jail;
            local.uid_base = config.sandbox_uid_base;
            local.limits = JailLimits {
                max_processes: config.sandbox_max_processes,
                max_memory_bytes: config.sandbox_max_memory_mb << 20,
                max_file_bytes: config.sandbox_max_file_mb << 20,
                max_sandbox_memory_bytes: config.sandbox_cgroup_memory_mb << 20,
            };
            local.egress_allow = egress::parse_rules(&config.sandbox_egress_allow)
                .map_err(|err| anyhow::anyhow!("SANDBOX_EGRESS_ALLOW: {err}"))?;
            let provider = Arc::new(LocalSandboxProvider::new(local));
            Ok((provider.clone(), Some(provider)))
        }
        SandboxProviderKind::E2b => {
            let mut e2b = E2bConfig::new(config.e2b_api_key.clone().unwrap_or_default());
            e2b.template = config.e2b_template.clone();
            e2b.domain = config.e2b_domain.clone();
            e2b.api_url = config.e2b_api_url.clone();
            e2b.envd_url = config.e2b_envd_url.clone();
            e2b.sandbox_timeout = Duration::from_secs(config.sandbox_timeout_secs);
            e2b.command_timeout = config.command_timeout();
            e2b.file_timeout = config.file_timeout();
            Ok((Arc::new(E2bSandboxProvider::new(e2b)?), None))
        }
    }
}

pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    use migration::MigratorTrait;
    migration::Migrator::up(db, None)
        .await
        .context("running migrations")
}

/// A running server: its address, and a handle to stop it.
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub state: AppState,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The PREVIEW_BIND listener of local sandboxes.
    previews: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.state.shutdown.cancel();
        self.task.await??;
        if let Some(previews) = self.previews {
            previews.await??;
        }
        if let Some(local) = &self.state.local_sandboxes {
            // Dev servers stop with us; workspaces stay for the next start.
            local.shutdown().await;
        }
        Ok(())
    }
}

/// Binds `listener` (and the preview listener of local sandboxes) and serves the API, the web
/// client, previews and the workers until `state.shutdown`.
pub async fn start(state: AppState, listener: TcpListener) -> anyhow::Result<Server> {
    let addr = listener.local_addr()?;
    let preview_listener = match &state.local_sandboxes {
        Some(local) => {
            let bind = state.config.preview_bind().context(NO_PREVIEW_PORT)?;
            let listener = TcpListener::bind(bind)
                .await
                .with_context(|| format!("binding PREVIEW_BIND {bind}"))?;
            tracing::info!(%bind, origin = %local.config().preview_origin, "previews are listening");
            Some((listener, local.clone()))
        }
        None => None,
    };
    let shutdown = state.shutdown.clone();
    let previews = preview_listener
        .map(|(listener, local)| serve(listener, crate::http::preview::router(local), &shutdown));
    crate::jobs::start_workers(state.clone());
    crate::webhook::start_delivery_worker(
        state.db.clone(),
        state.bus.as_ref(),
        crate::webhook::DeliverySettings::from_config(&state.config),
        shutdown.clone(),
    )
    .context("starting webhook deliveries")?;
    tokio::spawn(forget_idle_buckets(
        state.rate_limits.clone(),
        shutdown.clone(),
    ));
    if let Some(local) = state.local_sandboxes.clone() {
        // The template's one-time npm install, before the first generation needs it.
        tokio::spawn(async move {
            if let Err(err) = local.warm_up().await {
                tracing::warn!(%err, "could not prepare the sandbox template");
            }
        });
    }
    let task = serve(listener, crate::http::router(state.clone()), &shutdown);
    tracing::info!(%addr, "CodeKraft is listening");
    Ok(Server {
        addr,
        state,
        task,
        previews,
    })
}

async fn forget_idle_buckets(limits: Arc<RateLimits>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(FORGET_IDLE_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => limits.forget_idle(),
            () = shutdown.cancelled() => return,
        }
    }
}

fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        // The peer address is the client's (or the proxy's: see TRUSTED_PROXY_HEADER).
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        // Small writes (an event to a subscriber) go out at once, not after the peer's
        // delayed ACK.
        let listener = listener.tap_io(|tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(%err, "could not set TCP_NODELAY");
            }
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    })
}
