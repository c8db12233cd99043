use sea_orm_migration::prelude::*;

use super::m20261125_000002_create_project::Project;
use super::m20261125_000006_create_run::Run;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RunEvent {
    Table,
    Id,
    ProjectId,
    RunId,
    Seq,
    Kind,
    Payload,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RunEvent::Table)
                    .col(ColumnDef::new(RunEvent::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(RunEvent::ProjectId).uuid().not_null())
                    .col(ColumnDef::new(RunEvent::RunId).uuid().not_null())
                    // Per-project sequence number: the cursor a subscriber resumes from.
                    .col(ColumnDef::new(RunEvent::Seq).big_integer().not_null())
                    .col(ColumnDef::new(RunEvent::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(RunEvent::Payload).json().not_null())
                    .col(
                        ColumnDef::new(RunEvent::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(RunEvent::Table, RunEvent::ProjectId)
                            .to(Project::Table, Project::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(RunEvent::Table, RunEvent::RunId)
                            .to(Run::Table, Run::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_run_event_project_seq")
                    .table(RunEvent::Table)
                    .col(RunEvent::ProjectId)
                    .col(RunEvent::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_run_event_run_seq")
                    .table(RunEvent::Table)
                    .col(RunEvent::RunId)
                    .col(RunEvent::Seq)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RunEvent::Table).to_owned())
            .await
    }
}
