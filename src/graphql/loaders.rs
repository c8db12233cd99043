//! DataLoaders for every parent → child edge. Keys come from parents the viewer was already
//! allowed to see, and a fresh set is made per request.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::entity::{fragment, message, run, run_event};
use crate::error::{AppError, AppResult};
use crate::sandbox::FileMap;
use crate::services::fragment::{file_contents, file_entries, files_by_fragment, FileEntry};
use crate::services::message::list_message_pages;
use crate::services::page::{page_size, Page, PageRequest, MAX_PAGE};
use crate::services::run::{list_run_events, list_transcripts};
use crate::services::version_diff::{diff_versions, FileDiff};

fn db_error(err: sea_orm::DbErr) -> Arc<String> {
    tracing::error!(%err, "loader query failed");
    Arc::new("internal error".to_owned())
}

fn service_error(err: AppError) -> Arc<String> {
    tracing::error!(%err, "loader query failed");
    Arc::new("internal error".to_owned())
}

/// What to load along with a project's messages, from the fields the query selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MessageRelations {
    pub fragment: bool,
    pub run: bool,
    /// The page of each run's events and transcript, when the query selects them once.
    pub run_events: Option<EventsPage>,
    pub run_transcript: Option<TranscriptPage>,
}

/// A message with the relations its query asked for, loaded in the same batch.
#[derive(Debug, Clone)]
pub struct LoadedMessage {
    pub message: message::Model,
    /// `Some` when loaded with the message (the value itself may be absent).
    pub fragment: Option<Option<fragment::Model>>,
    pub run: Option<Option<LoadedRun>>,
}

/// A run with the pages of its events and transcript the query asked for, when loaded with it.
#[derive(Debug, Clone)]
pub struct LoadedRun {
    pub run: run::Model,
    pub events: Option<(EventsPage, Vec<run_event::Model>)>,
    pub transcript: Option<(TranscriptPage, Vec<serde_json::Value>)>,
}

/// A page of a project's messages, with the relations its query selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessagePageKey {
    pub project_id: Uuid,
    pub page: PageRequest,
    pub relations: MessageRelations,
}

/// Pages of messages: one statement per distinct page request (one for a list of projects),
/// plus one for the fragments and one for the runs when the query selects them. Loading
/// those here rather than through their own loaders keeps a whole
/// `projects { messages { fragment run } }` query at a fixed number of statements, however
/// the resolvers' wake-ups are scheduled. Keys name projects the viewer may see.
pub async fn load_message_pages(
    db: &DatabaseConnection,
    keys: &[MessagePageKey],
) -> AppResult<HashMap<MessagePageKey, Page<LoadedMessage>>> {
    let mut projects_by_page: HashMap<PageRequest, Vec<Uuid>> = HashMap::new();
    for key in keys {
        projects_by_page
            .entry(key.page)
            .or_default()
            .push(key.project_id);
    }
    let mut pages: HashMap<(Uuid, PageRequest), Page<message::Model>> = HashMap::new();
    for (page, project_ids) in projects_by_page {
        let found = list_message_pages(db, &project_ids, page).await?;
        pages.extend(found.into_iter().map(|(id, found)| ((id, page), found)));
    }
    let messages = || pages.values().flat_map(|page| &page.items);
    let wants = |pick: fn(&MessageRelations) -> bool| keys.iter().any(|key| pick(&key.relations));
    let mut fragments: HashMap<Uuid, fragment::Model> = HashMap::new();
    if wants(|r| r.fragment) {
        fragments = fragment::Entity::find()
            .filter(fragment::Column::MessageId.is_in(messages().map(|m| m.id)))
            .all(db)
            .await?
            .into_iter()
            .map(|f| (f.message_id, f))
            .collect();
    }
    let mut runs: HashMap<Uuid, run::Model> = HashMap::new();
    if wants(|r| r.run) {
        runs = run::Entity::find()
            .filter(run::Column::Id.is_in(messages().filter_map(|m| m.run_id)))
            .all(db)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
    }
    let run_ids: Vec<Uuid> = runs.keys().copied().collect();
    let mut events: HashMap<(Uuid, EventsPage), Vec<run_event::Model>> = HashMap::new();
    let events_pages: HashSet<EventsPage> =
        keys.iter().filter_map(|k| k.relations.run_events).collect();
    for page in events_pages {
        let found = list_run_events(db, &run_ids, page.after, page.first).await?;
        events.extend(found.into_iter().map(|(id, rows)| ((id, page), rows)));
    }
    let mut transcripts: HashMap<(Uuid, TranscriptPage), Vec<serde_json::Value>> = HashMap::new();
    let transcript_pages: HashSet<TranscriptPage> = keys
        .iter()
        .filter_map(|k| k.relations.run_transcript)
        .collect();
    for page in transcript_pages {
        let found = list_transcripts(db, &run_ids, page.first, page.skip).await?;
        transcripts.extend(found.into_iter().map(|(id, rows)| ((id, page), rows)));
    }
    let loaded_run = |relations: MessageRelations, run: &run::Model| LoadedRun {
        run: run.clone(),
        events: relations.run_events.map(|page| {
            let rows = events.get(&(run.id, page)).cloned().unwrap_or_default();
            (page, rows)
        }),
        transcript: relations.run_transcript.map(|page| {
            let rows = transcripts
                .get(&(run.id, page))
                .cloned()
                .unwrap_or_default();
            (page, rows)
        }),
    };
    Ok(keys
        .iter()
        .map(|key| {
            let Some(page) = pages.get(&(key.project_id, key.page)) else {
                return (*key, Page::from_overfetch(Vec::new(), key.page.first));
            };
            let loaded = page
                .items
                .iter()
                .map(|m| LoadedMessage {
                    message: m.clone(),
                    fragment: key
                        .relations
                        .fragment
                        .then(|| fragments.get(&m.id).cloned()),
                    run: key.relations.run.then(|| {
                        let run = m.run_id.and_then(|id| runs.get(&id));
                        run.map(|run| loaded_run(key.relations, run))
                    }),
                })
                .collect();
            let page = Page {
                items: loaded,
                has_next_page: page.has_next_page,
            };
            (*key, page)
        })
        .collect())
}

