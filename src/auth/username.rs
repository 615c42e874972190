//! Username (and thus site slug) rules, and the password policy.

/// Names that can never be accounts: they collide with routes, hostnames or roles.
pub const RESERVED: &[&str] = &[
    "admin",
    "administrator",
    "api",
    "assets",
    "auth",
    "healthz",
    "readyz",
    "metrics",
    "static",
    "www",
    "root",
    "roost",
    "mail",
    "smtp",
    "imap",
    "ftp",
    "ssh",
    "localhost",
    "host",
    "hosts",
    "login",
    "logout",
    "register",
    "signup",
    "status",
    "docs",
    "help",
    "support",
    "system",
    "openapi",
    "favicon-ico",
    "robots-txt",
    "well-known",
    "null",
    "nobody",
    "daemon",
    "console",
    "dashboard",
];

/// Why a username is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    #[error("must be 3 to 32 characters long")]
    Length,
    #[error("may only contain lowercase letters a-z, digits and '-'")]
    Charset,
    #[error("must not start or end with '-'")]
    Hyphen,
    #[error("must start with a letter a-z (it is the login name in the VM)")]
    Start,
    #[error("is a reserved name (reserved: {})", RESERVED.join(", "))]
    Reserved,
    #[error("is a system account in the VM (such as sudo, nginx or www-data)")]
    SystemAccount,
}

/// Checks a username: 3-32 of `[a-z0-9-]`, starting with a letter, not ending with `-`,
/// not reserved, and not an account of the guest's base system (the username is the login
/// name in the VM, so every rule of `cloudinit::validate_username` holds too).
pub fn validate_username(name: &str) -> Result<(), UsernameError> {
    if !(3..=32).contains(&name.len()) {
        return Err(UsernameError::Length);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(UsernameError::Charset);
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(UsernameError::Hyphen);
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(UsernameError::Start);
    }
    if RESERVED.contains(&name) {
        return Err(UsernameError::Reserved);
    }
    if crate::cloudinit::is_system_account(name) {
        return Err(UsernameError::SystemAccount);
    }
    Ok(())
}

/// Why a password is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    #[error("must be at least 8 characters long")]
    TooShort,
    #[error("must be at most 1024 bytes long")]
    TooLong,
}

/// At least 8 characters; at most 1 KiB so that hashing cannot be used to burn CPU.
pub fn validate_password(pw: &str) -> Result<(), PasswordPolicyError> {
    if pw.chars().count() < 8 {
        Err(PasswordPolicyError::TooShort)
    } else if pw.len() > 1024 {
        Err(PasswordPolicyError::TooLong)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One rule in effect: every first path segment the proxy keeps for itself can never
    /// be a username, so no site can be registered that its own URL would not reach.
    #[test]
    fn no_reserved_route_segment_can_be_registered() {
        for seg in crate::proxy::RESERVED_SEGMENTS {
            assert!(validate_username(seg).is_err(), "{seg}");
        }
    }

    #[test]
    fn usernames() {
        for ok in ["abc", "alice", "a-b", "user1", "x0dead", &"a".repeat(32)] {
            assert_eq!(validate_username(ok), Ok(()), "{ok}");
            // Every accepted account name is a valid login name in the VM.
            assert!(crate::cloudinit::validate_username(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("ab", UsernameError::Length),
            ("", UsernameError::Length),
            (&"a".repeat(33) as &str, UsernameError::Length),
            ("Alice", UsernameError::Charset),
            ("al_ice", UsernameError::Charset),
            ("al ice", UsernameError::Charset),
            ("alïce", UsernameError::Charset),
            ("bob/..", UsernameError::Charset),
            ("-bob", UsernameError::Hyphen),
            ("bob-", UsernameError::Hyphen),
            ("admin", UsernameError::Reserved),
            ("api", UsernameError::Reserved),
            ("healthz", UsernameError::Reserved),
            ("www", UsernameError::Reserved),
            ("123abc", UsernameError::Start),
            ("0xdead", UsernameError::Start),
            ("sudo", UsernameError::SystemAccount),
            ("nginx", UsernameError::SystemAccount),
            ("www-data", UsernameError::SystemAccount),
        ] {
            assert_eq!(validate_username(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn passwords() {
        assert_eq!(validate_password("12345678"), Ok(()));
        assert_eq!(
            validate_password("1234567"),
            Err(PasswordPolicyError::TooShort)
        );
        assert_eq!(
            validate_password("ééééééé"),
            Err(PasswordPolicyError::TooShort)
        );
        assert_eq!(
            validate_password(&"x".repeat(1025)),
            Err(PasswordPolicyError::TooLong)
        );
    }
}
