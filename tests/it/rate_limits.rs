//! Rate limits: token buckets on mutations per address and per user, one signUp/signIn per
//! document, the client address behind a trusted proxy, bounded password hashing.

use codekraft::config::Config;
use serde_json::{json, Value};

use crate::support::app::{error_code, Backend, TestApp};

const SIGN_UP: &str =
    "mutation($e: String!) { signUp(email: $e, password: \"correct horse\") { token } }";

/// The suite raises every limit (see `test_config`); these tests put some back.
fn default_limits(config: &mut Config) {
    let defaults = Config::defaults();
    config.rate_limit_address_mutations_per_minute =
        defaults.rate_limit_address_mutations_per_minute;
    config.rate_limit_user_mutations_per_minute = defaults.rate_limit_user_mutations_per_minute;
    config.rate_limit_address_sign_ups_per_hour = defaults.rate_limit_address_sign_ups_per_hour;
    config.rate_limit_address_sign_ins_per_minute = defaults.rate_limit_address_sign_ins_per_minute;
}

/// POSTs a document as a client would, with extra headers; returns the status, the
/// `Retry-After` header and the body.
async fn post(
    app: &TestApp,
    headers: &[(&str, &str)],
    query: &str,
    variables: Value,
) -> (u16, Option<String>, Value) {
    let mut request = reqwest::Client::new()
        .post(app.url("/graphql"))
        .json(&json!({ "query": query, "variables": variables }));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("POST /graphql");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    (
        status,
        retry_after,
        response.json().await.expect("a JSON body"),
    )
}

fn retry_after(response: &Value) -> u64 {
    response["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .unwrap_or_else(|| panic!("no retryAfter in {response}"))
}

#[tokio::test]
async fn one_auth_mutation_per_document() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let aliased: String = (0..20)
        .map(|i| format!("a{i}: signUp(email: \"user{i}@example.com\", password: \"correct horse\") {{ token }} "))
        .collect();
    let response = app
        .gql(None, &format!("mutation {{ {aliased} }}"), json!({}))
        .await;
    assert_eq!(error_code(&response), "BAD_USER_INPUT", "{response}");
    assert!(response["data"].is_null(), "{response}");
    // A signUp next to a signIn, through a fragment, is refused the same way.
    let mixed = app
        .gql(
            None,
            r#"mutation { signUp(email: "a@example.com", password: "correct horse") { token } ...F }
               fragment F on Mutation { signIn(email: "a@example.com", password: "correct horse") { token } }"#,
            json!({}),
        )
        .await;
    assert_eq!(error_code(&mixed), "BAD_USER_INPUT", "{mixed}");
    assert_eq!(app.count_rows("user").await, 0);
}

#[tokio::test]
async fn sign_ups_past_the_default_bucket_are_rate_limited() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(default_limits)
        .start()
        .await;
    let allowed = Config::defaults().rate_limit_address_sign_ups_per_hour;
    for i in 0..allowed {
        app.sign_up(&format!("user{i}@example.com")).await;
    }
    let (status, header, refused) =
        post(&app, &[], SIGN_UP, json!({ "e": "one-more@example.com" })).await;
    assert_eq!(error_code(&refused), "RATE_LIMITED", "{refused}");
    let wait = retry_after(&refused);
    // One sign-up comes back per 60 / allowed minutes.
    assert!(wait > 0 && wait <= 3600 / u64::from(allowed), "{wait}");
    assert_eq!(status, 429);
    assert_eq!(header, Some(wait.to_string()));
    assert_eq!(app.count_rows("user").await, i64::from(allowed));
    // Other mutations from the address still have their own bucket.
    let sign_in = app
        .gql(
            None,
            r#"mutation { signIn(email: "user0@example.com", password: "correct horse") { token } }"#,
            json!({}),
        )
        .await;
    assert!(sign_in["errors"].is_null(), "{sign_in}");
}

#[tokio::test]
async fn a_forwarded_address_is_ignored_without_a_trusted_header() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|config| config.rate_limit_address_sign_ups_per_hour = 1)
        .start()
        .await;
    let spoofed = |address: &'static str| [("x-forwarded-for", address)];
    let (_, _, first) = post(
        &app,
        &spoofed("203.0.113.1"),
        SIGN_UP,
        json!({ "e": "a@example.com" }),
    )
    .await;
    assert!(first["errors"].is_null(), "{first}");
    let (status, _, second) = post(
        &app,
        &spoofed("203.0.113.2"),
        SIGN_UP,
        json!({ "e": "b@example.com" }),
    )
    .await;
    assert_eq!(error_code(&second), "RATE_LIMITED", "{second}");
    assert_eq!(status, 429);
}

