//! Events that are not part of a run (a restored version) have no run: `run_event.run_id`
//! becomes nullable. SQLite cannot alter a column, so there the table is rebuilt.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

use super::m20261125_000002_create_project::Project;
use super::m20261125_000006_create_run::Run;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RunEvent {
    Table,
    RunId,
}

#[derive(DeriveIden)]
enum RebuiltRunEvent {
    #[sea_orm(iden = "run_event_rebuilt")]
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
        if manager.get_database_backend() != DatabaseBackend::Sqlite {
            return manager
                .alter_table(
                    Table::alter()
                        .table(RunEvent::Table)
                        .modify_column(ColumnDef::new(RunEvent::RunId).uuid().null())
                        .to_owned(),
                )
                .await;
        }
        manager
            .create_table(
                Table::create()
                    .table(RebuiltRunEvent::Table)
                    .col(
                        ColumnDef::new(RebuiltRunEvent::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(RebuiltRunEvent::ProjectId).uuid().not_null())
                    .col(ColumnDef::new(RebuiltRunEvent::RunId).uuid().null())
                    .col(
                        ColumnDef::new(RebuiltRunEvent::Seq)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RebuiltRunEvent::Kind)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(ColumnDef::new(RebuiltRunEvent::Payload).json().not_null())
                    .col(
                        ColumnDef::new(RebuiltRunEvent::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(RebuiltRunEvent::Table, RebuiltRunEvent::ProjectId)
                            .to(Project::Table, Project::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(RebuiltRunEvent::Table, RebuiltRunEvent::RunId)
                            .to(Run::Table, Run::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared("INSERT INTO run_event_rebuilt SELECT * FROM run_event")
            .await?;
        manager
            .drop_table(Table::drop().table(RunEvent::Table).to_owned())
            .await?;
        manager
            .rename_table(
                Table::rename()
                    .table(RebuiltRunEvent::Table, RunEvent::Table)
                    .to_owned(),
            )
            .await?;
        // The indexes went with the old table.
        manager
            .create_index(
                Index::create()
                    .name("idx_run_event_project_seq")
                    .table(RunEvent::Table)
                    .col(RebuiltRunEvent::ProjectId)
                    .col(RebuiltRunEvent::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_run_event_run_seq")
                    .table(RunEvent::Table)
                    .col(RebuiltRunEvent::RunId)
                    .col(RebuiltRunEvent::Seq)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // Events without a run cannot be given one back.
        Err(DbErr::Migration(
            "run_event.run_id cannot be made NOT NULL again".to_owned(),
        ))
    }
}
