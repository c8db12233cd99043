//! Durable runs: a DB-backed queue that workers claim under a lease, and the worker pool.

pub mod queue;
pub mod worker;

pub use worker::start_workers;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error(transparent)]
    App(#[from] crate::error::AppError),
}
