use sea_orm::entity::prelude::*;

/// A user's endpoint that receives their projects' events, signed with `secret` (Standard
/// Webhooks). The secret is kept in clear because the server signs with it; it is shown once,
/// at creation, and never logged.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub url: String,
    /// Comma-separated event kinds (see `webhook::EventKinds`).
    pub events: String,
    /// Only this project's events; `None`: all the user's projects.
    pub project_id: Option<Uuid>,
    pub secret: String,
    pub created_at: DateTimeUtc,
    /// Set by the owner or when deliveries kept failing (or the endpoint answered 410).
    pub disabled_at: Option<DateTimeUtc>,
    /// Since when every attempt failed; cleared by a success.
    pub failing_since: Option<DateTimeUtc>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("webhook::Model")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("project_id", &self.project_id)
            .field("secret", &"<redacted>")
            .field("disabled_at", &self.disabled_at)
            .finish_non_exhaustive()
    }
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
    #[sea_orm(has_many = "super::webhook_delivery::Entity")]
    Delivery,
}

impl Related<super::webhook_delivery::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Delivery.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

/// The only way to load a webhook by id: scoped to its owner, so another user's is "not found".
pub fn find_for_owner(owner_id: Uuid, webhook_id: Uuid) -> Select<Entity> {
    Entity::find()
        .filter(Column::Id.eq(webhook_id))
        .filter(Column::UserId.eq(owner_id))
}
