//! CodeKraft: an AI app builder served as a GraphQL API.

pub mod agent;
pub mod config;
pub mod error;
pub mod events;
pub mod services;
pub mod entity;
pub mod sandbox;
