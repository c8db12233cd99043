//! E2B backend: a hand-written client for the control-plane REST API and the in-sandbox daemon
//! envd (plain HTTP `/files` plus Connect-RPC with JSON envelopes). Wire format and semantics follow
//! `shared/reference/e2b-api.md`; section numbers below refer to it.

mod envelope;
mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use futures_util::{StreamExt as _, TryStreamExt as _};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::wire::{FileType, ProcessEvent};
use super::output::{command_output, OutputStream};
use super::path::normalize;
use super::{
    CommandOutput, CommandSpec, FileMap, OutputChunk, OutputSink, Sandbox, SandboxError,
    SandboxProvider, MAX_FILE_BYTES, MAX_LISTED_ENTRIES, UNLISTED_DIRS,
};

/// Where the template keeps the Next.js app (see `sandbox-templates/next-js/e2b.Dockerfile`).
/// Every path the trait takes is relative to it.
pub const APP_ROOT: &str = "/home/user/app";
/// envd's port (§1).
pub const ENVD_PORT: u16 = 49983;
/// The Next.js dev server's port, served at `https://3000-{id}.{domain}` (§3.1).
pub const PREVIEW_PORT: u16 = 3000;
/// Starts the dev server (`compile_page.sh`), or with `--wait N` waits up to N s until it answers.
pub const DEV_SERVER_SCRIPT: &str = "/compile_page.sh";
/// Process tag of a dev server started by [`Sandbox::preview_url`].
pub const DEV_SERVER_TAG: &str = "codekraft-dev-server";
/// Metadata key under which the project id is stored on created sandboxes.
pub const METADATA_PROJECT_ID: &str = "codekraft_project_id";

/// ListDir calls in flight at once while walking a tree.
const LIST_CONCURRENCY: usize = 8;
/// Linux user the template runs as (§9.1); `Authorization: Basic base64("user:")` (§5).
const SANDBOX_USER: &str = "user";
const BASIC_USER: &str = "Basic dXNlcjo=";
/// The SDK's value (§8.1).
const KEEPALIVE_PING_SECS: &str = "50";
/// Per-request timeout for control-plane and unary envd calls (§8.1); file operations are
/// bounded by [`E2bConfig::file_timeout`] as a whole, retries included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Extra time the client waits past a command's timeout for envd to report `deadline_exceeded`.
const CLIENT_DEADLINE_GRACE: Duration = Duration::from_secs(3);
/// How long an abandoned command's stream is still read to learn the pid to kill.
const LATE_PID_WAIT: Duration = Duration::from_secs(2);
/// Upper bound for any command timeout (keeps deadline arithmetic sane).
const MAX_COMMAND_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// How long `preview_url` waits for a freshly started dev server to answer.
const DEV_SERVER_WAIT_SECS: u64 = 120;
/// Files per multipart request when restoring a project.
const RESTORE_BATCH: usize = 100;
/// Bound on a JSON response (a ListDir of a huge directory must not exhaust the server).
const MAX_JSON_BYTES: usize = 8 * 1024 * 1024;
/// Attempts for calls that may be retried on 502/503/504 (§11).
const ATTEMPTS: u32 = 3;

/// Settings of the E2B backend. The lead maps `E2B_API_KEY`, `E2B_TEMPLATE`, `E2B_DOMAIN`,
/// `E2B_API_URL`, `E2B_ENVD_URL`, `SANDBOX_TIMEOUT_SECS`, `SANDBOX_COMMAND_TIMEOUT_SECS` and
/// `SANDBOX_FILE_TIMEOUT_SECS` onto it.
#[derive(Clone)]
pub struct E2bConfig {
    pub api_key: String,
    /// Template id or name (`templateID` of `POST /sandboxes`), e.g. `codekraft-nextjs`.
    pub template: String,
    /// Sandbox hostnames are `{port}-{id}.{domain}` unless the API returns another domain.
    pub domain: String,
    /// Control-plane base; `None` means `https://api.{domain}`.
    pub api_url: Option<String>,
    /// envd base replacing `https://49983-{id}.{domain}`. `{id}` in it is replaced by the sandbox
    /// id; without `{id}` every sandbox shares the base and is told apart by the `E2b-Sandbox-Id`
    /// routing header (§3.1 form 2), which is always sent.
    pub envd_url: Option<String>,
    /// Sandbox time to live, sent on create and connect, and renewed by `extend_lifetime`.
    pub sandbox_timeout: Duration,
    /// Timeout of a command whose `CommandSpec::timeout` is zero.
    pub command_timeout: Duration,
    /// Bound on each file operation (read, write, list, remove, one restore batch).
    pub file_timeout: Duration,
    /// Per stream (stdout, stderr) cap of what `run_command` returns; head and tail are kept.
    pub output_cap_bytes: usize,
}

impl E2bConfig {
    pub const DEFAULT_DOMAIN: &'static str = "e2b.app";
    pub const DEFAULT_TEMPLATE: &'static str = "codekraft-nextjs";

    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            template: Self::DEFAULT_TEMPLATE.to_owned(),
            domain: Self::DEFAULT_DOMAIN.to_owned(),
            api_url: None,
            envd_url: None,
            sandbox_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(60),
            file_timeout: Duration::from_secs(10),
            output_cap_bytes: 16 * 1024,
        }
    }

    pub fn api_base(&self) -> String {
        match &self.api_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("https://api.{}", self.domain),
        }
    }
}

