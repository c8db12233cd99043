//! A raw GraphQL-over-WebSocket test client (tokio-tungstenite): JSON in, JSON out, close codes.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{client::IntoClientRequest, http::HeaderValue, Message},
    MaybeTlsStream, WebSocketStream,
};

pub const TRANSPORT_WS: &str = "graphql-transport-ws";
pub const LEGACY_WS: &str = "graphql-ws";

/// How long any single expectation may wait.
pub const WAIT: Duration = Duration::from_secs(5);

pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
}

/// What the server did instead of sending a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Closed(u16, String),
    Silent,
}

/// Opens a socket offering `protocol` (or no `Sec-WebSocket-Protocol` at all).
pub async fn try_connect(
    url: &str,
    protocol: Option<&str>,
) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
    let mut request = url.into_client_request()?;
    if let Some(protocol) = protocol {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocol).unwrap(),
        );
    }
    let (socket, response) = connect_async(request).await?;
    let protocol = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(WsClient { socket, protocol })
}

pub async fn connect(url: &str, protocol: &str) -> WsClient {
    try_connect(url, Some(protocol))
        .await
        .expect("websocket handshake")
}

impl WsClient {
    pub async fn send_json(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Message::Text(text.to_owned().into()))
            .await
            .expect("send");
    }

    /// The next JSON message, or what ended the wait.
    pub async fn next_within(&mut self, wait: Duration) -> Result<Value, Ended> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return Err(Ended::Silent),
                Ok(frame) => frame,
            };
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return Ok(serde_json::from_str(text.as_str()).expect("server sent JSON"))
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return Err(Ended::Closed(code, reason));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(Ended::Closed(1006, String::new())),
            }
        }
    }

    /// The next JSON message; panics on close or silence.
    pub async fn recv(&mut self) -> Value {
        match self.next_within(WAIT).await {
            Ok(message) => message,
            Err(ended) => panic!("expected a message, got {ended:?}"),
        }
    }

    /// The next message that is not a legacy `ka`.
    pub async fn recv_skip_ka(&mut self) -> Value {
        loop {
            let message = self.recv().await;
            if message["type"] != "ka" {
                return message;
            }
        }
    }

    /// Waits for the close frame (skipping messages) and returns its code.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.next_within(WAIT).await {
                Ok(_) => continue,
                Err(Ended::Closed(code, reason)) => return (code, reason),
                Err(Ended::Silent) => panic!("socket not closed within {WAIT:?}"),
            }
        }
    }

    /// Asserts no message for `id` arrives within `wait`.
    pub async fn expect_silence_for(&mut self, id: &str, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Ok(message) if message["id"] == id => panic!("unexpected message {message}"),
                Ok(_) => continue,
                Err(Ended::Silent) => return,
                Err(ended) => panic!("socket ended: {ended:?}"),
            }
        }
    }

    /// `connection_init` → `connection_ack` (legacy: also swallows the first `ka`).
    pub async fn init(&mut self, payload: Value) {
        self.send_json(json!({ "type": "connection_init", "payload": payload }))
            .await;
        let ack = self.recv().await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
