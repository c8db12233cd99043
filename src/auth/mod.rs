//! Authentication: passwords, our own HS256 tokens for built-in accounts, and RS256 tokens from an
//! external identity provider (Clerk) verified against its JWKS.
//!
//! Independent of the database and of the HTTP/GraphQL layers: the adapters take the
//! `Authorization` header ([`parse_bearer`]), call [`Authenticator::verify`] and turn the
//! [`VerifiedToken`] into a `Viewer` (provisioning a user row on the first valid external token).
//!
//! Algorithm selection is strict: the token header's `alg` picks exactly one verifier, and each
//! verifier only holds keys of its own family. `HS256` is checked with the server secret only,
//! `RS256` with JWKS keys only; `none` and every other algorithm are refused. So an RSA public
//! key can never be used as an HMAC secret (the classic key-confusion attack).

mod jwks;
mod jwt;
mod password;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

pub use jwks::JwksCache;
pub use jwt::{load_or_create_secret, TokenIssuer, BUILTIN_ISSUER};
pub use password::{hash_password, hash_password_async, verify_password, verify_password_async};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// Why a request could not be authenticated. The messages are safe to show to clients: they
/// never contain the token, a key or the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials were presented (no header, empty token).
    #[error("missing credentials")]
    Missing,
    /// The token is malformed, badly signed, from the wrong issuer, uses a refused algorithm…
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    /// Issuing built-in tokens was asked for but no server secret is configured.
    #[error("built-in accounts are disabled")]
    BuiltInDisabled,
    /// The identity provider's key set could not be fetched (network, HTTP status, bad JSON).
    /// Not the client's fault: map to a 503/internal error, not to "unauthenticated".
    #[error("identity provider keys unavailable: {0}")]
    JwksUnavailable(String),
    #[error("password hashing failed")]
    PasswordHash,
}

impl AuthError {
    /// `true` when the client presented bad or no credentials (→ `Unauthenticated`); `false`
    /// for server-side failures (→ `Internal` / service unavailable).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            Self::Missing | Self::Invalid(_) | Self::Expired | Self::NotYetValid
        )
    }
}

/// Subscription plan as asserted by an external token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plan {
    Free,
    Pro,
}

impl Plan {
    /// Reads a plan claim value such as Clerk's `"u:pro"` / `"u:free_user"` or a plain
    /// `"pro"` / `"free"` (case-insensitive). Values containing `pro` win over `free`;
    /// anything else is `None` (the database decides).
    pub fn from_claim(value: &str) -> Option<Self> {
        let value = value.to_ascii_lowercase();
        if value.contains("pro") {
            Some(Self::Pro)
        } else if value.contains("free") {
            Some(Self::Free)
        } else {
            None
        }
    }
}

/// Who issued a verified token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// Our own HS256 token for a built-in (password) account; `subject` is our user id.
    BuiltIn,
    /// The external identity provider's RS256 token; `subject` is the provider's user id.
    External,
}

/// The outcome of a successful [`Authenticator::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub subject: String,
    /// The `email` claim, when the provider includes it (Clerk: via a session token template).
    pub email: Option<String>,
    /// The plan claim (see [`AuthConfig::plan_claim`]); `None` when absent or unrecognised.
    pub plan: Option<Plan>,
    pub source: TokenSource,
    /// `exp` of the token, in seconds since the Unix epoch (e.g. to close a WS connection).
    pub expires_at: u64,
}

/// Authentication settings.
#[derive(Clone)]
pub struct AuthConfig {
    /// HMAC secret for built-in tokens (see [`load_or_create_secret`]). An empty string disables
    /// built-in tokens: every HS256 token is refused and issuing fails.
    pub jwt_secret: String,
    /// JWKS URL of the external identity provider, e.g.
    /// `https://<app>.clerk.accounts.dev/.well-known/jwks.json`. `None`: RS256 tokens are refused.
    pub jwks_url: Option<String>,
    /// Required `iss` of external tokens (Clerk: the Frontend API URL). `None`: not checked.
    pub issuer: Option<String>,
    /// Claim holding the plan in external tokens (`AUTH_PLAN_CLAIM`, e.g. `pla` or `plan`).
    /// `None`: `pla`, then `plan`.
    pub plan_claim: Option<String>,
    /// Lifetime of issued built-in tokens.
    pub token_ttl: Duration,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &"<redacted>")
            .field("jwks_url", &self.jwks_url)
            .field("issuer", &self.issuer)
            .field("plan_claim", &self.plan_claim)
            .field("token_ttl", &self.token_ttl)
            .finish()
    }
}

const DEFAULT_PLAN_CLAIMS: [&str; 2] = ["pla", "plan"];

/// Verifies bearer tokens and issues built-in ones. Cheap to clone (shared state behind an `Arc`).
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    builtin: Option<TokenIssuer>,
    external: Option<jwks::ExternalVerifier>,
    plan_claim: Option<String>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("builtin", &self.inner.builtin.is_some())
            .field("external", &self.inner.external.is_some())
            .finish()
    }
}

