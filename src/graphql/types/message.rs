use async_graphql::dataloader::DataLoader;
use async_graphql::{ComplexObject, Context, Enum, SimpleObject, ID};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{to_id, Fragment, Run};
use crate::entity::message;
use crate::graphql::loaders::{FragmentByMessage, RunById};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum MessageRole {
    User,
    Assistant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum MessageType {
    Result,
    Error,
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Message {
    pub id: ID,
    pub role: MessageRole,
    #[graphql(name = "type")]
    pub message_type: MessageType,
    pub content: String,
    pub created_at: DateTime<Utc>,
    #[graphql(skip)]
    pub uuid: Uuid,
    #[graphql(skip)]
    pub run_id: Option<Uuid>,
}

impl From<message::Model> for Message {
    fn from(model: message::Model) -> Self {
        Self {
            id: to_id(model.id),
            uuid: model.id,
            run_id: model.run_id,
            role: match model.role {
                message::Role::User => MessageRole::User,
                message::Role::Assistant => MessageRole::Assistant,
            },
            message_type: match model.message_type {
                message::MessageType::Result => MessageType::Result,
                message::MessageType::Error => MessageType::Error,
            },
            content: model.content,
            created_at: model.created_at,
        }
    }
}

#[ComplexObject]
impl Message {
    /// The generated app of an ASSISTANT result.
    async fn fragment(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Fragment>> {
        Ok(ctx
            .data_unchecked::<DataLoader<FragmentByMessage>>()
            .load_one(self.uuid)
            .await?
            .map(Fragment::from))
    }

    /// The run this message started (USER) or that produced it (ASSISTANT).
    async fn run(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Run>> {
        let Some(run_id) = self.run_id else {
            return Ok(None);
        };
        Ok(ctx
            .data_unchecked::<DataLoader<RunById>>()
            .load_one(run_id)
            .await?
            .map(Run::from))
    }
}
