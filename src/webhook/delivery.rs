//! The delivery worker: claims due outbox rows under a lease (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL, so several processes send each attempt once), POSTs them signed, and records the
//! outcome: a 2xx ends the delivery, anything else schedules the next attempt of
//! [`RETRY_SCHEDULE`](super::RETRY_SCHEDULE) with the same `webhook-id`, and 410 Gone or an
//! endpoint failing for [`DISABLE_AFTER`](super::DISABLE_AFTER) disables the webhook.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, Statement, TransactionTrait,
};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::target::TargetPolicy;
use super::{message_id, signature, DISABLE_AFTER, RETRY_SCHEDULE};
use crate::config::Config;
use crate::entity::webhook;
use crate::entity::webhook_delivery::{self, DeliveryStatus};
use crate::events::outbox::enqueued_count;
use crate::events::{BusMessage, EventBus};

/// Redeliveries (written outside an event's transaction) wake the workers of this process.
static REDELIVERED: Notify = Notify::const_new();

/// Wakes this process's delivery worker: a delivery was queued again.
pub fn wake_for_redelivery() {
    REDELIVERED.notify_waiters();
}

/// While retries are pending the worker looks at least this often (their due times may change).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// With nothing pending here, it still looks this often: for rows of a server that died right
/// after writing them, and leases of a worker that died.
const IDLE_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// The shortest nap between claims, so a row that cannot be claimed yet never spins the loop.
const MIN_IDLE: Duration = Duration::from_millis(10);
/// After a wake-up, events that follow within this long are claimed together.
const COALESCE: Duration = Duration::from_millis(100);
/// Finished deliveries are kept this long (the list of a webhook's deliveries), then deleted.
const DELIVERY_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(30);
/// How often a worker deletes the deliveries past their retention.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// Deliveries one claim takes (sent concurrently).
const BATCH: u64 = 16;
/// How long a claimed delivery stays this worker's beyond the request timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy)]
pub struct DeliverySettings {
    pub timeout: Duration,
    pub policy: TargetPolicy,
    /// Multiplies the retry delays and `DISABLE_AFTER` (tests make them short).
    pub retry_scale: f64,
}

impl DeliverySettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            timeout: Duration::from_secs(config.webhook_timeout_secs),
            policy: TargetPolicy {
                allow_private: config.webhook_allow_private,
            },
            retry_scale: config.webhook_retry_scale,
        }
    }

    fn scaled(&self, delay: Duration) -> chrono::TimeDelta {
        let delay = delay.mul_f64(self.retry_scale);
        chrono::TimeDelta::from_std(delay).unwrap_or(chrono::TimeDelta::MAX)
    }

    fn lease(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.timeout + LEASE_MARGIN).unwrap_or(chrono::TimeDelta::MAX)
    }
}

/// Starts the worker of this process; it stops on `shutdown`.
pub fn start_delivery_worker(
    db: DatabaseConnection,
    bus: &dyn EventBus,
    settings: DeliverySettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client = settings.policy.client(settings.timeout)?;
    let worker = Worker {
        db,
        client,
        settings,
    };
    tokio::spawn(worker.run(bus.subscribe(), shutdown));
    Ok(())
}

struct Worker {
    db: DatabaseConnection,
    client: reqwest::Client,
    settings: DeliverySettings,
}

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered(u16),
    /// 410 Gone: the endpoint asks not to be called again.
    Gone,
    /// Another status, or no answer (`None`: refused, timed out, unreachable).
    Failed(Option<u16>),
}

impl Outcome {
    fn from_status(status: reqwest::StatusCode) -> Self {
        match status.as_u16() {
            code if status.is_success() => Self::Delivered(code),
            410 => Self::Gone,
            code => Self::Failed(Some(code)),
        }
    }

    fn response_status(self) -> Option<i32> {
        match self {
            Self::Delivered(code) | Self::Failed(Some(code)) => Some(i32::from(code)),
            Self::Gone => Some(410),
            Self::Failed(None) => None,
        }
    }
}

