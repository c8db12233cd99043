//! Output types: explicit structs over the entity models, relations resolved through loaders.

mod api_key;
mod event;
mod fragment;
mod message;
pub mod project;
mod run;
mod user;
mod webhook;

pub use api_key::{ApiKey, ApiKeyScope, CreatedApiKey};
pub use event::{RunEvent, RunEventKind};
pub use fragment::Fragment;
pub use message::Message;
pub use project::Project;
pub use run::Run;
pub use user::{AuthPayload, Usage, User};
pub use webhook::{CreatedWebhook, Webhook, WebhookDelivery};

use async_graphql::ID;
use uuid::Uuid;

use crate::error::AppError;

/// Parses an opaque id; anything else is BAD_USER_INPUT.
pub fn parse_id(id: &ID, what: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(id.as_str()).map_err(|_| AppError::bad_input(format!("invalid {what} id")))
}

pub fn to_id(id: Uuid) -> ID {
    ID(id.to_string())
}
