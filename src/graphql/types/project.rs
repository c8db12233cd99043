use async_graphql::connection::{Connection, Edge};
use std::collections::HashMap;

use async_graphql::{ComplexObject, Context, Lookahead, SimpleObject, ID};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{to_id, Message};
use crate::entity::project;
use crate::graphql::context::ContextExt;
use crate::graphql::error::GqlResult;
use crate::graphql::limits;
use crate::graphql::loaders::{
    load_message_pages, EventsPage, LoadedMessage, MessagePageKey, MessageRelations,
    MessagesByProject, TranscriptPage, DEFAULT_EVENTS,
};
use crate::graphql::lookahead::Arguments;
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
    /// A page of its messages, when the parent list loaded them for the whole page at once.
    #[graphql(skip)]
    pub preloaded_messages: Option<(MessagePageKey, Page<LoadedMessage>)>,
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
        let key = MessagePageKey {
            project_id: self.uuid,
            page: PageRequest::parse(first, after.as_deref()).gql()?,
            relations: message_relations(ctx.look_ahead()),
        };
        let page = match &self.preloaded_messages {
            Some((preloaded_key, page)) if *preloaded_key == key => page.clone(),
            _ => ctx
                .loader::<MessagesByProject>()
                .load_one(key)
                .await?
                .unwrap_or_else(|| Page::from_overfetch(Vec::new(), key.page.first)),
        };
        Ok(message_connection(page, key.page.after.is_some()))
    }
}

/// Which relations a `messages` selection asks for.
fn message_relations(messages: Lookahead<'_>) -> MessageRelations {
    let node = messages.field("edges").field("node");
    let run = node.field("run");
    MessageRelations {
        fragment: node.field("fragment").exists(),
        run: run.exists(),
        run_events: Arguments::of(&run.field("events")).and_then(|args| {
            let first = args.int32("first").ok()?.unwrap_or(DEFAULT_EVENTS);
            EventsPage::parse(args.int("after").ok()?, first).ok()
        }),
        run_transcript: Arguments::of(&run.field("transcript")).and_then(|args| {
            let after = args.int32("after").ok()?.unwrap_or(0);
            TranscriptPage::parse(args.int32("first").ok()?, after).ok()
        }),
    }
}

/// The page of messages every project of a list asks for, when the query selects `messages`
/// once. A bad argument is left for the resolver to report.
fn wanted_message_page(ctx: &Context<'_>) -> Option<(PageRequest, MessageRelations)> {
    let messages = ctx
        .look_ahead()
        .field("edges")
        .field("node")
        .field("messages");
    let args = Arguments::of(&messages)?;
    let page = PageRequest::parse(args.int32("first").ok()?, args.string("after").ok()?).ok()?;
    Some((page, message_relations(messages)))
}

/// A page of projects. When the query selects their messages, those are loaded for the whole
/// page here, in one call and without a loader's wait, rather than by each project's
/// resolver (whose loads could land in several batches), so the statement count does not
/// grow with the page size.
pub async fn project_page(
    ctx: &Context<'_>,
    page: Page<project::Model>,
    has_previous_page: bool,
) -> async_graphql::Result<Connection<String, Project>> {
    let wanted = wanted_message_page(ctx);
    let key = |project_id| {
        wanted.map(|(page, relations)| MessagePageKey {
            project_id,
            page,
            relations,
        })
    };
    let keys: Vec<MessagePageKey> = page.items.iter().filter_map(|p| key(p.id)).collect();
    let mut preloaded = HashMap::new();
    if !keys.is_empty() {
        preloaded = load_message_pages(&ctx.state().db, &keys).await.gql()?;
    }
    let mut connection = Connection::new(has_previous_page, page.has_next_page);
    connection.edges.extend(page.items.into_iter().map(|model| {
        let cursor = encode_cursor(model.id);
        let mut project = Project::from(model);
        project.preloaded_messages = key(project.uuid).and_then(|k| preloaded.remove_entry(&k));
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
