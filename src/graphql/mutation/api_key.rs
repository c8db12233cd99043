use async_graphql::{Context, Object, ID};
use chrono::{DateTime, Utc};

use crate::graphql::context::ContextExt;
use crate::graphql::error::GqlResult;
use crate::graphql::types::{parse_id, ApiKey, ApiKeyScope, CreatedApiKey};
use crate::services::access::{Credential, Permission, Scope, ScopeSet};
use crate::services::api_key;

#[derive(Default)]
pub struct ApiKeyMutation;

#[Object]
impl ApiKeyMutation {
    /// Creates an API key for third parties. The secret is in the answer only: keep it then.
    /// Sessions only: no API key can create keys.
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        name: String,
        scopes: Vec<ApiKeyScope>,
        expires_at: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<CreatedApiKey> {
        let viewer = ctx.viewer(Permission::Account)?;
        let state = ctx.state();
        let scopes: ScopeSet = scopes.into_iter().map(Scope::from).collect();
        let (key, secret) = api_key::create_api_key(
            &state.db,
            viewer.user_id,
            &name,
            scopes,
            expires_at,
            state.config.api_keys_max_per_user,
        )
        .await
        .gql()?;
        Ok(CreatedApiKey {
            secret: secret.expose().to_owned(),
            api_key: key.into(),
        })
    }

    /// Revokes an API key at once: it is refused from now on, and its open WebSockets and SSE
    /// streams close.
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ApiKey> {
        let viewer = ctx.viewer(Permission::Account)?;
        let state = ctx.state();
        let id = parse_id(&id, "API key").gql()?;
        let key = api_key::revoke_api_key(&state.db, viewer.user_id, id)
            .await
            .gql()?;
        state.sockets.end(Credential::ApiKey(key.id));
        Ok(key.into())
    }
}
