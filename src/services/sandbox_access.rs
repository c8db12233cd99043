//! Who may use this server's sandboxes. Isolated sandboxes serve every account. Without
//! isolation (local sandboxes with no working jail, where generated code runs as the server's
//! user) the server fails closed: only its first account may generate, preview or restore.

use sea_orm::{ConnectionTrait, EntityTrait, QueryOrder, QuerySelect};

use super::Viewer;
use crate::entity::user;
use crate::error::{AppError, AppResult};
use crate::sandbox::SandboxIsolation;

pub async fn ensure_sandbox_access(
    db: &impl ConnectionTrait,
    isolation: &SandboxIsolation,
    viewer: Viewer,
) -> AppResult<()> {
    let SandboxIsolation::SingleAccount { reason } = isolation else {
        return Ok(());
    };
    let first: Option<uuid::Uuid> = user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .order_by_asc(user::Column::CreatedAt)
        .order_by_asc(user::Column::Id)
        .into_tuple()
        .one(db)
        .await?;
    if first == Some(viewer.user_id) {
        return Ok(());
    }
    Err(AppError::SandboxUnavailable(format!(
        "this server's sandboxes are not isolated ({reason}), so it serves its first account \
         only; ask the operator to enable the sandbox jail or E2B"
    )))
}
