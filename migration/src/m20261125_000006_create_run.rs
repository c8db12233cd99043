use sea_orm_migration::prelude::*;

use super::m20261125_000002_create_project::Project;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum Run {
    Table,
    Id,
    ProjectId,
    UserMessageId,
    Status,
    Attempts,
    MaxAttempts,
    LeaseOwner,
    LeaseUntil,
    Error,
    InputTokens,
    OutputTokens,
    CostUsd,
    CreditRefunded,
    CreatedAt,
    StartedAt,
    FinishedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Run::Table)
                    .col(ColumnDef::new(Run::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Run::ProjectId).uuid().not_null())
                    .col(ColumnDef::new(Run::UserMessageId).uuid().not_null())
                    .col(ColumnDef::new(Run::Status).string_len(16).not_null())
                    .col(
                        ColumnDef::new(Run::Attempts)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(Run::MaxAttempts)
                            .integer()
                            .not_null()
                            .default(3),
                    )
                    .col(ColumnDef::new(Run::LeaseOwner).string_len(64).null())
                    .col(
                        ColumnDef::new(Run::LeaseUntil)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(Run::Error).text().null())
                    .col(
                        ColumnDef::new(Run::InputTokens)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(Run::OutputTokens)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(Run::CostUsd)
                            .double()
                            .not_null()
                            .default(0.0),
                    )
                    .col(
                        ColumnDef::new(Run::CreditRefunded)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(
                        ColumnDef::new(Run::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Run::StartedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Run::FinishedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Run::Table, Run::ProjectId)
                            .to(Project::Table, Project::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_run_status_created")
                    .table(Run::Table)
                    .col(Run::Status)
                    .col(Run::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_run_project")
                    .table(Run::Table)
                    .col(Run::ProjectId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Run::Table).to_owned())
            .await
    }
}