impl Worker {
    async fn run(self, mut wakeups: broadcast::Receiver<BusMessage>, shutdown: CancellationToken) {
        let mut pruned_at: Option<std::time::Instant> = None;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_INTERVAL) {
                pruned_at = Some(std::time::Instant::now());
                if let Err(err) = prune_finished(&self.db).await {
                    tracing::warn!(%err, "deleting old webhook deliveries failed");
                }
            }
            let seen = enqueued_count();
            let redelivered = REDELIVERED.notified();
            match claim_due(&self.db, self.settings.lease()).await {
                Ok(batch) if !batch.is_empty() => {
                    if let Err(err) = self.deliver_batch(batch).await {
                        tracing::warn!(%err, "recording webhook deliveries failed");
                    }
                    continue;
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(%err, "claiming webhook deliveries failed"),
            }
            let idle = match next_due(&self.db).await {
                Ok(Some(at)) => (at - Utc::now())
                    .to_std()
                    .unwrap_or_default()
                    .clamp(MIN_IDLE, POLL_INTERVAL),
                Ok(None) => IDLE_POLL_INTERVAL,
                Err(err) => {
                    tracing::warn!(%err, "reading the next webhook retry failed");
                    POLL_INTERVAL
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(idle) => {}
                () = redelivered => {}
                () = wait_for_deliveries(&mut wakeups, seen) => tokio::time::sleep(COALESCE).await,
            }
        }
    }

    async fn deliver_batch(&self, batch: Vec<webhook_delivery::Model>) -> Result<(), DbErr> {
        let ids: Vec<Uuid> = batch.iter().map(|delivery| delivery.webhook_id).collect();
        let webhooks: HashMap<Uuid, webhook::Model> = webhook::Entity::find()
            .filter(webhook::Column::Id.is_in(ids))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|webhook| (webhook.id, webhook))
            .collect();
        let attempts = batch.into_iter().filter_map(|delivery| {
            // A deleted webhook took its deliveries with it (cascade).
            let webhook = webhooks.get(&delivery.webhook_id)?;
            Some(self.deliver(webhook, delivery))
        });
        join_all(attempts).await.into_iter().collect()
    }

    async fn deliver(
        &self,
        webhook: &webhook::Model,
        delivery: webhook_delivery::Model,
    ) -> Result<(), DbErr> {
        if webhook.disabled_at.is_some() {
            return end_delivery(&self.db, &delivery, DeliveryStatus::Failed, None).await;
        }
        let outcome = self.send(webhook, &delivery).await;
        tracing::info!(
            webhook_id = %webhook.id,
            webhook_message_id = %message_id(delivery.id),
            attempt = delivery.attempts,
            ?outcome,
            "webhook delivery attempted"
        );
        self.record(webhook, &delivery, outcome).await
    }

    async fn send(&self, webhook: &webhook::Model, delivery: &webhook_delivery::Model) -> Outcome {
        // Addresses written in the URL are not resolved, so the resolver cannot check them.
        let url = match self.settings.policy.parse_url(&webhook.url) {
            Ok(url) => url,
            Err(err) => {
                tracing::info!(webhook_id = %webhook.id, %err, "webhook target refused");
                return Outcome::Failed(None);
            }
        };
        let id = message_id(delivery.id);
        let timestamp = Utc::now().timestamp();
        let signature = match signature::sign(&webhook.secret, &id, timestamp, &delivery.body) {
            Ok(signature) => signature,
            Err(err) => {
                tracing::error!(webhook_id = %webhook.id, %err, "cannot sign a webhook delivery");
                return Outcome::Failed(None);
            }
        };
        let request = self
            .client
            .post(url)
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(delivery.body.clone());
        match request.send().await {
            // Only the status matters: the body is never read (dropping the response closes it).
            Ok(response) => Outcome::from_status(response.status()),
            Err(err) => {
                tracing::info!(webhook_id = %webhook.id, err = %err.without_url(), "webhook endpoint unreachable");
                Outcome::Failed(None)
            }
        }
    }

    async fn record(
        &self,
        webhook: &webhook::Model,
        delivery: &webhook_delivery::Model,
        outcome: Outcome,
    ) -> Result<(), DbErr> {
        // One transaction: a reader never sees a delivery's end without its webhook's.
        let txn = self.db.begin().await?;
        let db = &txn;
        let status = outcome.response_status();
        let now = Utc::now();
        match outcome {
            Outcome::Delivered(_) => {
                end_delivery(db, delivery, DeliveryStatus::Succeeded, status).await?;
                webhook::Entity::update_many()
                    .col_expr(
                        webhook::Column::FailingSince,
                        Expr::value(Option::<DateTime<Utc>>::None),
                    )
                    .filter(webhook::Column::Id.eq(webhook.id))
                    .filter(webhook::Column::FailingSince.is_not_null())
                    .exec(db)
                    .await?;
            }
            Outcome::Gone => {
                end_delivery(db, delivery, DeliveryStatus::Failed, status).await?;
                disable_webhook(db, webhook.id, "the endpoint answered 410 Gone").await?;
            }
            Outcome::Failed(_) => {
                let next_delay = usize::try_from(delivery.attempts)
                    .ok()
                    .and_then(|attempts| RETRY_SCHEDULE.get(attempts));
                match next_delay {
                    Some(delay) => {
                        let next = now + self.settings.scaled(*delay);
                        retry_delivery(db, delivery, status, next).await?;
                    }
                    None => end_delivery(db, delivery, DeliveryStatus::Failed, status).await?,
                }
                let failing_since = webhook.failing_since.unwrap_or(now);
                if webhook.failing_since.is_none() {
                    webhook::Entity::update_many()
                        .col_expr(webhook::Column::FailingSince, Expr::value(now))
                        .filter(webhook::Column::Id.eq(webhook.id))
                        .filter(webhook::Column::FailingSince.is_null())
                        .exec(db)
                        .await?;
                }
                if next_delay.is_none() {
                    disable_webhook(db, webhook.id, "a delivery failed every attempt").await?;
                } else if failing_since <= now - self.settings.scaled(DISABLE_AFTER) {
                    disable_webhook(db, webhook.id, "the endpoint kept failing").await?;
                }
            }
        }
        txn.commit().await
    }
}

