//! Building workspaces: the template copied, `node_modules` hard-linked from the shared
//! dependency cache (installed once by `npm ci`), files restored, all staged in a temporary
//! directory and renamed into place.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::sandbox::{FileMap, OutputSink, SandboxError};

use super::files::{run_blocking, AppDir, FileOwner};
use super::process::run_capped;
use super::{pool, unavailable, Shared, SYSTEM_PATH};

/// Template files that belong to other backends and are not copied into workspaces.
const TEMPLATE_EXCLUDES: &[&str] = &[
    "node_modules",
    ".next",
    ".git",
    "e2b.Dockerfile",
    "e2b.toml",
    "compile_page.sh",
];

/// Writes `files` (paths relative to the app root) into `workspace`'s app, refusing escapes;
/// what is created is given to `owner`. Each file within the file timeout.
pub(super) async fn write_files(
    shared: &Shared,
    workspace: &Path,
    files: &FileMap,
    owner: Option<FileOwner>,
) -> Result<(), SandboxError> {
    for (path, content) in files {
        let (workspace, path, content) = (workspace.to_owned(), path.clone(), content.clone());
        run_blocking(shared.config.file_timeout, move || {
            AppDir::open(&workspace)?.write(&path, content.as_bytes(), owner)
        })
        .await?;
    }
    Ok(())
}

/// Gives a workspace's `app/`, `home/` and `tmp/` to the sandbox user `uid`: every directory,
/// symlink and file, except the files of `node_modules` shared (hard-linked) with the
/// dependency cache, which stay the server's and read-only, so no sandbox can change them.
pub(super) async fn hand_over(workspace: &Path, uid: u32) -> Result<(), SandboxError> {
    let workspace = workspace.to_path_buf();
    tokio::task::spawn_blocking(move || {
        for dir in ["app", "home", "tmp"] {
            chown_tree(&workspace.join(dir), uid)?;
        }
        Ok::<_, std::io::Error>(())
    })
    .await
    .map_err(unavailable)??;
    Ok(())
}

fn chown_tree(root: &Path, uid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        let shared_with_cache = meta.is_file() && meta.nlink() > 1;
        if !shared_with_cache && meta.uid() != uid {
            std::os::unix::fs::lchown(&path, Some(uid), Some(uid))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// Builds `{workspace}` of sandbox `sandbox_id` from the template, the dependency cache and
/// `restore`, atomically, and hands it to the sandbox's user when jailed; `pooled` marks it
/// as a spare of the warm pool.
pub(super) async fn create_workspace(
    shared: &Shared,
    workspace: &Path,
    restore: &FileMap,
    sandbox_id: Uuid,
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
        write_files(shared, &staging, restore, None).await?;
        if let Some(uid) = shared.sandbox_uid(sandbox_id) {
            // Nothing runs in the staging directory yet: a walk by path cannot be raced.
            hand_over(&staging, uid).await?;
        }
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
pub(super) async fn ensure_dependencies(shared: &Shared) -> Result<PathBuf, SandboxError> {
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
        let output = run_capped(
            command,
            config.install_timeout,
            16 * 1024,
            &mut OutputSink::discard(),
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

pub(super) async fn remove_dir_if_exists(dir: &Path) -> Result<(), SandboxError> {
    match tokio::fs::remove_dir_all(dir).await {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
        _ => Ok(()),
    }
}

/// Removes half-built workspaces or caches (`.{name}.tmp-…`) left by a crash, once they are an
/// hour old (a younger one may belong to another live process).
pub(super) fn remove_stale_staging(dir: &Path) {
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
