//! Fragments: the versions of a project, one per ASSISTANT result (preview URL, title, files).
//! A version's files are a manifest (`fragment_file`: path → hash) over the content-addressed
//! store (`file_blob`), so a follow-up that changes one file stores one file.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, RelationTrait, Set,
};
use uuid::Uuid;

use super::file_blob::{content_hash, store_contents, ROWS_PER_STATEMENT};
use super::Viewer;
use crate::entity::{file_blob, fragment, fragment_file, message};
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

/// A version about to be stored, apart from its files.
pub struct NewFragment {
    pub message_id: Uuid,
    pub sandbox_url: String,
    pub title: String,
    pub draft: bool,
}

/// Stores a version: its files go into the store (only the contents it lacks) and its
/// manifest names them. The one way a fragment is made, so every version has its files.
pub async fn create_fragment(
    db: &impl ConnectionTrait,
    new: NewFragment,
    files: &FileMap,
) -> AppResult<fragment::Model> {
    let fragment = fragment::ActiveModel {
        id: Set(Uuid::now_v7()),
        message_id: Set(new.message_id),
        sandbox_url: Set(new.sandbox_url),
        title: Set(new.title),
        created_at: Set(Utc::now()),
        draft: Set(new.draft),
    }
    .insert(db)
    .await?;
    let hashed: Vec<(&str, &str, String)> = files
        .iter()
        .map(|(path, content)| (path.as_str(), content.as_str(), content_hash(content)))
        .collect();
    store_contents(
        db,
        hashed
            .iter()
            .map(|(_, content, hash)| (hash.as_str(), *content)),
    )
    .await?;
    let manifest: Vec<fragment_file::ActiveModel> = hashed
        .iter()
        .map(|(path, _, hash)| fragment_file::ActiveModel {
            fragment_id: Set(fragment.id),
            path: Set((*path).to_owned()),
            hash: Set(hash.clone()),
        })
        .collect();
    for chunk in manifest.chunks(ROWS_PER_STATEMENT) {
        fragment_file::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(db)
            .await?;
    }
    Ok(fragment)
}

/// One file of a version's manifest, without its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    /// Bytes of UTF-8.
    pub size: i64,
    /// SHA-256 of the content, lowercase hex.
    pub hash: String,
}

/// The manifests of these fragments (sorted by path), in one statement per
/// [`ROWS_PER_STATEMENT`] fragments. Callers pass fragments the viewer may see.
pub async fn file_entries(
    db: &impl ConnectionTrait,
    fragment_ids: &[Uuid],
) -> AppResult<HashMap<Uuid, Vec<FileEntry>>> {
    let mut entries: HashMap<Uuid, Vec<FileEntry>> = HashMap::new();
    for chunk in fragment_ids.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<(Uuid, String, i64, String)> = fragment_file::Entity::find()
            .select_only()
            .column(fragment_file::Column::FragmentId)
            .column(fragment_file::Column::Path)
            .column(file_blob::Column::Size)
            .column(fragment_file::Column::Hash)
            .inner_join(file_blob::Entity)
            .filter(fragment_file::Column::FragmentId.is_in(chunk.iter().copied()))
            .order_by_asc(fragment_file::Column::Path)
            .into_tuple()
            .all(db)
            .await?;
        for (fragment_id, path, size, hash) in rows {
            entries
                .entry(fragment_id)
                .or_default()
                .push(FileEntry { path, size, hash });
        }
    }
    Ok(entries)
}

/// Every file of these fragments, with contents. Callers pass fragments the viewer may see.
pub async fn files_by_fragment(
    db: &impl ConnectionTrait,
    fragment_ids: &[Uuid],
) -> AppResult<HashMap<Uuid, FileMap>> {
    let mut files: HashMap<Uuid, FileMap> = HashMap::new();
    for chunk in fragment_ids.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<(Uuid, String, String)> = fragment_file::Entity::find()
            .select_only()
            .column(fragment_file::Column::FragmentId)
            .column(fragment_file::Column::Path)
            .column(file_blob::Column::Content)
            .inner_join(file_blob::Entity)
            .filter(fragment_file::Column::FragmentId.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(db)
            .await?;
        for (fragment_id, path, content) in rows {
            files.entry(fragment_id).or_default().insert(path, content);
        }
    }
    Ok(files)
}

/// Every file of one fragment the viewer may see.
pub async fn fragment_files(db: &impl ConnectionTrait, fragment_id: Uuid) -> AppResult<FileMap> {
    Ok(files_by_fragment(db, &[fragment_id])
        .await?
        .remove(&fragment_id)
        .unwrap_or_default())
}

