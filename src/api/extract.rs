//! Request extractors with roost's error shape: JSON bodies and the client's address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// `axum::Json` whose rejections are roost's JSON errors (400, 413, 415, 422).
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| ApiJson(v))
            .map_err(ApiError::from)
    }
}

/// The TCP peer of the request: the real client (roost is the edge; forwarded headers
/// from clients are never trusted). Unspecified when served without connect info.
pub struct PeerAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        ))
    }
}

/// A request that may carry a password: refused (403 `https_required`) when HTTPS is on
/// and it came over plain HTTP from a non-loopback client, so a password never crosses
/// the network in cleartext. Requests that did not come through the listener pass.
pub struct PasswordChannel;

impl FromRequestParts<super::AppState> for PasswordChannel {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &super::AppState,
    ) -> Result<Self, Self::Rejection> {
        let plain = parts
            .extensions
            .get::<crate::proxy::Transport>()
            .is_some_and(|t| !t.secure);
        let remote = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .is_some_and(|c| !c.0.ip().is_loopback());
        if st.cfg.https.enabled && plain && remote {
            let https = crate::hosting::urls::Web::Https(st.cfg.https.listen.port());
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "https_required",
                format!(
                    "passwords are accepted only over HTTPS: use {}{}",
                    https.origin(&st.cfg.domain),
                    parts.uri.path()
                ),
            ));
        }
        Ok(PasswordChannel)
    }
}

/// `axum::extract::Query` whose rejection is roost's JSON 400.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| {
                ApiError::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("query string: {}", e.body_text()),
                )
            })
    }
}

/// A JSON body that may be left out entirely (no Content-Type, empty body): then
/// `T::default()`. A body that is present follows [`ApiJson`]'s rules.
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if req.headers().contains_key(axum::http::header::CONTENT_TYPE) {
            return ApiJson::<T>::from_request(req, state)
                .await
                .map(|j| OptionalJson(j.0));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), "bad_request", e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            Ok(OptionalJson(T::default()))
        } else {
            Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON with Content-Type: application/json",
            ))
        }
    }
}

/// The request's head, kept for checks that need all of it, and so that a long-lived
/// answer (an event stream, a console) can ask again while it runs whether its caller is
/// still allowed: a logout, a disabled account or a lost admin role ends it within seconds.
#[derive(Clone)]
pub struct RequestHead(pub Parts);

impl<S: Send + Sync> FromRequestParts<S> for RequestHead {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestHead(parts.clone()))
    }
}

impl RequestHead {
    /// True while the credentials this request came with still sign its user in (and, with
    /// `admin`, still as an administrator).
    pub async fn still_allowed(&self, st: &super::AppState, admin: bool) -> bool {
        use crate::auth::{AdminUser, AuthUser};
        let mut parts = self.0.clone();
        if admin {
            AdminUser::from_request_parts(&mut parts, st).await.is_ok()
        } else {
            AuthUser::from_request_parts(&mut parts, st).await.is_ok()
        }
    }
}
