//! The embedded default backend: one workspace directory per project on this machine.
//!
//! Layout under `{data_dir}/sandboxes/{sandbox_id}/`: `app/` (the app root the model sees),
//! `home/` (HOME and npm cache of the commands), `tmp/`, `dev-server.log`. A workspace is
//! built from the template in a temporary directory and renamed into place, so it is either
//! complete or absent. `node_modules` comes from a shared, once-installed cache
//! (`{cache_dir}/next-js-{hash}/node_modules`) through hard links (see `workspace`).
//!
//! Commands run as `bash -c` in their own process group (see `process`) with a scrubbed
//! environment, inside bubblewrap when it is available (see `jail` and
//! [`LocalSandboxConfig::use_bwrap`]). The dev server (`next dev`) starts lazily on a free
//! port with `basePath` `/preview/{sandbox_id}` and is stopped after
//! [`LocalSandboxConfig::idle_timeout`] without activity.
//!
//! A sandbox's id is its project's id, unless it came from the warm pool (see [`pool`]): then
//! it keeps the id it was started with, because a running `next dev` cannot change its
//! `basePath`. Either way a project keeps its sandbox id, and so its preview URL, for good:
//! a workspace that is gone is rebuilt under the same id.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod files;
mod jail;
mod pool;
mod process;
mod workspace;

use self::files::{run_blocking, AppDir, WorkspaceDir};
use self::jail::{bwrap_args, probe_bwrap, warn_unjailed_once};
use self::process::{kill_group, run_capped, GroupGuard};
use self::workspace::{
    create_workspace, ensure_dependencies, remove_dir_if_exists, remove_stale_staging, write_files,
};
use super::{
    CommandOutput, CommandSpec, FileMap, OutputSink, Sandbox, SandboxError, SandboxProvider,
    MAX_FILE_BYTES, MAX_LISTED_ENTRIES,
};

/// The dev server's output, in the workspace (beside `app/`).
const DEV_SERVER_LOG: &str = "dev-server.log";
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone)]
pub struct LocalSandboxConfig {
    /// Workspaces live in `{data_dir}/sandboxes/{sandbox_id}`.
    pub data_dir: PathBuf,
    /// The Next.js template (`sandbox-templates/next-js`).
    pub template_dir: PathBuf,
    /// Shared dependency installs, `{cache_dir}/next-js-{hash}/node_modules`.
    pub cache_dir: PathBuf,
    /// Where the API server (and its `/preview` proxy) is reached, e.g. `http://127.0.0.1:8080`.
    pub public_base_url: String,
    /// Upper bound for any command's timeout (a `CommandSpec` asking for more gets this).
    pub command_timeout: Duration,
    /// A dev server without activity for this long is stopped (it restarts on demand).
    pub idle_timeout: Duration,
    /// How long `next dev` may take to answer its first HTTP request.
    pub dev_server_start_timeout: Duration,
    /// Bound on the one-time `npm ci` of the template's dependencies.
    pub install_timeout: Duration,
    /// Bound on each file operation in a workspace (read, write, list, remove, restore).
    pub file_timeout: Duration,
    /// Per stream, what a `CommandOutput` keeps (head and tail); the sink gets everything.
    pub output_cap_bytes: usize,
    /// Run commands and the dev server inside bubblewrap when `bwrap` works on this machine.
    /// `false` forces it off (trusted single-user setups, or hosts without user namespaces).
    pub use_bwrap: bool,
    /// Spare workspaces kept with their dev server running and first page compiled, handed to
    /// new projects so their first preview answers at once (0: none).
    pub warm_pool: usize,
}

impl LocalSandboxConfig {
    /// Defaults: template `./sandbox-templates/next-js` (relative to the working directory),
    /// cache `{data_dir}/cache`, 10 min command timeout, 15 min idle, 10 s per file operation,
    /// 16 KiB output cap, bwrap on, no warm pool.
    pub fn new(data_dir: impl Into<PathBuf>, public_base_url: impl Into<String>) -> Self {
        let data_dir = data_dir.into();
        Self {
            cache_dir: data_dir.join("cache"),
            data_dir,
            template_dir: PathBuf::from("./sandbox-templates/next-js"),
            public_base_url: public_base_url.into(),
            command_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(900),
            dev_server_start_timeout: Duration::from_secs(90),
            install_timeout: Duration::from_secs(900),
            file_timeout: Duration::from_secs(10),
            output_cap_bytes: 16 * 1024,
            use_bwrap: true,
            warm_pool: 0,
        }
    }
}

