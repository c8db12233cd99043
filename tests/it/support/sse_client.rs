//! A raw GraphQL-over-SSE test client (graphql-sse, distinct connections mode): one POST per
//! operation, its events read one by one.

use futures_util::StreamExt;
use serde_json::{json, Value};

use super::ws_client::WAIT;

/// One server-sent event (comments, such as keep-alives, are skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|_| panic!("not JSON: {}", self.data))
    }
}

pub struct SseStream {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buffer: String,
}

/// POSTs `query` to `/graphql/stream` with `Accept: text/event-stream`; returns the response
/// as it comes (status and headers first, events later).
pub async fn post(
    url: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("Accept", "text/event-stream")
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("POST /graphql/stream")
}

impl SseStream {
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200, "an event stream");
        Self {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event, `None` when the server ended the stream; panics after `WAIT` of silence.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = parse_block(&self.next_block().await?) {
                return Some(event);
            }
        }
    }

    /// The next block of lines as sent (an event, or comments such as keep-alives), `None` when
    /// the server ended the stream; panics after `WAIT` of silence.
    pub async fn next_block(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                return Some(self.buffer.drain(..end + 2).collect());
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("nothing within {WAIT:?}"));
            match chunk {
                Some(Ok(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next event, which must be there.
    pub async fn expect_event(&mut self) -> SseEvent {
        self.next_event().await.expect("the stream ended")
    }
}

/// An event block's `event` and `data` fields; `None` for a block of comments only.
fn parse_block(block: &str) -> Option<SseEvent> {
    let mut event = None;
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            event = Some(value.trim_start().to_owned());
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    if event.is_none() && data.is_empty() {
        return None;
    }
    Some(SseEvent {
        event: event.unwrap_or_else(|| "message".to_owned()),
        data: data.join("\n"),
    })
}
