//! RS256 tokens from an external identity provider (Clerk), verified with keys fetched from its
//! JWKS endpoint.
//!
//! Stale-while-revalidate: a known `kid` is always answered from the cache; once the key set is
//! older than the TTL, one background refresh replaces it, so no request waits for the provider.
//! An unknown `kid` (key rotation) or a set never fetched is fetched inline. Fetches are
//! single-flight and at most one per minimum interval, so a flood of tokens with made-up `kid`s
//! cannot hammer the provider. When a fetch fails, the previous keys keep serving.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::{map_jwt_error, AuthError, LEEWAY_SECS};

/// Age after which the key set is refreshed in the background (its keys keep serving meanwhile).
pub const DEFAULT_TTL: Duration = Duration::from_secs(10 * 60);
/// Minimum time between two fetch attempts (unknown `kid`, expired cache or failed fetch).
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// A cached JWKS: `kid` → RSA verification key.
pub struct JwksCache {
    source: Arc<KeySource>,
    ttl: Duration,
    min_refresh_interval: Duration,
    /// Held during a fetch (single flight), by a background refresh too; holds the time of the
    /// last fetch attempt.
    last_attempt: Arc<Mutex<Option<Instant>>>,
}

/// The endpoint and the last key set fetched from it; shared with background refreshes.
struct KeySource {
    url: String,
    client: reqwest::Client,
    keys: RwLock<KeySet>,
}

#[derive(Default)]
struct KeySet {
    keys: HashMap<String, DecodingKey>,
    /// Time of the last successful fetch; `None` until the first one.
    fetched_at: Option<Instant>,
}

impl fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksCache")
            .field("url", &self.source.url)
            .field("ttl", &self.ttl)
            .field("min_refresh_interval", &self.min_refresh_interval)
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    pub fn new(url: impl Into<String>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            source: Arc::new(KeySource {
                url: url.into(),
                client,
                keys: RwLock::default(),
            }),
            ttl: DEFAULT_TTL,
            min_refresh_interval: DEFAULT_MIN_REFRESH_INTERVAL,
            last_attempt: Arc::default(),
        }
    }

    pub fn with_timings(mut self, ttl: Duration, min_refresh_interval: Duration) -> Self {
        self.ttl = ttl;
        self.min_refresh_interval = min_refresh_interval;
        self
    }

    /// The RSA key for `kid`. A cached key is returned at once, and a set older than the TTL is
    /// refreshed in the background. A `kid` missing from the set, or no set yet, is fetched
    /// inline (rate-limited). Unknown `kid` → [`AuthError::Invalid`]; no key set could ever be
    /// fetched → [`AuthError::JwksUnavailable`].
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        if let Some((key, age)) = self.source.lookup(kid) {
            if age >= self.ttl {
                self.refresh_in_background();
            }
            return Ok(key);
        }
        let mut last_attempt = self.last_attempt.lock().await;
        // The fetch this task waited for may have brought the key.
        if let Some((key, _)) = self.source.lookup(kid) {
            return Ok(key);
        }
        if self.may_fetch(*last_attempt) {
            *last_attempt = Some(Instant::now());
            if let Err(err) = self.source.refresh().await {
                if self.source.never_fetched() {
                    return Err(err);
                }
            }
        }
        drop(last_attempt);
        match self.source.lookup(kid) {
            Some((key, _)) => Ok(key),
            None if self.source.never_fetched() => Err(AuthError::JwksUnavailable(
                "key set not loaded yet".to_owned(),
            )),
            None => Err(AuthError::Invalid("unknown key id")),
        }
    }

    /// Starts refreshing the key set unless a fetch is in flight or the rate limit forbids it.
    fn refresh_in_background(&self) {
        let Ok(mut last_attempt) = Arc::clone(&self.last_attempt).try_lock_owned() else {
            return;
        };
        if !self.may_fetch(*last_attempt) {
            return;
        }
        *last_attempt = Some(Instant::now());
        let source = Arc::clone(&self.source);
        tokio::spawn(async move {
            // A failure is logged by `refresh`; the old keys keep serving.
            let _ = source.refresh().await;
            // Held until the new keys are stored, so an inline fetch waits for this one.
            drop(last_attempt);
        });
    }

    fn may_fetch(&self, last_attempt: Option<Instant>) -> bool {
        last_attempt.is_none_or(|at| at.elapsed() >= self.min_refresh_interval)
    }
}

impl KeySource {
    /// The cached key for `kid` and the age of its key set.
    fn lookup(&self, kid: &str) -> Option<(DecodingKey, Duration)> {
        let set = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let key = set.keys.get(kid)?.clone();
        Some((key, set.fetched_at?.elapsed()))
    }

