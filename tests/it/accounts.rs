//! Built-in accounts, tokens and authentication errors.

use serde_json::json;

use crate::on_both_backends;
use crate::support::app::{error_code, Backend, TestApp};

on_both_backends!(sign_up_then_sign_in, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let token = app.sign_up("Ada@Example.com").await;
    let me = app
        .data(
            Some(&token),
            "{ me { email plan } usage { plan limit remaining consumed } }",
            json!({}),
        )
        .await;
    assert_eq!(
        me["me"],
        json!({ "email": "ada@example.com", "plan": "FREE" })
    );
    assert_eq!(me["usage"]["limit"], 5);
    assert_eq!(me["usage"]["remaining"], 5);

    let signed_in = app
        .data(None, r#"mutation { signIn(email: "ada@example.com", password: "correct horse") { token user { email } } }"#, json!({}))
        .await;
    let second = signed_in["signIn"]["token"].as_str().unwrap();
    let me_again = app.data(Some(second), "{ me { email } }", json!({})).await;
    assert_eq!(me_again["me"]["email"], "ada@example.com");

    let wrong = app
        .gql(None, r#"mutation { signIn(email: "ada@example.com", password: "wrong password") { token } }"#, json!({}))
        .await;
    assert_eq!(error_code(&wrong), "BAD_USER_INPUT");

    let duplicate = app
        .gql(
            None,
            r#"mutation { signUp(email: "ada@example.com", password: "another one") { token } }"#,
            json!({}),
        )
        .await;
    assert_eq!(error_code(&duplicate), "CONFLICT");
});

#[tokio::test]
async fn bad_sign_up_input_is_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for (email, password) in [("not-an-email", "long enough"), ("a@b.co", "short")] {
        let response = app
            .gql(
                None,
                "mutation($e: String!, $p: String!) { signUp(email: $e, password: $p) { token } }",
                json!({ "e": email, "p": password }),
            )
            .await;
        assert_eq!(error_code(&response), "BAD_USER_INPUT", "{email}");
    }
}

#[tokio::test]
async fn protected_fields_need_a_valid_token() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let anonymous = app.gql(None, "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&anonymous), "UNAUTHENTICATED");
    for token in ["garbage", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "a.b.c"] {
        let response = app.gql(Some(token), "{ me { id } }", json!({})).await;
        assert_eq!(error_code(&response), "UNAUTHENTICATED", "{token}");
    }
    // Public fields still work with a bad token.
    let public = app
        .gql(
            Some("garbage"),
            "{ serverInfo { modelOffline } }",
            json!({}),
        )
        .await;
    assert_eq!(public["data"]["serverInfo"]["modelOffline"], true);
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let app = TestApp::spawn(Backend::Sqlite).await;
    let now = chrono::Utc::now().timestamp();
    let claims =
        json!({ "sub": "someone", "iss": "codekraft", "iat": now - 7200, "exp": now - 3600 });
    let token = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(crate::support::app::TEST_SECRET.as_bytes()),
    )
    .unwrap();
    let response = app.gql(Some(&token), "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&response), "UNAUTHENTICATED");
}

#[tokio::test]
async fn a_token_signed_with_the_server_secret_provisions_its_user() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let app = TestApp::spawn(Backend::Sqlite).await;
    let now = chrono::Utc::now().timestamp();
    let claims = json!({ "sub": "alice", "iss": "codekraft", "iat": now, "exp": now + 3600 });
    let token = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(crate::support::app::TEST_SECRET.as_bytes()),
    )
    .unwrap();
    let first = app
        .data(Some(&token), "{ me { id plan } }", json!({}))
        .await;
    let second = app
        .data(Some(&token), "{ me { id plan } }", json!({}))
        .await;
    assert_eq!(first, second);
    assert_eq!(first["me"]["plan"], "FREE");
}

