//! How a generation ends: the ASSISTANT reply, the version it made (a fragment), their events,
//! the RUN_FINISHED event and a refund. Written once here for every path that ends one: the
//! worker storing a run's outcome, a cancelled run, and a restored version (which has no run).
//! Each function works inside the caller's transaction; the caller publishes after the commit.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, Set, TransactionTrait};
use uuid::Uuid;

use crate::entity::message::{self, MessageType, Role};
use crate::entity::project;
use crate::entity::run::{self, RunStatus};
use crate::error::AppResult;
use crate::events::{record_event, RunEventData, StopReason};
use crate::sandbox::FileMap;

/// What a run spent, as its RUN_FINISHED event reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

/// How a run failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What the user sees (a public message), in `Run.error` and the reply.
    pub error: String,
    /// A failure of the system rather than of the generation: the credit goes back.
    pub system_failure: bool,
    pub reason: StopReason,
    /// What the run wrote before it failed, kept as a draft version.
    pub draft: Option<Version>,
}

/// A version of the app: what its fragment stores.
#[derive(Debug, Clone)]
pub struct Version {
    pub sandbox_url: String,
    pub title: String,
    pub files: FileMap,
}

/// The ASSISTANT reply of a generation (`run_id` is `None` for a restored version) and its
/// MESSAGE_CREATED event.
async fn record_reply<C>(
    txn: &C,
    project_id: Uuid,
    run_id: Option<Uuid>,
    message_type: MessageType,
    content: String,
) -> AppResult<message::Model>
where
    C: ConnectionTrait + TransactionTrait,
{
    let message = message::ActiveModel {
        id: Set(Uuid::now_v7()),
        project_id: Set(project_id),
        run_id: Set(run_id),
        role: Set(Role::Assistant),
        message_type: Set(message_type),
        content: Set(content),
        created_at: Set(Utc::now()),
    }
    .insert(txn)
    .await?;
    let created = RunEventData::MessageCreated {
        message_id: message.id,
        role: message.role,
        message_type: message.message_type,
    };
    record_event(txn, project_id, run_id, created).await?;
    Ok(message)
}

/// A RESULT reply holding `version`, with both events: the newest version of the project.
pub async fn record_version<C>(
    txn: &C,
    project_id: Uuid,
    run_id: Option<Uuid>,
    reply: String,
    version: Version,
) -> AppResult<message::Model>
where
    C: ConnectionTrait + TransactionTrait,
{
    let message = record_reply(txn, project_id, run_id, MessageType::Result, reply).await?;
    record_fragment(txn, &message, version, false).await?;
    Ok(message)
}

/// The fragment of `message` and its FRAGMENT_CREATED event.
async fn record_fragment<C>(
    txn: &C,
    message: &message::Model,
    version: Version,
    draft: bool,
) -> AppResult<()>
where
    C: ConnectionTrait + TransactionTrait,
{
    let new = super::fragment::NewFragment {
        message_id: message.id,
        sandbox_url: version.sandbox_url,
        title: version.title,
        draft,
    };
    let fragment = super::fragment::create_fragment(txn, new, &version.files).await?;
    let created = RunEventData::FragmentCreated {
        fragment_id: fragment.id,
        message_id: message.id,
        sandbox_url: fragment.sandbox_url,
        title: fragment.title,
        draft,
    };
    record_event(txn, message.project_id, message.run_id, created).await?;
    Ok(())
}

/// A run that was cancelled after writing files: a RESULT reply saying so, holding them as a
/// draft version.
pub async fn record_cancelled_draft<C>(txn: &C, run: &run::Model, draft: Version) -> AppResult<()>
where
    C: ConnectionTrait + TransactionTrait,
{
    let content = format!(
        "The run was cancelled. The {} it wrote are kept as a draft: restore it to use them, or discard it.",
        files_phrase(&draft.files)
    );
    let message = record_reply(
        txn,
        run.project_id,
        Some(run.id),
        MessageType::Result,
        content,
    )
    .await?;
    record_fragment(txn, &message, draft, true).await
}

fn files_phrase(files: &FileMap) -> String {
    match files.len() {
        1 => "file".to_owned(),
        n => format!("{n} files"),
    }
}

/// The RUN_FINISHED event of a run that just ended as `status`, for `reason`.
pub async fn record_finished<C>(
    txn: &C,
    run: &run::Model,
    status: RunStatus,
    error: Option<&str>,
    spend: Spend,
    reason: StopReason,
) -> AppResult<()>
where
    C: ConnectionTrait + TransactionTrait,
{
    let finished = RunEventData::RunFinished {
        status,
        error: error.map(str::to_owned),
        input_tokens: spend.input_tokens,
        output_tokens: spend.output_tokens,
        cost_usd: spend.cost_usd,
        stop_reason: Some(reason),
    };
    record_event(txn, run.project_id, run.id, finished).await?;
    Ok(())
}

/// A run that succeeded: its reply, the version it made, RUN_FINISHED.
pub async fn record_success<C>(
    txn: &C,
    run: &run::Model,
    reply: String,
    version: Version,
    spend: Spend,
    reason: StopReason,
) -> AppResult<()>
where
    C: ConnectionTrait + TransactionTrait,
{
    record_version(txn, run.project_id, Some(run.id), reply, version).await?;
    record_finished(txn, run, RunStatus::Succeeded, None, spend, reason).await
}

/// A run that failed: an ERROR reply (holding the draft, if any) and RUN_FINISHED; a system
/// failure gives the credit back.
pub async fn record_failure<C>(
    txn: &C,
    run: &run::Model,
    failure: Failure,
    spend: Spend,
) -> AppResult<()>
where
    C: ConnectionTrait + TransactionTrait,
{
    let Failure {
        error,
        system_failure,
        reason,
        draft,
    } = failure;
    if system_failure {
        let owner = project::Entity::find_by_id(run.project_id)
            .one(txn)
            .await?
            .map(|project| project.owner_id);
        if let Some(owner) = owner {
            super::credits::refund_credit(txn, owner).await?;
        }
    }
    let mut content = if system_failure {
        format!("Something went wrong on our side: {error}. Your credit was given back; try again.")
    } else {
        format!("Something went wrong: {error}.")
    };
    if let Some(draft) = &draft {
        content.push_str(&format!(
            " The {} it wrote are kept as a draft: restore it to use them, or discard it.",
            files_phrase(&draft.files)
        ));
    }
    let message = record_reply(
        txn,
        run.project_id,
        Some(run.id),
        MessageType::Error,
        content,
    )
    .await?;
    if let Some(draft) = draft {
        record_fragment(txn, &message, draft, true).await?;
    }
    record_finished(txn, run, RunStatus::Failed, Some(&error), spend, reason).await
}