impl std::fmt::Debug for E2bConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2bConfig")
            .field("api_key", &"<redacted>")
            .field("template", &self.template)
            .field("domain", &self.domain)
            .field("api_url", &self.api_url)
            .field("envd_url", &self.envd_url)
            .field("sandbox_timeout", &self.sandbox_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("file_timeout", &self.file_timeout)
            .field("output_cap_bytes", &self.output_cap_bytes)
            .finish()
    }
}

/// Creates and reconnects E2B sandboxes.
#[derive(Clone)]
pub struct E2bSandboxProvider {
    client: Arc<Client>,
}

struct Client {
    http: reqwest::Client,
    config: E2bConfig,
    api_base: String,
}

impl E2bSandboxProvider {
    pub fn new(config: E2bConfig) -> Result<Self, SandboxError> {
        if config.api_key.trim().is_empty() {
            return Err(SandboxError::Unavailable(
                "E2B_API_KEY is not set; the e2b sandbox backend needs a team API key".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("codekraft/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SandboxError::Unavailable(format!("cannot build HTTP client: {e}")))?;
        let api_base = config.api_base();
        Ok(Self {
            client: Arc::new(Client {
                http,
                config,
                api_base,
            }),
        })
    }

    pub fn config(&self) -> &E2bConfig {
        &self.client.config
    }
}

#[async_trait]
impl SandboxProvider for E2bSandboxProvider {
    #[tracing::instrument(skip_all, fields(%project_id, existing_id = ?existing_id))]
    async fn connect(
        &self,
        project_id: Uuid,
        existing_id: Option<&str>,
        restore: &FileMap,
    ) -> Result<Arc<dyn Sandbox>, SandboxError> {
        if let Some(id) = existing_id {
            if is_valid_sandbox_id(id) {
                match self.client.connect_sandbox(id).await {
                    Ok(sandbox) => return Ok(Arc::new(sandbox)),
                    Err(SandboxError::NotFound(reason)) => {
                        tracing::info!(sandbox_id = id, %reason, "sandbox gone; creating a new one");
                    }
                    Err(e) => return Err(e),
                }
            } else {
                tracing::warn!(sandbox_id = id, "malformed sandbox id; creating a new one");
            }
        }
        let sandbox = self.client.create_sandbox(project_id).await?;
        if let Err(e) = sandbox.restore(restore).await {
            // Do not leak a half-restored sandbox.
            if let Err(kill_err) = sandbox.kill().await {
                tracing::warn!(sandbox_id = %sandbox.id, error = %kill_err, "kill after failed restore");
            }
            return Err(e);
        }
        Ok(Arc::new(sandbox))
    }

    async fn destroy(&self, _project_id: Uuid, sandbox_id: &str) -> Result<(), SandboxError> {
        self.client.kill_sandbox(sandbox_id).await
    }

    fn kind(&self) -> &'static str {
        "e2b"
    }
}

/// A failed HTTP call, before it is given a meaning.
#[derive(Debug)]
enum CallError {
    Status { status: StatusCode, message: String },
    Transport { message: String, retryable: bool },
}

impl CallError {
    fn retryable(&self) -> bool {
        match self {
            CallError::Status { status, .. } => matches!(status.as_u16(), 502..=504),
            CallError::Transport { retryable, .. } => *retryable,
        }
    }

    fn status(&self) -> Option<StatusCode> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            CallError::Transport { .. } => None,
        }
    }

    fn from_reqwest(e: reqwest::Error) -> Self {
        // reqwest's Display omits the cause (DNS, TLS, connection refused…); append the chain.
        let mut message = if e.is_timeout() {
            format!("request timed out: {e}")
        } else {
            e.to_string()
        };
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        CallError::Transport {
            message,
            retryable: e.is_connect(),
        }
    }

    /// Gives the failure a meaning; `what` names the call for the message.
    fn into_sandbox_error(self, what: &str) -> SandboxError {
        match self {
            CallError::Transport { message, .. } => {
                SandboxError::Unavailable(format!("{what}: cannot reach E2B: {message}"))
            }
            CallError::Status { status, message } => match status.as_u16() {
                401 | 403 => SandboxError::Unavailable(format!(
                    "{what}: E2B refused the credentials (HTTP {status}): {message}; \
                     check E2B_API_KEY (or the sandbox's envd access token)"
                )),
                404 => SandboxError::NotFound(format!("{what}: {message}")),
                429 => SandboxError::Unavailable(format!(
                    "{what}: E2B rate or concurrent-sandbox limit reached (HTTP 429): {message}"
                )),
                502 => SandboxError::Unavailable(format!(
                    "{what}: sandbox not running or port not open (HTTP 502): {message}"
                )),
                _ => SandboxError::Unavailable(format!("{what}: HTTP {status}: {message}")),
            },
        }
    }
}

/// Reads an error response: `{code, message}` from the control plane, envd, Connect or the
/// proxy, or anything else (even empty); the status decides, the body only explains.
async fn error_from_response(resp: Response) -> CallError {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let message = match serde_json::from_str::<wire::ErrorBody>(&text) {
        Ok(body) if !body.message.is_empty() => match body.error_code {
            Some(code) => format!("{} ({code})", body.message),
            None => body.message,
        },
        _ if text.trim().is_empty() => status
            .canonical_reason()
            .unwrap_or("no response body")
            .to_owned(),
        _ => text.trim().chars().take(300).collect(),
    };
    CallError::Status { status, message }
}

impl Client {
    async fn kill_sandbox(&self, id: &str) -> Result<(), SandboxError> {
        let path = format!("/sandboxes/{id}");
        match self.send(|| self.api(Method::DELETE, &path), true).await {
            Ok(_) => Ok(()),
            // Already gone (§8.4).
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(()),
            Err(e) => Err(e.into_sandbox_error("E2B kill sandbox")),
        }
    }

