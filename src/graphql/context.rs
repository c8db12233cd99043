//! What resolvers get from the request: the app state, the viewer, per-request loaders.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Data};
use sea_orm::DatabaseConnection;

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
    data.insert(Loaders::new(state.db.clone()));
    data
}

/// A DataLoader source that reads the database.
pub trait DbLoader: Send + Sync + 'static {
    fn new(db: DatabaseConnection) -> Self;
}

macro_rules! db_loaders {
    ($($loader:ident),* $(,)?) => {
        $(impl DbLoader for $loader {
            fn new(db: DatabaseConnection) -> Self {
                Self(db)
            }
        })*
    };
}

db_loaders!(
    MessagesByProject,
    FragmentByMessage,
    RunById,
    FilesByFragment,
    FileEntriesByFragment,
    FileByPath,
    DiffByVersions,
    EventsByRun,
    TranscriptByRun,
);

/// The loaders of one request, each made when a resolver first needs it: most operations (an
/// event subscription, `me`) need none, and a subscription lives long.
pub struct Loaders {
    db: DatabaseConnection,
    made: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Loaders {
    fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            made: Mutex::new(HashMap::new()),
        }
    }

    /// The request's loader of `T` (keys are gathered for a few milliseconds before a batch
    /// runs, so that the resolvers of one list level land in one query).
    pub fn get<T: DbLoader>(&self) -> Arc<DataLoader<T>> {
        let mut made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        let loader = made.entry(TypeId::of::<T>()).or_insert_with(|| {
            let loader = DataLoader::new(T::new(self.db.clone()), tokio::spawn)
                .delay(Duration::from_millis(5));
            Arc::new(loader)
        });
        Arc::clone(loader)
            .downcast()
            .unwrap_or_else(|_| unreachable!("loaders are stored under their own type"))
    }
}

pub trait ContextExt {
    fn state(&self) -> &AppState;
    /// The request's DataLoader of `T`.
    fn loader<T: DbLoader>(&self) -> Arc<DataLoader<T>>;
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

    fn loader<T: DbLoader>(&self) -> Arc<DataLoader<T>> {
        self.data_unchecked::<Loaders>().get::<T>()
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
