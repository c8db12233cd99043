//! GraphQL over WebSocket for any `async_graphql::Executor`.
//!
//! Speaks two subprotocols, chosen from the client's `Sec-WebSocket-Protocol` header:
//! - `graphql-transport-ws` (<https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md>),
//!   with the spec's close codes (see [`close_code`]);
//! - the legacy `graphql-ws` of subscriptions-transport-ws (`start`/`data`/`error`/`stop`, `ka`
//!   keep-alives, `connection_terminate`), with the same close codes for protocol violations.
//!
//! A client that offers only other subprotocols is refused at the handshake with HTTP 400.
//! Without any `Sec-WebSocket-Protocol` header the socket speaks `graphql-transport-ws`.
//!
//! Limits: a message (or frame) over [`GraphQLWs::max_message_bytes`] closes the socket with 1009;
//! an operation over [`GraphQLWs::max_operations`] gets an `error` message and the socket stays
//! open; read and write buffers are small. [`GraphQLWs::session_end`] closes an acknowledged
//! socket with 4403 when its credentials end (expiry, revocation).
//!
//! Mounting (see [`GraphQLWs`]):
//! ```ignore
//! let ws = GraphQLWs::new(schema.clone())
//!     .on_connection_init(move |payload: serde_json::Value| async move {
//!         let viewer = viewer_from_init_payload(&payload).await.map_err(|_| WsInitError::new("Forbidden"))?;
//!         let mut data = async_graphql::Data::default();
//!         data.insert(viewer);
//!         Ok(data) // session data of every operation on this socket
//!     })
//!     .operation_data(|_session| fresh_loaders()); // per-operation request data
//! let router = Router::new().route("/graphql/ws", ws.method_router());
//! ```
//! or, when the callback needs per-upgrade state, from your own handler:
//! ```ignore
//! async fn graphql_ws(State(app): State<AppState>, upgrade: WebSocketUpgrade, headers: HeaderMap) -> Response {
//!     let auth = app.auth.clone();
//!     app.graphql_ws.upgrade_with_init(upgrade, &headers, move |payload| {
//!         let auth = auth.clone();
//!         async move { auth.viewer_data(&payload).await.map_err(|_| WsInitError::default()) }
//!     })
//! }
//! ```

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use async_graphql::{Data, Executor, Request};
use axum::{
    extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response as HttpResponse},
    routing::{get, MethodRouter},
};
use futures_util::{future::BoxFuture, FutureExt, SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::{
    sync::mpsc,
    task::{AbortHandle, JoinSet},
    time::{sleep_until, Instant},
};

use super::is_request_error;

/// Close codes of the `graphql-transport-ws` protocol (also used for the legacy subprotocol).
pub mod close_code {
    /// Invalid message: unknown `type`, invalid JSON or a malformed payload.
    pub const BAD_REQUEST: u16 = 4400;
    /// `subscribe` before the connection was acknowledged.
    pub const UNAUTHORIZED: u16 = 4401;
    /// `on_connection_init` refused the connection.
    pub const FORBIDDEN: u16 = 4403;
    /// No supported subprotocol (only sent when the upgrade itself was accepted).
    pub const SUBPROTOCOL_NOT_ACCEPTABLE: u16 = 4406;
    /// No `connection_init` (or no acknowledgement) within the init timeout.
    pub const CONNECTION_INIT_TIMEOUT: u16 = 4408;
    /// `subscribe` with an id that is still running.
    pub const SUBSCRIBER_ALREADY_EXISTS: u16 = 4409;
    /// A second `connection_init`.
    pub const TOO_MANY_INIT_REQUESTS: u16 = 4429;
    /// A message over the size limit (RFC 6455; graphql-ws has no code of its own for it).
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// A connection refused for now, e.g. over a connection limit (RFC 6455): clients retry
    /// later, where a 4403 would tell them their credentials are bad.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Normal closure (legacy `connection_terminate`).
    pub const NORMAL: u16 = 1000;
}

/// The two GraphQL-over-WebSocket subprotocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsProtocol {
    /// `graphql-transport-ws` (graphql-ws library).
    GraphQLTransportWs,
    /// `graphql-ws` (subscriptions-transport-ws, legacy).
    LegacyGraphQLWs,
}

