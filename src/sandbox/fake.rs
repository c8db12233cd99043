//! In-memory sandbox for agent tests and benchmarks: files live in a map, commands are scripted.
//!
//! Commands: `echo …` prints its arguments, `cat <path>` prints a file, a command matching a
//! rule registered with [`FakeSandboxProvider::fail_command`] / [`FakeSandboxProvider::script_command`]
//! / [`FakeSandboxProvider::timeout_command`] answers as scripted, anything else succeeds with
//! no output. Deterministic and allocation-light: no I/O, no sleeping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::path::normalize;
use super::{
    CommandOutput, CommandSpec, FileMap, OutputChunk, OutputSink, Sandbox, SandboxError,
    SandboxIsolation, SandboxProvider, MAX_FILE_BYTES, UNLISTED_DIRS,
};

#[derive(Debug, Clone)]
enum Reply {
    Output {
        exit_code: i32,
        stdout: String,
        stderr: String,
    },
    Timeout,
}

#[derive(Debug, Clone)]
struct Rule {
    substring: String,
    reply: Reply,
}

#[derive(Default)]
struct Shared {
    rules: Vec<Rule>,
    template: FileMap,
    sandboxes: HashMap<String, Arc<FakeSandbox>>,
    connects: usize,
    /// Where previews point (a test's HTTP server); unset: `http://fake-sandbox`.
    preview_base: Option<String>,
    /// Unset: isolated.
    isolation: Option<SandboxIsolation>,
}

/// See the module docs. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct FakeSandboxProvider {
    shared: Arc<Mutex<Shared>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeSandboxProvider {
    pub fn new() -> Self {
        Self::default()
    }

    /// Files every new sandbox starts with (before `restore` is applied).
    pub fn with_template(self, template: FileMap) -> Self {
        lock(&self.shared).template = template;
        self
    }

    /// Reports `isolation`, as a local backend without a working jail would.
    pub fn set_isolation(&self, isolation: SandboxIsolation) {
        lock(&self.shared).isolation = Some(isolation);
    }

    /// Previews at `{base}/{sandbox_id}/` from now on.
    pub fn set_preview_base(&self, base: &str) {
        lock(&self.shared).preview_base = Some(base.trim_end_matches('/').to_owned());
    }

    /// Commands containing `substring` exit with `exit_code` and print `stderr`.
    /// Rules are checked in the order they were added; the first match wins.
    pub fn fail_command(&self, substring: &str, exit_code: i32, stderr: &str) {
        self.script_command(substring, exit_code, "", stderr);
    }

    /// Commands containing `substring` answer with the given exit code and output.
    pub fn script_command(&self, substring: &str, exit_code: i32, stdout: &str, stderr: &str) {
        lock(&self.shared).rules.push(Rule {
            substring: substring.to_owned(),
            reply: Reply::Output {
                exit_code,
                stdout: stdout.to_owned(),
                stderr: stderr.to_owned(),
            },
        });
    }

    /// Commands containing `substring` fail at once with [`SandboxError::Timeout`].
    pub fn timeout_command(&self, substring: &str) {
        lock(&self.shared).rules.push(Rule {
            substring: substring.to_owned(),
            reply: Reply::Timeout,
        });
    }

    /// The live sandbox of a project, if any.
    pub fn sandbox(&self, project_id: Uuid) -> Option<Arc<FakeSandbox>> {
        lock(&self.shared)
            .sandboxes
            .get(&project_id.to_string())
            .cloned()
    }

    /// How many times `connect` was called (to assert reconnection behaviour).
    pub fn connect_count(&self) -> usize {
        lock(&self.shared).connects
    }
}

#[async_trait]
impl SandboxProvider for FakeSandboxProvider {
    async fn connect(
        &self,
        project_id: Uuid,
        existing_id: Option<&str>,
        restore: &FileMap,
    ) -> Result<Arc<dyn Sandbox>, SandboxError> {
        let mut shared = lock(&self.shared);
        shared.connects += 1;
        let id = project_id.to_string();
        if existing_id == Some(id.as_str()) {
            if let Some(existing) = shared.sandboxes.get(&id) {
                if !existing.is_killed() {
                    return Ok(existing.clone());
                }
            }
        }
        let mut files = shared.template.clone();
        for (path, content) in restore {
            let key = normalize(path)?.join("/");
            files.insert(key, content.clone());
        }
        let sandbox = Arc::new(FakeSandbox {
            id: id.clone(),
            rules: self.shared.clone(),
            state: Mutex::new(FakeState {
                files,
                commands: Vec::new(),
                killed: false,
                lifetime_extended: Duration::ZERO,
            }),
        });
        shared.sandboxes.insert(id, sandbox.clone());
        Ok(sandbox)
    }

