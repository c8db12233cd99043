//! What one GraphQL document may cost: fields, depth, complexity and page sizes are refused
//! with their codes before anything runs, while the web client's and the README's own queries
//! pass.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::app::{error_code, Backend, TestApp};

/// Codes that say a document was refused as a whole: none of our own queries may get one.
const REFUSALS: [&str; 5] = [
    "QUERY_TOO_COMPLEX",
    "QUERY_TOO_DEEP",
    "TOO_MANY_FIELDS",
    "GRAPHQL_VALIDATION_FAILED",
    "GRAPHQL_PARSE_FAILED",
];

fn assert_refused(response: &Value, code: &str) {
    assert_eq!(error_code(response), code, "{response}");
    assert!(response["data"].is_null(), "nothing ran: {response}");
}

#[tokio::test]
async fn a_thousand_aliases_of_usage_are_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.sign_up("aliases@example.com").await;
    let aliases: String = (0..1000)
        .map(|i| format!("u{i}: usage {{ remaining }} "))
        .collect();
    let response = app
        .gql(Some(&token), &format!("{{ {aliases} }}"), json!({}))
        .await;
    assert_refused(&response, "TOO_MANY_FIELDS");

    let mut ws = app.ws(&token).await;
    ws.send_json(json!({ "id": "q", "type": "subscribe", "payload": { "query": format!("{{ {aliases} }}") } }))
        .await;
    let message = ws.recv_skip_ka().await;
    assert_eq!(message["type"], "error", "{message}");
    assert_eq!(
        message["payload"][0]["extensions"]["code"],
        "TOO_MANY_FIELDS"
    );
    ws.close().await;

    let few: String = (0..10)
        .map(|i| format!("u{i}: usage {{ remaining }} "))
        .collect();
    let data = app
        .data(Some(&token), &format!("{{ {few} }}"), json!({}))
        .await;
    assert_eq!(data["u9"]["remaining"], 5);
}

/// Each limit lets a document right at it through and refuses one past it.
#[tokio::test]
async fn limits_follow_their_config_keys() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|config| {
            config.graphql_max_fields = 3;
            config.graphql_max_depth = 2;
            config.graphql_max_complexity = 3;
        })
        .start()
        .await;
    let token = app.sign_up("tight@example.com").await;
    let at_limits = "{ usage { plan remaining } }";
    app.data(Some(&token), at_limits, json!({})).await;
    for (query, code) in [
        ("{ usage { plan remaining limit } }", "TOO_MANY_FIELDS"),
        (
            "{ __type(name: \"Query\") { fields { name } } }",
            "QUERY_TOO_DEEP",
        ),
        ("{ a: usage { plan } b: usage { plan } }", "TOO_MANY_FIELDS"),
    ] {
        assert_refused(&app.gql(Some(&token), query, json!({})).await, code);
    }
    let app = TestApp::builder(Backend::Sqlite)
        .config(|config| config.graphql_max_complexity = 3)
        .start()
        .await;
    let token = app.sign_up("tight@example.com").await;
    app.data(Some(&token), at_limits, json!({})).await;
    let response = app
        .gql(
            Some(&token),
            "{ usage { plan remaining limit } }",
            json!({}),
        )
        .await;
    assert_refused(&response, "QUERY_TOO_COMPLEX");
}

#[tokio::test]
async fn a_deeply_nested_query_is_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let nested = (0..20).fold(String::from("name"), |inner, _| {
        format!("name ofType {{ {inner} }}")
    });
    let response = app
        .gql(
            None,
            &format!("{{ __type(name: \"Query\") {{ fields {{ type {{ {nested} }} }} }} }}"),
            json!({}),
        )
        .await;
    assert_refused(&response, "QUERY_TOO_DEEP");
}

#[tokio::test]
async fn a_query_whose_pages_multiply_is_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.sign_up("costly@example.com").await;
    let response = app
        .gql(
            Some(&token),
            "query($n: Int) { projects(first: $n) { edges { node { messages(first: $n) {
                edges { node { fragment { files } } } } } } } }",
            json!({ "n": 100 }),
        )
        .await;
    assert_refused(&response, "QUERY_TOO_COMPLEX");

    let response = app
        .gql(
            Some(&token),
            "query($n: Int) { projects(first: $n) { edges { node { messages(first: $n) {
                edges { node { fragment { files } } } } } } } }",
            json!({ "n": 3 }),
        )
        .await;
    assert!(response.get("errors").is_none(), "{response}");
}

