//! SSH public keys users upload, and fresh ed25519 key pairs for users who have none.
//!
//! A key is accepted only as one OpenSSH line (`<algorithm> <base64> [comment]`) that the
//! `ssh-key` crate parses; it is stored and written into the seed in the crate's own
//! re-serialisation, never as the user's original text. Private keys made here are returned
//! once and never kept.

use ssh_key::{rand_core::OsRng, Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};

use super::CloudInitError;

/// The smallest RSA modulus accepted.
pub const MIN_RSA_BITS: usize = 2048;

/// The key families roost accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    Ed25519,
    Ecdsa,
    Rsa,
}

/// A public key that passed [`parse_public_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedKey {
    /// The family of the key.
    pub algorithm: KeyAlgorithm,
    /// Normalised one-line OpenSSH text (`ssh-ed25519 AAAA... comment`).
    pub openssh: String,
    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
}

/// Parses and checks one OpenSSH public key line.
///
/// Surrounding whitespace (a trailing newline from a file) is ignored; anything else that
/// would make it more than one line, options before the key, DSA, and RSA below 2048 bits
/// are rejected.
pub fn parse_public_key(s: &str) -> Result<ValidatedKey, CloudInitError> {
    let line = s.trim();
    if line.contains(['\n', '\r']) {
        return Err(CloudInitError::KeyNotOneLine);
    }
    let key = PublicKey::from_openssh(line).map_err(CloudInitError::KeyParse)?;
    if key.comment().chars().any(char::is_control) {
        return Err(CloudInitError::KeyComment);
    }
    let algorithm = match key.algorithm() {
        Algorithm::Ed25519 => KeyAlgorithm::Ed25519,
        Algorithm::Ecdsa { .. } => KeyAlgorithm::Ecdsa,
        Algorithm::Rsa { .. } => {
            let bits = rsa_bits(&key);
            if bits < MIN_RSA_BITS {
                return Err(CloudInitError::KeyTooShort { bits });
            }
            KeyAlgorithm::Rsa
        }
        other => return Err(CloudInitError::KeyAlgorithm(other.to_string())),
    };
    let openssh = key.to_openssh().map_err(CloudInitError::KeyParse)?;
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    Ok(ValidatedKey {
        algorithm,
        openssh,
        fingerprint,
    })
}

/// The size of an RSA key's modulus in bits (0 if it is not an RSA key).
fn rsa_bits(key: &PublicKey) -> usize {
    let Some(rsa) = key.key_data().rsa() else {
        return 0;
    };
    let Some(n) = rsa.n.as_positive_bytes() else {
        return 0;
    };
    // `as_positive_bytes` strips the sign byte; leading zero bits of the top byte do not count.
    match n.iter().position(|&b| b != 0) {
        Some(i) => (n.len() - i) * 8 - n[i].leading_zeros() as usize,
        None => 0,
    }
}

