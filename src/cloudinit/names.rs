//! Character rules for the names that end up in a VM: hostname, login name, slug, instance id.
//!
//! The rules are deliberately narrower than what Linux accepts: every value here is later
//! used as a file name, a shell argument (quoted by cloud-init) or a YAML scalar, and a
//! narrow alphabet makes all of those uninteresting.

use super::CloudInitError;

/// Accounts and groups that exist in a Debian base system (or that cloud-init and common
/// images create). A hosting user with one of these names would get its SSH keys added to,
/// or collide with, a system account.
const RESERVED_USERNAMES: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "nogroup",
    "_apt",
    "systemd-network",
    "systemd-resolve",
    "systemd-timesync",
    "systemd-journal",
    "systemd-coredump",
    "messagebus",
    "sshd",
    "nginx",
    "adm",
    "tty",
    "disk",
    "kmem",
    "dialout",
    "fax",
    "voice",
    "cdrom",
    "floppy",
    "tape",
    "sudo",
    "audio",
    "dip",
    "operator",
    "src",
    "shadow",
    "utmp",
    "video",
    "sasl",
    "plugdev",
    "staff",
    "users",
    "input",
    "sgx",
    "kvm",
    "render",
    "crontab",
    "netdev",
    "admin",
    "debian",
    "ubuntu",
    "cloud-user",
];

/// True when `name` is an account or group of the guest's base system (a hosting's login
/// name may not be one).
pub fn is_system_account(name: &str) -> bool {
    RESERVED_USERNAMES.contains(&name)
}

fn invalid(field: &'static str, reason: &'static str) -> CloudInitError {
    CloudInitError::InvalidInput { field, reason }
}

/// One DNS label: 1–63 of `[a-z0-9-]`, not starting or ending with `-`.
pub fn validate_hostname(s: &str) -> Result<(), CloudInitError> {
    validate_label("hostname", s)
}

/// A hosting slug: the same alphabet as a hostname (it is used as one by default).
pub fn validate_slug(s: &str) -> Result<(), CloudInitError> {
    validate_label("slug", s)
}

fn validate_label(field: &'static str, s: &str) -> Result<(), CloudInitError> {
    if s.is_empty() || s.len() > 63 {
        return Err(invalid(field, "must be 1 to 63 characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid(field, "only a-z, 0-9 and - are allowed"));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(invalid(field, "must not start or end with -"));
    }
    Ok(())
}

/// A login name: `[a-z_][a-z0-9_-]{0,31}`, and not a system account or group.
pub fn validate_username(s: &str) -> Result<(), CloudInitError> {
    const F: &str = "username";
    if s.is_empty() || s.len() > 32 {
        return Err(invalid(F, "must be 1 to 32 characters"));
    }
    let mut bytes = s.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    if !first_ok {
        return Err(invalid(F, "must start with a-z or _"));
    }
    if !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-') {
        return Err(invalid(F, "only a-z, 0-9, _ and - are allowed"));
    }
    if is_system_account(s) {
        return Err(invalid(F, "is a system account"));
    }
    Ok(())
}

/// An instance id: 1–64 of `[A-Za-z0-9._-]` (it becomes a directory name under
/// `/var/lib/cloud/instances/` in the VM).
pub fn validate_instance_id(s: &str) -> Result<(), CloudInitError> {
    const F: &str = "instance id";
    if s.is_empty() || s.len() > 64 {
        return Err(invalid(F, "must be 1 to 64 characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(F, "only A-Z, a-z, 0-9, ., _ and - are allowed"));
    }
    if s.starts_with('.') {
        return Err(invalid(F, "must not start with ."));
    }
    Ok(())
}

/// The public domain shown on the default page: a host name (labels of `[a-z0-9-]` joined
/// by dots, any case), optionally with `:port`. Only displayed, but kept plain anyway.
pub fn validate_domain(s: &str) -> Result<(), CloudInitError> {
    const F: &str = "domain";
    if s.is_empty() || s.len() > 253 {
        return Err(invalid(F, "must be 1 to 253 characters"));
    }
    let host = match s.rsplit_once(':') {
        Some((host, port)) => {
            if port.parse::<u16>().is_err() {
                return Err(invalid(F, "port must be a number"));
            }
            host
        }
        None => s,
    };
    let ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !ok {
        return Err(invalid(F, "must be a host name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for ok in ["a", "alice", "web-1", "0abc", &"a".repeat(63)] {
            assert!(validate_hostname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a.b",
            "a b",
            "a\nb",
            "a'b",
            "a#b",
            "ä",
            &"a".repeat(64),
        ] {
            assert!(validate_hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn usernames() {
        for ok in ["alice", "_x", "a1", "bob-smith", "a_b"] {
            assert!(validate_username(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "-a",
            "Alice",
            "root",
            "sudo",
            "www-data",
            "a\"b",
            "a#b",
            "a:b",
            "a b",
            "yes\n",
            &"a".repeat(33),
        ] {
            assert!(validate_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn instance_ids_and_domains() {
        assert!(validate_instance_id("01HZX3-1").is_ok());
        assert!(validate_instance_id("../x").is_err());
        assert!(validate_instance_id("a/b").is_err());
        assert!(validate_instance_id("").is_err());
        assert!(validate_domain("example.org").is_ok());
        assert!(validate_domain("localhost:8080").is_ok());
        assert!(validate_domain("a..b").is_err());
        assert!(validate_domain("<b>").is_err());
        assert!(validate_domain("x:y").is_err());
    }
}
