//! The embedded default backend: one workspace directory per project on this machine.
//!
//! Layout under `{data_dir}/sandboxes/{sandbox_id}/`: `app/` (the app root the model sees),
//! `home/` (HOME and npm cache of the commands), `tmp/`, `dev-server.log`. A workspace is
//! built from the template in a temporary directory and renamed into place, so it is either
//! complete or absent. `node_modules` comes from a shared, once-installed cache
//! (`{cache_dir}/next-js-{hash}/node_modules`) through hard links.
//!
//! Commands run as `bash -c` in their own process group with a scrubbed environment, inside
//! bubblewrap when it is available (see [`LocalSandboxConfig::use_bwrap`]). The dev server
//! (`next dev`) starts lazily on a free port with `basePath` `/preview/{sandbox_id}` and is
//! stopped after [`LocalSandboxConfig::idle_timeout`] without activity.
//!
//! A sandbox's id is its project's id, unless it came from the warm pool (see [`pool`]): then
//! it keeps the id it was started with, because a running `next dev` cannot change its
//! `basePath`. Either way a project keeps its sandbox id, and so its preview URL, for good:
//! a workspace that is gone is rebuilt under the same id.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod pool;

use super::output::{CappedText, Utf8Stream};
use super::path::{confine, relative_display};
use super::{
    CommandOutput, CommandSpec, FileMap, OutputChunk, OutputSink, Sandbox, SandboxError,
    SandboxProvider,
};

/// Template files that belong to other backends and are not copied into workspaces.
const TEMPLATE_EXCLUDES: &[&str] = &[
    "node_modules",
    ".next",
    ".git",
    "e2b.Dockerfile",
    "e2b.toml",
    "compile_page.sh",
];
/// Directories skipped by `list_files`.
const LIST_EXCLUDES: &[&str] = &["node_modules", ".next", ".git"];
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
    /// cache `{data_dir}/cache`, 10 min command timeout, 15 min idle, 16 KiB output cap, bwrap on,
    /// no warm pool.
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

    /// Starts the sandbox's dev server when it is not running and returns its local port.
    /// Used by the preview proxy; counts as activity.
    pub async fn ensure_dev_server(&self, sandbox_id: Uuid) -> Result<u16, SandboxError> {
        let sandbox = self.sandbox(sandbox_id).await?;
        let port = sandbox.ensure_dev_server().await?;
        self.start_reaper();
        Ok(port)
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
            write_files(&workspace.join("app"), restore).await?;
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

/// Read-only system directories, the workspace read-write, a private `/tmp`, `/proc`, `/dev`.
/// Everything else (the data dir with other projects, the server's files) is absent.
fn bwrap_args(workspace: &Path, cwd: &Path) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    for dir in ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc"] {
        let path = Path::new(dir);
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(path) {
                    args.extend(["--symlink".into(), target.display().to_string(), dir.into()]);
                }
            }
            Ok(meta) if meta.is_dir() => {
                args.extend(["--ro-bind".into(), dir.into(), dir.into()]);
            }
            _ => {}
        }
    }
    let workspace = workspace.display().to_string();
    args.extend(
        [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--bind",
            &workspace,
            &workspace,
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--die-with-parent",
            "--cap-drop",
            "ALL",
            "--chdir",
        ]
        .map(String::from),
    );
    args.push(cwd.display().to_string());
    args
}

