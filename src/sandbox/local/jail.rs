//! Bubblewrap, the jail of local sandbox commands: what a jailed process sees, and whether
//! `bwrap` works on this machine at all.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

/// Read-only system directories, the workspace read-write, a private `/tmp`, `/proc`, `/dev`.
/// Everything else (the data dir with other projects, the server's files) is absent.
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

/// `Some(path)` when `bwrap` is on PATH and can create a sandbox here.
pub(super) fn probe_bwrap() -> Option<PathBuf> {
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

pub(super) fn warn_unjailed_once(requested: bool) {
    static WARNED: OnceLock<()> = OnceLock::new();
    WARNED.get_or_init(|| {
        tracing::warn!(
            bwrap_requested = requested,
            "local sandboxes run without bubblewrap: generated code runs as the server's user \
             and can read its files; use them only for trusted single-user setups"
        );
    });
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

    #[test]
    fn running_unjailed_is_announced_as_for_trusted_use_only() {
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
        // The only call in this test binary: the warning is given once per process.
        tracing::subscriber::with_default(subscriber, || warn_unjailed_once(false));
        let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(logged.contains("WARN"), "{logged}");
        assert!(logged.contains("trusted single-user"), "{logged}");
    }
}
