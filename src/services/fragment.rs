//! Fragments: the result of a generation (preview URL, title, files), one per ASSISTANT message.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
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
