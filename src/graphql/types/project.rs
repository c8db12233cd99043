use async_graphql::connection::{Connection, Edge};
use async_graphql::dataloader::DataLoader;
use async_graphql::{ComplexObject, Context, Lookahead, SimpleObject, ID};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{to_id, Message};
use crate::entity::project;
use crate::graphql::error::GqlResult;
use crate::graphql::limits;
use crate::graphql::loaders::{LoadedMessage, MessageRelations, MessagesByProject};
use crate::services::page::{encode_cursor, Page, PageRequest};

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Project {
    pub id: ID,
    pub name: String,
    /// The sandbox that runs this project's app, once a run has created one.
    pub sandbox_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[graphql(skip)]
    pub uuid: Uuid,
    /// All its messages, when the parent list loaded them for the whole page at once.
    #[graphql(skip)]
    pub preloaded_messages: Option<Vec<LoadedMessage>>,
}

impl From<project::Model> for Project {
    fn from(model: project::Model) -> Self {
        Self {
            id: to_id(model.id),
            uuid: model.id,
            name: model.name,
            sandbox_id: model.sandbox_id,
            created_at: model.created_at,
            updated_at: model.updated_at,
            preloaded_messages: None,
        }
    }
}

#[ComplexObject]
impl Project {
    /// The conversation, oldest first.
    #[graphql(complexity = "limits::page_cost(first, child_complexity)")]
    async fn messages(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Message>> {
        let page = PageRequest::parse(first, after.as_deref()).gql()?;
        let all = match &self.preloaded_messages {
            Some(preloaded) => preloaded.clone(),
            None => ctx
                .data_unchecked::<DataLoader<MessagesByProject>>()
                .load_one((self.uuid, message_relations(ctx.look_ahead())))
                .await?
                .unwrap_or_default(),
        };
        let rest: Vec<_> = all
            .into_iter()
            .filter(|loaded| page.after.is_none_or(|after| loaded.message.id > after))
            .take(page.first as usize + 1)
            .collect();
        Ok(message_connection(
            Page::from_overfetch(rest, page.first),
            page.after.is_some(),
        ))
    }
}

/// Which relations a `messages` selection asks for.
fn message_relations(messages: Lookahead<'_>) -> MessageRelations {
    let node = messages.field("edges").field("node");
    MessageRelations {
        fragment: node.field("fragment").exists(),
        run: node.field("run").exists(),
    }
}

/// A page of projects. When the query selects their messages, those are loaded for the whole
/// page in one batch here, rather than by each project's resolver (whose loads could land in
/// several batches), so the statement count does not grow with the page size.
pub async fn project_page(
    ctx: &Context<'_>,
    page: Page<project::Model>,
    has_previous_page: bool,
) -> async_graphql::Result<Connection<String, Project>> {
    let messages = ctx
        .look_ahead()
        .field("edges")
        .field("node")
        .field("messages");
    let wants_messages = messages.exists();
    let mut preloaded = if wants_messages {
        let relations = message_relations(messages);
        ctx.data_unchecked::<DataLoader<MessagesByProject>>()
            .load_many(page.items.iter().map(|project| (project.id, relations)))
            .await?
            .into_iter()
            .map(|((project_id, _), loaded)| (project_id, loaded))
            .collect()
    } else {
        std::collections::HashMap::new()
    };
    let mut connection = Connection::new(has_previous_page, page.has_next_page);
    connection.edges.extend(page.items.into_iter().map(|model| {
        let cursor = encode_cursor(model.id);
        let mut project = Project::from(model);
        if wants_messages {
            project.preloaded_messages = Some(preloaded.remove(&project.uuid).unwrap_or_default());
        }
        Edge::new(cursor, project)
    }));
    Ok(connection)
}

fn message_connection(
    page: Page<LoadedMessage>,
    has_previous_page: bool,
) -> Connection<String, Message> {
    let mut connection = Connection::new(has_previous_page, page.has_next_page);
    connection.edges.extend(
        page.items
            .into_iter()
            .map(|loaded| Edge::new(encode_cursor(loaded.message.id), Message::from(loaded))),
    );
    connection
}
