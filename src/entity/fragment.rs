use sea_orm::entity::prelude::*;
use sea_orm::QuerySelect;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "fragment")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub message_id: Uuid,
    pub sandbox_url: String,
    pub title: String,
    pub created_at: DateTimeUtc,
    /// Files a run wrote before it was cancelled, failed or hit a budget: kept, but not the
    /// project's current version until restored.
    pub draft: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::message::Entity",
        from = "Column::MessageId",
        to = "super::message::Column::Id",
        on_delete = "Cascade"
    )]
    Message,
}

impl Related<super::message::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Message.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

/// A fragment, only if the project it belongs to is owned by `owner_id`.
pub fn find_for_owner(owner_id: Uuid, fragment_id: Uuid) -> Select<Entity> {
    find_owned(owner_id, [fragment_id])
}

/// Those of the fragments whose projects are owned by `owner_id`.
pub fn find_owned(owner_id: Uuid, fragment_ids: impl IntoIterator<Item = Uuid>) -> Select<Entity> {
    Entity::find()
        .filter(Column::Id.is_in(fragment_ids))
        .inner_join(super::message::Entity)
        .join(
            sea_orm::JoinType::InnerJoin,
            super::message::Relation::Project.def(),
        )
        .filter(super::project::Column::OwnerId.eq(owner_id))
}
