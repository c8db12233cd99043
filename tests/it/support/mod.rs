//! Shared test support: toy server, raw WS client, node conformance runner.

pub mod conformance;
pub mod toy;
pub mod ws_client;