/// Clerk-style RS256 session tokens verified against a JWKS URL provision their user, whose plan
/// comes from the configured claim.
#[tokio::test]
async fn external_rs256_tokens_provision_users_with_their_plan() {
    use axum::routing::get;
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/auth");
    let jwks = std::fs::read_to_string(fixtures.join("jwks.json")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let router = axum::Router::new().route(
        "/.well-known/jwks.json",
        get(move || async move { jwks.clone() }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let issuer = "https://clerk.codekraft.example";
    let app = TestApp::builder(Backend::Sqlite)
        .config({
            let jwks_url = jwks_url.clone();
            move |c| {
                c.auth_jwks_url = Some(jwks_url);
                c.auth_issuer = Some(issuer.to_owned());
                c.auth_plan_claim = Some("pla".to_owned());
            }
        })
        .start()
        .await;
    let key = EncodingKey::from_rsa_pem(&std::fs::read(fixtures.join("rsa-private.pem")).unwrap())
        .unwrap();
    let mint = |iss: &str, plan: &str| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("test-key-1".to_owned());
        let now = chrono::Utc::now().timestamp();
        let claims = json!({ "sub": "user_2abc", "iss": iss, "iat": now, "nbf": now - 5, "exp": now + 600, "sid": "sess_1", "pla": plan });
        encode(&header, &claims, &key).unwrap()
    };
    let pro = mint(issuer, "u:pro");
    let data = app
        .data(Some(&pro), "{ me { id plan } usage { limit } }", json!({}))
        .await;
    assert_eq!(data["me"]["plan"], "PRO");
    assert_eq!(data["usage"]["limit"], 100);
    let user_id = data["me"]["id"].clone();
    // The same subject is the same user; a downgrade in the claim is taken over.
    let free = mint(issuer, "u:free_user");
    let again = app.data(Some(&free), "{ me { id plan } }", json!({})).await;
    assert_eq!(again["me"], json!({ "id": user_id, "plan": "FREE" }));
    // Another issuer is refused, and built-in accounts keep working beside external ones.
    let foreign = mint("https://evil.example", "u:pro");
    assert_eq!(
        error_code(&app.gql(Some(&foreign), "{ me { id } }", json!({})).await),
        "UNAUTHENTICATED"
    );
    let built_in = app.sign_up("local@example.com").await;
    assert_eq!(
        app.data(Some(&built_in), "{ me { plan } }", json!({}))
            .await["me"]["plan"],
        "FREE"
    );
}

#[tokio::test]
async fn guessing_a_password_is_rate_limited() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.sign_up("target@example.com").await;
    let attempt = |password: &'static str| {
        let app = &app;
        async move {
            app.gql(
                None,
                "mutation($p: String!) { signIn(email: \"target@example.com\", password: $p) { token } }",
                json!({ "p": password }),
            )
            .await
        }
    };
    for _ in 0..10 {
        assert_eq!(error_code(&attempt("guess guess").await), "BAD_USER_INPUT");
    }
    // Now even the right password waits; other accounts are not affected.
    let limited = attempt("correct horse").await;
    assert_eq!(error_code(&limited), "RATE_LIMITED");
    // Until the first failure leaves the 15-minute window.
    let retry_after = limited["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .unwrap();
    assert!((1..=900).contains(&retry_after), "{limited}");
    let other = app
        .gql(None, r#"mutation { signIn(email: "nobody@example.com", password: "whatever it is") { token } }"#, json!({}))
        .await;
    assert_eq!(error_code(&other), "BAD_USER_INPUT");
}

/// A sign-in attempt through GraphQL; the account's real password is "correct horse".
async fn sign_in(app: &TestApp, email: &str, password: &str) -> serde_json::Value {
    app.gql(
        None,
        "mutation($e: String!, $p: String!) { signIn(email: $e, password: $p) { token } }",
        json!({ "e": email, "p": password }),
    )
    .await
}

/// Failed sign-ins written straight to the table, `minutes_ago` in the past.
async fn seed_failures(app: &TestApp, email: &str, minutes_ago: i64, count: usize) {
    use codekraft::entity::sign_in_failure;
    use sea_orm::{EntityTrait, Set};
    let failed_at = chrono::Utc::now() - chrono::TimeDelta::minutes(minutes_ago);
    let rows = (0..count).map(|_| sign_in_failure::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        email: Set(email.to_owned()),
        failed_at: Set(failed_at),
    });
    sign_in_failure::Entity::insert_many(rows)
        .exec(&app.server.state.db)
        .await
        .unwrap();
}

on_both_backends!(
    servers_on_one_database_share_the_sign_in_limit,
    |backend: Backend| async move {
        let first = TestApp::spawn(backend).await;
        let second = TestApp::builder(backend)
            .database_url(first.database_url())
            .start()
            .await;
        first.sign_up("shared@example.com").await;
        for attempt in 0..10 {
            let server = if attempt % 2 == 0 { &first } else { &second };
            let refused = sign_in(server, "shared@example.com", "guess guess").await;
            assert_eq!(error_code(&refused), "BAD_USER_INPUT", "attempt {attempt}");
        }
        // Five failures on each: the pair has used up the limit, so both refuse.
        for server in [&first, &second] {
            let limited = sign_in(server, "shared@example.com", "correct horse").await;
            assert_eq!(error_code(&limited), "RATE_LIMITED");
        }
    }
);

on_both_backends!(
    failures_leave_the_window_and_a_sign_in_forgets_them,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.sign_up("target@example.com").await;

        // One failure short of the limit, then the right password: signed in, failures forgotten.
        seed_failures(&app, "target@example.com", 14, 9).await;
        let signed_in = sign_in(&app, "target@example.com", "correct horse").await;
        assert!(signed_in.get("errors").is_none(), "{signed_in}");
        assert_eq!(app.count_rows("sign_in_failure").await, 0);

        // Failures older than 15 minutes do not count, and recording one deletes them all.
        seed_failures(&app, "target@example.com", 16, 10).await;
        seed_failures(&app, "someone-else@example.com", 16, 1).await;
        seed_failures(&app, "target@example.com", 14, 9).await;
        let refused = sign_in(&app, "target@example.com", "guess guess").await;
        assert_eq!(error_code(&refused), "BAD_USER_INPUT");
        assert_eq!(app.count_rows("sign_in_failure").await, 10);
        let limited = sign_in(&app, "target@example.com", "correct horse").await;
        assert_eq!(error_code(&limited), "RATE_LIMITED");
    }
);

on_both_backends!(
    guesses_at_the_same_moment_count_each_other,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.sign_up("swarm@example.com").await;
        let guesses = (0..20).map(|_| sign_in(&app, "swarm@example.com", "guess guess"));
        let answers = futures_util::future::join_all(guesses).await;
        let codes: Vec<&str> = answers.iter().map(error_code).collect();
        let checked = codes.iter().filter(|c| **c == "BAD_USER_INPUT").count();
        let limited = codes.iter().filter(|c| **c == "RATE_LIMITED").count();
        assert_eq!(checked + limited, 20, "{codes:?}");
        assert!(checked <= 10, "{checked} passwords were checked: {codes:?}");
    }
);