/// Removes half-built workspaces or caches (`.{name}.tmp-…`) left by a crash, once they are an
/// hour old (a younger one may belong to another live process).
fn remove_stale_staging(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if name.starts_with('.') && name.contains(".tmp-") && stale {
            tracing::info!(path = %entry.path().display(), "removing stale sandbox staging dir");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `Some(path)` when `bwrap` is on PATH and can create a sandbox here.
fn probe_bwrap() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let bwrap = std::env::split_paths(&path)
        .map(|dir| dir.join("bwrap"))
        .find(|candidate| candidate.is_file())?;
    let works = std::process::Command::new(&bwrap)
        .args([
            "--ro-bind",
            "/",
            "/",
            "--unshare-pid",
            "--die-with-parent",
            "true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !works {
        tracing::warn!(bwrap = %bwrap.display(), "bwrap is installed but cannot create a sandbox here");
    }
    works.then_some(bwrap)
}

fn warn_unjailed_once(requested: bool) {
    static WARNED: OnceLock<()> = OnceLock::new();
    WARNED.get_or_init(|| {
        tracing::warn!(
            bwrap_requested = requested,
            "local sandboxes run without bubblewrap: generated code runs as the server's user \
             and can read its files; use them only for trusted single-user setups"
        );
    });
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

fn kill_group(pgid: Option<i32>) {
    if let Some(pgid) = pgid {
        // ESRCH (already gone) is fine.
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Kills the process group when dropped, so an abandoned `run_command` future leaves nothing.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0);
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

    /// Output of the current (or last) dev server, for diagnostics.
    pub fn dev_server_log_path(&self) -> PathBuf {
        self.workspace.join("dev-server.log")
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
        Ok(port)
    }

    fn base_path(&self) -> String {
        format!("/preview/{}", self.id)
    }

    async fn start_dev_server(&self) -> Result<DevServer, SandboxError> {
        let started = Instant::now();
        let port = free_port()?;
        // A dev server killed earlier may leave its lock behind (next 16 refuses to start).
        let _ = tokio::fs::remove_file(self.app.join(".next/dev/lock")).await;
        let log_path = self.dev_server_log_path();
        let log = std::fs::File::create(&log_path)?;
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
                let tail = read_tail(&log_path, 4096).await;
                return Err(unavailable(format!(
                    "dev server exited with {status} before answering:\n{tail}"
                )));
            }
            if Instant::now() >= deadline {
                let tail = read_tail(&log_path, 4096).await;
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

async fn read_tail(path: &Path, max: usize) -> String {
    match tokio::fs::read(path).await {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(err) => format!("(no log: {err})"),
    }
}

#[async_trait]
impl Sandbox for LocalSandbox {
    fn id(&self) -> &str {
        &self.id_text
    }

    async fn write_file(&self, path: &str, content: &str) -> Result<(), SandboxError> {
        self.check_alive()?;
        self.touch();
        let target = confine(&self.app, path)?;
        if target == self.app.canonicalize()? {
            return Err(SandboxError::PathRefused(
                "cannot write the app root".into(),
            ));
        }
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
            // Re-check: a directory created above could not have been a symlink, but an
            // existing one might have been swapped meanwhile.
            confine(&self.app, path)?;
        }
        tokio::fs::write(&target, content).await?;
        Ok(())
    }

    async fn remove_file(&self, path: &str) -> Result<(), SandboxError> {
        self.check_alive()?;
        self.touch();
        let target = confine(&self.app, path)?;
        match tokio::fs::remove_file(&target).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    }

    async fn read_file(&self, path: &str) -> Result<String, SandboxError> {
        self.check_alive()?;
        let target = confine(&self.app, path)?;
        match tokio::fs::read(&target).await {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                Err(SandboxError::NotFound(path.to_owned()))
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn list_files(&self, dir: &str) -> Result<Vec<String>, SandboxError> {
        self.check_alive()?;
        let start = confine(&self.app, dir)?;
        let root = self.app.canonicalize()?;
        let files = tokio::task::spawn_blocking(move || list_below(&root, &start))
            .await
            .map_err(unavailable)??;
        Ok(files)
    }

    async fn run_command(
        &self,
        spec: CommandSpec,
        sink: OutputSink<'_>,
        cancel: CancellationToken,
    ) -> Result<CommandOutput, SandboxError> {
        self.check_alive()?;
        self.touch();
        let cwd = confine(&self.app, spec.cwd.as_deref().unwrap_or(""))?;
        if !tokio::fs::metadata(&cwd).await.is_ok_and(|m| m.is_dir()) {
            return Err(SandboxError::NotFound(format!(
                "working directory {:?}",
                spec.cwd.unwrap_or_default()
            )));
        }
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
        if let Some(inner) = self.provider.upgrade() {
            LocalSandboxProvider { inner }.start_reaper();
        }
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

async fn remove_dir_if_exists(dir: &Path) -> Result<(), SandboxError> {
    match tokio::fs::remove_dir_all(dir).await {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
        _ => Ok(()),
    }
}

fn list_below(root: &Path, start: &Path) -> Result<Vec<String>, SandboxError> {
    let mut files = Vec::new();
    let mut stack = vec![start.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && dir == start => {
                return Err(SandboxError::NotFound(format!(
                    "directory {}",
                    start.display()
                )));
            }
            Err(err) => return Err(err.into()),
        };
        for entry in entries {
            let entry = entry?;
            let file_type = entry.file_type()?;
            let name = entry.file_name();
            if file_type.is_dir() {
                if !LIST_EXCLUDES.iter().any(|ex| name == *ex) {
                    stack.push(entry.path());
                }
            } else if file_type.is_file() {
                if let Some(rel) = relative_display(root, &entry.path()) {
                    files.push(rel);
                }
            }
        }
    }
    files.sort();
    Ok(files)
}

struct StreamState {
    decoder: Utf8Stream,
    capped: CappedText,
    done: bool,
}

impl StreamState {
    fn new(cap: usize) -> Self {
        Self {
            decoder: Utf8Stream::default(),
            capped: CappedText::new(cap),
            done: false,
        }
    }

    fn feed(&mut self, bytes: &[u8], sink: OutputSink<'_>, wrap: fn(String) -> OutputChunk) {
        let text = self.decoder.push(bytes);
        self.emit(text, sink, wrap);
    }

    fn close(&mut self, sink: OutputSink<'_>, wrap: fn(String) -> OutputChunk) {
        self.done = true;
        let text = self.decoder.finish();
        self.emit(text, sink, wrap);
    }

    fn emit(&mut self, text: String, sink: OutputSink<'_>, wrap: fn(String) -> OutputChunk) {
        if !text.is_empty() {
            self.capped.push(&text);
            sink(wrap(text));
        }
    }
}

/// Runs `command` (stdout and stderr piped, own process group) to completion. On timeout or
/// cancellation the whole group is killed. Once the shell exits, what it left running in its
/// group is killed too, and the pipes are drained.
async fn run_capped(
    mut command: Command,
    timeout: Duration,
    cap: usize,
    sink: OutputSink<'_>,
    cancel: CancellationToken,
) -> Result<CommandOutput, SandboxError> {
    let mut child = command.spawn()?;
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    let _guard = GroupGuard(pgid);
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| unavailable("no stdout pipe"))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| unavailable("no stderr pipe"))?;
    let mut out = StreamState::new(cap);
    let mut err = StreamState::new(cap);
    let mut out_buf = vec![0u8; 8192];
    let mut err_buf = vec![0u8; 8192];
    let mut status = None;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    // After the shell exits, pipes still held by an escaped process get this long to close.
    let drain = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(drain);

    while status.is_none() || !out.done || !err.done {
        tokio::select! {
            read = stdout.read(&mut out_buf), if !out.done => match read {
                Ok(0) | Err(_) => out.close(sink, OutputChunk::Stdout),
                Ok(n) => out.feed(&out_buf[..n], sink, OutputChunk::Stdout),
            },
            read = stderr.read(&mut err_buf), if !err.done => match read {
                Ok(0) | Err(_) => err.close(sink, OutputChunk::Stderr),
                Ok(n) => err.feed(&err_buf[..n], sink, OutputChunk::Stderr),
            },
            exit = child.wait(), if status.is_none() => {
                status = Some(exit?);
                kill_group(pgid);
                drain.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(2));
            },
            () = &mut deadline, if status.is_none() => {
                kill_group(pgid);
                let _ = child.wait().await;
                return Err(SandboxError::Timeout(timeout));
            },
            () = cancel.cancelled(), if status.is_none() => {
                kill_group(pgid);
                let _ = child.wait().await;
                return Err(SandboxError::Cancelled);
            },
            () = &mut drain, if status.is_some() => break,
        }
    }
    let status = status.ok_or_else(|| unavailable("command status missing"))?;
    let exit_code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    });
    let (stdout, out_truncated) = out.capped.finish();
    let (stderr, err_truncated) = err.capped.finish();
    Ok(CommandOutput {
        exit_code,
        stdout,
        stderr,
        truncated: out_truncated || err_truncated,
    })
}

/// Writes `files` (relative paths) below `app`, refusing escapes.
async fn write_files(app: &Path, files: &FileMap) -> Result<(), SandboxError> {
    for (path, content) in files {
        let target = confine(app, path)?;
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::write(&target, content).await?;
    }
    Ok(())
}

/// Builds `{workspace}` from the template, the dependency cache and `restore`, atomically;
/// `pooled` marks it as a spare of the warm pool.
async fn create_workspace(
    shared: &Shared,
    workspace: &Path,
    restore: &FileMap,
    pooled: bool,
) -> Result<(), SandboxError> {
    let started = Instant::now();
    let deps = ensure_dependencies(shared).await?;
    let parent = workspace
        .parent()
        .ok_or_else(|| unavailable("workspace has no parent"))?;
    tokio::fs::create_dir_all(parent).await?;
    let name = workspace
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = parent.join(format!(".{name}.tmp-{}", Uuid::new_v4().simple()));
    let result = async {
        let app = staging.join("app");
        for dir in [&app, &staging.join("home"), &staging.join("tmp")] {
            tokio::fs::create_dir_all(dir).await?;
        }
        let template = shared.config.template_dir.clone();
        let app_copy = app.clone();
        tokio::task::spawn_blocking(move || copy_tree(&template, &app_copy, TEMPLATE_EXCLUDES))
            .await
            .map_err(unavailable)??;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "template copied"
        );
        link_tree(&deps.join("node_modules"), &app.join("node_modules")).await?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "node_modules linked"
        );
        // npm rewrites its hidden lockfile in place; give each workspace its own copy.
        let hidden = app.join("node_modules/.package-lock.json");
        if tokio::fs::try_exists(&hidden).await? {
            let content = tokio::fs::read(&hidden).await?;
            tokio::fs::remove_file(&hidden).await?;
            tokio::fs::write(&hidden, content).await?;
        }
        write_files(&app, restore).await?;
        if pooled {
            pool::mark(&staging).await?;
        }
        remove_dir_if_exists(workspace).await?;
        tokio::fs::rename(&staging, workspace).await?;
        Ok::<_, SandboxError>(())
    }
    .await;
    if result.is_err() {
        let _ = remove_dir_if_exists(&staging).await;
    }
    result?;
    tracing::info!(
        workspace = %workspace.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "sandbox workspace created"
    );
    Ok(())
}

