//! DataLoaders for every parent → child edge. Keys come from parents the viewer was already
//! allowed to see, and a fresh set is made per request.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use uuid::Uuid;

use crate::entity::{fragment, message, run};
use crate::error::AppError;
use crate::sandbox::FileMap;
use crate::services::fragment::{file_contents, file_entries, files_by_fragment, FileEntry};
use crate::services::version_diff::{diff_versions, FileDiff};

fn db_error(err: sea_orm::DbErr) -> Arc<String> {
    tracing::error!(%err, "loader query failed");
    Arc::new("internal error".to_owned())
}

fn service_error(err: AppError) -> Arc<String> {
    tracing::error!(%err, "loader query failed");
    Arc::new("internal error".to_owned())
}

/// What to load along with a project's messages, from the fields the query selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MessageRelations {
    pub fragment: bool,
    pub run: bool,
}

/// A message with the relations its query asked for, loaded in the same batch.
#[derive(Debug, Clone)]
pub struct LoadedMessage {
    pub message: message::Model,
    /// `Some` when loaded with the message (the value itself may be absent).
    pub fragment: Option<Option<fragment::Model>>,
    pub run: Option<Option<run::Model>>,
}

/// All messages of each project, oldest first (the connection pages over them), with their
/// fragments and runs when the query selects them. Loading those here rather than through
/// their own loaders keeps a whole `projects { messages { fragment run } }` query at a fixed
/// number of statements, however the resolvers' wake-ups are scheduled.
pub struct MessagesByProject(pub DatabaseConnection);

impl Loader<(Uuid, MessageRelations)> for MessagesByProject {
    type Value = Vec<LoadedMessage>;
    type Error = Arc<String>;

    async fn load(
        &self,
        keys: &[(Uuid, MessageRelations)],
    ) -> Result<HashMap<(Uuid, MessageRelations), Self::Value>, Self::Error> {
        let project_ids: Vec<Uuid> = keys.iter().map(|(id, _)| *id).collect();
        let messages = message::Entity::find()
            .filter(message::Column::ProjectId.is_in(project_ids))
            .order_by_asc(message::Column::Id)
            .all(&self.0)
            .await
            .map_err(db_error)?;
        let wants = |pick: fn(&MessageRelations) -> bool| keys.iter().any(|(_, r)| pick(r));
        let mut fragments: HashMap<Uuid, fragment::Model> = HashMap::new();
        if wants(|r| r.fragment) {
            fragments = fragment::Entity::find()
                .filter(fragment::Column::MessageId.is_in(messages.iter().map(|m| m.id)))
                .all(&self.0)
                .await
                .map_err(db_error)?
                .into_iter()
                .map(|f| (f.message_id, f))
                .collect();
        }
        let mut runs: HashMap<Uuid, run::Model> = HashMap::new();
        if wants(|r| r.run) {
            runs = run::Entity::find()
                .filter(run::Column::Id.is_in(messages.iter().filter_map(|m| m.run_id)))
                .all(&self.0)
                .await
                .map_err(db_error)?
                .into_iter()
                .map(|r| (r.id, r))
                .collect();
        }
        Ok(keys
            .iter()
            .map(|key @ (project_id, relations)| {
                let loaded = messages
                    .iter()
                    .filter(|m| m.project_id == *project_id)
                    .map(|m| LoadedMessage {
                        message: m.clone(),
                        fragment: relations.fragment.then(|| fragments.get(&m.id).cloned()),
                        run: relations
                            .run
                            .then(|| m.run_id.and_then(|id| runs.get(&id).cloned())),
                    })
                    .collect();
                (*key, loaded)
            })
            .collect())
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

/// Every file of each fragment, with contents (keyed by fragment id).
pub struct FilesByFragment(pub DatabaseConnection);

impl Loader<Uuid> for FilesByFragment {
    type Value = FileMap;
    type Error = Arc<String>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        files_by_fragment(&self.0, keys)
            .await
            .map_err(service_error)
    }
}

/// The manifest of each fragment, without contents (keyed by fragment id).
pub struct FileEntriesByFragment(pub DatabaseConnection);

impl Loader<Uuid> for FileEntriesByFragment {
    type Value = Vec<FileEntry>;
    type Error = Arc<String>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        file_entries(&self.0, keys).await.map_err(service_error)
    }
}

/// Single files' contents, keyed by (fragment id, path).
pub struct FileByPath(pub DatabaseConnection);

impl Loader<(Uuid, String)> for FileByPath {
    type Value = String;
    type Error = Arc<String>;

    async fn load(
        &self,
        keys: &[(Uuid, String)],
    ) -> Result<HashMap<(Uuid, String), Self::Value>, Self::Error> {
        file_contents(&self.0, keys).await.map_err(service_error)
    }
}

/// What changed between two versions, for the viewer named in the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DiffKey {
    pub viewer_id: Uuid,
    pub fragment_id: Uuid,
    pub against: Uuid,
}

/// Diffs of versions, absent when a version is not the viewer's.
pub struct DiffByVersions(pub DatabaseConnection);

impl Loader<DiffKey> for DiffByVersions {
    type Value = Vec<FileDiff>;
    type Error = Arc<String>;

    async fn load(&self, keys: &[DiffKey]) -> Result<HashMap<DiffKey, Self::Value>, Self::Error> {
        // One viewer per request in practice; grouped so that one never sees another's.
        let mut by_viewer: HashMap<Uuid, Vec<(Uuid, Uuid)>> = HashMap::new();
        for key in keys {
            by_viewer
                .entry(key.viewer_id)
                .or_default()
                .push((key.fragment_id, key.against));
        }
        let mut diffs = HashMap::new();
        for (viewer_id, pairs) in by_viewer {
            let found = diff_versions(&self.0, viewer_id, &pairs)
                .await
                .map_err(service_error)?;
            diffs.extend(found.into_iter().map(|((fragment_id, against), diff)| {
                let key = DiffKey {
                    viewer_id,
                    fragment_id,
                    against,
                };
                (key, diff)
            }));
        }
        Ok(diffs)
    }
}