    fn api(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.api_base))
            .header("X-API-KEY", &self.config.api_key)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(REQUEST_TIMEOUT)
    }

    /// Sends a request (rebuilt per attempt), retrying 502/503/504 and connect failures with
    /// backoff when `retry` is set. Returns only 2xx responses.
    async fn send(
        &self,
        build: impl Fn() -> RequestBuilder,
        retry: bool,
    ) -> Result<Response, CallError> {
        let mut attempt = 1;
        loop {
            let result = match build().send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => error_from_response(resp).await,
                Err(e) => CallError::from_reqwest(e),
            };
            if !retry || attempt >= ATTEMPTS || !result.retryable() {
                return Err(result);
            }
            tracing::debug!(attempt, error = ?result, "retrying E2B call");
            tokio::time::sleep(Duration::from_millis(200 * 3u64.pow(attempt - 1))).await;
            attempt += 1;
        }
    }

    fn ttl_secs(&self) -> u32 {
        secs_ceil(self.config.sandbox_timeout)
    }

    /// `POST /sandboxes` (§2.4): always with a timeout and `secure: true`.
    async fn create_sandbox(
        self: &Arc<Self>,
        project_id: Uuid,
    ) -> Result<E2bSandbox, SandboxError> {
        let what = "E2B create sandbox";
        let body = wire::NewSandbox {
            template_id: &self.config.template,
            timeout: self.ttl_secs(),
            secure: true,
            allow_internet_access: true,
            metadata: BTreeMap::from([(METADATA_PROJECT_ID.to_owned(), project_id.to_string())]),
        };
        let resp = self
            .send(|| self.api(Method::POST, "/sandboxes").json(&body), true)
            .await
            .map_err(|e| match e.status() {
                // A missing template is a configuration problem, not a missing sandbox.
                Some(StatusCode::NOT_FOUND) | Some(StatusCode::BAD_REQUEST) => {
                    SandboxError::Unavailable(format!(
                        "{what}: template {:?} rejected: {}",
                        self.config.template,
                        match e {
                            CallError::Status { message, .. } => message,
                            CallError::Transport { message, .. } => message,
                        }
                    ))
                }
                _ => e.into_sandbox_error(what),
            })?;
        let info = read_json::<wire::SandboxInfo>(resp, what).await?;
        tracing::info!(sandbox_id = %info.sandbox_id, envd = %info.envd_version, "created E2B sandbox");
        self.sandbox_from(info, what)
    }

    /// `POST /sandboxes/{id}/connect` (§2.6): resumes a paused sandbox, returns a fresh token.
    async fn connect_sandbox(self: &Arc<Self>, id: &str) -> Result<E2bSandbox, SandboxError> {
        let what = "E2B connect sandbox";
        let body = wire::TimeoutBody {
            timeout: self.ttl_secs(),
        };
        let path = format!("/sandboxes/{id}/connect");
        let resp = self
            .send(|| self.api(Method::POST, &path).json(&body), true)
            .await
            .map_err(|e| e.into_sandbox_error(what))?;
        let info = read_json::<wire::SandboxInfo>(resp, what).await?;
        if info.sandbox_id != id {
            return Err(SandboxError::Unavailable(format!(
                "{what}: asked for {id}, E2B answered {:?}",
                info.sandbox_id
            )));
        }
        self.sandbox_from(info, what)
    }

    fn sandbox_from(
        self: &Arc<Self>,
        info: wire::SandboxInfo,
        what: &str,
    ) -> Result<E2bSandbox, SandboxError> {
        if !is_valid_sandbox_id(&info.sandbox_id) {
            return Err(SandboxError::Unavailable(format!(
                "{what}: E2B returned a malformed sandbox id {:?}",
                info.sandbox_id
            )));
        }
        let domain = info
            .domain
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| self.config.domain.clone());
        let id = info.sandbox_id;
        let envd_base = match &self.config.envd_url {
            Some(url) => url.trim_end_matches('/').replace("{id}", &id),
            None => format!("https://{ENVD_PORT}-{id}.{domain}"),
        };
        Ok(E2bSandbox {
            client: Arc::clone(self),
            preview_url: format!("https://{PREVIEW_PORT}-{id}.{domain}"),
            id,
            envd_base,
            envd_token: info.envd_access_token.filter(|t| !t.is_empty()),
        })
    }
}

async fn read_json<T: DeserializeOwned>(resp: Response, what: &str) -> Result<T, SandboxError> {
    let bytes = read_capped(resp, MAX_JSON_BYTES, what, || {
        SandboxError::TooLarge(format!(
            "{what}: the response is larger than {MAX_JSON_BYTES} bytes"
        ))
    })
    .await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| SandboxError::Unavailable(format!("{what}: unexpected response body: {e}")))
}

