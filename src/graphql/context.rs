//! What resolvers get from the request: the app state, the viewer, per-request loaders.

use std::time::Duration;

use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::{Context, Data};

use super::error::GqlResult;
use super::loaders::{
    DiffByVersions, EventsByRun, FileByPath, FileEntriesByFragment, FilesByFragment,
    FragmentByMessage, MessagesByProject, RunById, TranscriptByRun,
};
use crate::app::AppState;
use crate::error::AppError;
use crate::services::access::{Access, Credential, Permission};
use crate::services::Viewer;

/// How the request authenticated. A missing or bad token is anonymous: fields that need a
/// viewer answer UNAUTHENTICATED, public ones (sign-in, introspection) still work.
#[derive(Debug, Clone, Copy)]
pub enum RequestAuth {
    Anonymous,
    Viewer {
        viewer: Viewer,
        /// What the credential may do: all for a session, its scopes for an API key.
        access: Access,
        /// The revocable credential (a built-in token's session, an API key), if any.
        credential: Option<Credential>,
    },
}

/// The client's address (HTTP only: WebSocket connections are signed in, their user is
/// charged).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub std::net::IpAddr);

/// A fresh loader set for one request (HTTP) or operation (WS), so a loader never serves one
/// user's rows to another.
pub fn loader_data(state: &AppState) -> Data {
    let mut data = Data::default();
    data.insert(loader(MessagesByProject(state.db.clone())));
    data.insert(loader(FragmentByMessage(state.db.clone())));
    data.insert(loader(RunById(state.db.clone())));
    data.insert(loader(FilesByFragment(state.db.clone())));
    data.insert(loader(FileEntriesByFragment(state.db.clone())));
    data.insert(loader(FileByPath(state.db.clone())));
    data.insert(loader(DiffByVersions(state.db.clone())));
    data.insert(loader(EventsByRun(state.db.clone())));
    data.insert(loader(TranscriptByRun(state.db.clone())));
    data
}

/// Keys are gathered for a few milliseconds before a batch runs, so that the resolvers of one
/// list level land in one query.
fn loader<K, T>(loader: T) -> DataLoader<T>
where
    K: Send + Sync + std::hash::Hash + Eq + Clone + 'static,
    T: Loader<K>,
{
    DataLoader::new(loader, tokio::spawn).delay(Duration::from_millis(5))
}

pub trait ContextExt {
    fn state(&self) -> &AppState;
    /// The viewer, if the request's credential grants `needed` (UNAUTHENTICATED without one,
    /// FORBIDDEN for an API key without the scope). Every resolver that needs a viewer says
    /// what for here: the one place scopes are checked.
    fn viewer(&self, needed: Permission) -> async_graphql::Result<Viewer>;
    /// The revocable credential of the request (`None` for tokens we cannot revoke).
    fn credential(&self) -> Option<Credential>;
}

impl ContextExt for Context<'_> {
    fn state(&self) -> &AppState {
        self.data_unchecked::<AppState>()
    }

    fn viewer(&self, needed: Permission) -> async_graphql::Result<Viewer> {
        match self.data_opt::<RequestAuth>() {
            Some(RequestAuth::Viewer { viewer, access, .. }) => {
                access.require(needed).gql()?;
                Ok(*viewer)
            }
            _ => Err(AppError::Unauthenticated).gql(),
        }
    }

    fn credential(&self) -> Option<Credential> {
        match self.data_opt::<RequestAuth>() {
            Some(RequestAuth::Viewer { credential, .. }) => *credential,
            _ => None,
        }
    }
}
