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
pub use password::{hash_password, verify_password, PasswordHashing};

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
    /// Every password hashing slot stayed busy for the whole wait.
    #[error("too many password checks at once")]
    HashingBusy,
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
    /// The `sid` of a built-in token: the server-side session that can revoke it. `None` for
    /// external tokens (their sessions live at the provider) and for built-in tokens minted
    /// without one (only holders of the server secret can mint those).
    pub session_id: Option<String>,
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
    /// Allowed `azp` (authorized party: the web origin that requested the token) of external
    /// tokens, e.g. `["https://app.codekraft.dev", "http://localhost:5173"]`. Empty: not checked.
    /// When set, a token must name one of them (one without `azp` is refused).
    pub authorized_parties: Vec<String>,
    /// Accepted `aud` of external tokens. Empty: not checked; when set, a token must carry one.
    pub audience: Vec<String>,
}

impl AuthConfig {
    /// Refuses settings that would accept tokens they should not: an external provider without
    /// an issuer to pin, or whose keys come over plain http from another machine.
    pub fn validate(&self) -> Result<(), String> {
        let Some(url) = &self.jwks_url else {
            return Ok(());
        };
        if self.issuer.as_deref().is_none_or(str::is_empty) {
            return Err("AUTH_JWKS_URL needs AUTH_ISSUER: tokens of any issuer would pass".into());
        }
        if !is_secure_url(url) {
            return Err(format!(
                "AUTH_JWKS_URL must be https (plain http only to loopback): {url}"
            ));
        }
        Ok(())
    }
}

impl Default for AuthConfig {
    /// Built-in tokens disabled (empty secret), no external provider, 24 h token lifetime.
    fn default() -> Self {
        Self {
            jwt_secret: String::new(),
            jwks_url: None,
            issuer: None,
            plan_claim: None,
            token_ttl: Duration::from_secs(24 * 60 * 60),
            authorized_parties: Vec::new(),
            audience: Vec::new(),
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &"<redacted>")
            .field("jwks_url", &self.jwks_url)
            .field("issuer", &self.issuer)
            .field("plan_claim", &self.plan_claim)
            .field("token_ttl", &self.token_ttl)
            .field("authorized_parties", &self.authorized_parties)
            .field("audience", &self.audience)
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
    authorized_parties: Vec<String>,
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

    /// Like [`Authenticator::new`] with explicit JWKS cache timings (defaults: key set refreshed
    /// in the background after 10 min, at most one fetch per 30 s). Mostly for tests.
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
        let external = config.jwks_url.map(|url| {
            jwks::ExternalVerifier::new(make_cache(url), config.issuer, &config.audience)
        });
        Self {
            inner: Arc::new(Inner {
                builtin,
                external,
                plan_claim: config.plan_claim.filter(|c| !c.is_empty()),
                authorized_parties: config.authorized_parties,
            }),
        }
    }

