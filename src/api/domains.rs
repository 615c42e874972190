//! `/api/v1/host/domains*`: the caller's own domains on their hosting: claim (the DNS
//! record to publish comes back), verify, list, remove.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, ErrorBody};
use super::extract::ApiJson;
use super::hostings::my_hosting;
use super::{rfc3339, AppState};
use crate::auth::AuthUser;
use crate::domains::{instructions, DomainError};
use crate::store::Domain;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The domain, e.g. `shop.example.org` (any case, a trailing dot and Unicode
    /// (IDNA) are accepted; it is stored in its ASCII form).
    pub name: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct DomainView {
    /// The normalised name (ASCII, lowercase).
    pub name: String,
    /// `pending` (not routed yet), `verified` (routed, certificate ordered when HTTPS
    /// is on), `suspended` (its record disappeared at a re-check; not routed).
    pub state: String,
    /// Why the last verification failed.
    pub reason: Option<String>,
    /// Publish a TXT record with this name and value, then verify.
    pub txt_name: String,
    pub txt_value: String,
    /// Point the domain here: a CNAME to this name (or the same A record).
    pub target: String,
    pub created_at: String,
    pub verified_at: Option<String>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(claim, list))
        .routes(routes!(verify))
        .routes(routes!(remove))
}

pub(super) fn view(d: &Domain, service_domain: &str) -> DomainView {
    let i = instructions(d, service_domain);
    DomainView {
        name: d.name.clone(),
        state: d.state.as_str().into(),
        reason: d.reason.clone(),
        txt_name: i.txt_name,
        txt_value: i.txt_value,
        target: i.target,
        created_at: rfc3339(d.created_at),
        verified_at: d.verified_at.map(rfc3339),
    }
}

/// Claims a domain for the caller's hosting; answers with the DNS records to publish.
#[utoipa::path(post, path = "/api/v1/host/domains", tag = "domains", security(("bearer" = [])),
    request_body = ClaimRequest,
    responses(
        (status = 201, body = DomainView),
        (status = 404, description = "the caller has no hosting", body = ErrorBody),
        (status = 409, description = "the domain is claimed already", body = ErrorBody),
        (status = 422, description = "not a domain, the service's own, or too many", body = ErrorBody),
    ))]
async fn claim(
    State(st): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> Result<(StatusCode, Json<DomainView>), ApiError> {
    let h = my_hosting(&st, &user)?;
    let d = st.domains.claim(user.id, h.id, &req.name, &user.username)?;
    Ok((StatusCode::CREATED, Json(view(&d, &st.cfg.domain))))
}

/// The caller's domains.
#[utoipa::path(get, path = "/api/v1/host/domains", tag = "domains", security(("bearer" = [])),
    responses((status = 200, body = [DomainView]), (status = 404, body = ErrorBody)))]
async fn list(
    State(st): State<AppState>,
    user: AuthUser,
) -> Result<Json<Vec<DomainView>>, ApiError> {
    let h = my_hosting(&st, &user)?;
    let ds = st.domains.of(h.id)?;
    Ok(Json(ds.iter().map(|d| view(d, &st.cfg.domain)).collect()))
}

/// Checks the domain's TXT record now; once found, the domain is routed to the caller's
/// site (and, with HTTPS on, its certificate is ordered).
#[utoipa::path(post, path = "/api/v1/host/domains/{name}/verify", tag = "domains", security(("bearer" = [])),
    params(("name" = String, Path, description = "the domain")),
    responses(
        (status = 200, body = DomainView),
        (status = 404, body = ErrorBody),
        (status = 422, description = "the TXT record is missing or wrong; nothing is routed", body = ErrorBody),
        (status = 503, description = "DNS could not be asked; see Retry-After", body = ErrorBody),
    ))]
async fn verify(
    State(st): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
) -> Result<Json<DomainView>, ApiError> {
    let h = my_hosting(&st, &user)?;
    let d = st.domains.verify(h.id, &name, &user.username).await?;
    Ok(Json(view(&d, &st.cfg.domain)))
}

/// Releases a domain: no longer routed, its certificate no longer renewed.
#[utoipa::path(delete, path = "/api/v1/host/domains/{name}", tag = "domains", security(("bearer" = [])),
    params(("name" = String, Path, description = "the domain")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove(
    State(st): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let h = my_hosting(&st, &user)?;
    st.domains.remove(h.id, &name, &user.username)?;
    Ok(StatusCode::NO_CONTENT)
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(m) => ApiError::field("name", m),
            DomainError::Taken(_) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            DomainError::TooMany(_) => ApiError::field("name", e.to_string()),
            DomainError::NotFound => ApiError::not_found("domain"),
            DomainError::NotVerified(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "not_verified", m)
            }
            DomainError::Lookup(_) => ApiError {
                retry_after: Some(30),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "dns_unavailable",
                    e.to_string(),
                )
            },
            DomainError::Store(ref s) => ApiError::internal(s),
        }
    }
}
