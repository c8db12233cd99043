//! GraphQL adapter: transports (HTTP, WebSocket) around an `async_graphql::Executor`.

pub mod http;
pub mod ws;

use async_graphql::Response;

/// A *request error* in the GraphQL spec's sense (parse, validation, unknown operation, variable
/// coercion): no data at all and only errors without a `path`. Field errors always carry a path.
pub(crate) fn is_request_error(response: &Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}
