//! The embedded default backend: one workspace directory per project on this machine.
//!
//! Layout under `{data_dir}/sandboxes/{sandbox_id}/`: `app/` (the app root the model sees),
//! `home/` (HOME and npm cache of the commands), `tmp/`, `dev-server.log`. A workspace is
//! built from the template in a temporary directory and renamed into place, so it is either
//! complete or absent. `node_modules` comes from a shared, once-installed cache
//! (`{cache_dir}/next-js-{hash}/node_modules`) through hard links (see `workspace`).
//!
//! Commands run as `bash -c` in their own process group (see `process`) with a scrubbed
//! environment, inside the jail when this machine can build one (see `jail` and
//! [`LocalSandboxConfig::use_jail`]). The dev server (`next dev`) starts lazily on a free
//! port with `basePath` `/preview/{sandbox_id}` and is stopped after
//! [`LocalSandboxConfig::idle_timeout`] without activity. Browsers reach it through the preview
//! listener, on an origin of the sandbox's own (see [`PreviewOrigin`]).
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
mod preview_origin;
mod process;
mod workspace;

pub use self::jail::JailLimits;
pub use self::preview_origin::{InvalidPreviewOrigin, PreviewOrigin};

use self::files::{run_blocking, AppDir, FileOwner, WorkspaceDir};
use self::jail::{warn_unjailed, Jail, Netns};
use self::process::{kill_group, run_capped, GroupGuard};
use self::workspace::{
    create_workspace, ensure_dependencies, remove_dir_if_exists, remove_stale_staging, write_files,
};
use super::egress::{EgressProxy, EgressRule};
use super::{
    CommandOutput, CommandSpec, FileMap, OutputSink, Sandbox, SandboxError, SandboxIsolation,
    SandboxProvider, MAX_FILE_BYTES, MAX_LISTED_ENTRIES,
};

/// The dev server's output, in the workspace (beside `app/`).
const DEV_SERVER_LOG: &str = "dev-server.log";
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Far above the ids of real users and of the usual subordinate id ranges.
pub const DEFAULT_UID_BASE: u32 = 1_800_000_000;

#[derive(Debug, Clone)]
pub struct LocalSandboxConfig {
    /// Workspaces live in `{data_dir}/sandboxes/{sandbox_id}`.
    pub data_dir: PathBuf,
    /// The Next.js template (`sandbox-templates/next-js`).
    pub template_dir: PathBuf,
    /// Shared dependency installs, `{cache_dir}/next-js-{hash}/node_modules`.
    pub cache_dir: PathBuf,
    /// Where browsers reach each sandbox's preview (the preview listener).
    pub preview_origin: PreviewOrigin,
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
    /// Per stream, what a `CommandOutput` keeps (head and tail); the sink has a limit of its own.
    pub output_cap_bytes: usize,
    /// Run commands and the dev server inside the jail when this machine can build one.
    /// `false` forces it off (the server then serves one account only).
    pub use_jail: bool,
    /// Sandbox users are `uid_base` plus up to 65,535 (see `jail`).
    pub uid_base: u32,
    /// Per-process limits of jailed commands.
    pub limits: JailLimits,
    /// Where jailed commands may connect through the egress proxy (port 443 unless given).
    pub egress_allow: Vec<EgressRule>,
    /// Spare workspaces kept with their dev server running and first page compiled, handed to
    /// new projects so their first preview answers at once (0: none).
    pub warm_pool: usize,
}

impl LocalSandboxConfig {
    /// Defaults: template `./sandbox-templates/next-js` (relative to the working directory),
    /// cache `{data_dir}/cache`, 10 min command timeout, 15 min idle, 10 s per file operation,
    /// 16 KiB output cap, jail on, egress to the npm registry only, no warm pool.
    pub fn new(data_dir: impl Into<PathBuf>, preview_origin: PreviewOrigin) -> Self {
        let data_dir = data_dir.into();
        Self {
            cache_dir: data_dir.join("cache"),
            data_dir,
            template_dir: PathBuf::from("./sandbox-templates/next-js"),
            preview_origin,
            command_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(900),
            dev_server_start_timeout: Duration::from_secs(90),
            install_timeout: Duration::from_secs(900),
            file_timeout: Duration::from_secs(10),
            output_cap_bytes: 16 * 1024,
            use_jail: true,
            uid_base: DEFAULT_UID_BASE,
            limits: JailLimits::default(),
            egress_allow: vec![EgressRule::parse("registry.npmjs.org").expect("a valid rule")],
            warm_pool: 0,
        }
    }
}

