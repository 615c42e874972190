//! The HTTP API: axum routes under `/api/v1`, health endpoints, JSON errors and the
//! generated OpenAPI document. The only module with serde types for HTTP.
//!
//! Handlers validate input and call `auth` (and, later, `hosting`); they never touch
//! redb tables, QEMU or netlink themselves.

mod accounts;
mod admin;
mod console;
mod dashboard;
mod domains;
pub mod error;
mod extract;
mod guest;
mod health;
mod hostings;
mod keys;
mod metrics;
mod session;
mod sleep;
mod snapshots;
mod vms;

use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::Auth;
use crate::config::Config;
use crate::store::Store;
pub use error::{ApiError, ErrorBody};

/// Timestamps in API answers: RFC 3339, UTC.
pub(crate) use crate::store::rfc3339;

/// What `/readyz` reports about the parts that come up after start.
#[derive(Default)]
pub struct ReadinessState {
    bridge: Mutex<String>,
}

impl ReadinessState {
    pub fn new(bridge: impl Into<String>) -> ReadinessState {
        ReadinessState {
            bridge: Mutex::new(bridge.into()),
        }
    }
    pub fn set_bridge(&self, s: impl Into<String>) {
        if let Ok(mut b) = self.bridge.lock() {
            *b = s.into();
        }
    }
    pub fn bridge(&self) -> String {
        self.bridge
            .lock()
            .map(|b| b.clone())
            .unwrap_or_else(|_| "failed: poisoned".into())
    }
}

/// Shared state of every handler.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub cfg: Arc<Config>,
    pub store: Store,
    pub auth: Arc<Auth>,
    pub readiness: Arc<ReadinessState>,
    pub hostings: crate::hosting::Hostings,
    pub domains: crate::domains::Domains,
    /// HTTPS, when it is on.
    pub https: Option<crate::tls::Https>,
    /// The operator's metrics (`GET /metrics`).
    pub metrics: crate::metrics::Metrics,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "roost", description = "Web hosting on per-user virtual machines."),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;
impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
        }
    }
}

/// The router and the OpenAPI document describing exactly its routes.
pub fn app_with_doc(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let api = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(accounts::router())
        .merge(admin::router())
        .merge(hostings::router())
        .merge(keys::router())
        .merge(domains::router())
        .merge(snapshots::router())
        .merge(sleep::router())
        .merge(guest::router())
        .merge(vms::router())
        .merge(metrics::router())
        .merge(session::router())
        .merge(console::router())
        .layer(DefaultBodyLimit::max(state.cfg.http.max_body_bytes));
    let (router, mut doc) = OpenApiRouter::new()
        .merge(api)
        .merge(health::router())
        .split_for_parts();
    // The document lists itself too, so that "every route" really is every route.
    doc.paths.paths.insert(
        "/api/v1/openapi.json".into(),
        utoipa::openapi::path::PathItem::new(
            utoipa::openapi::HttpMethod::Get,
            utoipa::openapi::path::OperationBuilder::new()
                .summary(Some("This OpenAPI document."))
                .tag("meta")
                .response("200", utoipa::openapi::Response::new("OpenAPI 3 JSON")),
        ),
    );
    document_common_errors(&mut doc);
    let doc_json = Arc::new(doc.clone());
    let router = router
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let d = doc_json.clone();
                async move { Json(d.as_ref().clone()) }
            }),
        )
        .fallback(dashboard::fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(state);
    (router, doc)
}

/// Adds the answers every operation of a kind can give, which the per-route annotations
/// leave out: 401 where a token is required, 403 on admin routes, 413/415/422 where a JSON
/// body is read. Clients generated from the document then know them all.
fn document_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |what: &str| {
        ResponseBuilder::new()
            .description(what)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let admin = path.starts_with("/api/v1/admin/");
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let mut add = |code: &str, what: &str| {
                op.responses
                    .responses
                    .entry(code.to_owned())
                    .or_insert_with(|| error(what).into());
            };
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            if secured {
                add(
                    "401",
                    "no valid bearer token (missing, expired, revoked or malformed)",
                );
            }
            if admin {
                add("403", "the token is not an administrator's");
            }
            if op.request_body.is_some() {
                add("413", "the body is larger than `[http] max_body_bytes`");
                add("415", "the body is not `application/json`");
                add("422", "a field is missing or invalid; the message names it");
            }
        }
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    app_with_doc(state).0
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed on this route",
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "an internal error occurred; it has been logged",
    )
    .into_response()
}