/// Waits for committed events after which this process wrote deliveries (the outbox count moved
/// past `seen`), or lost wake-ups; `Closed` means no bus, so polling alone serves.
async fn wait_for_deliveries(wakeups: &mut broadcast::Receiver<BusMessage>, seen: u64) {
    loop {
        match wakeups.recv().await {
            Ok(BusMessage::ProjectEvents(_)) if enqueued_count() != seen => return,
            Ok(BusMessage::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// Claims the deliveries that are due and not leased (or whose lease expired: their worker
/// died), counting the attempt.
async fn claim_due(
    db: &DatabaseConnection,
    lease: chrono::TimeDelta,
) -> Result<Vec<webhook_delivery::Model>, DbErr> {
    let now = Utc::now();
    let backend = db.get_database_backend();
    let lock = match backend {
        DatabaseBackend::Postgres => "FOR UPDATE SKIP LOCKED",
        _ => "",
    };
    let sql = format!(
        "UPDATE webhook_delivery SET locked_until = $1, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM webhook_delivery \
           WHERE status = 'PENDING' AND next_attempt_at <= $2 \
             AND (locked_until IS NULL OR locked_until < $2) \
           ORDER BY next_attempt_at, id LIMIT {BATCH} {lock}) \
         RETURNING *"
    );
    let statement =
        Statement::from_sql_and_values(backend, sql, [(now + lease).into(), now.into()]);
    webhook_delivery::Entity::find()
        .from_raw_sql(statement)
        .all(db)
        .await
}

/// Deletes finished deliveries older than [`DELIVERY_RETENTION`].
async fn prune_finished(db: &DatabaseConnection) -> Result<(), DbErr> {
    webhook_delivery::Entity::delete_many()
        .filter(webhook_delivery::Column::Status.ne(DeliveryStatus::Pending))
        .filter(webhook_delivery::Column::CreatedAt.lt(Utc::now() - DELIVERY_RETENTION))
        .exec(db)
        .await?;
    Ok(())
}

/// When the earliest unleased retry is due (a retry 5 s away is sent after 5 s, not at the
/// next poll).
async fn next_due(db: &DatabaseConnection) -> Result<Option<DateTime<Utc>>, DbErr> {
    let next = webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending))
        .filter(webhook_delivery::Column::LockedUntil.is_null())
        .filter(webhook_delivery::Column::NextAttemptAt.is_not_null())
        .order_by_asc(webhook_delivery::Column::NextAttemptAt)
        .one(db)
        .await?;
    Ok(next.and_then(|delivery| delivery.next_attempt_at))
}

/// Only while the claim is still ours: a reclaimed delivery counts one more attempt.
fn still_claimed(delivery: &webhook_delivery::Model) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(webhook_delivery::Column::Id.eq(delivery.id))
        .add(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending))
        .add(webhook_delivery::Column::Attempts.eq(delivery.attempts))
}

