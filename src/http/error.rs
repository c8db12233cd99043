//! The one place where application errors become HTTP responses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::AppError;

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Unauthenticated => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::BadUserInput(_) => StatusCode::BAD_REQUEST,
            AppError::CreditsExhausted { .. } | AppError::SpendCapReached { .. } => {
                StatusCode::PAYMENT_REQUIRED
            }
            AppError::RateLimited { .. } | AppError::TooManyRuns { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::SandboxUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = json!({ "error": { "code": self.code(), "message": self.public_message() } });
        let mut response = (status, Json(body)).into_response();
        if let AppError::RateLimited { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}
