//! The integration-test binary.

mod http_protocol;
mod support;
mod ws_protocol;
