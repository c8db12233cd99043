//! The agent: the model's tool loop against a project's sandbox.

pub mod context;
pub mod diagnostic;
pub mod preview_check;
pub mod prompt;
pub mod provider;
pub mod runner;
pub mod tools;
