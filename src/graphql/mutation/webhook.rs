use async_graphql::{Context, MaybeUndefined, Object, ID};

use crate::error::AppError;
use crate::events::EventKind;
use crate::graphql::context::ContextExt;
use crate::graphql::error::GqlResult;
use crate::graphql::types::{parse_id, CreatedWebhook, RunEventKind, Webhook, WebhookDelivery};
use crate::services::access::Permission;
use crate::services::webhook::{self, WebhookChange};
use crate::webhook::target::TargetPolicy;
use crate::webhook::{parse_message_id, EventKinds};

#[derive(Default)]
pub struct WebhookMutation;

fn event_kinds(events: Vec<RunEventKind>) -> EventKinds {
    EventKinds::new(events.into_iter().map(EventKind::from))
}

fn policy(ctx: &Context<'_>) -> TargetPolicy {
    TargetPolicy {
        allow_private: ctx.state().config.webhook_allow_private,
    }
}

#[Object]
impl WebhookMutation {
    /// Creates a webhook: `events` of the viewer's projects (or of `projectId` only) are POSTed
    /// to `url`, signed with the returned secret (shown this once). Sessions only.
    async fn create_webhook(
        &self,
        ctx: &Context<'_>,
        url: String,
        events: Vec<RunEventKind>,
        project_id: Option<ID>,
    ) -> async_graphql::Result<CreatedWebhook> {
        let viewer = ctx.viewer(Permission::Account)?;
        let state = ctx.state();
        let project_id = project_id
            .map(|id| parse_id(&id, "project"))
            .transpose()
            .gql()?;
        let (created, secret) = webhook::create_webhook(
            &state.db,
            policy(ctx),
            viewer.user_id,
            &url,
            event_kinds(events),
            project_id,
            state.config.webhooks_max_per_user,
        )
        .await
        .gql()?;
        Ok(CreatedWebhook {
            secret: secret.expose().to_owned(),
            webhook: created.into(),
        })
    }

    /// Changes a webhook; omitted arguments stay as they are (`projectId: null`: every
    /// project). `enabled: true` turns a disabled webhook on again.
    async fn update_webhook(
        &self,
        ctx: &Context<'_>,
        id: ID,
        url: Option<String>,
        events: Option<Vec<RunEventKind>>,
        project_id: MaybeUndefined<ID>,
        enabled: Option<bool>,
    ) -> async_graphql::Result<Webhook> {
        let viewer = ctx.viewer(Permission::Account)?;
        let id = parse_id(&id, "webhook").gql()?;
        let project_id = match project_id {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(id) => Some(Some(parse_id(&id, "project").gql()?)),
        };
        let change = WebhookChange {
            url,
            events: events.map(event_kinds),
            project_id,
            enabled,
        };
        let updated =
            webhook::update_webhook(&ctx.state().db, policy(ctx), viewer.user_id, id, change)
                .await
                .gql()?;
        Ok(updated.into())
    }

    /// Deletes a webhook and its deliveries.
    async fn delete_webhook(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Webhook> {
        let viewer = ctx.viewer(Permission::Account)?;
        let id = parse_id(&id, "webhook").gql()?;
        let deleted = webhook::delete_webhook(&ctx.state().db, viewer.user_id, id)
            .await
            .gql()?;
        Ok(deleted.into())
    }

    /// Sends a finished delivery again (same `webhook-id`, a fresh retry schedule).
    async fn redeliver_webhook_delivery(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<WebhookDelivery> {
        let viewer = ctx.viewer(Permission::Account)?;
        let id = parse_message_id(id.as_str())
            .ok_or_else(|| AppError::bad_input("invalid webhook delivery id"))
            .gql()?;
        let delivery = webhook::redeliver(&ctx.state().db, viewer.user_id, id)
            .await
            .gql()?;
        Ok(delivery.into())
    }
}
