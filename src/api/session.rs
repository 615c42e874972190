//! `/api/v1/session`: the dashboard's browser sessions (cookie + CSRF token), on the
//! dashboard's host only. Scripts use `/api/v1/auth/login` and bearer tokens instead.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::accounts::{LoginRequest, MeView};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, PasswordChannel, PeerAddr, RequestHead};
use super::AppState;
use crate::auth::session::{self, Channel};

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    pub user: MeView,
    /// Send it as `X-CSRF-Token` with every request that changes something (and as
    /// `csrf=` in a console WebSocket's URL).
    pub csrf: String,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(current, open, close))
}

/// A request on the dashboard's host, with the session cookie it carries.
pub struct ConsoleRequest {
    ch: Channel,
    host: String,
    secret: Option<String>,
}

impl FromRequestParts<AppState> for ConsoleRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        let wrong_host = || {
            ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "console_only",
                format!(
                    "browser sessions exist only on the dashboard: use {}",
                    super::dashboard::origin(st)
                ),
            )
        };
        let ch = session::channel(parts)
            .filter(|c| c.console)
            .ok_or_else(wrong_host)?;
        let host = session::request_host(parts).ok_or_else(wrong_host)?;
        Ok(ConsoleRequest {
            ch,
            host,
            secret: session::cookie_secret(parts, ch),
        })
    }
}

fn view(user: crate::store::User, csrf: String) -> SessionView {
    SessionView {
        user: MeView::from(user),
        csrf,
    }
}

/// Session answers are never cached: they carry the CSRF token.
fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn with_cookie(mut r: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    no_store(r)
}

/// The signed-in browser's account and CSRF token.
#[utoipa::path(get, path = "/api/v1/session", tag = "session",
    responses(
        (status = 200, body = SessionView),
        (status = 401, description = "no session, or it has ended", body = ErrorBody),
        (status = 421, description = "not the dashboard's host (`console_only`)", body = ErrorBody),
    ))]
async fn current(State(st): State<AppState>, req: ConsoleRequest) -> Result<Response, ApiError> {
    let secret = req.secret.ok_or(crate::auth::AuthError::MissingToken)?;
    let (u, s) = st.auth.session_account(&secret)?;
    Ok(no_store(Json(view(u, s.csrf)).into_response()))
}

/// Logs a browser in: sets an HttpOnly session cookie and answers the CSRF token.
#[utoipa::path(post, path = "/api/v1/session", tag = "session",
    request_body = LoginRequest,
    responses(
        (status = 200, body = SessionView),
        (status = 401, description = "wrong credentials", body = ErrorBody),
        (status = 403, description = "another origin (`cross_site`), a disabled account, or plain HTTP while HTTPS is on", body = ErrorBody),
        (status = 421, description = "not the dashboard's host (`console_only`)", body = ErrorBody),
        (status = 429, description = "too many attempts; see Retry-After", body = ErrorBody),
    ))]
async fn open(
    State(st): State<AppState>,
    req: ConsoleRequest,
    _origin: SameOrigin,
    _channel: PasswordChannel,
    PeerAddr(peer): PeerAddr,
    ApiJson(login): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let g = st
        .auth
        .open_session(peer, &login.username, &login.password)
        .await?;
    let cookie = session::set_cookie(req.ch.secure, &req.host, &g.secret, g.max_age_secs);
    let _ = st.store.audit(
        &g.user.username,
        "session.open",
        &g.user.id.to_string(),
        &peer.to_string(),
    );
    Ok(with_cookie(
        Json(view(g.user, g.csrf)).into_response(),
        &cookie,
    ))
}

/// Logs a browser out: the session ends on the server and the cookie is cleared.
#[utoipa::path(delete, path = "/api/v1/session", tag = "session",
    responses(
        (status = 204, description = "logged out (also when there was no session)"),
        (status = 403, description = "another origin or a wrong CSRF token (`cross_site`)", body = ErrorBody),
        (status = 421, description = "not the dashboard's host (`console_only`)", body = ErrorBody),
    ))]
async fn close(
    State(st): State<AppState>,
    req: ConsoleRequest,
    head: RequestHead,
) -> Result<Response, ApiError> {
    if let Some(secret) = &req.secret {
        // Only the dashboard may log its user out: same origin and the session's token.
        if let Ok((user, s)) = st.auth.session(secret) {
            session::check_request(&head.0, req.ch, &s)?;
            st.auth.close_session(secret)?;
            let _ = st
                .store
                .audit(&user.username, "session.close", &user.id.to_string(), "");
        }
    }
    let cookie = session::set_cookie(req.ch.secure, &req.host, "", 0);
    Ok(with_cookie(StatusCode::NO_CONTENT.into_response(), &cookie))
}

/// Refuses a request whose `Origin` is not the origin it was sent to (login CSRF: a
/// user's site must not sign a visitor into the attacker's account).
pub struct SameOrigin;

impl FromRequestParts<AppState> for SameOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        match session::channel(parts) {
            Some(ch) => session::same_origin(parts, ch)
                .map(|()| SameOrigin)
                .map_err(Into::into),
            None => Ok(SameOrigin),
        }
    }
}
