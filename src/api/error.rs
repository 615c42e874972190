//! The one place where errors become HTTP: `{"error": "<code>", "message": "<sentence>"}`.
//!
//! Internal causes (store, hashing, I/O) are logged with their whole source chain and
//! answered with a generic 500; the client never sees them.

use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

pub use crate::error_chain as chain;

use crate::auth::AuthError;
use crate::hosting::HostingError;
use crate::store::StoreError;

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code, e.g. `invalid_field`.
    pub error: String,
    /// A human sentence saying what is wrong.
    pub message: String,
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 422 naming the field that is wrong.
    pub fn field(field: &str, problem: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{field}: {problem}"),
        )
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// Logs `err` with its source chain and answers a generic 500.
    pub fn internal(err: &(dyn std::error::Error + 'static)) -> ApiError {
        tracing::error!(error = %chain(err), "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; it has been logged",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_owned(),
            message: self.message,
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s.max(1)));
        }
        // The refused body was not read to its end: the connection cannot carry another
        // request, so tell the client not to reuse it (else its next request races the close).
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        use StatusCode as S;
        match e {
            AuthError::MissingToken => ApiError::new(
                S::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required",
            ),
            AuthError::BadToken(crate::auth::TokenError::Expired) => ApiError::new(
                S::UNAUTHORIZED,
                "token_expired",
                "the token has expired; log in again",
            ),
            AuthError::BadToken(_) => {
                ApiError::new(S::UNAUTHORIZED, "invalid_token", "the token is invalid")
            }
            AuthError::SessionGone => ApiError::new(
                S::UNAUTHORIZED,
                "session_ended",
                "the session has ended; log in again",
            ),
            AuthError::CrossSite(why) => ApiError::new(
                S::FORBIDDEN,
                "cross_site",
                format!("refused a request that did not come from the dashboard: {why}"),
            ),
            AuthError::UserGone => ApiError::new(
                S::UNAUTHORIZED,
                "invalid_token",
                "the account of this token no longer exists",
            ),
            AuthError::TokenRevoked => ApiError::new(
                S::UNAUTHORIZED,
                "token_revoked",
                "the token was revoked; log in again",
            ),
            AuthError::Disabled => ApiError::new(
                S::FORBIDDEN,
                "account_disabled",
                "this account is disabled; contact the operator",
            ),
            AuthError::NoSuchUser(_) => ApiError::not_found("user"),
            AuthError::Forbidden => ApiError::new(
                S::FORBIDDEN,
                "forbidden",
                "this needs the administrator role",
            ),
            AuthError::InvalidCredentials => ApiError::new(
                S::UNAUTHORIZED,
                "invalid_credentials",
                "wrong username or password",
            ),
            AuthError::HasHosting => ApiError::new(
                S::CONFLICT,
                "hosting_exists",
                "the account has a hosting: delete the hosting first",
            ),
            AuthError::WrongPassword => ApiError::new(
                S::FORBIDDEN,
                "wrong_password",
                "the current password is wrong",
            ),
            AuthError::RateLimited(wait) => ApiError {
                retry_after: Some(wait.as_secs_f64().ceil() as u64),
                ..ApiError::new(
                    S::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many login attempts; try again later",
                )
            },
            AuthError::RegisterLimited(wait) => ApiError {
                retry_after: Some(wait.as_secs_f64().ceil() as u64),
                ..ApiError::new(
                    S::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many accounts were created from this address; try again later",
                )
            },
            AuthError::Busy => ApiError {
                retry_after: Some(2),
                ..ApiError::new(
                    S::SERVICE_UNAVAILABLE,
                    "busy",
                    "the service is busy checking passwords; try again in a moment",
                )
            },
            AuthError::InvalidUsername(u) => ApiError::field("username", u),
            AuthError::InvalidPassword(p) => ApiError::field("password", p),
            AuthError::InvalidEmail => ApiError::field(
                "email",
                "must look like name@domain and be at most 254 characters",
            ),
            AuthError::UsernameTaken => {
                ApiError::new(S::CONFLICT, "conflict", "this username is already taken")
            }
            e @ (AuthError::Store(_) | AuthError::Hash(_) | AuthError::Join(_)) => {
                ApiError::internal(&e)
            }
        }
    }
}

impl From<HostingError> for ApiError {
    fn from(e: HostingError) -> Self {
        use StatusCode as S;
        match e {
            HostingError::Unavailable(reason) => {
                // The reason names paths and errors of the host: logged, not sent.
                tracing::warn!(%reason, "VM hosting unavailable");
                ApiError::new(
                    S::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "VM hosting is not available on this host right now; the operator can see why with `roost status`",
                )
            }
            HostingError::Exists => ApiError::new(
                S::CONFLICT,
                "conflict",
                "you already have a hosting; delete it first",
            ),
            HostingError::NotFound => ApiError::not_found("hosting"),
            HostingError::InvalidKey(m) => ApiError::field("ssh_public_key", m),
            HostingError::InvalidName(m) => ApiError::field("username", m),
            HostingError::DiskFull(m) => {
                ApiError::new(S::INSUFFICIENT_STORAGE, "insufficient_storage", m)
            }
            HostingError::NoCapacity(m) => ApiError {
                retry_after: Some(60),
                ..ApiError::new(S::SERVICE_UNAVAILABLE, "no_capacity", m)
            },
            HostingError::InvalidState { .. } => {
                ApiError::new(S::CONFLICT, "invalid_state", e.to_string())
            }
            HostingError::ConsoleUnavailable(m) => {
                ApiError::new(S::CONFLICT, "console_unavailable", m)
            }
            HostingError::InvalidSnapshotName(m) => ApiError::field("name", m),
            HostingError::SnapshotExists(_) => {
                ApiError::new(S::CONFLICT, "snapshot_exists", e.to_string())
            }
            HostingError::TooManySnapshots(_) => {
                ApiError::new(S::CONFLICT, "snapshot_limit", e.to_string())
            }
            HostingError::NoSuchSnapshot => ApiError::not_found("snapshot"),
            HostingError::GuestAgent => ApiError::new(S::BAD_GATEWAY, "guest_agent", e.to_string()),
            HostingError::RateLimited(wait) => ApiError {
                retry_after: Some(wait.as_secs_f64().ceil() as u64),
                ..ApiError::new(S::TOO_MANY_REQUESTS, "rate_limited", e.to_string())
            },
            e
            @ (HostingError::Step { .. } | HostingError::Store(_) | HostingError::Internal(_)) => {
                ApiError::internal(&e)
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(&e)
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        use StatusCode as S;
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON with Content-Type: application/json",
            ),
            JsonRejection::JsonSyntaxError(e) => ApiError::new(
                S::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {}", inner(&e)),
            ),
            JsonRejection::JsonDataError(e) => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "invalid_field", inner(&e))
            }
            JsonRejection::BytesRejection(e) if e.status() == S::PAYLOAD_TOO_LARGE => {
                ApiError::new(
                    S::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is larger than the limit",
                )
            }
            other => ApiError::new(S::BAD_REQUEST, "bad_request", other.body_text()),
        }
    }
}

/// serde's own sentence (it names the field), without axum's preamble.
fn inner(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        last = s.to_string();
        cur = s.source();
    }
    last
}
