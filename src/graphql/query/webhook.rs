use async_graphql::{Context, Object};

use crate::graphql::context::ContextExt;
use crate::graphql::error::GqlResult;
use crate::graphql::types::Webhook;
use crate::services::access::Permission;
use crate::services::webhook;

#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    /// The viewer's webhooks, newest first, without their secrets. Sessions only.
    async fn webhooks(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Webhook>> {
        let viewer = ctx.viewer(Permission::Account)?;
        let webhooks = webhook::list_webhooks(&ctx.state().db, viewer.user_id)
            .await
            .gql()?;
        Ok(webhooks.into_iter().map(Webhook::from).collect())
    }
}
