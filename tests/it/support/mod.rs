//! Test support: fakes at the network edge.

pub mod fake_llm;
