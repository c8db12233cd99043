//! The open WebSocket connections and SSE streams ("sockets") of this process: at most so many
//! per user, and a signal per revocable credential so that ending a session (`signOut`) or
//! revoking an API key closes its sockets at once.
//!
//! In memory: each server counts its own sockets; a credential revoked on another server closes
//! this server's sockets when they next check it (each operation, and periodically: see
//! `SOCKET_CREDENTIAL_CHECK_SECS`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::access::Credential;
use crate::error::{AppError, AppResult};

#[derive(Debug, Clone)]
pub struct SocketRegistry {
    max_per_user: usize,
    inner: Arc<Mutex<Sockets>>,
}

#[derive(Debug, Default)]
struct Sockets {
    per_user: HashMap<Uuid, usize>,
    /// Credentials with open sockets: cancelled when the credential ends, with the number of
    /// sockets.
    credentials: HashMap<Credential, (CancellationToken, usize)>,
}

/// One open socket, counted until dropped.
#[derive(Debug)]
pub struct SocketPermit {
    inner: Arc<Mutex<Sockets>>,
    user_id: Uuid,
    credential: Option<Credential>,
    ended: CancellationToken,
}

impl SocketPermit {
    /// Cancelled when the socket's credential ends; never for tokens we cannot revoke.
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
    pub fn open(&self, user_id: Uuid, credential: Option<Credential>) -> AppResult<SocketPermit> {
        let mut sockets = self.lock();
        let count = sockets.per_user.entry(user_id).or_default();
        if *count >= self.max_per_user {
            return Err(AppError::rate_limited(std::time::Duration::from_secs(1)));
        }
        *count += 1;
        let ended = match credential {
            Some(credential) => {
                let (token, sockets) = sockets.credentials.entry(credential).or_default();
                *sockets += 1;
                token.clone()
            }
            None => CancellationToken::new(),
        };
        Ok(SocketPermit {
            inner: self.inner.clone(),
            user_id,
            credential,
            ended,
        })
    }

    /// Closes the sockets of a credential that has ended (signed out, revoked).
    pub fn end(&self, credential: Credential) {
        if let Some((token, _)) = self.lock().credentials.get(&credential) {
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
        if let Some(credential) = self.credential {
            if let Some((_, count)) = sockets.credentials.get_mut(&credential) {
                *count -= 1;
                if *count == 0 {
                    sockets.credentials.remove(&credential);
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
    fn ending_a_credential_cancels_its_sockets_only() {
        let registry = SocketRegistry::new(10);
        let user = Uuid::new_v4();
        let session = Credential::Session(Uuid::new_v4());
        let other = Credential::Session(Uuid::new_v4());
        let key = Credential::ApiKey(Uuid::new_v4());
        let a = registry.open(user, Some(session)).unwrap();
        let b = registry.open(user, Some(session)).unwrap();
        let c = registry.open(user, Some(other)).unwrap();
        let d = registry.open(user, Some(key)).unwrap();
        registry.end(session);
        assert!(a.ended().is_cancelled() && b.ended().is_cancelled());
        assert!(!c.ended().is_cancelled() && !d.ended().is_cancelled());
        registry.end(key);
        assert!(d.ended().is_cancelled() && !c.ended().is_cancelled());
        drop((a, b));
        assert!(!registry.lock().credentials.contains_key(&session));
    }
}