/// A response body of at most `limit` bytes, else `too_large()` without reading further (by
/// its `Content-Length` when there is one, else as it streams).
async fn read_capped(
    resp: Response,
    limit: usize,
    what: &str,
    too_large: impl Fn() -> SandboxError,
) -> Result<Vec<u8>, SandboxError> {
    if resp.content_length().is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let mut body = resp.bytes_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|e| SandboxError::Unavailable(format!("{what}: reading response: {e}")))?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// E2B ids are `i` + lowercase alphanumerics and never contain `-` (the proxy splits on it).
fn is_valid_sandbox_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn secs_ceil(d: Duration) -> u32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX).max(1)
}

/// A path relative to the app root, by the rule every backend follows ([`normalize`]: no
/// absolute paths, nothing that climbs out with `..`), and without what the envd requests
/// cannot carry: a leading `~` (envd's home), control characters, quotes, backslashes (they
/// would break the multipart header). `allow_root` admits the app root itself (`""` or `.`).
fn confine(path: &str, allow_root: bool) -> Result<String, SandboxError> {
    let refuse = |why: &str| SandboxError::PathRefused(format!("{path:?}: {why}"));
    if path.starts_with('~') {
        return Err(refuse("home-relative paths are not allowed"));
    }
    if path
        .chars()
        .any(|c| c.is_control() || c == '"' || c == '\\')
    {
        return Err(refuse(
            "control characters, quotes and backslashes are not allowed",
        ));
    }
    let parts = normalize(path)?;
    if parts.is_empty() && !allow_root {
        return Err(refuse("empty path"));
    }
    Ok(parts.join("/"))
}

/// The absolute in-sandbox path of a confined relative path.
fn abs_path(rel: &str) -> String {
    if rel.is_empty() {
        APP_ROOT.to_owned()
    } else {
        format!("{APP_ROOT}/{rel}")
    }
}

/// One E2B sandbox, reached through envd with its access token.
pub struct E2bSandbox {
    client: Arc<Client>,
    id: String,
    envd_base: String,
    envd_token: Option<String>,
    preview_url: String,
}

impl std::fmt::Debug for E2bSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2bSandbox")
            .field("id", &self.id)
            .field("envd_base", &self.envd_base)
            .finish_non_exhaustive()
    }
}

/// How a command stream ended, before it becomes a `Result`.
enum StreamEnd {
    Finished,
    Failed(wire::ConnectError),
}

impl E2bSandbox {
    /// An envd request with the access token and the routing headers (§3.1, §4).
    fn envd(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self
            .client
            .http
            .request(method, format!("{}{path}", self.envd_base))
            .header("E2b-Sandbox-Id", &self.id)
            .header("E2b-Sandbox-Port", ENVD_PORT.to_string());
        if let Some(token) = &self.envd_token {
            req = req.header("X-Access-Token", token);
        }
        req
    }