/// State shared by the provider and its sandboxes.
struct Shared {
    config: LocalSandboxConfig,
    /// `Some(path to bwrap)` when commands are jailed.
    bwrap: Option<PathBuf>,
    http: reqwest::Client,
}

struct Inner {
    shared: Arc<Shared>,
    /// Live handles by sandbox id.
    sandboxes: Mutex<HashMap<Uuid, Arc<LocalSandbox>>>,
    pool: pool::WarmPool,
    /// Serialises workspace creation, claims and the one-time dependency install.
    create_lock: tokio::sync::Mutex<()>,
    reaper_started: AtomicBool,
}

/// See the module docs. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct LocalSandboxProvider {
    inner: Arc<Inner>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unavailable(what: impl std::fmt::Display) -> SandboxError {
    SandboxError::Unavailable(what.to_string())
}

impl LocalSandboxProvider {
    pub fn new(config: LocalSandboxConfig) -> Self {
        let bwrap = if config.use_bwrap {
            probe_bwrap()
        } else {
            None
        };
        if bwrap.is_none() {
            warn_unjailed_once(config.use_bwrap);
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a reqwest client without TLS roots or proxies always builds");
        remove_stale_staging(&config.data_dir.join("sandboxes"));
        remove_stale_staging(&config.cache_dir);
        pool::remove_unclaimed(&config.data_dir.join("sandboxes"));
        Self {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared {
                    config,
                    bwrap,
                    http,
                }),
                sandboxes: Mutex::new(HashMap::new()),
                pool: pool::WarmPool::default(),
                create_lock: tokio::sync::Mutex::new(()),
                reaper_started: AtomicBool::new(false),
            }),
        }
    }

    pub fn config(&self) -> &LocalSandboxConfig {
        &self.inner.shared.config
    }

    /// Whether commands run inside bubblewrap.
    pub fn is_jailed(&self) -> bool {
        self.inner.shared.bwrap.is_some()
    }

    /// The workspace directory of a sandbox (it may not exist).
    pub fn workspace_dir(&self, sandbox_id: Uuid) -> PathBuf {
        self.inner.shared.workspace_dir(&sandbox_id.to_string())
    }

    /// The sandbox a project was given from the warm pool: `{data_dir}/sandboxes/{project_id}`
    /// is then a symlink to its workspace, so `/preview/{project_id}/` finds it too.
    pub fn pooled_sandbox_of(&self, project_id: Uuid) -> Option<Uuid> {
        let target = std::fs::read_link(self.workspace_dir(project_id)).ok()?;
        Uuid::parse_str(target.file_name()?.to_str()?).ok()
    }

    /// The live handle of a sandbox, attaching to a workspace left on disk by an earlier
    /// server process. `NotFound` when there is no such workspace (or it is still in the pool,
    /// or `sandbox_id` names a project's link to a pooled one).
    pub async fn sandbox(&self, sandbox_id: Uuid) -> Result<Arc<LocalSandbox>, SandboxError> {
        if let Some(sandbox) = lock(&self.inner.sandboxes).get(&sandbox_id).cloned() {
            return Ok(sandbox);
        }
        let dir = self.workspace_dir(sandbox_id);
        let is_workspace = tokio::fs::symlink_metadata(&dir)
            .await
            .is_ok_and(|meta| meta.is_dir());
        if !is_workspace
            || !tokio::fs::try_exists(dir.join("app")).await?
            || pool::is_pooled(&dir).await?
        {
            return Err(SandboxError::NotFound(format!("no sandbox {sandbox_id}")));
        }
        self.attach(sandbox_id, &FileMap::new()).await
    }

    /// Stops every dev server, and removes the pool's spare workspaces (the claimed ones stay).
    /// Call on server shutdown.
    pub async fn shutdown(&self) {
        let sandboxes: Vec<_> = lock(&self.inner.sandboxes).values().cloned().collect();
        for sandbox in sandboxes {
            sandbox.stop_dev_server().await;
        }
        self.inner.pool.drain().await;
    }

    /// Creates the dependency cache now instead of on the first `connect` (e.g. at startup),
    /// then starts filling the warm pool in the background.
    pub async fn warm_up(&self) -> Result<PathBuf, SandboxError> {
        let deps = {
            let _guard = self.inner.create_lock.lock().await;
            ensure_dependencies(&self.inner.shared).await?
        };
        self.refill_pool_in_background();
        Ok(deps)
    }

    async fn attach(
        &self,
        sandbox_id: Uuid,
        restore: &FileMap,
    ) -> Result<Arc<LocalSandbox>, SandboxError> {
        let _guard = self.inner.create_lock.lock().await;
        if let Some(sandbox) = lock(&self.inner.sandboxes).get(&sandbox_id).cloned() {
            return Ok(sandbox);
        }
        let shared = &self.inner.shared;
        let workspace = self.workspace_dir(sandbox_id);
        if tokio::fs::try_exists(workspace.join("app")).await? {
            tracing::debug!(%sandbox_id, "reusing sandbox workspace");
            write_files(shared, &workspace, restore, None).await?;
        } else {
            create_workspace(shared, &workspace, restore, false).await?;
        }
        let sandbox = self.handle(sandbox_id);
        lock(&self.inner.sandboxes).insert(sandbox_id, sandbox.clone());
        Ok(sandbox)
    }

    /// A handle on the workspace of `sandbox_id` (not registered anywhere yet).
    fn handle(&self, sandbox_id: Uuid) -> Arc<LocalSandbox> {
        let workspace = self.workspace_dir(sandbox_id);
        Arc::new(LocalSandbox {
            id: sandbox_id,
            id_text: sandbox_id.to_string(),
            app: workspace.join("app"),
            workspace,
            shared: self.inner.shared.clone(),
            provider: Arc::downgrade(&self.inner),
            dev: tokio::sync::Mutex::new(None),
            activity: Mutex::new(Activity::now()),
            busy: AtomicUsize::new(0),
            killed: AtomicBool::new(false),
        })
    }

    /// A task that stops idle dev servers; it ends when the provider is dropped.
    fn start_reaper(&self) {
        if self.inner.reaper_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let idle = self.config().idle_timeout;
        let tick = (idle / 4).clamp(Duration::from_millis(200), Duration::from_secs(10));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(inner) = weak.upgrade() else { return };
                let sandboxes: Vec<_> = lock(&inner.sandboxes).values().cloned().collect();
                drop(inner);
                for sandbox in sandboxes {
                    sandbox.stop_dev_server_if_idle(idle).await;
                }
            }
        });
    }
}

