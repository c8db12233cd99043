//! Shared test support: the app under test, clients, fakes at the network edge.

pub mod app;
pub mod client;
pub mod conformance;
pub mod fake_e2b;
pub mod fake_llm;
pub mod output;
pub mod postgres;
pub mod sse_client;
pub mod stand_in_next;
pub mod toy;
pub mod webhook_receiver;
pub mod ws_client;
