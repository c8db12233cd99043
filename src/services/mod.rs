//! The rules of the product. Services take `&impl ConnectionTrait` (or a connection that can open
//! transactions) so they compose; they know nothing of GraphQL or HTTP.

pub mod access;
pub mod api_key;
pub mod credits;
pub mod export;
pub mod file_blob;
pub mod fork;
pub mod fragment;
pub mod limit;
pub mod message;
pub mod page;
pub mod project;
pub mod rate_limit;
pub mod run;
pub mod run_outcome;
pub mod sandbox;
pub mod sandbox_access;
pub mod session;
pub mod socket;
pub mod user;
pub mod version_diff;
pub mod webhook;

use uuid::Uuid;

use crate::entity::user::Plan;

/// Who is asking: every service call that touches owned rows takes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    pub user_id: Uuid,
    pub plan: Plan,
}
