//! Signed webhooks: deliveries follow the Standard Webhooks spec, are retried with the same id
//! until a 2xx, survive a restart, are sent once by several servers, and may not target private
//! addresses unless allowed. Endpoints are loopback receivers (`WEBHOOK_ALLOW_PRIVATE=true`).

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::api_keys::create_key;
use crate::on_both_backends;
use crate::support::app::{error_code, Backend, TestApp, TestAppBuilder};
use crate::support::webhook_receiver::{ReceivedWebhook, WebhookReceiver};

const CREATE: &str = "mutation($url: String!, $events: [RunEventKind!]!, $projectId: ID) { createWebhook(url: $url, events: $events, projectId: $projectId) { secret webhook { id url events projectId enabled createdAt } } }";
const DELIVERIES: &str = "{ webhooks { id enabled failingSince deliveries(first: 100) { edges { node { id eventKind status attempts responseStatus nextAttemptAt createdAt } } } } }";

/// Loopback endpoints allowed, retries in a ten-thousandth of the real delays (5 s → 0.5 ms,
/// 10 h → 3.6 s).
fn builder(backend: Backend) -> TestAppBuilder {
    TestApp::builder(backend).config(|config| {
        config.webhook_allow_private = true;
        config.webhook_retry_scale = 0.0001;
    })
}

