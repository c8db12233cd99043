//! Signed webhooks (Standard Webhooks): what a webhook is subscribed to, its secret, the
//! signature, the addresses it may target, and the worker that delivers the outbox rows
//! (written with each event by `events::outbox`).

pub mod delivery;
pub mod signature;
pub mod target;

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use uuid::Uuid;

use crate::events::EventKind;

pub use delivery::{start_delivery_worker, DeliverySettings};

/// What every secret starts with (the spec's convention).
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes of a secret (the spec asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// Delays before each attempt of a delivery, as Svix schedules them: the first at once, then
/// within seconds, then minutes to hours. A delivery that failed them all is FAILED.
pub const RETRY_SCHEDULE: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// An endpoint whose every attempt failed for this long is disabled.
pub const DISABLE_AFTER: Duration = Duration::from_secs(5 * 24 * 3600);

/// A webhook's signing secret: `whsec_` + base64 of random bytes. Its `Debug` does not print it.
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// A delivery's `webhook-id`: the same on every attempt, so receivers can drop duplicates.
pub fn message_id(delivery_id: Uuid) -> String {
    format!("msg_{}", delivery_id.simple())
}

/// The delivery a `webhook-id` names.
pub fn parse_message_id(message_id: &str) -> Option<Uuid> {
    let hex = message_id.strip_prefix("msg_")?;
    (hex.len() == 32)
        .then(|| Uuid::try_parse(hex).ok())
        .flatten()
}

/// The event kinds a webhook wants, stored as a comma-separated list in `EventKind::ALL` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventKinds(Vec<EventKind>);

impl EventKinds {
    pub fn new(kinds: impl IntoIterator<Item = EventKind>) -> Self {
        let wanted: Vec<EventKind> = kinds.into_iter().collect();
        Self(
            EventKind::ALL
                .into_iter()
                .filter(|kind| wanted.contains(kind))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn kinds(&self) -> &[EventKind] {
        &self.0
    }

    pub fn to_stored(&self) -> String {
        let names: Vec<&str> = self.0.iter().map(|kind| kind.as_str()).collect();
        names.join(",")
    }

    /// Reads a stored list; unknown names (none are ever written) are left out.
    pub fn from_stored(stored: &str) -> Self {
        Self::new(stored.split(',').filter_map(EventKind::parse))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_not_printed() {
        let (a, b) = (WebhookSecret::generate(), WebhookSecret::generate());
        assert_ne!(a.expose(), b.expose());
        let key = a.expose().strip_prefix(SECRET_PREFIX).unwrap();
        assert_eq!(STANDARD.decode(key).unwrap().len(), SECRET_BYTES);
        assert!(!format!("{a:?}").contains(key));
    }

    #[test]
    fn message_ids_round_trip() {
        let id = Uuid::now_v7();
        assert_eq!(parse_message_id(&message_id(id)), Some(id));
        assert_eq!(parse_message_id("msg_xyz"), None);
        assert_eq!(parse_message_id(&id.to_string()), None);
        assert_eq!(parse_message_id(&format!("msg_{id}")), None);
    }

    #[test]
    fn event_kinds_are_stored_in_a_fixed_order_without_duplicates() {
        let kinds = EventKinds::new([
            EventKind::RunFinished,
            EventKind::RunQueued,
            EventKind::RunFinished,
        ]);
        assert_eq!(kinds.to_stored(), "RUN_QUEUED,RUN_FINISHED");
        assert_eq!(
            EventKinds::from_stored("RUN_FINISHED,NOPE,RUN_QUEUED"),
            kinds
        );
        assert!(EventKinds::new([]).is_empty());
    }

    #[test]
    fn the_schedule_retries_within_seconds_then_hours() {
        assert_eq!(RETRY_SCHEDULE[0], Duration::ZERO);
        assert_eq!(RETRY_SCHEDULE[1], Duration::from_secs(5));
        assert!(RETRY_SCHEDULE.windows(2).all(|pair| pair[0] <= pair[1]));
    }
}