async fn end_delivery(
    db: &impl ConnectionTrait,
    delivery: &webhook_delivery::Model,
    status: DeliveryStatus,
    response_status: Option<i32>,
) -> Result<(), DbErr> {
    webhook_delivery::Entity::update_many()
        .col_expr(webhook_delivery::Column::Status, Expr::value(status))
        .col_expr(
            webhook_delivery::Column::ResponseStatus,
            Expr::value(response_status),
        )
        .col_expr(
            webhook_delivery::Column::NextAttemptAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            webhook_delivery::Column::LockedUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(still_claimed(delivery))
        .exec(db)
        .await?;
    Ok(())
}

async fn retry_delivery(
    db: &impl ConnectionTrait,
    delivery: &webhook_delivery::Model,
    response_status: Option<i32>,
    next_attempt_at: DateTime<Utc>,
) -> Result<(), DbErr> {
    webhook_delivery::Entity::update_many()
        .col_expr(
            webhook_delivery::Column::ResponseStatus,
            Expr::value(response_status),
        )
        .col_expr(
            webhook_delivery::Column::NextAttemptAt,
            Expr::value(next_attempt_at),
        )
        .col_expr(
            webhook_delivery::Column::LockedUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(still_claimed(delivery))
        .exec(db)
        .await?;
    Ok(())
}

/// Disables a webhook and fails its pending deliveries (a redelivery queues one again).
async fn disable_webhook(
    db: &impl ConnectionTrait,
    webhook_id: Uuid,
    reason: &str,
) -> Result<(), DbErr> {
    let disabled = webhook::Entity::update_many()
        .col_expr(webhook::Column::DisabledAt, Expr::value(Utc::now()))
        .filter(webhook::Column::Id.eq(webhook_id))
        .filter(webhook::Column::DisabledAt.is_null())
        .exec(db)
        .await?;
    if disabled.rows_affected == 1 {
        tracing::info!(%webhook_id, reason, "webhook disabled");
    }
    webhook_delivery::Entity::update_many()
        .col_expr(
            webhook_delivery::Column::Status,
            Expr::value(DeliveryStatus::Failed),
        )
        .col_expr(
            webhook_delivery::Column::NextAttemptAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(webhook_delivery::Column::WebhookId.eq(webhook_id))
        .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending))
        .filter(webhook_delivery::Column::LockedUntil.is_null())
        .exec(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_outcomes() {
        use reqwest::StatusCode;
        assert_eq!(
            Outcome::from_status(StatusCode::OK),
            Outcome::Delivered(200)
        );
        assert_eq!(
            Outcome::from_status(StatusCode::NO_CONTENT),
            Outcome::Delivered(204)
        );
        assert_eq!(Outcome::from_status(StatusCode::GONE), Outcome::Gone);
        assert_eq!(
            Outcome::from_status(StatusCode::MOVED_PERMANENTLY),
            Outcome::Failed(Some(301))
        );
        assert_eq!(
            Outcome::from_status(StatusCode::INTERNAL_SERVER_ERROR),
            Outcome::Failed(Some(500))
        );
    }

    #[test]
    fn delays_scale() {
        let mut settings = DeliverySettings::from_config(&Config::defaults());
        assert_eq!(settings.timeout, Duration::from_secs(10));
        assert!(!settings.policy.allow_private);
        assert_eq!(
            settings.scaled(RETRY_SCHEDULE[2]),
            chrono::TimeDelta::minutes(5)
        );
        settings.retry_scale = 0.001;
        assert_eq!(
            settings.scaled(RETRY_SCHEDULE[1]),
            chrono::TimeDelta::milliseconds(5)
        );
    }
}