/// Pages of messages for resolvers that ask one project at a time (see [`load_message_pages`]).
pub struct MessagesByProject(pub DatabaseConnection);

impl Loader<MessagePageKey> for MessagesByProject {
    type Value = Page<LoadedMessage>;
    type Error = Arc<String>;

    async fn load(
        &self,
        keys: &[MessagePageKey],
    ) -> Result<HashMap<MessagePageKey, Self::Value>, Self::Error> {
        load_message_pages(&self.0, keys)
            .await
            .map_err(service_error)
    }
}

/// The fragment of each message (keyed by message id).
pub struct FragmentByMessage(pub DatabaseConnection);

impl Loader<Uuid> for FragmentByMessage {
    type Value = fragment::Model;
    type Error = Arc<String>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let rows = fragment::Entity::find()
            .filter(fragment::Column::MessageId.is_in(keys.iter().copied()))
            .all(&self.0)
            .await
            .map_err(db_error)?;
        Ok(rows.into_iter().map(|row| (row.message_id, row)).collect())
    }
}

pub struct RunById(pub DatabaseConnection);

impl Loader<Uuid> for RunById {
    type Value = run::Model;
    type Error = Arc<String>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let rows = run::Entity::find()
            .filter(run::Column::Id.is_in(keys.iter().copied()))
            .all(&self.0)
            .await
            .map_err(db_error)?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }
}

/// Every file of each fragment, with contents (keyed by fragment id).
pub struct FilesByFragment(pub DatabaseConnection);

impl Loader<Uuid> for FilesByFragment {
    type Value = FileMap;
    type Error = Arc<String>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        files_by_fragment(&self.0, keys)
            .await
            .map_err(service_error)
    }
}

/// The manifest of each fragment, without contents (keyed by fragment id).
pub struct FileEntriesByFragment(pub DatabaseConnection);

impl Loader<Uuid> for FileEntriesByFragment {
    type Value = Vec<FileEntry>;
    type Error = Arc<String>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        file_entries(&self.0, keys).await.map_err(service_error)
    }
}

/// Single files' contents, keyed by (fragment id, path).
pub struct FileByPath(pub DatabaseConnection);

impl Loader<(Uuid, String)> for FileByPath {
    type Value = String;
    type Error = Arc<String>;

    async fn load(
        &self,
        keys: &[(Uuid, String)],
    ) -> Result<HashMap<(Uuid, String), Self::Value>, Self::Error> {
        file_contents(&self.0, keys).await.map_err(service_error)
    }
}

/// What changed between two versions, for the viewer named in the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DiffKey {
    pub viewer_id: Uuid,
    pub fragment_id: Uuid,
    pub against: Uuid,
}

