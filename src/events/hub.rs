//! Fan-out of stored events within one process. Each watched project has a feed: one task that,
//! when the bus says the project changed, reads the new rows once and broadcasts them to every
//! subscriber of that project in this process. A subscriber wakes only for its own project, and
//! the table is read once per batch per process, however many subscribers there are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder};
use sea_orm::{ConnectionTrait, QuerySelect};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use super::bus::{BusMessage, EventBus};
use super::StoredEvent;
use crate::entity::run_event;

/// Batches a feed keeps for a subscriber that falls behind; one that falls further behind
/// catches up from the table.
pub const DEFAULT_FEED_CAPACITY: usize = 256;

/// Rows read at once, by a feed and by a subscriber catching up.
pub(super) const PAGE: u64 = 200;

/// Consecutive events of one project, as stored: `events` directly follow sequence number
/// `after`, so a subscriber that has seen up to `after` misses nothing.
#[derive(Debug, Clone)]
pub struct EventBatch {
    pub after: i64,
    pub events: Arc<[Arc<StoredEvent>]>,
}

impl EventBatch {
    pub fn last_seq(&self) -> i64 {
        self.events.last().map_or(self.after, |event| event.row.seq)
    }
}

/// The feeds of this process, one per project somebody here watches.
pub struct EventHub {
    db: DatabaseConnection,
    capacity: usize,
    feeds: Mutex<HashMap<Uuid, Weak<Feed>>>,
}

/// A project's feed, alive while a subscriber holds it: dropping the last one stops its task.
struct Feed {
    sender: broadcast::Sender<EventBatch>,
    wake: Arc<Notify>,
    _stop: DropGuard,
}

/// A subscriber's end of a project's feed.
pub struct FeedReceiver {
    pub batches: broadcast::Receiver<EventBatch>,
    _feed: Arc<Feed>,
}

impl EventHub {
    pub fn new(db: DatabaseConnection, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            db,
            capacity: capacity.max(1),
            feeds: Mutex::new(HashMap::new()),
        })
    }

    /// Routes the bus's messages to the feeds until the bus closes or `shutdown`.
    pub fn start(self: &Arc<Self>, bus: &dyn EventBus, shutdown: CancellationToken) {
        let mut messages = bus.subscribe();
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => return,
                    message = messages.recv() => message,
                };
                let Some(hub) = hub.upgrade() else { return };
                match message {
                    Ok(BusMessage::ProjectEvents(project_id)) => hub.wake(Some(project_id)),
                    // Wake-ups may have been lost: every feed looks for rows it has not sent.
                    Ok(BusMessage::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        hub.wake(None)
                    }
                    Ok(BusMessage::RunQueued | BusMessage::CancelRun(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Joins `project_id`'s feed, starting it if nobody here watched the project. Batches sent
    /// from now on reach the receiver; earlier events are in the table.
    pub async fn subscribe(&self, project_id: Uuid) -> Result<FeedReceiver, DbErr> {
        if let Some(feed) = self.feed(project_id) {
            return Ok(FeedReceiver {
                batches: feed.sender.subscribe(),
                _feed: feed,
            });
        }
        // Read before taking the lock; a feed started meanwhile by another subscriber wins.
        let last_seq = max_seq(&self.db, project_id).await?;
        let mut feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(feed) = feeds.get(&project_id).and_then(Weak::upgrade) {
            return Ok(FeedReceiver {
                batches: feed.sender.subscribe(),
                _feed: feed,
            });
        }
        feeds.retain(|_, feed| feed.strong_count() > 0);
        let (sender, batches) = broadcast::channel(self.capacity);
        let stop = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        tokio::spawn(run_feed(
            self.db.clone(),
            project_id,
            last_seq,
            sender.clone(),
            wake.clone(),
            stop.clone(),
        ));
        let feed = Arc::new(Feed {
            sender,
            wake,
            _stop: stop.drop_guard(),
        });
        feeds.insert(project_id, Arc::downgrade(&feed));
        Ok(FeedReceiver {
            batches,
            _feed: feed,
        })
    }

    /// Projects with a feed in this process.
    pub fn watched_projects(&self) -> usize {
        let feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        feeds
            .values()
            .filter(|feed| feed.strong_count() > 0)
            .count()
    }

    fn feed(&self, project_id: Uuid) -> Option<Arc<Feed>> {
        let feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        feeds.get(&project_id).and_then(Weak::upgrade)
    }

    /// Tells the feed of `project_id` (every feed for `None`) to look for new rows. Nobody
    /// here watching the project costs nothing.
    fn wake(&self, project_id: Option<Uuid>) {
        let feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        let wake = |feed: &Weak<Feed>| {
            if let Some(feed) = feed.upgrade() {
                feed.wake.notify_one();
            }
        };
        match project_id {
            Some(project_id) => feeds.get(&project_id).into_iter().for_each(wake),
            None => feeds.values().for_each(wake),
        }
    }
}

/// Reads the rows after `last_seq` each time it is woken (wake-ups that come while it reads fold
/// into one more read) and broadcasts them, until the feed is dropped.
async fn run_feed(
    db: DatabaseConnection,
    project_id: Uuid,
    mut last_seq: i64,
    sender: broadcast::Sender<EventBatch>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = wake.notified() => {}
        }
        loop {
            let page = match rows_after(&db, project_id, None, last_seq).await {
                Ok(page) => page,
                Err(err) => {
                    // Subscribers still get these rows: the next wake-up reads again, and a
                    // subscriber that sees a jump in `seq` reads the table itself.
                    tracing::warn!(%err, %project_id, "reading new events failed");
                    break;
                }
            };
            if page.is_empty() {
                break;
            }
            let batch = EventBatch {
                after: last_seq,
                events: page
                    .into_iter()
                    .map(|row| Arc::new(StoredEvent::from(row)))
                    .collect(),
            };
            last_seq = batch.last_seq();
            let full = u64::try_from(batch.events.len()).is_ok_and(|len| len == PAGE);
            // No receiver left is fine: the feed stops once its last holder is gone.
            let _ = sender.send(batch);
            if !full {
                break;
            }
        }
    }
}

/// Events of `project_id` (of one run, if given) with `seq` above `after`, in order, a page at
/// most.
pub(super) async fn rows_after(
    db: &DatabaseConnection,
    project_id: Uuid,
    run_id: Option<Uuid>,
    after: i64,
) -> Result<Vec<run_event::Model>, DbErr> {
    let mut query = run_event::Entity::find()
        .filter(run_event::Column::ProjectId.eq(project_id))
        .filter(run_event::Column::Seq.gt(after))
        .order_by_asc(run_event::Column::Seq)
        .limit(PAGE);
    if let Some(run_id) = run_id {
        query = query.filter(run_event::Column::RunId.eq(run_id));
    }
    query.all(db).await
}

/// The highest sequence number of `project_id` (0 before its first event).
pub(super) async fn max_seq(db: &impl ConnectionTrait, project_id: Uuid) -> Result<i64, DbErr> {
    use sea_orm::sea_query::{Expr, Query};
    let statement = Query::select()
        .expr(Expr::col(run_event::Column::Seq).max())
        .from(run_event::Entity)
        .and_where(run_event::Column::ProjectId.eq(project_id))
        .to_owned();
    let row = db
        .query_one(db.get_database_backend().build(&statement))
        .await?;
    let max: Option<i64> = match row {
        Some(row) => row.try_get_by_index(0)?,
        None => None,
    };
    Ok(max.unwrap_or(0))
}