    /// `op`, a file operation, within the configured file timeout.
    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, SandboxError>>,
    ) -> Result<T, SandboxError> {
        let limit = self.client.config.file_timeout;
        tokio::time::timeout(limit, op)
            .await
            .unwrap_or(Err(SandboxError::Timeout(limit)))
    }

    /// A unary Connect call (§5.1): bare JSON in and out.
    async fn unary<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        body: Req,
        timeout: Duration,
    ) -> Result<Resp, SandboxError> {
        let what = format!("envd {method}");
        let path = format!("/{method}");
        let resp = self
            .client
            .send(
                || {
                    self.envd(Method::POST, &path)
                        .header(CONTENT_TYPE, "application/json")
                        .header("Connect-Protocol-Version", "1")
                        .header(AUTHORIZATION, BASIC_USER)
                        .timeout(timeout)
                        .json(&body)
                },
                true,
            )
            .await
            .map_err(|e| e.into_sandbox_error(&what))?;
        read_json(resp, &what).await
    }

    /// `filesystem.Filesystem/ListDir` with depth 1, so excluded directories are never walked.
    async fn list_dir(
        &self,
        path: String,
        missing_is_empty: bool,
    ) -> Result<wire::ListDirResponse, SandboxError> {
        let listing = self
            .unary(
                "filesystem.Filesystem/ListDir",
                wire::ListDirRequest {
                    path: &path,
                    depth: 1,
                },
                REQUEST_TIMEOUT,
            )
            .await;
        match listing {
            // A subdirectory removed while walking is simply empty.
            Err(SandboxError::NotFound(_)) if missing_is_empty => Ok(Default::default()),
            other => other,
        }
    }

    /// `GET /files` of the app-relative `rel`, refused past [`MAX_FILE_BYTES`].
    async fn download(&self, rel: &str) -> Result<Vec<u8>, SandboxError> {
        let abs = abs_path(rel);
        let query = [("path", abs.as_str()), ("username", SANDBOX_USER)];
        let resp = self
            .client
            .send(
                || {
                    self.envd(Method::GET, "/files")
                        .query(&query)
                        .timeout(REQUEST_TIMEOUT)
                },
                true,
            )
            .await
            .map_err(|e| match e.status() {
                // 400: a directory or an invalid path; for the caller that is "no such file".
                Some(StatusCode::NOT_FOUND) | Some(StatusCode::BAD_REQUEST) => {
                    SandboxError::NotFound(rel.to_owned())
                }
                _ => e.into_sandbox_error("envd download"),
            })?;
        read_capped(resp, MAX_FILE_BYTES, "envd download", || {
            SandboxError::file_too_large(rel)
        })
        .await
    }

    /// Files below the absolute `root` (`dir` as the caller gave it, for messages), level by
    /// level with depth-1 ListDir calls, so excluded directories are never walked. Symlinks are
    /// not followed; more than [`MAX_LISTED_ENTRIES`] entries is an error.
    async fn walk(&self, root: String, dir: &str) -> Result<Vec<String>, SandboxError> {
        let prefix = format!("{APP_ROOT}/");
        let mut files = Vec::new();
        let mut seen = 0usize;
        let mut level = vec![root];
        let mut first = true;
        while !level.is_empty() {
            let calls: Vec<_> = level
                .iter()
                .map(|d| self.list_dir(d.clone(), !first))
                .collect();
            let listings: Vec<wire::ListDirResponse> = futures_util::stream::iter(calls)
                .buffered(LIST_CONCURRENCY)
                .try_collect()
                .await?;
            let mut next = Vec::new();
            for (parent, listing) in level.iter().zip(listings) {
                seen += listing.entries.len();
                if seen > MAX_LISTED_ENTRIES {
                    return Err(SandboxError::listing_too_large(dir, MAX_LISTED_ENTRIES));
                }
                for entry in listing.entries {
                    let path = if entry.path.is_empty() {
                        format!("{parent}/{}", entry.name)
                    } else {
                        entry.path
                    };
                    // Anything outside the app root (odd symlinks) is not ours to show.
                    let Some(rel) = path.strip_prefix(&prefix) else {
                        continue;
                    };
                    match entry.kind {
                        FileType::File => files.push(rel.to_owned()),
                        FileType::Directory if !UNLISTED_DIRS.contains(&entry.name.as_str()) => {
                            next.push(path)
                        }
                        _ => {}
                    }
                }
            }
            level = next;
            first = false;
        }
        files.sort();
        Ok(files)
    }

    /// Uploads files in one multipart request without `?path=`: each part's filename is its
    /// absolute target (§4.2, §8.3).
    async fn upload(&self, files: &[(String, &str)], single: bool) -> Result<(), SandboxError> {
        let boundary = format!("codekraft-{}", Uuid::new_v4().simple());
        let mut body = Vec::new();
        for (abs, content) in files {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
                     filename=\"{abs}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(content.as_bytes());
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let mut query = vec![("username", SANDBOX_USER)];
        if single {
            query.push(("path", files[0].0.as_str()));
        }
        self.client
            .send(
                || {
                    self.envd(Method::POST, "/files")
                        .query(&query)
                        .header(CONTENT_TYPE, &content_type)
                        .timeout(REQUEST_TIMEOUT)
                        .body(body.clone())
                },
                true,
            )
            .await
            .map_err(|e| e.into_sandbox_error("envd upload"))?;
        Ok(())
    }

    /// Writes a project's files into a fresh sandbox.
    async fn restore(&self, files: &FileMap) -> Result<(), SandboxError> {
        let mut batch = Vec::new();
        for (path, content) in files {
            match confine(path, false) {
                Ok(rel) => batch.push((abs_path(&rel), content.as_str())),
                Err(e) => tracing::warn!(error = %e, "skipping file that cannot be restored"),
            }
        }
        for chunk in batch.chunks(RESTORE_BATCH) {
            self.bounded(self.upload(chunk, false)).await?;
        }
        if !batch.is_empty() {
            tracing::info!(sandbox_id = %self.id, files = batch.len(), "restored project files");
        }
        Ok(())
    }

    async fn send_sigkill(&self, pid: Option<u32>) {
        let Some(pid) = pid else {
            tracing::warn!(sandbox_id = %self.id, "cancelled before the process started; cannot kill it");
            return;
        };
        let body = wire::SendSignalRequest {
            process: wire::PidSelector { pid },
            signal: "SIGNAL_SIGKILL",
        };
        let result: Result<serde_json::Value, _> = self
            .unary("process.Process/SendSignal", body, Duration::from_secs(10))
            .await;
        match result {
            Ok(_) | Err(SandboxError::NotFound(_)) => {}
            Err(e) => tracing::warn!(sandbox_id = %self.id, pid, error = %e, "SIGKILL failed"),
        }
    }

    /// `process.Process/Start` request for `bash -l -c command` (§8.2).
    fn start_request(
        &self,
        command: &str,
        cwd: &str,
        env: &[(String, String)],
        tag: Option<&str>,
        timeout: Option<Duration>,
    ) -> RequestBuilder {
        let body = wire::StartRequest {
            process: wire::ProcessConfig {
                cmd: "/bin/bash",
                args: vec!["-l", "-c", command],
                envs: env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
                cwd,
            },
            tag,
            stdin: false,
        };
        let payload = serde_json::to_vec(&body).unwrap_or_default();
        let mut req = self
            .envd(Method::POST, "/process.Process/Start")
            .header(CONTENT_TYPE, "application/connect+json")
            .header("Connect-Protocol-Version", "1")
            .header("Keepalive-Ping-Interval", KEEPALIVE_PING_SECS)
            .header(AUTHORIZATION, BASIC_USER)
            .body(envelope::encode(0, &payload));
        // No header at all means no limit; never send 0 (§5.3). At most 10 digits.
        if let Some(ms) = timeout.map(|t| t.as_millis().min(9_999_999_999)) {
            if ms > 0 {
                req = req.header("Connect-Timeout-Ms", HeaderValue::from(ms as u64));
            }
        }
        req
    }

    /// Checks the HTTP status and content type of a streaming response (§5.2, §11).
    async fn check_stream_response(resp: Response, what: &str) -> Result<Response, SandboxError> {
        let is_stream = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/connect+json"));
        if resp.status() == StatusCode::OK && is_stream {
            return Ok(resp);
        }
        let mut err = error_from_response(resp).await;
        if let CallError::Status { status, .. } = &mut err {
            if status.is_success() {
                // 200 with a non-stream body: treat as a server error.
                *status = StatusCode::BAD_GATEWAY;
            }
        }
        Err(err.into_sandbox_error(what))
    }

    async fn is_dev_server_up(&self, wait_secs: u64) -> Result<bool, SandboxError> {
        let spec = CommandSpec::new(
            format!("{DEV_SERVER_SCRIPT} --wait {wait_secs}"),
            Duration::from_secs(wait_secs + 30),
        );
        let out = self
            .run_command(spec, &mut OutputSink::discard(), CancellationToken::new())
            .await?;
        Ok(out.exit_code == 0)
    }

    /// Starts the dev server as a background process: no `Connect-Timeout-Ms`, stream dropped
    /// after the `start` event; the process keeps running (§5.3, §11).
    async fn start_dev_server(&self) -> Result<(), SandboxError> {
        let what = "envd start dev server";
        let req = self.start_request(DEV_SERVER_SCRIPT, APP_ROOT, &[], Some(DEV_SERVER_TAG), None);
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let resp = req
                .send()
                .await
                .map_err(|e| CallError::from_reqwest(e).into_sandbox_error(what))?;
            let resp = Self::check_stream_response(resp, what).await?;
            let mut stream = resp.bytes_stream();
            let mut decoder = envelope::Decoder::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| SandboxError::Unavailable(format!("{what}: {e}")))?;
                decoder.push(&chunk);
                while let Some(env) = decoder
                    .next_envelope()
                    .map_err(|e| SandboxError::Unavailable(format!("{what}: {e}")))?
                {
                    if env.is_end_stream() {
                        let end: wire::EndStream =
                            serde_json::from_slice(&env.payload).unwrap_or_default();
                        let msg = end
                            .error
                            .map(|e| format!("{}: {}", e.code, e.message))
                            .unwrap_or_else(|| "exited immediately".into());
                        return Err(SandboxError::Unavailable(format!("{what}: {msg}")));
                    }
                    if let Ok(wire::StartResponse {
                        event: Some(ProcessEvent::Start(start)),
                    }) = serde_json::from_slice(&env.payload)
                    {
                        tracing::info!(sandbox_id = %self.id, pid = start.pid, "dev server started");
                        return Ok(());
                    }
                }
            }
            Err(SandboxError::Unavailable(format!("{what}: stream ended before start")))
        })
        .await;
        resp.unwrap_or_else(|_| Err(SandboxError::Unavailable(format!("{what}: timed out"))))
    }
}

