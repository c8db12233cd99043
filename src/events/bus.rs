use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

/// What travels on the bus: small wake-up calls, never the data itself (that is in the DB, and
/// each process reads it once: see `hub`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", content = "id")]
pub enum BusMessage {
    /// The project has new events.
    ProjectEvents(Uuid),
    /// A run was queued: idle workers should look for work.
    RunQueued,
    /// A run was asked to stop: whichever process executes it cancels it.
    CancelRun(Uuid),
    /// Wake-ups may have been lost (the listener reconnected): everyone re-reads.
    Resync,
}

/// Fans wake-up calls out to every subscriber, in this process or (PostgreSQL) in all of them.
#[async_trait]
pub trait EventBus: Send + Sync {
    async fn publish(&self, message: BusMessage);
    fn subscribe(&self) -> broadcast::Receiver<BusMessage>;
}

/// For a single server process (the SQLite default).
pub struct InProcessBus {
    sender: broadcast::Sender<BusMessage>,
}

impl InProcessBus {
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(1024).0,
        }
    }

    pub(super) fn sender(&self) -> &broadcast::Sender<BusMessage> {
        &self.sender
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, message: BusMessage) {
        // No subscriber is not an error: nobody is watching.
        let _ = self.sender.send(message);
    }

    fn subscribe(&self) -> broadcast::Receiver<BusMessage> {
        self.sender.subscribe()
    }
}

/// Waits until a run may have been queued: run events of other projects do not wake an idle
/// worker (they come by the dozen while a run streams). `false` when the bus is gone.
pub async fn wait_for_work(wakeups: &mut broadcast::Receiver<BusMessage>) -> bool {
    loop {
        match wakeups.recv().await {
            Ok(BusMessage::RunQueued | BusMessage::Resync) => return true,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(_)) => return true,
            Err(broadcast::error::RecvError::Closed) => return false,
        }
    }
}
