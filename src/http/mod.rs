//! The HTTP adapter: GraphQL (HTTP + WS), GraphiQL, health, metrics, project export, web
//! client; and the preview listener's proxy.

mod error;
mod export;
mod graphql;
mod health;
pub mod preview;
mod security_headers;

use axum::http::{HeaderValue, Method};
use axum::routing::get;
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::services::{ServeDir, ServeFile};
use tower_http::trace::TraceLayer;

use crate::app::AppState;

pub fn router(state: AppState) -> Router {
    let web_client = &state.config.web_client_dir;
    let index = web_client.join("index.html");
    let static_files = ServeDir::new(web_client).fallback(ServeFile::new(index));
    // Previews have a listener of their own (see `app::start`); old links are sent there.
    let previews = match &state.local_sandboxes {
        Some(local) => preview::redirects_to_origin(local.config().preview_origin.clone()),
        None => Router::new(),
    };
    let router = Router::new()
        .merge(graphql::routes(state.clone()))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(export::routes())
        .with_state(state.clone())
        .merge(previews)
        .fallback_service(static_files)
        .layer(cors(&state.config.cors_origins))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid));
    security_headers::apply(router, &state)
}

/// Every log line of a request carries its id, the one the client gets in `x-request-id`: an
/// opaque "internal error" reply can be matched with its detail in the log.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %request.method(),
        uri = %request.uri(),
        request_id,
    )
}

fn cors(origins: &[String]) -> CorsLayer {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin.trim()).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            axum::http::header::ACCEPT,
        ])
}
