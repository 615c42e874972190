//! `/api/v1/auth/*`: register, login, me (and deleting it), password.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, PasswordChannel, PeerAddr};
use super::AppState;
use crate::auth::AuthUser;
use crate::store::Role;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 3-32 of `[a-z0-9-]`, not starting or ending with `-`; becomes the site slug.
    pub username: String,
    /// At least 8 characters.
    pub password: String,
    pub email: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    #[schema(value_type = String, example = "user")]
    pub role: Role,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    /// The password the account has now.
    pub current_password: String,
    /// At least 8 characters.
    pub new_password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteAccountRequest {
    /// The account's password, as confirmation.
    pub password: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

impl From<crate::auth::Token> for TokenView {
    fn from(t: crate::auth::Token) -> TokenView {
        TokenView {
            access_token: t.access_token,
            token_type: "Bearer".into(),
            expires_in: t.expires_in,
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct MeView {
    pub id: String,
    pub username: String,
    #[schema(value_type = String, example = "user")]
    pub role: Role,
    /// RFC 3339.
    pub created_at: String,
}

impl From<crate::store::User> for MeView {
    fn from(u: crate::store::User) -> MeView {
        MeView {
            id: u.id.to_string(),
            username: u.username,
            role: u.role,
            created_at: super::rfc3339(u.created_at),
        }
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(me, delete_me))
        .routes(routes!(change_password))
}

/// Creates an account.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, body = UserView),
        (status = 403, description = "HTTPS is on and this came over plain HTTP (`https_required`)", body = ErrorBody),
        (status = 409, description = "username taken", body = ErrorBody),
        (status = 422, description = "a field is invalid", body = ErrorBody),
        (status = 429, description = "too many accounts from this address; see Retry-After", body = ErrorBody),
        (status = 503, description = "password hashing is busy; see Retry-After", body = ErrorBody),
    ))]
async fn register(
    State(st): State<AppState>,
    _channel: PasswordChannel,
    PeerAddr(peer): PeerAddr,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let u = st
        .auth
        .register(
            Some(peer),
            &req.username,
            &req.password,
            req.email.as_deref(),
            Role::User,
            &req.username,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(UserView {
            id: u.id.to_string(),
            username: u.username,
            role: u.role,
        }),
    ))
}

/// Exchanges a username and password for an access token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = TokenView),
        (status = 401, description = "wrong credentials", body = ErrorBody),
        (status = 403, description = "the account is disabled, or HTTPS is on and this came over plain HTTP (`https_required`)", body = ErrorBody),
        (status = 429, description = "too many attempts; see Retry-After", body = ErrorBody),
        (status = 503, description = "password hashing is busy; see Retry-After", body = ErrorBody),
    ))]
async fn login(
    State(st): State<AppState>,
    _channel: PasswordChannel,
    PeerAddr(peer): PeerAddr,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<TokenView>, ApiError> {
    let t = st.auth.login(peer, &req.username, &req.password).await?;
    Ok(Json(TokenView::from(t)))
}

/// The signed-in account.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth",
    security(("bearer" = [])),
    responses((status = 200, body = MeView), (status = 401, body = ErrorBody)))]
async fn me(State(st): State<AppState>, user: AuthUser) -> Result<Json<MeView>, ApiError> {
    let u = st
        .store
        .user(user.id)?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(MeView::from(u)))
}

/// Changes the caller's password. Every token and browser session of the account ends
/// (whoever knew the old password is out); the answer is a new token for the caller.
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth",
    security(("bearer" = [])),
    request_body = PasswordRequest,
    responses(
        (status = 200, description = "changed; a new token (every earlier one is revoked)", body = TokenView),
        (status = 401, body = ErrorBody),
        (status = 403, description = "the current password is wrong (`wrong_password`), or HTTPS is on and this came over plain HTTP (`https_required`)", body = ErrorBody),
        (status = 422, description = "the new password breaks the rules", body = ErrorBody),
        (status = 429, description = "too many attempts; see Retry-After", body = ErrorBody),
    ))]
async fn change_password(
    State(st): State<AppState>,
    user: AuthUser,
    _channel: PasswordChannel,
    PeerAddr(peer): PeerAddr,
    ApiJson(req): ApiJson<PasswordRequest>,
) -> Result<Json<TokenView>, ApiError> {
    let u = st
        .auth
        .change_password(
            Some(peer),
            &user.username,
            Some(&req.current_password),
            &req.new_password,
            &user.username,
        )
        .await
        .map_err(|e| match e {
            // The rule is about the new password, whatever the field was called.
            crate::auth::AuthError::InvalidPassword(p) => ApiError::field("new_password", p),
            e => e.into(),
        })?;
    let t = st.auth.issue(&u)?;
    Ok(Json(TokenView::from(t)))
}

/// Deletes the caller's account with its SSH keys and sessions. Its hosting must be
/// deleted first (409). Every token of the account is refused from then on; the username
/// can be registered again.
#[utoipa::path(delete, path = "/api/v1/auth/me", tag = "auth",
    security(("bearer" = [])),
    request_body = DeleteAccountRequest,
    responses(
        (status = 204, description = "deleted"),
        (status = 401, body = ErrorBody),
        (status = 403, description = "the password is wrong (`wrong_password`), or HTTPS is on and this came over plain HTTP (`https_required`)", body = ErrorBody),
        (status = 409, description = "the account still has a hosting (`hosting_exists`)", body = ErrorBody),
        (status = 429, description = "too many attempts; see Retry-After", body = ErrorBody),
    ))]
async fn delete_me(
    State(st): State<AppState>,
    user: AuthUser,
    _channel: PasswordChannel,
    PeerAddr(peer): PeerAddr,
    ApiJson(req): ApiJson<DeleteAccountRequest>,
) -> Result<StatusCode, ApiError> {
    st.auth
        .delete_account(
            Some(peer),
            &user.username,
            Some(&req.password),
            &user.username,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
