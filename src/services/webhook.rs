//! Webhooks of a user: create (the secret is shown once), list, change, delete, and their
//! deliveries. Only sessions manage them (see `access::Permission::Account`).

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};
use uuid::Uuid;

use super::page::{Page, PageRequest};
use crate::entity::webhook_delivery::{self, DeliveryStatus};
use crate::entity::{project, webhook};
use crate::error::{AppError, AppResult};
use crate::webhook::target::{TargetError, TargetPolicy};
use crate::webhook::{EventKinds, WebhookSecret};

impl From<TargetError> for AppError {
    fn from(err: TargetError) -> Self {
        AppError::bad_input(format!("webhook URL: {err}"))
    }
}

/// A change of a webhook; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct WebhookChange {
    pub url: Option<String>,
    pub events: Option<EventKinds>,
    /// `Some(None)`: every project of the user.
    pub project_id: Option<Option<Uuid>>,
    pub enabled: Option<bool>,
}

fn require_events(events: &EventKinds) -> AppResult<()> {
    if events.is_empty() {
        return Err(AppError::bad_input(
            "a webhook needs at least one event kind",
        ));
    }
    Ok(())
}

/// The project filter must name one of the user's projects.
async fn require_project(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    project_id: Option<Uuid>,
) -> AppResult<()> {
    if let Some(project_id) = project_id {
        project::find_for_owner(user_id, project_id)
            .one(db)
            .await?
            .ok_or(AppError::NotFound("project"))?;
    }
    Ok(())
}

/// Creates a webhook of `user_id`; returns it with its secret (never shown again).
pub async fn create_webhook(
    db: &impl ConnectionTrait,
    policy: TargetPolicy,
    user_id: Uuid,
    url: &str,
    events: EventKinds,
    project_id: Option<Uuid>,
    max_per_user: u32,
) -> AppResult<(webhook::Model, WebhookSecret)> {
    require_events(&events)?;
    let url = policy.check_url(url).await?;
    require_project(db, user_id, project_id).await?;
    let existing = webhook::Entity::find()
        .filter(webhook::Column::UserId.eq(user_id))
        .count(db)
        .await?;
    if existing >= u64::from(max_per_user) {
        return Err(AppError::bad_input(format!(
            "you already have {max_per_user} webhooks, the most allowed; delete one first"
        )));
    }
    let secret = WebhookSecret::generate();
    let created = webhook::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        url: Set(url.to_string()),
        events: Set(events.to_stored()),
        project_id: Set(project_id),
        secret: Set(secret.expose().to_owned()),
        created_at: Set(Utc::now()),
        disabled_at: Set(None),
        failing_since: Set(None),
    }
    .insert(db)
    .await?;
    Ok((created, secret))
}

/// The webhooks of `user_id`, newest first (at most the cap).
pub async fn list_webhooks(
    db: &impl ConnectionTrait,
    user_id: Uuid,
) -> AppResult<Vec<webhook::Model>> {
    Ok(webhook::Entity::find()
        .filter(webhook::Column::UserId.eq(user_id))
        .order_by_desc(webhook::Column::Id)
        .all(db)
        .await?)
}

async fn find_webhook(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    webhook_id: Uuid,
) -> AppResult<webhook::Model> {
    webhook::find_for_owner(user_id, webhook_id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound("webhook"))
}

/// Changes a webhook of `user_id`. Enabling it again forgets its failures.
pub async fn update_webhook(
    db: &impl ConnectionTrait,
    policy: TargetPolicy,
    user_id: Uuid,
    webhook_id: Uuid,
    change: WebhookChange,
) -> AppResult<webhook::Model> {
    let found = find_webhook(db, user_id, webhook_id).await?;
    let mut active = found.clone().into_active_model();
    if let Some(url) = change.url {
        active.url = Set(policy.check_url(&url).await?.to_string());
    }
    if let Some(events) = change.events {
        require_events(&events)?;
        active.events = Set(events.to_stored());
    }
    if let Some(project_id) = change.project_id {
        require_project(db, user_id, project_id).await?;
        active.project_id = Set(project_id);
    }
    match change.enabled {
        Some(true) if found.disabled_at.is_some() => {
            active.disabled_at = Set(None);
            active.failing_since = Set(None);
        }
        Some(false) if found.disabled_at.is_none() => active.disabled_at = Set(Some(Utc::now())),
        _ => {}
    }
    Ok(active.update(db).await?)
}

/// Deletes a webhook of `user_id` with its deliveries.
pub async fn delete_webhook(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    webhook_id: Uuid,
) -> AppResult<webhook::Model> {
    let found = find_webhook(db, user_id, webhook_id).await?;
    webhook::Entity::delete_by_id(found.id).exec(db).await?;
    Ok(found)
}

/// A page of a webhook's deliveries, newest first. The caller loaded the webhook through
/// [`find_webhook`]'s owner scope (it is the parent field).
pub async fn list_deliveries(
    db: &impl ConnectionTrait,
    webhook: &webhook::Model,
    page: PageRequest,
) -> AppResult<Page<webhook_delivery::Model>> {
    let mut query = webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::WebhookId.eq(webhook.id))
        .order_by_desc(webhook_delivery::Column::Id)
        .limit(page.first + 1);
    if let Some(after) = page.after {
        query = query.filter(webhook_delivery::Column::Id.lt(after));
    }
    Ok(Page::from_overfetch(query.all(db).await?, page.first))
}

/// Sends a delivery of one of `user_id`'s webhooks again, with the same `webhook-id` and a
/// fresh retry schedule.
pub async fn redeliver(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    delivery_id: Uuid,
) -> AppResult<webhook_delivery::Model> {
    let not_found = || AppError::NotFound("webhook delivery");
    let delivery = webhook_delivery::Entity::find_by_id(delivery_id)
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    let webhook = webhook::find_for_owner(user_id, delivery.webhook_id)
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    if webhook.disabled_at.is_some() {
        return Err(AppError::bad_input(
            "the webhook is disabled; enable it first",
        ));
    }
    if delivery.status == DeliveryStatus::Pending {
        return Err(AppError::Conflict(
            "the delivery is still being attempted".to_owned(),
        ));
    }
    webhook_delivery::Entity::update_many()
        .col_expr(
            webhook_delivery::Column::Status,
            Expr::value(DeliveryStatus::Pending),
        )
        .col_expr(webhook_delivery::Column::Attempts, Expr::value(0))
        .col_expr(
            webhook_delivery::Column::NextAttemptAt,
            Expr::value(Utc::now()),
        )
        .filter(webhook_delivery::Column::Id.eq(delivery.id))
        .filter(webhook_delivery::Column::Status.ne(DeliveryStatus::Pending))
        .exec(db)
        .await?;
    crate::webhook::delivery::wake_for_redelivery();
    webhook_delivery::Entity::find_by_id(delivery.id)
        .one(db)
        .await?
        .ok_or_else(not_found)
}
