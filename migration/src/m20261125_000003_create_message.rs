use sea_orm_migration::prelude::*;

use super::m20261125_000002_create_project::Project;

#[derive(DeriveMigrationName)]
pub struct Migration;

// `MessageType` is the column's name, not a kind of message.
#[allow(clippy::enum_variant_names)]
#[derive(DeriveIden)]
pub enum Message {
    Table,
    Id,
    ProjectId,
    RunId,
    Role,
    MessageType,
    Content,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Message::Table)
                    .col(ColumnDef::new(Message::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Message::ProjectId).uuid().not_null())
                    // The run this message started (USER) or ended (ASSISTANT); no FK so a message
                    // never disappears with run bookkeeping.
                    .col(ColumnDef::new(Message::RunId).uuid().null())
                    .col(ColumnDef::new(Message::Role).string_len(16).not_null())
                    .col(
                        ColumnDef::new(Message::MessageType)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Message::Content).text().not_null())
                    .col(
                        ColumnDef::new(Message::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Message::Table, Message::ProjectId)
                            .to(Project::Table, Project::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_message_project_created")
                    .table(Message::Table)
                    .col(Message::ProjectId)
                    .col(Message::CreatedAt)
                    .to_owned(),
            )
            .await?;
        // At most one ASSISTANT message per run, even when a run is retried after a crash.
        manager
            .create_index(
                Index::create()
                    .name("idx_message_run_role")
                    .table(Message::Table)
                    .col(Message::RunId)
                    .col(Message::Role)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Message::Table).to_owned())
            .await
    }
}
