//! Database schema, written with the sea-query builder so it runs on SQLite and PostgreSQL.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_create_user;
mod m20261125_000002_create_project;
mod m20261125_000003_create_message;
mod m20261125_000004_create_fragment;
mod m20261125_000005_create_usage;
mod m20261125_000006_create_run;
mod m20261125_000007_create_run_event;
mod m20261125_000008_create_sign_in_failure;
mod m20261125_000009_project_events_without_run;
mod m20261128_000001_run_queued_at;
mod m20261128_000010_create_session;
mod m20261128_000020_create_api_key;
mod m20261128_103000_content_addressed_files;
mod m20261128_120000_create_webhook;
mod m20261128_120000_usage_spent_usd;
mod m20261128_120010_fragment_draft;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_create_user::Migration),
            Box::new(m20261125_000002_create_project::Migration),
            Box::new(m20261125_000003_create_message::Migration),
            Box::new(m20261125_000004_create_fragment::Migration),
            Box::new(m20261125_000005_create_usage::Migration),
            Box::new(m20261125_000006_create_run::Migration),
            Box::new(m20261125_000007_create_run_event::Migration),
            Box::new(m20261125_000008_create_sign_in_failure::Migration),
            Box::new(m20261125_000009_project_events_without_run::Migration),
            Box::new(m20261128_000001_run_queued_at::Migration),
            Box::new(m20261128_000010_create_session::Migration),
            Box::new(m20261128_000020_create_api_key::Migration),
            Box::new(m20261128_103000_content_addressed_files::Migration),
            Box::new(m20261128_120000_create_webhook::Migration),
            Box::new(m20261128_120000_usage_spent_usd::Migration),
            Box::new(m20261128_120010_fragment_draft::Migration),
        ]
    }
}
