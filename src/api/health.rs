//! `/healthz` (the process answers) and `/readyz` (its parts are ready).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// `ok` or `failed`.
    pub store: String,
    /// `ok`, `pending`, `disabled` or `failed`. The reasons are in the log and in
    /// `roost status`, never in this anonymous answer (they name paths and errors).
    pub bridge: String,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// Liveness: the daemon answers.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the store answers and the bridge is up (once VM networking is enabled).
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(st): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let store = match st.store.ping() {
        Ok(()) => "ok".to_owned(),
        Err(e) => {
            tracing::warn!(error = %super::error::chain(&e), "readyz: the store does not answer");
            "failed".to_owned()
        }
    };
    let bridge = st.readiness.bridge();
    // Only the state word: what follows it (`disabled: <reason>`) is for the operator.
    let bridge = bridge
        .split(':')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let ready = store == "ok" && (bridge == "ok" || bridge.starts_with("disabled"));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: if ready { "ready" } else { "not_ready" }.into(),
            store,
            bridge,
        }),
    )
}
