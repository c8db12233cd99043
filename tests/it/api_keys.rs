//! Scoped API keys: shown once, accepted wherever a session token is, limited to their scopes,
//! refused once revoked or expired.

use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::app::{error_code, Backend, TestApp};
use crate::support::ws_client::{self, TRANSPORT_WS};

pub const CREATE_KEY: &str = "mutation($name: String!, $scopes: [ApiKeyScope!]!, $expiresAt: DateTime) { createApiKey(name: $name, scopes: $scopes, expiresAt: $expiresAt) { secret apiKey { id name prefix scopes createdAt expiresAt lastUsedAt revokedAt } } }";
const REVOKE_KEY: &str = "mutation($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }";
const LIST_KEYS: &str =
    "{ apiKeys { id name prefix scopes createdAt expiresAt lastUsedAt revokedAt } }";
const ME: &str = "{ me { id } }";

/// Creates a key of the session `token` with `scopes`; returns `(id, secret)`.
pub async fn create_key(app: &TestApp, token: &str, scopes: &[&str]) -> (String, String) {
    let data = app
        .data(
            Some(token),
            CREATE_KEY,
            json!({ "name": "ci", "scopes": scopes }),
        )
        .await;
    let created = &data["createApiKey"];
    (
        created["apiKey"]["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

async fn me_id(app: &TestApp, token: &str) -> Value {
    app.data(Some(token), ME, json!({})).await["me"]["id"].clone()
}

on_both_backends!(
    a_key_is_shown_once_and_works_over_http_and_ws,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let token = app.sign_up("integrator@example.com").await;
        let created = app
            .data(
                Some(&token),
                CREATE_KEY,
                json!({ "name": "  nightly CI  ", "scopes": ["READ", "GENERATE"] }),
            )
            .await["createApiKey"]
            .clone();
        let secret = created["secret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("ckp_"), "{secret}");
        let key = &created["apiKey"];
        assert_eq!(key["name"], "nightly CI");
        assert_eq!(key["scopes"], json!(["READ", "GENERATE"]));
        assert!(secret.starts_with(key["prefix"].as_str().unwrap()));
        assert!(key["prefix"].as_str().unwrap().len() < secret.len() / 2);
        assert!(key["lastUsedAt"].is_null() && key["revokedAt"].is_null());

        // Over HTTP: the key speaks for its owner, and may start a build.
        assert_eq!(me_id(&app, &secret).await, me_id(&app, &token).await);
        app.create_project(&secret, "a todo app").await;

        // Over graphql-ws.
        let mut ws = app.ws(&secret).await;
        ws.send_json(json!({ "id": "1", "type": "subscribe", "payload": { "query": ME } }))
            .await;
        let next = ws.recv().await;
        assert_eq!(
            next["payload"]["data"]["me"]["id"],
            me_id(&app, &token).await
        );

        // The list never holds the secret, and notes the use.
        let listed = app.gql(Some(&token), LIST_KEYS, json!({})).await;
        assert!(!listed.to_string().contains(&secret[4..]), "{listed}");
        let keys = listed["data"]["apiKeys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["id"], key["id"]);
        assert!(keys[0]["lastUsedAt"].is_string(), "{listed}");
    }
);

on_both_backends!(
    a_read_key_reads_and_subscribes_but_cannot_generate,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let token = app.sign_up("dashboard@example.com").await;
        let (project_id, _) = app.create_project(&token, "a todo app").await;
        let (_, read_key) = create_key(&app, &token, &["READ"]).await;

        let create = app
            .gql(
                Some(&read_key),
                "mutation { createProject(prompt: \"a blog\") { project { id } } }",
                json!({}),
            )
            .await;
        assert_eq!(error_code(&create), "FORBIDDEN", "{create}");
        let send = app
            .gql(
                Some(&read_key),
                "mutation($id: ID!) { sendMessage(projectId: $id, content: \"more\") { run { id } } }",
                json!({ "id": project_id }),
            )
            .await;
        assert_eq!(error_code(&send), "FORBIDDEN", "{send}");
        assert_eq!(app.count_rows("project").await, 1);

        let project = app
            .data(
                Some(&read_key),
                "query($id: ID!) { project(id: $id) { id } }",
                json!({ "id": project_id }),
            )
            .await;
        assert_eq!(project["project"]["id"], project_id.as_str());
        let mut ws = app.ws(&read_key).await;
        ws.send_json(json!({ "id": "s", "type": "subscribe", "payload": {
            "query": "subscription($id: ID!) { projectEvents(projectId: $id) { seq kind } }",
            "variables": { "id": project_id },
        } }))
        .await;
        let first = ws.recv().await;
        assert_eq!(first["type"], "next", "{first}");
        assert_eq!(first["payload"]["data"]["projectEvents"]["seq"], 1);
    }
);

#[tokio::test]
async fn keys_cannot_manage_keys_or_the_account() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.sign_up("careful@example.com").await;
    let (key_id, key) = create_key(&app, &token, &["READ", "GENERATE"]).await;
    let attempts = [
        (CREATE_KEY, json!({ "name": "child", "scopes": ["READ"] })),
        (REVOKE_KEY, json!({ "id": key_id })),
        (LIST_KEYS, json!({})),
        ("mutation { signOut }", json!({})),
        (
            "mutation($id: ID!) { deleteProject(id: $id) { id } }",
            json!({ "id": key_id }),
        ),
    ];
    for (query, variables) in attempts {
        let refused = app.gql(Some(&key), query, variables).await;
        assert_eq!(error_code(&refused), "FORBIDDEN", "{query}: {refused}");
    }
    assert_eq!(app.count_rows("api_key").await, 1);
    // The key still works: refusals revoke nothing.
    me_id(&app, &key).await;
}

on_both_backends!(
    revoking_a_key_refuses_it_and_closes_its_socket,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let token = app.sign_up("rotating@example.com").await;
        let (key_id, key) = create_key(&app, &token, &["READ"]).await;
        let (_, other_key) = create_key(&app, &token, &["READ"]).await;
        let mut socket = app.ws(&key).await;
        let mut other_socket = app.ws(&other_key).await;

        let revoked = app
            .data(Some(&token), REVOKE_KEY, json!({ "id": key_id }))
            .await;
        assert_eq!(revoked["revokeApiKey"]["id"], key_id.as_str());
        assert!(revoked["revokeApiKey"]["revokedAt"].is_string());

        let (code, reason) = socket.expect_close().await;
        assert_eq!((code, reason.as_str()), (4403, "the API key was revoked"));
        let refused = app.gql(Some(&key), ME, json!({})).await;
        assert_eq!(error_code(&refused), "UNAUTHENTICATED");
        let mut again = ws_client::connect(&app.ws_url(), TRANSPORT_WS).await;
        again
            .send_json(json!({ "type": "connection_init", "payload": { "token": key } }))
            .await;
        assert_eq!(again.expect_close().await.0, 4403);

        // The other key goes on.
        me_id(&app, &other_key).await;
        other_socket
            .send_json(json!({ "id": "1", "type": "subscribe", "payload": { "query": ME } }))
            .await;
        assert_eq!(other_socket.recv().await["type"], "next");

        // Another user cannot revoke the user's keys: they are not found.
        let stranger = app.sign_up("stranger@example.com").await;
        let (other_id, _) = create_key(&app, &token, &["READ"]).await;
        let not_theirs = app
            .gql(Some(&stranger), REVOKE_KEY, json!({ "id": other_id }))
            .await;
        assert_eq!(error_code(&not_theirs), "NOT_FOUND");
    }
);

on_both_backends!(an_expired_key_is_refused, |backend: Backend| async move {
    use codekraft::entity::api_key;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

    let app = TestApp::spawn(backend).await;
    let token = app.sign_up("temporary@example.com").await;
    let past = app
        .gql(
            Some(&token),
            CREATE_KEY,
            json!({ "name": "old", "scopes": ["READ"], "expiresAt": "2020-01-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(error_code(&past), "BAD_USER_INPUT");

    let created = app
        .data(
            Some(&token),
            CREATE_KEY,
            json!({ "name": "brief", "scopes": ["READ"], "expiresAt": "2100-01-01T00:00:00Z" }),
        )
        .await;
    let key = created["createApiKey"]["secret"].as_str().unwrap();
    let key_id: uuid::Uuid = created["createApiKey"]["apiKey"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    me_id(&app, key).await;
    // Time passes: the key's expiry is behind us.
    api_key::Entity::update_many()
        .col_expr(
            api_key::Column::ExpiresAt,
            (chrono::Utc::now() - chrono::TimeDelta::seconds(1)).into(),
        )
        .filter(api_key::Column::Id.eq(key_id))
        .exec(&app.server.state.db)
        .await
        .unwrap();
    let refused = app.gql(Some(key), ME, json!({})).await;
    assert_eq!(error_code(&refused), "UNAUTHENTICATED");
});

#[tokio::test]
async fn malformed_keys_and_bad_checksums_are_unauthenticated() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.sign_up("typo@example.com").await;
    let (_, key) = create_key(&app, &token, &["READ"]).await;
    let last = key.chars().last().unwrap();
    let wrong_checksum = format!(
        "{}{}",
        &key[..key.len() - 1],
        if last == 'A' { 'B' } else { 'A' }
    );
    let typo = if &key[4..5] == "x" { "y" } else { "x" };
    let random_part_typo = format!("ckp_{typo}{}", &key[5..]);
    for bad in [
        wrong_checksum.as_str(),
        random_part_typo.as_str(),
        &key[..key.len() - 2],
        "ckp_",
        "ckp_not-even-base62",
    ] {
        let refused = app.gql(Some(bad), ME, json!({})).await;
        assert_eq!(error_code(&refused), "UNAUTHENTICATED", "{bad}");
        let mut ws = ws_client::connect(&app.ws_url(), TRANSPORT_WS).await;
        ws.send_json(json!({ "type": "connection_init", "payload": { "token": bad } }))
            .await;
        assert_eq!(ws.expect_close().await.0, 4403, "{bad}");
    }
}

#[tokio::test]
async fn keys_are_capped_per_user_and_their_input_checked() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|config| config.api_keys_max_per_user = 2)
        .start()
        .await;
    let token = app.sign_up("collector@example.com").await;
    let (first, _) = create_key(&app, &token, &["READ"]).await;
    create_key(&app, &token, &["READ"]).await;
    let over = app
        .gql(
            Some(&token),
            CREATE_KEY,
            json!({ "name": "third", "scopes": ["READ"] }),
        )
        .await;
    assert_eq!(error_code(&over), "BAD_USER_INPUT");
    let message = over["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("2 API keys"), "{message}");
    // A revoked key makes room.
    app.data(Some(&token), REVOKE_KEY, json!({ "id": first }))
        .await;
    create_key(&app, &token, &["READ"]).await;
    assert_eq!(
        app.data(Some(&token), LIST_KEYS, json!({})).await["apiKeys"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "the revoked key was pruned"
    );

    for (name, scopes) in [
        ("x".repeat(101), json!(["READ"])),
        ("   ".to_owned(), json!(["READ"])),
        ("no scopes".to_owned(), json!([])),
    ] {
        let refused = app
            .gql(
                Some(&token),
                CREATE_KEY,
                json!({ "name": name, "scopes": scopes }),
            )
            .await;
        assert_eq!(error_code(&refused), "BAD_USER_INPUT", "{refused}");
    }
}

/// Every mutation but signing up and in needs more than READ: a READ key is refused each one,
/// before its arguments are even looked at (so none can be added and forgotten).
#[tokio::test]
async fn a_read_key_is_refused_every_mutation() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.sign_up("auditor@example.com").await;
    let (_, read_key) = create_key(&app, &token, &["READ"]).await;
    let schema = app
        .data(
            None,
            "{ __schema { mutationType { fields { name type { ofType { kind } } args { name type { kind ofType { kind name ofType { ofType { name } } } } } } } } }",
            json!({}),
        )
        .await;
    let fields = schema["__schema"]["mutationType"]["fields"]
        .as_array()
        .unwrap();
    assert!(fields.len() >= 12, "{schema}");
    for field in fields {
        let name = field["name"].as_str().unwrap();
        if matches!(name, "signUp" | "signIn") {
            continue;
        }
        // Required arguments get a value of their type; optional ones are left out.
        let args: Vec<String> = field["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|arg| arg["type"]["kind"] == "NON_NULL")
            .map(|arg| {
                let inner = &arg["type"]["ofType"];
                let element = inner["ofType"]["ofType"]["name"].as_str();
                let value = match (inner["kind"].as_str(), inner["name"].as_str()) {
                    (Some("LIST"), _) if element == Some("RunEventKind") => "[RUN_QUEUED]",
                    (Some("LIST"), _) => "[READ]",
                    (_, Some("ID")) => "\"00000000-0000-7000-8000-000000000000\"",
                    (_, Some("String")) => "\"x\"",
                    (_, Some("Int")) => "1",
                    other => panic!("{name}: no sample value for {other:?}"),
                };
                format!("{}: {value}", arg["name"].as_str().unwrap())
            })
            .collect();
        let args = if args.is_empty() {
            String::new()
        } else {
            format!("({})", args.join(", "))
        };
        // Scalar results take no selection.
        let selection = match field["type"]["ofType"]["kind"].as_str() {
            Some("SCALAR") => "",
            _ => " { __typename }",
        };
        let query = format!("mutation {{ {name}{args}{selection} }}");
        let refused = app.gql(Some(&read_key), &query, json!({})).await;
        assert_eq!(error_code(&refused), "FORBIDDEN", "{query}: {refused}");
    }
}
