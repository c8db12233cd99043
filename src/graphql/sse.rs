//! GraphQL over Server-Sent Events for any `async_graphql::Executor`: the graphql-sse
//! protocol's *distinct connections mode*
//! (<https://github.com/enisdenjo/graphql-sse/blob/master/PROTOCOL.md>).
//!
//! One POST (`Accept: text/event-stream`, a JSON body as GraphQL over HTTP) per operation;
//! every result is an `event: next` whose `data` is the JSON result, and the stream ends with
//! one `event: complete`. A request without `text/event-stream` in `Accept` is refused with 406.
//! Idle streams get keep-alive comments. The caller authenticates, and passes what ends the
//! stream early (a revoked or expired credential) and what the stream holds while it is open
//! (a connection permit).

use std::convert::Infallible;
use std::time::Duration;

use async_graphql::{Data, Executor};
use axum::extract::Request as HttpRequest;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response as HttpResponse};
use futures_util::future::BoxFuture;
use futures_util::{stream, StreamExt};

use super::http::{json_error, request_from_body};

const EVENT_STREAM: &str = "text/event-stream";

/// Whether the client accepts `text/event-stream` (else answer [`not_acceptable`]).
pub fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let refused = parts
                .filter_map(|p| p.strip_prefix("q="))
                .any(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0));
            media.eq_ignore_ascii_case(EVENT_STREAM) && !refused
        })
}

/// 406, for a client that does not accept `text/event-stream`.
pub fn not_acceptable() -> HttpResponse {
    json_error(
        StatusCode::NOT_ACCEPTABLE,
        "Accept text/event-stream to stream a GraphQL operation",
    )
}

/// Executes the operation in `request`'s JSON body with `data` as its request data and
/// streams its results. The stream stops when `ends` resolves (without `complete`: the client
/// sees the connection close); `held` is dropped when the stream is.
pub async fn execute_sse<E: Executor, H: Send + 'static>(
    executor: &E,
    request: HttpRequest,
    data: Data,
    ends: BoxFuture<'static, ()>,
    keep_alive: Duration,
    held: H,
) -> HttpResponse {
    let mut gql_request = match request_from_body(request).await {
        Ok(gql_request) => gql_request,
        Err(refusal) => return refusal,
    };
    gql_request.data = data;
    let results = executor
        .execute_stream(gql_request, None)
        .map(|response| next_event(&response));
    let complete = stream::once(async { Event::default().event("complete").data("") });
    let events = results
        .chain(complete)
        .take_until(ends)
        // The stream owns `held` (a connection permit): released when the client goes.
        .map(move |event| {
            let _held = &held;
            Ok::<_, Infallible>(event)
        });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response()
}

fn next_event(response: &async_graphql::Response) -> Event {
    let data = serde_json::to_string(response)
        .unwrap_or_else(|_| r#"{"errors":[{"message":"Internal error"}]}"#.into());
    Event::default().event("next").data(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_clients_that_accept_an_event_stream_get_one() {
        assert!(accepts_event_stream(&accept("text/event-stream")));
        assert!(accepts_event_stream(&accept(
            "application/json, Text/Event-Stream;q=0.5"
        )));
        assert!(!accepts_event_stream(&accept("text/event-stream;q=0")));
        assert!(!accepts_event_stream(&accept("application/json")));
        assert!(!accepts_event_stream(&accept("*/*")));
        assert!(!accepts_event_stream(&HeaderMap::new()));
    }
}
