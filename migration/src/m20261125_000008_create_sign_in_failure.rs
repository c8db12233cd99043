use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SignInFailure {
    Table,
    Id,
    Email,
    FailedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SignInFailure::Table)
                    .col(
                        ColumnDef::new(SignInFailure::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    // Not a foreign key: unknown emails are counted too.
                    .col(
                        ColumnDef::new(SignInFailure::Email)
                            .string_len(320)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(SignInFailure::FailedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // Counting an email's recent failures.
        manager
            .create_index(
                Index::create()
                    .name("idx_sign_in_failure_email_failed_at")
                    .table(SignInFailure::Table)
                    .col(SignInFailure::Email)
                    .col(SignInFailure::FailedAt)
                    .to_owned(),
            )
            .await?;
        // Pruning every email's expired failures.
        manager
            .create_index(
                Index::create()
                    .name("idx_sign_in_failure_failed_at")
                    .table(SignInFailure::Table)
                    .col(SignInFailure::FailedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SignInFailure::Table).to_owned())
            .await
    }
}