impl WsProtocol {
    /// The `Sec-WebSocket-Protocol` token.
    pub fn name(self) -> &'static str {
        match self {
            WsProtocol::GraphQLTransportWs => "graphql-transport-ws",
            WsProtocol::LegacyGraphQLWs => "graphql-ws",
        }
    }

    /// Picks the protocol from the client's offer: `Ok(None)` when no header was sent,
    /// `Err(())` when only unsupported protocols were offered. `graphql-transport-ws` wins
    /// over the legacy one when both are offered.
    fn negotiate(headers: &HeaderMap) -> Result<Option<Self>, ()> {
        let offered: Vec<String> = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect();
        if offered.is_empty() {
            return Ok(None);
        }
        [WsProtocol::GraphQLTransportWs, WsProtocol::LegacyGraphQLWs]
            .into_iter()
            .find(|p| offered.iter().any(|o| o == p.name()))
            .map(Some)
            .ok_or(())
    }
}

/// Refusal from `on_connection_init`; the socket is closed with `code` (4403 unless set) and
/// this message as reason (the legacy subprotocol first gets a `connection_error`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct WsInitError {
    /// Sent to the client as the close reason (truncated to the 123 bytes a close frame allows).
    pub message: String,
    pub code: u16,
}

impl WsInitError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: close_code::FORBIDDEN,
        }
    }

    /// Closes with `code` instead of 4403 (see [`close_code`]).
    pub fn with_code(mut self, code: u16) -> Self {
        self.code = code;
        self
    }
}

impl Default for WsInitError {
    fn default() -> Self {
        Self::new("Forbidden")
    }
}

type OnInit = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<Data, WsInitError>> + Send + Sync>;
type OperationData = Arc<dyn Fn(Arc<Data>) -> BoxFuture<'static, Data> + Send + Sync>;
type SessionEnd = Arc<dyn Fn(&Data) -> BoxFuture<'static, String> + Send + Sync>;

/// Default connection-init timeout (the graphql-ws reference server's default).
pub const DEFAULT_CONNECTION_INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval of legacy `ka` keep-alive messages.
pub const DEFAULT_LEGACY_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// Default largest incoming message (and frame).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Default number of operations running at once on one socket.
pub const DEFAULT_MAX_OPERATIONS: usize = 32;
/// Socket read buffer: small, since client messages are small (a larger one is read in several
/// steps) and every idle socket holds it; tungstenite also zeroes it before each read. Its
/// default is 128 KiB.
const SOCKET_READ_BUFFER_BYTES: usize = 2 * 1024;
/// Outgoing messages gathered before they are written (the buffer grows only while gathering).
const SOCKET_WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// A GraphQL-over-WebSocket endpoint around an executor (any `Schema<Q, M, S>`).
///
/// Cheap to clone. Configure with the builder methods, then mount [`GraphQLWs::method_router`]
/// or call [`GraphQLWs::upgrade`] / [`GraphQLWs::upgrade_with_init`] from your own handler.
pub struct GraphQLWs<E> {
    executor: E,
    on_init: OnInit,
    operation_data: Option<OperationData>,
    session_end: Option<SessionEnd>,
    init_timeout: Duration,
    legacy_keep_alive: Duration,
    max_message_bytes: usize,
    max_operations: usize,
}

impl<E: Clone> Clone for GraphQLWs<E> {
    fn clone(&self) -> Self {
        Self {
            executor: self.executor.clone(),
            on_init: self.on_init.clone(),
            operation_data: self.operation_data.clone(),
            session_end: self.session_end.clone(),
            init_timeout: self.init_timeout,
            legacy_keep_alive: self.legacy_keep_alive,
            max_message_bytes: self.max_message_bytes,
            max_operations: self.max_operations,
        }
    }
}

