//! GraphQL over HTTP (<https://graphql.github.io/graphql-over-http/draft/>) for any
//! `async_graphql::Executor`.
//!
//! Differences from async-graphql-axum's stock `GraphQL` service, which always answers
//! `application/graphql-response+json` with status 200:
//! - `Accept` negotiation: `application/graphql-response+json` when asked for, otherwise
//!   `application/json` (also for `*/*` or no `Accept`); anything else → 406;
//! - with `application/graphql-response+json`, request errors (parse, validation, variable
//!   coercion) answer 400 and omit `data`;
//! - a request error that comes with a `Retry-After` header (a rate limit) answers 429;
//! - malformed requests (no/invalid JSON body, non-string `query`, non-map `variables`, …) → 400,
//!   POST without a JSON `Content-Type` → 415, mutations over GET → 405, other methods → 405;
//! - no batching, no multipart.
//!
//! Mount with [`graphql_http_router`] or call [`execute_http`] from your own handler:
//! ```ignore
//! async fn graphql(State(app): State<AppState>, viewer: Viewer, request: axum::extract::Request) -> Response {
//!     let mut data = async_graphql::Data::default();
//!     data.insert(viewer);
//!     execute_http(&app.schema, request, data).await
//! }
//! let router = Router::new().route("/graphql", get(graphql).post(graphql));
//! ```

use std::future::Future;

use async_graphql::{
    parser::{parse_query, types::DocumentOperations, types::OperationType},
    Data, Executor, Request,
};
use axum::{
    body::{to_bytes, Body},
    extract::Request as HttpRequest,
    http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::Response as HttpResponse,
    routing::{on, MethodFilter},
    Router,
};
use serde_json::{json, Map, Value};

use super::is_request_error;

/// Largest accepted POST body.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json; charset=utf-8";
const JSON: &str = "application/json; charset=utf-8";

/// The negotiated response media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaType {
    GraphQLResponseJson,
    Json,
}

impl MediaType {
    fn header(self) -> &'static str {
        match self {
            MediaType::GraphQLResponseJson => GRAPHQL_RESPONSE_JSON,
            MediaType::Json => JSON,
        }
    }

    /// `Ok(None)` when the client accepts none of ours (406).
    fn negotiate(headers: &HeaderMap) -> Option<Self> {
        let accept: Vec<(String, f32)> = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|item| {
                let mut parts = item.split(';');
                let media = parts.next()?.trim().to_ascii_lowercase();
                if media.is_empty() {
                    return None;
                }
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some((media, q))
            })
            .collect();
        if accept.is_empty() {
            return Some(MediaType::Json);
        }
        let weight = |names: &[&str]| {
            accept
                .iter()
                .filter(|(m, _)| names.contains(&m.as_str()))
                .map(|(_, q)| *q)
                .fold(None, |best: Option<f32>, q| {
                    Some(best.map_or(q, |b| b.max(q)))
                })
        };
        let gql = weight(&["application/graphql-response+json"]).unwrap_or(0.0);
        let json = weight(&["application/json"])
            .or(weight(&["application/*", "*/*"]))
            .unwrap_or(0.0);
        if gql <= 0.0 && json <= 0.0 {
            None
        } else if gql >= json {
            Some(MediaType::GraphQLResponseJson)
        } else {
            Some(MediaType::Json)
        }
    }
}

