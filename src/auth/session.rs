//! Browser sessions for the dashboard at `console.DOMAIN`.
//!
//! A session is a random secret in an HttpOnly, `SameSite=Strict` cookie; the store keeps
//! only its SHA-256 (so the database signs no one in), the account and a CSRF token.
//! Logging out deletes the row, so the cookie stops working at once. Scripts keep using
//! bearer tokens; a cookie counts only on the dashboard's host.
//!
//! Every state-changing request made with a cookie must prove it comes from the dashboard
//! itself: its `Origin` must be the dashboard's, and it must carry the session's CSRF token
//! (`X-CSRF-Token`, or `csrf=` in the query of a WebSocket handshake, which browsers cannot
//! give headers). A user's site on `<slug>.DOMAIN` is *same-site* with `console.DOMAIN`,
//! so `SameSite=Strict` alone would not stop it; these two checks do.

use axum::http::{header, request::Parts, Method};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthError, AuthUser};
use crate::store::{Session, User};

/// The cookie's name over HTTPS (and on `localhost`, which browsers treat as secure):
/// `__Host-` makes browsers refuse it unless it is `Secure`, host-only and `Path=/`, so a
/// user's site on a sibling subdomain cannot plant or overwrite it.
pub const COOKIE_HOST: &str = "__Host-roost_session";
/// The cookie's name over plain HTTP on a real domain, where `Secure` cookies are refused.
pub const COOKIE_PLAIN: &str = "roost_session";
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A new session: what goes into the cookie and what the dashboard is told.
pub struct Grant {
    pub secret: String,
    pub csrf: String,
    pub max_age_secs: u64,
    pub user: User,
}

/// Where a request came from, as far as the session rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    /// Over TLS.
    pub secure: bool,
    /// Addressed to the dashboard's host.
    pub console: bool,
}

/// The cookie name for a channel: `__Host-` wherever browsers accept `Secure` cookies.
pub fn cookie_name(secure: bool, host: &str) -> &'static str {
    if secure || is_localhost(host) {
        COOKIE_HOST
    } else {
        COOKIE_PLAIN
    }
}

/// The `Set-Cookie` value for a new session (or, with `secret` empty and `max_age` 0, the
/// one that removes it).
pub fn set_cookie(secure: bool, host: &str, secret: &str, max_age_secs: u64) -> String {
    let name = cookie_name(secure, host);
    let flag = if name == COOKIE_HOST { "; Secure" } else { "" };
    format!("{name}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{flag}")
}

/// `localhost` and `*.localhost`, with or without a port.
fn is_localhost(host: &str) -> bool {
    let name = crate::proxy::split_port(host)
        .0
        .trim_end_matches('.')
        .to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

pub(super) fn new_secret() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub(super) fn key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The session secret a request's cookie carries, if any (the name matching its channel).
///
/// Two cookies of that name mean someone planted one: a page on a sibling subdomain can
/// set `roost_session` for all of `DOMAIN` (only `__Host-` cookies are safe from that),
/// hoping the dashboard picks theirs and the visitor works inside the attacker's account.
/// Then neither counts, and the visitor is asked to log in again.
pub fn cookie_secret(parts: &Parts, ch: Channel) -> Option<String> {
    let host = request_host(parts)?;
    let name = cookie_name(ch.secure, &host);
    let mut found = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v.trim());
    let first = found.next()?;
    if found.next().is_some() {
        return None;
    }
    Some(first.to_owned()).filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The `Host` the request named (the authority of an absolute-form target first).
pub fn request_host(parts: &Parts) -> Option<String> {
    parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
}

/// True for requests that change nothing, and so need no CSRF proof: safe methods that
/// are not a WebSocket handshake (a console opened by another origin could type).
fn is_safe(parts: &Parts) -> bool {
    let upgrade = parts.headers.contains_key(header::UPGRADE);
    matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) && !upgrade
}

/// The CSRF proof a request offers: the header, or for a WebSocket handshake the query.
fn offered_csrf(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        return Some(v.to_owned());
    }
    parts.uri.query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "csrf")
            .map(|(_, v)| v.to_owned())
    })
}

/// Checks that a cookie-authenticated request may act: same origin and the right token.
pub fn check_request(parts: &Parts, ch: Channel, s: &Session) -> Result<(), AuthError> {
    if is_safe(parts) {
        return Ok(());
    }
    same_origin(parts, ch)?;
    let offered = offered_csrf(parts).ok_or(AuthError::CrossSite("no CSRF token"))?;
    if !bool::from(offered.as_bytes().ct_eq(s.csrf.as_bytes())) {
        return Err(AuthError::CrossSite("wrong CSRF token"));
    }
    Ok(())
}

/// Checks that the request's `Origin` is the origin it was sent to (scheme and host as
/// received), as browsers say on every cross-origin or state-changing request.
pub fn same_origin(parts: &Parts, ch: Channel) -> Result<(), AuthError> {
    let host = request_host(parts).ok_or(AuthError::CrossSite("no Host"))?;
    let scheme = if ch.secure { "https" } else { "http" };
    let expected = format!("{scheme}://{}", host.to_ascii_lowercase());
    match parts
        .headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    {
        Some(o) if o.eq_ignore_ascii_case(&expected) => Ok(()),
        Some(_) => Err(AuthError::CrossSite("the request came from another origin")),
        None => Err(AuthError::CrossSite("the request has no Origin")),
    }
}

