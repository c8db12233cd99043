//! The app under test: the real server on 127.0.0.1:0 with a fresh SQLite file or a fresh
//! PostgreSQL database, fakes only at the network edge (model, sandbox), and GraphQL clients.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use codekraft::agent::provider::{ModelProvider, OfflineProvider};
use codekraft::app::{self, AppBuilder, Server};
use codekraft::config::{Config, SandboxProviderKind};
use codekraft::sandbox::fake::FakeSandboxProvider;
use codekraft::sandbox::local::LocalSandboxProvider;
use serde_json::{json, Value};
use tempfile::TempDir;

use super::client::GqlClient;
use super::ws_client::{self, WsClient, TRANSPORT_WS};

pub const TEST_SECRET: &str = "integration-test-secret-0123456789abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub server: Server,
    pub sandboxes: Arc<FakeSandboxProvider>,
    pub client: GqlClient,
    /// Kept alive for the server's lifetime (the SQLite file, secrets)
    _data_dir: TempDir,
}

type ConfigChange = Box<dyn FnOnce(&mut Config)>;

pub struct TestAppBuilder {
    backend: Backend,
    models: Arc<dyn ModelProvider>,
    sandboxes: Arc<FakeSandboxProvider>,
    configure: Vec<ConfigChange>,
    database_url: Option<String>,
    /// The local backend from this template instead of the fake sandboxes.
    local_template: Option<PathBuf>,
}

impl TestAppBuilder {
    pub fn models(mut self, models: Arc<dyn ModelProvider>) -> Self {
        self.models = models;
        self
    }

    pub fn config(mut self, change: impl FnOnce(&mut Config) + 'static) -> Self {
        self.configure.push(Box::new(change));
        self
    }

    /// Another app's database (`TestApp::database_url`) instead of a fresh one: several
    /// servers on one database, as in production.
    pub fn database_url(mut self, url: String) -> Self {
        self.database_url = Some(url);
        self
    }

    /// The real local sandbox backend from `template` (see `stand_in_next`) instead of the fake
    /// one, with its preview listener on a free port of 127.0.0.1.
    pub fn local_sandboxes(mut self, template: &Path) -> Self {
        self.local_template = Some(template.to_path_buf());
        self
    }

    pub async fn start(self) -> TestApp {
        if std::env::var_os("TEST_LOG").is_some() {
            codekraft::telemetry::init(codekraft::config::LogFormat::Pretty);
        }
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = test_config(self.backend, data_dir.path(), self.database_url).await;
        if let Some(template) = self.local_template.clone() {
            config.sandbox_provider = Some(SandboxProviderKind::Local);
            config.sandbox_template_dir = template;
            config.sandbox_warm_pool = 0;
            config.preview_bind = Some(free_loopback_port());
        }
        for change in self.configure {
            change(&mut config);
        }
        let mut builder = AppBuilder::new(config).models(self.models);
        if self.local_template.is_none() {
            builder = builder.sandboxes(self.sandboxes.clone());
        }
        let state = builder.build().await.expect("building the app");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = app::start(state, listener).await.expect("starting the app");
        TestApp {
            client: GqlClient::new(server.addr),
            server,
            sandboxes: self.sandboxes,
            _data_dir: data_dir,
        }
    }
}

/// Config of a test server: a fresh database unless `database_url` names one, a fixed secret,
/// no build check.
pub async fn test_config(
    backend: Backend,
    data_dir: &std::path::Path,
    database_url: Option<String>,
) -> Config {
    let mut config = Config::defaults();
    config.data_dir = data_dir.to_path_buf();
    config.auth_jwt_secret = Some(TEST_SECRET.to_owned());
    config.agent_check_command = String::new();
    raise_rate_limits(&mut config);
    // Many tests queue runs with no worker to take them; the cap has its own test.
    config.max_active_runs_per_user = 100;
    config.database_url = match (database_url, backend) {
        (Some(url), _) => Some(url),
        (None, Backend::Sqlite) => None,
        (None, Backend::Postgres) => Some(super::postgres::fresh_database_url().await),
    };
    config.web_client_dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web-client");
    config
}

