use async_graphql::{Context, Object};

use crate::graphql::context::ContextExt;
use crate::graphql::error::GqlResult;
use crate::graphql::types::ApiKey;
use crate::services::access::Permission;
use crate::services::api_key;

#[derive(Default)]
pub struct ApiKeyQuery;

#[Object]
impl ApiKeyQuery {
    /// The viewer's API keys, newest first, without their secrets. Sessions only.
    async fn api_keys(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ApiKey>> {
        let viewer = ctx.viewer(Permission::Account)?;
        let keys = api_key::list_api_keys(&ctx.state().db, viewer.user_id)
            .await
            .gql()?;
        Ok(keys.into_iter().map(ApiKey::from).collect())
    }
}
