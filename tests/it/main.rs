//! One integration-test binary.

mod providers;
mod support;