/// Every test client is 127.0.0.1 and many make accounts: the limits must not get in the way
/// (tests/it/rate_limits.rs checks them, and the real defaults).
fn raise_rate_limits(config: &mut Config) {
    const PLENTY: u32 = 1_000_000;
    config.rate_limit_address_mutations_per_minute = PLENTY;
    config.rate_limit_user_mutations_per_minute = PLENTY;
    config.rate_limit_address_sign_ups_per_hour = PLENTY;
    config.rate_limit_address_sign_ins_per_minute = PLENTY;
    // A loaded machine may queue sign-ups for long; that is not what these tests check.
    config.password_hash_wait_ms = 600_000;
}

/// GraphQL requests go through the shared client: `app.gql(…)`, `app.sign_up(…)`, ….
impl std::ops::Deref for TestApp {
    type Target = GqlClient;

    fn deref(&self) -> &GqlClient {
        &self.client
    }
}

impl TestApp {
    pub fn builder(backend: Backend) -> TestAppBuilder {
        TestAppBuilder {
            backend,
            models: Arc::new(OfflineProvider::new()),
            sandboxes: Arc::new(FakeSandboxProvider::new()),
            configure: Vec::new(),
            database_url: None,
            local_template: None,
        }
    }

    pub async fn spawn(backend: Backend) -> Self {
        Self::builder(backend).start().await
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/graphql/ws", self.server.addr)
    }

    /// A graphql-transport-ws connection, acknowledged with `token`.
    pub async fn ws(&self, token: &str) -> WsClient {
        let mut client = ws_client::connect(&self.ws_url(), TRANSPORT_WS).await;
        client
            .init(json!({ "Authorization": format!("Bearer {token}") }))
            .await;
        client
    }

    /// The database this server uses, for another one to share.
    pub fn database_url(&self) -> String {
        self.server.state.config.database_url()
    }

    pub fn db_statements(&self) -> u64 {
        self.server.state.metrics.db_statements()
    }

    /// The local backend of an app started with `local_sandboxes`.
    pub fn local_sandboxes(&self) -> &Arc<LocalSandboxProvider> {
        self.server
            .state
            .local_sandboxes
            .as_ref()
            .expect("the app was started with local_sandboxes")
    }

    /// The preview listener's address, of an app started with `local_sandboxes`.
    pub fn preview_addr(&self) -> SocketAddr {
        self.server
            .state
            .config
            .preview_bind()
            .expect("the app was started with local_sandboxes")
    }
}

/// A port of 127.0.0.1 that was free a moment ago, for a listener the app binds itself.
pub fn free_loopback_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
}

/// The error code of the first error.
pub fn error_code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {response}"))
}

/// Runs a test body once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                ($body)($crate::support::app::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                ($body)($crate::support::app::Backend::Postgres).await
            }
        }
    };
}

/// Creates a project straight through the service layer as a PRO user (no credit limit worth
/// noticing), for tests that need many.
pub async fn seed_project(app: &TestApp, token: &str, n: usize) {
    let me = app.data(Some(token), "{ me { id } }", json!({})).await;
    let user_id = me["me"]["id"].as_str().unwrap().parse().unwrap();
    let state = &app.server.state;
    let viewer = codekraft::services::Viewer {
        user_id,
        plan: codekraft::entity::user::Plan::Pro,
    };
    codekraft::services::project::create_project(
        &state.db,
        state.bus.as_ref(),
        viewer,
        &format!("seeded app {n}"),
        codekraft::services::run::RunLimits {
            max_active: u32::MAX,
            max_spend_usd_per_window: None,
        },
    )
    .await
    .expect("seeding a project");
}

impl TestApp {
    /// Rows in a table, straight from the database (to check what cascades leave behind).
    pub async fn count_rows(&self, table: &str) -> i64 {
        use sea_orm::{ConnectionTrait, Statement};
        let db = &self.server.state.db;
        let row = db
            .query_one(Statement::from_string(
                db.get_database_backend(),
                format!("SELECT COUNT(*) AS n FROM {table}"),
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<i64>("", "n").unwrap()
    }
}
