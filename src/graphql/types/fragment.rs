use async_graphql::{ComplexObject, Context, Enum, SimpleObject, ID};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{parse_id, to_id};
use crate::entity::fragment;
use crate::error::AppError;
use crate::graphql::context::ContextExt;
use crate::graphql::error::GqlResult;
use crate::graphql::limits;
use crate::graphql::loaders::{
    DiffByVersions, DiffKey, FileByPath, FileEntriesByFragment, FilesByFragment,
};
use crate::sandbox::FileMap;
use crate::services::access::Permission;
use crate::services::{fragment as versions, version_diff};

/// Longest path `Fragment.file` looks up.
const MAX_PATH_BYTES: usize = 4096;

/// A generated app — one version of the project: where it runs and the files it is made of.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Fragment {
    pub id: ID,
    pub message_id: ID,
    pub sandbox_url: String,
    pub title: String,
    pub created_at: DateTime<Utc>,
    /// What a cancelled or failed run wrote: not the project's current version until restored
    /// (`restoreFragment`); `discardDraft` deletes it.
    pub draft: bool,
    #[graphql(skip)]
    pub uuid: Uuid,
}

impl From<fragment::Model> for Fragment {
    fn from(model: fragment::Model) -> Self {
        Self {
            id: to_id(model.id),
            uuid: model.id,
            message_id: to_id(model.message_id),
            sandbox_url: model.sandbox_url,
            title: model.title,
            created_at: model.created_at,
            draft: model.draft,
        }
    }
}

/// A file of a version, without its content.
#[derive(SimpleObject)]
pub struct FileEntry {
    pub path: String,
    /// Bytes of UTF-8.
    pub size: i64,
    /// SHA-256 of the content, lowercase hex: equal hashes, equal files.
    pub hash: String,
}

impl From<versions::FileEntry> for FileEntry {
    fn from(entry: versions::FileEntry) -> Self {
        Self {
            path: entry.path,
            size: entry.size,
            hash: entry.hash,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum FileStatus {
    Added,
    Removed,
    Changed,
}

/// How one file differs between two versions.
#[derive(SimpleObject)]
pub struct FileDiff {
    pub path: String,
    pub status: FileStatus,
    /// Unified diff from the earlier version's file to this one's. A patch over 64 KiB is cut,
    /// its last line starting with `\ patch truncated by CodeKraft:`.
    pub patch: String,
}

impl From<version_diff::FileDiff> for FileDiff {
    fn from(diff: version_diff::FileDiff) -> Self {
        Self {
            path: diff.path,
            status: match diff.status {
                version_diff::FileStatus::Added => FileStatus::Added,
                version_diff::FileStatus::Removed => FileStatus::Removed,
                version_diff::FileStatus::Changed => FileStatus::Changed,
            },
            patch: diff.patch,
        }
    }
}

#[ComplexObject]
impl Fragment {
    /// `{ "app/page.tsx": "…", … }`: every file written in the project so far.
    #[graphql(complexity = "limits::FILES_COST")]
    async fn files(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<async_graphql::Json<FileMap>> {
        Ok(async_graphql::Json(
            ctx.loader::<FilesByFragment>()
                .load_one(self.uuid)
                .await?
                .unwrap_or_default(),
        ))
    }

    /// Every file of this version, by path, without contents.
    #[graphql(complexity = "limits::FILE_LIST_COST")]
    async fn file_list(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<FileEntry>> {
        Ok(ctx
            .loader::<FileEntriesByFragment>()
            .load_one(self.uuid)
            .await?
            .unwrap_or_default()
            .into_iter()
            .map(FileEntry::from)
            .collect())
    }

    /// The content of one file of this version; null when the version has no such file.
    #[graphql(complexity = "limits::FILE_COST")]
    async fn file(&self, ctx: &Context<'_>, path: String) -> async_graphql::Result<Option<String>> {
        if path.len() > MAX_PATH_BYTES {
            return Err(AppError::bad_input(format!(
                "a path has at most {MAX_PATH_BYTES} bytes"
            )))
            .gql();
        }
        Ok(ctx
            .loader::<FileByPath>()
            .load_one((self.uuid, path))
            .await?)
    }

    /// What changed from version `against` (one of the viewer's, of any project) to this one.
    #[graphql(complexity = "limits::DIFF_COST")]
    async fn diff(&self, ctx: &Context<'_>, against: ID) -> async_graphql::Result<Vec<FileDiff>> {
        let key = DiffKey {
            viewer_id: ctx.viewer(Permission::Read)?.user_id,
            fragment_id: self.uuid,
            against: parse_id(&against, "fragment").gql()?,
        };
        let diff = ctx
            .loader::<DiffByVersions>()
            .load_one(key)
            .await?
            .ok_or(AppError::NotFound("fragment"))
            .gql()?;
        Ok(diff.into_iter().map(FileDiff::from).collect())
    }
}
