//! `/api/v1/ssh-keys`: a user's registered public keys.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, ErrorBody};
use super::extract::ApiJson;
use super::{rfc3339, AppState};
use crate::auth::AuthUser;
use crate::store::{SshKey, SshKeyId, StoreError};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddKeyRequest {
    /// One OpenSSH public key line (ed25519, ecdsa, or rsa of at least 2048 bits).
    pub public_key: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub public_key: String,
    pub fingerprint: String,
    pub comment: String,
    pub created_at: String,
}

fn view(k: SshKey) -> KeyView {
    KeyView {
        id: k.id.to_string(),
        public_key: k.public_key,
        fingerprint: k.fingerprint,
        comment: k.comment,
        created_at: rfc3339(k.created_at),
    }
}

/// At most this many keys per user.
const MAX_KEYS: usize = 32;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(add, list))
        .routes(routes!(remove))
}

/// Registers a public key; new hostings get the user's keys.
#[utoipa::path(post, path = "/api/v1/ssh-keys", tag = "ssh-keys", security(("bearer" = [])),
    request_body = AddKeyRequest,
    responses((status = 201, body = KeyView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn add(
    State(st): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<AddKeyRequest>,
) -> Result<(StatusCode, Json<KeyView>), ApiError> {
    let k = crate::cloudinit::parse_public_key(&req.public_key)
        .map_err(|e| ApiError::field("public_key", e))?;
    let key = SshKey {
        id: SshKeyId::new(),
        user: user.id,
        public_key: k.openssh.clone(),
        fingerprint: k.fingerprint.clone(),
        comment: k
            .openssh
            .splitn(3, ' ')
            .nth(2)
            .unwrap_or_default()
            .to_owned(),
        created_at: crate::store::now(),
    };
    match st.store.add_ssh_key(&key, MAX_KEYS) {
        Ok(()) => Ok((StatusCode::CREATED, Json(view(key)))),
        Err(e @ StoreError::TooManyKeys(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_keys",
            e.to_string(),
        )),
        Err(StoreError::DuplicateKey) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this key is already registered",
        )),
        Err(e) => Err(e.into()),
    }
}

/// The caller's keys.
#[utoipa::path(get, path = "/api/v1/ssh-keys", tag = "ssh-keys", security(("bearer" = [])),
    responses((status = 200, body = [KeyView])))]
async fn list(State(st): State<AppState>, user: AuthUser) -> Result<Json<Vec<KeyView>>, ApiError> {
    Ok(Json(
        st.store.ssh_keys(user.id)?.into_iter().map(view).collect(),
    ))
}

/// Removes one of the caller's keys (running VMs keep the keys they were created with).
#[utoipa::path(delete, path = "/api/v1/ssh-keys/{id}", tag = "ssh-keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "key id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: SshKeyId = id.parse().map_err(|_| ApiError::not_found("key"))?;
    match st.store.delete_ssh_key(user.id, id) {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NoSuchKey) => Err(ApiError::not_found("key")),
        Err(e) => Err(e.into()),
    }
}
