//! DataLoaders for every parent → child edge. Keys come from parents the viewer was already
//! allowed to see, and a fresh set is made per request.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use uuid::Uuid;

use crate::entity::{fragment, message, run};

fn db_error(err: sea_orm::DbErr) -> Arc<String> {
    tracing::error!(%err, "loader query failed");
    Arc::new("internal error".to_owned())
}

/// All messages of each project, oldest first (the connection pages over them).
pub struct MessagesByProject(pub DatabaseConnection);

impl Loader<Uuid> for MessagesByProject {
    type Value = Vec<message::Model>;
    type Error = Arc<String>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let rows = message::Entity::find()
            .filter(message::Column::ProjectId.is_in(keys.iter().copied()))
            .order_by_asc(message::Column::Id)
            .all(&self.0)
            .await
            .map_err(db_error)?;
        let mut grouped: HashMap<Uuid, Vec<message::Model>> =
            keys.iter().map(|key| (*key, Vec::new())).collect();
        for row in rows {
            grouped.entry(row.project_id).or_default().push(row);
        }
        Ok(grouped)
    }
}

/// The fragment of each message (keyed by message id).
pub struct FragmentByMessage(pub DatabaseConnection);

impl Loader<Uuid> for FragmentByMessage {
    type Value = fragment::Model;
    type Error = Arc<String>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let rows = fragment::Entity::find()
            .filter(fragment::Column::MessageId.is_in(keys.iter().copied()))
            .all(&self.0)
            .await
            .map_err(db_error)?;
        Ok(rows.into_iter().map(|row| (row.message_id, row)).collect())
    }
}

pub struct RunById(pub DatabaseConnection);

impl Loader<Uuid> for RunById {
    type Value = run::Model;
    type Error = Arc<String>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let rows = run::Entity::find()
            .filter(run::Column::Id.is_in(keys.iter().copied()))
            .all(&self.0)
            .await
            .map_err(db_error)?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }
}
