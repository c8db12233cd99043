//! Mounts the GraphQL endpoints: HTTP at `/graphql`, WebSocket at `/graphql/ws`, Server-Sent
//! Events at `/graphql/stream`, GraphiQL.

use std::any::TypeId;
use std::time::Duration;

use async_graphql::http::GraphiQLSource;
use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::extract::Request as HttpRequest;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::FutureExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::app::AppState;
use crate::config::Config;
use crate::error::AppError;
use crate::graphql::context::{loader_data, ClientAddress, RequestAuth};
use crate::graphql::http::graphql_http_router;
use crate::graphql::sse::{accepts_event_stream, execute_sse, not_acceptable};
use crate::graphql::ws::{close_code, GraphQLWs, WsInitError};
use crate::graphql::{build_schema, AppSchema};
use crate::services::access::{is_credential_live, Access, Credential};
use crate::services::socket::SocketPermit;
use crate::services::user::{authenticate_header, find_user};
use crate::services::Viewer;

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
    let end_state = state.clone();
    let ws = GraphQLWs::new(schema.clone())
        .on_connection_init(move |payload| {
            let state = init_state.clone();
            async move {
                let header = authorization_from_init(&payload);
                let socket = open_socket(&state, header.as_deref()).await?;
                let mut data = async_graphql::Data::default();
                data.insert(socket);
                Ok(data)
            }
        })
        .operation_data(move |connection| {
            let state = operation_state.clone();
            async move {
                let socket = connection
                    .get(&TypeId::of::<SocketAuth>())
                    .and_then(|socket| socket.downcast_ref::<SocketAuth>());
                let mut data = loader_data(&state);
                data.insert(socket_viewer(&state, socket).await);
                data
            }
        })
        .session_end(move |connection| {
            let state = end_state.clone();
            let socket = connection
                .get(&TypeId::of::<SocketAuth>())
                .and_then(|socket| socket.downcast_ref::<SocketAuth>())
                .map(|socket| (socket.permit.ended(), socket.expires_at, socket.credential));
            async move {
                let Some((ended, expires_at, credential)) = socket else {
                    return futures_util::future::pending().await;
                };
                credential_end(state, ended, expires_at, credential)
                    .await
                    .to_owned()
            }
        })
        .connection_init_timeout(Duration::from_millis(state.config.ws_init_timeout_ms))
        .max_message_bytes(state.config.ws_max_message_bytes)
        .max_operations(state.config.ws_max_subscriptions);
    let stream_state = state.clone();
    let stream = post(move |request: HttpRequest| {
        let state = stream_state.clone();
        let schema = schema.clone();
        async move { graphql_stream(&state, &schema, request).await }
    });
    Router::new()
        .merge(http)
        .route("/graphql/ws", ws.method_router())
        .route("/graphql/stream", stream)
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
    match authenticate_header(&state.db, &state.auth, header).await {
        Ok(Some(found)) => Ok(RequestAuth::Viewer {
            viewer: found.viewer,
            access: found.access,
            credential: found.credential,
        }),
        Ok(None) => Ok(RequestAuth::Anonymous),
        Err(crate::error::AppError::Unauthenticated) => Ok(RequestAuth::Anonymous),
        Err(err) => Err(err.into_response()),
    }
}

/// One operation streamed over SSE, with the auth and limits of a WebSocket: a valid token or
/// API key (401 before any streaming), a connection counted against the user's, and an end
/// when the credential is revoked or expires.
async fn graphql_stream(state: &AppState, schema: &AppSchema, request: HttpRequest) -> Response {
    if !accepts_event_stream(request.headers()) {
        return not_acceptable();
    }
    let (parts, body) = request.into_parts();
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let found = match authenticate_header(&state.db, &state.auth, header).await {
        Ok(Some(found)) => found,
        Ok(None) => return AppError::Unauthenticated.into_response(),
        Err(err) => return err.into_response(),
    };
    let permit = match state.sockets.open(found.viewer.user_id, found.credential) {
        Ok(permit) => permit,
        Err(err) => return err.into_response(),
    };
    let mut data = loader_data(state);
    data.insert(RequestAuth::Viewer {
        viewer: found.viewer,
        access: found.access,
        credential: found.credential,
    });
    if let Some(address) = client_address(&state.config, &parts) {
        data.insert(ClientAddress(address));
    }
    let ends = credential_end(
        state.clone(),
        permit.ended(),
        found.expires_at,
        found.credential,
    )
    .map(drop)
    .boxed();
    let keep_alive = Duration::from_secs(state.config.sse_keep_alive_secs);
    execute_sse(
        schema,
        HttpRequest::from_parts(parts, body),
        data,
        ends,
        keep_alive,
        permit,
    )
    .await
}

