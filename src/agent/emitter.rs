//! Publishes a run's events in order without making the caller wait: events go through a
//! channel to one task that stores each (with its sequence number) and wakes subscribers.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::events::{record_event, BusMessage, EventBus, EventKind};

enum Command {
    Event(EventKind, Value),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Emitter {
    sender: mpsc::UnboundedSender<Command>,
}

impl Emitter {
    pub fn start(
        db: DatabaseConnection,
        bus: Arc<dyn EventBus>,
        project_id: Uuid,
        run_id: Uuid,
    ) -> Self {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(command) = receiver.recv().await {
                match command {
                    Command::Event(kind, payload) => {
                        match record_event(&db, project_id, run_id, kind, payload).await {
                            Ok(_) => bus.publish(BusMessage::ProjectEvents(project_id)).await,
                            Err(err) => {
                                tracing::warn!(%err, ?kind, %run_id, "could not store a run event")
                            }
                        }
                    }
                    Command::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Self { sender }
    }

    pub fn emit(&self, kind: EventKind, payload: Value) {
        // The task only ends when every sender is gone, so this cannot fail while we hold one.
        let _ = self.sender.send(Command::Event(kind, payload));
    }

    /// Waits until every event emitted so far is stored.
    pub async fn flush(&self) {
        let (done, stored) = oneshot::channel();
        if self.sender.send(Command::Flush(done)).is_ok() {
            let _ = stored.await;
        }
    }
}