    /// Issues a built-in HS256 token (`sub`, `sid`, `iat`, `exp`, `iss = "codekraft"`) valid
    /// for [`AuthConfig::token_ttl`]. Fails only with [`AuthError::BuiltInDisabled`].
    pub fn issue_token(&self, subject: &str, session_id: &str) -> Result<String, AuthError> {
        self.inner
            .builtin
            .as_ref()
            .map(|issuer| issuer.issue_token(subject, session_id))
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
                    self.check_authorized_party(&claims)?;
                    let plan = self.read_plan(&claims);
                    verified_from_claims(&claims, TokenSource::External, plan)
                }
                None => Err(AuthError::Invalid("unsupported algorithm")),
            },
            _ => Err(AuthError::Invalid("unsupported algorithm")),
        }
    }

    fn check_authorized_party(&self, claims: &Map<String, Value>) -> Result<(), AuthError> {
        let allowed = &self.inner.authorized_parties;
        match claims.get("azp") {
            _ if allowed.is_empty() => Ok(()),
            None => Err(AuthError::Invalid("missing authorized party")),
            Some(Value::String(azp)) if allowed.iter().any(|party| party == azp) => Ok(()),
            Some(_) => Err(AuthError::Invalid("unauthorized party")),
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

/// `https://…`, or plain http to a loopback host (local development and tests).
fn is_secure_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return url.starts_with("https://");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
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
    // Clerk's tokens carry a `sid` too, of a session we know nothing of.
    let session_id = match source {
        TokenSource::BuiltIn => claims.get("sid").and_then(Value::as_str).map(str::to_owned),
        TokenSource::External => None,
    };
    Ok(VerifiedToken {
        subject: subject.to_owned(),
        email,
        plan,
        source,
        expires_at,
        session_id,
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::{Json, Router};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use tokio::sync::oneshot;

    use super::*;

    const SECRET: &str = "test-secret-0123456789abcdef0123456789";
    const ISSUER: &str = "https://clerk.example.test";
    const PRIVATE_PEM: &[u8] = include_bytes!("../../tests/fixtures/auth/rsa-private.pem");
    const PUBLIC_PEM: &[u8] = include_bytes!("../../tests/fixtures/auth/rsa-public.pem");
    const ATTACKER_PEM: &[u8] = include_bytes!("../../tests/fixtures/auth/attacker-private.pem");
    const JWKS: &str = include_str!("../../tests/fixtures/auth/jwks.json");

    /// A JWKS endpoint on 127.0.0.1:0 that counts requests; its document can be swapped and a
    /// request held.
    struct FakeJwks {
        url: String,
        state: Arc<FakeState>,
    }

    struct FakeState {
        hits: AtomicUsize,
        body: Mutex<Option<Value>>,
        held: Mutex<Option<HeldHandler>>,
    }

    /// The handler's side of [`HeldRequest`].
    struct HeldHandler {
        entered: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    }

    /// A request that waits in the fake's handler until released.
    struct HeldRequest {
        /// Fires once the request has reached the handler.
        entered: oneshot::Receiver<()>,
        /// Lets the handler answer, with the document current at that moment. Sending fails if
        /// the request was abandoned meanwhile.
        release: oneshot::Sender<()>,
    }

    impl FakeJwks {
        async fn start() -> Self {
            let state = Arc::new(FakeState {
                hits: AtomicUsize::new(0),
                body: Mutex::new(Some(serde_json::from_str(JWKS).unwrap())),
                held: Mutex::new(None),
            });
            let app = Router::new()
                .route("/.well-known/jwks.json", get(serve_jwks))
                .with_state(state.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            Self {
                url: format!("http://{addr}/.well-known/jwks.json"),
                state,
            }
        }

        fn hits(&self) -> usize {
            self.state.hits.load(Ordering::SeqCst)
        }

        /// Waits, with a generous deadline, until the endpoint has been hit `hits` times.
        async fn wait_for_hits(&self, hits: usize) {
            let reached = async {
                while self.hits() < hits {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(10), reached)
                .await
                .unwrap_or_else(|_| panic!("{} hits, expected {hits}", self.hits()));
        }

        /// Makes the next request wait in the handler until released.
        fn hold_next_request(&self) -> HeldRequest {
            let (entered_tx, entered) = oneshot::channel();
            let (release, release_rx) = oneshot::channel();
            *self.state.held.lock().unwrap() = Some(HeldHandler {
                entered: entered_tx,
                release: release_rx,
            });
            HeldRequest { entered, release }
        }

        /// Publishes the fixture key a second time under `kid` (a key rotation).
        fn add_key_alias(&self, kid: &str) {
            let mut body = self.state.body.lock().unwrap();
            let keys = body.as_mut().unwrap()["keys"].as_array_mut().unwrap();
            let mut key = keys[0].clone();
            key["kid"] = kid.into();
            keys.push(key);
        }

        /// `None`: the endpoint answers 500.
        fn set_body(&self, body: Option<Value>) {
            *self.state.body.lock().unwrap() = body;
        }
    }

    async fn serve_jwks(State(state): State<Arc<FakeState>>) -> Result<Json<Value>, StatusCode> {
        state.hits.fetch_add(1, Ordering::SeqCst);
        let held = state.held.lock().unwrap().take();
        if let Some(held) = held {
            let _ = held.entered.send(());
            let _ = held.release.await;
        }
        let body = state.body.lock().unwrap().clone();
        body.map(Json).ok_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn config(jwt_secret: &str, jwks_url: Option<&str>) -> AuthConfig {
        AuthConfig {
            jwt_secret: jwt_secret.to_owned(),
            jwks_url: jwks_url.map(str::to_owned),
            issuer: Some(ISSUER.to_owned()),
            plan_claim: Some("pla".to_owned()),
            token_ttl: Duration::from_secs(3600),
            authorized_parties: Vec::new(),
            audience: Vec::new(),
        }
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn clerk_claims() -> Value {
        json!({
            "sub": "user_2abc",
            "iss": ISSUER,
            "azp": "http://localhost:5173",
            "sid": "sess_123",
            "iat": now(),
            "nbf": now() - 10,
            "exp": now() + 60,
            "email": "ada@example.com",
            "pla": "u:pro",
        })
    }

    fn sign_rs(alg: Algorithm, kid: Option<&str>, claims: &Value, pem: &[u8]) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(pem).unwrap()).unwrap()
    }

    fn clerk_token(claims: &Value) -> String {
        sign_rs(Algorithm::RS256, Some("test-key-1"), claims, PRIVATE_PEM)
    }

    fn sign_hs(claims: &Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn unsigned_token(claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{header}.{payload}.")
    }

    const UNSUPPORTED: AuthError = AuthError::Invalid("unsupported algorithm");

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(parse_bearer("Bearer abc.def.ghi"), Ok("abc.def.ghi"));
        assert_eq!(parse_bearer("bearer abc"), Ok("abc"));
        assert_eq!(parse_bearer("BEARER   abc  "), Ok("abc"));
        assert_eq!(parse_bearer(""), Err(AuthError::Missing));
        assert_eq!(parse_bearer("   "), Err(AuthError::Missing));
        assert_eq!(
            parse_bearer("Bearer "),
            Err(AuthError::Invalid("expected a Bearer token"))
        );
        assert_eq!(
            parse_bearer("Bearer"),
            Err(AuthError::Invalid("expected a Bearer token"))
        );
        assert_eq!(
            parse_bearer("Basic dXNlcjpwdw=="),
            Err(AuthError::Invalid("expected a Bearer token"))
        );
        assert_eq!(
            parse_bearer("abc.def.ghi"),
            Err(AuthError::Invalid("expected a Bearer token"))
        );
        assert_eq!(
            parse_bearer("Bearer a b"),
            Err(AuthError::Invalid("malformed token"))
        );
    }

    #[test]
    fn jwks_url_security() {
        assert!(is_secure_url(
            "https://x.clerk.accounts.dev/.well-known/jwks.json"
        ));
        assert!(is_secure_url("http://127.0.0.1:4000/jwks.json"));
        assert!(is_secure_url("http://localhost/jwks.json"));
        assert!(is_secure_url("http://[::1]:80/jwks.json"));
        assert!(!is_secure_url("http://clerk.example.com/jwks.json"));
        assert!(!is_secure_url("http://localhost.evil.com/jwks.json"));
        assert!(!is_secure_url("http://127.0.0.1.evil.com/jwks.json"));
        assert!(!is_secure_url("ftp://localhost/jwks.json"));
    }

    #[test]
    fn plan_claim_values() {
        assert_eq!(Plan::from_claim("u:pro"), Some(Plan::Pro));
        assert_eq!(Plan::from_claim("pro"), Some(Plan::Pro));
        assert_eq!(Plan::from_claim("PRO"), Some(Plan::Pro));
        assert_eq!(Plan::from_claim("o:pro_team"), Some(Plan::Pro));
        assert_eq!(Plan::from_claim("u:free_user"), Some(Plan::Free));
        assert_eq!(Plan::from_claim("free"), Some(Plan::Free));
        assert_eq!(Plan::from_claim(""), None);
        assert_eq!(Plan::from_claim("u:enterprise"), None);
    }

    #[test]
    fn errors_classify_and_do_not_leak() {
        assert!(AuthError::Missing.is_unauthenticated());
        assert!(AuthError::Expired.is_unauthenticated());
        assert!(AuthError::Invalid("bad signature").is_unauthenticated());
        assert!(!AuthError::JwksUnavailable("HTTP 500".into()).is_unauthenticated());
        assert!(!AuthError::PasswordHash.is_unauthenticated());
        let debug = format!("{:?}", config(SECRET, None));
        assert!(!debug.contains(SECRET), "{debug}");
        let auth = Authenticator::new(config(SECRET, None));
        assert!(!format!("{auth:?}").contains(SECRET));
    }

    #[tokio::test]
    async fn builtin_round_trip() {
        let auth = Authenticator::new(config(SECRET, None));
        let token = auth.issue_token("user-1", "s").unwrap();
        let verified = auth.verify(&token).await.unwrap();
        assert_eq!(verified.subject, "user-1");
        assert_eq!(verified.session_id.as_deref(), Some("s"));
        assert_eq!(verified.source, TokenSource::BuiltIn);
        assert_eq!(verified.email, None);
        assert_eq!(verified.plan, None);
        // Surrounding whitespace is tolerated, emptiness is "missing".
        assert!(auth.verify(&format!(" {token} ")).await.is_ok());
        assert_eq!(auth.verify("").await, Err(AuthError::Missing));
        assert_eq!(
            auth.verify("not-a-jwt").await,
            Err(AuthError::Invalid("malformed token"))
        );
    }

    #[tokio::test]
    async fn builtin_expired_future_and_wrong_secret() {
        let auth = Authenticator::new(config(SECRET, None));
        let expired = sign_hs(
            &json!({"sub": "u", "iss": "codekraft", "exp": now() - 3600}),
            SECRET.as_bytes(),
        );
        assert_eq!(auth.verify(&expired).await, Err(AuthError::Expired));
        let future = sign_hs(
            &json!({"sub": "u", "iss": "codekraft", "nbf": now() + 3600, "exp": now() + 7200}),
            SECRET.as_bytes(),
        );
        assert_eq!(auth.verify(&future).await, Err(AuthError::NotYetValid));
        let other = Authenticator::new(config("some-other-secret-0123456789abcdef", None));
        let forged = other.issue_token("admin", "s").unwrap();
        assert_eq!(
            auth.verify(&forged).await,
            Err(AuthError::Invalid("bad signature"))
        );
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        let jwks = FakeJwks::start().await;
        let claims = json!({"sub": "u", "iss": "codekraft", "exp": now() + 60});
        let token = unsigned_token(&claims);
        for auth in [
            Authenticator::new(config(SECRET, None)),
            Authenticator::new(config(SECRET, Some(&jwks.url))),
            Authenticator::new(config("", Some(&jwks.url))),
        ] {
            let err = auth.verify(&token).await.unwrap_err();
            assert!(err.is_unauthenticated(), "{err:?}");
            // Also with a signature part appended.
            assert!(auth.verify(&format!("{token}c2ln")).await.is_err());
        }
        assert_eq!(jwks.hits(), 0);
    }

    #[tokio::test]
    async fn hs_token_refused_when_jwks_only() {
        let jwks = FakeJwks::start().await;
        let auth = Authenticator::new(config("", Some(&jwks.url)));
        assert_eq!(auth.issue_token("u", "s"), Err(AuthError::BuiltInDisabled));
        // Even signed with an empty secret (what an HS verifier with "no secret" would check).
        let claims = json!({"sub": "u", "iss": "codekraft", "exp": now() + 60});
        for secret in [&b""[..], SECRET.as_bytes()] {
            assert_eq!(
                auth.verify(&sign_hs(&claims, secret)).await,
                Err(UNSUPPORTED)
            );
        }
        assert_eq!(jwks.hits(), 0);
    }

    #[tokio::test]
    async fn rs_token_refused_without_jwks() {
        let auth = Authenticator::new(config(SECRET, None));
        let token = clerk_token(&clerk_claims());
        assert_eq!(auth.verify(&token).await, Err(UNSUPPORTED));
    }

    #[tokio::test]
    async fn other_algorithms_are_refused() {
        let jwks = FakeJwks::start().await;
        let auth = Authenticator::new(config(SECRET, Some(&jwks.url)));
        let claims = clerk_claims();
        for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
            let token = sign_rs(alg, Some("test-key-1"), &claims, PRIVATE_PEM);
            assert_eq!(auth.verify(&token).await, Err(UNSUPPORTED), "{alg:?}");
        }
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &json!({"sub": "u", "iss": "codekraft", "exp": now() + 60}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(auth.verify(&hs512).await, Err(UNSUPPORTED));
        assert_eq!(jwks.hits(), 0);
    }

    #[tokio::test]
    async fn clerk_token_accepted_and_keys_cached() {
        let jwks = FakeJwks::start().await;
        let auth = Authenticator::new(config(SECRET, Some(&jwks.url)));
        let verified = auth.verify(&clerk_token(&clerk_claims())).await.unwrap();
        assert_eq!(
            verified,
            VerifiedToken {
                subject: "user_2abc".to_owned(),
                email: Some("ada@example.com".to_owned()),
                plan: Some(Plan::Pro),
                source: TokenSource::External,
                expires_at: clerk_claims()["exp"].as_u64().unwrap(),
                // Clerk's `sid` names a session of Clerk's, not one we could revoke.
                session_id: None,
            }
        );
        assert_eq!(jwks.hits(), 1);
        for _ in 0..5 {
            auth.verify(&clerk_token(&clerk_claims())).await.unwrap();
        }
        assert_eq!(jwks.hits(), 1, "keys are cached");
        // Built-in tokens keep working alongside.
        let builtin = auth.issue_token("local-user", "s").unwrap();
        assert_eq!(
            auth.verify(&builtin).await.unwrap().source,
            TokenSource::BuiltIn
        );
    }

    #[tokio::test]
    async fn clerk_token_claim_checks() {
        let jwks = FakeJwks::start().await;
        let auth = Authenticator::new(config(SECRET, Some(&jwks.url)));
        let with = |key: &str, value: Value| {
            let mut claims = clerk_claims();
            claims[key] = value;
            clerk_token(&claims)
        };
        let without = |key: &str| {
            let mut claims = clerk_claims();
            claims.as_object_mut().unwrap().remove(key);
            clerk_token(&claims)
        };
        assert_eq!(
            auth.verify(&with("iss", "https://evil.example".into()))
                .await,
            Err(AuthError::Invalid("wrong issuer"))
        );
        assert_eq!(
            auth.verify(&without("iss")).await,
            Err(AuthError::Invalid("missing required claim"))
        );
        assert_eq!(
            auth.verify(&with("exp", (now() - 3600).into())).await,
            Err(AuthError::Expired)
        );
        assert_eq!(
            auth.verify(&with("nbf", (now() + 3600).into())).await,
            Err(AuthError::NotYetValid)
        );
        assert_eq!(
            auth.verify(&without("sub")).await,
            Err(AuthError::Invalid("missing required claim"))
        );
        assert_eq!(
            auth.verify(&without("exp")).await,
            Err(AuthError::Invalid("missing required claim"))
        );
        let no_kid = sign_rs(Algorithm::RS256, None, &clerk_claims(), PRIVATE_PEM);
        assert_eq!(
            auth.verify(&no_kid).await,
            Err(AuthError::Invalid("missing key id"))
        );
        // Signed by another key under the published kid.
        let forged = sign_rs(
            Algorithm::RS256,
            Some("test-key-1"),
            &clerk_claims(),
            ATTACKER_PEM,
        );
        assert_eq!(
            auth.verify(&forged).await,
            Err(AuthError::Invalid("bad signature"))
        );
        // Tampered payload.
        let token = clerk_token(&clerk_claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let mut claims = clerk_claims();
        claims["sub"] = "user_admin".into();
        let tampered_payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        parts[1] = &tampered_payload;
        assert_eq!(
            auth.verify(&parts.join(".")).await,
            Err(AuthError::Invalid("bad signature"))
        );
    }

    #[tokio::test]
    async fn authorized_parties() {
        let jwks = FakeJwks::start().await;
        let auth = Authenticator::new(AuthConfig {
            authorized_parties: vec![
                "https://app.codekraft.dev".to_owned(),
                "http://localhost:5173".to_owned(),
            ],
            ..config(SECRET, Some(&jwks.url))
        });
        let with_azp = |azp: Option<&str>| {
            let mut claims = clerk_claims();
            match azp {
                Some(azp) => claims["azp"] = azp.into(),
                None => {
                    claims.as_object_mut().unwrap().remove("azp");
                }
            }
            clerk_token(&claims)
        };
        assert!(auth
            .verify(&with_azp(Some("http://localhost:5173")))
            .await
            .is_ok());
        assert!(auth
            .verify(&with_azp(Some("https://app.codekraft.dev")))
            .await
            .is_ok());
        assert_eq!(
            auth.verify(&with_azp(None)).await,
            Err(AuthError::Invalid("missing authorized party"))
        );
        assert_eq!(
            auth.verify(&with_azp(Some("https://evil.example"))).await,
            Err(AuthError::Invalid("unauthorized party"))
        );
        // Without the setting, any party (or none) passes.
        let open = Authenticator::new(config(SECRET, Some(&jwks.url)));
        assert!(open.verify(&with_azp(None)).await.is_ok());
        assert!(open
            .verify(&with_azp(Some("https://evil.example")))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn audience_is_enforced_when_set() {
        let jwks = FakeJwks::start().await;
        let auth = Authenticator::new(AuthConfig {
            audience: vec!["codekraft-api".to_owned()],
            ..config(SECRET, Some(&jwks.url))
        });
        let with_aud = |aud: Option<Value>| {
            let mut claims = clerk_claims();
            if let Some(aud) = aud {
                claims["aud"] = aud;
            }
            clerk_token(&claims)
        };
        assert!(auth
            .verify(&with_aud(Some(json!("codekraft-api"))))
            .await
            .is_ok());
        assert!(auth
            .verify(&with_aud(Some(json!(["other", "codekraft-api"]))))
            .await
            .is_ok());
        assert!(auth
            .verify(&with_aud(Some(json!("other-api"))))
            .await
            .is_err());
        assert!(auth.verify(&with_aud(None)).await.is_err());
        let open = Authenticator::new(config(SECRET, Some(&jwks.url)));
        assert!(open
            .verify(&with_aud(Some(json!("other-api"))))
            .await
            .is_ok());
    }

    #[test]
    fn external_settings_must_pin_an_issuer_over_https() {
        let with = |url: &str, issuer: Option<&str>| AuthConfig {
            jwks_url: Some(url.to_owned()),
            issuer: issuer.map(str::to_owned),
            ..AuthConfig::default()
        };
        assert!(AuthConfig::default().validate().is_ok());
        let https = "https://clerk.example.com/.well-known/jwks.json";
        assert!(with(https, Some("https://clerk.example.com"))
            .validate()
            .is_ok());
        assert!(with("http://127.0.0.1:9/jwks", Some("x"))
            .validate()
            .is_ok());
        assert!(with("http://[::1]:9/jwks", Some("x")).validate().is_ok());
        let no_issuer = with(https, None).validate().unwrap_err();
        assert!(no_issuer.contains("AUTH_ISSUER"), "{no_issuer}");
        assert!(with(https, Some("")).validate().is_err());
        let plain = with("http://clerk.example.com/jwks", Some("x"))
            .validate()
            .unwrap_err();
        assert!(plain.contains("https"), "{plain}");
        assert!(with("http://localhost.evil.com/jwks", Some("x"))
            .validate()
            .is_err());
    }

    #[tokio::test]
    async fn clerk_shaped_header_is_accepted() {
        // Clerk's header carries extra fields such as `cat`.
        let jwks = FakeJwks::start().await;
        let auth = Authenticator::new(config(SECRET, Some(&jwks.url)));
        let header =
            json!({"alg": "RS256", "cat": "cl_B7d4PD111AAA", "kid": "test-key-1", "typ": "JWT"});
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(clerk_claims().to_string())
        );
        let key = EncodingKey::from_rsa_pem(PRIVATE_PEM).unwrap();
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::RS256).unwrap();
        let verified = auth
            .verify(&format!("{message}.{signature}"))
            .await
            .unwrap();
        assert_eq!(verified.subject, "user_2abc");
    }

    #[tokio::test]
    async fn issuer_is_optional() {
        let jwks = FakeJwks::start().await;
        let auth = Authenticator::new(AuthConfig {
            issuer: None,
            ..config(SECRET, Some(&jwks.url))
        });
        let mut claims = clerk_claims();
        claims.as_object_mut().unwrap().remove("iss");
        assert!(auth.verify(&clerk_token(&claims)).await.is_ok());
    }

    #[tokio::test]
    async fn key_confusion_is_refused() {
        // HS256 "signed" with the RSA public key (PEM bytes, as an attacker would read it from
        // the JWKS / PEM) must never verify, whether built-in tokens are enabled or not.
        let jwks = FakeJwks::start().await;
        let mut claims = clerk_claims();
        claims["iss"] = "codekraft".into();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("test-key-1".to_owned());
        let mut forged =
            vec![
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(PUBLIC_PEM))
                    .unwrap(),
            ];
        // Also with the JWK's raw modulus bytes as the HMAC key.
        let jwk: Value = serde_json::from_str(JWKS).unwrap();
        let modulus = URL_SAFE_NO_PAD
            .decode(jwk["keys"][0]["n"].as_str().unwrap())
            .unwrap();
        forged.push(
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&modulus)).unwrap(),
        );

        let both = Authenticator::new(config(SECRET, Some(&jwks.url)));
        let jwks_only = Authenticator::new(config("", Some(&jwks.url)));
        for token in &forged {
            assert_eq!(
                both.verify(token).await,
                Err(AuthError::Invalid("bad signature"))
            );
            assert_eq!(jwks_only.verify(token).await, Err(UNSUPPORTED));
        }
    }

    #[tokio::test]
    async fn unknown_kid_refreshes_once_then_works_after_rotation() {
        let jwks = FakeJwks::start().await;
        // Long enough that the flood below fits in one interval even on a loaded machine.
        let min_refresh = Duration::from_secs(2);
        let auth = Authenticator::with_jwks_timings(
            config(SECRET, Some(&jwks.url)),
            Duration::from_secs(600),
            min_refresh,
        );
        // Signed up front, so the rate-limited window below only contains verifications.
        let known = clerk_token(&clerk_claims());
        let rotated = sign_rs(
            Algorithm::RS256,
            Some("test-key-2"),
            &clerk_claims(),
            PRIVATE_PEM,
        );
        let bogus: Vec<String> = (0..20)
            .map(|i| {
                let kid = format!("bogus-{i}");
                sign_rs(Algorithm::RS256, Some(&kid), &clerk_claims(), PRIVATE_PEM)
            })
            .collect();

        auth.verify(&known).await.unwrap();
        assert_eq!(jwks.hits(), 1);
        // At most one fetch per interval, counting the initial load.
        tokio::time::sleep(min_refresh + Duration::from_millis(100)).await;

        assert_eq!(
            auth.verify(&rotated).await,
            Err(AuthError::Invalid("unknown key id"))
        );
        assert_eq!(jwks.hits(), 2, "an unknown kid triggers one refresh");

        // A flood of unknown kids (sequential and concurrent) does not reach the endpoint.
        for token in &bogus {
            assert_eq!(
                auth.verify(token).await,
                Err(AuthError::Invalid("unknown key id"))
            );
        }
        let flood = bogus.iter().chain([&rotated; 20]).map(|t| auth.verify(t));
        for result in futures_util::future::join_all(flood).await {
            assert_eq!(result, Err(AuthError::Invalid("unknown key id")));
        }
        assert_eq!(jwks.hits(), 2, "refreshes are rate-limited");
        // Known keys keep working meanwhile, from the cache.
        auth.verify(&known).await.unwrap();
        assert_eq!(jwks.hits(), 2);

        // The provider rotates in the new key; once the interval has passed it is picked up.
        jwks.add_key_alias("test-key-2");
        tokio::time::sleep(min_refresh + Duration::from_millis(100)).await;
        let verified = auth.verify(&rotated).await.unwrap();
        assert_eq!(verified.subject, "user_2abc");
        assert_eq!(jwks.hits(), 3);
        auth.verify(&rotated).await.unwrap();
        auth.verify(&known).await.unwrap();
        assert_eq!(jwks.hits(), 3);
    }

    #[tokio::test]
    async fn concurrent_first_requests_fetch_once() {
        let jwks = FakeJwks::start().await;
        let auth = Authenticator::new(config(SECRET, Some(&jwks.url)));
        let token = clerk_token(&clerk_claims());
        let all = (0..16).map(|_| auth.verify(&token));
        for result in futures_util::future::join_all(all).await {
            result.unwrap();
        }
        assert_eq!(jwks.hits(), 1);
    }

    #[tokio::test]
    async fn jwks_unavailable() {
        // Nothing listens on this port any more.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        drop(listener);
        let auth = Authenticator::new(config(SECRET, Some(&url)));
        let err = auth
            .verify(&clerk_token(&clerk_claims()))
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::JwksUnavailable(_)), "{err:?}");
        assert!(!err.is_unauthenticated());

        // An endpoint answering 500.
        let jwks = FakeJwks::start().await;
        jwks.set_body(None);
        let auth = Authenticator::new(config(SECRET, Some(&jwks.url)));
        assert_eq!(
            auth.verify(&clerk_token(&clerk_claims())).await,
            Err(AuthError::JwksUnavailable(
                "HTTP 500 Internal Server Error".to_owned()
            ))
        );
        // Rate-limited: a retry right away does not hit the endpoint again.
        assert!(matches!(
            auth.verify(&clerk_token(&clerk_claims())).await,
            Err(AuthError::JwksUnavailable(_))
        ));
        assert_eq!(jwks.hits(), 1);
    }

    /// Rate limit of the stale-key tests: waited out once so that a refresh may start, and long
    /// enough that no second one fits in the rest of the test.
    const REFETCH_INTERVAL: Duration = Duration::from_secs(1);

    /// A cache loaded from `jwks` whose key set is already stale and may be refetched.
    async fn stale_cache(jwks: &FakeJwks) -> JwksCache {
        let cache =
            JwksCache::new(&jwks.url).with_timings(Duration::from_millis(1), REFETCH_INTERVAL);
        cache.key("test-key-1").await.unwrap();
        assert_eq!(jwks.hits(), 1);
        tokio::time::sleep(REFETCH_INTERVAL + Duration::from_millis(100)).await;
        cache
    }

    #[tokio::test]
    async fn stale_keys_serve_at_once_while_one_background_refresh_replaces_them() {
        let jwks = FakeJwks::start().await;
        let cache = stale_cache(&jwks).await;
        let held = jwks.hold_next_request();

        // Served from the stale set while the refresh it started hangs at the provider.
        cache.key("test-key-1").await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), held.entered)
            .await
            .expect("no refresh reached the provider")
            .unwrap();
        for _ in 0..10 {
            cache.key("test-key-1").await.unwrap();
        }

        // The provider rotates in a new key and answers at last. The request is still waiting
        // (not abandoned after a client timeout): the calls above returned without it.
        jwks.add_key_alias("test-key-2");
        held.release
            .send(())
            .expect("the held request was abandoned");
        // A kid missing from the old set waits for the refresh in flight rather than fetching.
        cache.key("test-key-2").await.unwrap();
        assert_eq!(jwks.hits(), 2, "a single refresh");
    }

    #[tokio::test]
    async fn failed_background_refresh_keeps_the_old_keys() {
        let jwks = FakeJwks::start().await;
        let cache = stale_cache(&jwks).await;
        jwks.set_body(None);

        cache.key("test-key-1").await.unwrap();
        jwks.wait_for_hits(2).await;
        // An unknown kid waits for any fetch in flight, then may not fetch itself (rate limit).
        let assert_unknown_kid = || async {
            assert_eq!(
                cache.key("test-key-2").await.err(),
                Some(AuthError::Invalid("unknown key id")),
                "the old key set is still loaded"
            );
        };
        assert_unknown_kid().await;
        cache.key("test-key-1").await.unwrap();
        assert_unknown_kid().await;
        assert_eq!(jwks.hits(), 2, "no retry within the interval");
    }

    #[tokio::test]
    async fn plan_claim_name_is_configurable() {
        let jwks = FakeJwks::start().await;
        let with_plan_claim = |plan_claim: Option<&str>| {
            Authenticator::new(AuthConfig {
                plan_claim: plan_claim.map(str::to_owned),
                ..config(SECRET, Some(&jwks.url))
            })
        };
        let token = |extra: Value| {
            let mut claims = clerk_claims();
            let obj = claims.as_object_mut().unwrap();
            obj.remove("pla");
            obj.extend(extra.as_object().unwrap().clone());
            clerk_token(&claims)
        };
        let plan = |auth: Authenticator, token: String| async move {
            auth.verify(&token).await.unwrap().plan
        };
        let custom = with_plan_claim(Some("plan"));
        assert_eq!(
            plan(custom.clone(), token(json!({"plan": "pro"}))).await,
            Some(Plan::Pro)
        );
        assert_eq!(
            plan(custom.clone(), token(json!({"plan": "free"}))).await,
            Some(Plan::Free)
        );
        assert_eq!(
            plan(custom.clone(), token(json!({"pla": "u:pro"}))).await,
            None
        );
        assert_eq!(plan(custom.clone(), token(json!({}))).await, None);
        assert_eq!(plan(custom, token(json!({"plan": 3}))).await, None);

        let default = with_plan_claim(None);
        assert_eq!(
            plan(default.clone(), token(json!({"pla": "u:free_user"}))).await,
            Some(Plan::Free)
        );
        assert_eq!(
            plan(default.clone(), token(json!({"plan": "pro"}))).await,
            Some(Plan::Pro)
        );
        assert_eq!(plan(default, token(json!({}))).await, None);
    }
}
