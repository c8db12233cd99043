//! Where generated apps live and run. One trait, several backends: `local` (embedded default),
//! `e2b` (hosted), `fake` (in memory, for tests and benchmarks).

pub mod egress;
pub mod fake;
pub mod local;
mod output;
mod path;

pub use output::{CappedText, OutputSink};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod e2b;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The sandbox (or a file in it) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A path that is absolute, climbs out with `..`, or leads outside through a symlink.
    #[error("path refused: {0}")]
    PathRefused(String),
    /// Only regular files are read: a FIFO would block, a socket or device is no source file.
    #[error("not a regular file: {0}")]
    NotRegularFile(String),
    /// A file beyond [`MAX_FILE_BYTES`], or a listing beyond [`MAX_LISTED_ENTRIES`].
    #[error("too large: {0}")]
    TooLarge(String),
    /// A command, or a file operation, did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("cancelled")]
    Cancelled,
    /// The backend cannot be reached or refused the request (a system failure, not the app's).
    #[error("sandbox backend unavailable: {0}")]
    Unavailable(String),
    #[error("sandbox I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl SandboxError {
    /// A file over [`MAX_FILE_BYTES`], refused before it is read.
    fn file_too_large(path: &str) -> Self {
        Self::TooLarge(format!(
            "{path:?} is larger than {MAX_FILE_BYTES} bytes, the limit of files read whole; look \
             at parts of it with the terminal (head, grep)"
        ))
    }

    /// A listing that met more than `max` entries (of [`MAX_LISTED_ENTRIES`] in production).
    fn listing_too_large(dir: &str, max: usize) -> Self {
        Self::TooLarge(format!(
            "more than {max} entries below {dir:?}; list a smaller directory"
        ))
    }
}

/// Files of a project, path (relative to the app root) → UTF-8 content.
pub type FileMap = BTreeMap<String, String>;

/// The largest file the agent writes and any backend reads (a bigger one is refused, never
/// loaded: a sparse file of gigabytes costs nothing).
pub const MAX_FILE_BYTES: usize = 512 * 1024;

/// Entries `list_files` looks at before it gives up with [`SandboxError::TooLarge`], so a
/// sandbox with millions of files cannot exhaust the server.
pub const MAX_LISTED_ENTRIES: usize = 10_000;

/// Directories `list_files` does not descend into (build output and installs, not the app).
const UNLISTED_DIRS: [&str; 3] = ["node_modules", ".next", ".git"];

#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub command: String,
    /// Relative to the app root; `None` is the app root.
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
}

impl CommandSpec {
    pub fn new(command: impl Into<String>, timeout: Duration) -> Self {
        Self {
            command: command.into(),
            cwd: None,
            env: Vec::new(),
            timeout,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputChunk {
    Stdout(String),
    Stderr(String),
}

impl OutputChunk {
    fn text_mut(&mut self) -> &mut String {
        match self {
            Self::Stdout(text) | Self::Stderr(text) => text,
        }
    }
}

/// A finished command. `stdout`/`stderr` are capped (for the model); the output was streamed
/// to the caller's sink as it came, up to the sink's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
}

#[async_trait]
pub trait SandboxProvider: Send + Sync {
    /// Reconnects to the sandbox `existing_id` when it is still alive; otherwise creates a new one
    /// from the template and writes `restore` (the project's latest files) into it.
    async fn connect(
        &self,
        project_id: Uuid,
        existing_id: Option<&str>,
        restore: &FileMap,
    ) -> Result<Arc<dyn Sandbox>, SandboxError>;

    /// Removes a project's sandbox and its files for good (the project was deleted). A sandbox
    /// that is already gone is not an error.
    async fn destroy(&self, project_id: Uuid, sandbox_id: &str) -> Result<(), SandboxError>;

    /// Short backend name for logs and the UI (`local`, `e2b`, `fake`).
    fn kind(&self) -> &'static str;

    /// Whether sandboxes are isolated from the server and from each other.
    fn isolation(&self) -> SandboxIsolation {
        SandboxIsolation::Isolated
    }
}

/// How far sandboxes of one account are kept from the server and from other accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxIsolation {
    /// Every sandbox is isolated: any number of accounts may use them.
    Isolated,
    /// Generated code runs as the server's user (no working jail): one account only.
    SingleAccount { reason: String },
}

/// One sandbox. Paths are relative to the app root, by one lexical rule for every backend
/// (`path::normalize`: nothing absolute, nothing climbing out with `..`); every file
/// operation ends within the backend's file timeout ([`SandboxError::Timeout`]).
#[async_trait]
pub trait Sandbox: Send + Sync {
    fn id(&self) -> &str;
    async fn write_file(&self, path: &str, content: &str) -> Result<(), SandboxError>;
    /// A regular file of at most [`MAX_FILE_BYTES`] (anything else is refused at once).
    async fn read_file(&self, path: &str) -> Result<String, SandboxError>;
    /// Removes a file; one that is already gone is not an error.
    async fn remove_file(&self, path: &str) -> Result<(), SandboxError>;
    /// Files below `dir` (relative paths, recursive, without `node_modules`, `.next`, `.git`,
    /// symlinks not followed), [`SandboxError::TooLarge`] beyond [`MAX_LISTED_ENTRIES`].
    async fn list_files(&self, dir: &str) -> Result<Vec<String>, SandboxError>;
    /// Runs a command to completion, streaming its output into `sink` (see [`OutputSink`]:
    /// while output waits there for room, the command's output is not read).
    async fn run_command(
        &self,
        spec: CommandSpec,
        sink: &mut OutputSink,
        cancel: CancellationToken,
    ) -> Result<CommandOutput, SandboxError>;
    /// Ensures the app's dev server runs and returns its preview URL.
    async fn preview_url(&self) -> Result<String, SandboxError>;
    async fn extend_lifetime(&self, by: Duration) -> Result<(), SandboxError>;
    /// Stops the sandbox's commands and dev server and removes it; the handle is dead from
    /// then on (operations fail, no dev server starts again).
    async fn kill(&self) -> Result<(), SandboxError>;
}
