//! `GET /metrics` (administrator token): the operator's Prometheus metrics, as
//! `crate::metrics` renders them. The same body is served without authentication on
//! `[metrics] listen` when the operator turns that listener on.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::ErrorBody;
use super::AppState;
use crate::auth::AdminUser;
use crate::metrics::Metrics;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(scrape))
}

/// Prometheus metrics: HTTP requests, SSH forwards, boot and creation times, each VM's
/// CPU, memory, disk and tap counters, hostings by state, capacity.
#[utoipa::path(get, path = "/metrics", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text format 0.0.4, or OpenMetrics 1.0 when `Accept` asks for it",
            content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 403, body = ErrorBody)))]
async fn scrape(State(m): State<Metrics>, _a: AdminUser, headers: HeaderMap) -> Response {
    crate::metrics::response(&m, &headers).await
}
