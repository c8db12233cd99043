//! Mounts the GraphQL endpoints: HTTP at `/graphql`, WebSocket at `/graphql/ws`, GraphiQL.

use async_graphql::http::GraphiQLSource;
use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Value;

use crate::app::AppState;
use crate::config::Config;
use crate::graphql::build_schema;
use crate::graphql::context::{loader_data, ClientAddress, RequestAuth};
use crate::graphql::http::graphql_http_router;
use crate::graphql::ws::{GraphQLWs, WsInitError};
use crate::services::user::viewer_from_header;

pub fn routes(state: AppState) -> Router<AppState> {
    let schema = build_schema(state.clone());
    let http_state = state.clone();
    let http = graphql_http_router("/graphql", schema.clone(), move |parts: Parts| {
        let state = http_state.clone();
        async move {
            let header = parts
                .headers
                .get(AUTHORIZATION)
                .and_then(|value| value.to_str().ok());
            let auth = authenticate(&state, header).await?;
            let mut data = loader_data(&state);
            data.insert(auth);
            if let Some(address) = client_address(&state.config, &parts) {
                data.insert(ClientAddress(address));
            }
            Ok::<_, Response>(data)
        }
    });
    let init_state = state.clone();
    let operation_state = state.clone();
    let ws = GraphQLWs::new(schema)
        .on_connection_init(move |payload| {
            let state = init_state.clone();
            async move {
                let header = authorization_from_init(&payload);
                match authenticate(&state, header.as_deref()).await {
                    Ok(auth @ RequestAuth::Viewer(_)) => {
                        let mut data = async_graphql::Data::default();
                        data.insert(auth);
                        Ok(data)
                    }
                    _ => Err(WsInitError::new("a valid token is required")),
                }
            }
        })
        .operation_data(move |_connection| loader_data(&operation_state))
        .connection_init_timeout(std::time::Duration::from_millis(
            state.config.ws_init_timeout_ms,
        ));
    Router::new()
        .merge(http)
        .route("/graphql/ws", ws.method_router())
        .route(
            "/graphiql",
            get(graphiql).layer(super::security_headers::graphiql_csp()),
        )
}

/// The peer's address, or behind a proxy the address the TRUSTED_PROXY_HEADER carries (its
/// last entry: the one the proxy added; a client's own entries come before it).
fn client_address(config: &Config, parts: &Parts) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let Some(name) = &config.trusted_proxy_header else {
        return peer;
    };
    let forwarded = parts
        .headers
        .get_all(name)
        .iter()
        .next_back()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .map(str::trim)
        .and_then(|entry| {
            entry
                .parse::<IpAddr>()
                .ok()
                .or_else(|| entry.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
        });
    if forwarded.is_none() {
        tracing::warn!(header = %name, "request without a client address in the trusted header");
    }
    forwarded.or(peer)
}

/// A bad token still lets public fields work; fields that need a viewer report it.
async fn authenticate(state: &AppState, header: Option<&str>) -> Result<RequestAuth, Response> {
    match viewer_from_header(&state.db, &state.auth, header).await {
        Ok(Some(viewer)) => Ok(RequestAuth::Viewer(viewer)),
        Ok(None) => Ok(RequestAuth::Anonymous),
        Err(crate::error::AppError::Unauthenticated) => Ok(RequestAuth::Anonymous),
        Err(err) => Err(err.into_response()),
    }
}

/// `connection_init` payloads carry the token as `Authorization` (any case) or `token`.
fn authorization_from_init(payload: &Value) -> Option<String> {
    let object = payload.as_object()?;
    object
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, value)| value.as_str().map(str::to_owned))
        .or_else(|| {
            object
                .get("token")
                .and_then(Value::as_str)
                .map(|token| format!("Bearer {token}"))
        })
}

async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
}
