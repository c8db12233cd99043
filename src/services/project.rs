//! Projects: created from a first prompt, renamed, deleted, listed newest first.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, Statement, TransactionTrait,
};
use uuid::Uuid;

use super::message::{self, Generation};
use super::page::{Page, PageRequest};
use super::Viewer;
use crate::entity::project;
use crate::error::{AppError, AppResult};
use crate::events::{BusMessage, EventBus};
use crate::sandbox::SandboxProvider;

const MAX_NAME: usize = 120;
const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "with", "and", "for", "of", "to", "in", "on", "me", "please", "build",
    "make", "create", "that", "my",
];

/// A readable name from the prompt: "a todo app with dark mode" → "todo-app-dark-mode".
pub fn name_from_prompt(prompt: &str) -> String {
    let words: Vec<String> = prompt
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|word| !word.is_empty() && !STOP_WORDS.contains(&word.as_str()))
        .take(4)
        .collect();
    if words.is_empty() {
        "untitled-app".to_owned()
    } else {
        words.join("-").chars().take(MAX_NAME).collect()
    }
}

/// Stores the project, its first USER message and a queued run, and takes a credit — all in
/// one transaction, so a refused credit leaves nothing behind.
pub async fn create_project<C: TransactionTrait>(
    db: &C,
    bus: &dyn EventBus,
    viewer: Viewer,
    prompt: &str,
    limits: super::run::RunLimits,
) -> AppResult<(project::Model, Generation)> {
    let prompt = message::validate_content(prompt)?;
    let txn = db.begin().await?;
    // The credit first: on SQLite a write as the first statement waits for the lock.
    super::credits::consume_credit(&txn, viewer.user_id, viewer.plan).await?;
    super::run::ensure_run_slot(&txn, viewer.user_id, limits).await?;
    let now = Utc::now();
    let project = project::ActiveModel {
        id: Set(Uuid::now_v7()),
        owner_id: Set(viewer.user_id),
        name: Set(name_from_prompt(prompt)),
        sandbox_id: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&txn)
    .await?;
    let generation = message::queue_generation(&txn, project.id, prompt).await?;
    txn.commit().await?;
    generation.announce(bus).await;
    Ok((project, generation))
}

pub async fn find_project(
    db: &impl ConnectionTrait,
    viewer: Viewer,
    project_id: Uuid,
) -> AppResult<project::Model> {
    project::find_for_owner(viewer.user_id, project_id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound("project"))
}

pub async fn list_projects(
    db: &impl ConnectionTrait,
    viewer: Viewer,
    page: PageRequest,
) -> AppResult<Page<project::Model>> {
    let mut query = project::Entity::find()
        .filter(project::Column::OwnerId.eq(viewer.user_id))
        .order_by_desc(project::Column::Id)
        .limit(page.first + 1);
    if let Some(after) = page.after {
        query = query.filter(project::Column::Id.lt(after));
    }
    Ok(Page::from_overfetch(query.all(db).await?, page.first))
}

/// A name a user gives a project, trimmed: 1 to [`MAX_NAME`] characters.
pub fn validate_name(name: &str) -> AppResult<&str> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(AppError::bad_input(format!(
            "a project name has 1 to {MAX_NAME} characters"
        )));
    }
    Ok(name)
}

/// A name made from another one with `suffix`, cut to [`MAX_NAME`] characters.
pub fn derived_name(name: &str, suffix: &str) -> String {
    let keep = MAX_NAME.saturating_sub(suffix.chars().count());
    name.chars().take(keep).chain(suffix.chars()).collect()
}

pub async fn rename_project(
    db: &impl ConnectionTrait,
    viewer: Viewer,
    project_id: Uuid,
    name: &str,
) -> AppResult<project::Model> {
    let name = validate_name(name)?;
    let project = find_project(db, viewer, project_id).await?;
    let mut active: project::ActiveModel = project.into();
    active.name = Set(name.to_owned());
    active.updated_at = Set(Utc::now());
    Ok(active.update(db).await?)
}

/// Deletes the project and (by cascade) its messages, fragments, runs and events, then the file
/// contents no other version names. Runs still executing are told to stop, and its sandbox is
/// removed.
///
/// Deletion wins over a run or a restore that is connecting the sandbox at the same time: the
/// row goes in one `DELETE … RETURNING`, so its sandbox id is the last one recorded, and a
/// sandbox connected later finds no row to record itself in and is destroyed by its connector
/// (see [`record_sandbox_id`]).
pub async fn delete_project(
    db: &impl ConnectionTrait,
    bus: &dyn EventBus,
    sandboxes: &dyn SandboxProvider,
    viewer: Viewer,
    project_id: Uuid,
) -> AppResult<project::Model> {
    find_project(db, viewer, project_id).await?;
    let active_runs = super::run::active_run_ids(db, project_id).await?;
    let contents = super::fragment::project_hashes(db, project_id).await?;
    let backend = db.get_database_backend();
    let statement = Statement::from_sql_and_values(
        backend,
        "DELETE FROM project WHERE id = $1 AND owner_id = $2 RETURNING *",
        [project_id.into(), viewer.user_id.into()],
    );
    let project = project::Entity::find()
        .from_raw_sql(statement)
        .one(db)
        .await?
        // Deleted meanwhile by another request, which also removes the sandbox.
        .ok_or(AppError::NotFound("project"))?;
    for run_id in active_runs {
        bus.publish(BusMessage::CancelRun(run_id)).await;
    }
    // The project is gone either way; contents left behind cost only storage.
    if let Err(err) = super::file_blob::delete_unused(db, &contents).await {
        tracing::warn!(%err, project_id = %project.id, "could not delete the file contents of a deleted project");
    }
    if let Some(sandbox_id) = &project.sandbox_id {
        // The project is gone either way; a sandbox left behind expires (E2B) or is only disk.
        if let Err(err) = sandboxes.destroy(project.id, sandbox_id).await {
            tracing::warn!(%err, project_id = %project.id, "could not remove the sandbox of a deleted project");
        }
    }
    Ok(project)
}

/// Records the project's sandbox id; `false` when the project no longer exists. One statement,
/// ordered with [`delete_project`]'s `DELETE`: either the deletion sees this id, or this sees
/// no row.
pub async fn record_sandbox_id(
    db: &impl ConnectionTrait,
    project_id: Uuid,
    sandbox_id: &str,
) -> AppResult<bool> {
    let updated = project::Entity::update_many()
        .col_expr(
            project::Column::SandboxId,
            sea_orm::sea_query::Expr::value(sandbox_id),
        )
        .filter(project::Column::Id.eq(project_id))
        .exec(db)
        .await?;
    Ok(updated.rows_affected > 0)
}

#[cfg(test)]
mod tests {
    use super::name_from_prompt;

    #[test]
    fn names_come_from_the_prompt() {
        assert_eq!(
            name_from_prompt("a todo app with dark mode"),
            "todo-app-dark-mode"
        );
        assert_eq!(name_from_prompt("  !!  "), "untitled-app");
        assert_eq!(name_from_prompt("Build me a Kanban board"), "kanban-board");
    }
}
