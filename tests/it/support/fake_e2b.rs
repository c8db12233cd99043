//! A local stand-in for E2B that speaks the documented wire format (shared/reference/e2b-api.md):
//! the control-plane REST API with `X-API-KEY` auth and `{code, message}` error bodies, and envd
//! (`/files` multipart upload and download, `filesystem.Filesystem/ListDir` as a Connect unary
//! call, `process.Process/Start` as a Connect server stream of enveloped JSON, `SendSignal`).
//!
//! envd is served under `/envd` in the "shared host" form: the sandbox is chosen by the
//! `E2b-Sandbox-Id` / `E2b-Sandbox-Port` routing headers, and `X-Access-Token` must be the token
//! the create or connect call returned. Requests that drift from the documented shapes are
//! answered with 400 and recorded in [`FakeE2b::violations`], so a drifting client fails tests.
//!
//! Each sandbox's `/home/user` is a temporary directory; commands run there through `sh -c`
//! (deterministic for `echo`, `exit N`, `sleep`), except the template's `/compile_page.sh`, which
//! is simulated.

// Handlers return early with a ready `Response` as the error, the usual axum style.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use codekraft::sandbox::e2b::E2bConfig;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;

pub const API_KEY: &str = "e2b_0123456789abcdef0123456789abcdef";
pub const TEMPLATE: &str = "codekraft-nextjs";
const HOME: &str = "/home/user";
const ENVD_VERSION: &str = "0.5.7";

