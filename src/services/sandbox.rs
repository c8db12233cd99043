//! A project's sandbox from the API side: open it (reconnecting, or rebuilding it from the
//! latest files when it is gone, so a preview never stays dead) and restore earlier versions.

use std::sync::Arc;

use sea_orm::{DatabaseConnection, EntityTrait, TransactionTrait};
use uuid::Uuid;

use super::Viewer;
use crate::entity::{message, project};
use crate::error::{AppError, AppResult};
use crate::events::{BusMessage, EventBus};
use crate::sandbox::{FileMap, Sandbox, SandboxProvider};

/// Connects the project's sandbox — the stored one if it is alive, else a new one holding
/// `restore` — and records its id.
///
/// Deletion wins: when the project was deleted meanwhile, the sandbox just connected is
/// destroyed and the project is `NotFound`. Connecting, recording and that clean-up run as
/// one task of their own, so a caller that gives up (a cancelled run, a closed request)
/// cannot leave a sandbox that neither the project nor its deletion knows about.
pub async fn connect_project_sandbox(
    db: &DatabaseConnection,
    sandboxes: &Arc<dyn SandboxProvider>,
    project: &project::Model,
    restore: &FileMap,
) -> AppResult<Arc<dyn Sandbox>> {
    let (db, sandboxes, project, restore) = (
        db.clone(),
        sandboxes.clone(),
        project.clone(),
        restore.clone(),
    );
    tokio::spawn(async move {
        let sandbox = sandboxes
            .connect(project.id, project.sandbox_id.as_deref(), &restore)
            .await?;
        match super::project::record_sandbox_id(&db, project.id, sandbox.id()).await {
            Ok(true) => Ok(sandbox),
            Ok(false) => {
                sandboxes.destroy(project.id, sandbox.id()).await?;
                Err(AppError::NotFound("project"))
            }
            Err(err) => Err(err),
        }
    })
    .await
    .map_err(|err| AppError::Internal(format!("connecting the sandbox: {err}")))?
}

/// A live preview URL for the project, bringing its sandbox back if it timed out.
pub async fn open_preview(
    db: &DatabaseConnection,
    sandboxes: &Arc<dyn SandboxProvider>,
    viewer: Viewer,
    project_id: Uuid,
) -> AppResult<(String, String)> {
    let project = super::project::find_project(db, viewer, project_id).await?;
    let files = super::fragment::latest_files(db, project.id).await?;
    let sandbox = connect_project_sandbox(db, sandboxes, &project, &files).await?;
    let url = sandbox.preview_url().await?;
    Ok((sandbox.id().to_owned(), url))
}

/// Undo: puts an earlier version's files back into the sandbox (removing the files only later
/// versions had) and records it as the newest
/// version (an ASSISTANT message with a copy of the fragment), without a run or a credit.
pub async fn restore_fragment(
    db: &DatabaseConnection,
    bus: &dyn EventBus,
    sandboxes: &Arc<dyn SandboxProvider>,
    viewer: Viewer,
    fragment_id: Uuid,
) -> AppResult<message::Model> {
    let old = super::fragment::find_fragment(db, viewer, fragment_id).await?;
    let owner_message = message::Entity::find_by_id(old.message_id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound("fragment"))?;
    let project = super::project::find_project(db, viewer, owner_message.project_id).await?;
    if !super::run::active_run_ids(db, project.id).await?.is_empty() {
        return Err(AppError::Conflict(
            "a generation is running for this project; wait for it or cancel it".to_owned(),
        ));
    }
    let files = super::fragment::fragment_files(db, old.id).await?;
    let newest = super::fragment::latest_files(db, project.id).await?;
    let sandbox = connect_project_sandbox(db, sandboxes, &project, &files).await?;
    for (path, content) in &files {
        sandbox.write_file(path, content).await?;
    }
    // Files that only later versions made would otherwise stay (a page, a route).
    for path in newest.keys().filter(|path| !files.contains_key(*path)) {
        sandbox.remove_file(path).await?;
    }
    let url = sandbox.preview_url().await?;

    // Outside any run: other tabs on the project see the restored version come in.
    let txn = db.begin().await?;
    let reply = format!("Restored the version \u{201c}{}\u{201d}.", old.title);
    let version = super::run_outcome::Version {
        sandbox_url: url,
        title: old.title,
        files,
    };
    let message =
        super::run_outcome::record_version(&txn, project.id, None, reply, version).await?;
    txn.commit().await?;
    bus.publish(BusMessage::ProjectEvents(project.id)).await;
    Ok(message)
}
