//! One module per table. Reads of owned rows go through the scoped finders next to each entity.

pub mod api_key;
pub mod file_blob;
pub mod fragment;
pub mod fragment_file;
pub mod message;
pub mod project;
pub mod run;
pub mod run_event;
pub mod session;
pub mod sign_in_failure;
pub mod usage;
pub mod user;
pub mod webhook;
pub mod webhook_delivery;
