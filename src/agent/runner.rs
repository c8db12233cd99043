//! One run of the agent: the model's tool loop against the project's sandbox, a build check
//! with bounded fix rounds, then a title and a reply. Storing the result is the caller's job.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use tokio_util::sync::CancellationToken;

use super::context::{default_context_tokens, ContextBudget, ContextOverflow};
use super::diagnostic::{fingerprint, parse_check_output, to_model_list, Diagnostic, Fingerprint};
use super::preview_check::PreviewCheck;
use super::prompt::{reply_prompt, task_summary, title_prompt, SYSTEM_PROMPT};
use super::provider::{
    ChatMessage, ChatRequest, ModelError, ModelProvider, ModelResponse, TokenUsage,
};
use super::tools::{tool_specs, ToolRunner};
use crate::entity::message::{self, MessageType, Role};
use crate::entity::{project, run};
use crate::events::{DeltaRelay, Emitter, RunEventData, StopReason};
use crate::sandbox::{CommandSpec, FileMap, OutputSink, Sandbox, SandboxError, SandboxProvider};
use crate::services;
use crate::services::run_outcome::Version;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("the agent did not finish within {0} steps")]
    StepLimit(u32),
    #[error("the agent did not finish within {} seconds", .0.as_secs())]
    TimeLimit(Duration),
    #[error("the run reached its cost budget of ${0} (estimated)")]
    CostLimit(f64),
    #[error("your generations reached their spending cap for this period")]
    SpendCap,
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Context(#[from] ContextOverflow),
    #[error(transparent)]
    App(#[from] crate::error::AppError),
}

impl From<sea_orm::DbErr> for AgentError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::App(err.into())
    }
}

impl AgentError {
    /// A failure of the system rather than of the generation: the credit goes back.
    pub fn is_system_failure(&self) -> bool {
        match self {
            Self::Model(_) | Self::App(_) => true,
            Self::Sandbox(err) => !matches!(err, SandboxError::Cancelled),
            // The prompt asked for more than a run may do: the work was done, the credit spent.
            Self::StepLimit(_)
            | Self::TimeLimit(_)
            | Self::CostLimit(_)
            | Self::SpendCap
            | Self::Cancelled
            | Self::Context(_) => false,
        }
    }

    /// What RUN_FINISHED reports as the reason.
    pub fn stop_reason(&self) -> StopReason {
        match self {
            Self::StepLimit(_) => StopReason::StepLimit,
            Self::TimeLimit(_) => StopReason::TimeLimit,
            Self::CostLimit(_) => StopReason::CostLimit,
            Self::SpendCap => StopReason::SpendCap,
            Self::Cancelled | Self::Sandbox(SandboxError::Cancelled) => StopReason::Cancelled,
            Self::Model(_) | Self::Sandbox(_) | Self::Context(_) | Self::App(_) => {
                StopReason::Error
            }
        }
    }

    /// What the user may read (`Run.error`, the ERROR reply). Provider and sandbox errors can
    /// carry URLs, keys echoed back and server internals: their detail is only logged.
    pub fn public_message(&self) -> String {
        match self {
            Self::Model(ModelError::Unavailable(_)) => "the model could not be reached".to_owned(),
            Self::Model(ModelError::Rejected { .. }) => "the model refused the request".to_owned(),
            Self::Model(ModelError::Protocol(_)) => {
                "the model sent an answer that could not be read".to_owned()
            }
            Self::Model(ModelError::ToolsUnsupported { model }) => format!(
                "{TOOLS_UNSUPPORTED_CODE}: the model {model} cannot call tools, and the agent \
                 builds apps with tools; configure a model that supports tool calling"
            ),
            Self::Model(err @ ModelError::ReplayExhausted) => err.to_string(),
            Self::Sandbox(SandboxError::Timeout(_)) => {
                "the sandbox did not answer in time".to_owned()
            }
            Self::Sandbox(_) => "the sandbox could not be reached".to_owned(),
            Self::App(err) => err.public_message(),
            Self::StepLimit(_)
            | Self::TimeLimit(_)
            | Self::CostLimit(_)
            | Self::SpendCap
            | Self::Cancelled
            | Self::Context(_) => self.to_string(),
        }
    }
}

/// Leads `Run.error` when the configured model cannot call tools, so clients can tell.
pub const TOOLS_UNSUPPORTED_CODE: &str = "MODEL_CANNOT_CALL_TOOLS";

