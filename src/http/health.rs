use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use sea_orm::ConnectionTrait;

use crate::app::AppState;

/// The process is up.
pub async fn healthz() -> &'static str {
    "ok"
}

/// The process can serve: the database answers.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.db.execute_unprepared("SELECT 1").await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(err) => {
            tracing::warn!(%err, "database not reachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
    }
}

/// Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = format!(
        "# HELP codekraft_db_statements_total SQL statements executed.\n\
         # TYPE codekraft_db_statements_total counter\n\
         codekraft_db_statements_total {}\n\
         # HELP codekraft_password_hashes_peak Most password hashes run at once since the start.\n\
         # TYPE codekraft_password_hashes_peak gauge\n\
         codekraft_password_hashes_peak {}\n",
        state.metrics.db_statements(),
        state.password_hashing.peak_concurrent()
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
