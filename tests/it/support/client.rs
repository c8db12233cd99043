//! A GraphQL-over-HTTP client for one server under test (in-process or a spawned binary).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct GqlClient {
    http: reqwest::Client,
    base: String,
}

impl GqlClient {
    /// `addr` like `127.0.0.1:8080`.
    pub fn new(addr: impl std::fmt::Display) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs a GraphQL request and returns the whole JSON response.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("POST /graphql");
        assert!(
            response.status().is_success() || response.status().as_u16() == 400,
            "unexpected status {}",
            response.status()
        );
        response.json().await.expect("a JSON body")
    }

    /// Like `gql`, asserting there are no errors; returns `data`.
    pub async fn data(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let response = self.gql(token, query, variables).await;
        assert!(
            response.get("errors").is_none(),
            "unexpected errors: {response}"
        );
        response["data"].clone()
    }

    /// Signs up a new built-in account and returns its token.
    pub async fn sign_up(&self, email: &str) -> String {
        let data = self
            .data(
                None,
                "mutation($email: String!) { signUp(email: $email, password: \"correct horse\") { token } }",
                json!({ "email": email }),
            )
            .await;
        data["signUp"]["token"].as_str().unwrap().to_owned()
    }

    /// Creates a project; returns `(project id, run id)`.
    pub async fn create_project(&self, token: &str, prompt: &str) -> (String, String) {
        let data = self
            .data(
                Some(token),
                "mutation($prompt: String!) { createProject(prompt: $prompt) { project { id } run { id } } }",
                json!({ "prompt": prompt }),
            )
            .await;
        (
            data["createProject"]["project"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
            data["createProject"]["run"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    }

    /// Polls (tests only) until the run has ended; returns `{ status attempts }`. The deadline
    /// only catches a hang: on the local sandbox a run starts `next dev` and type-checks.
    pub async fn wait_for_run(&self, token: &str, run_id: &str) -> Value {
        self.wait_for_run_within(token, run_id, Duration::from_secs(300))
            .await
    }

    /// `wait_for_run` for runs that do more than usual: the test fails after `limit`.
    pub async fn wait_for_run_within(&self, token: &str, run_id: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let data = self
                .data(
                    Some(token),
                    "query($id: ID!) { run(id: $id) { status attempts } }",
                    json!({ "id": run_id }),
                )
                .await;
            if !matches!(data["run"]["status"].as_str(), Some("QUEUED" | "RUNNING")) {
                return data["run"].clone();
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} did not end: {data}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The ASSISTANT messages of a project.
    pub async fn assistant_messages(&self, token: &str, project_id: &str) -> Vec<Value> {
        let data = self
            .data(
                Some(token),
                "query($id: ID!) { project(id: $id) { messages { edges { node { role type } } } } }",
                json!({ "id": project_id }),
            )
            .await;
        data["project"]["messages"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|edge| edge["node"].clone())
            .filter(|message| message["role"] == "ASSISTANT")
            .collect()
    }
}