/// Creates a webhook; returns `(id, secret)`.
async fn create_webhook(
    app: &TestApp,
    token: &str,
    url: &str,
    events: &[&str],
) -> (String, String) {
    let data = app
        .data(Some(token), CREATE, json!({ "url": url, "events": events }))
        .await;
    let created = &data["createWebhook"];
    (
        created["webhook"]["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

/// The viewer's webhooks with their deliveries.
async fn webhooks(app: &TestApp, token: &str) -> Vec<Value> {
    app.data(Some(token), DELIVERIES, json!({})).await["webhooks"]
        .as_array()
        .unwrap()
        .clone()
}

fn deliveries(webhook: &Value) -> Vec<Value> {
    webhook["deliveries"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["node"].clone())
        .collect()
}

/// Polls the viewer's webhooks until `done`; fails after a minute (a hang).
async fn wait_for_webhooks(
    app: &TestApp,
    token: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let hooks = webhooks(app, token).await;
        if done(&hooks) {
            return hooks;
        }
        assert!(Instant::now() < deadline, "never {what}: {hooks:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The spec's signature, computed here independently of the server's code.
fn expected_signature(secret: &str, request: &ReceivedWebhook) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", request.id, request.timestamp, request.body).as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn kind(request: &ReceivedWebhook) -> String {
    let body: Value = serde_json::from_str(&request.body).unwrap();
    body["type"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_typed_events_of_the_watched_projects() {
    let receiver = WebhookReceiver::start([], 200).await;
    let app = builder(Backend::Sqlite).start().await;
    let token = app.sign_up("hooks@example.com").await;
    let (other_project, other_run) = app.create_project(&token, "another app").await;
    app.wait_for_run(&token, &other_run).await;
    let watched = app
        .data(
            Some(&token),
            CREATE,
            json!({ "url": receiver.url(), "events": ["RUN_FINISHED", "RUN_QUEUED", "RUN_QUEUED"] }),
        )
        .await["createWebhook"]
        .clone();
    let secret = watched["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{watched}");
    assert_eq!(
        watched["webhook"]["events"],
        json!(["RUN_QUEUED", "RUN_FINISHED"])
    );
    assert_eq!(watched["webhook"]["enabled"], true);
    // Watches the first project only: gets nothing of the one below.
    let filtered = app
        .data(
            Some(&token),
            CREATE,
            json!({ "url": receiver.url(), "events": ["RUN_QUEUED"], "projectId": other_project }),
        )
        .await["createWebhook"]["webhook"]
        .clone();

    let (project_id, run_id) = app.create_project(&token, "a todo app").await;
    // Deliveries are concurrent: in any order.
    let requests = receiver
        .wait_until("RUN_QUEUED and RUN_FINISHED", |requests| {
            requests.len() >= 2
        })
        .await;
    for request in &requests {
        assert_eq!(request.signature, expected_signature(&secret, request));
        let age = chrono::Utc::now().timestamp() - request.timestamp.parse::<i64>().unwrap();
        assert!((0..600).contains(&age), "timestamp {}", request.timestamp);
    }
    let finished = requests
        .iter()
        .find(|request| kind(request) == "RUN_FINISHED")
        .unwrap();
    let body: Value = serde_json::from_str(&finished.body).unwrap();
    assert_eq!(body["data"]["projectId"], project_id.as_str());
    assert_eq!(body["data"]["runId"], run_id.as_str());
    assert_eq!(body["data"]["status"], "SUCCEEDED");
    assert!(
        body["data"]["seq"].is_i64() && body["timestamp"].is_string(),
        "{body}"
    );
    let mut kinds: Vec<String> = requests.iter().map(kind).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["RUN_FINISHED", "RUN_QUEUED"],
        "only the kinds asked for, of the watched project"
    );

    let hooks = wait_for_webhooks(&app, &token, "both delivered", |hooks| {
        hooks.iter().any(|hook| {
            deliveries(hook).len() == 2
                && deliveries(hook)
                    .iter()
                    .all(|delivery| delivery["status"] == "SUCCEEDED")
        })
    })
    .await;
    let hook = hooks
        .iter()
        .find(|hook| hook["id"] == watched["webhook"]["id"])
        .unwrap();
    let listed = deliveries(hook);
    assert_eq!(listed[0]["id"], finished.id.as_str());
    assert_eq!(listed[0]["eventKind"], "RUN_FINISHED");
    assert_eq!(listed[0]["attempts"], 1);
    assert_eq!(listed[0]["responseStatus"], 200);
    assert!(listed[0]["nextAttemptAt"].is_null());
    let other = hooks
        .iter()
        .find(|hook| hook["id"] == filtered["id"])
        .unwrap();
    assert!(deliveries(other).is_empty(), "{other}");
    assert!(!hooks
        .iter()
        .any(|hook| hook.to_string().contains(&secret[6..])));

    // A redelivery is the same message again.
    let redelivered = app
        .data(
            Some(&token),
            "mutation($id: ID!) { redeliverWebhookDelivery(id: $id) { id status attempts } }",
            json!({ "id": finished.id }),
        )
        .await;
    assert_eq!(redelivered["redeliverWebhookDelivery"]["status"], "PENDING");
    let requests = receiver
        .wait_until("the redelivery", |requests| {
            requests
                .iter()
                .filter(|request| request.id == finished.id)
                .count()
                == 2
        })
        .await;
    let again = requests
        .iter()
        .rfind(|request| request.id == finished.id)
        .unwrap();
    assert_eq!(again.body, finished.body);
    assert_eq!(again.signature, expected_signature(&secret, again));
}

on_both_backends!(
    a_failed_attempt_is_retried_with_the_same_id,
    |backend: Backend| async move {
        let receiver = WebhookReceiver::start([500, 503], 200).await;
        let app = builder(backend).start().await;
        let token = app.sign_up("retries@example.com").await;
        let (_, secret) = create_webhook(&app, &token, &receiver.url(), &["RUN_QUEUED"]).await;
        app.create_project(&token, "a todo app").await;
        let requests = receiver
            .wait_until("a success", |requests| {
                requests.iter().any(|request| request.answered == 200)
            })
            .await;
        assert_eq!(
            requests
                .iter()
                .map(|request| request.answered)
                .collect::<Vec<_>>(),
            [500, 503, 200]
        );
        assert!(requests.iter().all(|request| request.id == requests[0].id));
        assert!(requests
            .iter()
            .all(|request| request.signature == expected_signature(&secret, request)));
        let hooks = wait_for_webhooks(&app, &token, "succeeded", |hooks| {
            deliveries(&hooks[0])[0]["status"] == "SUCCEEDED"
        })
        .await;
        let delivery = &deliveries(&hooks[0])[0];
        assert_eq!(delivery["attempts"], 3);
        assert_eq!(delivery["responseStatus"], 200);
        assert_eq!(delivery["id"], requests[0].id.as_str());
        assert!(hooks[0]["failingSince"].is_null(), "a success clears it");
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_the_retries_still_delivers_once() {
    let receiver = WebhookReceiver::start([], 500).await;
    // Retries in a thousandth of the real delays: the third attempt is 0.3 s after the second.
    let first = TestApp::builder(Backend::Sqlite)
        .config(|config| {
            config.webhook_allow_private = true;
            config.webhook_retry_scale = 0.001;
        })
        .start()
        .await;
    let token = first.sign_up("restart@example.com").await;
    create_webhook(&first, &token, &receiver.url(), &["RUN_QUEUED"]).await;
    first.create_project(&token, "a todo app").await;
    receiver
        .wait_until("a failed attempt", |requests| !requests.is_empty())
        .await;
    let database_url = first.database_url();
    first.server.shutdown().await.unwrap();

    receiver.answer(200);
    let second = TestApp::builder(Backend::Sqlite)
        .database_url(database_url)
        .config(|config| {
            config.webhook_allow_private = true;
            config.webhook_retry_scale = 0.001;
        })
        .start()
        .await;
    let hooks = wait_for_webhooks(&second, &token, "delivered after the restart", |hooks| {
        deliveries(&hooks[0])[0]["status"] == "SUCCEEDED"
    })
    .await;
    let requests = receiver.requests();
    let successes = requests
        .iter()
        .filter(|request| request.answered == 200)
        .count();
    assert_eq!(successes, 1, "{requests:#?}");
    assert!(requests.iter().all(|request| request.id == requests[0].id));
    assert_eq!(
        deliveries(&hooks[0])[0]["attempts"],
        requests.len(),
        "every attempt counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_deliver_each_attempt_once() {
    let receiver = WebhookReceiver::start([], 200).await;
    let first = builder(Backend::Postgres).start().await;
    let second = builder(Backend::Postgres)
        .database_url(first.database_url())
        .start()
        .await;
    let token = first.sign_up("two@example.com").await;
    let every_kind = [
        "RUN_QUEUED",
        "RUN_STARTED",
        "SANDBOX_READY",
        "MODEL_TEXT_DELTA",
        "MODEL_RESPONSE",
        "TOOL_CALL_STARTED",
        "TOOL_OUTPUT",
        "FILE_WRITTEN",
        "TOOL_CALL_FINISHED",
        "MESSAGE_CREATED",
        "FRAGMENT_CREATED",
        "RUN_FINISHED",
    ];
    create_webhook(&first, &token, &receiver.url(), &every_kind).await;
    for n in 0..3 {
        let (_, run_id) = first.create_project(&token, &format!("app {n}")).await;
        first.wait_for_run(&token, &run_id).await;
    }
    let hooks = wait_for_webhooks(&second, &token, "all delivered", |hooks| {
        let all = deliveries(&hooks[0]);
        !all.is_empty() && all.iter().all(|delivery| delivery["status"] == "SUCCEEDED")
    })
    .await;
    let all = deliveries(&hooks[0]);
    assert!(all.len() >= 6, "{all:#?}");
    assert!(
        all.iter().all(|delivery| delivery["attempts"] == 1),
        "{all:#?}"
    );
    let requests = receiver.requests();
    let mut ids: Vec<&str> = requests.iter().map(|request| request.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), requests.len(), "a message was sent twice");
    assert_eq!(requests.len(), all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_answering_410_is_disabled() {
    let receiver = WebhookReceiver::start([], 410).await;
    let app = builder(Backend::Sqlite).start().await;
    let token = app.sign_up("gone@example.com").await;
    let (id, _) = create_webhook(&app, &token, &receiver.url(), &["RUN_QUEUED"]).await;
    app.create_project(&token, "a todo app").await;
    let hooks = wait_for_webhooks(&app, &token, "disabled", |hooks| {
        hooks[0]["enabled"] == false
    })
    .await;
    let delivery = &deliveries(&hooks[0])[0];
    assert_eq!(delivery["status"], "FAILED");
    assert_eq!(delivery["responseStatus"], 410);
    assert_eq!(receiver.requests().len(), 1, "no retry after 410");

    // Disabled: no delivery is queued for it, and a redelivery asks to enable it first.
    app.create_project(&token, "another app").await;
    assert_eq!(deliveries(&webhooks(&app, &token).await[0]).len(), 1);
    let refused = app
        .gql(
            Some(&token),
            "mutation($id: ID!) { redeliverWebhookDelivery(id: $id) { id } }",
            json!({ "id": delivery["id"] }),
        )
        .await;
    assert_eq!(error_code(&refused), "BAD_USER_INPUT");
    let enabled = app
        .data(
            Some(&token),
            "mutation($id: ID!) { updateWebhook(id: $id, enabled: true) { enabled disabledAt } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(enabled["updateWebhook"]["enabled"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_every_attempt_is_disabled() {
    let receiver = WebhookReceiver::start([], 500).await;
    // The whole schedule (about 28 h) in a second; failing for 5 days would take 4.3 s.
    let app = TestApp::builder(Backend::Sqlite)
        .config(|config| {
            config.webhook_allow_private = true;
            config.webhook_retry_scale = 0.00001;
        })
        .start()
        .await;
    let token = app.sign_up("failing@example.com").await;
    create_webhook(&app, &token, &receiver.url(), &["RUN_QUEUED"]).await;
    app.create_project(&token, "a todo app").await;
    let hooks = wait_for_webhooks(&app, &token, "disabled", |hooks| {
        hooks[0]["enabled"] == false
    })
    .await;
    let delivery = &deliveries(&hooks[0])[0];
    assert_eq!(delivery["status"], "FAILED");
    assert_eq!(delivery["attempts"], 8);
    assert_eq!(receiver.requests().len(), 8);
    assert!(hooks[0]["failingSince"].is_string());
}

on_both_backends!(
    private_targets_are_refused_by_default,
    |backend: Backend| async move {
        let receiver = WebhookReceiver::start([], 200).await;
        let app = TestApp::spawn(backend).await;
        let token = app.sign_up("ssrf@example.com").await;
        let port = receiver.url().split(':').nth(2).unwrap().to_owned();
        for url in [
            receiver.url(),
            format!("http://localhost:{port}"),
            "http://[::ffff:127.0.0.1]/hook".to_owned(),
            "ftp://example.com/hook".to_owned(),
        ] {
            let refused = app
                .gql(
                    Some(&token),
                    CREATE,
                    json!({ "url": url, "events": ["RUN_QUEUED"] }),
                )
                .await;
            assert_eq!(error_code(&refused), "BAD_USER_INPUT", "{url}: {refused}");
        }
        assert!(webhooks(&app, &token).await.is_empty());
        assert!(receiver.requests().is_empty());
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_have_limits_and_owners() {
    let receiver = WebhookReceiver::start([], 200).await;
    let app = TestApp::builder(Backend::Sqlite)
        .config(|config| {
            config.webhook_allow_private = true;
            config.webhooks_max_per_user = 1;
        })
        .start()
        .await;
    let token = app.sign_up("limits@example.com").await;
    let bad = |variables: Value| {
        let app = &app;
        let token = token.clone();
        async move { error_code(&app.gql(Some(&token), CREATE, variables).await).to_owned() }
    };
    assert_eq!(
        bad(json!({ "url": receiver.url(), "events": [] })).await,
        "BAD_USER_INPUT"
    );
    let long = format!("{}?{}", receiver.url(), "a".repeat(2048));
    assert_eq!(
        bad(json!({ "url": long, "events": ["RUN_QUEUED"] })).await,
        "BAD_USER_INPUT"
    );
    let (id, _) = create_webhook(&app, &token, &receiver.url(), &["RUN_QUEUED"]).await;
    assert_eq!(
        bad(json!({ "url": receiver.url(), "events": ["RUN_QUEUED"] })).await,
        "BAD_USER_INPUT",
        "one webhook at most"
    );

    // Another user cannot see, change or delete it.
    let stranger = app.sign_up("stranger@example.com").await;
    assert!(webhooks(&app, &stranger).await.is_empty());
    let delete = "mutation($id: ID!) { deleteWebhook(id: $id) { id } }";
    let refused = app.gql(Some(&stranger), delete, json!({ "id": id })).await;
    assert_eq!(error_code(&refused), "NOT_FOUND");
    let (stranger_project, _) = app.create_project(&stranger, "theirs").await;
    let update = "mutation($id: ID!, $projectId: ID) { updateWebhook(id: $id, projectId: $projectId) { projectId } }";
    let refused = app
        .gql(
            Some(&token),
            update,
            json!({ "id": id, "projectId": stranger_project }),
        )
        .await;
    assert_eq!(error_code(&refused), "NOT_FOUND");

    let deleted = app.data(Some(&token), delete, json!({ "id": id })).await;
    assert_eq!(deleted["deleteWebhook"]["id"], id.as_str());
    assert!(webhooks(&app, &token).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_cannot_manage_webhooks() {
    let receiver = WebhookReceiver::start([], 200).await;
    let app = builder(Backend::Sqlite).start().await;
    let token = app.sign_up("keys@example.com").await;
    let (id, _) = create_webhook(&app, &token, &receiver.url(), &["RUN_QUEUED"]).await;
    let (_, key) = create_key(&app, &token, &["READ", "GENERATE"]).await;
    for (query, variables) in [
        (
            CREATE,
            json!({ "url": receiver.url(), "events": ["RUN_QUEUED"] }),
        ),
        ("{ webhooks { id } }", json!({})),
        (
            "mutation($id: ID!) { updateWebhook(id: $id, enabled: false) { id } }",
            json!({ "id": id }),
        ),
        (
            "mutation($id: ID!) { deleteWebhook(id: $id) { id } }",
            json!({ "id": id }),
        ),
    ] {
        let refused = app.gql(Some(&key), query, variables).await;
        assert_eq!(error_code(&refused), "FORBIDDEN", "{query}: {refused}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_deliveries_are_deleted_after_30_days() {
    use codekraft::entity::webhook_delivery::{self, DeliveryStatus};
    use sea_orm::{ActiveModelTrait, EntityTrait, Set};

    let receiver = WebhookReceiver::start([], 200).await;
    let first = builder(Backend::Sqlite).start().await;
    let token = first.sign_up("retention@example.com").await;
    let (id, _) = create_webhook(&first, &token, &receiver.url(), &["RUN_QUEUED"]).await;
    let db = &first.server.state.db;
    let row = |age_days: i64, status| {
        let created_at = chrono::Utc::now() - chrono::TimeDelta::days(age_days);
        webhook_delivery::ActiveModel {
            id: Set(uuid::Uuid::now_v7()),
            webhook_id: Set(id.parse().unwrap()),
            event_kind: Set("RUN_QUEUED".into()),
            body: Set("{}".into()),
            status: Set(status),
            attempts: Set(1),
            response_status: Set(Some(200)),
            next_attempt_at: Set(None),
            locked_until: Set(None),
            created_at: Set(created_at),
        }
    };
    let old = row(31, DeliveryStatus::Succeeded).insert(db).await.unwrap();
    let recent = row(29, DeliveryStatus::Failed).insert(db).await.unwrap();

    // A worker prunes when it starts (then hourly).
    let second = builder(Backend::Sqlite)
        .database_url(first.database_url())
        .start()
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let db = &second.server.state.db;
    while webhook_delivery::Entity::find_by_id(old.id)
        .one(db)
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            Instant::now() < deadline,
            "the old delivery was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kept = webhook_delivery::Entity::find_by_id(recent.id)
        .one(db)
        .await
        .unwrap();
    assert!(kept.is_some(), "a delivery younger than 30 days stays");
}
