//! The integration-test binary: starts the real app (and fakes at the network edge) and talks
//! to it over HTTP and WebSocket.

mod conformance;
mod http_protocol;
mod providers;
mod support;
mod ws_protocol;
