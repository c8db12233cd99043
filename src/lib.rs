//! CodeKraft: an AI app builder served as a GraphQL API.

pub mod agent;
pub mod app;
pub mod auth;
pub mod config;
pub mod entity;
pub mod error;
pub mod events;
pub mod graphql;
pub mod http;
pub mod jobs;
pub mod net;
pub mod sandbox;
pub mod services;
pub mod telemetry;
pub mod webhook;
