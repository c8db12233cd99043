//! Fragments: the result of a generation (preview URL, title, files), one per ASSISTANT message.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use uuid::Uuid;

use super::Viewer;
use crate::entity::{fragment, message};
use crate::error::{AppError, AppResult};

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

/// The newest fragment of a project: the files a new sandbox is restored from, and what a
/// follow-up builds on.
pub async fn latest_fragment(
    db: &impl ConnectionTrait,
    project_id: Uuid,
) -> AppResult<Option<fragment::Model>> {
    Ok(fragment::Entity::find()
        .inner_join(message::Entity)
        .filter(message::Column::ProjectId.eq(project_id))
        .order_by_desc(fragment::Column::CreatedAt)
        .one(db)
        .await?)
}
