//! Built-in HS256 tokens and the server secret that signs them.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    map_jwt_error, verified_from_claims, AuthError, TokenSource, VerifiedToken, LEEWAY_SECS,
};

/// `iss` of every built-in token.
pub const BUILTIN_ISSUER: &str = "codekraft";

/// File name of the persisted dev secret inside the data directory.
const SECRET_FILE: &str = "jwt-secret";

#[derive(Serialize)]
struct BuiltInClaims<'a> {
    sub: &'a str,
    /// The session the token belongs to (revocable server-side).
    sid: &'a str,
    iat: u64,
    exp: u64,
    iss: &'static str,
}

/// Signs and verifies built-in HS256 tokens with the server secret.
#[derive(Clone)]
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    pub fn new(secret: &str, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_issuer(&[BUILTIN_ISSUER]);
        // `iss` is checked when present; tokens minted with the server secret by other tools
        // (scripts, the conformance checks) often carry only `sub` and `exp`.
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            ttl,
        }
    }

    /// Issues a token of session `session_id` for `subject`, valid for the configured TTL.
    pub fn issue_token(&self, subject: &str, session_id: &str) -> String {
        let iat = jsonwebtoken::get_current_timestamp();
        let claims = BuiltInClaims {
            sub: subject,
            sid: session_id,
            iat,
            exp: iat.saturating_add(self.ttl.as_secs()),
            iss: BUILTIN_ISSUER,
        };
        // HMAC signing of a plain struct cannot fail: serialization is infallible and any
        // byte string is a valid HMAC key.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing is infallible")
    }

    /// Verifies signature, `iss`, `exp` and `nbf` (with [`LEEWAY_SECS`]).
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, AuthError> {
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &self.validation)
                .map_err(map_jwt_error)?;
        verified_from_claims(&data.claims, TokenSource::BuiltIn, None)
    }
}

/// Returns the secret stored in `{data_dir}/jwt-secret`, creating it (and `data_dir`) when
/// absent: 32 random bytes, base64url, file mode 0600. Later starts reuse it, so issued tokens
/// survive restarts. Safe against two processes starting at once (the file is linked into place
/// atomically; the loser reads the winner's secret). For development: production should
/// configure the secret explicitly.
pub fn load_or_create_secret(data_dir: &Path) -> io::Result<String> {
    fs::create_dir_all(data_dir)?;
    let path = data_dir.join(SECRET_FILE);
    if let Some(secret) = read_secret(&path)? {
        return Ok(secret);
    }

    let secret = generate_secret();
    let tmp = data_dir.join(format!(
        ".{SECRET_FILE}.{}.{}",
        std::process::id(),
        rand::rngs::OsRng.next_u32()
    ));
    let written = write_private(&tmp, &secret).and_then(|()| fs::hard_link(&tmp, &path));
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated a new jwt secret");
            Ok(secret)
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => read_secret(&path)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "jwt-secret is empty")),
        Err(err) => Err(err),
    }
}

/// Reads the secret file: `None` when it does not exist, an error when it is empty.
fn read_secret(path: &Path) -> io::Result<Option<String>> {
    let content = match fs::read_to_string(path) {
        Ok(content) => content,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let secret = content.trim();
    if secret.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is empty: delete it or put a secret in it",
                path.display()
            ),
        ));
    }
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "jwt secret file was readable by others; setting mode 0600");
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(Some(secret.to_owned()))
}

