//! A draft version: the files a run wrote before it was cancelled, failed or hit a budget,
//! kept so nothing written is lost, but not the project's current version until restored.

use sea_orm_migration::prelude::*;

use super::m20261125_000004_create_fragment::Fragment;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum FragmentDraft {
    Draft,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Fragment::Table)
                    .add_column(
                        ColumnDef::new(FragmentDraft::Draft)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Fragment::Table)
                    .drop_column(FragmentDraft::Draft)
                    .to_owned(),
            )
            .await
    }
}
