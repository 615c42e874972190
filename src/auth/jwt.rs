//! JWT issue and verify (HS256), and the signing secret kept in the state directory.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::store::Role;

/// The claims roost signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id (ULID).
    pub sub: String,
    pub role: Role,
    pub iat: u64,
    pub exp: u64,
    /// The account's token generation when issued; a token of an older generation was
    /// revoked (tokens from before generations existed carry 0, the first one).
    #[serde(default)]
    pub gen: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read or create the JWT secret {path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the JWT secret {0} is shorter than 32 bytes; remove it to have a new one generated")]
    TooShort(std::path::PathBuf),
}

/// Loads `dir/jwt.secret`, generating 64 random bytes (mode 0600) at first start.
pub fn load_or_create_secret(dir: &Path) -> Result<Vec<u8>, SecretError> {
    let path = dir.join("jwt.secret");
    let io = |source| SecretError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            let mut secret = vec![0u8; 64];
            rand::rngs::OsRng.fill_bytes(&mut secret);
            f.write_all(&secret).map_err(io)?;
            f.sync_all().map_err(io)?;
            tracing::info!(path = %path.display(), "generated a new JWT signing secret");
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let secret = std::fs::read(&path).map_err(io)?;
            if secret.len() < 32 {
                return Err(SecretError::TooShort(path));
            }
            // Keep the secret private even if someone loosened the mode by hand.
            let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "JWT secret was readable by others; setting mode 0600");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io)?;
            }
            Ok(secret)
        }
        Err(e) => Err(io(e)),
    }
}

/// Signs and checks tokens with one secret.
pub struct Jwt {
    enc: EncodingKey,
    dec: DecodingKey,
    validation: Validation,
    ttl_secs: u64,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is invalid")]
    Invalid(#[source] jsonwebtoken::errors::Error),
}

impl Jwt {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Jwt {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        Jwt {
            enc: EncodingKey::from_secret(secret),
            dec: DecodingKey::from_secret(secret),
            validation,
            ttl_secs,
        }
    }

    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// Issues a token for `sub` with `role` and token generation `gen`, valid from `now`
    /// for the configured lifetime.
    pub fn issue(&self, sub: &str, role: Role, gen: u32, now: u64) -> Result<String, TokenError> {
        let claims = Claims {
            sub: sub.to_owned(),
            role,
            iat: now,
            exp: now + self.ttl_secs,
            gen,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc)
            .map_err(TokenError::Invalid)
    }

    /// Verifies signature, algorithm and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.dec, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e),
            })
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn issue_and_verify() {
        let j = Jwt::new(SECRET, 3600);
        let t = j.issue("01ABC", Role::Admin, 0, unix_now()).expect("issue");
        let c = j.verify(&t).expect("verify");
        assert_eq!(c.sub, "01ABC");
        assert_eq!(c.role, Role::Admin);
        assert_eq!(c.exp - c.iat, 3600);
    }

    #[test]
    fn expired_tokens_are_refused() {
        let j = Jwt::new(SECRET, 60);
        let t = j.issue("u", Role::User, 0, unix_now() - 61).expect("issue");
        assert!(matches!(j.verify(&t), Err(TokenError::Expired)));
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let j = Jwt::new(SECRET, 3600);
        let t = j.issue("u", Role::User, 0, unix_now()).expect("issue");
        // Another secret.
        assert!(matches!(
            Jwt::new(b"another secret, also 32 bytes long!", 3600).verify(&t),
            Err(TokenError::Invalid(_))
        ));
        // Role raised in the payload, signature kept.
        let parts: Vec<&str> = t.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = String::from_utf8(b64.decode(parts[1]).expect("b64")).expect("utf8");
        let forged = b64.encode(payload.replace("\"user\"", "\"admin\""));
        let t2 = format!("{}.{}.{}", parts[0], forged, parts[2]);
        assert!(matches!(j.verify(&t2), Err(TokenError::Invalid(_))));
        // alg=none.
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        assert!(j.verify(&none).is_err());
        assert!(j.verify("garbage").is_err());
        assert!(j.verify("").is_err());
    }

    #[test]
    fn secret_is_created_private_and_reused() {
        let d = tempfile::tempdir().expect("tempdir");
        let a = load_or_create_secret(d.path()).expect("create");
        let mode = std::fs::metadata(d.path().join("jwt.secret"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_secret(d.path()).expect("reuse"), a);
        assert_eq!(a.len(), 64);
    }
}
