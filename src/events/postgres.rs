use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::bus::{BusMessage, EventBus, InProcessBus};

const CHANNEL: &str = "codekraft_bus";

/// Several server processes on one PostgreSQL database: messages go out with `NOTIFY` and come
/// back to every process (this one included) through `LISTEN`.
pub struct PostgresBus {
    pool: PgPool,
    local: InProcessBus,
}

impl PostgresBus {
    /// Starts listening; the listener task ends with `shutdown`.
    pub async fn start(pool: PgPool, shutdown: CancellationToken) -> Result<Self, sqlx::Error> {
        let bus = Self {
            pool: pool.clone(),
            local: InProcessBus::new(),
        };
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        let sender = bus.local.sender().clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    received = listener.try_recv() => match received {
                        Ok(Some(notification)) => {
                            match serde_json::from_str::<BusMessage>(notification.payload()) {
                                Ok(message) => { let _ = sender.send(message); }
                                Err(err) => tracing::warn!(%err, "ignoring a malformed bus message"),
                            }
                        }
                        // The connection dropped and was re-established: notifications may have
                        // been lost, so wake every subscriber up to re-read.
                        Ok(None) => {
                            let _ = sender.send(BusMessage::Resync);
                            tracing::warn!("event listener reconnected");
                        }
                        Err(err) => {
                            tracing::warn!(%err, "event listener failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        });
        Ok(bus)
    }
}

#[async_trait]
impl EventBus for PostgresBus {
    async fn publish(&self, message: BusMessage) {
        let payload = serde_json::to_string(&message).expect("bus messages serialise");
        if let Err(err) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await
        {
            // Subscribers still catch up on their next wake-up; workers also poll.
            tracing::warn!(%err, "could not publish a bus message");
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<BusMessage> {
        self.local.subscribe()
    }
}