    fn never_fetched(&self) -> bool {
        let set = self.keys.read().unwrap_or_else(|e| e.into_inner());
        set.fetched_at.is_none()
    }

    /// Fetches the key set and replaces the cached one; on failure, keeps it and logs why.
    async fn refresh(&self) -> Result<(), AuthError> {
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(url = %self.url, keys = keys.len(), "fetched JWKS");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = KeySet {
                    keys,
                    fetched_at: Some(Instant::now()),
                };
                Ok(())
            }
            Err(err) => {
                tracing::warn!(url = %self.url, error = %err, "JWKS fetch failed");
                Err(err)
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, AuthError> {
        let unavailable = |reason: &str| AuthError::JwksUnavailable(reason.to_owned());
        let mut response = self.client.get(&self.url).send().await.map_err(|err| {
            if err.is_timeout() {
                unavailable("request timed out")
            } else if err.is_connect() {
                unavailable("connection failed")
            } else {
                unavailable("request failed")
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(AuthError::JwksUnavailable(format!("HTTP {status}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|_| unavailable("reading the response failed"))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(unavailable("response too large"));
            }
            body.extend_from_slice(&chunk);
        }
        let keys = parse_jwks(&body)?;
        if keys.is_empty() {
            return Err(unavailable("no usable RS256 keys"));
        }
        Ok(keys)
    }
}

/// Parses a JWKS document, keeping only RSA signature keys usable with RS256 that have a `kid`.
/// Other keys (EC, encryption keys, unknown types) are skipped, not errors.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, DecodingKey>, AuthError> {
    #[derive(Deserialize)]
    struct RawJwks {
        keys: Vec<Value>,
    }
    let raw: RawJwks = serde_json::from_slice(body)
        .map_err(|_| AuthError::JwksUnavailable("response is not a JWKS".to_owned()))?;
    let keys = raw
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter(|jwk| matches!(jwk.algorithm, AlgorithmParameters::RSA(_)))
        .filter(|jwk| {
            matches!(
                jwk.common.public_key_use,
                None | Some(PublicKeyUse::Signature)
            ) && matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256))
        })
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some((kid, key))
        })
        .collect();
    Ok(keys)
}

/// Verifies RS256 tokens against a [`JwksCache`]: signature, `exp`, `nbf` and (when configured)
/// `iss` and `aud`.
pub(crate) struct ExternalVerifier {
    keys: JwksCache,
    validation: Validation,
}

impl ExternalVerifier {
    pub(crate) fn new(keys: JwksCache, issuer: Option<String>, audience: &[String]) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = issuer.filter(|iss| !iss.is_empty()) {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(audience);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Self { keys, validation }
    }

    /// Returns the validated claims. The caller has already checked that the header says RS256.
    pub(crate) async fn verify(
        &self,
        token: &str,
        kid: Option<&str>,
    ) -> Result<Map<String, Value>, AuthError> {
        let kid = kid
            .filter(|kid| !kid.is_empty())
            .ok_or(AuthError::Invalid("missing key id"))?;
        let key = self.keys.key(kid).await?;
        jsonwebtoken::decode::<Map<String, Value>>(token, &key, &self.validation)
            .map(|data| data.claims)
            .map_err(map_jwt_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE_JWKS: &str = include_str!("../../tests/fixtures/auth/jwks.json");

    #[test]
    fn fixture_jwks_parses() {
        let keys = parse_jwks(FIXTURE_JWKS.as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys.contains_key("test-key-1"));
    }

    #[test]
    fn non_rsa_and_non_signature_keys_are_skipped() {
        let mut jwks: Value = serde_json::from_str(FIXTURE_JWKS).unwrap();
        let rsa = jwks["keys"][0].clone();
        let mut enc = rsa.clone();
        enc["kid"] = "enc".into();
        enc["use"] = "enc".into();
        let mut rs512 = rsa.clone();
        rs512["kid"] = "rs512".into();
        rs512["alg"] = "RS512".into();
        let mut no_kid = rsa.clone();
        no_kid.as_object_mut().unwrap().remove("kid");
        let oct = serde_json::json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"});
        let weird = serde_json::json!({"kty": "nope", "kid": "weird"});
        jwks["keys"] = Value::Array(vec![rsa, enc, rs512, no_kid, oct, weird]);
        let keys = parse_jwks(jwks.to_string().as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["test-key-1"]);
    }

    #[test]
    fn garbage_is_unavailable() {
        assert!(matches!(
            parse_jwks(b"<html>"),
            Err(AuthError::JwksUnavailable(_))
        ));
    }
}
