//! `GET /projects/{id}/export.zip[?fragment={id}]`: a version of a project as a zip, for the
//! bearer of the same token the API takes.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::AppError;
use crate::services::export::{find_export, stream_zip};
use crate::services::user::authenticate_header;

pub fn routes() -> Router<AppState> {
    Router::new().route("/projects/{id}/export.zip", get(export_zip))
}

#[derive(Deserialize)]
struct ExportQuery {
    fragment: Option<String>,
}

async fn export_zip(
    State(state): State<AppState>,
    Path(project_id): Path<String>,
    Query(query): Query<ExportQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let header = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let viewer = authenticate_header(&state.db, &state.auth, header)
        .await?
        .ok_or(AppError::Unauthenticated)?
        .viewer;
    // An id that is no id names nothing the viewer has.
    let project_id = Uuid::parse_str(&project_id).map_err(|_| AppError::NotFound("project"))?;
    let fragment_id = query
        .fragment
        .map(|id| Uuid::parse_str(&id).map_err(|_| AppError::NotFound("fragment")))
        .transpose()?;
    let export = find_export(&state.db, viewer, project_id, fragment_id).await?;
    let disposition = format!("attachment; filename=\"{}.zip\"", export.name);
    Ok((
        [
            (CONTENT_TYPE, "application/zip".to_owned()),
            (CONTENT_DISPOSITION, disposition),
            (CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(stream_zip(export)),
    )
        .into_response())
}
