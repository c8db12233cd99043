//! RS256 tokens from an external identity provider (Clerk), verified with keys fetched from its
//! JWKS endpoint.
//!
//! Keys are cached for a TTL and refetched when a token names an unknown `kid` (key rotation),
//! but at most once per minimum interval, so a flood of tokens with made-up `kid`s cannot hammer
//! the provider. Fetches are single-flight. When a fetch fails, the previous keys keep serving.

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{map_jwt_error, AuthError, LEEWAY_SECS};

/// How long fetched keys are trusted without refetching.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10 * 60);
/// Minimum time between two fetch attempts (unknown `kid`, expired cache or failed fetch).
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// A cached JWKS: `kid` → RSA verification key.
pub struct JwksCache {
    url: String,
    client: reqwest::Client,
    ttl: Duration,
    min_refresh_interval: Duration,
    keys: RwLock<KeySet>,
    /// Held during a fetch (single flight); holds the time of the last fetch attempt.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
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
            .field("url", &self.url)
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
            url: url.into(),
            client,
            ttl: DEFAULT_TTL,
            min_refresh_interval: DEFAULT_MIN_REFRESH_INTERVAL,
            keys: RwLock::default(),
            last_attempt: tokio::sync::Mutex::new(None),
        }
    }

    pub fn with_timings(mut self, ttl: Duration, min_refresh_interval: Duration) -> Self {
        self.ttl = ttl;
        self.min_refresh_interval = min_refresh_interval;
        self
    }

    /// The RSA key for `kid`, fetching the key set when it is missing, expired or lacks `kid`
    /// (rate-limited). Unknown `kid` → [`AuthError::Invalid`]; no key set could ever be fetched
    /// → [`AuthError::JwksUnavailable`].
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        if let Some(key) = self.lookup(kid, true) {
            return Ok(key);
        }
        let mut last_attempt = self.last_attempt.lock().await;
        // Another task may have refreshed while this one waited.
        if let Some(key) = self.lookup(kid, true) {
            return Ok(key);
        }
        let may_fetch = last_attempt.is_none_or(|at| at.elapsed() >= self.min_refresh_interval);
        if may_fetch {
            *last_attempt = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => {
                    tracing::debug!(url = %self.url, keys = keys.len(), "fetched JWKS");
                    *self.keys.write().unwrap_or_else(|e| e.into_inner()) = KeySet {
                        keys,
                        fetched_at: Some(Instant::now()),
                    };
                }
                Err(err) => {
                    tracing::warn!(url = %self.url, error = %err, "JWKS fetch failed");
                    if self.never_fetched() {
                        return Err(err);
                    }
                }
            }
        }
        drop(last_attempt);
        // Possibly stale keys: better than refusing everyone while the provider is down or
        // while rate-limited.
        match self.lookup(kid, false) {
            Some(key) => Ok(key),
            None if self.never_fetched() => Err(AuthError::JwksUnavailable(
                "key set not loaded yet".to_owned(),
            )),
            None => Err(AuthError::Invalid("unknown key id")),
        }
    }

    fn lookup(&self, kid: &str, fresh_only: bool) -> Option<DecodingKey> {
        let set = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let fresh = set.fetched_at.is_some_and(|at| at.elapsed() < self.ttl);
        if fresh_only && !fresh {
            return None;
        }
        set.keys.get(kid).cloned()
    }

    fn never_fetched(&self) -> bool {
        let set = self.keys.read().unwrap_or_else(|e| e.into_inner());
        set.fetched_at.is_none()
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
/// `iss`.
pub(crate) struct ExternalVerifier {
    keys: JwksCache,
    validation: Validation,
}

impl ExternalVerifier {
    pub(crate) fn new(keys: JwksCache, issuer: Option<String>) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        match issuer.filter(|iss| !iss.is_empty()) {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                validation.set_required_spec_claims(&["exp", "sub", "iss"]);
            }
            None => validation.set_required_spec_claims(&["exp", "sub"]),
        }
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
