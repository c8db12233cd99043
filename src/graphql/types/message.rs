use async_graphql::{ComplexObject, Context, Enum, SimpleObject, ID};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{to_id, Fragment, Run};
use crate::entity::{fragment, message};
use crate::graphql::context::ContextExt;
use crate::graphql::loaders::{FragmentByMessage, LoadedMessage, LoadedRun, RunById};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::entity::message::Role")]
pub enum MessageRole {
    User,
    Assistant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::entity::message::MessageType")]
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
    /// Relations loaded together with the message (see `MessagesByProject`).
    #[graphql(skip)]
    pub preloaded_fragment: Option<Option<fragment::Model>>,
    #[graphql(skip)]
    pub preloaded_run: Option<Option<LoadedRun>>,
}

impl From<LoadedMessage> for Message {
    fn from(loaded: LoadedMessage) -> Self {
        Self {
            preloaded_fragment: loaded.fragment,
            preloaded_run: loaded.run,
            ..loaded.message.into()
        }
    }
}

impl From<message::Model> for Message {
    fn from(model: message::Model) -> Self {
        Self {
            id: to_id(model.id),
            uuid: model.id,
            run_id: model.run_id,
            role: model.role.into(),
            message_type: model.message_type.into(),
            content: model.content,
            created_at: model.created_at,
            preloaded_fragment: None,
            preloaded_run: None,
        }
    }
}

#[ComplexObject]
impl Message {
    /// The generated app of an ASSISTANT result.
    async fn fragment(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Fragment>> {
        if let Some(preloaded) = &self.preloaded_fragment {
            return Ok(preloaded.clone().map(Fragment::from));
        }
        Ok(ctx
            .loader::<FragmentByMessage>()
            .load_one(self.uuid)
            .await?
            .map(Fragment::from))
    }

    /// The run this message started (USER) or that produced it (ASSISTANT).
    async fn run(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Run>> {
        if let Some(preloaded) = &self.preloaded_run {
            return Ok(preloaded.clone().map(Run::from));
        }
        let Some(run_id) = self.run_id else {
            return Ok(None);
        };
        Ok(ctx
            .loader::<RunById>()
            .load_one(run_id)
            .await?
            .map(Run::from))
    }
}