    async fn destroy(&self, project_id: Uuid, _sandbox_id: &str) -> Result<(), SandboxError> {
        if let Some(sandbox) = self.sandbox(project_id) {
            sandbox.kill().await?;
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "fake"
    }

    fn isolation(&self) -> SandboxIsolation {
        lock(&self.shared)
            .isolation
            .clone()
            .unwrap_or(SandboxIsolation::Isolated)
    }
}

struct FakeState {
    files: FileMap,
    commands: Vec<String>,
    killed: bool,
    lifetime_extended: Duration,
}

pub struct FakeSandbox {
    id: String,
    rules: Arc<Mutex<Shared>>,
    state: Mutex<FakeState>,
}

impl FakeSandbox {
    /// A snapshot of the files.
    pub fn files(&self) -> FileMap {
        lock(&self.state).files.clone()
    }

    /// Commands run so far, in order.
    pub fn commands(&self) -> Vec<String> {
        lock(&self.state).commands.clone()
    }

    pub fn is_killed(&self) -> bool {
        lock(&self.state).killed
    }

    /// Total lifetime extension requested.
    pub fn lifetime_extended(&self) -> Duration {
        lock(&self.state).lifetime_extended
    }

    fn alive(&self) -> Result<MutexGuard<'_, FakeState>, SandboxError> {
        let state = lock(&self.state);
        if state.killed {
            return Err(SandboxError::NotFound(format!(
                "sandbox {} was killed",
                self.id
            )));
        }
        Ok(state)
    }

    fn reply_for(&self, command: &str, files: &FileMap) -> Result<Reply, SandboxError> {
        let rules = lock(&self.rules);
        if let Some(rule) = rules.rules.iter().find(|r| command.contains(&r.substring)) {
            return Ok(rule.reply.clone());
        }
        drop(rules);
        let trimmed = command.trim();
        let output = |stdout: String| Reply::Output {
            exit_code: 0,
            stdout,
            stderr: String::new(),
        };
        if trimmed == "echo" {
            return Ok(output("\n".to_owned()));
        }
        if let Some(args) = trimmed.strip_prefix("echo ") {
            let words: Vec<&str> = args
                .split_whitespace()
                .map(|w| w.trim_matches(|c| c == '"' || c == '\''))
                .collect();
            return Ok(output(format!("{}\n", words.join(" "))));
        }
        if let Some(path) = trimmed.strip_prefix("cat ") {
            let key = normalize(path.trim())?.join("/");
            return Ok(match files.get(&key) {
                Some(content) => output(content.clone()),
                None => Reply::Output {
                    exit_code: 1,
                    stdout: String::new(),
                    stderr: format!("cat: {path}: No such file or directory\n"),
                },
            });
        }
        Ok(output(String::new()))
    }
}

fn is_hidden(path: &str) -> bool {
    path.split('/').any(|part| UNLISTED_DIRS.contains(&part))
}

#[async_trait]
impl Sandbox for FakeSandbox {
    fn id(&self) -> &str {
        &self.id
    }

    async fn write_file(&self, path: &str, content: &str) -> Result<(), SandboxError> {
        let key = normalize(path)?.join("/");
        if key.is_empty() {
            return Err(SandboxError::PathRefused(
                "cannot write the app root".into(),
            ));
        }
        self.alive()?.files.insert(key, content.to_owned());
        Ok(())
    }

    async fn remove_file(&self, path: &str) -> Result<(), SandboxError> {
        let key = normalize(path)?.join("/");
        self.alive()?.files.remove(&key);
        Ok(())
    }

    async fn read_file(&self, path: &str) -> Result<String, SandboxError> {
        let key = normalize(path)?.join("/");
        match self.alive()?.files.get(&key) {
            Some(content) if content.len() > MAX_FILE_BYTES => {
                Err(SandboxError::file_too_large(path))
            }
            Some(content) => Ok(content.clone()),
            None => Err(SandboxError::NotFound(key)),
        }
    }

