use async_graphql::{Enum, SimpleObject, ID};
use chrono::{DateTime, Utc};

use super::to_id;
use crate::entity::api_key;
use crate::services::access::{Scope, ScopeSet};

/// What an API key may do. Every key may read (queries and subscriptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum ApiKeyScope {
    /// Queries and subscriptions.
    Read,
    /// Also `createProject`, `sendMessage`, `cancelRun`, `retryRun`, `restoreFragment` and
    /// `openPreview`.
    Generate,
}

impl From<ApiKeyScope> for Scope {
    fn from(scope: ApiKeyScope) -> Self {
        match scope {
            ApiKeyScope::Read => Scope::Read,
            ApiKeyScope::Generate => Scope::Generate,
        }
    }
}

impl From<Scope> for ApiKeyScope {
    fn from(scope: Scope) -> Self {
        match scope {
            Scope::Read => ApiKeyScope::Read,
            Scope::Generate => ApiKeyScope::Generate,
        }
    }
}

/// An API key as lists show it: never its secret.
#[derive(SimpleObject)]
pub struct ApiKey {
    pub id: ID,
    pub name: String,
    /// The first characters of the secret, to tell keys apart.
    pub prefix: String,
    pub scopes: Vec<ApiKeyScope>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Within a minute: uses are not written one by one.
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<api_key::Model> for ApiKey {
    fn from(model: api_key::Model) -> Self {
        Self {
            id: to_id(model.id),
            name: model.name,
            prefix: model.prefix,
            scopes: ScopeSet::from_stored(&model.scopes)
                .scopes()
                .into_iter()
                .map(ApiKeyScope::from)
                .collect(),
            created_at: model.created_at,
            expires_at: model.expires_at,
            last_used_at: model.last_used_at,
            revoked_at: model.revoked_at,
        }
    }
}

#[derive(SimpleObject)]
pub struct CreatedApiKey {
    /// The key's secret, for `Authorization: Bearer …`. Shown this once: only its hash is kept.
    pub secret: String,
    pub api_key: ApiKey,
}