#[async_trait]
impl SandboxProvider for LocalSandboxProvider {
    /// The stored sandbox if its workspace exists; else, for a project without one, a sandbox
    /// from the warm pool; else a new workspace under the stored id (so the preview URL stays)
    /// or, for a new project, under the project's id.
    async fn connect(
        &self,
        project_id: Uuid,
        existing_id: Option<&str>,
        restore: &FileMap,
    ) -> Result<Arc<dyn Sandbox>, SandboxError> {
        let stored = existing_id.and_then(|existing| Uuid::parse_str(existing).ok());
        if let (Some(existing), None) = (existing_id, stored) {
            tracing::debug!(%project_id, existing, "stored sandbox id is not a local one");
        }
        let linked = self.pooled_sandbox_of(project_id);
        let sandbox_id = stored.or(linked).unwrap_or(project_id);
        match self.sandbox(sandbox_id).await {
            Ok(sandbox) => {
                sandbox.touch();
                return Ok(sandbox);
            }
            Err(SandboxError::NotFound(_)) => {}
            Err(err) => return Err(err),
        }
        if stored.is_none() && linked.is_none() {
            if let Some(sandbox) = self.claim_pooled(project_id, restore).await? {
                return Ok(sandbox);
            }
        }
        let sandbox = self.attach(sandbox_id, restore).await?;
        Ok(sandbox)
    }

