//! Password hashing with argon2id (PHC string format).
//!
//! Hashing and verifying are deliberately slow (tens of milliseconds of CPU). From async code use
//! [`hash_password_async`] / [`verify_password_async`], which run on tokio's blocking pool, so a
//! login burst cannot stall the runtime's worker threads.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::rngs::OsRng;

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

/// [`hash_password`] on the blocking pool.
pub async fn hash_password_async(password: String) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|_| AuthError::PasswordHash)?
}

/// [`verify_password`] on the blocking pool. A panicked or cancelled task verifies as `false`.
pub async fn verify_password_async(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false)
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
    async fn async_wrappers() {
        let hash = hash_password_async("pw".to_owned()).await.unwrap();
        assert!(verify_password_async("pw".to_owned(), hash.clone()).await);
        assert!(!verify_password_async("nope".to_owned(), hash).await);
    }
}
