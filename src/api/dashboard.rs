//! The dashboard's pages, embedded in the binary (`web/`, with the vendored xterm.js),
//! served on the dashboard's host only, with a strict Content-Security-Policy. On the
//! public domain, `/` leads to the dashboard.
//!
//! The dashboard has its own origin (`console.DOMAIN`): sites at `DOMAIN/<slug>/` share
//! one origin with each other, so nothing that holds a session may live there.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;

#[derive(rust_embed::RustEmbed)]
#[folder = "web/"]
#[exclude = "vendor/LOCK"]
#[exclude = "*.md"]
struct Assets;

/// No inline script or style, nothing from elsewhere, never framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; \
frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's origin as configured (for messages and redirects without a request).
pub fn origin(st: &AppState) -> String {
    crate::hosting::urls::Web::of(&st.cfg).origin(&st.cfg.console_host())
}

/// What the API router answers for a path it has no route for: on the dashboard's host,
/// the dashboard (its assets, or its page for any other `GET`); on the public domain's
/// `/`, a redirect to the dashboard; otherwise roost's JSON 404.
pub async fn fallback(State(st): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let t = parts.extensions.get::<crate::proxy::Transport>().copied();
    let path = parts.uri.path();
    let get = matches!(parts.method, Method::GET | Method::HEAD);
    match t {
        Some(t) if t.console && get && !path.starts_with("/api/") => page(path),
        Some(t) if !t.console && get && path == "/" => to_dashboard(&st, &parts, t.secure),
        _ => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response(),
    }
}

/// `302` to the dashboard on the scheme and port this request came by.
fn to_dashboard(st: &AppState, parts: &axum::http::request::Parts, secure: bool) -> Response {
    let host = crate::auth::session::request_host(parts).unwrap_or_default();
    let port = crate::proxy::split_port(&host)
        .1
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let scheme = if secure { "https" } else { "http" };
    let to = format!("{scheme}://{}{port}/", st.cfg.console_host());
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// One file of the dashboard: `/assets/<file>` from `web/`, anything else the page.
fn page(path: &str) -> Response {
    let (file, immutable) = match path.strip_prefix("/assets/") {
        Some(f) => (f, f.starts_with("vendor/")),
        None => ("index.html", false),
    };
    let Some(asset) = Assets::get(file).filter(|_| !file.contains("..")) else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such file").into_response();
    };
    let mut r = Response::new(Body::from(asset.data.into_owned()));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime(file)));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, max-age=86400"
        } else {
            "no-cache"
        }),
    );
    security_headers(h);
    r
}

/// The headers every dashboard answer carries.
pub fn security_headers(h: &mut axum::http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
}

fn mime(file: &str) -> &'static str {
    match file.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_assets_are_embedded() {
        assert!(Assets::get("index.html").is_some(), "web/index.html");
        assert_eq!(mime("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(mime("vendor/xterm.css"), "text/css; charset=utf-8");
    }
}
