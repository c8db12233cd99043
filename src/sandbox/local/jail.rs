//! The jail of local sandbox commands, and whether this machine can build one.
//!
//! A jailed command is, from the outside in:
//! - a user id of its sandbox's own ([`Jail::sandbox_uid`]) that owns nothing the server owns,
//!   so the shared dependency cache (owned by the server, read-only) cannot be changed;
//! - the sandbox's network namespace ([`Netns`]), held by a long-lived `pasta` process: only
//!   loopback, plus two forwarded ports — the dev server's (host → sandbox) and the egress
//!   proxy's (sandbox → host, see `sandbox::egress`). No interface leads anywhere else, so the
//!   host's loopback, link-local and private ranges are out of reach;
//! - resource limits (`prlimit`): processes, memory, file size, CPU time per process; and,
//!   where the host lets the server make cgroups (v1 `memory` and `pids`), one memory and
//!   process limit for all of a sandbox's processes together;
//! - bubblewrap: its own user, PID, IPC and UTS namespaces, a new session, no capabilities,
//!   read-only system directories, the workspace's `app/`, `home/` and `tmp/` read-write, and
//!   nothing else of the host's file system.
//!
//! Switching to another user id needs root, so a server that is not root cannot jail; it then
//! runs commands unjailed and serves one account only (see `services::sandbox_access`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use uuid::Uuid;

use super::process::kill_group;
use crate::sandbox::SandboxError;

/// Per-command limits of jailed processes (rlimits; each process of the command gets them).
#[derive(Debug, Clone)]
pub struct JailLimits {
    /// Processes and threads of one sandbox user at once (`RLIMIT_NPROC`).
    pub max_processes: u64,
    /// Writable private memory of one process (`RLIMIT_DATA`; address space reserved but
    /// not written, as WebAssembly does, is not counted).
    pub max_memory_bytes: u64,
    /// Largest file a process may write (`RLIMIT_FSIZE`).
    pub max_file_bytes: u64,
    /// Memory of all of one sandbox's processes together, where the host offers cgroups.
    pub max_sandbox_memory_bytes: u64,
}

impl Default for JailLimits {
    fn default() -> Self {
        Self {
            max_processes: 1024,
            max_memory_bytes: 4 << 30,
            max_file_bytes: 1 << 30,
            max_sandbox_memory_bytes: 4 << 30,
        }
    }
}

/// The jail's tools, found on PATH, and the settings every jailed process gets.
#[derive(Debug)]
pub(super) struct Jail {
    bwrap: PathBuf,
    pasta: PathBuf,
    nsenter: PathBuf,
    prlimit: PathBuf,
    setpriv: PathBuf,
    sleep: PathBuf,
    uid_base: u32,
    limits: JailLimits,
    /// Where per-sandbox cgroups go; empty where the host offers none the server may make.
    cgroups: Vec<CgroupLimit>,
}

/// A cgroup (v1) controller under which each sandbox gets a group of its own with a limit.
#[derive(Debug)]
struct CgroupLimit {
    /// `{controller mount}{the server's own group}/codekraft-sandboxes`
    parent: PathBuf,
    file: &'static str,
    value: u64,
}

impl CgroupLimit {
    /// The `cgroup.procs` of the sandbox user's group, made (with its limit) if need be.
    fn procs_of(&self, uid: u32) -> Option<PathBuf> {
        let group = self.parent.join(format!("sandbox-{uid}"));
        let made = std::fs::create_dir_all(&group)
            .and_then(|()| std::fs::write(group.join(self.file), self.value.to_string()));
        match made {
            Ok(()) => Some(group.join("cgroup.procs")),
            Err(err) => {
                tracing::warn!(group = %group.display(), %err, "no cgroup for a sandbox");
                None
            }
        }
    }
}