/// Copies a directory tree (regular files, directories and symlinks), skipping `excludes` by
/// name at any depth.
fn copy_tree(from: &Path, to: &Path, excludes: &[&str]) -> Result<(), SandboxError> {
    if !from.is_dir() {
        return Err(unavailable(format!(
            "sandbox template {} is missing",
            from.display()
        )));
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if excludes.iter().any(|ex| name == *ex) {
            continue;
        }
        let file_type = entry.file_type()?;
        let target = to.join(&name);
        if file_type.is_dir() {
            copy_tree(&entry.path(), &target, excludes)?;
        } else if file_type.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if file_type.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Hard-links a tree (`cp -al`), falling back to a copy across file systems.
async fn link_tree(from: &Path, to: &Path) -> Result<(), SandboxError> {
    let linked = Command::new("cp")
        .arg("-al")
        .arg(from)
        .arg(to)
        .stdin(Stdio::null())
        .output()
        .await?;
    if linked.status.success() {
        return Ok(());
    }
    tracing::warn!(
        stderr = %String::from_utf8_lossy(&linked.stderr),
        "hard-linking node_modules failed; copying instead"
    );
    remove_dir_if_exists(to).await?;
    let copied = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .stdin(Stdio::null())
        .output()
        .await?;
    if !copied.status.success() {
        return Err(unavailable(format!(
            "copying node_modules failed: {}",
            String::from_utf8_lossy(&copied.stderr)
        )));
    }
    Ok(())
}

/// The cache key of the template's dependencies.
fn dependency_hash(template_dir: &Path) -> Result<String, SandboxError> {
    let mut hasher = Sha256::new();
    for file in ["package.json", "package-lock.json"] {
        let bytes = std::fs::read(template_dir.join(file)).map_err(|err| {
            unavailable(format!(
                "sandbox template {}: {file}: {err}",
                template_dir.display()
            ))
        })?;
        hasher.update(&bytes);
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
}

/// `{cache_dir}/next-js-{hash}` with `node_modules` installed by `npm ci`, once. In-process a
/// lock serialises installs; across processes the install happens in a private staging
/// directory that is renamed into place, and the loser of a race discards its copy.
async fn ensure_dependencies(shared: &Shared) -> Result<PathBuf, SandboxError> {
    // One install at a time in this process, whatever the provider.
    static INSTALL_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let config = &shared.config;
    let hash = dependency_hash(&config.template_dir)?;
    let target = config.cache_dir.join(format!("next-js-{hash}"));
    if tokio::fs::try_exists(target.join("node_modules")).await? {
        return Ok(target);
    }
    let _install = INSTALL_LOCK.lock().await;
    if tokio::fs::try_exists(target.join("node_modules")).await? {
        return Ok(target);
    }
    let started = Instant::now();
    tracing::info!(cache = %target.display(), "installing sandbox template dependencies (once)");
    tokio::fs::create_dir_all(&config.cache_dir).await?;
    let staging = config
        .cache_dir
        .join(format!(".next-js-{hash}.tmp-{}", Uuid::new_v4().simple()));
    let result = async {
        tokio::fs::create_dir_all(staging.join("home")).await?;
        for file in ["package.json", "package-lock.json"] {
            tokio::fs::copy(config.template_dir.join(file), staging.join(file)).await?;
        }
        let mut command = Command::new("npm");
        command
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&staging)
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .env("HOME", staging.join("home"))
            .env("LANG", "C.UTF-8")
            .env("npm_config_cache", config.cache_dir.join("npm-cache"))
            .env("npm_config_update_notifier", "false")
            .env("NEXT_TELEMETRY_DISABLED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let sink = |_: OutputChunk| {};
        let output = run_capped(
            command,
            config.install_timeout,
            16 * 1024,
            &sink,
            CancellationToken::new(),
        )
        .await?;
        if output.exit_code != 0 {
            return Err(unavailable(format!(
                "npm ci of the sandbox template failed ({}):\n{}",
                output.exit_code, output.stderr
            )));
        }
        // Shared files are read-only so a jailed project (no capabilities) cannot change them
        // for everyone; workspaces get writable directories of their own.
        let chmod = Command::new("chmod")
            .args(["-R", "a-w"])
            .arg(staging.join("node_modules"))
            .status()
            .await?;
        if !chmod.success() {
            tracing::warn!("could not make the dependency cache read-only");
        }
        // Directories must stay writable in every linked copy.
        let dirs = Command::new("find")
            .arg(staging.join("node_modules"))
            .args(["-type", "d", "-exec", "chmod", "u+w", "{}", "+"])
            .status()
            .await?;
        if !dirs.success() {
            return Err(unavailable(
                "could not fix permissions of the dependency cache",
            ));
        }
        let _ = tokio::fs::remove_dir_all(staging.join("home")).await;
        match tokio::fs::rename(&staging, &target).await {
            Ok(()) => Ok(()),
            Err(_) if target.join("node_modules").exists() => {
                // Another process won the race.
                let _ = remove_dir_if_exists(&staging).await;
                Ok(())
            }
            Err(err) => Err(err.into()),
        }
    }
    .await;
    if result.is_err() {
        let _ = remove_dir_if_exists(&staging).await;
    }
    result?;
    tracing::info!(
        cache = %target.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "sandbox template dependencies installed"
    );
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bwrap_args_hide_everything_but_system_dirs_and_workspace() {
        let args = bwrap_args(
            Path::new("/data/sandboxes/p"),
            Path::new("/data/sandboxes/p/app"),
        );
        let joined = args.join(" ");
        assert!(joined.contains("--bind /data/sandboxes/p /data/sandboxes/p"));
        assert!(joined.contains("--unshare-pid"));
        assert!(joined.contains("--die-with-parent"));
        assert!(joined.ends_with("--chdir /data/sandboxes/p/app"));
        assert!(!joined.contains("--bind / "));
    }
}