fn write_private(path: &Path, secret: &str) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "test-secret-0123456789abcdef0123456789";

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(SECRET, Duration::from_secs(3600))
    }

    fn sign(claims: &Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn round_trip() {
        let token = issuer().issue_token("user-42", "session-1");
        let verified = issuer().verify(&token).unwrap();
        assert_eq!(verified.subject, "user-42");
        assert_eq!(verified.source, TokenSource::BuiltIn);
        assert_eq!(verified.plan, None);
        assert!(verified.expires_at >= now() + 3590 && verified.expires_at <= now() + 3600);
    }

    #[test]
    fn claims_are_sub_sid_iat_exp_iss() {
        let token = issuer().issue_token("u", "s");
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let keys: Vec<_> = claims.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 5, "{claims}");
        assert_eq!(claims["iss"], "codekraft");
        assert_eq!(claims["sub"], "u");
        assert_eq!(claims["sid"], "s");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            3600
        );
    }

    #[test]
    fn expired_is_refused() {
        let token = sign(
            &json!({"sub": "u", "iss": "codekraft", "iat": now() - 7200, "exp": now() - 3600}),
            SECRET,
        );
        assert_eq!(issuer().verify(&token), Err(AuthError::Expired));
    }

    #[test]
    fn expiry_within_leeway_is_accepted() {
        let token = sign(
            &json!({"sub": "u", "iss": "codekraft", "exp": now() - LEEWAY_SECS / 2}),
            SECRET,
        );
        assert!(issuer().verify(&token).is_ok());
    }

    #[test]
    fn nbf_in_future_is_refused() {
        let token = sign(
            &json!({"sub": "u", "iss": "codekraft", "nbf": now() + 3600, "exp": now() + 7200}),
            SECRET,
        );
        assert_eq!(issuer().verify(&token), Err(AuthError::NotYetValid));
    }

    #[test]
    fn wrong_secret_is_refused() {
        let token = TokenIssuer::new(
            "another-secret-that-is-long-enough!!",
            Duration::from_secs(60),
        )
        .issue_token("u", "s");
        assert_eq!(
            issuer().verify(&token),
            Err(AuthError::Invalid("bad signature"))
        );
    }

    #[test]
    fn a_wrong_issuer_is_refused_and_a_missing_one_allowed() {
        let wrong = sign(
            &json!({"sub": "u", "iss": "someone-else", "exp": now() + 60}),
            SECRET,
        );
        assert_eq!(
            issuer().verify(&wrong),
            Err(AuthError::Invalid("wrong issuer"))
        );
        let missing = sign(&json!({"sub": "u", "exp": now() + 60}), SECRET);
        assert_eq!(issuer().verify(&missing).unwrap().subject, "u");
        let no_expiry = sign(&json!({"sub": "u"}), SECRET);
        assert_eq!(
            issuer().verify(&no_expiry),
            Err(AuthError::Invalid("missing required claim"))
        );
    }

    #[test]
    fn missing_exp_or_sub_is_refused() {
        let no_exp = sign(&json!({"sub": "u", "iss": "codekraft"}), SECRET);
        assert_eq!(
            issuer().verify(&no_exp),
            Err(AuthError::Invalid("missing required claim"))
        );
        let empty_sub = sign(
            &json!({"sub": "", "iss": "codekraft", "exp": now() + 60}),
            SECRET,
        );
        assert_eq!(
            issuer().verify(&empty_sub),
            Err(AuthError::Invalid("missing subject"))
        );
    }

    #[test]
    fn secret_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("nested/data");
        let first = load_or_create_secret(&data_dir).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(&first).unwrap().len(), 32);

        let path = data_dir.join("jwt-secret");
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let second = load_or_create_secret(&data_dir).unwrap();
        assert_eq!(first, second);
        // No temp files left behind.
        assert_eq!(fs::read_dir(&data_dir).unwrap().count(), 1);

        // A token issued before the "restart" still verifies after it.
        let token = TokenIssuer::new(&first, Duration::from_secs(60)).issue_token("u", "s");
        assert!(TokenIssuer::new(&second, Duration::from_secs(60))
            .verify(&token)
            .is_ok());
    }

    #[test]
    fn existing_secret_is_used_and_permissions_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt-secret");
        fs::write(&path, "configured-secret\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            load_or_create_secret(dir.path()).unwrap(),
            "configured-secret"
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn empty_secret_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("jwt-secret"), "\n").unwrap();
        let err = load_or_create_secret(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn concurrent_creation_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let secrets: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create_secret(dir.path()).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(secrets.windows(2).all(|w| w[0] == w[1]));
    }
}
