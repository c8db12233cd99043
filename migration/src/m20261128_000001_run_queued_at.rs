//! Runs are claimed in the order they were queued, not created: a retried run queues again
//! behind the runs queued before the retry. Existing rows were queued when they were created.

use sea_orm_migration::prelude::*;

use super::m20261125_000006_create_run::Run;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RunQueue {
    QueuedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds a NOT NULL column only with a constant default; the backfill follows.
        manager
            .alter_table(
                Table::alter()
                    .table(Run::Table)
                    .add_column(
                        ColumnDef::new(RunQueue::QueuedAt)
                            .timestamp_with_time_zone()
                            .not_null()
                            .default("1970-01-01 00:00:00+00:00"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::update()
                    .table(Run::Table)
                    .value(RunQueue::QueuedAt, Expr::col(Run::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_run_status_queued")
                    .table(Run::Table)
                    .col(Run::Status)
                    .col(RunQueue::QueuedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_run_status_queued")
                    .table(Run::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Run::Table)
                    .drop_column(RunQueue::QueuedAt)
                    .to_owned(),
            )
            .await
    }
}
