//! The integration test binary.

mod sandbox_e2b;
mod support;
