//! The open WebSocket connections of this process: at most so many per user, and a signal per
//! session so that ending a session (`signOut`) closes its sockets at once.
//!
//! In memory: each server counts its own sockets, and a session ended on another server closes
//! this server's sockets only when they next start an operation (which re-reads the session).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::{AppError, AppResult};

#[derive(Debug, Clone)]
pub struct SocketRegistry {
    max_per_user: usize,
    inner: Arc<Mutex<Sockets>>,
}

#[derive(Debug, Default)]
struct Sockets {
    per_user: HashMap<Uuid, usize>,
    /// Sessions with open sockets: cancelled when the session ends, with the number of sockets.
    sessions: HashMap<Uuid, (CancellationToken, usize)>,
}

/// One open socket, counted until dropped.
#[derive(Debug)]
pub struct SocketPermit {
    inner: Arc<Mutex<Sockets>>,
    user_id: Uuid,
    session_id: Option<Uuid>,
    ended: CancellationToken,
}

impl SocketPermit {
    /// Cancelled when the socket's session ends; never for tokens without a session.
    pub fn ended(&self) -> CancellationToken {
        self.ended.clone()
    }
}

impl SocketRegistry {
    pub fn new(max_per_user: usize) -> Self {
        Self {
            max_per_user,
            inner: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Sockets> {
        lock(&self.inner)
    }

    /// Counts a new socket of `user_id`; RATE_LIMITED when the user already has the maximum.
    pub fn open(&self, user_id: Uuid, session_id: Option<Uuid>) -> AppResult<SocketPermit> {
        let mut sockets = self.lock();
        let count = sockets.per_user.entry(user_id).or_default();
        if *count >= self.max_per_user {
            return Err(AppError::rate_limited(std::time::Duration::from_secs(1)));
        }
        *count += 1;
        let ended = match session_id {
            Some(session_id) => {
                let (token, sockets) = sockets.sessions.entry(session_id).or_default();
                *sockets += 1;
                token.clone()
            }
            None => CancellationToken::new(),
        };
        Ok(SocketPermit {
            inner: self.inner.clone(),
            user_id,
            session_id,
            ended,
        })
    }

    /// Closes the sockets of a session that has ended.
    pub fn end_session(&self, session_id: Uuid) {
        if let Some((token, _)) = self.lock().sessions.get(&session_id) {
            token.cancel();
        }
    }
}

/// The counts stay right even if a holder panicked: every change is a single step.
fn lock(inner: &Mutex<Sockets>) -> MutexGuard<'_, Sockets> {
    inner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        let mut sockets = lock(&self.inner);
        if let Some(count) = sockets.per_user.get_mut(&self.user_id) {
            *count -= 1;
            if *count == 0 {
                sockets.per_user.remove(&self.user_id);
            }
        }
        if let Some(session_id) = self.session_id {
            if let Some((_, count)) = sockets.sessions.get_mut(&session_id) {
                *count -= 1;
                if *count == 0 {
                    sockets.sessions.remove(&session_id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_sockets_per_user_and_frees_them_on_drop() {
        let registry = SocketRegistry::new(2);
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let first = registry.open(alice, None).unwrap();
        let _second = registry.open(alice, None).unwrap();
        assert!(matches!(
            registry.open(alice, None),
            Err(AppError::RateLimited { .. })
        ));
        let _bobs = registry.open(bob, None).unwrap();
        drop(first);
        registry.open(alice, None).unwrap();
    }

    #[test]
    fn ending_a_session_cancels_its_sockets_only() {
        let registry = SocketRegistry::new(10);
        let (user, session, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let a = registry.open(user, Some(session)).unwrap();
        let b = registry.open(user, Some(session)).unwrap();
        let c = registry.open(user, Some(other)).unwrap();
        registry.end_session(session);
        assert!(a.ended().is_cancelled() && b.ended().is_cancelled());
        assert!(!c.ended().is_cancelled());
        drop((a, b));
        assert!(!registry.lock().sessions.contains_key(&session));
    }
}