/// Page sizes above the maximum (100) are refused, not clamped: a client never silently gets
/// fewer items than it asked for.
#[tokio::test]
async fn a_page_above_the_maximum_is_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.sign_up("pages@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "a counter").await;
    app.wait_for_run(&token, &run_id).await;
    for (query, id) in [
        (
            "query($id: ID!) { project(id: $id) { id } projects(first: 101) { edges { cursor } } }",
            &project_id,
        ),
        (
            "query($id: ID!) { project(id: $id) { messages(first: 101) { edges { cursor } } } }",
            &project_id,
        ),
        (
            "query($id: ID!) { run(id: $id) { transcript(first: 101) } }",
            &run_id,
        ),
        (
            "query($id: ID!) { run(id: $id) { transcript(after: -1) } }",
            &run_id,
        ),
    ] {
        let response = app.gql(Some(&token), query, json!({ "id": id })).await;
        assert_eq!(
            error_code(&response),
            "BAD_USER_INPUT",
            "{query}: {response}"
        );
    }
}

/// The queries of `web-client/js/api.js` (its `Q` object) and of the README's API examples,
/// run against the server with real ids: none is refused for its cost or shape.
#[tokio::test]
async fn the_web_client_and_readme_queries_pass_the_limits() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.sign_up("client@example.com").await;
    // `signOut` ends the session it is sent with: it gets one of its own.
    let leaving = app.sign_up("leaving@example.com").await;
    let (project_id, run_id) = app.create_project(&token, "a notes app").await;
    app.wait_for_run(&token, &run_id).await;
    let fragment = app
        .data(
            Some(&token),
            "query($id: ID!) { project(id: $id) { messages { edges { node { fragment { id } } } } } }",
            json!({ "id": project_id }),
        )
        .await;
    let fragment_id = fragment["project"]["messages"]["edges"][1]["node"]["fragment"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ids = Ids {
        project: &project_id,
        run: &run_id,
        fragment: &fragment_id,
    };

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let client_queries =
        web_client_queries(&std::fs::read_to_string(root.join("web-client/js/api.js")).unwrap());
    assert!(client_queries.len() >= 15, "{client_queries:?}");
    let readme_queries = readme_queries(&std::fs::read_to_string(root.join("README.md")).unwrap());
    assert!(readme_queries.len() >= 10, "{readme_queries:?}");

    let variables = json!({
        "id": project_id, "projectId": project_id, "runId": run_id, "fragmentId": fragment_id,
        "first": 20, "after": null, "email": "other@example.com", "password": "correct horse",
        "prompt": "a clock", "content": "make it blue", "name": "renamed", "scopes": ["READ"],
        "path": "app/page.tsx", "against": fragment_id,
    });
    let mut documents: Vec<(String, Value)> = client_queries
        .into_iter()
        .map(|(name, query)| {
            let variables = match name.as_str() {
                "restoreFragment" => json!({ "fragmentId": fragment_id }),
                // Replays the project's events from the start, so a first message comes.
                "projectEvents" => json!({ "projectId": project_id, "after": 0 }),
                // The rest of the list still needs the project.
                "deleteProject" => json!({ "id": "00000000-0000-7000-8000-000000000000" }),
                _ => variables.clone(),
            };
            (query, variables)
        })
        .collect();
    documents.extend(
        readme_queries
            .iter()
            .map(|query| (ids.fill_in(query), json!({}))),
    );

    for (query, variables) in &documents {
        let response = if query.trim_start().starts_with("subscription") {
            first_subscription_message(&app, &token, query, variables).await
        } else {
            let token = if query.contains("signUp") || query.contains("signIn") {
                None
            } else if query.contains("signOut") {
                Some(leaving.as_str())
            } else {
                Some(token.as_str())
            };
            app.gql(token, query, variables.clone()).await
        };
        let codes: Vec<&str> = response["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|error| error["extensions"]["code"].as_str())
            .collect();
        assert!(
            !codes.iter().any(|code| REFUSALS.contains(code)),
            "{query}\n→ {response}"
        );
    }
}

struct Ids<'a> {
    project: &'a str,
    run: &'a str,
    fragment: &'a str,
}

impl Ids<'_> {
    /// The README's `"…"` placeholders replaced by real ids.
    fn fill_in(&self, query: &str) -> String {
        query
            .replace(
                "projectId: \"…\"",
                &format!("projectId: \"{}\"", self.project),
            )
            .replace("runId: \"…\"", &format!("runId: \"{}\"", self.run))
            .replace("run(id: \"…\"", &format!("run(id: \"{}\"", self.run))
            .replace(
                "fragmentId: \"…\"",
                &format!("fragmentId: \"{}\"", self.fragment),
            )
    }
}