    async fn destroy(&self, project_id: Uuid, sandbox_id: &str) -> Result<(), SandboxError> {
        let sandbox_id = Uuid::parse_str(sandbox_id).unwrap_or(project_id);
        if sandbox_id != project_id {
            // The project's link to its pooled sandbox.
            let _ = tokio::fs::remove_file(self.workspace_dir(project_id)).await;
        }
        match self.sandbox(sandbox_id).await {
            Ok(sandbox) => sandbox.kill().await,
            Err(SandboxError::NotFound(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}

impl Shared {
    fn workspace_dir(&self, id: &str) -> PathBuf {
        self.config.data_dir.join("sandboxes").join(id)
    }

    /// The scrubbed environment of every sandbox process. Nothing of the server's own
    /// environment is passed on.
    fn base_env(&self, workspace: &Path) -> Vec<(String, String)> {
        let app = workspace.join("app");
        let home = workspace.join("home");
        vec![
            (
                "PATH".into(),
                format!("{}:{SYSTEM_PATH}", app.join("node_modules/.bin").display()),
            ),
            ("HOME".into(), home.display().to_string()),
            ("TMPDIR".into(), workspace.join("tmp").display().to_string()),
            ("LANG".into(), "C.UTF-8".into()),
            ("TERM".into(), "dumb".into()),
            (
                "npm_config_cache".into(),
                home.join(".npm").display().to_string(),
            ),
            ("npm_config_update_notifier".into(), "false".into()),
            ("npm_config_fund".into(), "false".into()),
            ("npm_config_audit".into(), "false".into()),
            ("NEXT_TELEMETRY_DISABLED".into(), "1".into()),
        ]
    }

    /// `bash -c script` (or `sh -c`), jailed when bubblewrap is in use, in its own process group.
    fn command(
        &self,
        workspace: &Path,
        cwd: &Path,
        script: &str,
        env: &[(String, String)],
    ) -> Command {
        let shell = if Path::new("/bin/bash").exists() {
            "/bin/bash"
        } else {
            "/bin/sh"
        };
        let mut command = match &self.bwrap {
            Some(bwrap) => {
                let mut command = Command::new(bwrap);
                command.args(bwrap_args(workspace, cwd));
                command.arg("--").arg(shell);
                command
            }
            None => {
                let mut command = Command::new(shell);
                command.current_dir(cwd);
                command
            }
        };
        command
            .arg("-c")
            .arg(script)
            .env_clear()
            .envs(self.base_env(workspace))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        command
    }
}

#[derive(Debug, Clone, Copy)]
struct Activity {
    last: Instant,
    keep_until: Instant,
}

impl Activity {
    fn now() -> Self {
        let now = Instant::now();
        Self {
            last: now,
            keep_until: now,
        }
    }
}

struct DevServer {
    child: Child,
    port: u16,
    pgid: Option<i32>,
}

impl Drop for DevServer {
    fn drop(&mut self) {
        kill_group(self.pgid);
    }
}

pub struct LocalSandbox {
    id: Uuid,
    id_text: String,
    workspace: PathBuf,
    app: PathBuf,
    shared: Arc<Shared>,
    provider: Weak<Inner>,
    dev: tokio::sync::Mutex<Option<DevServer>>,
    activity: Mutex<Activity>,
    /// Proxied requests and tunnels in flight; a busy sandbox is never idle.
    busy: AtomicUsize,
    killed: AtomicBool,
}

/// Keeps a sandbox from being considered idle while it lives (a proxied request or websocket).
pub struct ActivityGuard(Arc<LocalSandbox>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl LocalSandbox {
    /// Marks the sandbox busy until the guard is dropped.
    pub fn hold(self: &Arc<Self>) -> ActivityGuard {
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.touch();
        ActivityGuard(self.clone())
    }

    pub fn sandbox_id(&self) -> Uuid {
        self.id
    }

    /// The app root on disk.
    pub fn app_dir(&self) -> &Path {
        &self.app
    }

    pub fn touch(&self) {
        lock(&self.activity).last = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        if self.busy.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        let activity = *lock(&self.activity);
        let now = Instant::now();
        if now < activity.keep_until {
            return Duration::ZERO;
        }
        now.saturating_duration_since(activity.last)
    }

    /// Runs `op` on the app root, off the async threads and within the file timeout.
    async fn with_app<T: Send + 'static>(
        &self,
        op: impl FnOnce(&AppDir) -> Result<T, SandboxError> + Send + 'static,
    ) -> Result<T, SandboxError> {
        let workspace = self.workspace.clone();
        run_blocking(self.shared.config.file_timeout, move || {
            op(&AppDir::open(&workspace)?)
        })
        .await
    }

    /// Runs `op` on the workspace directory, like [`Self::with_app`].
    async fn with_workspace<T: Send + 'static>(
        &self,
        op: impl FnOnce(&WorkspaceDir) -> Result<T, SandboxError> + Send + 'static,
    ) -> Result<T, SandboxError> {
        let workspace = self.workspace.clone();
        run_blocking(self.shared.config.file_timeout, move || {
            op(&WorkspaceDir::open(&workspace)?)
        })
        .await
    }

    /// The last bytes of the dev server's output, for an error message.
    async fn dev_server_log_tail(&self) -> String {
        self.with_workspace(|workspace| workspace.read_tail(DEV_SERVER_LOG, 4096))
            .await
            .unwrap_or_else(|err| format!("(no log: {err})"))
    }

    fn check_alive(&self) -> Result<(), SandboxError> {
        if self.killed.load(Ordering::SeqCst) {
            return Err(SandboxError::NotFound(format!(
                "sandbox {} was killed",
                self.id_text
            )));
        }
        Ok(())
    }

    /// Whether a dev server process is currently held for this sandbox.
    pub async fn has_dev_server(&self) -> bool {
        self.dev.lock().await.is_some()
    }

    /// Stops the dev server if it runs (it starts again on demand).
    pub async fn stop_dev_server(&self) {
        if let Some(mut server) = self.dev.lock().await.take() {
            kill_group(server.pgid);
            let _ = server.child.wait().await;
        }
    }

    /// Stops the dev server when nothing touched the sandbox for `idle`. Decided under the
    /// dev server lock, so a server that is starting (or just started) is never taken for idle.
    async fn stop_dev_server_if_idle(&self, idle: Duration) {
        let mut dev = self.dev.lock().await;
        if dev.is_some() && self.idle_for() >= idle {
            tracing::info!(sandbox_id = %self.id, "stopping idle dev server");
            if let Some(mut server) = dev.take() {
                kill_group(server.pgid);
                let _ = server.child.wait().await;
            }
        }
    }

    /// Starts `next dev` if it is not running, waits until it answers HTTP, returns its port.
    /// Counts as activity; the provider's idle reaper runs from the first dev server on.
    pub async fn ensure_dev_server(&self) -> Result<u16, SandboxError> {
        self.check_alive()?;
        let mut dev = self.dev.lock().await;
        self.touch();
        if let Some(server) = dev.as_mut() {
            if server.child.try_wait()?.is_none() {
                return Ok(server.port);
            }
            tracing::warn!(sandbox_id = %self.id, "dev server exited; restarting");
            *dev = None;
        }
        let server = self.start_dev_server().await?;
        let port = server.port;
        *dev = Some(server);
        self.touch();
        drop(dev);
        if let Some(inner) = self.provider.upgrade() {
            LocalSandboxProvider { inner }.start_reaper();
        }
        Ok(port)
    }

    fn base_path(&self) -> String {
        format!("/preview/{}", self.id)
    }

    async fn start_dev_server(&self) -> Result<DevServer, SandboxError> {
        let started = Instant::now();
        let port = free_port()?;
        // A dev server killed earlier may leave its lock behind (next 16 refuses to start).
        let _ = self.with_app(|app| app.remove(".next/dev/lock")).await;
        let log = self
            .with_workspace(|workspace| workspace.create_log(DEV_SERVER_LOG))
            .await?;
        let mut allowed = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        if let Ok(url) = reqwest::Url::parse(&self.shared.config.public_base_url) {
            if let Some(host) = url.host_str() {
                allowed.push(host.to_owned());
            }
        }
        let env = vec![
            ("NEXT_BASE_PATH".to_owned(), self.base_path()),
            ("NEXT_ALLOWED_DEV_ORIGINS".to_owned(), allowed.join(",")),
            ("PORT".to_owned(), port.to_string()),
            ("HOSTNAME".to_owned(), "127.0.0.1".to_owned()),
        ];
        let script = format!(
            "exec node node_modules/next/dist/bin/next dev --hostname 127.0.0.1 --port {port}"
        );
        let mut command = self
            .shared
            .command(&self.workspace, &self.app, &script, &env);
        command.stdout(log.try_clone()?).stderr(log);
        let mut child = command.spawn()?;
        let pgid = child.id().and_then(|id| i32::try_from(id).ok());
        // Kills the group if we give up (error, or this future is dropped) before it is ready.
        let mut guard = GroupGuard(pgid);
        let deadline = started + self.shared.config.dev_server_start_timeout;
        let url = format!("http://127.0.0.1:{port}{}", self.base_path());
        loop {
            if let Some(status) = child.try_wait()? {
                let tail = self.dev_server_log_tail().await;
                return Err(unavailable(format!(
                    "dev server exited with {status} before answering:\n{tail}"
                )));
            }
            if Instant::now() >= deadline {
                let tail = self.dev_server_log_tail().await;
                return Err(unavailable(format!(
                    "dev server did not answer within {:?}:\n{tail}",
                    self.shared.config.dev_server_start_timeout
                )));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.shared.http.get(&url).timeout(left).send().await {
                    Ok(_) => break,
                    Err(err) => tracing::debug!(%err, "dev server not ready yet"),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!(
            sandbox_id = %self.id,
            port,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "dev server ready"
        );
        guard.0 = None;
        Ok(DevServer { child, port, pgid })
    }
}

fn free_port() -> Result<u16, SandboxError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

#[async_trait]
impl Sandbox for LocalSandbox {
    fn id(&self) -> &str {
        &self.id_text
    }

    async fn write_file(&self, path: &str, content: &str) -> Result<(), SandboxError> {
        self.check_alive()?;
        self.touch();
        let (path, content) = (path.to_owned(), content.to_owned());
        self.with_app(move |app| app.write(&path, content.as_bytes(), None))
            .await
    }

    async fn remove_file(&self, path: &str) -> Result<(), SandboxError> {
        self.check_alive()?;
        self.touch();
        let path = path.to_owned();
        self.with_app(move |app| app.remove(&path)).await
    }

    async fn read_file(&self, path: &str) -> Result<String, SandboxError> {
        self.check_alive()?;
        let path = path.to_owned();
        let bytes = self
            .with_app(move |app| app.read(&path, MAX_FILE_BYTES))
            .await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn list_files(&self, dir: &str) -> Result<Vec<String>, SandboxError> {
        self.check_alive()?;
        let dir = dir.to_owned();
        self.with_app(move |app| app.list(&dir, MAX_LISTED_ENTRIES))
            .await
    }

    async fn run_command(
        &self,
        spec: CommandSpec,
        sink: OutputSink<'_>,
        cancel: CancellationToken,
    ) -> Result<CommandOutput, SandboxError> {
        self.check_alive()?;
        self.touch();
        // Checked below the app root, then handed to the jail as a path: inside the jail it
        // resolves among what the jail sees, whatever a command does to it meanwhile.
        let cwd = spec.cwd.clone().unwrap_or_default();
        let cwd = self
            .app
            .join(self.with_app(move |app| app.require_dir(&cwd)).await?);
        let timeout = spec.timeout.min(self.shared.config.command_timeout);
        let mut command = self
            .shared
            .command(&self.workspace, &cwd, &spec.command, &spec.env);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let result = run_capped(
            command,
            timeout,
            self.shared.config.output_cap_bytes,
            sink,
            cancel,
        )
        .await;
        self.touch();
        result
    }

    async fn preview_url(&self) -> Result<String, SandboxError> {
        self.ensure_dev_server().await?;
        let base = self.shared.config.public_base_url.trim_end_matches('/');
        Ok(format!("{base}{}/", self.base_path()))
    }

    async fn extend_lifetime(&self, by: Duration) -> Result<(), SandboxError> {
        self.check_alive()?;
        let mut activity = lock(&self.activity);
        activity.last = Instant::now();
        activity.keep_until = activity.keep_until.max(Instant::now() + by);
        Ok(())
    }

    /// Stops the dev server and deletes the workspace; a later `connect` rebuilds it from the
    /// template and `restore`.
    async fn kill(&self) -> Result<(), SandboxError> {
        self.killed.store(true, Ordering::SeqCst);
        self.stop_dev_server().await;
        if let Some(inner) = self.provider.upgrade() {
            let _guard = inner.create_lock.lock().await;
            {
                let mut sandboxes = lock(&inner.sandboxes);
                if sandboxes
                    .get(&self.id)
                    .is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), self))
                {
                    sandboxes.remove(&self.id);
                }
            }
            remove_dir_if_exists(&self.workspace).await?;
        } else {
            remove_dir_if_exists(&self.workspace).await?;
        }
        Ok(())
    }
}
