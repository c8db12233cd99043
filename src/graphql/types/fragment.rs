use async_graphql::{SimpleObject, ID};
use chrono::{DateTime, Utc};

use super::to_id;
use crate::entity::fragment;

/// A generated app: where it runs and the files it is made of.
#[derive(SimpleObject)]
pub struct Fragment {
    pub id: ID,
    pub message_id: ID,
    pub sandbox_url: String,
    pub title: String,
    /// `{ "app/page.tsx": "…", … }`: every file written in the project so far.
    #[graphql(complexity = "crate::graphql::limits::FILES_COST")]
    pub files: async_graphql::Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

impl From<fragment::Model> for Fragment {
    fn from(model: fragment::Model) -> Self {
        Self {
            id: to_id(model.id),
            message_id: to_id(model.message_id),
            sandbox_url: model.sandbox_url,
            title: model.title,
            files: async_graphql::Json(model.files),
            created_at: model.created_at,
        }
    }
}
