//! CodeKraft: an AI app builder served as a GraphQL API.

pub mod agent;
pub mod http;
pub mod sandbox;
