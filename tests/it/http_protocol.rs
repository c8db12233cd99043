//! GraphQL over HTTP against the toy schema: media types, status codes, GET rules.

use reqwest::{header, Client, StatusCode};
use serde_json::{json, Value};

use crate::support::toy::{spawn_toy_server, ToyOptions, ToyServer};

const GQL_RESPONSE: &str = "application/graphql-response+json";

async fn toy() -> ToyServer {
    spawn_toy_server("127.0.0.1:0".parse().unwrap(), ToyOptions::default()).await
}

async fn post(
    server: &ToyServer,
    accept: Option<&str>,
    body: Value,
) -> (StatusCode, String, Value) {
    let mut request = Client::new().post(server.http_url()).json(&body);
    if let Some(accept) = accept {
        request = request.header(header::ACCEPT, accept);
    }
    read(request.send().await.unwrap()).await
}

async fn read(response: reqwest::Response) -> (StatusCode, String, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, content_type, body)
}

#[tokio::test]
async fn negotiates_the_response_media_type() {
    let server = toy().await;
    let query = json!({ "query": "{ hello }" });
    for (accept, expected) in [
        (None, "application/json"),
        (Some("*/*"), "application/json"),
        (Some("application/json"), "application/json"),
        (Some(GQL_RESPONSE), GQL_RESPONSE),
        (
            Some("application/graphql-response+json, application/json;q=0.9"),
            GQL_RESPONSE,
        ),
    ] {
        let (status, content_type, body) = post(&server, accept, query.clone()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            content_type.starts_with(expected),
            "{accept:?}: {content_type}"
        );
        assert_eq!(body, json!({ "data": { "hello": "world" } }));
    }
    let (status, _, _) = post(&server, Some("text/html"), query).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn request_errors_are_400_without_data_for_graphql_response_json() {
    let server = toy().await;
    for query in ["{", "{ nope }"] {
        let (status, _, body) = post(&server, Some(GQL_RESPONSE), json!({ "query": query })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(body.get("data").is_none(), "{body}");
        assert!(body["errors"][0]["message"].is_string());
        // legacy application/json keeps 200
        let (status, _, body) =
            post(&server, Some("application/json"), json!({ "query": query })).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        assert!(body["errors"].is_array());
    }
    // field errors are partial results with 200
    let (status, _, body) = post(
        &server,
        Some(GQL_RESPONSE),
        json!({ "query": "{ hello boom }" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["hello"], "world");
    assert_eq!(body["errors"][0]["message"], "boom");
}

#[tokio::test]
async fn malformed_requests_are_rejected() {
    let server = toy().await;
    for body in [
        json!({}),
        json!({ "query": 1 }),
        json!({ "query": "{ hello }", "variables": "x" }),
        json!([{ "query": "{ hello }" }]),
    ] {
        let (status, _, _) = post(&server, None, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    let client = Client::new();
    let no_type = client
        .post(server.http_url())
        .body(r#"{"query":"{ hello }"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(no_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let bad_json = client
        .post(server.http_url())
        .header(header::CONTENT_TYPE, "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), StatusCode::BAD_REQUEST);
    let put = client.put(server.http_url()).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn get_runs_queries_but_not_mutations() {
    let server = toy().await;
    let client = Client::new();
    let query = |q: &str, variables: &str| {
        client
            .get(server.http_url())
            .query(&[("query", q), ("variables", variables)])
            .send()
    };
    let (status, _, body) = read(
        query("query($t: String!) { echo(text: $t) }", r#"{"t":"hi"}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "data": { "echo": "hi" } }));
    let (status, _, _) = read(
        query(r#"mutation { shout(text: "x") }"#, "{}")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    // POST mutations run
    let (status, _, body) = post(
        &server,
        None,
        json!({ "query": r#"mutation { shout(text: "x") }"# }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["shout"], "X");
}

#[tokio::test]
async fn request_data_reaches_resolvers() {
    let server = toy().await;
    let response = Client::new()
        .post(server.http_url())
        .bearer_auth("carol")
        .json(&json!({ "query": "{ viewer }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        read(response).await.2,
        json!({ "data": { "viewer": "carol" } })
    );
}
