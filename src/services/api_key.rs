//! API keys: credentials a user gives third parties (CI jobs, bots), with scopes.
//!
//! A secret reads `ckp_` + 32 random base62 characters + a 6-character base62 CRC32 of the
//! random part, like GitHub's tokens: leak scanners recognise the prefix, and a mistyped key is
//! refused before any database read. Only the SHA-256 of the secret is stored (the secret has
//! ~190 bits of entropy, so a fast hash is enough); it is shown once, at creation.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use rand::distributions::{Alphanumeric, DistString};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, Set,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::access::ScopeSet;
use crate::entity::api_key;
use crate::error::{AppError, AppResult};

/// What every secret starts with.
pub const SECRET_PREFIX: &str = "ckp_";
const RANDOM_CHARS: usize = 32;
const CHECKSUM_CHARS: usize = 6;
const SECRET_CHARS: usize = SECRET_PREFIX.len() + RANDOM_CHARS + CHECKSUM_CHARS;
/// How much of the secret lists show: enough to tell keys apart, far too little to guess.
const SHOWN_PREFIX_CHARS: usize = SECRET_PREFIX.len() + 8;
pub const MAX_NAME_CHARS: usize = 100;
/// `lastUsedAt` is written at most this often per key, not on every request.
const LAST_USED_PRECISION: TimeDelta = TimeDelta::minutes(1);

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A key's secret, as shown to its creator once. Its `Debug` does not print it.
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    fn generate() -> Self {
        let random = Alphanumeric.sample_string(&mut rand::rngs::OsRng, RANDOM_CHARS);
        Self(format!("{SECRET_PREFIX}{random}{}", checksum(&random)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeySecret(<redacted>)")
    }
}

/// The CRC32 of `random`, as 6 base62 digits (62^6 > 2^32).
fn checksum(random: &str) -> String {
    let mut value = crc32fast::hash(random.as_bytes());
    let mut digits = [b'0'; CHECKSUM_CHARS];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

/// Whether `secret` has the shape and checksum of one of ours (no database involved).
pub fn is_well_formed(secret: &str) -> bool {
    let Some(rest) = secret.strip_prefix(SECRET_PREFIX) else {
        return false;
    };
    if secret.len() != SECRET_CHARS || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (random, sum) = rest.split_at(RANDOM_CHARS);
    checksum(random) == sum
}

fn hash_secret(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}

/// Creates a key of `user_id`; returns it with its secret (never readable again). The user's
/// revoked and expired keys are deleted first; the rest count against `max_per_user`.
pub async fn create_api_key(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    name: &str,
    scopes: ScopeSet,
    expires_at: Option<DateTime<Utc>>,
    max_per_user: u32,
) -> AppResult<(api_key::Model, ApiKeySecret)> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::bad_input(format!(
            "the name must have 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    if scopes.is_empty() {
        return Err(AppError::bad_input("a key needs at least one scope"));
    }
    let now = Utc::now();
    if expires_at.is_some_and(|at| at <= now) {
        return Err(AppError::bad_input("expiresAt must be in the future"));
    }
    api_key::Entity::delete_many()
        .filter(api_key::Column::UserId.eq(user_id))
        .filter(
            Condition::any()
                .add(api_key::Column::RevokedAt.is_not_null())
                .add(api_key::Column::ExpiresAt.lte(now)),
        )
        .exec(db)
        .await?;
    let existing = api_key::Entity::find()
        .filter(api_key::Column::UserId.eq(user_id))
        .count(db)
        .await?;
    if existing >= u64::from(max_per_user) {
        return Err(AppError::bad_input(format!(
            "you already have {max_per_user} API keys, the most allowed; revoke one first"
        )));
    }
    let secret = ApiKeySecret::generate();
    let key = api_key::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        name: Set(name.to_owned()),
        prefix: Set(secret.0[..SHOWN_PREFIX_CHARS].to_owned()),
        secret_hash: Set(hash_secret(secret.expose())),
        scopes: Set(scopes.to_stored()),
        created_at: Set(now),
        expires_at: Set(expires_at),
        last_used_at: Set(None),
        revoked_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok((key, secret))
}

/// The keys of `user_id`, newest first (at most the cap, plus revoked and expired ones until
/// the next creation prunes them).
pub async fn list_api_keys(
    db: &impl ConnectionTrait,
    user_id: Uuid,
) -> AppResult<Vec<api_key::Model>> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::UserId.eq(user_id))
        .order_by_desc(api_key::Column::CreatedAt)
        .order_by_desc(api_key::Column::Id)
        .all(db)
        .await?)
}

