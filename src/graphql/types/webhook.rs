use async_graphql::connection::{Connection, Edge};
use async_graphql::{ComplexObject, Context, Enum, SimpleObject, ID};
use chrono::{DateTime, Utc};

use super::event::RunEventKind;
use super::to_id;
use crate::entity::webhook;
use crate::entity::webhook_delivery::{self, DeliveryStatus};
use crate::events::EventKind;
use crate::graphql::context::ContextExt;
use crate::graphql::error::GqlResult;
use crate::graphql::limits;
use crate::services::page::{encode_cursor, PageRequest};
use crate::services::webhook as service;
use crate::webhook::{message_id, EventKinds};

/// An endpoint that receives the viewer's run events, signed (Standard Webhooks). Never shows
/// its secret.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Webhook {
    pub id: ID,
    pub url: String,
    pub events: Vec<RunEventKind>,
    /// Only this project's events; `null`: every project of the viewer.
    pub project_id: Option<ID>,
    /// False once disabled: by `updateWebhook`, an answer 410 Gone, or failing for days.
    pub enabled: bool,
    pub disabled_at: Option<DateTime<Utc>>,
    /// Since when every delivery attempt failed; `null` while it works.
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    #[graphql(skip)]
    model: webhook::Model,
}

impl From<webhook::Model> for Webhook {
    fn from(model: webhook::Model) -> Self {
        Self {
            id: to_id(model.id),
            url: model.url.clone(),
            events: EventKinds::from_stored(&model.events)
                .kinds()
                .iter()
                .map(|kind| RunEventKind::from(*kind))
                .collect(),
            project_id: model.project_id.map(to_id),
            enabled: model.disabled_at.is_none(),
            disabled_at: model.disabled_at,
            failing_since: model.failing_since,
            created_at: model.created_at,
            model,
        }
    }
}

#[ComplexObject]
impl Webhook {
    /// Its deliveries, newest first.
    #[graphql(complexity = "limits::page_cost(first, child_complexity)")]
    async fn deliveries(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, WebhookDelivery>> {
        let request = PageRequest::parse(first, after.as_deref()).gql()?;
        let page = service::list_deliveries(&ctx.state().db, &self.model, request)
            .await
            .gql()?;
        let mut connection = Connection::new(request.after.is_some(), page.has_next_page);
        connection.edges.extend(
            page.items
                .into_iter()
                .map(|delivery| Edge::new(encode_cursor(delivery.id), delivery.into())),
        );
        Ok(connection)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum WebhookDeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// The endpoint answered 2xx.
    Succeeded,
    /// Every attempt failed, or the webhook was disabled.
    Failed,
}

impl From<DeliveryStatus> for WebhookDeliveryStatus {
    fn from(status: DeliveryStatus) -> Self {
        match status {
            DeliveryStatus::Pending => Self::Pending,
            DeliveryStatus::Succeeded => Self::Succeeded,
            DeliveryStatus::Failed => Self::Failed,
        }
    }
}

/// One event sent to one webhook, attempted until the endpoint answers 2xx.
#[derive(SimpleObject)]
pub struct WebhookDelivery {
    /// The `webhook-id` header (`msg_…`), the same on every attempt.
    pub id: ID,
    pub event_kind: RunEventKind,
    pub status: WebhookDeliveryStatus,
    pub attempts: i32,
    /// The HTTP status of the last attempt; `null` before one, or when it got no answer.
    pub response_status: Option<i32>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<webhook_delivery::Model> for WebhookDelivery {
    fn from(model: webhook_delivery::Model) -> Self {
        // Rows are written from an `EventKind`; the fallback only guards hand-edited ones.
        let kind = EventKind::parse(&model.event_kind).unwrap_or(EventKind::RunQueued);
        Self {
            id: ID(message_id(model.id)),
            event_kind: kind.into(),
            status: model.status.into(),
            attempts: model.attempts,
            response_status: model.response_status,
            next_attempt_at: model.next_attempt_at,
            created_at: model.created_at,
        }
    }
}

#[derive(SimpleObject)]
pub struct CreatedWebhook {
    /// The signing secret (`whsec_…`), for verifying deliveries. Shown this once.
    pub secret: String,
    pub webhook: Webhook,
}
