//! The agent's tools: JSON-schema specs for the model, and their execution in the sandbox.
//! A tool's own failure (bad arguments, missing file, refused path) goes back to the model as a
//! tool error; only system failures (sandbox unreachable, cancellation) end the run.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::provider::{ToolCall, ToolSpec};
use crate::events::{Emitter, RunEventData};
use crate::sandbox::{CommandSpec, FileMap, OutputSink, Sandbox, SandboxError, MAX_FILE_BYTES};

pub const TERMINAL: &str = "terminal";
pub const CREATE_OR_UPDATE_FILES: &str = "createOrUpdateFiles";
pub const READ_FILES: &str = "readFiles";
pub const LIST_FILES: &str = "listFiles";
pub const EDIT_FILE: &str = "editFile";

const MAX_FILES_PER_CALL: usize = 50;
/// Output chunks on their way from a command to the emitter; when they pile up, the command
/// waits.
const OUTPUT_CHANNEL_CHUNKS: usize = 4;

pub fn tool_specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: TERMINAL.into(),
            description: "Run a shell command in the app root and get its exit code and output."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": { "command": { "type": "string", "description": "The command to run." } },
                "required": ["command"]
            }),
        },
        ToolSpec {
            name: CREATE_OR_UPDATE_FILES.into(),
            description: "Create or overwrite files (paths relative to the app root).".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "files": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "path": { "type": "string" },
                                "content": { "type": "string" }
                            },
                            "required": ["path", "content"]
                        }
                    }
                },
                "required": ["files"]
            }),
        },
        ToolSpec {
            name: READ_FILES.into(),
            description: "Read files (paths relative to the app root).".into(),
            parameters: json!({
                "type": "object",
                "properties": { "files": { "type": "array", "items": { "type": "string" } } },
                "required": ["files"]
            }),
        },
        ToolSpec {
            name: LIST_FILES.into(),
            description:
                "List the files below a directory (relative to the app root; \".\" for all).".into(),
            parameters: json!({
                "type": "object",
                "properties": { "dir": { "type": "string" } },
                "required": ["dir"]
            }),
        },
        ToolSpec {
            name: EDIT_FILE.into(),
            description: "Replace exactly one occurrence of `search` with `replace` in a file."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": { "type": "string" },
                    "search": { "type": "string" },
                    "replace": { "type": "string" }
                },
                "required": ["path", "search", "replace"]
            }),
        },
    ]
}

#[derive(Deserialize)]
struct TerminalArgs {
    command: String,
}

#[derive(Deserialize)]
struct FileArg {
    path: String,
    content: String,
}

#[derive(Deserialize)]
struct WriteArgs {
    files: Vec<FileArg>,
}

#[derive(Deserialize)]
struct ReadArgs {
    files: Vec<String>,
}

#[derive(Deserialize)]
struct ListArgs {
    #[serde(default)]
    dir: Option<String>,
}

#[derive(Deserialize)]
struct EditArgs {
    path: String,
    search: String,
    replace: String,
}

/// What a tool call gave back to the model.
pub struct ToolOutcome {
    pub content: Value,
    pub is_error: bool,
}

impl ToolOutcome {
    fn ok(content: Value) -> Self {
        Self {
            content,
            is_error: false,
        }
    }

    fn error(message: impl Into<String>) -> Self {
        Self {
            content: json!({ "error": message.into() }),
            is_error: true,
        }
    }
}

pub struct ToolRunner<'a> {
    pub sandbox: &'a dyn Sandbox,
    pub emitter: &'a Emitter,
    pub cancel: &'a CancellationToken,
    pub command_timeout: Duration,
    /// Bytes of one command's output that stream as events; the rest is only counted.
    pub output_stream_limit: usize,
    /// Every file written in this run, for the fragment.
    pub written: &'a mut FileMap,
}

