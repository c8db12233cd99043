//! Fragments: the result of a generation (preview URL, title, files), one per ASSISTANT message.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
};
use uuid::Uuid;

use super::Viewer;
use crate::entity::{fragment, message};
use crate::error::{AppError, AppResult};
use crate::sandbox::FileMap;

pub async fn find_fragment(
    db: &impl ConnectionTrait,
    viewer: Viewer,
    fragment_id: Uuid,
) -> AppResult<fragment::Model> {
    fragment::find_for_owner(viewer.user_id, fragment_id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound("fragment"))
}

/// Stores the fragment of an ASSISTANT message.
pub async fn create_fragment(
    db: &impl ConnectionTrait,
    message_id: Uuid,
    sandbox_url: String,
    title: String,
    files: &FileMap,
) -> AppResult<fragment::Model> {
    Ok(fragment::ActiveModel {
        id: Set(Uuid::now_v7()),
        message_id: Set(message_id),
        sandbox_url: Set(sandbox_url),
        title: Set(title),
        files: Set(serde_json::to_value(files).unwrap_or_default()),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await?)
}

/// Files of a fragment as a map (an unreadable value is no files).
pub fn fragment_files(fragment: &fragment::Model) -> FileMap {
    serde_json::from_value(fragment.files.clone()).unwrap_or_default()
}

/// The files of the project's newest fragment: what a new sandbox is restored from and what a
/// follow-up builds on (none before the first result).
pub async fn latest_files(db: &impl ConnectionTrait, project_id: Uuid) -> AppResult<FileMap> {
    Ok(fragment::Entity::find()
        .inner_join(message::Entity)
        .filter(message::Column::ProjectId.eq(project_id))
        .order_by_desc(fragment::Column::CreatedAt)
        .one(db)
        .await?
        .map(|latest| fragment_files(&latest))
        .unwrap_or_default())
}
