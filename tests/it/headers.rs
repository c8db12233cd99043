//! Security headers on every response of the main listener.

use reqwest::header::{CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS};
use reqwest::Response;
use serde_json::json;

use crate::support::app::{Backend, TestApp};

fn header(response: &Response, name: reqwest::header::HeaderName) -> String {
    response
        .headers()
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} on {}", response.url()))
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let http = reqwest::Client::new();
    let responses = [
        http.get(app.url("/healthz")).send().await.unwrap(),
        http.post(app.url("/graphql"))
            .json(&json!({ "query": "{ __typename }" }))
            .send()
            .await
            .unwrap(),
        http.get(app.url("/")).send().await.unwrap(),
        http.get(app.url("/projects/anything"))
            .send()
            .await
            .unwrap(),
        http.get(app.url("/js/app.js")).send().await.unwrap(),
        http.get(app.url("/graphiql")).send().await.unwrap(),
    ];
    for response in &responses {
        assert!(response.status().is_success(), "{}", response.url());
        assert_eq!(header(response, X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert_eq!(header(response, REFERRER_POLICY), "no-referrer");
        let csp = header(response, CONTENT_SECURITY_POLICY);
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    }
    let client_csp = header(&responses[2], CONTENT_SECURITY_POLICY);
    assert!(client_csp.contains("default-src 'self'"), "{client_csp}");
    // GraphiQL runs inline scripts from a CDN: its CSP only forbids framing it.
    let graphiql_csp = header(&responses[5], CONTENT_SECURITY_POLICY);
    assert!(!graphiql_csp.contains("default-src"), "{graphiql_csp}");
}