#[async_trait]
impl Sandbox for E2bSandbox {
    fn id(&self) -> &str {
        &self.id
    }

    async fn write_file(&self, path: &str, content: &str) -> Result<(), SandboxError> {
        let abs = abs_path(&confine(path, false)?);
        self.bounded(self.upload(&[(abs, content)], true)).await
    }

    async fn remove_file(&self, path: &str) -> Result<(), SandboxError> {
        let abs = abs_path(&confine(path, false)?);
        let removed: Result<serde_json::Value, _> = self
            .bounded(self.unary(
                "filesystem.Filesystem/Remove",
                wire::PathRequest { path: &abs },
                REQUEST_TIMEOUT,
            ))
            .await;
        match removed {
            Ok(_) | Err(SandboxError::NotFound(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn read_file(&self, path: &str) -> Result<String, SandboxError> {
        let rel = confine(path, false)?;
        let bytes = self.bounded(self.download(&rel)).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn list_files(&self, dir: &str) -> Result<Vec<String>, SandboxError> {
        let root = abs_path(&confine(dir, true)?);
        self.bounded(self.walk(root, dir)).await
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %self.id))]
    async fn run_command(
        &self,
        spec: CommandSpec,
        sink: &mut OutputSink,
        cancel: CancellationToken,
    ) -> Result<CommandOutput, SandboxError> {
        let what = "envd run command";
        let cwd = abs_path(&confine(spec.cwd.as_deref().unwrap_or(""), true)?);
        let timeout = if spec.timeout.is_zero() {
            self.client.config.command_timeout
        } else {
            spec.timeout
        }
        .min(MAX_COMMAND_TIMEOUT);
        let deadline = Instant::now() + timeout + CLIENT_DEADLINE_GRACE;
        let req = self.start_request(&spec.command, &cwd, &spec.env, None, Some(timeout));

        let mut send = std::pin::pin!(req.send());
        let sent = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(SandboxError::Cancelled),
            _ = tokio::time::sleep_until(deadline) => Err(SandboxError::Timeout(timeout)),
            resp = &mut send => Ok(resp),
        };
        let resp = match sent {
            Ok(resp) => resp.map_err(|e| CallError::from_reqwest(e).into_sandbox_error(what))?,
            Err(stop) => {
                // The process may already run (a dropped stream does not stop it): learn its
                // pid briefly and kill it.
                let pid = tokio::time::timeout(LATE_PID_WAIT, async {
                    let resp = send.await.ok().filter(|r| r.status() == StatusCode::OK)?;
                    late_pid(resp.bytes_stream(), envelope::Decoder::new()).await
                })
                .await
                .ok()
                .flatten();
                if pid.is_some() {
                    self.send_sigkill(pid).await;
                }
                return Err(stop);
            }
        };
        let resp = Self::check_stream_response(resp, what).await?;

        let cap = self.client.config.output_cap_bytes;
        let mut stdout = OutputStream::new(cap, OutputChunk::Stdout);
        let mut stderr = OutputStream::new(cap, OutputChunk::Stderr);
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut pid = None;
        let mut end: Option<wire::EndEvent> = None;
        let mut decoder = envelope::Decoder::new();
        let mut stream = resp.bytes_stream();

        let stream_end = 'read: loop {
            // Envelopes already received first. While output waits for room none is taken and the
            // body is not read: HTTP flow control slows the process down.
            while !sink.is_backlogged() {
                let env = match decoder.next_envelope() {
                    Ok(Some(env)) => env,
                    Ok(None) => break,
                    Err(e) => return Err(SandboxError::Unavailable(format!("{what}: {e}"))),
                };
                if env.is_end_stream() {
                    let end_stream: wire::EndStream =
                        serde_json::from_slice(&env.payload).unwrap_or_default();
                    break 'read Some(match end_stream.error {
                        Some(error) => StreamEnd::Failed(error),
                        None => StreamEnd::Finished,
                    });
                }
                let event = match serde_json::from_slice::<wire::StartResponse>(&env.payload) {
                    Ok(resp) => resp.event,
                    Err(e) => {
                        tracing::debug!(error = %e, "ignoring unknown process event");
                        None
                    }
                };
                match event {
                    Some(ProcessEvent::Start(start)) => pid = Some(start.pid),
                    Some(ProcessEvent::Data(data)) => {
                        if let Some(bytes) = data.stdout.and_then(|s| decode_b64(&b64, &s)) {
                            stdout.feed(&bytes, sink);
                        }
                        if let Some(bytes) = data.stderr.and_then(|s| decode_b64(&b64, &s)) {
                            stderr.feed(&bytes, sink);
                        }
                    }
                    Some(ProcessEvent::End(e)) => end = Some(e),
                    Some(ProcessEvent::Keepalive(_)) | None => {}
                }
            }
            let chunk = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    let pid = match pid {
                        Some(pid) => Some(pid),
                        None => late_pid(stream, decoder).await,
                    };
                    self.send_sigkill(pid).await;
                    return Err(SandboxError::Cancelled);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let pid = match pid {
                        Some(pid) => Some(pid),
                        None => late_pid(stream, decoder).await,
                    };
                    self.send_sigkill(pid).await;
                    return Err(SandboxError::Timeout(timeout));
                }
                () = sink.deliver(), if sink.is_backlogged() => continue,
                chunk = stream.next(), if !sink.is_backlogged() => chunk,
            };
            let chunk = match chunk {
                None => break 'read None,
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    return Err(SandboxError::Unavailable(format!(
                        "{what}: stream broke (is the sandbox still running?): {e}"
                    )))
                }
            };
            decoder.push(&chunk);
        };
        stdout.close(sink);
        stderr.close(sink);
        sink.deliver_all().await;

        match (stream_end, end) {
            (Some(StreamEnd::Failed(error)), _) => Err(match error.code.as_str() {
                "deadline_exceeded" => SandboxError::Timeout(timeout),
                "canceled" => SandboxError::Cancelled,
                "invalid_argument" | "not_found" => {
                    SandboxError::NotFound(format!("{what}: {}", error.message))
                }
                _ => {
                    SandboxError::Unavailable(format!("{what}: {}: {}", error.code, error.message))
                }
            }),
            // A clean EndStream, or (tolerated) a body cut right after the end event.
            (_, Some(end)) => Ok(command_output(end.exit_code, stdout, stderr)),
            (_, None) => Err(SandboxError::Unavailable(format!(
                "{what}: stream ended without an end event (is the sandbox still running?)"
            ))),
        }
    }

    async fn preview_url(&self) -> Result<String, SandboxError> {
        // The template's start command runs the dev server in every fresh sandbox (§9.2); start
        // it again only if it no longer answers (crashed, or killed by the agent).
        if !self.is_dev_server_up(2).await? {
            self.start_dev_server().await?;
            if !self.is_dev_server_up(DEV_SERVER_WAIT_SECS).await? {
                return Err(SandboxError::Unavailable(format!(
                    "the dev server on port {PREVIEW_PORT} did not answer within {DEV_SERVER_WAIT_SECS} s"
                )));
            }
        }
        Ok(self.preview_url.clone())
    }

    async fn extend_lifetime(&self, by: Duration) -> Result<(), SandboxError> {
        let body = wire::TimeoutBody {
            timeout: secs_ceil(by),
        };
        let path = format!("/sandboxes/{}/timeout", self.id);
        self.client
            .send(|| self.client.api(Method::POST, &path).json(&body), true)
            .await
            .map_err(|e| e.into_sandbox_error("E2B set sandbox timeout"))?;
        Ok(())
    }

    async fn kill(&self) -> Result<(), SandboxError> {
        self.client.kill_sandbox(&self.id).await
    }
}

