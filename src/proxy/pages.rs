//! The proxy's own answers: small HTML pages, or JSON when the client asks for it.

use axum::body::Body;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

/// Why the proxy answers itself instead of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// No site by that name (404).
    NoSite,
    /// The site is being created or is booting (503 with `Retry-After`).
    Starting { retry_after: u32 },
    /// The site is stopped or failed (503).
    Down,
    /// The VM did not answer (502).
    BadGateway,
    /// The request is malformed (400).
    BadRequest,
    /// The client stopped sending its request body (408).
    RequestTimeout,
    /// The VM took the request but sent no answer in time (504).
    GatewayTimeout,
}

impl Page {
    fn parts(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Page::NoSite => (
                StatusCode::NOT_FOUND,
                "no_site",
                "There is no site at this address.",
            ),
            Page::Starting { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "starting",
                "This site is starting. Try again in a few seconds.",
            ),
            Page::Down => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "This site is not running.",
            ),
            Page::BadGateway => (
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "The site's server did not answer.",
            ),
            Page::BadRequest => (StatusCode::BAD_REQUEST, "bad_request", "Bad request."),
            Page::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "The request body stopped arriving.",
            ),
            Page::GatewayTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                "The site's server took too long to answer.",
            ),
        }
    }
}

/// True when `Accept` prefers JSON over HTML (a plain substring test is enough here).
fn wants_json(req_headers: &HeaderMap) -> bool {
    req_headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json") && !v.contains("text/html"))
}

/// The response for `page`, in the format the request prefers.
pub fn render(page: Page, req_headers: &HeaderMap) -> Response<Body> {
    let (status, code, message) = page.parts();
    let (ctype, body) = if wants_json(req_headers) {
        (
            "application/json",
            format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#),
        )
    } else {
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{} {}</title></head>\
                 <body><h1>{} {}</h1><p>{message}</p></body></html>\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or(""),
                status.as_u16(),
                status.canonical_reason().unwrap_or(""),
            ),
        )
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Page::Starting { retry_after } = page {
        h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    }
    resp
}

/// A 308 to `location` (a path we built from the raw request, so it is a valid value).
pub fn redirect(location: &str) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_have_status_type_and_retry_after() {
        let html = HeaderMap::new();
        let mut json = HeaderMap::new();
        json.insert(header::ACCEPT, HeaderValue::from_static("application/json"));

        let r = render(Page::Starting { retry_after: 5 }, &html);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html"));

        let r = render(Page::NoSite, &json);
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert!(r.headers().get(header::RETRY_AFTER).is_none());

        assert_eq!(render(Page::Down, &html).status(), 503);
        assert_eq!(render(Page::BadGateway, &html).status(), 502);
        assert_eq!(render(Page::RequestTimeout, &html).status(), 408);
        assert_eq!(render(Page::GatewayTimeout, &html).status(), 504);
        assert_eq!(redirect("/a/?b").headers()[header::LOCATION], "/a/?b");
    }
}
