use sea_orm::entity::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (`next_attempt_at`).
    #[sea_orm(string_value = "PENDING")]
    Pending,
    /// The endpoint answered 2xx.
    #[sea_orm(string_value = "SUCCEEDED")]
    Succeeded,
    /// Every attempt failed, or the webhook was disabled.
    #[sea_orm(string_value = "FAILED")]
    Failed,
}

/// One event for one webhook: an outbox row written with the event, delivered at least once.
/// Its id is the `webhook-id` header (`msg_` + the id's hex), the same on every attempt.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_delivery")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event_kind: String,
    /// The JSON body, exactly as signed and sent.
    pub body: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    /// The last attempt's HTTP status; `None` before one, or when it got no answer.
    pub response_status: Option<i32>,
    pub next_attempt_at: Option<DateTimeUtc>,
    /// A worker holds the delivery until then (its lease).
    pub locked_until: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::webhook::Entity",
        from = "Column::WebhookId",
        to = "super::webhook::Column::Id",
        on_delete = "Cascade"
    )]
    Webhook,
}

impl Related<super::webhook::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Webhook.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
