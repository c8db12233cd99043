//! The integration-test binary: starts the real app (and fakes at the network edge) and talks
//! to it over HTTP and WebSocket.

mod accounts;
mod api_keys;
mod conformance;
mod context_budget;
mod credits;
mod errors;
mod event_fanout;
mod events;
mod export;
mod fork;
mod fuzz;
mod headers;
mod http_protocol;
mod local_app;
mod model_runs;
mod previews;
mod processes;
mod projects;
mod providers;
mod query_limits;
mod rate_limits;
mod run_limits;
mod runs;
mod sandbox_access;
mod sandbox_e2b;
mod sandbox_local;
mod schema;
mod sessions;
mod sse;
mod subscriptions;
mod support;
mod versions;
mod web_client;
mod ws_limits;
mod ws_protocol;
