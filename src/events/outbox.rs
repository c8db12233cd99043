//! The webhook outbox: with each event, in its transaction, a delivery row for every enabled
//! webhook that wants it, so an event is delivered even if the server stops right after the
//! commit (the delivery worker in `webhook::delivery` sends the rows).

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect, Set,
};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::entity::webhook_delivery::{self, DeliveryStatus};
use crate::entity::{project, run_event, webhook};

/// Outbox writes in this process so far (counted before their commit). The delivery worker,
/// woken by the bus after a commit, reads the table only when this moved: events of users
/// without webhooks cost it nothing. (Process-wide: servers sharing a test process only look
/// once more.)
static ENQUEUED: AtomicU64 = AtomicU64::new(0);

pub fn enqueued_count() -> u64 {
    ENQUEUED.load(Ordering::Acquire)
}

/// A delivery's body: the Standard Webhooks payload structure (`type`, `timestamp`, `data`),
/// `data` being the event a subscriber gets (its `RunEventData` fields) with the ids that
/// place it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookPayload<'a> {
    r#type: &'a str,
    timestamp: DateTime<Utc>,
    data: WebhookEventData<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookEventData<'a> {
    project_id: Uuid,
    run_id: Option<Uuid>,
    seq: i64,
    #[serde(flatten)]
    fields: &'a Value,
}

fn payload_body(event: &run_event::Model) -> Result<String, DbErr> {
    serde_json::to_string(&WebhookPayload {
        r#type: &event.kind,
        timestamp: event.created_at,
        data: WebhookEventData {
            project_id: event.project_id,
            run_id: event.run_id,
            seq: event.seq,
            fields: &event.payload,
        },
    })
    .map_err(|err| DbErr::Json(format!("a webhook body of a {} event: {err}", event.kind)))
}

/// Queues `event` for the webhooks of its project's owner that are enabled, want its kind and
/// watch its project (or all of them): one indexed read, plus one insert when any does.
pub(super) async fn enqueue_deliveries(
    db: &impl ConnectionTrait,
    event: &run_event::Model,
) -> Result<(), DbErr> {
    let owner = Query::select()
        .column(project::Column::OwnerId)
        .from(project::Entity)
        .and_where(project::Column::Id.eq(event.project_id))
        .to_owned();
    let webhook_ids: Vec<Uuid> = webhook::Entity::find()
        .select_only()
        .column(webhook::Column::Id)
        .filter(webhook::Column::UserId.in_subquery(owner))
        .filter(webhook::Column::DisabledAt.is_null())
        .filter(
            Condition::any()
                .add(webhook::Column::ProjectId.is_null())
                .add(webhook::Column::ProjectId.eq(event.project_id)),
        )
        // `events` is a comma-separated list of kinds (none contains a comma or `%`).
        .filter(
            Expr::expr(Expr::cust("(',' || events || ',')")).like(format!("%,{},%", event.kind)),
        )
        .into_tuple()
        .all(db)
        .await?;
    if webhook_ids.is_empty() {
        return Ok(());
    }
    let body = payload_body(event)?;
    let now = Utc::now();
    let rows = webhook_ids
        .into_iter()
        .map(|webhook_id| webhook_delivery::ActiveModel {
            id: Set(Uuid::now_v7()),
            webhook_id: Set(webhook_id),
            event_kind: Set(event.kind.clone()),
            body: Set(body.clone()),
            status: Set(DeliveryStatus::Pending),
            attempts: Set(0),
            response_status: Set(None),
            next_attempt_at: Set(Some(now)),
            locked_until: Set(None),
            created_at: Set(now),
        });
    webhook_delivery::Entity::insert_many(rows).exec(db).await?;
    ENQUEUED.fetch_add(1, Ordering::AcqRel);
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_body_is_the_typed_event_with_its_ids() {
        let event = run_event::Model {
            id: Uuid::from_u128(1),
            project_id: Uuid::from_u128(2),
            run_id: Some(Uuid::from_u128(3)),
            seq: 7,
            kind: "FILE_WRITTEN".into(),
            payload: json!({ "path": "app/page.tsx", "bytes": 12 }),
            created_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        };
        let body: Value = serde_json::from_str(&payload_body(&event).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "type": "FILE_WRITTEN",
                "timestamp": "2023-11-14T22:13:20Z",
                "data": {
                    "projectId": Uuid::from_u128(2),
                    "runId": Uuid::from_u128(3),
                    "seq": 7,
                    "path": "app/page.tsx",
                    "bytes": 12,
                },
            })
        );
    }
}