/// The first answer to a subscription, on a connection of its own.
async fn first_subscription_message(
    app: &TestApp,
    token: &str,
    query: &str,
    variables: &Value,
) -> Value {
    let mut ws = app.ws(token).await;
    ws.send_json(json!({ "id": "s", "type": "subscribe", "payload": { "query": query, "variables": variables } }))
        .await;
    let message = ws.recv_skip_ka().await;
    ws.close().await;
    match message["type"].as_str() {
        Some("next") => message["payload"].clone(),
        _ => json!({ "errors": message["payload"] }),
    }
}

/// The text of the string constant `name` of api.js (quoted with `'` or a backtick).
fn constant<'a>(source: &'a str, name: &str) -> &'a str {
    ['\'', '`']
        .into_iter()
        .find_map(|quote| {
            source
                .split_once(&format!("const {name} = {quote}"))
                .and_then(|(_, rest)| rest.split_once(quote))
        })
        .unwrap_or_else(|| panic!("{name} in api.js"))
        .0
}

/// `query` with every `${NAME}` replaced by api.js's constant of that name.
fn fill_constants(source: &str, query: &str) -> String {
    let mut filled = query.to_owned();
    while let Some(start) = filled.find("${") {
        let end = start + filled[start..].find('}').expect("a closing brace");
        let value = constant(source, &filled[start + 2..end]);
        filled.replace_range(start..=end, value);
    }
    filled
}

/// `(name, document)` of every entry of `export const Q = { … }` in `api.js`, with the
/// constants they use (`${RUN_FIELDS}`, …) filled in.
fn web_client_queries(source: &str) -> Vec<(String, String)> {
    let mut rest = source
        .split_once("export const Q = {")
        .expect("the Q object in api.js")
        .1;
    let mut queries = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.starts_with('}') {
            return queries;
        }
        let (name, value) = rest.split_once(':').expect("an entry `name: 'query'`");
        let value = value.trim_start();
        let quote = value.chars().next().expect("a quoted query");
        assert!(
            quote == '\'' || quote == '`',
            "unexpected entry {name}: {value}"
        );
        let (query, after) = value[1..].split_once(quote).expect("a closing quote");
        queries.push((name.trim().to_owned(), fill_constants(source, query)));
        rest = after.trim_start().strip_prefix(',').unwrap_or(after);
    }
}

/// The documents of the README's "API examples" block: one per `query`/`mutation`/
/// `subscription`, which may span lines until its braces close.
fn readme_queries(readme: &str) -> Vec<String> {
    let block = readme
        .split_once("## API examples")
        .and_then(|(_, rest)| rest.split_once("```graphql\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the README's API examples")
        .0;
    let mut documents = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let code = line.split_once('#').map_or(line, |(code, _)| code);
        if current.is_empty() && code.trim().is_empty() {
            continue;
        }
        current.push_str(code);
        current.push('\n');
        if current.matches('{').count() == current.matches('}').count() {
            documents.push(std::mem::take(&mut current));
        }
    }
    assert!(current.is_empty(), "unbalanced README example: {current}");
    documents
}

/// graphql-js's `getIntrospectionQuery()` (as GraphiQL sends it), with its type references
/// nested 9 deep as in graphql-js 17: the schema browser keeps working under the limits.
#[tokio::test]
async fn graphiql_introspection_passes_the_limits() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let type_ref = (0..9).fold(String::from("kind name"), |inner, _| {
        format!("kind name ofType {{ {inner} }}")
    });
    let query = format!(
        "query IntrospectionQuery {{
          __schema {{
            queryType {{ name }} mutationType {{ name }} subscriptionType {{ name }}
            types {{ ...FullType }}
            directives {{ name description locations isRepeatable args {{ ...InputValue }} }}
          }}
        }}
        fragment FullType on __Type {{
          kind name description specifiedByURL
          fields(includeDeprecated: true) {{
            name description args {{ ...InputValue }} type {{ ...TypeRef }}
            isDeprecated deprecationReason
          }}
          inputFields {{ ...InputValue }}
          interfaces {{ ...TypeRef }}
          enumValues(includeDeprecated: true) {{ name description isDeprecated deprecationReason }}
          possibleTypes {{ ...TypeRef }}
        }}
        fragment InputValue on __InputValue {{
          name description type {{ ...TypeRef }} defaultValue
        }}
        fragment TypeRef on __Type {{ {type_ref} }}"
    );
    let data = app.data(None, &query, json!({})).await;
    assert_eq!(data["__schema"]["queryType"]["name"], "Query");
}
