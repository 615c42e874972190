//! DNS-name rules for certificates and custom domains, pure.
//!
//! A name is kept in one form everywhere: ASCII (IDNA/punycode), lowercase, no trailing dot.
//! [`normalize`] turns what a user or a TLS client sends into that form or says why it
//! cannot be a host name; [`covers`] says whether a certificate name (exact, or `*.` one
//! label deep) covers a host; [`is_within`] whether a name is a domain or below it.

/// Why a string is not a host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{0:?} is not a valid domain name: {1}")]
    Invalid(String, &'static str),
}

/// The canonical form of a host name: IDNA to ASCII (UTS #46), lowercase, trailing dot
/// dropped; each label 1–63 letters, digits or hyphens (not at either end), 253 bytes in
/// all, at least two labels, and not an IP address.
pub fn normalize(input: &str) -> Result<String, NameError> {
    let bad = |why| NameError::Invalid(input.to_owned(), why);
    let trimmed = input.trim();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    if trimmed.parse::<std::net::IpAddr>().is_ok() {
        return Err(bad("an IP address is not a domain"));
    }
    let ascii = idna::domain_to_ascii(trimmed).map_err(|_| bad("it is not a valid IDNA name"))?;
    if ascii.len() > 253 {
        return Err(bad("it is longer than 253 characters"));
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(bad("it needs at least two labels, like example.com"));
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("every label must be 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad("only letters, digits and hyphens are allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label cannot start or end with a hyphen"));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("the last label cannot be all digits"));
    }
    Ok(ascii)
}

/// True when a certificate for `cert_name` is valid for `host` (both normalised): the same
/// name, or `*.parent` and `host` is exactly one label below `parent` (RFC 6125 6.4.3).
pub fn covers(cert_name: &str, host: &str) -> bool {
    match cert_name.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => cert_name == host,
    }
}

/// True when `name` is `domain` or a name below it (both normalised).
pub fn is_within(name: &str, domain: &str) -> bool {
    name == domain
        || name
            .strip_suffix(domain)
            .is_some_and(|head| head.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised() {
        for (input, want) in [
            ("Example.COM", "example.com"),
            ("shop.example.org.", "shop.example.org"),
            (" www.example.com ", "www.example.com"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("ÉCOLE.fr", "xn--cole-9oa.fr"),
        ] {
            assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn non_names_are_refused_with_a_reason() {
        for (input, why) in [
            ("", "empty"),
            (".", "empty"),
            ("localhost", "two labels"),
            ("10.0.0.1", "IP address"),
            ("::1", "IP address"),
            ("a..b", "1 to 63"),
            ("-a.com", "hyphen"),
            ("a_b.com", "letters, digits"),
            ("a b.com", "a"),
            ("example.123", "all digits"),
            ("*.example.com", "a"),
        ] {
            let e = normalize(input).expect_err(input).to_string();
            assert!(e.contains(why), "{input}: {e}");
        }
        let long = format!("{}.com", vec!["a".repeat(63); 4].join("."));
        assert!(normalize(&long).is_err());
    }

    #[test]
    fn wildcards_cover_one_label() {
        for (cert, host, want) in [
            ("example.com", "example.com", true),
            ("example.com", "www.example.com", false),
            ("*.example.com", "alice.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", ".example.com", false),
            ("*.example.com", "alice.example.org", false),
            ("*.example.com", "aliceexample.com", false),
        ] {
            assert_eq!(covers(cert, host), want, "{cert} {host}");
        }
    }

    #[test]
    fn within_a_domain() {
        assert!(is_within("example.com", "example.com"));
        assert!(is_within("a.b.example.com", "example.com"));
        assert!(!is_within("badexample.com", "example.com"));
        assert!(!is_within("example.com.evil", "example.com"));
    }
}