/// Diffs of versions, absent when a version is not the viewer's.
pub struct DiffByVersions(pub DatabaseConnection);

impl Loader<DiffKey> for DiffByVersions {
    type Value = Vec<FileDiff>;
    type Error = Arc<String>;

    async fn load(&self, keys: &[DiffKey]) -> Result<HashMap<DiffKey, Self::Value>, Self::Error> {
        // One viewer per request in practice; grouped so that one never sees another's.
        let mut by_viewer: HashMap<Uuid, Vec<(Uuid, Uuid)>> = HashMap::new();
        for key in keys {
            by_viewer
                .entry(key.viewer_id)
                .or_default()
                .push((key.fragment_id, key.against));
        }
        let mut diffs = HashMap::new();
        for (viewer_id, pairs) in by_viewer {
            let found = diff_versions(&self.0, viewer_id, &pairs)
                .await
                .map_err(service_error)?;
            diffs.extend(found.into_iter().map(|((fragment_id, against), diff)| {
                let key = DiffKey {
                    viewer_id,
                    fragment_id,
                    against,
                };
                (key, diff)
            }));
        }
        Ok(diffs)
    }
}

/// The parents of `keys` (`(parent id, page)`), grouped by the page they ask for: a list that
/// asks the same page of every parent is one group, so one statement.
fn parents_by_page<P: Copy + Eq + std::hash::Hash>(keys: &[(Uuid, P)]) -> HashMap<P, Vec<Uuid>> {
    let mut groups: HashMap<P, Vec<Uuid>> = HashMap::new();
    for (parent_id, page) in keys {
        groups.entry(*page).or_default().push(*parent_id);
    }
    groups
}

/// Most events `Run.events` returns at once.
pub const MAX_EVENTS: i32 = 1000;
/// Events `Run.events` returns when not told.
pub const DEFAULT_EVENTS: i32 = 500;

/// Which events of a run: `first` after the sequence number `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventsPage {
    pub after: i64,
    pub first: u64,
}

impl EventsPage {
    pub fn parse(after: Option<i64>, first: i32) -> AppResult<Self> {
        if !(0..=MAX_EVENTS).contains(&first) {
            return Err(AppError::bad_input(format!(
                "`first` must be between 0 and {MAX_EVENTS}"
            )));
        }
        Ok(Self {
            after: after.unwrap_or(0),
            first: first as u64,
        })
    }
}

/// Stored events of each run, keyed by (run id, page).
pub struct EventsByRun(pub DatabaseConnection);

impl Loader<(Uuid, EventsPage)> for EventsByRun {
    type Value = Vec<run_event::Model>;
    type Error = Arc<String>;

    async fn load(
        &self,
        keys: &[(Uuid, EventsPage)],
    ) -> Result<HashMap<(Uuid, EventsPage), Self::Value>, Self::Error> {
        let mut found = HashMap::new();
        for (page, run_ids) in parents_by_page(keys) {
            let events = list_run_events(&self.0, &run_ids, page.after, page.first)
                .await
                .map_err(service_error)?;
            found.extend(events.into_iter().map(|(id, rows)| ((id, page), rows)));
        }
        Ok(found)
    }
}

/// Which model responses of a run: `first` after skipping `skip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TranscriptPage {
    pub first: u64,
    pub skip: u64,
}

impl TranscriptPage {
    /// `first` defaults to the largest page; `after` is how many responses to skip.
    pub fn parse(first: Option<i32>, after: i32) -> AppResult<Self> {
        Ok(Self {
            first: page_size(first, MAX_PAGE)?,
            skip: u64::try_from(after)
                .map_err(|_| AppError::bad_input("`after` must not be negative"))?,
        })
    }
}

/// Model responses of each run, keyed by (run id, page).
pub struct TranscriptByRun(pub DatabaseConnection);

impl Loader<(Uuid, TranscriptPage)> for TranscriptByRun {
    type Value = Vec<serde_json::Value>;
    type Error = Arc<String>;

    async fn load(
        &self,
        keys: &[(Uuid, TranscriptPage)],
    ) -> Result<HashMap<(Uuid, TranscriptPage), Self::Value>, Self::Error> {
        let mut found = HashMap::new();
        for (page, run_ids) in parents_by_page(keys) {
            let responses = list_transcripts(&self.0, &run_ids, page.first, page.skip)
                .await
                .map_err(service_error)?;
            found.extend(responses.into_iter().map(|(id, rows)| ((id, page), rows)));
        }
        Ok(found)
    }
}