#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub max_steps: u32,
    pub max_fix_rounds: u32,
    pub command_timeout: Duration,
    /// Estimated cost (USD) the run may reach before its next model call; `None`: no limit.
    pub max_run_usd: Option<f64>,
    /// Token budget of one model request; `None`: the model's default.
    pub context_tokens: Option<u64>,
    /// Bytes of one command's output that stream as events; the rest is only counted.
    pub output_stream_limit: usize,
    /// Run after the model is done; a non-zero exit is fed back for a fix round.
    pub check_command: Option<String>,
    /// Then the preview is fetched; a server error is fed back the same way.
    pub preview_check: Option<PreviewCheck>,
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub reply: String,
    pub title: String,
    pub summary: String,
    pub sandbox_url: String,
    /// Every file written in the project so far (the previous fragment's plus this run's).
    pub files: FileMap,
    pub stop_reason: StopReason,
}

/// What a run has done so far, kept by the caller however the run ends: the work of a run
/// that is cancelled, fails or hits a budget becomes a draft version.
#[derive(Debug, Default)]
pub struct RunProgress {
    pub usage: RunUsage,
    /// The project's files when the run started.
    pub previous_files: FileMap,
    /// Files this run wrote.
    pub written: FileMap,
    /// The preview, once the sandbox is connected.
    pub sandbox_url: String,
}

impl RunProgress {
    /// The project's files with this run's writes, as a draft; `None` if it wrote nothing.
    pub fn draft(&self) -> Option<Version> {
        if self.written.is_empty() {
            return None;
        }
        let mut files = self.previous_files.clone();
        files.extend(self.written.clone());
        Some(Version {
            sandbox_url: self.sandbox_url.clone(),
            title: DRAFT_TITLE.to_owned(),
            files,
        })
    }
}

const DRAFT_TITLE: &str = "Unfinished draft";

/// How the tool loop ended: the model's summary and what the check still reports.
#[derive(Debug)]
struct LoopEnd {
    summary: String,
    unresolved: Vec<Diagnostic>,
    /// COMPLETED, FIX_ROUNDS_SPENT or REPEATED_DIAGNOSTICS.
    stop: StopReason,
}

impl LoopEnd {
    fn done(summary: String) -> Self {
        Self {
            summary,
            unresolved: Vec::new(),
            stop: StopReason::Completed,
        }
    }

    /// The honest note on what the check still reports, if anything.
    fn still_broken(&self) -> Option<String> {
        if self.unresolved.is_empty() {
            return None;
        }
        let why = if self.stop == StopReason::RepeatedDiagnostics {
            "I stopped fixing because my last fix left the same errors as before. Still broken:"
        } else {
            "The build check still reports errors after the fix rounds I had:"
        };
        let list: Vec<String> = self
            .unresolved
            .iter()
            .map(|d| format!("- {}", d.describe()))
            .collect();
        Some(format!("{why}\n{}", list.join("\n")))
    }

    /// The summary the title and reply are written from.
    fn summary_for_user(&self) -> String {
        match self.still_broken() {
            Some(note) => format!("{}\n\n{note}", self.summary),
            None => self.summary.clone(),
        }
    }
}

/// Everything the loop needs, borrowed from the app.
pub struct AgentContext<'a> {
    pub db: &'a sea_orm::DatabaseConnection,
    pub models: &'a dyn ModelProvider,
    pub sandboxes: &'a Arc<dyn SandboxProvider>,
    pub emitter: &'a Emitter,
    pub settings: &'a AgentSettings,
    pub cancel: &'a CancellationToken,
    /// What the owner's runs may still spend in this window; `None`: no cap.
    pub spend_left_usd: Option<f64>,
}

/// Usage of the whole run so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunUsage {
    pub tokens: TokenUsage,
    pub cost_usd: f64,
}

