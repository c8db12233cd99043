use async_graphql::connection::{Connection, Edge};
use async_graphql::dataloader::DataLoader;
use async_graphql::{ComplexObject, Context, SimpleObject, ID};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{to_id, Message};
use crate::entity::project;
use crate::graphql::error::GqlResult;
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
        }
    }
}

#[ComplexObject]
impl Project {
    /// The conversation, oldest first.
    async fn messages(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Message>> {
        let page = PageRequest::parse(first, after.as_deref()).gql()?;
        let node = ctx.look_ahead().field("edges").field("node");
        let relations = MessageRelations {
            fragment: node.field("fragment").exists(),
            run: node.field("run").exists(),
        };
        let all = ctx
            .data_unchecked::<DataLoader<MessagesByProject>>()
            .load_one((self.uuid, relations))
            .await?
            .unwrap_or_default();
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

pub fn project_connection(
    page: Page<project::Model>,
    has_previous_page: bool,
) -> Connection<String, Project> {
    let mut connection = Connection::new(has_previous_page, page.has_next_page);
    connection.edges.extend(
        page.items
            .into_iter()
            .map(|project| Edge::new(encode_cursor(project.id), Project::from(project))),
    );
    connection
}
