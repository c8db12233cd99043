//! File operations on a local workspace, resolved through directory handles.
//!
//! A sandbox's jailed commands can change anything inside its workspace
//! (`{data_dir}/sandboxes/{id}/`) at any moment, e.g. swap a directory for a symlink to a host
//! directory, while the server, which is not jailed, reads and writes there. So no path below
//! the workspace is opened from the root of the file system: the workspace directory is opened
//! by its path (its parent is out of the sandbox's reach) and everything below it through that
//! handle with `cap-std`, which resolves like `openat2(RESOLVE_BENEATH)`: a symlink is followed
//! only while it stays below the handle the path starts from (`app/` for the sandbox API), else
//! the call fails. Nothing is checked first and used later, so there is no window to race.
//!
//! Reads open non-blocking, refuse anything but a regular file (a FIFO would block, a socket or
//! device is no source file) and anything over their cap before reading a byte. Writes create a
//! new file and rename it over the target, so they never write through an existing inode: not
//! through a symlink, nor through a hard link into the shared dependency cache. Listings follow
//! no symlink and stop after a bounded number of entries.

use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::fchown;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cap_fs_ext::{
    DirExt, FollowSymlinks, OpenOptionsFollowExt, OpenOptionsMaybeDirExt, OpenOptionsSyncExt,
};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, File, FileType, FileTypeExt, OpenOptions, Permissions, PermissionsExt};
use nix::errno::Errno;
use uuid::Uuid;

use super::unavailable;
use crate::sandbox::path::normalize;
use crate::sandbox::{SandboxError, UNLISTED_DIRS};

/// The owner given to files and directories the server creates in a workspace (the user the
/// jailed commands run as, so they can change them); `None` keeps the server's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileOwner {
    pub uid: u32,
    pub gid: u32,
}

impl FileOwner {
    /// A sandbox user, whose group has the same id.
    pub(crate) fn user(uid: u32) -> Self {
        Self { uid, gid: uid }
    }

    fn apply(self, handle: impl std::os::fd::AsFd) -> io::Result<()> {
        fchown(handle, Some(self.uid), Some(self.gid))
    }
}

/// Runs blocking file work off the async threads and gives up after `timeout` (a thread stuck
/// in the kernel cannot be stopped; it is left to finish on its own, the caller is not held).
pub(super) async fn run_blocking<T: Send + 'static>(
    timeout: Duration,
    work: impl FnOnce() -> Result<T, SandboxError> + Send + 'static,
) -> Result<T, SandboxError> {
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(work)).await {
        Ok(joined) => joined.map_err(unavailable)?,
        Err(_) => Err(SandboxError::Timeout(timeout)),
    }
}

/// A workspace directory (`{data_dir}/sandboxes/{id}`), opened by its path.
pub(super) struct WorkspaceDir(Dir);

impl WorkspaceDir {
    pub(super) fn open(path: &Path) -> Result<Self, SandboxError> {
        Dir::open_ambient_dir(path, ambient_authority())
            .map(Self)
            .map_err(|err| match err.kind() {
                ErrorKind::NotFound => {
                    SandboxError::NotFound(format!("workspace {}", path.display()))
                }
                _ => err.into(),
            })
    }

    /// `app/`, where every path of the sandbox API starts; refused when a command replaced it
    /// with a symlink.
    pub(super) fn app(&self) -> Result<AppDir, SandboxError> {
        self.0
            .open_dir_nofollow("app")
            .map(AppDir)
            .map_err(|err| match err.kind() {
                ErrorKind::NotFound => refusal("app", err),
                _ if is_gone_or_symlink(&err) => SandboxError::PathRefused(
                    "the app root is no longer a directory (a symlink?)".into(),
                ),
                _ => err.into(),
            })
    }

