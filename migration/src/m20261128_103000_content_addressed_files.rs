//! Files stored once: contents move from each fragment's `files` JSON into `file_blob`, keyed
//! by their SHA-256, and a fragment becomes a manifest of `fragment_file` rows (path → hash).
//! Existing fragments are moved in batches, then `fragment.files` is dropped.

use std::collections::BTreeMap;

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::prelude::Uuid;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend};
use sha2::{Digest, Sha256};

use super::m20261125_000004_create_fragment::Fragment;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum FileBlob {
    Table,
    Hash,
    Content,
    Size,
}

#[derive(DeriveIden)]
pub enum FragmentFile {
    Table,
    FragmentId,
    Path,
    Hash,
}

/// Fragments moved per batch: each holds a whole project, so a batch stays a few MB.
const FRAGMENTS_PER_BATCH: u64 = 20;
/// Rows per INSERT, well under the bind-parameter limits of SQLite and PostgreSQL.
const ROWS_PER_INSERT: usize = 500;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(FileBlob::Table)
                    .col(
                        ColumnDef::new(FileBlob::Hash)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(FileBlob::Content).text().not_null())
                    .col(ColumnDef::new(FileBlob::Size).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(FragmentFile::Table)
                    .col(ColumnDef::new(FragmentFile::FragmentId).uuid().not_null())
                    .col(ColumnDef::new(FragmentFile::Path).text().not_null())
                    .col(ColumnDef::new(FragmentFile::Hash).string_len(64).not_null())
                    .primary_key(
                        Index::create()
                            .col(FragmentFile::FragmentId)
                            .col(FragmentFile::Path),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(FragmentFile::Table, FragmentFile::FragmentId)
                            .to(Fragment::Table, Fragment::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(FragmentFile::Table, FragmentFile::Hash)
                            .to(FileBlob::Table, FileBlob::Hash),
                    )
                    .to_owned(),
            )
            .await?;
        // Finding whether a blob is still used (clean-up after deletions) goes by hash.
        manager
            .create_index(
                Index::create()
                    .name("idx_fragment_file_hash")
                    .table(FragmentFile::Table)
                    .col(FragmentFile::Hash)
                    .to_owned(),
            )
            .await?;
        move_fragment_files(manager).await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Fragment::Table)
                    .drop_column(Fragment::Files)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // Going back would copy every version's files into it again.
        Err(DbErr::Migration(
            "fragment files cannot be moved back into fragment.files".to_owned(),
        ))
    }
}

/// Moves every fragment's `files` JSON into the store, oldest fragment first.
async fn move_fragment_files(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let backend = manager.get_database_backend();
    let mut after: Option<Uuid> = None;
    loop {
        let mut query = Query::select();
        query
            .columns([Fragment::Id, Fragment::Files])
            .from(Fragment::Table)
            .order_by(Fragment::Id, Order::Asc)
            .limit(FRAGMENTS_PER_BATCH);
        if let Some(after) = after {
            query.and_where(Expr::col(Fragment::Id).gt(after));
        }
        let rows = db.query_all(backend.build(&query)).await?;
        if rows.is_empty() {
            return Ok(());
        }
        for row in &rows {
            let id: Uuid = row.try_get("", "id")?;
            let files: serde_json::Value = row.try_get("", "files")?;
            // An unreadable value was read as no files before; it stays that way.
            let files: BTreeMap<String, String> = serde_json::from_value(files).unwrap_or_default();
            store_fragment_files(db, backend, id, &files).await?;
            after = Some(id);
        }
    }
}

async fn store_fragment_files(
    db: &SchemaManagerConnection<'_>,
    backend: DatabaseBackend,
    fragment_id: Uuid,
    files: &BTreeMap<String, String>,
) -> Result<(), DbErr> {
    let hashed: Vec<(&String, &String, String)> = files
        .iter()
        .map(|(path, content)| (path, content, hex_sha256(content)))
        .collect();
    for chunk in hashed.chunks(ROWS_PER_INSERT) {
        let mut blobs = Query::insert();
        blobs
            .into_table(FileBlob::Table)
            .columns([FileBlob::Hash, FileBlob::Content, FileBlob::Size])
            .on_conflict(OnConflict::column(FileBlob::Hash).do_nothing().to_owned());
        let mut manifest = Query::insert();
        manifest.into_table(FragmentFile::Table).columns([
            FragmentFile::FragmentId,
            FragmentFile::Path,
            FragmentFile::Hash,
        ]);
        for (path, content, hash) in chunk {
            blobs.values_panic([
                hash.as_str().into(),
                content.as_str().into(),
                (content.len() as i64).into(),
            ]);
            manifest.values_panic([
                fragment_id.into(),
                path.as_str().into(),
                hash.as_str().into(),
            ]);
        }
        db.execute(backend.build(&blobs)).await?;
        db.execute(backend.build(&manifest)).await?;
    }
    Ok(())
}

/// The store's key; `codekraft::services::file_blob` hashes the same way.
fn hex_sha256(content: &str) -> String {
    Sha256::digest(content.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