/// A router serving GraphQL over HTTP at `path` (GET and POST; other methods → 405).
/// `request_data` builds the per-request data (e.g. the authenticated viewer, fresh loaders)
/// from the request head.
pub fn graphql_http_router<E, S, F, Fut, Err>(path: &str, executor: E, request_data: F) -> Router<S>
where
    E: Executor,
    S: Clone + Send + Sync + 'static,
    F: Fn(Parts) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Data, Err>> + Send + 'static,
    Err: axum::response::IntoResponse + Send + 'static,
{
    let handler = move |request: HttpRequest| {
        let executor = executor.clone();
        let request_data = request_data.clone();
        async move {
            let (parts, body) = request.into_parts();
            match request_data(parts.clone()).await {
                Ok(data) => {
                    execute_http(&executor, HttpRequest::from_parts(parts, body), data).await
                }
                Err(rejection) => rejection.into_response(),
            }
        }
    };
    Router::new().route(
        path,
        on(MethodFilter::GET.or(MethodFilter::POST), handler).fallback(|| async {
            let mut response = error_response(
                MediaType::Json,
                StatusCode::METHOD_NOT_ALLOWED,
                "GraphQL is served over GET and POST",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
            response
        }),
    )
}

/// Executes one GraphQL-over-HTTP request (GET or POST) with `data` as its request data.
pub async fn execute_http<E: Executor>(
    executor: &E,
    request: HttpRequest,
    data: Data,
) -> HttpResponse {
    let Some(media) = MediaType::negotiate(request.headers()) else {
        return error_response(
            MediaType::Json,
            StatusCode::NOT_ACCEPTABLE,
            "Accept application/graphql-response+json or application/json",
        );
    };
    let is_get = request.method() == Method::GET;
    let params = if is_get {
        params_from_query_string(request.uri())
    } else if request.method() == Method::POST {
        params_from_body(request).await
    } else {
        let mut response = error_response(
            media,
            StatusCode::METHOD_NOT_ALLOWED,
            "GraphQL is served over GET and POST",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
        return response;
    };
    let mut gql_request = match params {
        Ok(r) => r,
        Err((status, message)) => return error_response(media, status, &message),
    };
    if is_get && is_mutation(&gql_request) {
        let mut response = error_response(
            media,
            StatusCode::METHOD_NOT_ALLOWED,
            "Mutations are only allowed over POST",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    gql_request.data = data;
    let response = executor.execute(gql_request).await;

    let request_error = is_request_error(&response);
    // A document refused before it ran, with a time to come back (rate limits).
    let refused_for_now = request_error && response.http_headers.contains_key(header::RETRY_AFTER);
    let status = if refused_for_now {
        StatusCode::TOO_MANY_REQUESTS
    } else if request_error && media == MediaType::GraphQLResponseJson {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let body = if request_error {
        // a request error has no `data` entry at all
        let mut body = json!({ "errors": response.errors });
        if !response.extensions.is_empty() {
            body["extensions"] = json!(response.extensions);
        }
        body.to_string()
    } else {
        serde_json::to_string(&response)
            .unwrap_or_else(|_| r#"{"errors":[{"message":"Internal error"}]}"#.into())
    };
    let mut http = json_response(media, status, body);
    if response.is_ok() {
        if let Some(value) = response
            .cache_control
            .value()
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            http.headers_mut().insert(header::CACHE_CONTROL, value);
        }
    }
    http.headers_mut().extend(response.http_headers);
    http
}

type ParamsResult = Result<Request, (StatusCode, String)>;

/// The GraphQL request in a POST's JSON body, or the JSON error response that refuses it
/// (for other transports that take the same body, such as SSE).
pub(crate) async fn request_from_body(request: HttpRequest) -> Result<Request, HttpResponse> {
    params_from_body(request)
        .await
        .map_err(|(status, message)| error_response(MediaType::Json, status, &message))
}

/// A JSON `{"errors": [{"message"}]}` response.
pub(crate) fn json_error(status: StatusCode, message: &str) -> HttpResponse {
    error_response(MediaType::Json, status, message)
}

fn bad_request(message: impl Into<String>) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, message.into())
}

async fn params_from_body(request: HttpRequest) -> ParamsResult {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let Some(content_type) = content_type else {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Missing Content-Type (use application/json)".into(),
        ));
    };
    let mut parts = content_type.split(';').map(str::trim);
    if parts.next() != Some("application/json") {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Unsupported Content-Type {content_type} (use application/json)"),
        ));
    }
    if let Some(charset) = parts.find_map(|p| p.strip_prefix("charset=")) {
        if !charset.trim_matches('"').eq_ignore_ascii_case("utf-8") {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Unsupported charset {charset} (use utf-8)"),
            ));
        }
    }
    let bytes = to_bytes(request.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Body larger than {MAX_BODY_BYTES} bytes"),
            )
        })?;
    if bytes.is_empty() {
        return Err(bad_request("Missing request body"));
    }
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|e| bad_request(format!("Invalid JSON body: {e}")))?;
    let Value::Object(map) = body else {
        return Err(bad_request(
            "The body must be a JSON object (batching is not supported)",
        ));
    };
    request_from_params(map)
}

fn params_from_query_string(uri: &Uri) -> ParamsResult {
    let mut map = Map::new();
    for (key, value) in query_pairs(uri) {
        let value = match key.as_str() {
            "variables" | "extensions" => serde_json::from_str(&value)
                .map_err(|e| bad_request(format!("{key} must be URL-encoded JSON: {e}")))?,
            _ => Value::String(value),
        };
        map.insert(key, value);
    }
    request_from_params(map)
}

