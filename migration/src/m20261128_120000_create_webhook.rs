use sea_orm_migration::prelude::*;

use super::m20261125_000001_create_user::User;
use super::m20261125_000002_create_project::Project;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Webhook {
    Table,
    Id,
    UserId,
    Url,
    Events,
    ProjectId,
    Secret,
    CreatedAt,
    DisabledAt,
    FailingSince,
}

#[derive(DeriveIden)]
enum WebhookDelivery {
    Table,
    Id,
    WebhookId,
    EventKind,
    Body,
    Status,
    Attempts,
    ResponseStatus,
    NextAttemptAt,
    LockedUntil,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Webhook::Table)
                    .col(ColumnDef::new(Webhook::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Webhook::UserId).uuid().not_null())
                    .col(ColumnDef::new(Webhook::Url).string_len(2048).not_null())
                    // Comma-separated event kinds.
                    .col(ColumnDef::new(Webhook::Events).string_len(512).not_null())
                    .col(ColumnDef::new(Webhook::ProjectId).uuid())
                    // `whsec_` + base64: kept in clear, as the server signs with it.
                    .col(ColumnDef::new(Webhook::Secret).string_len(64).not_null())
                    .col(
                        ColumnDef::new(Webhook::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Webhook::DisabledAt).timestamp_with_time_zone())
                    .col(ColumnDef::new(Webhook::FailingSince).timestamp_with_time_zone())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Webhook::Table, Webhook::UserId)
                            .to(User::Table, User::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Webhook::Table, Webhook::ProjectId)
                            .to(Project::Table, Project::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The outbox's lookup on every event, the list, the cap and the cascade.
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_user_id")
                    .table(Webhook::Table)
                    .col(Webhook::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_project_id")
                    .table(Webhook::Table)
                    .col(Webhook::ProjectId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDelivery::Table)
                    .col(
                        ColumnDef::new(WebhookDelivery::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(WebhookDelivery::WebhookId).uuid().not_null())
                    .col(
                        ColumnDef::new(WebhookDelivery::EventKind)
                            .string_len(32)
                            .not_null(),
                    )
                    // The exact bytes that are signed and sent on every attempt.
                    .col(ColumnDef::new(WebhookDelivery::Body).text().not_null())
                    .col(
                        ColumnDef::new(WebhookDelivery::Status)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WebhookDelivery::Attempts)
                            .integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(WebhookDelivery::ResponseStatus).integer())
                    .col(ColumnDef::new(WebhookDelivery::NextAttemptAt).timestamp_with_time_zone())
                    .col(ColumnDef::new(WebhookDelivery::LockedUntil).timestamp_with_time_zone())
                    .col(
                        ColumnDef::new(WebhookDelivery::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(WebhookDelivery::Table, WebhookDelivery::WebhookId)
                            .to(Webhook::Table, Webhook::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // What the worker claims: pending deliveries by due time.
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_delivery_due")
                    .table(WebhookDelivery::Table)
                    .col(WebhookDelivery::Status)
                    .col(WebhookDelivery::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        // A webhook's deliveries, newest first (ids are UUIDv7), and the cascade.
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_delivery_webhook_id")
                    .table(WebhookDelivery::Table)
                    .col(WebhookDelivery::WebhookId)
                    .col(WebhookDelivery::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WebhookDelivery::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Webhook::Table).to_owned())
            .await
    }
}
