//! A toy schema and server for transport tests: a query, a mutation, a finite and an infinite
//! subscription, served over HTTP (`/graphql`) and WebSocket (`/graphql/ws`) on `127.0.0.1:0`.
//! Shared with `examples/toy_server.rs` through `#[path]`.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicI32, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use async_graphql::{Context, Data, Object, Schema, Subscription};
use axum::Router;
use codekraft::graphql::{
    http::graphql_http_router,
    ws::{GraphQLWs, WsInitError},
};
use futures_util::{stream, Stream, StreamExt};

/// Who the connection (WS) or request (HTTP) belongs to, as set by the transport.
#[derive(Clone, Debug)]
pub struct ToyViewer(pub String);

/// Per-operation data (WS: built by `operation_data` for every operation).
#[derive(Clone, Debug)]
pub struct OperationTag(pub i32);

/// How many `ticks` streams are alive (to prove streams stop with their socket).
#[derive(Clone, Default)]
pub struct LiveTicks(pub Arc<AtomicUsize>);

struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

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

    /// The per-operation tag, if the transport set one.
    async fn operation_tag(&self, ctx: &Context<'_>) -> Option<i32> {
        ctx.data_opt::<OperationTag>().map(|t| t.0)
    }

    /// Always fails (a field error, not a request error).
    async fn boom(&self) -> async_graphql::Result<i32> {
        Err("boom".into())
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
    async fn ticks(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] every_ms: u64,
    ) -> impl Stream<Item = i32> {
        let live = ctx.data_unchecked::<LiveTicks>().0.clone();
        live.fetch_add(1, Ordering::SeqCst);
        let guard = LiveGuard(live);
        stream::unfold((0, guard), move |(n, guard)| async move {
            tokio::time::sleep(Duration::from_millis(every_ms)).await;
            Some((n, (n + 1, guard)))
        })
    }
}

pub type ToySchema = Schema<ToyQuery, ToyMutation, ToySubscription>;

pub fn toy_schema(live: LiveTicks) -> ToySchema {
    Schema::build(ToyQuery, ToyMutation, ToySubscription)
        .data(live)
        .finish()
}

/// The toy's options: when `token` is set, `connection_init` must carry
/// `{Authorization: "Bearer <token>"}` (else close 4403).
#[derive(Clone, Debug)]
pub struct ToyOptions {
    pub token: Option<String>,
    pub init_timeout: Duration,
    pub legacy_keep_alive: Duration,
    pub max_message_bytes: usize,
    pub max_operations: usize,
}

impl Default for ToyOptions {
    fn default() -> Self {
        Self {
            token: None,
            init_timeout: Duration::from_millis(500),
            legacy_keep_alive: Duration::from_secs(20),
            max_message_bytes: codekraft::graphql::ws::DEFAULT_MAX_MESSAGE_BYTES,
            max_operations: codekraft::graphql::ws::DEFAULT_MAX_OPERATIONS,
        }
    }
}

fn bearer(value: Option<&str>) -> Option<&str> {
    value.and_then(|v| v.strip_prefix("Bearer "))
}

pub fn toy_router(options: ToyOptions, live: LiveTicks) -> Router {
    let schema = toy_schema(live);
    let token = options.token.clone();
    let tags = Arc::new(AtomicI32::new(1));
    let ws = GraphQLWs::new(schema.clone())
        .connection_init_timeout(options.init_timeout)
        .legacy_keep_alive(options.legacy_keep_alive)
        .max_message_bytes(options.max_message_bytes)
        .max_operations(options.max_operations)
        .on_connection_init(move |payload| {
            let token = token.clone();
            async move {
                let presented = bearer(payload.get("Authorization").and_then(|v| v.as_str()));
                let viewer = match (token, presented) {
                    (None, presented) => presented.unwrap_or("anonymous").to_owned(),
                    (Some(expected), Some(presented)) if presented == expected => "alice".into(),
                    _ => return Err(WsInitError::new("Forbidden")),
                };
                let mut data = Data::default();
                data.insert(ToyViewer(viewer));
                Ok(data)
            }
        })
        .operation_data(move |_session| {
            let mut data = Data::default();
            data.insert(OperationTag(tags.fetch_add(1, Ordering::SeqCst)));
            async move { data }
        });
    let http = graphql_http_router("/graphql", schema.clone(), |parts| async move {
        let mut data = Data::default();
        let header = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if let Some(who) = bearer(header) {
            data.insert(ToyViewer(who.to_owned()));
        }
        Ok::<_, std::convert::Infallible>(data)
    });
    Router::new()
        .merge(http)
        .route("/graphql/ws", ws.method_router())
        // baselines for comparison: async-graphql-axum's stock HTTP and WS services
        .route_service(
            "/stock/graphql",
            async_graphql_axum::GraphQL::new(schema.clone()),
        )
        .route_service(
            "/stock/graphql/ws",
            async_graphql_axum::GraphQLSubscription::new(schema),
        )
}

/// A running toy server.
pub struct ToyServer {
    pub addr: SocketAddr,
    pub live_ticks: LiveTicks,
}

impl ToyServer {
    pub fn http_url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/graphql/ws", self.addr)
    }
}

/// Serves the toy on `addr` (port 0 for a free one) until the runtime stops.
pub async fn spawn_toy_server(addr: SocketAddr, options: ToyOptions) -> ToyServer {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind toy server");
    let bound = listener.local_addr().expect("local addr");
    let live = LiveTicks::default();
    let router = toy_router(options, live.clone());
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("toy server");
    });
    ToyServer {
        addr: bound,
        live_ticks: live,
    }
}