/// What `connection_init` established. Each operation re-reads the viewer from it, so a plan
/// change (or a deleted account, a session revoked on another server) is seen on the next
/// `subscribe`; the socket closes when its token or key expires or is revoked.
struct SocketAuth {
    user_id: Uuid,
    access: Access,
    credential: Option<Credential>,
    /// When the token or key expires, in seconds since the Unix epoch.
    expires_at: Option<u64>,
    /// Counts the socket against its user's limit while the connection lives.
    permit: SocketPermit,
}

/// Authenticates a socket and counts it against its user's connections.
async fn open_socket(state: &AppState, header: Option<&str>) -> Result<SocketAuth, WsInitError> {
    let found = match authenticate_header(&state.db, &state.auth, header).await {
        Ok(Some(found)) => found,
        _ => return Err(WsInitError::new("a valid token is required")),
    };
    let user_id = found.viewer.user_id;
    let permit = state.sockets.open(user_id, found.credential).map_err(|_| {
        WsInitError::new(format!(
            "too many connections (at most {} per user)",
            state.config.ws_max_connections_per_user
        ))
        .with_code(close_code::TRY_AGAIN_LATER)
    })?;
    Ok(SocketAuth {
        user_id,
        access: found.access,
        credential: found.credential,
        expires_at: found.expires_at,
        permit,
    })
}

/// The viewer of one operation on a socket, as the database has it now.
async fn socket_viewer(state: &AppState, socket: Option<&SocketAuth>) -> RequestAuth {
    let Some(socket) = socket else {
        return RequestAuth::Anonymous;
    };
    if let Some(credential) = socket.credential {
        if !matches!(is_credential_live(&state.db, credential).await, Ok(true)) {
            // Revoked elsewhere (or unreadable): this socket's credential is over too.
            state.sockets.end(credential);
            return RequestAuth::Anonymous;
        }
    }
    match find_user(&state.db, socket.user_id).await {
        Ok(user) => RequestAuth::Viewer {
            viewer: Viewer {
                user_id: user.id,
                plan: user.plan,
            },
            access: socket.access,
            credential: socket.credential,
        },
        Err(_) => RequestAuth::Anonymous,
    }
}

/// Resolves with the reason when a socket's credential ends: revoked on this server (`ended`),
/// revoked on another one (seen at the next periodic check), or expired.
async fn credential_end(
    state: AppState,
    ended: CancellationToken,
    expires_at: Option<u64>,
    credential: Option<Credential>,
) -> &'static str {
    let expiry = async {
        match expires_at {
            Some(at) => tokio::time::sleep(until_unix_time(at)).await,
            None => futures_util::future::pending().await,
        }
    };
    let revoked_elsewhere = async {
        let Some(credential) = credential else {
            return futures_util::future::pending().await;
        };
        let mut every = tokio::time::interval(Duration::from_secs(
            state.config.socket_credential_check_secs,
        ));
        every.tick().await;
        loop {
            every.tick().await;
            // A failed read is tried again at the next tick: a database hiccup closes nothing.
            if let Ok(false) = is_credential_live(&state.db, credential).await {
                return;
            }
        }
    };
    let (revoked, expired) = match credential {
        Some(Credential::ApiKey(_)) => ("the API key was revoked", "the API key has expired"),
        _ => ("the session has ended", "the token has expired"),
    };
    tokio::select! {
        _ = ended.cancelled() => revoked,
        _ = revoked_elsewhere => revoked,
        _ = expiry => expired,
    }
}

/// How long until `unix_secs` (zero when it has passed).
fn until_unix_time(unix_secs: u64) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(unix_secs).saturating_sub(now)
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
