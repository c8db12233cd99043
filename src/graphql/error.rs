//! The one place where application errors become GraphQL errors (`extensions.code`).

use async_graphql::{ErrorExtensions, ServerError};

use crate::error::AppError;

/// The extension of RATE_LIMITED errors: seconds to wait before trying again.
pub const RETRY_AFTER: &str = "retryAfter";

impl ErrorExtensions for AppError {
    fn extend(&self) -> async_graphql::Error {
        async_graphql::Error::new(self.public_message()).extend_with(|_, extensions| {
            extensions.set("code", self.code());
            match self {
                AppError::CreditsExhausted { reset_at }
                | AppError::SpendCapReached { reset_at, .. } => {
                    extensions.set("resetAt", reset_at.to_rfc3339());
                }
                AppError::RateLimited { retry_after_secs } => {
                    extensions.set(RETRY_AFTER, *retry_after_secs);
                }
                _ => {}
            }
        })
    }
}

/// `service().await.gql()?` in resolvers: every service error keeps its code.
pub trait GqlResult<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> GqlResult<T> for Result<T, AppError> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|err| err.extend())
    }
}

/// Errors raised by the engine itself (syntax, validation, bad variables) carry no code; give
/// them one so every error a client sees has `extensions.code`.
pub fn with_default_code(mut error: ServerError, code: &str) -> ServerError {
    let has_code = error
        .extensions
        .as_ref()
        .is_some_and(|extensions| extensions.get("code").is_some());
    if !has_code {
        error
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", code);
    }
    error
}