/// Revokes a key of `user_id`: it is refused from now on. Revoking twice keeps the first time.
pub async fn revoke_api_key(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    key_id: Uuid,
) -> AppResult<api_key::Model> {
    let key = api_key::find_for_owner(user_id, key_id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound("API key"))?;
    if key.revoked_at.is_some() {
        return Ok(key);
    }
    let mut active: api_key::ActiveModel = key.into();
    active.revoked_at = Set(Some(Utc::now()));
    Ok(active.update(db).await?)
}

fn is_live(key: &api_key::Model, now: DateTime<Utc>) -> bool {
    key.revoked_at.is_none() && key.expires_at.is_none_or(|at| at > now)
}

/// The key `secret` names, if it is live; UNAUTHENTICATED otherwise (malformed, unknown,
/// revoked, expired). Notes the use, at most once a minute per key.
pub async fn authenticate_api_key(
    db: &impl ConnectionTrait,
    secret: &str,
) -> AppResult<api_key::Model> {
    if !is_well_formed(secret) {
        return Err(AppError::Unauthenticated);
    }
    let now = Utc::now();
    let key = api_key::Entity::find()
        .filter(api_key::Column::SecretHash.eq(hash_secret(secret)))
        .one(db)
        .await?
        .filter(|key| is_live(key, now))
        .ok_or(AppError::Unauthenticated)?;
    let stale_before = now - LAST_USED_PRECISION;
    if key.last_used_at.is_none_or(|at| at <= stale_before) {
        // Conditional, so servers racing on one key write once.
        api_key::Entity::update_many()
            .col_expr(api_key::Column::LastUsedAt, now.into())
            .filter(api_key::Column::Id.eq(key.id))
            .filter(
                Condition::any()
                    .add(api_key::Column::LastUsedAt.is_null())
                    .add(api_key::Column::LastUsedAt.lte(stale_before)),
            )
            .exec(db)
            .await?;
    }
    Ok(key)
}

/// Whether the key still works (not revoked, not expired): re-checked by long-lived
/// connections before each operation.
pub async fn is_key_live(db: &impl ConnectionTrait, key_id: Uuid) -> AppResult<bool> {
    let key = api_key::Entity::find_by_id(key_id).one(db).await?;
    Ok(key.is_some_and(|key| is_live(&key, Utc::now())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_well_formed_and_distinct() {
        let a = ApiKeySecret::generate();
        let b = ApiKeySecret::generate();
        assert!(is_well_formed(a.expose()) && is_well_formed(b.expose()));
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), SECRET_CHARS);
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn a_mistyped_secret_fails_its_checksum() {
        let secret = ApiKeySecret::generate().0;
        // Change one character of the random part.
        let mut typo = secret.clone().into_bytes();
        let i = SECRET_PREFIX.len() + 5;
        typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
        assert!(!is_well_formed(&String::from_utf8(typo).unwrap()));
        assert!(!is_well_formed(&secret[..secret.len() - 1]));
        assert!(!is_well_formed(&format!("{secret}x")));
        assert!(!is_well_formed(&secret.replacen("ckp_", "ckx_", 1)));
        assert!(!is_well_formed(""));
        // Non-ASCII of the right byte length must not panic on slicing.
        let odd = format!(
            "{SECRET_PREFIX}{}",
            "é".repeat((RANDOM_CHARS + CHECKSUM_CHARS) / 2)
        );
        assert!(!is_well_formed(&odd));
    }

    #[test]
    fn checksums_have_six_base62_digits() {
        assert_eq!(checksum(""), "000000");
        let sum = checksum("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz");
        assert_eq!(sum.len(), CHECKSUM_CHARS);
        assert!(sum.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