impl Authenticator {
    /// Builds the verifiers. Does no I/O: the JWKS is fetched on the first RS256 token.
    pub fn new(config: AuthConfig) -> Self {
        Self::build(config, JwksCache::new)
    }

    /// Like [`Authenticator::new`] with explicit JWKS cache timings (defaults: keys trusted for
    /// 10 min, at most one fetch per 30 s). Mostly for tests.
    pub fn with_jwks_timings(
        config: AuthConfig,
        ttl: Duration,
        min_refresh_interval: Duration,
    ) -> Self {
        Self::build(config, |url| {
            JwksCache::new(url).with_timings(ttl, min_refresh_interval)
        })
    }

    fn build(config: AuthConfig, make_cache: impl FnOnce(String) -> JwksCache) -> Self {
        let builtin = (!config.jwt_secret.is_empty())
            .then(|| TokenIssuer::new(&config.jwt_secret, config.token_ttl));
        let secret_len = config.jwt_secret.len();
        if (1..32).contains(&secret_len) {
            tracing::warn!(secret_len, "jwt secret is shorter than 32 bytes");
        }
        let external = config
            .jwks_url
            .map(|url| jwks::ExternalVerifier::new(make_cache(url), config.issuer));
        Self {
            inner: Arc::new(Inner {
                builtin,
                external,
                plan_claim: config.plan_claim.filter(|c| !c.is_empty()),
            }),
        }
    }

    /// Issues a built-in HS256 token (`sub`, `iat`, `exp`, `iss = "codekraft"`) valid for
    /// [`AuthConfig::token_ttl`]. Fails only with [`AuthError::BuiltInDisabled`].
    pub fn issue_token(&self, subject: &str) -> Result<String, AuthError> {
        self.inner
            .builtin
            .as_ref()
            .map(|issuer| issuer.issue_token(subject))
            .ok_or(AuthError::BuiltInDisabled)
    }

    /// Verifies a bearer token (without the `Bearer ` prefix, see [`parse_bearer`]).
    pub async fn verify(&self, bearer_token: &str) -> Result<VerifiedToken, AuthError> {
        let token = bearer_token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        // An unknown `alg` (including "none") fails to parse here.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("malformed token"))?;
        match header.alg {
            Algorithm::HS256 => match &self.inner.builtin {
                Some(issuer) => issuer.verify(token),
                None => Err(AuthError::Invalid("unsupported algorithm")),
            },
            Algorithm::RS256 => match &self.inner.external {
                Some(external) => {
                    let claims = external.verify(token, header.kid.as_deref()).await?;
                    let plan = self.read_plan(&claims);
                    verified_from_claims(&claims, TokenSource::External, plan)
                }
                None => Err(AuthError::Invalid("unsupported algorithm")),
            },
            _ => Err(AuthError::Invalid("unsupported algorithm")),
        }
    }

    fn read_plan(&self, claims: &Map<String, Value>) -> Option<Plan> {
        let value = match &self.inner.plan_claim {
            Some(name) => claims.get(name),
            None => DEFAULT_PLAN_CLAIMS
                .iter()
                .find_map(|name| claims.get(*name)),
        };
        value.and_then(Value::as_str).and_then(Plan::from_claim)
    }
}

/// Extracts the token from an `Authorization` header value: `Bearer <token>`, scheme
/// case-insensitive. An empty header is [`AuthError::Missing`]; another scheme or a token with
/// spaces is [`AuthError::Invalid`].
pub fn parse_bearer(header_value: &str) -> Result<&str, AuthError> {
    let value = header_value.trim();
    if value.is_empty() {
        return Err(AuthError::Missing);
    }
    let (scheme, token) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .ok_or(AuthError::Invalid("expected a Bearer token"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Invalid("expected a Bearer token"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.contains(|c: char| c.is_ascii_whitespace()) {
        return Err(AuthError::Invalid("malformed token"));
    }
    Ok(token)
}

/// Turns validated claims into a [`VerifiedToken`]; `sub` must be a non-empty string.
fn verified_from_claims(
    claims: &Map<String, Value>,
    source: TokenSource,
    plan: Option<Plan>,
) -> Result<VerifiedToken, AuthError> {
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(AuthError::Invalid("missing subject"))?;
    let expires_at = claims
        .get("exp")
        .and_then(|exp| exp.as_u64().or_else(|| exp.as_f64().map(|f| f as u64)))
        .ok_or(AuthError::Invalid("missing expiry"))?;
    let email = claims
        .get("email")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    Ok(VerifiedToken {
        subject: subject.to_owned(),
        email,
        plan,
        source,
        expires_at,
    })
}

/// Maps a jsonwebtoken failure to a client-safe error.
fn map_jwt_error(err: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match err.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::Invalid("bad signature"),
        ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer"),
        ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience"),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::Invalid("unsupported algorithm")
        }
        ErrorKind::MissingRequiredClaim(_) => AuthError::Invalid("missing required claim"),
        _ => AuthError::Invalid("malformed token"),
    }
}
