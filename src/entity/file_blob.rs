//! Content-addressed file contents, shared by every version of every project: a file written
//! once is stored once however many versions, forks and users have it. Contents are only ever
//! read through a version's manifest (`fragment_file`), which is found through its owner, so
//! sharing a blob never shows one user's file to another; nothing looks a blob up by hash
//! for a client.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "file_blob")]
pub struct Model {
    /// SHA-256 of the content, lowercase hex.
    #[sea_orm(primary_key, auto_increment = false)]
    pub hash: String,
    pub content: String,
    /// Bytes of UTF-8 in `content`.
    pub size: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