/// State shared by the provider and its sandboxes.
struct Shared {
    config: LocalSandboxConfig,
    /// `Ok` when commands are jailed, else why not.
    jail: Result<Jail, String>,
    /// Started with the first network namespace.
    egress: tokio::sync::OnceCell<EgressProxy>,
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
    /// Probes the jail (blocking for a moment) unless `config.use_jail` is off.
    pub fn new(config: LocalSandboxConfig) -> Self {
        let jail = if config.use_jail {
            Jail::probe(config.uid_base, config.limits.clone()).and_then(|jail| {
                let probe_dir = config
                    .data_dir
                    .join("sandboxes")
                    .join(format!(".jail-probe.tmp-{}", Uuid::new_v4().simple()));
                let tested = jail.self_test(&probe_dir);
                let _ = std::fs::remove_dir_all(&probe_dir);
                tested.map(|()| jail)
            })
        } else {
            Err("the jail is turned off".to_owned())
        };
        if let Err(reason) = &jail {
            warn_unjailed(reason);
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
                    jail,
                    egress: tokio::sync::OnceCell::new(),
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

    /// Whether commands run inside the jail.
    pub fn is_jailed(&self) -> bool {
        self.inner.shared.jail.is_ok()
    }

    /// Whether each jailed sandbox's processes share one memory and process limit (cgroups).
    pub fn has_cgroups(&self) -> bool {
        self.inner.shared.jail.as_ref().is_ok_and(Jail::has_cgroups)
    }

    /// The host user a sandbox's processes run as, when jailed.
    pub fn sandbox_uid(&self, sandbox_id: Uuid) -> Option<u32> {
        self.inner.shared.sandbox_uid(sandbox_id)
    }

    /// The workspace directory of a sandbox (it may not exist).
    pub fn workspace_dir(&self, sandbox_id: Uuid) -> PathBuf {
        self.inner.shared.workspace_dir(&sandbox_id.to_string())
    }

    /// The sandbox a project was given from the warm pool: `{data_dir}/sandboxes/{project_id}`
    /// is then a symlink to its workspace, so a preview link by project id finds it too.
    pub fn pooled_sandbox_of(&self, project_id: Uuid) -> Option<Uuid> {
        let target = std::fs::read_link(self.workspace_dir(project_id)).ok()?;
        Uuid::parse_str(target.file_name()?.to_str()?).ok()
    }

    /// The live handle of a sandbox, attaching to a workspace left on disk by an earlier
    /// server process. `NotFound` when there is no such workspace (or it is still in the pool,
    /// or `sandbox_id` names a project's link to a pooled one); never creates one.
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
        self.attach(sandbox_id, None).await
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

    /// Registers a handle on the workspace of `sandbox_id`, writing `rebuild_from` into it. A
    /// missing workspace is built from the template and `rebuild_from`, or without it
    /// `NotFound`: decided under the create lock, so a workspace that `kill` just removed is
    /// only rebuilt by a `connect`.
    async fn attach(
        &self,
        sandbox_id: Uuid,
        rebuild_from: Option<&FileMap>,
    ) -> Result<Arc<LocalSandbox>, SandboxError> {
        let _guard = self.inner.create_lock.lock().await;
        if let Some(sandbox) = lock(&self.inner.sandboxes).get(&sandbox_id).cloned() {
            return Ok(sandbox);
        }
        let shared = &self.inner.shared;
        let workspace = self.workspace_dir(sandbox_id);
        let owner = shared.sandbox_owner(sandbox_id);
        let mut exists = tokio::fs::try_exists(workspace.join("app")).await?;
        if exists && !owned_by(&workspace, owner).await? {
            // Built by an earlier, unjailed server: its files are the server's, and handing a
            // live tree over by path could be raced. It is rebuilt from the project's files.
            tracing::info!(%sandbox_id, "rebuilding a workspace of an unjailed server");
            remove_dir_if_exists(&workspace).await?;
            exists = false;
        }
        match (exists, rebuild_from) {
            (true, restore) => {
                tracing::debug!(%sandbox_id, "reusing sandbox workspace");
                if let Some(restore) = restore {
                    write_files(shared, &workspace, restore, owner).await?;
                }
            }
            (false, Some(restore)) => {
                create_workspace(shared, &workspace, restore, sandbox_id, false).await?;
            }
            (false, None) => {
                return Err(SandboxError::NotFound(format!("no sandbox {sandbox_id}")));
            }
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
            uid: self.inner.shared.sandbox_uid(sandbox_id),
            netns: tokio::sync::Mutex::new(None),
            dev: tokio::sync::Mutex::new(None),
            activity: Mutex::new(Activity::now()),
            busy: AtomicUsize::new(0),
            killed: CancellationToken::new(),
            operations: tokio::sync::RwLock::new(()),
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
        let sandbox = self.attach(sandbox_id, Some(restore)).await?;
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

    fn isolation(&self) -> SandboxIsolation {
        match &self.inner.shared.jail {
            Ok(_) => SandboxIsolation::Isolated,
            Err(reason) => SandboxIsolation::SingleAccount {
                reason: reason.clone(),
            },
        }
    }
}

impl Shared {
    fn workspace_dir(&self, id: &str) -> PathBuf {
        self.config.data_dir.join("sandboxes").join(id)
    }

    /// The scrubbed environment of every sandbox process. Nothing of the server's own
    /// environment is passed on. Jailed processes reach the internet through the egress proxy.
    fn base_env(&self, workspace: &Path, netns: Option<&Netns>) -> Vec<(String, String)> {
        let app = workspace.join("app");
        let home = workspace.join("home");
        let mut env = vec![
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
        ];
        if let Some(proxy) = netns.and_then(|netns| netns.egress_port) {
            let url = format!("http://127.0.0.1:{proxy}");
            for key in [
                "npm_config_proxy",
                "npm_config_https_proxy",
                "HTTP_PROXY",
                "HTTPS_PROXY",
            ] {
                env.push((key.into(), url.clone()));
                env.push((key.to_ascii_lowercase(), url.clone()));
            }
            env.push(("NO_PROXY".into(), "localhost,127.0.0.1,::1".into()));
            env.push(("no_proxy".into(), "localhost,127.0.0.1,::1".into()));
        }
        env
    }

    /// Who files the server creates in a sandbox belong to: its user, when jailed.
    fn sandbox_owner(&self, sandbox_id: Uuid) -> Option<FileOwner> {
        self.sandbox_uid(sandbox_id).map(FileOwner::user)
    }

    fn sandbox_uid(&self, sandbox_id: Uuid) -> Option<u32> {
        self.jail
            .as_ref()
            .ok()
            .map(|jail| jail.sandbox_uid(sandbox_id))
    }

    /// The egress proxy's port, starting the proxy on first use.
    async fn egress_port(&self) -> Result<u16, SandboxError> {
        let proxy = self
            .egress
            .get_or_try_init(|| EgressProxy::start(self.config.egress_allow.clone()))
            .await?;
        Ok(proxy.port())
    }

    /// `bash -c script` (or `sh -c`) in its own process group: jailed in `netns` as the
    /// sandbox's user when the jail is in use, else as the server's own user.
    fn command(
        &self,
        jailed: Option<(&Netns, u32)>,
        workspace: &Path,
        cwd: &Path,
        script: &str,
        env: &[(String, String)],
        cpu_secs: Option<u64>,
    ) -> Command {
        let shell = if Path::new("/bin/bash").exists() {
            "/bin/bash"
        } else {
            "/bin/sh"
        };
        let mut command = match (&self.jail, jailed) {
            (Ok(jail), Some((netns, uid))) => {
                Command::from(jail.command(netns, uid, workspace, cwd, shell, script, cpu_secs))
            }
            _ => {
                let mut command = Command::new(shell);
                command.current_dir(cwd).arg("-c").arg(script);
                command
            }
        };
        command
            .env_clear()
            .envs(self.base_env(workspace, jailed.map(|(netns, _)| netns)))
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
    /// Keeps the namespace the dev server listens in.
    _netns: Option<Arc<Netns>>,
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
    /// The host user of the sandbox's processes and files, when jailed.
    uid: Option<u32>,
    /// The network namespace of jailed processes, while any runs (commands hold it too).
    netns: tokio::sync::Mutex<Option<Arc<Netns>>>,
    dev: tokio::sync::Mutex<Option<DevServer>>,
    activity: Mutex<Activity>,
    /// Proxied requests and tunnels in flight; a busy sandbox is never idle.
    busy: AtomicUsize,
    /// Cancelled by `kill`: commands still running are stopped, nothing new starts.
    killed: CancellationToken,
    /// Held (shared) by every file operation and command; `kill` takes it exclusively, so once
    /// it has, nothing touches the workspace again.
    operations: tokio::sync::RwLock<()>,
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

    fn owner(&self) -> Option<FileOwner> {
        self.uid.map(FileOwner::user)
    }

    fn check_alive(&self) -> Result<(), SandboxError> {
        if self.killed.is_cancelled() {
            return Err(SandboxError::NotFound(format!(
                "sandbox {} was killed",
                self.id_text
            )));
        }
        Ok(())
    }

    /// Permission to touch the workspace until the guard is dropped; refused once killed.
    async fn operation(&self) -> Result<tokio::sync::RwLockReadGuard<'_, ()>, SandboxError> {
        let guard = self.operations.read().await;
        self.check_alive()?;
        Ok(guard)
    }

    /// Whether a dev server process is currently held for this sandbox.
    pub async fn has_dev_server(&self) -> bool {
        self.dev.lock().await.is_some()
    }

    /// Stops the dev server if it runs (it starts again on demand), and lets go of the
    /// network namespace (commands still running keep theirs).
    pub async fn stop_dev_server(&self) {
        if let Some(mut server) = self.dev.lock().await.take() {
            kill_group(server.pgid);
            let _ = server.child.wait().await;
        }
        self.netns.lock().await.take();
    }

    /// The jail's network namespace and user for a process, starting the namespace if none
    /// runs; `None` when unjailed.
    async fn jail_netns(&self) -> Result<Option<(Arc<Netns>, u32)>, SandboxError> {
        let Some(uid) = self.uid else {
            return Ok(None);
        };
        let mut slot = self.netns.lock().await;
        if let Some(netns) = slot.as_ref() {
            return Ok(Some((netns.clone(), uid)));
        }
        let egress = self.shared.egress_port().await?;
        let jail = self.shared.jail.as_ref().map_err(unavailable)?;
        // The dev server's port is bound by pasta on the host; retry if another took it.
        let mut attempt = 0;
        let netns = loop {
            attempt += 1;
            match jail.start_netns(uid, Some(egress), free_port()?).await {
                Ok(netns) => break netns,
                Err(err) if attempt < 3 => tracing::debug!(%err, "retrying the network namespace"),
                Err(err) => return Err(err),
            }
        };
        let netns = Arc::new(netns);
        *slot = Some(netns.clone());
        Ok(Some((netns, uid)))
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
            self.netns.lock().await.take();
        }
    }

    /// Starts `next dev` if it is not running, waits until it answers HTTP, returns its port.
    /// Counts as activity; the provider's idle reaper runs from the first dev server on.
    pub async fn ensure_dev_server(&self) -> Result<u16, SandboxError> {
        let mut dev = self.dev.lock().await;
        // Under the dev server lock, which `kill` takes after marking the sandbox killed: a
        // server is never started after `kill` stopped the last one.
        self.check_alive()?;
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
        let jailed = self.jail_netns().await?;
        let port = match &jailed {
            Some((netns, _)) => netns.dev_port,
            None => free_port()?,
        };
        // A dev server killed earlier may leave its lock behind (next 16 refuses to start).
        let _ = self.with_app(|app| app.remove(".next/dev/lock")).await;
        let log = self
            .with_workspace(|workspace| workspace.create_log(DEV_SERVER_LOG))
            .await?;
        // `next dev` refuses its dev resources (the HMR socket) to pages of other origins.
        let allowed = [
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
            self.shared.config.preview_origin.host_of(self.id),
        ];
        let env = vec![
            ("NEXT_BASE_PATH".to_owned(), self.base_path()),
            ("NEXT_ALLOWED_DEV_ORIGINS".to_owned(), allowed.join(",")),
            ("PORT".to_owned(), port.to_string()),
            ("HOSTNAME".to_owned(), "127.0.0.1".to_owned()),
        ];
        let script = format!(
            "exec node node_modules/next/dist/bin/next dev --hostname 127.0.0.1 --port {port}"
        );
        let mut command = self.shared.command(
            jailed.as_ref().map(|(netns, uid)| (netns.as_ref(), *uid)),
            &self.workspace,
            &self.app,
            &script,
            &env,
            None,
        );
        command.stdout(log.try_clone()?).stderr(log);
        let mut child = command.spawn()?;
        let pgid = child.id().and_then(|id| i32::try_from(id).ok());
        // Kills the group if we give up (error, or this future is dropped) before it is ready.
        let mut guard = GroupGuard(pgid);
        let deadline = started + self.shared.config.dev_server_start_timeout;
        let url = format!("http://127.0.0.1:{port}{}", self.base_path());
        loop {
            self.check_alive()?;
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
        Ok(DevServer {
            child,
            port,
            pgid,
            _netns: jailed.map(|(netns, _)| netns),
        })
    }
}

/// Whether a workspace's app root belongs to `owner` (always, when there is none).
async fn owned_by(workspace: &Path, owner: Option<FileOwner>) -> Result<bool, SandboxError> {
    use std::os::unix::fs::MetadataExt;
    let Some(owner) = owner else {
        return Ok(true);
    };
    let meta = tokio::fs::symlink_metadata(workspace.join("app")).await?;
    Ok(meta.uid() == owner.uid)
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
        let _operation = self.operation().await?;
        self.touch();
        let (path, content) = (path.to_owned(), content.to_owned());
        let owner = self.owner();
        self.with_app(move |app| app.write(&path, content.as_bytes(), owner))
            .await
    }

    async fn remove_file(&self, path: &str) -> Result<(), SandboxError> {
        let _operation = self.operation().await?;
        self.touch();
        let path = path.to_owned();
        self.with_app(move |app| app.remove(&path)).await
    }

    async fn read_file(&self, path: &str) -> Result<String, SandboxError> {
        let _operation = self.operation().await?;
        let path = path.to_owned();
        let bytes = self
            .with_app(move |app| app.read(&path, MAX_FILE_BYTES))
            .await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn list_files(&self, dir: &str) -> Result<Vec<String>, SandboxError> {
        let _operation = self.operation().await?;
        let dir = dir.to_owned();
        self.with_app(move |app| app.list(&dir, MAX_LISTED_ENTRIES))
            .await
    }

    async fn run_command(
        &self,
        spec: CommandSpec,
        sink: &mut OutputSink,
        cancel: CancellationToken,
    ) -> Result<CommandOutput, SandboxError> {
        let _operation = self.operation().await?;
        self.touch();
        // Checked below the app root, then handed to the jail as a path: inside the jail it
        // resolves among what the jail sees, whatever a command does to it meanwhile.
        let cwd = spec.cwd.clone().unwrap_or_default();
        let cwd = self
            .app
            .join(self.with_app(move |app| app.require_dir(&cwd)).await?);
        let timeout = spec.timeout.min(self.shared.config.command_timeout);
        let jailed = self.jail_netns().await?;
        let mut command = self.shared.command(
            jailed.as_ref().map(|(netns, uid)| (netns.as_ref(), *uid)),
            &self.workspace,
            &cwd,
            &spec.command,
            &spec.env,
            Some(timeout.as_secs().max(1)),
        );
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let run = run_capped(
            command,
            timeout,
            self.shared.config.output_cap_bytes,
            sink,
            cancel,
        );
        // Dropping `run` kills the command's process group.
        let result = tokio::select! {
            result = run => result,
            () = self.killed.cancelled() => Err(SandboxError::Cancelled),
        };
        self.touch();
        result
    }

    async fn preview_url(&self) -> Result<String, SandboxError> {
        self.ensure_dev_server().await?;
        let origin = self.shared.config.preview_origin.url_of(self.id);
        Ok(format!("{origin}{}/", self.base_path()))
    }

    async fn extend_lifetime(&self, by: Duration) -> Result<(), SandboxError> {
        self.check_alive()?;
        let mut activity = lock(&self.activity);
        activity.last = Instant::now();
        activity.keep_until = activity.keep_until.max(Instant::now() + by);
        Ok(())
    }

    /// Stops running commands and the dev server and deletes the workspace; the handle is
    /// dead from then on. A later `connect` rebuilds the workspace from the template and
    /// `restore`.
    async fn kill(&self) -> Result<(), SandboxError> {
        self.killed.cancel();
        let _no_more_operations = self.operations.write().await;
        self.stop_dev_server().await;
        if let (Ok(jail), Some(uid)) = (&self.shared.jail, self.uid) {
            jail.remove_cgroups(uid);
        }
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
