//! The warm pool: spare workspaces whose `next dev` already runs and has compiled the
//! template's page, handed to new projects. Starting `next dev` and compiling a first page
//! takes several seconds; a claimed spare answers at once, and its first edits only recompile
//! what changed.
//!
//! A spare carries a marker file (`{workspace}/.pooled`) until it is claimed, so the preview
//! proxy never attaches to it, and a new provider removes the spares an earlier process left.
//! Claiming removes the marker first (a spare that another process removed is skipped), then
//! links `{data_dir}/sandboxes/{project_id}` to the spare's workspace: the lasting record of
//! whose it is, across restarts and for preview links by project id.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::sandbox::Sandbox;

use super::workspace::{create_workspace, write_files};
use super::{lock, FileMap, LocalSandbox, LocalSandboxProvider, SandboxError};

const MARKER: &str = ".pooled";

#[derive(Default)]
pub(super) struct WarmPool {
    spares: Mutex<Vec<Arc<LocalSandbox>>>,
    /// One filler at a time.
    filling: tokio::sync::Mutex<()>,
    /// Set on shutdown: a spare that finishes starting afterwards is removed at once.
    closed: AtomicBool,
}

impl WarmPool {
    /// Stops and removes every spare (server shutdown).
    pub(super) async fn drain(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let spares = std::mem::take(&mut *lock(&self.spares));
        for spare in spares {
            discard(&spare).await;
        }
    }
}

async fn discard(spare: &LocalSandbox) {
    if let Err(err) = spare.kill().await {
        tracing::warn!(sandbox_id = %spare.id, %err, "could not remove a pooled sandbox");
    }
}

pub(super) async fn mark(workspace: &Path) -> std::io::Result<()> {
    tokio::fs::write(workspace.join(MARKER), b"").await
}

pub(super) async fn is_pooled(workspace: &Path) -> std::io::Result<bool> {
    tokio::fs::try_exists(workspace.join(MARKER)).await
}

/// Removes the spares an earlier process left behind (nobody owns them).
pub(super) fn remove_unclaimed(sandboxes_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(sandboxes_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.path().join(MARKER).exists() {
            tracing::info!(path = %entry.path().display(), "removing unclaimed pooled sandbox");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl LocalSandboxProvider {
    /// Spares ready to be claimed.
    pub fn pooled(&self) -> usize {
        lock(&self.inner.pool.spares).len()
    }

    /// Starts spares until the pool holds [`super::LocalSandboxConfig::warm_pool`] of them;
    /// returns when they are ready.
    pub async fn fill_pool(&self) -> Result<(), SandboxError> {
        let pool = &self.inner.pool;
        let _filling = pool.filling.lock().await;
        while self.pooled() < self.config().warm_pool && !pool.closed.load(Ordering::SeqCst) {
            let spare = self.start_spare().await?;
            if pool.closed.load(Ordering::SeqCst) {
                discard(&spare).await;
            } else {
                lock(&pool.spares).push(spare);
            }
        }
        Ok(())
    }

    pub(super) fn refill_pool_in_background(&self) {
        if self.config().warm_pool == 0 {
            return;
        }
        let provider = self.clone();
        tokio::spawn(async move {
            if let Err(err) = provider.fill_pool().await {
                tracing::warn!(%err, "could not fill the warm sandbox pool");
            }
        });
    }

    async fn start_spare(&self) -> Result<Arc<LocalSandbox>, SandboxError> {
        let id = Uuid::new_v4();
        {
            let _guard = self.inner.create_lock.lock().await;
            let workspace = self.workspace_dir(id);
            create_workspace(&self.inner.shared, &workspace, &FileMap::new(), id, true).await?;
        }
        let spare = self.handle(id);
        // Answers only once the first page is compiled.
        if let Err(err) = spare.ensure_dev_server().await {
            discard(&spare).await;
            return Err(err);
        }
        tracing::info!(sandbox_id = %id, "pooled sandbox ready");
        Ok(spare)
    }

    /// Hands a spare to `project_id` with `restore` written into it, and starts a replacement;
    /// `None` when the pool is empty.
    pub(super) async fn claim_pooled(
        &self,
        project_id: Uuid,
        restore: &FileMap,
    ) -> Result<Option<Arc<LocalSandbox>>, SandboxError> {
        let (earlier, claimed) = {
            let _guard = self.inner.create_lock.lock().await;
            // A racing connect for the same new project may have claimed one meanwhile.
            match self.pooled_sandbox_of(project_id) {
                Some(earlier) => (Some(earlier), None),
                None => (None, self.take_spare(project_id).await?),
            }
        };
        if let Some(earlier) = earlier {
            // Outside the lock: attaching a workspace takes it too.
            return self.sandbox(earlier).await.map(Some);
        }
        let Some(sandbox) = claimed else {
            return Ok(None);
        };
        self.refill_pool_in_background();
        write_files(
            &self.inner.shared,
            &sandbox.workspace,
            restore,
            sandbox.owner(),
        )
        .await?;
        Ok(Some(sandbox))
    }

    /// Pops a spare that is still whole and registers it as `project_id`'s sandbox.
    async fn take_spare(
        &self,
        project_id: Uuid,
    ) -> Result<Option<Arc<LocalSandbox>>, SandboxError> {
        loop {
            let Some(spare) = lock(&self.inner.pool.spares).pop() else {
                return Ok(None);
            };
            match tokio::fs::remove_file(spare.workspace.join(MARKER)).await {
                Ok(()) => {
                    let link = self.workspace_dir(project_id);
                    let _ = tokio::fs::remove_file(&link).await;
                    tokio::fs::symlink(spare.id.to_string(), &link).await?;
                    spare.touch();
                    lock(&self.inner.sandboxes).insert(spare.id, spare.clone());
                    tracing::info!(%project_id, sandbox_id = %spare.id, "claimed a pooled sandbox");
                    return Ok(Some(spare));
                }
                Err(err) => {
                    tracing::warn!(sandbox_id = %spare.id, %err, "pooled sandbox vanished");
                    spare.stop_dev_server().await;
                }
            }
        }
    }
}
