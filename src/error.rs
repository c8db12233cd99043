//! The application's error type, with stable codes. Converted to GraphQL errors in one place
//! (`graphql::error`) and to HTTP responses in one place (`http::error`).

use chrono::{DateTime, Utc};
use sea_orm::{DbErr, SqlErr};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("authentication required")]
    Unauthenticated,
    /// Signed in, but the credential may not do this (an API key without the scope).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadUserInput(String),
    #[error("no credits left; they renew at {reset_at}")]
    CreditsExhausted { reset_at: DateTime<Utc> },
    /// Clients get `retry_after_secs` as `extensions.retryAfter` and as a `Retry-After` header.
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// The user already has this many generations queued or running.
    #[error(
        "you already have {limit} generations queued or running; wait for one to end or cancel it"
    )]
    TooManyRuns { limit: u32 },
    /// The user's runs reached `USER_MAX_SPEND_USD_PER_WINDOW` in this credit window.
    #[error("your generations reached their spending cap of ${cap_usd:.2} for this period; it renews at {reset_at}")]
    SpendCapReached {
        cap_usd: f64,
        reset_at: DateTime<Utc>,
    },
    #[error("{0}")]
    Conflict(String),
    /// This account may not use the server's sandboxes (see `services::sandbox_access`).
    #[error("{0}")]
    SandboxUnavailable(String),
    /// Logged with its context where it is converted; clients only see "internal error".
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "NOT_FOUND",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::BadUserInput(_) => "BAD_USER_INPUT",
            Self::CreditsExhausted { .. } => "CREDITS_EXHAUSTED",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::TooManyRuns { .. } => "TOO_MANY_RUNS",
            Self::SpendCapReached { .. } => "SPEND_CAP_REACHED",
            Self::Conflict(_) => "CONFLICT",
            Self::SandboxUnavailable(_) => "SANDBOX_UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::BadUserInput(message.into())
    }

    /// RATE_LIMITED, to retry after `wait` (rounded up to whole seconds, at least one).
    pub fn rate_limited(wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Self::RateLimited {
            retry_after_secs: secs.max(1),
        }
    }

    pub fn internal(context: impl std::fmt::Display) -> Self {
        Self::Internal(context.to_string())
    }

    /// What a client may see: internal details stay in the logs.
    pub fn public_message(&self) -> String {
        match self {
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        }
    }
}

impl From<DbErr> for AppError {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                Self::Conflict("that already exists".to_owned())
            }
            _ => Self::Internal(format!("database: {err}")),
        }
    }
}

impl From<crate::auth::AuthError> for AppError {
    fn from(err: crate::auth::AuthError) -> Self {
        match err {
            // A hashing slot frees within one hash's time.
            crate::auth::AuthError::HashingBusy => {
                Self::rate_limited(std::time::Duration::from_secs(1))
            }
            other => Self::internal(other),
        }
    }
}

impl From<crate::sandbox::SandboxError> for AppError {
    fn from(err: crate::sandbox::SandboxError) -> Self {
        Self::Internal(format!("sandbox: {err}"))
    }
}

impl From<sea_orm::TransactionError<AppError>> for AppError {
    fn from(err: sea_orm::TransactionError<AppError>) -> Self {
        match err {
            sea_orm::TransactionError::Connection(db) => db.into(),
            sea_orm::TransactionError::Transaction(app) => app,
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;
