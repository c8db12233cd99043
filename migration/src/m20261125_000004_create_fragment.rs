use sea_orm_migration::prelude::*;

use super::m20261125_000003_create_message::Message;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum Fragment {
    Table,
    Id,
    MessageId,
    SandboxUrl,
    Title,
    Files,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Fragment::Table)
                    .col(ColumnDef::new(Fragment::Id).uuid().not_null().primary_key())
                    .col(
                        ColumnDef::new(Fragment::MessageId)
                            .uuid()
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(Fragment::SandboxUrl)
                            .string_len(2048)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Fragment::Title).string_len(255).not_null())
                    .col(ColumnDef::new(Fragment::Files).json().not_null())
                    .col(
                        ColumnDef::new(Fragment::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Fragment::Table, Fragment::MessageId)
                            .to(Message::Table, Message::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Fragment::Table).to_owned())
            .await
    }
}
