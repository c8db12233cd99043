//! The estimated model cost of a user's runs in the current credit window, beside the credits
//! it holds: what `USER_MAX_SPEND_USD_PER_WINDOW` caps.

use sea_orm_migration::prelude::*;

use super::m20261125_000005_create_usage::Usage;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum UsageSpend {
    SpentUsd,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Usage::Table)
                    .add_column(
                        ColumnDef::new(UsageSpend::SpentUsd)
                            .double()
                            .not_null()
                            .default(0.0),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Usage::Table)
                    .drop_column(UsageSpend::SpentUsd)
                    .to_owned(),
            )
            .await
    }
}
