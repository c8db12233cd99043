//! The content-addressed file store: contents keyed by their SHA-256, each stored once.

use std::collections::HashSet;

use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, Set};
use sha2::{Digest, Sha256};

use crate::entity::file_blob;
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
        let found: Vec<String> = file_blob::Entity::find()
            .select_only()
            .column(file_blob::Column::Hash)
            .filter(file_blob::Column::Hash.is_in(chunk.iter().map(|(hash, _)| *hash)))
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
