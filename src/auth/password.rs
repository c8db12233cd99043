//! Password hashing with argon2id (PHC string format).
//!
//! Hashing and verifying are deliberately slow (tens of milliseconds of CPU, 19 MiB). From async
//! code use [`PasswordHashing`], which runs them on tokio's blocking pool (a login burst cannot
//! stall the runtime's worker threads) and bounds how many run at once.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::rngs::OsRng;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

use super::AuthError;

/// Hashes `password` with argon2id (v19, the crate's default OWASP parameters: m=19 MiB, t=2,
/// p=1) and a random salt. Returns the PHC string (`$argon2id$v=19$...`) to store as-is.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|_| AuthError::PasswordHash)
}

/// Checks `password` against a stored PHC hash. A malformed hash verifies as `false`.
///
/// The parameters are read from the hash itself, so hashes made with other argon2 settings
/// still verify.
pub fn verify_password(password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        tracing::warn!("stored password hash is not a valid PHC string");
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Runs argon2 on tokio's blocking pool with a bound on how many hashes run at once: each one
/// holds 19 MiB and a CPU, so a flood of sign-ins must queue, not fan out to every blocking
/// thread. A caller that cannot get a slot within `wait` is refused ([`AuthError::HashingBusy`]).
#[derive(Debug, Clone)]
pub struct PasswordHashing {
    permits: Arc<Semaphore>,
    wait: Duration,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl PasswordHashing {
    /// At most `max_concurrent` (at least one) hashes at once; callers wait up to `wait`.
    pub fn new(max_concurrent: usize, wait: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            wait,
            in_flight: Arc::default(),
            peak: Arc::default(),
        }
    }

    /// [`hash_password`] within the bound.
    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        self.run(move || hash_password(&password)).await?
    }

    /// [`verify_password`] within the bound. A panicked task verifies as `false`.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, AuthError> {
        self.run(move || verify_password(&password, &hash))
            .await
            .or_else(|err| match err {
                AuthError::HashingBusy => Err(err),
                _ => Ok(false),
            })
    }

    /// The most hashes that have run at once since the start (`/metrics` shows it).
    pub fn peak_concurrent(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| AuthError::HashingBusy)?
            .map_err(|_| AuthError::HashingBusy)?;
        let in_flight = self.in_flight.clone();
        let peak = self.peak.clone();
        // The permit moves into the blocking task: a cancelled request cannot free its slot
        // while its hash still runs.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let now = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            peak.fetch_max(now, Ordering::Relaxed);
            let result = work();
            in_flight.fetch_sub(1, Ordering::Relaxed);
            result
        })
        .await
        .map_err(|_| AuthError::PasswordHash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let hash = hash_password("correct horse battery staple").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(verify_password("correct horse battery staple", &hash));
        assert!(!verify_password("correct horse battery stapl", &hash));
    }

    #[test]
    fn salts_differ() {
        let a = hash_password("pw").unwrap();
        let b = hash_password("pw").unwrap();
        assert_ne!(a, b);
        assert!(verify_password("pw", &a) && verify_password("pw", &b));
    }

    #[test]
    fn malformed_hash_is_false() {
        assert!(!verify_password("pw", ""));
        assert!(!verify_password("pw", "not-a-phc-string"));
    }

    #[tokio::test]
    async fn bounded_hashing() {
        let hashing = PasswordHashing::new(1, Duration::from_secs(30));
        let hash = hashing.hash("pw".to_owned()).await.unwrap();
        assert!(hashing.verify("pw".to_owned(), hash.clone()).await.unwrap());
        assert!(!hashing.verify("nope".to_owned(), hash).await.unwrap());
        assert_eq!(hashing.peak_concurrent(), 1);
    }

    #[tokio::test]
    async fn saturated_hashing_is_refused_after_the_wait() {
        let hashing = PasswordHashing::new(1, Duration::ZERO);
        let _held = hashing.permits.clone().try_acquire_owned().unwrap();
        assert_eq!(
            hashing.hash("pw".to_owned()).await,
            Err(AuthError::HashingBusy)
        );
    }
}