/// Sandbox errors that are the model's doing (a wrong path) versus the system's.
fn tool_error_or_system(err: SandboxError) -> Result<ToolOutcome, SandboxError> {
    match err {
        SandboxError::NotFound(what) => Ok(ToolOutcome::error(format!("not found: {what}"))),
        SandboxError::PathRefused(why) => Ok(ToolOutcome::error(format!("path refused: {why}"))),
        refused @ (SandboxError::NotRegularFile(_) | SandboxError::TooLarge(_)) => {
            Ok(ToolOutcome::error(refused.to_string()))
        }
        SandboxError::Timeout(after) => Ok(ToolOutcome::error(format!(
            "timed out after {}s",
            after.as_secs_f64()
        ))),
        SandboxError::Io(err) => Ok(ToolOutcome::error(format!("I/O error: {err}"))),
        system @ (SandboxError::Cancelled | SandboxError::Unavailable(_)) => Err(system),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(call: &ToolCall) -> Result<T, ToolOutcome> {
    serde_json::from_value(call.arguments.clone())
        .map_err(|err| ToolOutcome::error(format!("invalid arguments for {}: {err}", call.name)))
}

impl ToolRunner<'_> {
    pub async fn execute(&mut self, call: &ToolCall) -> Result<ToolOutcome, SandboxError> {
        let outcome = match call.name.as_str() {
            TERMINAL => match parse::<TerminalArgs>(call) {
                Ok(args) => self.terminal(call, args).await,
                Err(outcome) => Ok(outcome),
            },
            CREATE_OR_UPDATE_FILES => match parse::<WriteArgs>(call) {
                Ok(args) => self.write_files(args).await,
                Err(outcome) => Ok(outcome),
            },
            READ_FILES => match parse::<ReadArgs>(call) {
                Ok(args) => self.read_files(args).await,
                Err(outcome) => Ok(outcome),
            },
            LIST_FILES => match parse::<ListArgs>(call) {
                Ok(args) => self
                    .sandbox
                    .list_files(args.dir.as_deref().unwrap_or("."))
                    .await
                    .map(|files| ToolOutcome::ok(json!({ "files": files }))),
                Err(outcome) => Ok(outcome),
            },
            EDIT_FILE => match parse::<EditArgs>(call) {
                Ok(args) => self.edit_file(args).await,
                Err(outcome) => Ok(outcome),
            },
            unknown => Ok(ToolOutcome::error(format!("unknown tool `{unknown}`"))),
        };
        outcome.or_else(tool_error_or_system)
    }

    async fn terminal(
        &mut self,
        call: &ToolCall,
        args: TerminalArgs,
    ) -> Result<ToolOutcome, SandboxError> {
        let (sender, mut chunks) = mpsc::channel(OUTPUT_CHANNEL_CHUNKS);
        let mut sink = OutputSink::new(sender, self.output_stream_limit);
        let (sandbox, emitter) = (self.sandbox, self.emitter);
        let spec = CommandSpec::new(args.command, self.command_timeout);
        let cancel = self.cancel.clone();
        // The sink moves in and is dropped with the command, which ends the stream.
        let command = async move {
            let output = sandbox.run_command(spec, &mut sink, cancel).await;
            (output, sink.omitted_bytes())
        };
        let stream = async {
            while let Some(chunk) = chunks.recv().await {
                emitter.emit_output(&call.id, chunk).await;
            }
        };
        let ((output, omitted_bytes), ()) = tokio::join!(command, stream);
        if omitted_bytes > 0 {
            emitter.emit_output_omitted(&call.id, omitted_bytes).await;
        }
        let output = match output {
            Err(SandboxError::Timeout(after)) => {
                return Ok(ToolOutcome::error(format!(
                    "the command timed out after {}s and was killed",
                    after.as_secs()
                )))
            }
            output => output?,
        };
        Ok(ToolOutcome {
            is_error: output.exit_code != 0,
            content: json!({
                "exitCode": output.exit_code,
                "stdout": output.stdout,
                "stderr": output.stderr,
                "truncated": output.truncated,
            }),
        })
    }

    async fn write_files(&mut self, args: WriteArgs) -> Result<ToolOutcome, SandboxError> {
        if args.files.is_empty() || args.files.len() > MAX_FILES_PER_CALL {
            return Ok(ToolOutcome::error(format!(
                "pass 1 to {MAX_FILES_PER_CALL} files"
            )));
        }
        if let Some(big) = args.files.iter().find(|f| f.content.len() > MAX_FILE_BYTES) {
            return Ok(ToolOutcome::error(format!(
                "{} is larger than {MAX_FILE_BYTES} bytes",
                big.path
            )));
        }
        let mut paths = Vec::new();
        for file in args.files {
            self.sandbox.write_file(&file.path, &file.content).await?;
            self.emitter
                .emit(RunEventData::FileWritten {
                    path: file.path.clone(),
                    bytes: file.content.len() as u64,
                })
                .await;
            paths.push(file.path.clone());
            self.written.insert(file.path, file.content);
        }
        Ok(ToolOutcome::ok(json!({ "written": paths })))
    }

    async fn read_files(&mut self, args: ReadArgs) -> Result<ToolOutcome, SandboxError> {
        let mut files = serde_json::Map::new();
        let mut failed = false;
        for path in args.files.into_iter().take(MAX_FILES_PER_CALL) {
            let content = match self.sandbox.read_file(&path).await {
                Ok(content) => Value::String(content),
                Err(err) => {
                    failed = true;
                    tool_error_or_system(err)?.content
                }
            };
            files.insert(path, content);
        }
        Ok(ToolOutcome {
            content: Value::Object(files),
            is_error: failed,
        })
    }

    async fn edit_file(&mut self, args: EditArgs) -> Result<ToolOutcome, SandboxError> {
        if args.search.is_empty() {
            return Ok(ToolOutcome::error("`search` must not be empty"));
        }
        let content = self.sandbox.read_file(&args.path).await?;
        let edited = match content.matches(&args.search).count() {
            1 => content.replacen(&args.search, &args.replace, 1),
            0 => {
                return Ok(ToolOutcome::error(format!(
                    "`search` was not found in {}",
                    args.path
                )))
            }
            n => {
                return Ok(ToolOutcome::error(format!(
                    "`search` occurs {n} times in {}; make it unique",
                    args.path
                )))
            }
        };
        if edited.len() > MAX_FILE_BYTES {
            return Ok(ToolOutcome::error(format!(
                "{} would be larger than {MAX_FILE_BYTES} bytes after this edit",
                args.path
            )));
        }
        self.sandbox.write_file(&args.path, &edited).await?;
        self.emitter
            .emit(RunEventData::FileWritten {
                path: args.path.clone(),
                bytes: edited.len() as u64,
            })
            .await;
        self.written.insert(args.path.clone(), edited);
        Ok(ToolOutcome::ok(json!({ "edited": args.path })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_files_and_timeouts_are_the_models_to_handle_but_outages_end_the_run() {
        for (err, says) in [
            (
                SandboxError::NotRegularFile("\"p\" (a FIFO)".into()),
                "FIFO",
            ),
            (SandboxError::TooLarge("\"big\" is larger".into()), "larger"),
            (SandboxError::PathRefused("\"../x\"".into()), "path refused"),
            (SandboxError::Timeout(Duration::from_millis(1500)), "1.5s"),
        ] {
            let outcome = tool_error_or_system(err).expect("a tool error");
            assert!(outcome.is_error);
            assert!(outcome.content["error"].as_str().unwrap().contains(says));
        }
        assert!(tool_error_or_system(SandboxError::Unavailable("down".into())).is_err());
        assert!(tool_error_or_system(SandboxError::Cancelled).is_err());
    }
}
