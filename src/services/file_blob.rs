//! The content-addressed file store: contents keyed by their SHA-256, each stored once.

use std::collections::HashSet;

use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, Set};
use sha2::{Digest, Sha256};

use crate::entity::{file_blob, fragment_file};
use crate::error::AppResult;

/// Rows per statement, well under the bind-parameter limits of SQLite and PostgreSQL.
pub const ROWS_PER_STATEMENT: usize = 500;

/// The store's key: SHA-256 of the content, lowercase hex (the migration that filled the store
/// hashes the same way).
pub fn content_hash(content: &str) -> String {
    Sha256::digest(content.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Stores the contents the store does not have yet. Only hashes travel for contents it has, so
/// a version that changes one file writes one file.
pub async fn store_contents<'a>(
    db: &impl ConnectionTrait,
    contents: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> AppResult<()> {
    let mut wanted: Vec<(&str, &str)> = contents.into_iter().collect();
    wanted.sort_unstable();
    wanted.dedup_by_key(|(hash, _)| *hash);
    let mut stored: HashSet<String> = HashSet::new();
    for chunk in wanted.chunks(ROWS_PER_STATEMENT) {
        // Shared locks (PostgreSQL; SQLite writes one at a time anyway) keep a clean-up from
        // deleting these until the manifest naming them is committed.
        let found: Vec<String> = file_blob::Entity::find()
            .select_only()
            .column(file_blob::Column::Hash)
            .filter(file_blob::Column::Hash.is_in(chunk.iter().map(|(hash, _)| *hash)))
            .lock_shared()
            .into_tuple()
            .all(db)
            .await?;
        stored.extend(found);
    }
    let missing: Vec<file_blob::ActiveModel> = wanted
        .into_iter()
        .filter(|(hash, _)| !stored.contains(*hash))
        .map(|(hash, content)| file_blob::ActiveModel {
            hash: Set(hash.to_owned()),
            content: Set(content.to_owned()),
            size: Set(content.len() as i64),
        })
        .collect();
    for chunk in missing.chunks(ROWS_PER_STATEMENT) {
        // Another writer may store the same content meanwhile: the same hash is the same row.
        file_blob::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::column(file_blob::Column::Hash)
                    .do_nothing()
                    .to_owned(),
            )
            .do_nothing()
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Deletes those of `hashes` that no version names any more (after versions were deleted).
/// A version stored meanwhile that names one holds it locked (see [`store_contents`]), and the
/// foreign key refuses a deletion that would break it: then the blob stays, a cost of storage
/// only.
pub async fn delete_unused(db: &impl ConnectionTrait, hashes: &[String]) -> AppResult<u64> {
    let mut deleted = 0;
    for chunk in hashes.chunks(ROWS_PER_STATEMENT) {
        let still_named = Query::select()
            .expr(Expr::val(1))
            .from(fragment_file::Entity)
            .and_where(
                Expr::col((fragment_file::Entity, fragment_file::Column::Hash))
                    .equals((file_blob::Entity, file_blob::Column::Hash)),
            )
            .to_owned();
        deleted += file_blob::Entity::delete_many()
            .filter(file_blob::Column::Hash.is_in(chunk.iter().cloned()))
            .filter(Expr::exists(still_named).not())
            .exec(db)
            .await?
            .rows_affected;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::content_hash;

    #[test]
    fn the_key_is_the_hex_sha256() {
        assert_eq!(
            content_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