/// The v1 `memory` and `pids` controllers, where the server may make groups below its own.
fn detect_cgroups(limits: &JailLimits) -> Vec<CgroupLimit> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let wanted = [
        (
            "memory",
            "memory.limit_in_bytes",
            limits.max_sandbox_memory_bytes,
        ),
        ("pids", "pids.max", limits.max_processes),
    ];
    wanted
        .into_iter()
        .filter_map(|(controller, file, value)| {
            let path = own.lines().find_map(|line| {
                let mut fields = line.splitn(3, ':');
                let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
                controllers
                    .split(',')
                    .any(|c| c == controller)
                    .then(|| path.trim_start_matches('/').to_owned())
            })?;
            let parent = Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(path)
                .join("codekraft-sandboxes");
            let usable =
                std::fs::create_dir_all(&parent).is_ok() && parent.join("cgroup.procs").exists();
            usable.then_some(CgroupLimit {
                parent,
                file,
                value,
            })
        })
        .collect()
}

/// Sandbox user ids are `uid_base + (a hash of the sandbox id) % UID_SPAN`.
const UID_SPAN: u32 = 1 << 16;
/// Inside the jail every sandbox sees itself as this user.
const INNER_UID: &str = "1000";

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

impl Jail {
    /// A jail when every tool is here, the server may switch user ids, and a jailed `true`
    /// runs; otherwise why not.
    pub(super) fn probe(uid_base: u32, limits: JailLimits) -> Result<Self, String> {
        let tool =
            |name: &str| find_on_path(name).ok_or_else(|| format!("`{name}` is not installed"));
        let jail = Self {
            cgroups: detect_cgroups(&limits),
            bwrap: tool("bwrap")?,
            pasta: tool("pasta")?,
            nsenter: tool("nsenter")?,
            prlimit: tool("prlimit")?,
            setpriv: tool("setpriv")?,
            sleep: tool("sleep")?,
            uid_base,
            limits,
        };
        if !nix::unistd::geteuid().is_root() {
            return Err(
                "the server is not root, so it cannot run commands as a user of their own".into(),
            );
        }
        if uid_base == 0 || uid_base.checked_add(UID_SPAN).is_none() {
            return Err(format!(
                "SANDBOX_UID_BASE {uid_base} leaves no room for sandbox users"
            ));
        }
        Ok(jail)
    }