/// Makes a new ed25519 key pair: `(public OpenSSH line, private key in OpenSSH PEM format)`.
///
/// The private half is unencrypted; hand it to the user once and drop it.
pub fn generate_ed25519(comment: &str) -> Result<(String, String), CloudInitError> {
    if comment.chars().any(char::is_control) {
        return Err(CloudInitError::KeyComment);
    }
    let mut key =
        PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(CloudInitError::KeyGenerate)?;
    key.set_comment(comment);
    let public = key
        .public_key()
        .to_openssh()
        .map_err(CloudInitError::KeyGenerate)?;
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(CloudInitError::KeyGenerate)?;
    Ok((public, private.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEWSxD5aZB+0gRa89DiDa7zGTceji+OO/BZAEq8HiuLV alice@laptop";
    const ED_FP: &str = "SHA256:ekjy4TcGfCXUp4/wbu+gApWhA17k0xo1+HCu2O1xI8Q";
    const RSA1024: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDWj12ohdJtoQu+KicuLkjBgp+MG6N/lignvm9JHRSV/xzprD5cUagrNXn+jBU+Fe7+xrhJgsOopLIBB3C15xXSB84zWPy3Xa9kqZ0ig0ice+tMCJ/xhj0MUmRBuI87rLmLvHP2BfjGTQWhioybeBjjmsYu6l90Tg9Hv9DskFjJzQ== short";
    const RSA2048: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7TlU1ry8+dpHvrLOLnCgiRrLQkH1AtBgaJi5io5FB2ME0WNjNoCgHIbTn9nzvgGeOeksbwu610xG34CfuZv27qvgKHVuqeFcoJmdh8y6gJbZlmfRfVnYn3dH1xSqWMFbwd0u06oZDK//RJvrRp6VOkM/9xekCPWtGrihf6tyAmgC3L7BMvuX9vkg8AE7ygS1nCBKWY4e9fxfCQCk8AkZXBYGfKhxK9+3TRzZfqwQRkVfh3hvo8yENzs8PcPGdffkdl5Bm396D7eRYRMPnEcOPrQ+foiIm+se7xN3DjZqtEp6PdmENwPq8wEY3L1IWlpx9lKz1zRusoDgb4oHljtod ok";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBC+8A/VGV8JqMpHhSN+ssE6RAFdXatKib1pgXK6j6b/Ejf9PbGXV+exM6MBIWwbEFkW3STjbKomM7/7vx8Fftxw= ec";
    const DSA: &str = "ssh-dss AAAAB3NzaC1kc3MAAACBAMZSzB6ZgM15QqAuIHTBVK3WfE+122/AiJO/9dGCGkTWPldDg9pPdu1s/zc7mx/vmCaIjmA3TkMzYjNG+KCh9r0v9/c89Lc/U0QJzjboUNzH/P3qDApEuqW9Ctu1uS1mEfc75ivCiJJqcqRpscvejFsIFY2DibSSJJ11mMZR5terAAAAFQCvdAjWIqn2ew1eFQ0MXnLRGqKzRwAAAIAmtWKENEjsalVOyyMLerKUJsgUNzAfbreHIwn6yx8LfQh1KrBcB8iK3NfXzUqYtZiAtDsu0M+XoEXS2HxAdHpK/tr0HcwfnjyMKLQ6qigQFevqfd+UBPXfJa3x3FbHLAsF9TEHdu4HJ4K3Qz3KVqQztiPdKnoRdroBcogyD++76QAAAIAl+L5rRzKJCY4+bLQso+EbsXr3N4ztPlRcWVR0zZLtFtTWxopmjQc+vflxPBSDSARC5OetTqr2ujL3AsZQV44aMQ4vSQ/w7H8rt7+ZTD7iAlKiMJs5bnL0PuYKdVKT0+IDwU0Pg17NwY6M5Z0n9dZxYe0n3pJLjKh3q/Q6gcLx2w== old";

    #[test]
    fn accepts_ed25519_and_normalises() {
        let k = parse_public_key(&format!("  {ED}\n")).expect("valid key");
        assert_eq!(k.algorithm, KeyAlgorithm::Ed25519);
        assert_eq!(k.openssh, ED);
        assert_eq!(k.fingerprint, ED_FP);
    }

    #[test]
    fn rsa_needs_2048_bits_and_ecdsa_is_fine() {
        assert!(matches!(
            parse_public_key(RSA1024),
            Err(CloudInitError::KeyTooShort { bits: 1024 })
        ));
        assert_eq!(
            parse_public_key(RSA2048).map(|k| k.algorithm).ok(),
            Some(KeyAlgorithm::Rsa)
        );
        assert_eq!(
            parse_public_key(ECDSA).map(|k| k.algorithm).ok(),
            Some(KeyAlgorithm::Ecdsa)
        );
    }

    #[test]
    fn rejects_second_line_and_injection() {
        let hostile = format!("{ED}\nruncmd: [reboot]");
        assert!(matches!(
            parse_public_key(&hostile),
            Err(CloudInitError::KeyNotOneLine)
        ));
        let hostile = format!("{ED}\r\n- evil");
        assert!(matches!(
            parse_public_key(&hostile),
            Err(CloudInitError::KeyNotOneLine)
        ));
    }

    #[test]
    fn rejects_garbage_options_and_dsa() {
        assert!(matches!(
            parse_public_key("not a key"),
            Err(CloudInitError::KeyParse(_))
        ));
        assert!(parse_public_key("").is_err());
        assert!(parse_public_key(&format!("command=\"/bin/sh\" {ED}")).is_err());
        match parse_public_key(DSA) {
            Err(CloudInitError::KeyAlgorithm(a)) => assert_eq!(a, "ssh-dss"),
            other => panic!("expected KeyAlgorithm, got {other:?}"),
        }
    }

    #[test]
    fn control_characters_in_comment_are_rejected() {
        let k = format!("{ED}\u{1b}[2J");
        assert!(matches!(
            parse_public_key(&k),
            Err(CloudInitError::KeyComment)
        ));
    }

    #[test]
    fn generated_key_round_trips() {
        let (public, private) = generate_ed25519("roost test").expect("generate");
        let k = parse_public_key(&public).expect("generated public key parses");
        assert_eq!(k.algorithm, KeyAlgorithm::Ed25519);
        assert!(public.ends_with(" roost test"));
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        let parsed = PrivateKey::from_openssh(&private).expect("private key parses");
        assert_eq!(parsed.public_key().to_openssh().ok(), Some(public));
        assert!(generate_ed25519("a\nb").is_err());
    }
}
