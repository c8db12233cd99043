//! A version's manifest: one row per file of a fragment, naming its content in `file_blob`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "fragment_file")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub fragment_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub path: String,
    pub hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::fragment::Entity",
        from = "Column::FragmentId",
        to = "super::fragment::Column::Id",
        on_delete = "Cascade"
    )]
    Fragment,
    #[sea_orm(
        belongs_to = "super::file_blob::Entity",
        from = "Column::Hash",
        to = "super::file_blob::Column::Hash"
    )]
    FileBlob,
}

impl Related<super::fragment::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Fragment.def()
    }
}

impl Related<super::file_blob::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::FileBlob.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