    /// Runs a jailed `true` in a fresh network namespace: the whole chain works here.
    /// Blocks for a moment (start-up only), on a thread and runtime of its own, so it may be
    /// called from async code.
    pub(super) fn self_test(&self, workspace: &Path) -> Result<(), String> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|err| err.to_string())?
                        .block_on(self.run_true(workspace))
                })
                .join()
                .unwrap_or_else(|_| Err("the jail self-test panicked".into()))
        })
    }

    async fn run_true(&self, workspace: &Path) -> Result<(), String> {
        let uid = self.uid_base;
        let netns = self
            .start_netns(uid, None, 0)
            .await
            .map_err(|err| format!("pasta cannot create a network namespace: {err}"))?;
        for dir in ["app", "home", "tmp"] {
            let dir = workspace.join(dir);
            std::fs::create_dir_all(&dir).map_err(|err| err.to_string())?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).map_err(|err| err.to_string())?;
        }
        let mut command = self.command(
            &netns,
            uid,
            workspace,
            &workspace.join("app"),
            "/bin/sh",
            "true",
            None,
        );
        command
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let output = command.output().map_err(|err| err.to_string());
        self.remove_cgroups(uid);
        let output = output?;
        if !output.status.success() {
            return Err(format!(
                "a jailed command failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Whether each sandbox's processes share a memory and process limit (cgroups).
    pub(super) fn has_cgroups(&self) -> bool {
        !self.cgroups.is_empty()
    }

    /// Removes the cgroups of a sandbox user (once its processes are gone; else they stay).
    pub(super) fn remove_cgroups(&self, uid: u32) {
        for limit in &self.cgroups {
            let _ = std::fs::remove_dir(limit.parent.join(format!("sandbox-{uid}")));
        }
    }

    /// The host user id of a sandbox's processes and files.
    pub(super) fn sandbox_uid(&self, sandbox_id: Uuid) -> u32 {
        let folded = sandbox_id
            .as_u128()
            .to_le_bytes()
            .chunks(4)
            .fold(0u32, |acc, chunk| {
                acc ^ u32::from_le_bytes(chunk.try_into().unwrap_or_default())
            });
        self.uid_base + folded % UID_SPAN
    }

    /// Starts the network namespace of a sandbox: `pasta` (as the sandbox's user, so the
    /// namespaces belong to that user) holding a sleeping process inside. `dev_port` is
    /// forwarded from the host's loopback into the namespace, and `egress_port` from the
    /// namespace's loopback to the host's (the egress proxy).
    ///
    /// No parent-death signal for `pasta`: it would be sent when the spawning thread ends,
    /// not the server.
    pub(super) async fn start_netns(
        &self,
        uid: u32,
        egress_port: Option<u16>,
        dev_port: u16,
    ) -> Result<Netns, SandboxError> {
        let ids = format!("{uid}");
        let dev = if dev_port == 0 {
            "none".to_owned()
        } else {
            format!("127.0.0.1/{dev_port}")
        };
        let egress = egress_port.map_or_else(|| "none".to_owned(), |port| port.to_string());
        let mut command = Command::new(&self.setpriv);
        command
            .args(["--reuid", &ids, "--regid", &ids, "--clear-groups", "--"])
            .arg(&self.pasta)
            .args(["--quiet", "--foreground", "--no-map-gw"])
            .args(["--tcp-ports", &dev, "--udp-ports", "none"])
            .args(["--tcp-ns", &egress, "--udp-ns", "none", "--"])
            // The holder dies with pasta.
            .arg(&self.setpriv)
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&self.sleep)
            .arg("infinity")
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn()?;
        let pasta_pid = child.id();
        let pgid = i32::try_from(pasta_pid).ok();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    use std::io::Read;
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return Err(SandboxError::Unavailable(format!(
                    "pasta exited with {status}: {}",
                    stderr.trim()
                )));
            }
            let children = format!("/proc/{pasta_pid}/task/{pasta_pid}/children");
            if let Some(holder) = std::fs::read_to_string(children)
                .ok()
                .and_then(|list| list.split_whitespace().next()?.parse::<i32>().ok())
            {
                // The holder first runs setpriv; it is ready once it is `sleep`.
                let comm =
                    std::fs::read_to_string(format!("/proc/{holder}/comm")).unwrap_or_default();
                if comm.trim() == "sleep" {
                    child.stderr.take();
                    return Ok(Netns {
                        pasta: child,
                        pgid,
                        holder,
                        dev_port,
                        egress_port,
                    });
                }
            }
            if started.elapsed() > Duration::from_secs(10) {
                kill_group(pgid);
                let _ = child.wait();
                return Err(SandboxError::Unavailable(
                    "pasta did not start its namespace within 10 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `shell -c script` inside the jail, in `netns`, as `uid`. The caller sets the
    /// environment, stdio and process group.
    /// `cpu_secs` bounds the CPU time of each process (none for the long-lived dev server).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn command(
        &self,
        netns: &Netns,
        uid: u32,
        workspace: &Path,
        cwd: &Path,
        shell: &str,
        script: &str,
        cpu_secs: Option<u64>,
    ) -> Command {
        let ids = uid.to_string();
        let limits = &self.limits;
        let procs: Vec<PathBuf> = self
            .cgroups
            .iter()
            .filter_map(|limit| limit.procs_of(uid))
            .collect();
        // Still root, the first process joins the sandbox's cgroups, so everything it starts
        // is in them.
        let mut command = if procs.is_empty() {
            Command::new(&self.setpriv)
        } else {
            let mut join = Command::new("/bin/sh");
            join.arg("-c")
                .arg(r#"while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift; exec "$@""#)
                .arg("sh")
                .args(&procs)
                .arg("--")
                .arg(&self.setpriv);
            join
        };
        command
            .args(["--reuid", &ids, "--regid", &ids, "--clear-groups", "--"])
            .arg(&self.nsenter)
            .args(["--target", &netns.holder.to_string()])
            .args(["--user", "--net", "--preserve-credentials", "--"])
            .arg(&self.prlimit)
            .arg(format!("--nproc={0}:{0}", limits.max_processes))
            .arg(format!("--data={0}:{0}", limits.max_memory_bytes))
            .arg(format!("--fsize={0}:{0}", limits.max_file_bytes))
            .arg("--core=0:0");
        if let Some(secs) = cpu_secs {
            command.arg(format!("--cpu={secs}:{secs}"));
        }
        command
            .arg("--")
            .arg(&self.bwrap)
            .args(bwrap_args(workspace, cwd))
            .arg("--")
            .arg(shell)
            .arg("-c")
            .arg(script);
        command
    }
}

/// A sandbox's network namespace; dropping it stops `pasta` and the namespace's holder.
#[derive(Debug)]
pub(super) struct Netns {
    pasta: Child,
    pgid: Option<i32>,
    /// A process inside the namespaces, for `nsenter`.
    holder: i32,
    /// The dev server's port, the same on the host's loopback and the namespace's.
    pub(super) dev_port: u16,
    /// The egress proxy's port, the same inside and on the host.
    pub(super) egress_port: Option<u16>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_group(self.pgid);
        // Reaped at once: SIGKILL cannot be ignored.
        let _ = self.pasta.wait();
    }
}

/// Read-only system directories, the workspace's `app/`, `home/` and `tmp/` read-write, a
/// private `/tmp`, `/proc`, `/dev`. Everything else (the data dir with other projects, the
/// workspace's own bookkeeping, the server's files) is absent.
pub(super) fn bwrap_args(workspace: &Path, cwd: &Path) -> Vec<String> {
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
    args.extend(["--proc", "/proc", "--dev", "/dev"].map(String::from));
    // `/tmp` is the workspace's own (on disk): a tmpfs would let a sandbox fill the memory.
    let tmp = workspace.join("tmp").display().to_string();
    args.extend(["--bind".into(), tmp, "/tmp".into()]);
    for dir in ["app", "home", "tmp"] {
        let path = workspace.join(dir).display().to_string();
        args.extend(["--bind".into(), path.clone(), path]);
    }
    args.extend(
        [
            "--unshare-user",
            "--uid",
            INNER_UID,
            "--gid",
            INNER_UID,
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "sandbox",
            "--new-session",
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

pub(super) fn warn_unjailed(reason: &str) {
    tracing::warn!(
        %reason,
        "local sandboxes run WITHOUT a jail: generated code runs as the server's user and can \
         read its files; this server serves one account only (install bubblewrap and passt and \
         run as root to jail, or use E2B)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bwrap_args_hide_everything_but_system_dirs_and_the_workspace_dirs() {
        let args = bwrap_args(
            Path::new("/data/sandboxes/p"),
            Path::new("/data/sandboxes/p/app"),
        );
        let joined = args.join(" ");
        assert!(joined.contains("--bind /data/sandboxes/p/app /data/sandboxes/p/app"));
        assert!(joined.contains("--bind /data/sandboxes/p/home /data/sandboxes/p/home"));
        assert!(!joined.contains("--bind /data/sandboxes/p /data/sandboxes/p "));
        for flag in [
            "--unshare-user",
            "--unshare-pid",
            "--new-session",
            "--die-with-parent",
        ] {
            assert!(joined.contains(flag), "{flag} missing: {joined}");
        }
        assert!(joined.contains("--cap-drop ALL"));
        assert!(joined.ends_with("--chdir /data/sandboxes/p/app"));
        assert!(!joined.contains("--bind / "));
    }

    #[test]
    fn sandbox_users_are_above_the_base_and_stable() {
        let jail = Jail {
            bwrap: PathBuf::new(),
            pasta: PathBuf::new(),
            nsenter: PathBuf::new(),
            prlimit: PathBuf::new(),
            setpriv: PathBuf::new(),
            sleep: PathBuf::new(),
            uid_base: 1_800_000_000,
            limits: JailLimits::default(),
            cgroups: Vec::new(),
        };
        let id = Uuid::new_v4();
        let uid = jail.sandbox_uid(id);
        assert!((1_800_000_000..1_800_000_000 + UID_SPAN).contains(&uid));
        assert_eq!(uid, jail.sandbox_uid(id));
        let distinct: std::collections::HashSet<u32> =
            (0..100).map(|_| jail.sandbox_uid(Uuid::new_v4())).collect();
        assert!(distinct.len() > 90, "ids spread over users");
    }

    #[test]
    fn running_unjailed_is_announced_as_single_account() {
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || warn_unjailed("bwrap is missing"));
        let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(logged.contains("WARN"), "{logged}");
        assert!(logged.contains("one account only"), "{logged}");
        assert!(logged.contains("bwrap is missing"), "{logged}");
    }
}