    /// A new, empty `name` for a process to write to. Whatever was there is removed first and
    /// never opened, so neither a symlink nor a FIFO left by a command leads anywhere.
    pub(super) fn create_log(&self, name: &str) -> Result<std::fs::File, SandboxError> {
        match self.0.remove_file(name) {
            Err(err) if err.kind() != ErrorKind::NotFound => return Err(refusal(name, err)),
            _ => {}
        }
        let file = self
            .0
            .open_with(name, OpenOptions::new().write(true).create_new(true))
            .map_err(|err| refusal(name, err))?;
        Ok(file.into_std())
    }

    /// The last `max` bytes (at most) of the regular file `name`, for diagnostics.
    pub(super) fn read_tail(&self, name: &str, max: usize) -> Result<String, SandboxError> {
        let (mut file, len) = open_regular(&self.0, Path::new(name), name)?;
        file.seek(SeekFrom::Start(len.saturating_sub(max as u64)))?;
        let mut bytes = Vec::new();
        file.take(max as u64).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// The app root of a workspace; every path is relative to it and resolved below it.
pub(super) struct AppDir(Dir);

impl AppDir {
    pub(super) fn open(workspace: &Path) -> Result<Self, SandboxError> {
        WorkspaceDir::open(workspace)?.app()
    }

    /// Creates or replaces the file `rel` (and the directories leading to it), atomically: a
    /// new file is written beside it and renamed over it. A replaced regular file keeps its
    /// permission bits. What is created is given to `owner`.
    pub(super) fn write(
        &self,
        rel: &str,
        content: &[u8],
        owner: Option<FileOwner>,
    ) -> Result<(), SandboxError> {
        let parts = normalize(rel)?;
        let Some((name, parents)) = parts.split_last() else {
            return Err(SandboxError::PathRefused(
                "cannot write the app root".into(),
            ));
        };
        let parent = self
            .create_dirs(parents, owner)
            .map_err(|err| refusal(rel, err))?;
        let kept_mode = parent
            .symlink_metadata(name)
            .ok()
            .filter(|meta| meta.is_file())
            .map(|meta| Permissions::from_mode(meta.permissions().mode() & 0o777));
        let temp = format!(".codekraft-{}.tmp", Uuid::new_v4().simple());
        let written = write_new(&parent, &temp, content, kept_mode, owner)
            .and_then(|()| parent.rename(&temp, &parent, name));
        if let Err(err) = written {
            let _ = parent.remove_file(&temp);
            return Err(refusal(rel, err));
        }
        Ok(())
    }

    /// The directory `parents` (the app root when empty), each missing one created and given
    /// to `owner`.
    fn create_dirs(&self, parents: &[String], owner: Option<FileOwner>) -> io::Result<Dir> {
        let mut path = PathBuf::from(".");
        for part in parents {
            path.push(part);
            match self.0.create_dir(&path) {
                Ok(()) => {
                    if let Some(owner) = owner {
                        // A handle that can be changed (`open_dir` gives an `O_PATH` one).
                        let mut options = OpenOptions::new();
                        options
                            .read(true)
                            .maybe_dir(true)
                            .follow(FollowSymlinks::No);
                        owner.apply(self.0.open_with(&path, &options)?)?;
                    }
                }
                Err(err) if err.kind() == ErrorKind::AlreadyExists => {}
                Err(err) => return Err(err),
            }
        }
        self.0.open_dir(&path)
    }

    /// The regular file `rel`, refused when it is larger than `cap` bytes.
    pub(super) fn read(&self, rel: &str, cap: usize) -> Result<Vec<u8>, SandboxError> {
        let path = below_root(rel)?;
        let (file, len) = open_regular(&self.0, &path, rel)?;
        if len > cap as u64 {
            return Err(SandboxError::file_too_large(rel));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        // One byte past the cap tells a file that grew since `fstat`.
        file.take(cap as u64 + 1).read_to_end(&mut bytes)?;
        if bytes.len() > cap {
            return Err(SandboxError::file_too_large(rel));
        }
        Ok(bytes)
    }

    /// Removes the file (or symlink, never its target) `rel`; one that is gone is no error.
    pub(super) fn remove(&self, rel: &str) -> Result<(), SandboxError> {
        let parts = normalize(rel)?;
        if parts.is_empty() {
            return Err(SandboxError::PathRefused(
                "cannot remove the app root".into(),
            ));
        }
        match self.0.remove_file(parts.join("/")) {
            Err(err) if err.kind() != ErrorKind::NotFound => Err(refusal(rel, err)),
            _ => Ok(()),
        }
    }

    /// `rel` as a path below the app root, once it is known to be a directory there.
    pub(super) fn require_dir(&self, rel: &str) -> Result<PathBuf, SandboxError> {
        let path = below_root(rel)?;
        self.0.open_dir(&path).map_err(|err| match err.kind() {
            ErrorKind::NotFound => SandboxError::NotFound(format!("directory {rel:?}")),
            _ => refusal(rel, err),
        })?;
        Ok(path)
    }

    /// Regular files below the directory `rel` (relative to the app root, sorted), without
    /// [`UNLISTED_DIRS`]. `rel` itself may be a symlink that stays inside; below it no symlink
    /// is followed. More than `max_entries` entries looked at is [`SandboxError::TooLarge`].
    /// One directory is open at a time, however wide the tree.
    pub(super) fn list(&self, rel: &str, max_entries: usize) -> Result<Vec<String>, SandboxError> {
        let start = normalize(rel)?.join("/");
        let top = self
            .0
            .open_dir(if start.is_empty() { "." } else { &start })
            .map_err(|err| match err.kind() {
                ErrorKind::NotFound => SandboxError::NotFound(format!("directory {rel:?}")),
                _ => refusal(rel, err),
            })?;
        let mut files = Vec::new();
        let mut seen = 0usize;
        let mut pending = Vec::new();
        let mut next = Some((start, top));
        while let Some((prefix, dir)) = next.take() {
            for entry in dir.entries()? {
                seen += 1;
                if seen > max_entries {
                    return Err(SandboxError::listing_too_large(rel, max_entries));
                }
                let entry = entry?;
                // Names that are not UTF-8 cannot be passed back as paths.
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                let kind = entry.file_type()?;
                if kind.is_file() {
                    files.push(path);
                } else if kind.is_dir() && !UNLISTED_DIRS.contains(&name.as_str()) {
                    pending.push(path);
                }
            }
            drop(dir);
            while next.is_none() {
                let Some(path) = pending.pop() else { break };
                match self.0.open_dir_nofollow(&path) {
                    Ok(dir) => next = Some((path, dir)),
                    // Removed or swapped for a symlink since it was listed: not there.
                    Err(err) if is_gone_or_symlink(&err) => {}
                    Err(err) => return Err(refusal(&path, err)),
                }
            }
        }
        files.sort();
        Ok(files)
    }
}

/// The normalised `rel` as a relative path (`.` for the root itself).
fn below_root(rel: &str) -> Result<PathBuf, SandboxError> {
    let parts = normalize(rel)?;
    Ok(if parts.is_empty() {
        PathBuf::from(".")
    } else {
        parts.iter().collect()
    })
}

fn write_new(
    dir: &Dir,
    name: &str,
    content: &[u8],
    mode: Option<Permissions>,
    owner: Option<FileOwner>,
) -> io::Result<()> {
    let mut file = dir.open_with(name, OpenOptions::new().write(true).create_new(true))?;
    if let Some(mode) = mode {
        file.set_permissions(mode)?;
    }
    if let Some(owner) = owner {
        owner.apply(&file)?;
    }
    file.write_all(content)
}

/// Opens `path` below `dir` for reading if it is a regular file, with its length. Opened
/// non-blocking (a FIFO without writer would block the open) and checked on the open handle.
fn open_regular(dir: &Dir, path: &Path, rel: &str) -> Result<(File, u64), SandboxError> {
    let not_regular = |what: &str| SandboxError::NotRegularFile(format!("{rel:?} ({what})"));
    let file = dir
        .open_with(path, OpenOptions::new().read(true).nonblock(true))
        .map_err(|err| match err.raw_os_error() {
            // What `open` answers for a unix socket.
            Some(code) if code == Errno::ENXIO as i32 => not_regular("a socket"),
            _ => refusal(rel, err),
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(describe(meta.file_type())));
    }
    Ok((file, meta.len()))
}

fn describe(kind: FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "of an unknown type"
    }
}

fn is_gone_or_symlink(err: &io::Error) -> bool {
    err.kind() == ErrorKind::NotFound
        || [Errno::ELOOP, Errno::ENOTDIR]
            .iter()
            .any(|code| err.raw_os_error() == Some(*code as i32))
}

/// The meaning of a failed call on `rel`.
fn refusal(rel: &str, err: io::Error) -> SandboxError {
    match err.kind() {
        ErrorKind::NotFound => SandboxError::NotFound(rel.to_owned()),
        // cap-std's answer to a path that leads out of its handle (a symlink, `..` in one).
        ErrorKind::PermissionDenied => SandboxError::PathRefused(format!("{rel:?}: {err}")),
        _ if err.raw_os_error() == Some(Errno::ELOOP as i32) => {
            SandboxError::PathRefused(format!("{rel:?}: a symlink where it may not be followed"))
        }
        _ => SandboxError::Io(err),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    /// `{root}/ws/app` with `app/a/b.txt`, and `{root}/outside/secret` beside the workspace.
    struct Fixture {
        root: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let root = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(root.path().join("ws/app/a")).unwrap();
            std::fs::write(root.path().join("ws/app/a/b.txt"), "b").unwrap();
            std::fs::create_dir_all(root.path().join("outside")).unwrap();
            std::fs::write(root.path().join("outside/secret"), "secret").unwrap();
            Self { root }
        }

        fn workspace(&self) -> PathBuf {
            self.root.path().join("ws")
        }

        fn app_path(&self) -> PathBuf {
            self.workspace().join("app")
        }

        fn outside(&self) -> PathBuf {
            self.root.path().join("outside")
        }

        fn app(&self) -> AppDir {
            AppDir::open(&self.workspace()).unwrap()
        }

        fn link(&self, target: impl AsRef<Path>, at: &str) {
            std::os::unix::fs::symlink(target, self.app_path().join(at)).unwrap();
        }

        fn outside_untouched(&self) {
            let names: Vec<_> = std::fs::read_dir(self.outside())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["secret"]);
            assert_eq!(
                std::fs::read_to_string(self.outside().join("secret")).unwrap(),
                "secret"
            );
        }
    }

    fn refused<T: std::fmt::Debug>(result: Result<T, SandboxError>) -> bool {
        matches!(result, Err(SandboxError::PathRefused(_)))
    }

    #[test]
    fn writes_create_directories_and_replace_files_without_writing_through_them() {
        let fx = Fixture::new();
        let app = fx.app();
        app.write("new/dir/page.tsx", b"page", None).unwrap();
        assert_eq!(app.read("new/dir/page.tsx", 100).unwrap(), b"page");
        assert!(refused(app.write("", b"x", None)));
        assert!(refused(app.write("../escape", b"x", None)));

        // A replaced file keeps its permission bits (not more).
        let script = fx.app_path().join("run.sh");
        std::fs::write(&script, "old").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o4755)).unwrap();
        app.write("run.sh", b"new", None).unwrap();
        let meta = std::fs::metadata(&script).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755);

        // A hard link (like node_modules into the shared cache) is replaced, not written
        // through; so is a symlink, whose target stays as it was.
        std::fs::hard_link(fx.outside().join("secret"), fx.app_path().join("hard")).unwrap();
        app.write("hard", b"mine", None).unwrap();
        fx.link(fx.outside().join("secret"), "soft");
        app.write("soft", b"mine", None).unwrap();
        assert!(!std::fs::symlink_metadata(fx.app_path().join("soft"))
            .unwrap()
            .is_symlink());
        fx.outside_untouched();
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(fx.app_path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.contains(".tmp")), "{names:?}");
    }

    #[test]
    fn symlinks_are_followed_only_while_they_stay_below_the_app_root() {
        let fx = Fixture::new();
        let app = fx.app();
        fx.link("a", "inside");
        fx.link(fx.outside(), "out");
        fx.link("..", "up");
        fx.link("../..", "a/way-up");
        fx.link(fx.outside().join("secret"), "secret-link");

        // Inside: followed.
        assert_eq!(app.read("inside/b.txt", 100).unwrap(), b"b");
        app.write("inside/c.txt", b"c", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(fx.app_path().join("a/c.txt")).unwrap(),
            "c"
        );
        assert_eq!(
            app.list("inside", 100).unwrap(),
            ["inside/b.txt", "inside/c.txt"]
        );
        assert_eq!(app.require_dir("inside").unwrap(), Path::new("inside"));

        // Outside, or out of the app root into the workspace: refused.
        for path in [
            "out/secret",
            "secret-link",
            "up/app/a/b.txt",
            "a/way-up/outside/secret",
        ] {
            assert!(refused(app.read(path, 100)), "{path}");
        }
        assert!(refused(app.write("out/new", b"x", None)));
        assert!(refused(app.write("out/deeper/new", b"x", None)));
        assert!(refused(app.write("up/escape", b"x", None)));
        assert!(refused(app.remove("out/secret")));
        assert!(refused(app.list("out", 100)));
        assert!(refused(app.require_dir("up")));
        fx.outside_untouched();

        // Removing a symlink removes the link, never its target.
        app.remove("secret-link").unwrap();
        app.remove("secret-link").unwrap();
        fx.outside_untouched();
    }

    #[test]
    fn an_app_root_replaced_by_a_symlink_is_refused() {
        let fx = Fixture::new();
        std::fs::remove_dir_all(fx.app_path()).unwrap();
        std::os::unix::fs::symlink(fx.outside(), fx.app_path()).unwrap();
        assert!(refused(AppDir::open(&fx.workspace()).map(|_| ())));
        assert!(matches!(
            AppDir::open(&fx.root.path().join("gone")).map(|_| ()),
            Err(SandboxError::NotFound(_))
        ));
    }

    #[test]
    fn reads_refuse_anything_but_regular_files_within_the_cap() {
        let fx = Fixture::new();
        let app = fx.app();
        let not_regular = |result: Result<Vec<u8>, SandboxError>| match result {
            Err(SandboxError::NotRegularFile(why)) => why,
            other => panic!("expected NotRegularFile, got {other:?}"),
        };
        let status = std::process::Command::new("mkfifo")
            .arg(fx.app_path().join("fifo"))
            .status()
            .unwrap();
        assert!(status.success());
        assert!(not_regular(app.read("fifo", 100)).contains("FIFO"));
        let _listener =
            std::os::unix::net::UnixListener::bind(fx.app_path().join("socket")).unwrap();
        assert!(not_regular(app.read("socket", 100)).contains("socket"));
        assert!(not_regular(app.read("a", 100)).contains("directory"));
        assert!(not_regular(app.read("", 100)).contains("directory"));
        // A FIFO reached through a symlink is the same FIFO.
        fx.link("fifo", "fifo-link");
        not_regular(app.read("fifo-link", 100));

        let sparse = std::fs::File::create(fx.app_path().join("sparse")).unwrap();
        sparse.set_len(5 << 30).unwrap();
        assert!(matches!(
            app.read("sparse", 100),
            Err(SandboxError::TooLarge(_))
        ));
        std::fs::write(fx.app_path().join("ten"), "0123456789").unwrap();
        assert_eq!(app.read("ten", 10).unwrap(), b"0123456789");
        assert!(matches!(app.read("ten", 9), Err(SandboxError::TooLarge(_))));
        assert!(matches!(
            app.read("missing", 100),
            Err(SandboxError::NotFound(_))
        ));
        // The listing shows regular files only.
        assert_eq!(app.list("", 100).unwrap(), ["a/b.txt", "sparse", "ten"]);
    }

    #[test]
    fn listings_follow_no_symlink_skip_build_dirs_and_are_bounded() {
        let fx = Fixture::new();
        let app = fx.app();
        for dir in ["node_modules/x", ".next", ".git", "src/deep/er"] {
            std::fs::create_dir_all(fx.app_path().join(dir)).unwrap();
            std::fs::write(fx.app_path().join(dir).join("f"), "").unwrap();
        }
        fx.link(fx.outside(), "out");
        fx.link("src", "src-link");
        fx.link("src/deep/er/f", "file-link");
        assert_eq!(app.list(".", 100).unwrap(), ["a/b.txt", "src/deep/er/f"]);
        assert_eq!(app.list("src/deep", 100).unwrap(), ["src/deep/er/f"]);
        assert!(matches!(
            app.list("missing", 100),
            Err(SandboxError::NotFound(_))
        ));
        // 8 entries at the top (a, node_modules, .next, .git, src, out, src-link, file-link),
        // more below: a cap that is passed is an error, not a silent cut.
        assert!(matches!(app.list("", 8), Err(SandboxError::TooLarge(_))));
        for i in 0..50 {
            std::fs::write(fx.app_path().join(format!("a/{i}")), "").unwrap();
        }
        match app.list("a", 50) {
            Err(SandboxError::TooLarge(why)) => assert!(why.contains("50"), "{why}"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(app.list("a", 51).unwrap().len(), 51);
    }

    #[test]
    fn created_files_and_directories_are_given_to_the_owner() {
        let fx = Fixture::new();
        let app = fx.app();
        // Root can give them away; anyone else can still give them to themselves.
        let owner = if nix::unistd::geteuid().is_root() {
            FileOwner {
                uid: 4242,
                gid: 4343,
            }
        } else {
            FileOwner {
                uid: nix::unistd::geteuid().as_raw(),
                gid: nix::unistd::getegid().as_raw(),
            }
        };
        let before = std::fs::metadata(fx.app_path().join("a")).unwrap();
        app.write("a/new/deeper/file.ts", b"x", Some(owner))
            .unwrap();
        for created in ["a/new", "a/new/deeper", "a/new/deeper/file.ts"] {
            let meta = std::fs::metadata(fx.app_path().join(created)).unwrap();
            assert_eq!(
                (meta.uid(), meta.gid()),
                (owner.uid, owner.gid),
                "{created}"
            );
        }
        let after = std::fs::metadata(fx.app_path().join("a")).unwrap();
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    }

    #[test]
    fn the_log_is_created_afresh_and_its_tail_read_safely() {
        let fx = Fixture::new();
        let workspace = WorkspaceDir::open(&fx.workspace()).unwrap();
        std::os::unix::fs::symlink(
            fx.outside().join("secret"),
            fx.workspace().join("dev-server.log"),
        )
        .unwrap();
        let mut log = workspace.create_log("dev-server.log").unwrap();
        log.write_all(b"line 1\nline 2\n").unwrap();
        fx.outside_untouched();
        assert_eq!(
            workspace.read_tail("dev-server.log", 7).unwrap(),
            "line 2\n"
        );
        assert_eq!(
            workspace.read_tail("dev-server.log", 100).unwrap(),
            "line 1\nline 2\n"
        );
        std::fs::remove_file(fx.workspace().join("dev-server.log")).unwrap();
        std::os::unix::fs::symlink(
            fx.outside().join("secret"),
            fx.workspace().join("dev-server.log"),
        )
        .unwrap();
        assert!(refused(workspace.read_tail("dev-server.log", 100)));
    }

    #[tokio::test]
    async fn blocking_work_that_does_not_finish_in_time_is_a_timeout() {
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let result = run_blocking(Duration::from_millis(50), move || {
            let _ = blocked.recv();
            Ok(())
        })
        .await;
        assert!(
            matches!(result, Err(SandboxError::Timeout(_))),
            "{result:?}"
        );
        release.send(()).unwrap();
        assert_eq!(
            run_blocking(Duration::from_secs(60), || Ok(7))
                .await
                .unwrap(),
            7
        );
    }
}