/// Reads a `Start` stream until its `start` event, for at most [`LATE_PID_WAIT`]. Used when a
/// command is abandoned before its pid was known, so that it can still be killed.
async fn late_pid<S, B, E>(mut stream: S, mut decoder: envelope::Decoder) -> Option<u32>
where
    S: futures_util::Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    let find = async {
        loop {
            while let Some(env) = decoder.next_envelope().ok()? {
                if env.is_end_stream() {
                    return None;
                }
                if let Ok(wire::StartResponse {
                    event: Some(ProcessEvent::Start(start)),
                }) = serde_json::from_slice(&env.payload)
                {
                    return Some(start.pid);
                }
            }
            match stream.next().await {
                Some(Ok(chunk)) => decoder.push(chunk.as_ref()),
                _ => return None,
            }
        }
    };
    tokio::time::timeout(LATE_PID_WAIT, find)
        .await
        .ok()
        .flatten()
}

fn decode_b64(engine: &base64::engine::GeneralPurpose, s: &str) -> Option<Vec<u8>> {
    match engine.decode(s) {
        Ok(bytes) => Some(bytes),
        // Tolerate unpadded or URL-safe variants (§5.5, §11).
        Err(_) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .or_else(|_| {
                base64::engine::general_purpose::STANDARD_NO_PAD.decode(s.trim_end_matches('='))
            })
            .ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confine_accepts_relative_and_normalises() {
        assert_eq!(confine("app/page.tsx", false).unwrap(), "app/page.tsx");
        assert_eq!(confine("./app//page.tsx", false).unwrap(), "app/page.tsx");
        assert_eq!(confine("", true).unwrap(), "");
        assert_eq!(confine(".", true).unwrap(), "");
        // The shared rule: an inner `..` that stays inside is fine.
        assert_eq!(confine("app/../lib/a.ts", false).unwrap(), "lib/a.ts");
    }

    #[test]
    fn confine_refuses_escapes() {
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../b",
            "a/..",
            "~/x",
            "a\\b",
            "a\"b",
            "a\nb",
        ] {
            assert!(
                matches!(confine(bad, false), Err(SandboxError::PathRefused(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            confine("", false),
            Err(SandboxError::PathRefused(_))
        ));
    }

    #[test]
    fn sandbox_ids() {
        assert!(is_valid_sandbox_id("iabc123def456ghi789jk"));
        assert!(!is_valid_sandbox_id(""));
        assert!(!is_valid_sandbox_id("a-b"));
        assert!(!is_valid_sandbox_id("../x"));
    }

    #[test]
    fn ttl_rounds_up_and_is_positive() {
        assert_eq!(secs_ceil(Duration::from_millis(1500)), 2);
        assert_eq!(secs_ceil(Duration::ZERO), 1);
        assert_eq!(secs_ceil(Duration::from_secs(900)), 900);
    }

    #[test]
    fn default_urls() {
        let c = E2bConfig::new("e2b_00");
        assert_eq!(c.api_base(), "https://api.e2b.app");
        let mut c2 = c.clone();
        c2.api_url = Some("http://127.0.0.1:9/".into());
        assert_eq!(c2.api_base(), "http://127.0.0.1:9");
        assert!(!format!("{c:?}").contains("e2b_00"));
    }

    fn info(id: &str, domain: Option<&str>) -> wire::SandboxInfo {
        wire::SandboxInfo {
            sandbox_id: id.into(),
            envd_version: "0.5.7".into(),
            envd_access_token: Some("tok".into()),
            domain: domain.map(Into::into),
        }
    }

    #[test]
    fn sandbox_hosts_follow_the_reference() {
        let provider = E2bSandboxProvider::new(E2bConfig::new("e2b_00")).unwrap();
        let sb = provider
            .client
            .sandbox_from(info("iabc", None), "t")
            .unwrap();
        assert_eq!(sb.envd_base, "https://49983-iabc.e2b.app");
        assert_eq!(sb.preview_url, "https://3000-iabc.e2b.app");
        let sb = provider
            .client
            .sandbox_from(info("iabc", Some("eu.example.dev")), "t")
            .unwrap();
        assert_eq!(sb.envd_base, "https://49983-iabc.eu.example.dev");
        assert_eq!(sb.preview_url, "https://3000-iabc.eu.example.dev");
        assert!(provider
            .client
            .sandbox_from(info("a-b", None), "t")
            .is_err());

        let mut config = E2bConfig::new("e2b_00");
        config.envd_url = Some("http://envd.local/{id}/".into());
        let provider = E2bSandboxProvider::new(config).unwrap();
        let sb = provider
            .client
            .sandbox_from(info("iabc", None), "t")
            .unwrap();
        assert_eq!(sb.envd_base, "http://envd.local/iabc");
    }

    #[test]
    fn base64_tolerant() {
        let e = base64::engine::general_purpose::STANDARD;
        assert_eq!(decode_b64(&e, "aGk=").unwrap(), b"hi");
        assert_eq!(decode_b64(&e, "aGk").unwrap(), b"hi");
        assert!(decode_b64(&e, "!!").is_none());
    }
}