/// The content of single files, by (fragment, path); an absent file has no entry. One
/// statement for a batch of fragments and paths. Callers pass fragments the viewer may see.
pub async fn file_contents(
    db: &impl ConnectionTrait,
    wanted: &[(Uuid, String)],
) -> AppResult<HashMap<(Uuid, String), String>> {
    let mut found = HashMap::new();
    for chunk in wanted.chunks(ROWS_PER_STATEMENT) {
        let asked: HashSet<&(Uuid, String)> = chunk.iter().collect();
        let fragment_ids: BTreeSet<Uuid> = chunk.iter().map(|(id, _)| *id).collect();
        let paths: BTreeSet<&str> = chunk.iter().map(|(_, path)| path.as_str()).collect();
        let rows: Vec<(Uuid, String, String)> = fragment_file::Entity::find()
            .select_only()
            .column(fragment_file::Column::FragmentId)
            .column(fragment_file::Column::Path)
            .column(file_blob::Column::Content)
            .inner_join(file_blob::Entity)
            .filter(fragment_file::Column::FragmentId.is_in(fragment_ids))
            .filter(fragment_file::Column::Path.is_in(paths))
            .into_tuple()
            .all(db)
            .await?;
        // The statement matches every asked path in every asked fragment; keep the pairs asked.
        for (fragment_id, path, content) in rows {
            let key = (fragment_id, path);
            if asked.contains(&key) {
                found.insert(key, content);
            }
        }
    }
    Ok(found)
}

/// Those of `fragment_ids` that are versions of `owner_id`'s projects, in one statement.
pub async fn owned_fragment_ids(
    db: &impl ConnectionTrait,
    owner_id: Uuid,
    fragment_ids: &[Uuid],
) -> AppResult<HashSet<Uuid>> {
    let mut owned = HashSet::new();
    for chunk in fragment_ids.chunks(ROWS_PER_STATEMENT) {
        let found: Vec<Uuid> = fragment::find_owned(owner_id, chunk.iter().copied())
            .select_only()
            .column(fragment::Column::Id)
            .into_tuple()
            .all(db)
            .await?;
        owned.extend(found);
    }
    Ok(owned)
}

/// Every content the project's versions name, once each.
pub async fn project_hashes(db: &impl ConnectionTrait, project_id: Uuid) -> AppResult<Vec<String>> {
    Ok(fragment_file::Entity::find()
        .select_only()
        .column(fragment_file::Column::Hash)
        .distinct()
        .inner_join(fragment::Entity)
        .join(
            sea_orm::JoinType::InnerJoin,
            fragment::Relation::Message.def(),
        )
        .filter(message::Column::ProjectId.eq(project_id))
        .into_tuple()
        .all(db)
        .await?)
}

/// The project's newest version, if it has one; drafts are not versions until restored.
pub async fn latest_fragment(
    db: &impl ConnectionTrait,
    project_id: Uuid,
) -> AppResult<Option<fragment::Model>> {
    Ok(fragment::Entity::find()
        .inner_join(message::Entity)
        .filter(message::Column::ProjectId.eq(project_id))
        .filter(fragment::Column::Draft.eq(false))
        .order_by_desc(fragment::Column::CreatedAt)
        .order_by_desc(fragment::Column::Id)
        .one(db)
        .await?)
}

/// The files of the project's newest fragment: what a new sandbox is restored from and what a
/// follow-up builds on (none before the first result).
pub async fn latest_files(db: &impl ConnectionTrait, project_id: Uuid) -> AppResult<FileMap> {
    match latest_fragment(db, project_id).await? {
        Some(latest) => fragment_files(db, latest.id).await,
        None => Ok(FileMap::new()),
    }
}

/// Deletes a draft version of the viewer's (its files stay in the store while another version
/// names them). CONFLICT for a version that is not a draft.
pub async fn discard_draft<C: ConnectionTrait + sea_orm::TransactionTrait>(
    db: &C,
    bus: &dyn crate::events::EventBus,
    viewer: Viewer,
    fragment_id: Uuid,
) -> AppResult<Uuid> {
    let txn = db.begin().await?;
    let draft = find_fragment(&txn, viewer, fragment_id).await?;
    if !draft.draft {
        return Err(AppError::Conflict(
            "only a draft version can be discarded".to_owned(),
        ));
    }
    let project_id = message::Entity::find_by_id(draft.message_id)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("fragment"))?
        .project_id;
    let hashes: Vec<String> = fragment_file::Entity::find()
        .select_only()
        .column(fragment_file::Column::Hash)
        .filter(fragment_file::Column::FragmentId.eq(draft.id))
        .into_tuple()
        .all(&txn)
        .await?;
    fragment_file::Entity::delete_many()
        .filter(fragment_file::Column::FragmentId.eq(draft.id))
        .exec(&txn)
        .await?;
    fragment::Entity::delete_by_id(draft.id).exec(&txn).await?;
    crate::events::record_event(
        &txn,
        project_id,
        None,
        crate::events::RunEventData::DraftDiscarded {
            fragment_id: draft.id,
        },
    )
    .await?;
    txn.commit().await?;
    bus.publish(crate::events::BusMessage::ProjectEvents(project_id))
        .await;
    if let Err(err) = super::file_blob::delete_unused(db, &hashes).await {
        tracing::warn!(%err, "could not delete the discarded draft's contents");
    }
    Ok(project_id)
}
