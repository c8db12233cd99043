//! Sessions of built-in accounts: one row per sign-in, named by the `sid` of its tokens, so a
//! token can be revoked before it expires. Tokens of the external identity provider have no
//! session here (they end at the provider).

use std::time::Duration;

use chrono::{SubsecRound, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

use crate::entity::session;
use crate::error::{AppError, AppResult};

/// Opens a session of `user_id` lasting as long as its token. Every user's expired sessions
/// are deleted here, so the table holds only sessions that could still be used.
pub async fn create_session(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    lifetime: Duration,
) -> AppResult<session::Model> {
    let now = Utc::now();
    let lifetime = chrono::TimeDelta::from_std(lifetime).map_err(AppError::internal)?;
    session::Entity::delete_many()
        .filter(session::Column::ExpiresAt.lte(now))
        .exec(db)
        .await?;
    Ok(session::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        created_at: Set(now),
        // Whole seconds, as a token's `exp`: the session never outlives its token.
        expires_at: Set(now.trunc_subsecs(0) + lifetime),
    }
    .insert(db)
    .await?)
}

/// Whether the session exists (was not revoked) and has not expired.
pub async fn is_live(db: &impl ConnectionTrait, session_id: Uuid) -> AppResult<bool> {
    Ok(session::Entity::find_by_id(session_id)
        .filter(session::Column::ExpiresAt.gt(Utc::now()))
        .one(db)
        .await?
        .is_some())
}

/// Revokes (deletes) a session of `user_id`: its tokens are refused from now on.
pub async fn revoke_session(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    session_id: Uuid,
) -> AppResult<()> {
    session::Entity::delete_many()
        .filter(session::Column::Id.eq(session_id))
        .filter(session::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
}