/// The channel of a request that came through the listener; `None` in-process.
pub fn channel(parts: &Parts) -> Option<Channel> {
    parts
        .extensions
        .get::<crate::proxy::Transport>()
        .map(|t| Channel {
            secure: t.secure,
            console: t.console,
        })
}

/// A request's session user, when it has no bearer token: `Ok(None)` when there is no
/// cookie or the request did not come to the dashboard's host.
pub(super) fn from_cookie(
    auth: &super::Auth,
    parts: &Parts,
) -> Result<Option<(AuthUser, Session)>, AuthError> {
    let Some(ch) = channel(parts) else {
        return Ok(None);
    };
    if !ch.console {
        return Ok(None);
    }
    let Some(secret) = cookie_secret(parts, ch) else {
        return Ok(None);
    };
    let (user, session) = auth.session(&secret)?;
    check_request(parts, ch, &session)?;
    Ok(Some((user, session)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = axum::http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn session() -> Session {
        Session {
            user: crate::store::UserId::new(),
            csrf: "tok".into(),
            created_at: crate::store::now(),
            expires_at: crate::store::now(),
        }
    }

    const CH: Channel = Channel {
        secure: false,
        console: true,
    };

    #[test]
    fn cookie_names_follow_what_browsers_accept() {
        assert_eq!(cookie_name(true, "console.example.com"), COOKIE_HOST);
        assert_eq!(cookie_name(false, "console.localhost:8080"), COOKIE_HOST);
        assert_eq!(cookie_name(false, "console.example.com"), COOKIE_PLAIN);
        let c = set_cookie(false, "console.localhost", "s", 60);
        assert!(c.starts_with("__Host-roost_session=s; Path=/; HttpOnly; SameSite=Strict"));
        assert!(c.ends_with("; Secure"));
        assert!(!set_cookie(false, "console.example.com", "s", 60).contains("Secure"));
    }

    #[test]
    fn the_cookie_is_read_by_its_channel_name_only() {
        let p = parts(
            "GET",
            "/",
            &[
                ("host", "console.example.com"),
                (
                    "cookie",
                    "a=b; roost_session=xyz; __Host-roost_session=other",
                ),
            ],
        );
        assert_eq!(cookie_secret(&p, CH).as_deref(), Some("xyz"));
        let secure = Channel { secure: true, ..CH };
        assert_eq!(cookie_secret(&p, secure).as_deref(), Some("other"));
        // A second cookie of the same name was planted: neither counts.
        let tossed = parts(
            "GET",
            "/",
            &[
                ("host", "console.example.com"),
                ("cookie", "roost_session=attacker; roost_session=victim"),
            ],
        );
        assert_eq!(cookie_secret(&tossed, CH), None);
    }

    #[test]
    fn unsafe_requests_need_the_same_origin_and_the_token() {
        let s = session();
        let host = ("host", "console.example.com");
        assert!(check_request(&parts("GET", "/api/v1/host", &[host]), CH, &s).is_ok());
        let ok = parts(
            "POST",
            "/x",
            &[
                host,
                ("origin", "http://console.example.com"),
                (CSRF_HEADER, "tok"),
            ],
        );
        assert!(check_request(&ok, CH, &s).is_ok());
        for bad in [
            parts("POST", "/x", &[host, (CSRF_HEADER, "tok")]),
            parts(
                "POST",
                "/x",
                &[
                    host,
                    ("origin", "http://alice.example.com"),
                    (CSRF_HEADER, "tok"),
                ],
            ),
            parts(
                "POST",
                "/x",
                &[
                    host,
                    ("origin", "https://console.example.com"),
                    (CSRF_HEADER, "tok"),
                ],
            ),
            parts(
                "POST",
                "/x",
                &[host, ("origin", "http://console.example.com")],
            ),
            parts(
                "DELETE",
                "/x",
                &[
                    host,
                    ("origin", "http://console.example.com"),
                    (CSRF_HEADER, "tox"),
                ],
            ),
            // A WebSocket handshake is a GET, but it must prove itself too.
            parts(
                "GET",
                "/api/v1/host/console",
                &[
                    host,
                    ("origin", "http://alice.example.com"),
                    ("upgrade", "websocket"),
                ],
            ),
            parts(
                "GET",
                "/api/v1/host/console?csrf=no",
                &[
                    host,
                    ("origin", "http://console.example.com"),
                    ("upgrade", "websocket"),
                ],
            ),
        ] {
            assert!(check_request(&bad, CH, &s).is_err(), "{bad:?}");
        }
        let ws = parts(
            "GET",
            "/api/v1/host/console?csrf=tok",
            &[
                host,
                ("origin", "http://console.example.com"),
                ("upgrade", "websocket"),
            ],
        );
        assert!(check_request(&ws, CH, &s).is_ok());
    }
}