/// What the fake saw of one `process.Process/Start` call.
#[derive(Debug, Clone)]
pub struct StartRecord {
    pub sandbox_id: String,
    pub command: String,
    pub cwd: Option<String>,
    pub envs: HashMap<String, String>,
    pub timeout_ms: Option<u64>,
    pub tag: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SignalRecord {
    pub sandbox_id: String,
    pub pid: u32,
    pub signal: String,
}

struct FakeSandbox {
    token: String,
    metadata: HashMap<String, String>,
    timeout_secs: u64,
    home: tempfile::TempDir,
    dev_server_up: bool,
    dev_server_starts: u32,
    /// pid → process group to kill.
    processes: HashMap<u32, mpsc::UnboundedSender<()>>,
}

#[derive(Default)]
struct Inner {
    sandboxes: HashMap<String, FakeSandbox>,
    next_id: u64,
    creates: u32,
    fail_next_creates: u32,
    ignore_deadlines: bool,
    start_delay: Duration,
    files_delay: Duration,
    cut_streams: bool,
    violations: Vec<String>,
    starts: Vec<StartRecord>,
    signals: Vec<SignalRecord>,
    requests: Vec<String>,
}

type Shared = Arc<Mutex<Inner>>;

pub struct FakeE2b {
    pub addr: SocketAddr,
    state: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeE2b {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeE2b {
    pub async fn start() -> Self {
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/sandboxes", post(create_sandbox))
            .route("/sandboxes/{id}", delete(kill_sandbox))
            .route("/sandboxes/{id}/connect", post(connect_sandbox))
            .route("/sandboxes/{id}/timeout", post(set_timeout))
            .route("/envd/health", get(|| async { StatusCode::NO_CONTENT }))
            .route("/envd/files", get(download).post(upload))
            .route("/envd/filesystem.Filesystem/ListDir", post(list_dir))
            .route("/envd/filesystem.Filesystem/Remove", post(remove_path))
            .route("/envd/process.Process/Start", post(start_process))
            .route("/envd/process.Process/SendSignal", post(send_signal))
            .fallback(unknown_route)
            .layer(middleware::from_fn_with_state(
                state.clone(),
                record_requests,
            ))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            state,
            server,
        }
    }

    /// A client configuration pointing at this fake.
    pub fn config(&self) -> E2bConfig {
        let mut config = E2bConfig::new(API_KEY);
        config.template = TEMPLATE.into();
        config.api_url = Some(format!("http://{}", self.addr));
        config.envd_url = Some(format!("http://{}/envd", self.addr));
        config.sandbox_timeout = Duration::from_secs(600);
        config
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Ends a sandbox as if its time to live had passed.
    pub fn expire(&self, id: &str) {
        self.with(|s| s.sandboxes.remove(id));
    }

    pub fn is_alive(&self, id: &str) -> bool {
        self.with(|s| s.sandboxes.contains_key(id))
    }

    pub fn creates(&self) -> u32 {
        self.with(|s| s.creates)
    }

    /// Answers the next `n` creates with 503 (the reference says to retry those).
    pub fn fail_next_creates(&self, n: u32) {
        self.with(|s| s.fail_next_creates = n);
    }

    /// Makes envd ignore `Connect-Timeout-Ms`, so only the client's own deadline can stop a call.
    pub fn ignore_deadlines(&self) {
        self.with(|s| s.ignore_deadlines = true);
    }

    /// Delays processes' `start` event (the HTTP response itself starts at once).
    pub fn delay_start(&self, delay: Duration) {
        self.with(|s| s.start_delay = delay);
    }

    /// Delays every answer of the file API (`/files`, ListDir, Remove), as a hung envd would.
    pub fn stall_files(&self, delay: Duration) {
        self.with(|s| s.files_delay = delay);
    }

    /// Ends process streams right after `start`, without `end` or EndStream (a broken connection).
    pub fn cut_streams(&self) {
        self.with(|s| s.cut_streams = true);
    }

    pub fn violations(&self) -> Vec<String> {
        self.with(|s| s.violations.clone())
    }

    pub fn starts(&self) -> Vec<StartRecord> {
        self.with(|s| s.starts.clone())
    }

    pub fn signals(&self) -> Vec<SignalRecord> {
        self.with(|s| s.signals.clone())
    }

    /// `"METHOD /path -> status"` for every request, in order.
    pub fn requests(&self) -> Vec<String> {
        self.with(|s| s.requests.clone())
    }

    pub fn metadata(&self, id: &str) -> HashMap<String, String> {
        self.with(|s| s.sandboxes[id].metadata.clone())
    }

    pub fn timeout_secs(&self, id: &str) -> u64 {
        self.with(|s| s.sandboxes[id].timeout_secs)
    }

    pub fn dev_server_starts(&self, id: &str) -> u32 {
        self.with(|s| s.sandboxes[id].dev_server_starts)
    }

    /// Gives the sandbox a new envd access token (as after a pause and resume); the old one
    /// is refused from now on.
    pub fn rotate_token(&self, id: &str) {
        self.with(|s| {
            let sb = s.sandboxes.get_mut(id).unwrap();
            sb.token = format!("{}-rotated", sb.token);
        });
    }

    /// Simulates a crashed dev server.
    pub fn stop_dev_server(&self, id: &str) {
        self.with(|s| s.sandboxes.get_mut(id).unwrap().dev_server_up = false);
    }

    /// Content of a file in the sandbox, path relative to `/home/user`.
    pub fn file(&self, id: &str, rel: &str) -> Option<String> {
        let path = self.with(|s| s.sandboxes[id].home.path().join(rel));
        std::fs::read_to_string(path).ok()
    }

    pub fn put_file(&self, id: &str, rel: &str, content: &str) {
        let path = self.with(|s| s.sandboxes[id].home.path().join(rel));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

// ---------- helpers ----------

fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({ "code": status.as_u16(), "message": message.into() });
    (status, Json(body)).into_response()
}

/// A Connect unary error: string code (§5.4).
fn connect_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "code": code, "message": message.into() });
    (status, Json(body)).into_response()
}

fn violation(state: &Shared, what: impl Into<String>) -> Response {
    let what = what.into();
    state.lock().unwrap().violations.push(what.clone());
    json_error(StatusCode::BAD_REQUEST, format!("fake e2b: {what}"))
}

/// Logs every request with its answer's status (`requests()`), whichever route answered it.
async fn record_requests(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let line = format!("{} {}", request.method(), request.uri().path());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state
        .lock()
        .unwrap()
        .requests
        .push(format!("{line} -> {status}"));
    response
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn check_api_key(headers: &HeaderMap) -> Result<(), Response> {
    match header(headers, "x-api-key") {
        Some(API_KEY) => Ok(()),
        Some(_) => Err(json_error(StatusCode::UNAUTHORIZED, "Invalid API key")),
        None => Err(json_error(
            StatusCode::UNAUTHORIZED,
            "Missing API key (X-API-Key header)",
        )),
    }
}

/// Parses a JSON request body after checking `Content-Type: application/json`.
fn json_body(
    state: &Shared,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<Value, Response> {
    if !header(headers, "content-type").is_some_and(|c| c.starts_with("application/json")) {
        return Err(violation(
            state,
            format!("{what}: Content-Type must be application/json"),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| violation(state, format!("{what}: body is not JSON: {e}")))
}

fn positive_timeout(v: &Value) -> Option<u64> {
    v.get("timeout").and_then(Value::as_u64).filter(|t| *t > 0)
}

fn sandbox_json(id: &str, token: &str) -> Value {
    json!({
        "templateID": "scwxnhs1apt5uj7na7db",
        "alias": TEMPLATE,
        "sandboxID": id,
        "clientID": "6532622b",
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": token,
        "trafficAccessToken": null,
        "domain": null,
    })
}

fn not_found_sandbox(id: &str) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        format!("sandbox \"{id}\" doesn't exist or you don't have access to it"),
    )
}

/// Maps an absolute in-sandbox path below `/home/user` onto the sandbox's temp dir.
fn map_path(home: &Path, abs: &str) -> Option<PathBuf> {
    let rel = abs.strip_prefix(HOME)?;
    if !(rel.is_empty() || rel.starts_with('/')) {
        return None;
    }
    let rel = Path::new(rel.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(home.join(rel))
}

// ---------- control plane ----------

async fn create_sandbox(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    create_sandbox_inner(&state, &headers, &body)
}

fn create_sandbox_inner(state: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Err(resp) = check_api_key(headers) {
        return resp;
    }
    let body = match json_body(state, headers, body, "POST /sandboxes") {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let Some(template) = body.get("templateID").and_then(Value::as_str) else {
        return violation(state, "POST /sandboxes: templateID (string) is required");
    };
    let Some(timeout) = positive_timeout(&body) else {
        return violation(
            state,
            "POST /sandboxes: timeout must be sent and > 0 (server default is 15 s)",
        );
    };
    if body.get("secure") != Some(&Value::Bool(true)) {
        return violation(state, "POST /sandboxes: secure must be true");
    }
    if let Some(v) = body.get("allow_internet_access") {
        if !v.is_boolean() {
            return violation(
                state,
                "POST /sandboxes: allow_internet_access must be a bool",
            );
        }
    }
    let mut metadata = HashMap::new();
    if let Some(m) = body.get("metadata") {
        let Some(obj) = m.as_object() else {
            return violation(state, "POST /sandboxes: metadata must be an object");
        };
        for (k, v) in obj {
            let Some(v) = v.as_str() else {
                return violation(state, "POST /sandboxes: metadata values must be strings");
            };
            metadata.insert(k.clone(), v.to_owned());
        }
    }
    if template != TEMPLATE {
        return json_error(
            StatusCode::NOT_FOUND,
            format!("template '{template}' not found"),
        );
    }
    let mut s = state.lock().unwrap();
    if s.fail_next_creates > 0 {
        s.fail_next_creates -= 1;
        let body = json!({"code": 503, "message": "no capacity", "error_code": "sandbox_capacity_unavailable"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    s.creates += 1;
    s.next_id += 1;
    let id = format!("i{:020}", s.next_id);
    let token = format!("envd-token-{}", s.next_id);
    let home = tempfile::tempdir().unwrap();
    // What the template image holds: the app with its dependencies and a build cache.
    let app = home.path().join("app");
    std::fs::create_dir_all(app.join("node_modules/next")).unwrap();
    std::fs::create_dir_all(app.join(".next/cache")).unwrap();
    std::fs::write(app.join("package.json"), "{\"name\":\"app\"}\n").unwrap();
    std::fs::write(
        app.join("node_modules/next/index.js"),
        "module.exports = {}\n",
    )
    .unwrap();
    std::fs::write(app.join(".next/cache/x"), "cache\n").unwrap();
    s.sandboxes.insert(
        id.clone(),
        FakeSandbox {
            token: token.clone(),
            metadata,
            timeout_secs: timeout,
            home,
            dev_server_up: true,
            dev_server_starts: 0,
            processes: HashMap::new(),
        },
    );
    (StatusCode::CREATED, Json(sandbox_json(&id, &token))).into_response()
}

async fn connect_sandbox(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    check_api_key(&headers)?;
    let body = json_body(&state, &headers, &body, "POST /sandboxes/{id}/connect")?;
    let Some(timeout) = positive_timeout(&body) else {
        return Err(violation(&state, "connect: timeout (int > 0) is required"));
    };
    let mut s = state.lock().unwrap();
    let Some(sb) = s.sandboxes.get_mut(&id) else {
        return Err(not_found_sandbox(&id));
    };
    // Connect only ever extends the TTL.
    sb.timeout_secs = sb.timeout_secs.max(timeout);
    Ok((StatusCode::OK, Json(sandbox_json(&id, &sb.token))).into_response())
}

async fn set_timeout(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    check_api_key(&headers)?;
    let body = json_body(&state, &headers, &body, "POST /sandboxes/{id}/timeout")?;
    let Some(timeout) = positive_timeout(&body) else {
        return Err(violation(&state, "timeout: timeout (int > 0) is required"));
    };
    let mut s = state.lock().unwrap();
    let Some(sb) = s.sandboxes.get_mut(&id) else {
        return Err(not_found_sandbox(&id));
    };
    sb.timeout_secs = timeout;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn kill_sandbox(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    match check_api_key(&headers) {
        Err(resp) => resp,
        Ok(()) => match state.lock().unwrap().sandboxes.remove(&id) {
            Some(sb) => {
                for kill in sb.processes.values() {
                    let _ = kill.send(());
                }
                StatusCode::NO_CONTENT.into_response()
            }
            None => not_found_sandbox(&id),
        },
    }
}

async fn unknown_route(State(state): State<Shared>, method: Method, uri: Uri) -> Response {
    violation(&state, format!("unknown route {method} {}", uri.path()));
    json_error(StatusCode::NOT_FOUND, "not found")
}

// ---------- envd ----------

/// Resolves the sandbox from the routing headers and checks the access token (§3.1, §4).
/// Returns the sandbox id and its home directory.
fn envd_auth(state: &Shared, headers: &HeaderMap) -> Result<(String, PathBuf), Response> {
    let id = header(headers, "e2b-sandbox-id");
    let port = header(headers, "e2b-sandbox-port");
    let (Some(id), Some(port)) = (id, port) else {
        return Err(violation(
            state,
            "envd: E2b-Sandbox-Id and E2b-Sandbox-Port are both required",
        ));
    };
    if port != "49983" {
        return Err(violation(
            state,
            format!("envd: E2b-Sandbox-Port must be 49983, got {port}"),
        ));
    }
    let s = state.lock().unwrap();
    let Some(sb) = s.sandboxes.get(id) else {
        let body = json!({"sandboxId": id, "message": "The sandbox was not found", "code": 502});
        return Err((StatusCode::BAD_GATEWAY, Json(body)).into_response());
    };
    if header(headers, "x-access-token") != Some(sb.token.as_str()) {
        return Err(json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized access, please provide a valid access token or method signing if supported",
        ));
    }
    Ok((id.to_owned(), sb.home.path().to_owned()))
}

/// Connect request headers shared by unary and streaming calls (§5).
fn check_connect_headers(
    state: &Shared,
    headers: &HeaderMap,
    content_type: &str,
) -> Result<(), Response> {
    if header(headers, "content-type") != Some(content_type) {
        return Err(violation(
            state,
            format!("connect: Content-Type must be {content_type}"),
        ));
    }
    if header(headers, "connect-protocol-version") != Some("1") {
        return Err(violation(
            state,
            "connect: Connect-Protocol-Version: 1 is required",
        ));
    }
    if header(headers, "connect-accept-encoding").is_some()
        || header(headers, "connect-content-encoding").is_some()
    {
        return Err(violation(
            state,
            "connect: compression must not be negotiated",
        ));
    }
    match header(headers, "authorization") {
        None | Some("Basic dXNlcjo=") => Ok(()),
        Some(other) => Err(connect_error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            format!("unexpected user in {other:?}"),
        )),
    }
}

fn check_username(state: &Shared, query: &HashMap<String, String>) -> Result<(), Response> {
    match query.get("username").map(String::as_str) {
        None | Some("user") => Ok(()),
        Some(other) => Err(violation(
            state,
            format!("files: unexpected username {other:?}"),
        )),
    }
}

async fn download(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    stall_files(&state).await;
    let (_, home) = envd_auth(&state, &headers)?;
    check_username(&state, &query)?;
    let Some(path) = query.get("path") else {
        return Err(violation(&state, "GET /files: path is required"));
    };
    let Some(local) = map_path(&home, path) else {
        return Err(violation(
            &state,
            format!("GET /files: path {path:?} is not absolute below /home/user"),
        ));
    };
    if local.is_dir() {
        return Err(json_error(
            StatusCode::BAD_REQUEST,
            format!("path '{path}' is a directory"),
        ));
    }
    match std::fs::read(&local) {
        Ok(bytes) => Ok((
            StatusCode::OK,
            [("content-type", "application/octet-stream")],
            bytes,
        )
            .into_response()),
        Err(_) => Err(json_error(
            StatusCode::NOT_FOUND,
            format!("path '{path}' does not exist"),
        )),
    }
}

async fn stall_files(state: &Shared) {
    let delay = state.lock().unwrap().files_delay;
    tokio::time::sleep(delay).await;
}

/// `(name, filename, content)` of one multipart part.
type Part = (String, Option<String>, Vec<u8>);

/// A minimal multipart/form-data parser.
fn parse_multipart(body: &[u8], boundary: &str) -> Option<Vec<Part>> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body.strip_prefix(delimiter.as_bytes())?;
    loop {
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let header_end = find(rest, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&rest[..header_end]).ok()?;
        rest = &rest[header_end + 4..];
        let next = find(rest, format!("\r\n{delimiter}").as_bytes())?;
        let content = rest[..next].to_vec();
        rest = &rest[next + 2 + delimiter.len()..];
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?;
        let param = |key: &str| {
            let start = disposition.find(&format!("{key}=\""))? + key.len() + 2;
            let end = disposition[start..].find('"')? + start;
            Some(disposition[start..end].to_owned())
        };
        parts.push((param("name")?, param("filename"), content));
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn upload(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    stall_files(&state).await;
    let (_, home) = envd_auth(&state, &headers)?;
    check_username(&state, &query)?;
    let content_type = header(&headers, "content-type").unwrap_or_default();
    let Some(boundary) = content_type
        .strip_prefix("multipart/form-data; boundary=")
        .map(|b| b.trim_matches('"').to_owned())
    else {
        return Err(json_error(
            StatusCode::BAD_REQUEST,
            "unsupported content type",
        ));
    };
    let Some(parts) = parse_multipart(&body, &boundary) else {
        return Err(violation(&state, "POST /files: malformed multipart body"));
    };
    let mut written = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (name, filename, content) in parts {
        if name != "file" {
            continue; // other fields are ignored
        }
        let target = match (query.get("path"), filename) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => f,
            (None, None) => {
                return Err(violation(
                    &state,
                    "POST /files: part without a filename and no ?path=",
                ))
            }
        };
        if !seen.insert(target.clone()) {
            return Err(json_error(
                StatusCode::BAD_REQUEST,
                format!("duplicate path {target}"),
            ));
        }
        let Some(local) = map_path(&home, &target) else {
            return Err(violation(
                &state,
                format!("POST /files: target {target:?} is not absolute below /home/user"),
            ));
        };
        if local.is_dir() {
            return Err(json_error(
                StatusCode::BAD_REQUEST,
                format!("path '{target}' is a directory"),
            ));
        }
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        std::fs::write(&local, content).unwrap();
        let name = target.rsplit('/').next().unwrap_or_default().to_owned();
        written.push(json!({"path": target, "name": name, "type": "file"}));
    }
    if written.is_empty() {
        return Err(violation(&state, "POST /files: no part named \"file\""));
    }
    Ok((StatusCode::OK, Json(Value::Array(written))).into_response())
}

fn entry_info(path: &Path, abs: &str) -> Value {
    let meta = std::fs::symlink_metadata(path).unwrap();
    let kind = if meta.file_type().is_symlink() {
        "FILE_TYPE_SYMLINK"
    } else if meta.is_dir() {
        "FILE_TYPE_DIRECTORY"
    } else {
        "FILE_TYPE_FILE"
    };
    json!({
        "name": path.file_name().unwrap().to_string_lossy(),
        "type": kind,
        "path": abs,
        "size": meta.len().to_string(),
        "mode": 420,
        "permissions": "-rw-r--r--",
        "owner": "user",
        "group": "user",
        "modifiedTime": "2026-08-22T10:00:00Z",
    })
}

fn walk(dir: &Path, abs: &str, depth: u32, out: &mut Vec<Value>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let child_abs = format!("{abs}/{}", entry.file_name().to_string_lossy());
        out.push(entry_info(&entry.path(), &child_abs));
        if depth > 1 && entry.file_type().unwrap().is_dir() {
            walk(&entry.path(), &child_abs, depth - 1, out);
        }
    }
}

/// What every `filesystem.Filesystem` unary call checks: envd auth, Connect headers, a bare
/// JSON body with an absolute `path` below the home dir. Returns the body, the path as sent,
/// and where it lives in the fake's directory.
fn filesystem_request(
    state: &Shared,
    headers: &HeaderMap,
    body: &[u8],
    rpc: &str,
) -> Result<(Value, String, PathBuf), Response> {
    let (_, home) = envd_auth(state, headers)?;
    check_connect_headers(state, headers, "application/json")?;
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| violation(state, format!("{rpc}: bare JSON body expected: {e}")))?;
    let Some(path) = req.get("path").and_then(Value::as_str).map(str::to_owned) else {
        return Err(violation(state, format!("{rpc}: path is required")));
    };
    let Some(local) = map_path(&home, &path) else {
        return Err(violation(
            state,
            format!("{rpc}: path {path:?} is not absolute below /home/user"),
        ));
    };
    Ok((req, path, local))
}

async fn list_dir(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    stall_files(&state).await;
    let (req, path, local) = filesystem_request(&state, &headers, &body, "ListDir")?;
    let depth = match req.get("depth") {
        None => 1,
        Some(d) => d
            .as_u64()
            .ok_or_else(|| violation(&state, "ListDir: depth must be a number"))?
            .max(1) as u32,
    };
    if !local.is_dir() {
        return Err(connect_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("path '{path}' not found"),
        ));
    }
    let mut entries = Vec::new();
    walk(&local, path.trim_end_matches('/'), depth, &mut entries);
    Ok((StatusCode::OK, Json(json!({ "entries": entries }))).into_response())
}

/// `Remove {path} → {}`, recursive, rm -rf semantics (§7).
async fn remove_path(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    stall_files(&state).await;
    let (_, _, local) = filesystem_request(&state, &headers, &body, "Remove")?;
    let _ = if local.is_dir() {
        std::fs::remove_dir_all(&local)
    } else {
        std::fs::remove_file(&local)
    };
    Ok((StatusCode::OK, Json(json!({}))).into_response())
}

async fn send_signal(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    let (id, _) = envd_auth(&state, &headers)?;
    check_connect_headers(&state, &headers, "application/json")?;
    let req: Value = serde_json::from_slice(&body)
        .map_err(|e| violation(&state, format!("SendSignal: bare JSON body expected: {e}")))?;
    let Some(pid) = req.pointer("/process/pid").and_then(Value::as_u64) else {
        return Err(violation(&state, "SendSignal: process.pid is required"));
    };
    let signal = match req.get("signal") {
        Some(Value::String(s)) if s == "SIGNAL_SIGKILL" || s == "SIGNAL_SIGTERM" => s.clone(),
        _ => {
            return Err(connect_error(
                StatusCode::NOT_IMPLEMENTED,
                "unimplemented",
                "invalid signal",
            ))
        }
    };
    let mut s = state.lock().unwrap();
    s.signals.push(SignalRecord {
        sandbox_id: id.clone(),
        pid: pid as u32,
        signal,
    });
    let kill = s
        .sandboxes
        .get(&id)
        .and_then(|sb| sb.processes.get(&(pid as u32)).cloned());
    match kill {
        Some(kill) => {
            let _ = kill.send(());
            Ok((StatusCode::OK, Json(json!({}))).into_response())
        }
        None => Err(connect_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("process with pid {pid} not found"),
        )),
    }
}

// ---------- process.Process/Start (server streaming) ----------

fn envelope(flags: u8, payload: &Value) -> Vec<u8> {
    let json = serde_json::to_vec(payload).unwrap();
    let mut out = vec![flags];
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out
}

/// Sends one envelope in two writes split at an odd offset, so clients must reassemble frames.
struct Stream(mpsc::Sender<Result<Bytes, Infallible>>);

impl Stream {
    async fn send(&self, flags: u8, payload: Value) -> bool {
        let bytes = envelope(flags, &payload);
        let cut = 3.min(bytes.len());
        self.0
            .send(Ok(Bytes::copy_from_slice(&bytes[..cut])))
            .await
            .is_ok()
            && self
                .0
                .send(Ok(Bytes::copy_from_slice(&bytes[cut..])))
                .await
                .is_ok()
    }

    async fn event(&self, event: Value) -> bool {
        self.send(0, json!({ "event": event })).await
    }

    async fn end_ok(&self) {
        self.send(2, json!({})).await;
    }

    async fn end_error(&self, code: &str, message: &str) {
        self.send(2, json!({"error": {"code": code, "message": message}}))
            .await;
    }
}

fn stream_response(rx: mpsc::Receiver<Result<Bytes, Infallible>>) -> Response {
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    (
        StatusCode::OK,
        [("content-type", "application/connect+json")],
        body,
    )
        .into_response()
}

struct StartCall {
    sandbox_id: String,
    home: PathBuf,
    command: String,
    cwd: PathBuf,
    envs: HashMap<String, String>,
    timeout: Option<Duration>,
}

async fn start_process(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let call = parse_start(&state, &headers, &body);
    let (tx, rx) = mpsc::channel(64);
    let stream = Stream(tx);
    match call {
        Err(resp) => resp,
        Ok(Err((code, message))) => {
            tokio::spawn(async move { stream.end_error(code, &message).await });
            stream_response(rx)
        }
        Ok(Ok(call)) => {
            let state = state.clone();
            tokio::spawn(run_process(state, call, stream));
            stream_response(rx)
        }
    }
}

/// Checks a Start request. `Err` is an HTTP-level answer; `Ok(Err)` an in-stream Connect error.
#[allow(clippy::type_complexity)]
fn parse_start(
    state: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Result<StartCall, (&'static str, String)>, Response> {
    let (sandbox_id, home) = envd_auth(state, headers)?;
    check_connect_headers(state, headers, "application/connect+json")?;
    if header(headers, "keepalive-ping-interval")
        .and_then(|v| v.parse::<u64>().ok())
        .is_none()
    {
        return Err(violation(
            state,
            "Start: Keepalive-Ping-Interval (seconds) is expected",
        ));
    }
    let timeout_ms = match header(headers, "connect-timeout-ms") {
        None => None,
        Some(v) if v.len() <= 10 && !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            let ms: u64 = v.parse().unwrap();
            if ms == 0 {
                return Err(violation(
                    state,
                    "Start: Connect-Timeout-Ms: 0 is an expired deadline; omit it",
                ));
            }
            Some(ms)
        }
        Some(v) => {
            return Err(violation(
                state,
                format!("Start: bad Connect-Timeout-Ms {v:?}"),
            ))
        }
    };
    // Exactly one uncompressed envelope.
    if body.len() < 5 || body[0] != 0 {
        return Err(violation(
            state,
            "Start: body must be one envelope with flags 0",
        ));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() != 5 + len {
        return Err(violation(
            state,
            format!(
                "Start: envelope length {len} does not match body {}",
                body.len()
            ),
        ));
    }
    let req: Value = serde_json::from_slice(&body[5..])
        .map_err(|e| violation(state, format!("Start: envelope payload is not JSON: {e}")))?;
    let process = req.get("process").cloned().unwrap_or_default();
    if process.get("cmd").and_then(Value::as_str) != Some("/bin/bash") {
        return Err(violation(state, "Start: process.cmd must be /bin/bash"));
    }
    let args: Vec<&str> = process
        .get("args")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let ["-l", "-c", command] = args.as_slice() else {
        return Err(violation(
            state,
            format!("Start: process.args must be [-l, -c, cmd], got {args:?}"),
        ));
    };
    if req.get("stdin") != Some(&Value::Bool(false)) {
        return Err(violation(
            state,
            "Start: stdin: false is expected (no stdin pipe)",
        ));
    }
    let mut envs = HashMap::new();
    if let Some(e) = process.get("envs") {
        let Some(obj) = e.as_object() else {
            return Err(violation(state, "Start: process.envs must be a map"));
        };
        for (k, v) in obj {
            envs.insert(k.clone(), v.as_str().unwrap_or_default().to_owned());
        }
    }
    let cwd_abs = process
        .get("cwd")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let tag = req.get("tag").and_then(Value::as_str).map(str::to_owned);
    state.lock().unwrap().starts.push(StartRecord {
        sandbox_id: sandbox_id.clone(),
        command: command.to_string(),
        cwd: cwd_abs.clone(),
        envs: envs.clone(),
        timeout_ms,
        tag,
    });
    let cwd_abs = cwd_abs.unwrap_or_else(|| HOME.to_owned());
    let cwd = match map_path(&home, &cwd_abs) {
        Some(p) if p.is_dir() => p,
        _ => {
            return Ok(Err((
                "invalid_argument",
                format!("cwd '{cwd_abs}' does not exist"),
            )))
        }
    };
    Ok(Ok(StartCall {
        sandbox_id,
        home,
        command: command.to_string(),
        cwd,
        envs,
        timeout: timeout_ms.map(Duration::from_millis),
    }))
}

fn end_event(code: i32, killed: bool) -> Value {
    // protojson omits defaults: no exitCode key for 0 (§5.5).
    let mut end = serde_json::Map::new();
    if code != 0 {
        end.insert("exitCode".into(), json!(code));
    }
    if killed {
        end.insert("status".into(), json!("signal: killed"));
        end.insert("error".into(), json!("signal: killed"));
    } else {
        end.insert("exited".into(), json!(true));
        end.insert("status".into(), json!(format!("exit status {code}")));
        if code != 0 {
            end.insert("error".into(), json!(format!("exit status {code}")));
        }
    }
    json!({ "end": end })
}

async fn run_process(state: Shared, call: StartCall, stream: Stream) {
    let (ignore, start_delay) = {
        let s = state.lock().unwrap();
        (s.ignore_deadlines, s.start_delay)
    };
    tokio::time::sleep(start_delay).await;
    let deadline = call
        .timeout
        .filter(|_| !ignore)
        .map(|t| tokio::time::Instant::now() + t);
    if let Some(args) = call.command.strip_prefix("/compile_page.sh") {
        return simulate_dev_server(&state, &call, args.trim(), stream, deadline).await;
    }
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&call.command)
        .current_dir(&call.cwd)
        .env("HOME", &call.home)
        .envs(&call.envs)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            return stream
                .end_error("invalid_argument", &format!("failed to start: {e}"))
                .await
        }
    };
    let pid = child.id().unwrap_or_default();
    let (kill_tx, mut kill_rx) = mpsc::unbounded_channel();
    if let Some(sb) = state.lock().unwrap().sandboxes.get_mut(&call.sandbox_id) {
        sb.processes.insert(pid, kill_tx);
    }
    stream.event(json!({"start": {"pid": pid}})).await;
    if state.lock().unwrap().cut_streams {
        return; // drops the stream and, with kill_on_drop, the process
    }

    let (out_tx, mut out_rx) = mpsc::channel::<(&'static str, Vec<u8>)>(16);
    for (key, pipe) in [
        (
            "stdout",
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
        (
            "stderr",
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
    ] {
        let (tx, mut pipe) = (out_tx.clone(), pipe.unwrap());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 || tx.send((key, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(out_tx);

    let b64 = base64::engine::general_purpose::STANDARD;
    let kill_group = || {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    };
    let mut killed = false;
    let mut timed_out = false;
    loop {
        tokio::select! {
            msg = out_rx.recv() => match msg {
                // A client that went away does not stop the process (§5.3).
                Some((key, bytes)) => { stream.event(json!({"data": {key: b64.encode(bytes)}})).await; }
                None => break,
            },
            Some(()) = kill_rx.recv(), if !killed => { kill_group(); killed = true; }
            _ = sleep_until_opt(deadline), if !killed => { kill_group(); killed = true; timed_out = true; }
        }
    }
    let status = child.wait().await.ok();
    if let Some(sb) = state.lock().unwrap().sandboxes.get_mut(&call.sandbox_id) {
        sb.processes.remove(&pid);
    }
    let code = if killed {
        -1
    } else {
        status.and_then(|s| s.code()).unwrap_or(-1)
    };
    stream.event(end_event(code, killed)).await;
    if timed_out {
        stream
            .end_error("deadline_exceeded", "context deadline exceeded")
            .await;
    } else {
        stream.end_ok().await;
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// `/compile_page.sh` starts the dev server and runs until killed; `--wait N` exits 0 when the
/// server answers, 1 otherwise.
async fn simulate_dev_server(
    state: &Shared,
    call: &StartCall,
    args: &str,
    stream: Stream,
    deadline: Option<tokio::time::Instant>,
) {
    let pid = 9000 + state.lock().unwrap().starts.len() as u32;
    stream.event(json!({"start": {"pid": pid}})).await;
    if args.starts_with("--wait") {
        let up = state
            .lock()
            .unwrap()
            .sandboxes
            .get(&call.sandbox_id)
            .is_some_and(|sb| sb.dev_server_up);
        let b64 = base64::engine::general_purpose::STANDARD;
        if up {
            stream
                .event(json!({"data": {"stdout": b64.encode("ready on http://localhost:3000\n")}}))
                .await;
        } else {
            stream
                .event(json!({"data": {"stderr": b64.encode("nothing answers on port 3000\n")}}))
                .await;
        }
        stream.event(end_event(if up { 0 } else { 1 }, false)).await;
        return stream.end_ok().await;
    }
    if let Some(sb) = state.lock().unwrap().sandboxes.get_mut(&call.sandbox_id) {
        sb.dev_server_up = true;
        sb.dev_server_starts += 1;
    }
    // A long-running server: keepalives until the client hangs up or the deadline passes.
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if !stream.event(json!({"keepalive": {}})).await { return; }
            }
            _ = sleep_until_opt(deadline) => {
                stream.event(end_event(-1, true)).await;
                return stream.end_error("deadline_exceeded", "context deadline exceeded").await;
            }
        }
    }
}