fn box_on_init<F, Fut>(callback: F) -> OnInit
where
    F: Fn(Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Data, WsInitError>> + Send + 'static,
{
    Arc::new(move |payload| callback(payload).boxed())
}

impl<E: Executor> GraphQLWs<E> {
    /// An endpoint that accepts every `connection_init` (with empty connection data).
    pub fn new(executor: E) -> Self {
        Self {
            executor,
            on_init: box_on_init(|_| async { Ok(Data::default()) }),
            operation_data: None,
            session_end: None,
            init_timeout: DEFAULT_CONNECTION_INIT_TIMEOUT,
            legacy_keep_alive: DEFAULT_LEGACY_KEEP_ALIVE,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_operations: DEFAULT_MAX_OPERATIONS,
        }
    }

    /// Called with the `connection_init` payload (`Value::Null` when absent). `Ok(data)`
    /// acknowledges the connection and `data` becomes the session data of every operation on
    /// the socket (resolvers see it through `ctx.data::<T>()`, after the operation's own data);
    /// `Err` closes the socket with 4403.
    pub fn on_connection_init<F, Fut>(mut self, callback: F) -> Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Data, WsInitError>> + Send + 'static,
    {
        self.on_init = box_on_init(callback);
        self
    }

    /// Builds the per-operation request data (e.g. a fresh DataLoader set, the viewer as it is
    /// now) from the connection's session data; called once per `subscribe`/`start`, in the
    /// operation's own task (a slow build does not hold up the socket).
    pub fn operation_data<F, Fut>(mut self, build: F) -> Self
    where
        F: Fn(Arc<Data>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Data> + Send + 'static,
    {
        self.operation_data = Some(Arc::new(move |session| build(session).boxed()));
        self
    }

    /// Called once with the session data of an acknowledged connection; when the future it
    /// returns resolves (e.g. the token expired or was revoked), the socket is closed with 4403
    /// and the future's output as reason.
    pub fn session_end<F, Fut>(mut self, ends: F) -> Self
    where
        F: Fn(&Data) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = String> + Send + 'static,
    {
        self.session_end = Some(Arc::new(move |session| ends(session).boxed()));
        self
    }

    /// Largest incoming message (and frame) in bytes; a larger one closes the socket with 1009.
    pub fn max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// Operations running at once on one socket; one more is refused with an `error` message.
    pub fn max_operations(mut self, max: usize) -> Self {
        self.max_operations = max;
        self
    }

    /// How long a socket may stay without an acknowledged `connection_init` (close 4408).
    pub fn connection_init_timeout(mut self, timeout: Duration) -> Self {
        self.init_timeout = timeout;
        self
    }

    /// Interval of `ka` messages on the legacy subprotocol.
    pub fn legacy_keep_alive(mut self, interval: Duration) -> Self {
        self.legacy_keep_alive = interval;
        self
    }

    /// An axum `GET` route serving this endpoint, for `Router::route("/graphql/ws", …)`.
    pub fn method_router<S>(self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        get(move |upgrade: WebSocketUpgrade, headers: HeaderMap| {
            let endpoint = self.clone();
            async move { endpoint.upgrade(upgrade, &headers) }
        })
    }

    /// Upgrades a request with the configured `on_connection_init`.
    pub fn upgrade(&self, upgrade: WebSocketUpgrade, headers: &HeaderMap) -> HttpResponse {
        self.upgrade_inner(upgrade, headers, self.on_init.clone())
    }

    /// Upgrades a request with a connection-specific `on_connection_init` (e.g. a closure that
    /// captured what the HTTP upgrade request carried).
    pub fn upgrade_with_init<F, Fut>(
        &self,
        upgrade: WebSocketUpgrade,
        headers: &HeaderMap,
        on_init: F,
    ) -> HttpResponse
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Data, WsInitError>> + Send + 'static,
    {
        self.upgrade_inner(upgrade, headers, box_on_init(on_init))
    }

    fn upgrade_inner(
        &self,
        upgrade: WebSocketUpgrade,
        headers: &HeaderMap,
        on_init: OnInit,
    ) -> HttpResponse {
        let (protocol, upgrade) = match WsProtocol::negotiate(headers) {
            Ok(Some(p)) => (p, upgrade.protocols([p.name()])),
            Ok(None) => (WsProtocol::GraphQLTransportWs, upgrade),
            Err(()) => return (
                StatusCode::BAD_REQUEST,
                "unsupported Sec-WebSocket-Protocol (expected graphql-transport-ws or graphql-ws)",
            )
                .into_response(),
        };
        let upgrade = upgrade
            .max_message_size(self.max_message_bytes)
            .max_frame_size(self.max_message_bytes)
            .read_buffer_size(SOCKET_READ_BUFFER_BYTES)
            .write_buffer_size(SOCKET_WRITE_BUFFER_BYTES);
        let connection = Connection {
            executor: self.executor.clone(),
            protocol,
            on_init,
            operation_data: self.operation_data.clone(),
            session_end: self.session_end.clone(),
            ends: futures_util::future::pending().boxed(),
            max_operations: self.max_operations,
            init_timeout: self.init_timeout,
            init_deadline: Instant::now() + self.init_timeout,
            legacy_keep_alive: self.legacy_keep_alive,
            session: None,
            init_received: false,
            operations: HashMap::new(),
            tasks: JoinSet::new(),
            next_generation: 0,
        };
        upgrade.on_upgrade(move |socket| connection.serve(socket))
    }
}

/// What an operation task sends to the socket loop: a message serialised in the task (so the
/// loop only writes), and whether it ends the operation. `generation` tells a live operation
/// from an earlier one that used the same id (its late messages are dropped).
struct Outgoing {
    id: Arc<str>,
    generation: u64,
    text: String,
    ends_operation: bool,
}

/// A server → client message of an operation, serialised without an intermediate JSON tree.
#[derive(Serialize)]
struct OperationMessage<'a, P> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<P>,
}

impl Outgoing {
    fn new<P: Serialize>(
        id: &Arc<str>,
        generation: u64,
        kind: &'static str,
        payload: Option<P>,
    ) -> Self {
        let message = OperationMessage {
            id: id.as_ref(),
            kind,
            payload,
        };
        Self {
            id: Arc::clone(id),
            generation,
            // Serialising a response (strings, numbers, maps with string keys) cannot fail.
            text: serde_json::to_string(&message).unwrap_or_default(),
            ends_operation: kind != "next" && kind != "data",
        }
    }
}

/// Why the socket loop stops: a close frame to send, or nothing (peer gone).
type Close = Option<(u16, String)>;

enum Event {
    Incoming(Vec<u8>),
    Outgoing(Outgoing),
    InitTimeout,
    SessionEnded(String),
    MessageTooBig,
    KeepAlive,
    Reaped,
    PeerGone,
}

struct Connection<E> {
    executor: E,
    protocol: WsProtocol,
    on_init: OnInit,
    operation_data: Option<OperationData>,
    session_end: Option<SessionEnd>,
    /// Resolves when the acknowledged session must end (pending until then, and before the ack).
    ends: BoxFuture<'static, String>,
    max_operations: usize,
    init_timeout: Duration,
    /// Counted from the completed upgrade.
    init_deadline: Instant,
    legacy_keep_alive: Duration,
    /// `Some` once `on_connection_init` accepted the connection (acknowledged).
    session: Option<Arc<Data>>,
    init_received: bool,
    operations: HashMap<String, (u64, AbortHandle)>,
    /// Every running operation; dropping the set aborts them all.
    tasks: JoinSet<()>,
    next_generation: u64,
}

const OUTGOING_BUFFER: usize = 64;

impl<E: Executor> Connection<E> {
    async fn serve(mut self, mut socket: WebSocket) {
        self.init_deadline = Instant::now() + self.init_timeout;
        let (tx, mut rx) = mpsc::channel::<Outgoing>(OUTGOING_BUFFER);
        let legacy = self.protocol == WsProtocol::LegacyGraphQLWs;
        let mut keep_alive = tokio::time::interval_at(
            Instant::now() + self.legacy_keep_alive,
            self.legacy_keep_alive,
        );
        keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let close: Close = loop {
            let acked = self.session.is_some();
            let event = tokio::select! {
                message = socket.recv() => match message {
                    Some(Ok(Message::Text(text))) => Event::Incoming(text.as_bytes().to_vec()),
                    Some(Ok(Message::Binary(bytes))) => Event::Incoming(bytes.to_vec()),
                    // axum answers transport-level pings itself
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Err(err)) if is_message_too_big(&err) => Event::MessageTooBig,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Event::PeerGone,
                },
                reason = &mut self.ends => Event::SessionEnded(reason),
                Some(out) = rx.recv() => Event::Outgoing(out),
                _ = sleep_until(self.init_deadline), if !acked => Event::InitTimeout,
                _ = keep_alive.tick(), if legacy && acked => Event::KeepAlive,
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => Event::Reaped,
            };
            let step: Result<(), Close> = match event {
                Event::Incoming(bytes) => self.on_message(&mut socket, &bytes, &tx).await,
                Event::Outgoing(out) => self.on_outgoing(&mut socket, out, &mut rx).await,
                Event::InitTimeout => Err(Some((
                    close_code::CONNECTION_INIT_TIMEOUT,
                    "Connection initialisation timeout".into(),
                ))),
                Event::SessionEnded(reason) => Err(Some((close_code::FORBIDDEN, reason))),
                Event::MessageTooBig => Err(Some((
                    close_code::MESSAGE_TOO_BIG,
                    "Message too big".into(),
                ))),
                Event::KeepAlive => send_json(&mut socket, json!({ "type": "ka" })).await,
                Event::Reaped => Ok(()),
                Event::PeerGone => Err(None),
            };
            if let Err(close) = step {
                break close;
            }
        };

        // Stop every running operation before saying goodbye.
        self.tasks.abort_all();
        if let Some((code, reason)) = close {
            let frame = CloseFrame {
                code,
                reason: truncate_reason(reason).into(),
            };
            let _ = socket.send(Message::Close(Some(frame))).await;
        }
    }

    async fn on_message(
        &mut self,
        socket: &mut WebSocket,
        bytes: &[u8],
        tx: &mpsc::Sender<Outgoing>,
    ) -> Result<(), Close> {
        let bad = |what: &str| Some((close_code::BAD_REQUEST, what.to_owned()));
        let message: Value =
            serde_json::from_slice(bytes).map_err(|_| bad("Invalid message received"))?;
        let kind = message
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("Invalid message received"))?;
        let legacy = self.protocol == WsProtocol::LegacyGraphQLWs;
        match (kind, legacy) {
            ("connection_init", _) => {
                let payload = message.get("payload").cloned().unwrap_or(Value::Null);
                self.on_connection_init(socket, payload).await
            }
            ("subscribe", false) | ("start", true) => {
                let id = message_id(&message).ok_or_else(|| bad("Invalid message received"))?;
                let payload = message.get("payload").cloned().unwrap_or(Value::Null);
                let request: Request = serde_json::from_value(payload)
                    .map_err(|e| bad(&format!("Invalid subscribe payload: {e}")))?;
                self.start_operation(socket, id, request, tx).await
            }
            ("complete", false) | ("stop", true) => {
                let id = message_id(&message).ok_or_else(|| bad("Invalid message received"))?;
                if let Some((_, handle)) = self.operations.remove(&id) {
                    handle.abort();
                }
                Ok(())
            }
            ("ping", false) => {
                let pong = match message.get("payload") {
                    Some(payload) if !payload.is_null() => {
                        json!({ "type": "pong", "payload": payload })
                    }
                    _ => json!({ "type": "pong" }),
                };
                send_json(socket, pong).await
            }
            ("pong", false) => Ok(()),
            ("connection_terminate", true) => Err(Some((close_code::NORMAL, String::new()))),
            _ => Err(bad("Invalid message received")),
        }
    }

    async fn on_connection_init(
        &mut self,
        socket: &mut WebSocket,
        payload: Value,
    ) -> Result<(), Close> {
        if self.init_received {
            return Err(Some((
                close_code::TOO_MANY_INIT_REQUESTS,
                "Too many initialisation requests".into(),
            )));
        }
        self.init_received = true;
        let outcome = tokio::select! {
            outcome = (self.on_init)(payload) => outcome,
            _ = sleep_until(self.init_deadline) => return Err(Some((
                close_code::CONNECTION_INIT_TIMEOUT,
                "Connection initialisation timeout".into(),
            ))),
        };
        match outcome {
            Ok(data) => {
                if let Some(session_end) = &self.session_end {
                    self.ends = session_end(&data);
                }
                self.session = Some(Arc::new(data));
                send_json(socket, json!({ "type": "connection_ack" })).await?;
                if self.protocol == WsProtocol::LegacyGraphQLWs {
                    send_json(socket, json!({ "type": "ka" })).await?;
                }
                Ok(())
            }
            Err(refusal) => {
                if self.protocol == WsProtocol::LegacyGraphQLWs {
                    let error = json!({ "type": "connection_error", "payload": { "message": refusal.message } });
                    send_json(socket, error).await?;
                }
                Err(Some((refusal.code, refusal.message)))
            }
        }
    }

    async fn start_operation(
        &mut self,
        socket: &mut WebSocket,
        id: String,
        mut request: Request,
        tx: &mpsc::Sender<Outgoing>,
    ) -> Result<(), Close> {
        let Some(session) = self.session.clone() else {
            return Err(Some((close_code::UNAUTHORIZED, "Unauthorized".into())));
        };
        if self.operations.contains_key(&id) {
            return Err(Some((
                close_code::SUBSCRIBER_ALREADY_EXISTS,
                format!("Subscriber for {id} already exists"),
            )));
        }
        if self.operations.len() >= self.max_operations {
            // graphql-ws ends a refused operation with `error`; the socket stays usable.
            let error = json!({
                "id": id,
                "type": "error",
                "payload": [{
                    "message": format!("too many operations on this connection (at most {})", self.max_operations),
                    "extensions": { "code": "RATE_LIMITED" },
                }],
            });
            return send_json(socket, error).await;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let executor = self.executor.clone();
        let build_data = self.operation_data.clone();
        let tx = tx.clone();
        let legacy = self.protocol == WsProtocol::LegacyGraphQLWs;
        let task_id: Arc<str> = Arc::from(id.as_str());
        let handle = self.tasks.spawn(async move {
            let id = task_id;
            if let Some(build) = build_data {
                request.data = build(session.clone()).await;
            }
            let mut stream = executor.execute_stream(request, Some(session));
            let mut first = true;
            while let Some(payload) = stream.next().await {
                if first && !legacy && is_request_error(&payload) {
                    // graphql-transport-ws: request errors end the operation with `error`
                    let error = Outgoing::new(&id, generation, "error", Some(&payload.errors));
                    let _ = tx.send(error).await;
                    return;
                }
                first = false;
                let kind = if legacy { "data" } else { "next" };
                if tx
                    .send(Outgoing::new(&id, generation, kind, Some(&payload)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let complete = Outgoing::new::<()>(&id, generation, "complete", None);
            let _ = tx.send(complete).await;
        });
        self.operations.insert(id, (generation, handle));
        Ok(())
    }

    /// Writes `first` and whatever else is already waiting (up to a batch), with one flush: a
    /// batch of events costs one write to the socket.
    async fn on_outgoing(
        &mut self,
        socket: &mut WebSocket,
        first: Outgoing,
        rx: &mut mpsc::Receiver<Outgoing>,
    ) -> Result<(), Close> {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(out) = next.take() {
            // Drop messages of operations the client completed (or of an earlier use of the id).
            if self.operations.get(out.id.as_ref()).map(|(g, _)| *g) == Some(out.generation) {
                if out.ends_operation {
                    self.operations.remove(out.id.as_ref());
                }
                socket
                    .feed(Message::Text(out.text.into()))
                    .await
                    .map_err(|_| None)?;
                written += 1;
            }
            if written < OUTGOING_BUFFER {
                next = rx.try_recv().ok();
            }
        }
        socket.flush().await.map_err(|_| None)
    }
}

/// Whether a read failed on the message or frame size limit.
fn is_message_too_big(err: &axum::Error) -> bool {
    use std::error::Error as _;
    use tungstenite::error::{CapacityError, Error};
    matches!(
        err.source()
            .and_then(|source| source.downcast_ref::<Error>()),
        Some(Error::Capacity(CapacityError::MessageTooLong { .. }))
    )
}

fn message_id(message: &Value) -> Option<String> {
    message
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

async fn send_json(socket: &mut WebSocket, message: Value) -> Result<(), Close> {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .map_err(|_| None)
}

/// A close frame's reason may hold at most 123 bytes.
fn truncate_reason(mut reason: String) -> String {
    const MAX: usize = 123;
    if reason.len() > MAX {
        let mut end = MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn offer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn negotiates_subprotocols() {
        assert_eq!(WsProtocol::negotiate(&HeaderMap::new()), Ok(None));
        assert_eq!(
            WsProtocol::negotiate(&offer("graphql-ws, graphql-transport-ws")),
            Ok(Some(WsProtocol::GraphQLTransportWs))
        );
        assert_eq!(
            WsProtocol::negotiate(&offer("graphql-ws")),
            Ok(Some(WsProtocol::LegacyGraphQLWs))
        );
        assert_eq!(WsProtocol::negotiate(&offer("mqtt, soap")), Err(()));
    }

    #[test]
    fn truncates_close_reasons_on_char_boundaries() {
        assert_eq!(truncate_reason("é".repeat(100)).len(), 122);
        assert_eq!(truncate_reason("short".into()), "short");
    }
}