    async fn list_files(&self, dir: &str) -> Result<Vec<String>, SandboxError> {
        let prefix = normalize(dir)?.join("/");
        let state = self.alive()?;
        Ok(state
            .files
            .keys()
            .filter(|path| {
                prefix.is_empty()
                    || path
                        .strip_prefix(&prefix)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .filter(|path| !is_hidden(path))
            .cloned()
            .collect())
    }

    async fn run_command(
        &self,
        spec: CommandSpec,
        sink: &mut OutputSink,
        cancel: CancellationToken,
    ) -> Result<CommandOutput, SandboxError> {
        if let Some(cwd) = &spec.cwd {
            normalize(cwd)?;
        }
        let reply = {
            let mut state = self.alive()?;
            state.commands.push(spec.command.clone());
            self.reply_for(&spec.command, &state.files)?
        };
        if cancel.is_cancelled() {
            return Err(SandboxError::Cancelled);
        }
        match reply {
            Reply::Timeout => Err(SandboxError::Timeout(spec.timeout)),
            Reply::Output {
                exit_code,
                stdout,
                stderr,
            } => {
                if !stdout.is_empty() {
                    sink.send(OutputChunk::Stdout(stdout.clone())).await;
                }
                if !stderr.is_empty() {
                    sink.send(OutputChunk::Stderr(stderr.clone())).await;
                }
                Ok(CommandOutput {
                    exit_code,
                    stdout,
                    stderr,
                    truncated: false,
                })
            }
        }
    }

    async fn preview_url(&self) -> Result<String, SandboxError> {
        drop(self.alive()?);
        let base = lock(&self.rules).preview_base.clone();
        let base = base.as_deref().unwrap_or("http://fake-sandbox");
        Ok(format!("{base}/{}/", self.id))
    }

    async fn extend_lifetime(&self, by: Duration) -> Result<(), SandboxError> {
        self.alive()?.lifetime_extended += by;
        Ok(())
    }

    async fn kill(&self) -> Result<(), SandboxError> {
        lock(&self.state).killed = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(sandbox: &dyn Sandbox, command: &str) -> Result<CommandOutput, SandboxError> {
        sandbox
            .run_command(
                CommandSpec::new(command, Duration::from_secs(1)),
                &mut OutputSink::discard(),
                CancellationToken::new(),
            )
            .await
    }

    #[tokio::test]
    async fn files_commands_and_reconnect() {
        let provider = FakeSandboxProvider::new()
            .with_template(FileMap::from([("app/page.tsx".into(), "template".into())]));
        provider.fail_command("npm run build", 1, "Type error");
        let project = Uuid::nil();
        let restore = FileMap::from([("lib/a.ts".into(), "a".into())]);
        let sandbox = provider.connect(project, None, &restore).await.unwrap();
        assert_eq!(sandbox.read_file("lib/a.ts").await.unwrap(), "a");
        sandbox.write_file("./app/x.tsx", "x").await.unwrap();
        sandbox
            .write_file("node_modules/p/i.js", "x")
            .await
            .unwrap();
        assert_eq!(
            sandbox.list_files("app").await.unwrap(),
            ["app/page.tsx", "app/x.tsx"]
        );
        assert_eq!(sandbox.list_files("").await.unwrap().len(), 3);
        assert!(matches!(
            sandbox.read_file("../etc/passwd").await,
            Err(SandboxError::PathRefused(_))
        ));

        assert_eq!(
            run(&*sandbox, "echo 'hi there'").await.unwrap().stdout,
            "hi there\n"
        );
        assert_eq!(run(&*sandbox, "cat lib/a.ts").await.unwrap().stdout, "a");
        let failed = run(&*sandbox, "npm run build -- --x").await.unwrap();
        assert_eq!(
            (failed.exit_code, failed.stderr.as_str()),
            (1, "Type error")
        );
        assert_eq!(run(&*sandbox, "npm install").await.unwrap().exit_code, 0);
        assert_eq!(
            sandbox.preview_url().await.unwrap(),
            format!("http://fake-sandbox/{project}/")
        );

        let again = provider
            .connect(project, Some(sandbox.id()), &FileMap::new())
            .await
            .unwrap();
        assert_eq!(again.read_file("app/x.tsx").await.unwrap(), "x");
        sandbox.kill().await.unwrap();
        let fresh = provider
            .connect(project, Some(sandbox.id()), &FileMap::new())
            .await
            .unwrap();
        assert!(fresh.read_file("app/x.tsx").await.is_err());
        assert_eq!(provider.connect_count(), 3);
    }
}
