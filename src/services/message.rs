//! Messages: a USER message starts a generation (a queued run); an ASSISTANT message ends it.

use std::collections::HashMap;

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, TransactionTrait,
};
use uuid::Uuid;

use super::page::{page_per_group, Page, PageRequest};
use super::Viewer;
use crate::entity::message::{self, MessageType, Role};
use crate::entity::project;
use crate::entity::run::{self, RunStatus};
use crate::error::{AppError, AppResult};
use crate::events::{record_event, BusMessage, EventBus, RunEventData};

pub const MAX_CONTENT: usize = 10_000;
pub const MAX_ATTEMPTS: i32 = 3;

pub fn validate_content(content: &str) -> AppResult<&str> {
    let content = content.trim();
    if content.is_empty() {
        return Err(AppError::bad_input("the message is empty"));
    }
    if content.chars().count() > MAX_CONTENT {
        return Err(AppError::bad_input(format!(
            "the message is longer than {MAX_CONTENT} characters"
        )));
    }
    Ok(content)
}

/// A stored USER message and the run that will answer it.
#[derive(Debug, Clone)]
pub struct Generation {
    pub message: message::Model,
    pub run: run::Model,
}

impl Generation {
    /// After the commit: wake subscribers and workers.
    pub async fn announce(&self, bus: &dyn EventBus) {
        bus.publish(BusMessage::ProjectEvents(self.run.project_id))
            .await;
        bus.publish(BusMessage::RunQueued).await;
    }
}

/// Inside the caller's transaction: the USER message, a QUEUED run and their events.
pub(super) async fn queue_generation<C>(
    txn: &C,
    project_id: Uuid,
    content: &str,
) -> AppResult<Generation>
where
    C: ConnectionTrait + TransactionTrait,
{
    let now = Utc::now();
    let run_id = Uuid::now_v7();
    let message = message::ActiveModel {
        id: Set(Uuid::now_v7()),
        project_id: Set(project_id),
        run_id: Set(Some(run_id)),
        role: Set(Role::User),
        message_type: Set(MessageType::Result),
        content: Set(content.to_owned()),
        created_at: Set(now),
    }
    .insert(txn)
    .await?;
    let run = run::ActiveModel {
        id: Set(run_id),
        project_id: Set(project_id),
        user_message_id: Set(message.id),
        status: Set(RunStatus::Queued),
        attempts: Set(0),
        max_attempts: Set(MAX_ATTEMPTS),
        lease_owner: Set(None),
        lease_until: Set(None),
        error: Set(None),
        input_tokens: Set(0),
        output_tokens: Set(0),
        cost_usd: Set(0.0),
        credit_refunded: Set(false),
        created_at: Set(now),
        queued_at: Set(now),
        started_at: Set(None),
        finished_at: Set(None),
    }
    .insert(txn)
    .await?;
    record_event(
        txn,
        project_id,
        run_id,
        RunEventData::MessageCreated {
            message_id: message.id,
            role: message.role,
            message_type: message.message_type,
        },
    )
    .await?;
    record_event(
        txn,
        project_id,
        run_id,
        RunEventData::RunQueued { retry: false },
    )
    .await?;
    Ok(Generation { message, run })
}

/// A follow-up on an existing project: same rules as the first prompt. One generation at a
/// time per project, so two runs never edit one sandbox at once.
pub async fn send_message<C: TransactionTrait>(
    db: &C,
    bus: &dyn EventBus,
    viewer: Viewer,
    project_id: Uuid,
    content: &str,
    limits: super::run::RunLimits,
) -> AppResult<(project::Model, Generation)> {
    let content = validate_content(content)?;
    let txn = db.begin().await?;
    super::credits::consume_credit(&txn, viewer.user_id, viewer.plan).await?;
    let project = super::project::find_project(&txn, viewer, project_id).await?;
    if !super::run::active_run_ids(&txn, project.id)
        .await?
        .is_empty()
    {
        return Err(AppError::Conflict(
            "a generation is already running for this project; wait for it or cancel it".to_owned(),
        ));
    }
    super::run::ensure_run_slot(&txn, viewer.user_id, limits).await?;
    let generation = queue_generation(&txn, project.id, content).await?;
    txn.commit().await?;
    generation.announce(bus).await;
    Ok((project, generation))
}

/// A page of each project's messages, oldest first, in one statement. Callers pass projects
/// the viewer may see.
pub async fn list_message_pages(
    db: &impl ConnectionTrait,
    project_ids: &[Uuid],
    page: PageRequest,
) -> AppResult<HashMap<Uuid, Page<message::Model>>> {
    let mut select = message::Entity::find()
        .filter(message::Column::ProjectId.is_in(project_ids.iter().copied()));
    if let Some(after) = page.after {
        select = select.filter(message::Column::Id.gt(after));
    }
    // One row past the page says whether there is more. Ids are UUIDv7: time order.
    let statement = page_per_group(
        db,
        select,
        message::Column::ProjectId,
        message::Column::Id,
        0,
        page.first + 1,
    );
    let mut rows: HashMap<Uuid, Vec<message::Model>> = HashMap::new();
    for row in message::Entity::find()
        .from_raw_sql(statement)
        .all(db)
        .await?
    {
        rows.entry(row.project_id).or_default().push(row);
    }
    Ok(project_ids
        .iter()
        .map(|id| {
            let overfetched = rows.remove(id).unwrap_or_default();
            (*id, Page::from_overfetch(overfetched, page.first))
        })
        .collect())
}