/// Checks the well-formedness of `{query, operationName, variables, extensions}`.
fn request_from_params(mut map: Map<String, Value>) -> ParamsResult {
    match map.get("query") {
        Some(Value::String(_)) => {}
        None | Some(Value::Null) => return Err(bad_request("Missing query")),
        Some(_) => return Err(bad_request("query must be a string")),
    }
    for (key, expected) in [
        ("operationName", "a string"),
        ("variables", "a map"),
        ("extensions", "a map"),
    ] {
        let ok = match map.get(key) {
            None | Some(Value::Null) => {
                map.remove(key);
                true
            }
            Some(Value::String(_)) => key == "operationName",
            Some(Value::Object(_)) => key != "operationName",
            Some(_) => false,
        };
        if !ok {
            return Err(bad_request(format!("{key} must be {expected} or null")));
        }
    }
    serde_json::from_value::<Request>(Value::Object(map))
        .map_err(|e| bad_request(format!("Invalid request: {e}")))
}

/// Whether the operation a GET would run is a mutation (an unparsable document is left to
/// the executor, which reports the parse error).
fn is_mutation(request: &Request) -> bool {
    let Ok(document) = parse_query(&request.query) else {
        return false;
    };
    let ty = match &document.operations {
        DocumentOperations::Single(op) => Some(op.node.ty),
        DocumentOperations::Multiple(ops) => match &request.operation_name {
            Some(name) => ops
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, op)| op.node.ty),
            None if ops.len() == 1 => ops.values().next().map(|op| op.node.ty),
            None => None,
        },
    };
    ty == Some(OperationType::Mutation)
}

/// The decoded `key=value` pairs of the query string (undecodable escapes stay as they are).
fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|query| query.0)
        .unwrap_or_default()
}

fn json_response(media: MediaType, status: StatusCode, body: String) -> HttpResponse {
    let mut response = HttpResponse::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media.header()),
    );
    response
}

fn error_response(media: MediaType, status: StatusCode, message: &str) -> HttpResponse {
    json_response(
        media,
        status,
        json!({ "errors": [{ "message": message }] }).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn negotiates_media_types() {
        assert_eq!(
            MediaType::negotiate(&HeaderMap::new()),
            Some(MediaType::Json)
        );
        assert_eq!(MediaType::negotiate(&accept("*/*")), Some(MediaType::Json));
        assert_eq!(
            MediaType::negotiate(&accept("application/json")),
            Some(MediaType::Json)
        );
        assert_eq!(
            MediaType::negotiate(&accept(
                "application/graphql-response+json, application/json;q=0.9"
            )),
            Some(MediaType::GraphQLResponseJson)
        );
        assert_eq!(
            MediaType::negotiate(&accept(
                "application/graphql-response+json;q=0.5, application/json"
            )),
            Some(MediaType::Json)
        );
        assert_eq!(MediaType::negotiate(&accept("text/html")), None);
    }

    #[test]
    fn decodes_query_strings() {
        let uri: Uri = "/graphql?query=%7B%20a%20%7D&variables=%7B%7D&x=1+2&bad=%zz"
            .parse()
            .unwrap();
        let pairs = query_pairs(&uri);
        assert_eq!(
            pairs,
            vec![
                ("query".into(), "{ a }".into()),
                ("variables".into(), "{}".into()),
                ("x".into(), "1 2".into()),
                ("bad".into(), "%zz".into()),
            ]
        );
    }

    #[test]
    fn detects_mutations() {
        assert!(is_mutation(&Request::new("mutation { a }")));
        assert!(!is_mutation(&Request::new("{ a }")));
        assert!(is_mutation(
            &Request::new("query A { a } mutation B { b }").operation_name("B")
        ));
        assert!(!is_mutation(&Request::new("{")));
    }

    #[test]
    fn rejects_malformed_params() {
        let params = |v: Value| request_from_params(v.as_object().unwrap().clone());
        assert!(
            params(json!({ "query": "{ a }", "variables": null, "operationName": null })).is_ok()
        );
        assert!(params(json!({ "query": 0 })).is_err());
        assert!(params(json!({})).is_err());
        assert!(params(json!({ "query": "{ a }", "variables": "x" })).is_err());
        assert!(params(json!({ "query": "{ a }", "extensions": [] })).is_err());
        assert!(params(json!({ "query": "{ a }", "operationName": false })).is_err());
    }
}