impl AgentContext<'_> {
    #[tracing::instrument(skip_all, fields(run_id = %run.id, project_id = %run.project_id))]
    pub async fn execute(
        &self,
        run: &run::Model,
        progress: &mut RunProgress,
    ) -> Result<RunOutput, AgentError> {
        self.emitter
            .emit(RunEventData::RunStarted {
                attempt: run.attempts,
            })
            .await;
        let project = project::Entity::find_by_id(run.project_id)
            .one(self.db)
            .await?
            .ok_or(crate::error::AppError::NotFound("project"))?;
        progress.previous_files = services::fragment::latest_files(self.db, project.id).await?;
        let RunProgress {
            usage,
            previous_files,
            written,
            sandbox_url,
        } = progress;

        // Cancelling only stops the waiting: a sandbox connected meanwhile is still recorded,
        // or destroyed if the project was deleted.
        let sandbox = self
            .cancellable(services::sandbox::connect_project_sandbox(
                self.db,
                self.sandboxes,
                &project,
                previous_files,
            ))
            .await??;
        *sandbox_url = self.cancellable(sandbox.preview_url()).await??;
        self.emitter
            .emit(RunEventData::SandboxReady {
                sandbox_id: sandbox.id().to_owned(),
                preview_url: sandbox_url.clone(),
            })
            .await;

        let mut conversation = history(self.db, project.id, run.user_message_id).await?;
        let end = self
            .tool_loop(
                sandbox.as_ref(),
                sandbox_url,
                previous_files,
                &mut conversation,
                written,
                usage,
            )
            .await?;

        let prompt = conversation
            .iter()
            .rev()
            .find_map(|m| match m {
                ChatMessage::User { text } => Some(text.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let summary = end.summary_for_user();
        let title = self
            .helper_answer(&title_prompt(&summary), &prompt, usage)
            .await
            .map(|title| {
                title
                    .trim()
                    .trim_matches('"')
                    .chars()
                    .take(80)
                    .collect::<String>()
            })
            .filter(|title| !title.is_empty())
            .unwrap_or_else(|| project.name.clone());
        let reply = self
            .helper_answer(&reply_prompt(&summary), &prompt, usage)
            .await
            .filter(|reply| !reply.trim().is_empty())
            .unwrap_or_else(|| end.summary.clone());
        // What is still broken is said in our words, whatever the model made of it.
        let reply = match end.still_broken() {
            Some(note) => format!("{}\n\n{note}", reply.trim_end()),
            None => reply,
        };

        let mut files = previous_files.clone();
        files.extend(written.clone());
        Ok(RunOutput {
            reply,
            title,
            summary,
            sandbox_url: sandbox_url.clone(),
            files,
            stop_reason: end.stop,
        })
    }

    fn context_budget(&self) -> ContextBudget {
        ContextBudget::new(
            self.settings
                .context_tokens
                .unwrap_or_else(|| default_context_tokens(self.models.name(), self.models.model())),
        )
    }

    async fn cancellable<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, AgentError> {
        tokio::select! {
            _ = self.cancel.cancelled() => Err(AgentError::Cancelled),
            done = work => Ok(done),
        }
    }

    /// Steps until the model gives its summary (or stops calling tools) and the check passes,
    /// the fix rounds are spent or a fix round changes nothing.
    async fn tool_loop(
        &self,
        sandbox: &dyn Sandbox,
        preview_url: &str,
        previous_files: &FileMap,
        conversation: &mut Vec<ChatMessage>,
        written: &mut FileMap,
        usage: &mut RunUsage,
    ) -> Result<LoopEnd, AgentError> {
        let system = system_prompt(previous_files);
        let tools = tool_specs();
        let mut context = self.context_budget();
        let task = conversation
            .iter()
            .rposition(|m| matches!(m, ChatMessage::User { .. }))
            .unwrap_or(0);
        // Messages the previous request carried: their tool results have been read.
        let mut seen = 0;
        let mut fix_rounds = 0;
        let mut checks = 0;
        let mut last_fingerprint: Option<Fingerprint> = None;
        let mut steps = 0;
        loop {
            steps += 1;
            if steps > self.settings.max_steps {
                return Err(AgentError::StepLimit(self.settings.max_steps));
            }
            ContextBudget::forget_seen_results(conversation, seen);
            let request = context.fit(&system, &tools, conversation, task)?;
            seen = conversation.len();
            let response = self.complete(&request, true, usage).await?;
            context.observe(&request, response.usage.input_tokens);
            // A model without tool support answers in prose: on a project with nothing built
            // yet that can only be a failure, and it is better named than summarised.
            if steps == 1
                && previous_files.is_empty()
                && response.tool_calls.is_empty()
                && self.models.may_lack_tool_support()
            {
                return Err(ModelError::ToolsUnsupported {
                    model: self.models.model().to_owned(),
                }
                .into());
            }
            conversation.push(ChatMessage::Assistant {
                text: response.text.clone(),
                tool_calls: response.tool_calls.clone(),
                raw: response.raw.clone(),
            });
            if response.tool_calls.is_empty() {
                let summary = task_summary(&response.text)
                    .unwrap_or(response.text.trim())
                    .to_owned();
                checks += 1;
                let diagnostics = self.check(sandbox, preview_url).await?;
                self.emitter
                    .emit(RunEventData::BuildDiagnostics {
                        round: checks,
                        diagnostics: diagnostics.clone(),
                    })
                    .await;
                if diagnostics.is_empty() {
                    return Ok(LoopEnd::done(summary));
                }
                let print = fingerprint(&diagnostics);
                if last_fingerprint.as_ref() == Some(&print) {
                    return Ok(LoopEnd {
                        summary,
                        unresolved: diagnostics,
                        stop: StopReason::RepeatedDiagnostics,
                    });
                }
                if fix_rounds >= self.settings.max_fix_rounds {
                    return Ok(LoopEnd {
                        summary,
                        unresolved: diagnostics,
                        stop: StopReason::FixRoundsSpent,
                    });
                }
                fix_rounds += 1;
                last_fingerprint = Some(print);
                conversation.push(ChatMessage::User {
                    text: format!(
                        "The build check failed (fix round {fix_rounds} of {}). Its diagnostics, one JSON object per line:\n{}\n\nFix these errors, then reply with a new <task_summary>.",
                        self.settings.max_fix_rounds,
                        to_model_list(&diagnostics),
                    ),
                });
                continue;
            }
            let mut runner = ToolRunner {
                sandbox,
                emitter: self.emitter,
                cancel: self.cancel,
                command_timeout: self.settings.command_timeout,
                output_stream_limit: self.settings.output_stream_limit,
                written: &mut *written,
            };
            for call in &response.tool_calls {
                self.emitter
                    .emit(RunEventData::ToolCallStarted {
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                        arguments: call.arguments.clone(),
                    })
                    .await;
                let outcome = self.cancellable(runner.execute(call)).await??;
                self.emitter
                    .emit(RunEventData::ToolCallFinished {
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                        ok: !outcome.is_error,
                        error: outcome.is_error.then(|| outcome.content.clone()),
                    })
                    .await;
                conversation.push(ChatMessage::ToolResult {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    content: outcome.content,
                    is_error: outcome.is_error,
                });
            }
        }
    }

    /// One model call, recorded in the transcript; text deltas are published as they stream
    /// when `publish_deltas` (the chat shows the coding loop, not the helper prompts).
    async fn complete(
        &self,
        request: &ChatRequest,
        publish_deltas: bool,
        usage: &mut RunUsage,
    ) -> Result<ModelResponse, AgentError> {
        self.ensure_budget(usage)?;
        let deltas = DeltaRelay::default();
        let on_delta = |text: &str| {
            if publish_deltas {
                deltas.push(text);
            }
        };
        let model = async {
            let response = self.models.complete(request, &on_delta).await;
            deltas.close();
            response
        };
        let (response, ()) = self
            .cancellable(async { tokio::join!(model, deltas.forward(self.emitter)) })
            .await?;
        let response = response?;
        usage.tokens.input_tokens += response.usage.input_tokens;
        usage.tokens.output_tokens += response.usage.output_tokens;
        usage.cost_usd += self.models.estimate_cost_usd(response.usage);
        self.emitter
            .emit(RunEventData::ModelResponse(response.clone()))
            .await;
        Ok(response)
    }

    /// Refuses the next model call once the run's estimated cost reached its budget or what
    /// the owner's runs may still spend.
    fn ensure_budget(&self, usage: &RunUsage) -> Result<(), AgentError> {
        if let Some(limit) = self.settings.max_run_usd {
            if usage.cost_usd >= limit {
                return Err(AgentError::CostLimit(limit));
            }
        }
        match self.spend_left_usd {
            Some(left) if usage.cost_usd >= left => Err(AgentError::SpendCap),
            _ => Ok(()),
        }
    }

    /// The check command's diagnostics, or else the preview's error; none: the check passed.
    async fn check(
        &self,
        sandbox: &dyn Sandbox,
        preview_url: &str,
    ) -> Result<Vec<Diagnostic>, AgentError> {
        let diagnostics = self.check_command(sandbox).await?;
        if !diagnostics.is_empty() {
            return Ok(diagnostics);
        }
        match &self.settings.preview_check {
            Some(check) => Ok(self
                .cancellable(check.errors(preview_url))
                .await?
                .into_iter()
                .collect()),
            None => Ok(Vec::new()),
        }
    }

    async fn check_command(&self, sandbox: &dyn Sandbox) -> Result<Vec<Diagnostic>, AgentError> {
        let Some(command) = &self.settings.check_command else {
            return Ok(Vec::new());
        };
        let output = sandbox
            .run_command(
                CommandSpec::new(command.clone(), self.settings.command_timeout),
                &mut OutputSink::discard(),
                self.cancel.clone(),
            )
            .await;
        match output {
            Ok(output) if output.exit_code == 0 => Ok(Vec::new()),
            Ok(output) => Ok(parse_check_output(&format!(
                "{}{}",
                output.stdout, output.stderr
            ))),
            Err(SandboxError::Timeout(after)) => Ok(vec![Diagnostic::unlocated(&format!(
                "the check timed out after {}s",
                after.as_secs()
            ))]),
            Err(err) => Err(err.into()),
        }
    }

    /// A small tool-less completion (title, reply), fitted to the context budget like every
    /// request; `None` if the model fails or it cannot fit: these are extras.
    async fn helper_answer(
        &self,
        system: &str,
        prompt: &str,
        usage: &mut RunUsage,
    ) -> Option<String> {
        let messages = [ChatMessage::User {
            text: prompt.to_owned(),
        }];
        let request = match self.context_budget().fit(system, &[], &messages, 0) {
            Ok(request) => request,
            Err(err) => {
                tracing::warn!(%err, "helper prompt skipped");
                return None;
            }
        };
        match self.complete(&request, false, usage).await {
            Ok(response) => Some(response.text),
            Err(err) => {
                tracing::warn!(%err, "helper prompt failed");
                None
            }
        }
    }
}

/// Files named in the system prompt; the model lists the rest with its tools.
const MAX_LISTED_FILES: usize = 200;

/// The coding loop's instructions; a follow-up is told which files exist and their sizes (not
/// their content: the model reads what it needs), so it builds on them instead of starting
/// over.
fn system_prompt(files: &FileMap) -> String {
    if files.is_empty() {
        return SYSTEM_PROMPT.to_owned();
    }
    let mut listing: Vec<String> = files
        .iter()
        .take(MAX_LISTED_FILES)
        .map(|(path, content)| format!("- {path} ({} bytes)", content.len()))
        .collect();
    if files.len() > MAX_LISTED_FILES {
        listing.push(format!(
            "- … and {} more (listFiles shows them)",
            files.len() - MAX_LISTED_FILES
        ));
    }
    format!(
        "{SYSTEM_PROMPT}\n\nThe project already has these files from earlier requests; read the ones you need with readFiles and change them rather than starting over:\n{}",
        listing.join("\n")
    )
}

/// The conversation so far as model messages, up to and including this run's USER message.
async fn history(
    db: &sea_orm::DatabaseConnection,
    project_id: uuid::Uuid,
    user_message_id: uuid::Uuid,
) -> Result<Vec<ChatMessage>, AgentError> {
    let messages = message::Entity::find()
        .filter(message::Column::ProjectId.eq(project_id))
        .filter(message::Column::Id.lte(user_message_id))
        .order_by_asc(message::Column::Id)
        .all(db)
        .await?;
    let mut conversation = Vec::new();
    for message in messages {
        match (message.role, message.message_type) {
            (Role::User, _) => conversation.push(ChatMessage::User {
                text: message.content,
            }),
            (Role::Assistant, MessageType::Result) => conversation.push(ChatMessage::Assistant {
                text: message.content,
                tool_calls: Vec::new(),
                raw: None,
            }),
            (Role::Assistant, MessageType::Error) => {}
        }
    }
    Ok(conversation)
}

pub fn settings_from_config(config: &crate::config::Config) -> AgentSettings {
    AgentSettings {
        max_steps: config.agent_max_steps,
        max_fix_rounds: config.agent_max_fix_rounds,
        command_timeout: config.command_timeout(),
        max_run_usd: config.agent_max_run_usd,
        context_tokens: config.agent_context_tokens,
        output_stream_limit: config.agent_output_stream_bytes,
        check_command: Some(config.agent_check_command.clone()).filter(|c| !c.trim().is_empty()),
        preview_check: config
            .agent_preview_check
            .then(|| PreviewCheck::new(config.command_timeout())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_prompt_lists_files_with_sizes_not_content() {
        let mut files = FileMap::new();
        files.insert("app/page.tsx".into(), "x".repeat(1234));
        let prompt = system_prompt(&files);
        assert!(prompt.contains("- app/page.tsx (1234 bytes)"), "{prompt}");
        assert!(!prompt.contains("xxxx"));
        for i in 0..MAX_LISTED_FILES + 5 {
            files.insert(format!("lib/f{i:03}.ts"), String::new());
        }
        let prompt = system_prompt(&files);
        assert!(
            prompt.contains("… and 6 more (listFiles shows them)"),
            "{prompt}"
        );
    }
}
