//! Fork: a new project that starts from any version of the viewer's, free of charge.

use std::sync::Arc;

use chrono::Utc;
use sea_orm::{ActiveModelTrait, DatabaseConnection, EntityTrait, Set, TransactionTrait};
use uuid::Uuid;

use super::fragment::{create_fragment, find_fragment, fragment_files, NewFragment};
use super::project::{delete_project, derived_name, find_project, validate_name};
use super::sandbox::connect_project_sandbox;
use super::Viewer;
use crate::entity::message::{self, MessageType, Role};
use crate::entity::project;
use crate::error::{AppError, AppResult};
use crate::events::EventBus;
use crate::sandbox::{FileMap, SandboxProvider};

/// Starts a project from version `fragment_id`: its files are the new project's first version
/// (an ASSISTANT message saying where it came from), in a fresh sandbox. `name` defaults to
/// the source project's with `-fork`. The source project is only read.
pub async fn fork_project(
    db: &DatabaseConnection,
    bus: &dyn EventBus,
    sandboxes: &Arc<dyn SandboxProvider>,
    viewer: Viewer,
    fragment_id: Uuid,
    name: Option<&str>,
) -> AppResult<project::Model> {
    let source = find_fragment(db, viewer, fragment_id).await?;
    let source_message = message::Entity::find_by_id(source.message_id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound("fragment"))?;
    let source_project = find_project(db, viewer, source_message.project_id).await?;
    let name = match name {
        Some(name) => validate_name(name)?.to_owned(),
        None => derived_name(&source_project.name, "-fork"),
    };
    let files = fragment_files(db, source.id).await?;

    let now = Utc::now();
    let project = project::ActiveModel {
        id: Set(Uuid::now_v7()),
        owner_id: Set(viewer.user_id),
        name: Set(name),
        sandbox_id: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(db)
    .await?;
    let content = format!(
        "Forked from the version \u{201c}{}\u{201d} of {}.",
        source.title, source_project.name
    );
    // The sandbox needs the project's row; a fork that cannot get one is taken back whole.
    if let Err(err) =
        store_first_version(db, sandboxes, &project, &source.title, content, &files).await
    {
        if let Err(cleanup) = delete_project(db, bus, sandboxes.as_ref(), viewer, project.id).await
        {
            tracing::warn!(%cleanup, project_id = %project.id, "could not remove a failed fork");
        }
        return Err(err);
    }
    Ok(project)
}

/// Restores `files` into a new sandbox of `project` and stores them as its first version.
async fn store_first_version(
    db: &DatabaseConnection,
    sandboxes: &Arc<dyn SandboxProvider>,
    project: &project::Model,
    title: &str,
    content: String,
    files: &FileMap,
) -> AppResult<()> {
    let sandbox = connect_project_sandbox(db, sandboxes, project, files).await?;
    let sandbox_url = sandbox.preview_url().await?;
    let txn = db.begin().await?;
    let message = message::ActiveModel {
        id: Set(Uuid::now_v7()),
        project_id: Set(project.id),
        run_id: Set(None),
        role: Set(Role::Assistant),
        message_type: Set(MessageType::Result),
        content: Set(content),
        created_at: Set(Utc::now()),
    }
    .insert(&txn)
    .await?;
    let new = NewFragment {
        message_id: message.id,
        sandbox_url,
        title: title.to_owned(),
        draft: false,
    };
    create_fragment(&txn, new, files).await?;
    txn.commit().await?;
    Ok(())
}
