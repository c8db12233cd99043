//! A toy schema and server for transport tests: a query, a mutation, a finite and an infinite
//! subscription, served over HTTP (`/graphql`) and WebSocket (`/graphql/ws`) on `127.0.0.1:0`.
//! Shared with `examples/toy_server.rs` through `#[path]`.

use std::{net::SocketAddr, time::Duration};

use async_graphql::{Context, Data, EmptyMutation, Object, Schema, Subscription};
use axum::Router;
use codekraft::graphql::{
    http::graphql_http_router,
    ws::{GraphQLWs, WsInitError},
};
use futures_util::{stream, Stream, StreamExt};

/// Who the connection (WS) or request (HTTP) belongs to, as set by the transport.
#[derive(Clone, Debug)]
pub struct ToyViewer(pub String);

pub struct ToyQuery;

#[Object]
impl ToyQuery {
    async fn hello(&self) -> &'static str {
        "world"
    }

    async fn echo(&self, text: String) -> String {
        text
    }

    /// The viewer from connection (WS) or request (HTTP) data, if any.
    async fn viewer(&self, ctx: &Context<'_>) -> Option<String> {
        ctx.data_opt::<ToyViewer>().map(|v| v.0.clone())
    }
}

pub struct ToyMutation;

#[Object]
impl ToyMutation {
    async fn shout(&self, text: String) -> String {
        text.to_uppercase()
    }
}

pub struct ToySubscription;

#[Subscription]
impl ToySubscription {
    /// `from`, `from - 1`, …, `1`, then completes.
    async fn countdown(&self, from: i32) -> impl Stream<Item = i32> {
        stream::iter((1..=from).rev()).then(|n| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            n
        })
    }

    /// 0, 1, 2, … every `every_ms` milliseconds, forever.
    async fn ticks(&self, #[graphql(default = 50)] every_ms: u64) -> impl Stream<Item = i32> {
        stream::iter(0..).then(move |n| async move {
            tokio::time::sleep(Duration::from_millis(every_ms)).await;
            n
        })
    }
}

pub type ToySchema = Schema<ToyQuery, ToyMutation, ToySubscription>;

pub fn toy_schema() -> ToySchema {
    Schema::build(ToyQuery, ToyMutation, ToySubscription).finish()
}

#[allow(dead_code)]
pub type ToyQueryOnly = Schema<ToyQuery, EmptyMutation, ToySubscription>;

/// The toy's options: when `token` is set, `connection_init` must carry
/// `{Authorization: "Bearer <token>"}` (else close 4403).
#[derive(Clone, Debug)]
pub struct ToyOptions {
    pub token: Option<String>,
    pub init_timeout: Duration,
}

impl Default for ToyOptions {
    fn default() -> Self {
        Self {
            token: None,
            init_timeout: Duration::from_millis(500),
        }
    }
}

pub fn toy_router(options: ToyOptions) -> Router {
    let schema = toy_schema();
    let token = options.token.clone();
    let ws = GraphQLWs::new(schema.clone())
        .connection_init_timeout(options.init_timeout)
        .on_connection_init(move |payload| {
            let token = token.clone();
            async move {
                let presented = payload
                    .get("Authorization")
                    .and_then(|v| v.as_str())
                    .and_then(|v| v.strip_prefix("Bearer "));
                let mut data = Data::default();
                match (token, presented) {
                    (None, presented) => {
                        data.insert(ToyViewer(presented.unwrap_or("anonymous").to_owned()))
                    }
                    (Some(expected), Some(presented)) if presented == expected => {
                        data.insert(ToyViewer("alice".into()))
                    }
                    _ => return Err(WsInitError::new("Forbidden")),
                }
                Ok(data)
            }
        });
    Router::new()
        .merge(graphql_http_router("/graphql", schema, |_parts| async {
            Ok::<_, std::convert::Infallible>(Data::default())
        }))
        .route("/graphql/ws", ws.method_router())
}

/// Serves the toy on `addr` (use port 0 for a free one); returns the bound address.
pub async fn spawn_toy_server(addr: SocketAddr, options: ToyOptions) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind toy server");
    let bound = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(listener, toy_router(options)).await.expect("toy server");
    });
    bound
}
