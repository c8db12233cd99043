//! `/preview/{project_id}/…`: reverse proxy to the project's local dev server (`next dev` runs
//! with `basePath` `/preview/{project_id}`, so paths are forwarded unchanged). Starts the dev
//! server on demand and counts every request as activity for the idle timer.
//!
//! Authentication and ownership checks are layered on by the caller.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{OriginalUri, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use uuid::Uuid;

use crate::sandbox::local::LocalSandboxProvider;
use crate::sandbox::SandboxError;

#[derive(Clone)]
struct PreviewState {
    sandboxes: Arc<LocalSandboxProvider>,
    http: reqwest::Client,
}

pub fn router(sandboxes: Arc<LocalSandboxProvider>) -> Router {
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client without TLS roots or proxies always builds");
    Router::new()
        .route("/preview/{project_id}", any(proxy))
        .route("/preview/{project_id}/", any(proxy))
        .route("/preview/{project_id}/{*rest}", any(proxy))
        .with_state(PreviewState { sandboxes, http })
}

/// Connection-level headers that a proxy must not forward.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(named.iter()) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

fn error_response(err: &SandboxError) -> Response {
    let status = match err {
        SandboxError::NotFound(_) | SandboxError::PathRefused(_) => StatusCode::NOT_FOUND,
        SandboxError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    if status != StatusCode::NOT_FOUND {
        tracing::warn!(error = %err, "preview unavailable");
    }
    (status, format!("preview unavailable: {err}\n")).into_response()
}

async fn proxy(
    State(state): State<PreviewState>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
) -> Response {
    let Some(project_id) = params
        .get("project_id")
        .and_then(|id| Uuid::parse_str(id).ok())
    else {
        return (StatusCode::NOT_FOUND, "unknown project\n").into_response();
    };
    let port = match state.sandboxes.ensure_dev_server(project_id).await {
        Ok(port) => port,
        Err(err) => return error_response(&err),
    };

    // The dev server serves the same paths (its basePath is `/preview/{project_id}`), so the
    // original path is forwarded even when this router is nested.
    let uri = request
        .extensions()
        .get::<OriginalUri>()
        .map(|original| original.0.clone())
        .unwrap_or_else(|| request.uri().clone());
    let path_and_query = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let url = format!("http://127.0.0.1:{port}{path_and_query}");

    let (parts, body) = request.into_parts();
    let mut headers = parts.headers;
    let has_body = headers.contains_key(header::CONTENT_LENGTH)
        || headers.contains_key(header::TRANSFER_ENCODING);
    strip_hop_by_hop(&mut headers);
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert("x-forwarded-host", host);
    }
    let mut upstream = state.http.request(parts.method, url).headers(headers);
    if has_body {
        upstream = upstream.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let response = match upstream.send().await {
        Ok(response) => response,
        Err(err) => {
            return error_response(&SandboxError::Unavailable(format!(
                "dev server request failed: {err}"
            )))
        }
    };
    state.sandboxes.touch(project_id);

    let status = response.status();
    let mut headers = response.headers().clone();
    strip_hop_by_hop(&mut headers);
    let mut proxied = Response::new(Body::from_stream(response.bytes_stream()));
    *proxied.status_mut() = status;
    *proxied.headers_mut() = headers;
    proxied
}