#[tokio::test]
async fn the_trusted_header_gives_each_client_its_bucket() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|config| {
            config.rate_limit_address_sign_ups_per_hour = 1;
            config.trusted_proxy_header = Some("x-forwarded-for".parse().unwrap());
        })
        .start()
        .await;
    let sign_up = |forwarded: &'static str, email: &'static str| {
        let app = &app;
        async move {
            post(
                app,
                &[("x-forwarded-for", forwarded)],
                SIGN_UP,
                json!({ "e": email }),
            )
            .await
            .2
        }
    };
    let first = sign_up("198.51.100.7, 203.0.113.1", "a@example.com").await;
    assert!(first["errors"].is_null(), "{first}");
    let other_client = sign_up("203.0.113.2", "b@example.com").await;
    assert!(other_client["errors"].is_null(), "{other_client}");
    // The proxy's entry is the last one: what the client put before it does not matter.
    let again = sign_up("192.0.2.99, 203.0.113.1", "c@example.com").await;
    assert_eq!(error_code(&again), "RATE_LIMITED", "{again}");
    assert_eq!(app.count_rows("user").await, 2);
}

#[tokio::test]
async fn each_user_has_a_mutation_bucket() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|config| config.rate_limit_user_mutations_per_minute = 3)
        .start()
        .await;
    let ada = app.sign_up("ada@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let rename = r#"mutation { renameProject(id: "00000000-0000-0000-0000-000000000000", name: "n") { id } }"#;
    let two_renames = r#"mutation {
        a: renameProject(id: "00000000-0000-0000-0000-000000000000", name: "n") { id }
        b: renameProject(id: "00000000-0000-0000-0000-000000000000", name: "n") { id } }"#;
    // Aliased fields cost one each: 2 + 1 uses up the bucket.
    let first = app.gql(Some(&ada), two_renames, json!({})).await;
    assert_ne!(error_code(&first), "RATE_LIMITED", "{first}");
    let second = app.gql(Some(&ada), rename, json!({})).await;
    assert_ne!(error_code(&second), "RATE_LIMITED", "{second}");
    let bearer = format!("Bearer {ada}");
    let (status, _, refused) = post(&app, &[("authorization", &bearer)], rename, json!({})).await;
    assert_eq!(status, 429);
    assert_eq!(error_code(&refused), "RATE_LIMITED", "{refused}");
    assert!(retry_after(&refused) > 0);
    // Queries are not charged, and the other user (same address) has a bucket of their own.
    app.data(Some(&ada), "{ me { email } }", json!({})).await;
    let bobs = app.gql(Some(&bob), rename, json!({})).await;
    assert_ne!(error_code(&bobs), "RATE_LIMITED", "{bobs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_hashing_is_bounded() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|config| {
            config.password_hash_concurrency = 2;
            config.password_hash_wait_ms = 600_000;
        })
        .start()
        .await;
    let sign_ups = (0..8).map(|i| {
        let app = &app;
        async move { app.sign_up(&format!("user{i}@example.com")).await }
    });
    futures_util::future::join_all(sign_ups).await;
    assert_eq!(app.count_rows("user").await, 8);
    let peak = app.server.state.password_hashing.peak_concurrent();
    assert!((1..=2).contains(&peak), "{peak} hashes at once");
    let metrics = reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("codekraft_password_hashes_peak {peak}\n")),
        "{metrics}"
    );
}

#[tokio::test]
async fn saturated_password_hashing_is_rate_limited() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|config| {
            config.password_hash_concurrency = 1;
            config.password_hash_wait_ms = 0;
        })
        .start()
        .await;
    let sign_ups = (0..8).map(|i| {
        let app = &app;
        async move {
            app.gql(
                None,
                SIGN_UP,
                json!({ "e": format!("user{i}@example.com") }),
            )
            .await
        }
    });
    let responses = futures_util::future::join_all(sign_ups).await;
    for response in &responses {
        if !response["errors"].is_null() {
            assert_eq!(error_code(response), "RATE_LIMITED", "{response}");
            assert_eq!(retry_after(response), 1);
        }
    }
    assert_eq!(app.server.state.password_hashing.peak_concurrent(), 1);
}
