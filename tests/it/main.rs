//! The integration-test binary.

mod conformance;
mod http_protocol;
mod support;
mod ws_protocol;
