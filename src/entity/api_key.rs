use sea_orm::entity::prelude::*;

/// An API key of a user: a third party's credential with limited scopes. Only the SHA-256 of
/// its secret is stored; `prefix` (the secret's first characters) tells keys apart in lists.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_key")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub prefix: String,
    #[sea_orm(unique)]
    pub secret_hash: String,
    /// Comma-separated scope names (see `services::access::ScopeSet`).
    pub scopes: String,
    pub created_at: DateTimeUtc,
    pub expires_at: Option<DateTimeUtc>,
    pub last_used_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id",
        on_delete = "Cascade"
    )]
    User,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

/// The only way to load a key by id: scoped to its owner, so another user's key is "not found".
pub fn find_for_owner(owner_id: Uuid, key_id: Uuid) -> Select<Entity> {
    Entity::find()
        .filter(Column::Id.eq(key_id))
        .filter(Column::UserId.eq(owner_id))
}
