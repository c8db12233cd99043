//! What resolvers get from the request: the app state, the viewer, per-request loaders.

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Data};

use super::error::GqlResult;
use super::loaders::{FragmentByMessage, MessagesByProject, RunById};
use crate::app::AppState;
use crate::error::AppError;
use crate::services::Viewer;

/// How the request authenticated. A bad token is remembered, so that fields that need a
/// viewer say why, while public fields (sign-in, introspection) still work.
#[derive(Debug, Clone, Copy)]
pub enum RequestAuth {
    Anonymous,
    InvalidToken,
    Viewer(Viewer),
}

/// A fresh loader set for one request (HTTP) or operation (WS), so a loader never serves one
/// user's rows to another.
pub fn loader_data(state: &AppState) -> Data {
    let mut data = Data::default();
    data.insert(DataLoader::new(
        MessagesByProject(state.db.clone()),
        tokio::spawn,
    ));
    data.insert(DataLoader::new(
        FragmentByMessage(state.db.clone()),
        tokio::spawn,
    ));
    data.insert(DataLoader::new(RunById(state.db.clone()), tokio::spawn));
    data
}

pub trait ContextExt {
    fn state(&self) -> &AppState;
    fn viewer(&self) -> async_graphql::Result<Viewer>;
}

impl ContextExt for Context<'_> {
    fn state(&self) -> &AppState {
        self.data_unchecked::<AppState>()
    }

    fn viewer(&self) -> async_graphql::Result<Viewer> {
        match self.data_opt::<RequestAuth>() {
            Some(RequestAuth::Viewer(viewer)) => Ok(*viewer),
            _ => Err(AppError::Unauthenticated).gql(),
        }
    }
}
