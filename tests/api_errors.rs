//! The API's error mapping, in process: `app(state).oneshot(request)` with a real store and
//! real auth, no listener and no VM runtime (the image does not exist). Every refusal is a
//! JSON body `{error, message}` with the right status; nothing here needs root.

use std::sync::Arc;

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use roost::api::{app, AppState, ReadinessState};
use roost::auth::Auth;
use roost::config::Config;
use roost::store::Store;

struct App {
    router: axum::Router,
    _dir: tempfile::TempDir,
}

async fn app_under_test() -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config {
        state_dir: dir.path().join("state"),
        domain: "example.test".into(),
        ..Config::default()
    };
    cfg.vm.image = "/nonexistent/roost-test-image".into();
    cfg.http.max_body_bytes = 4096;
    std::fs::create_dir_all(&cfg.state_dir).expect("state dir");
    let store = Store::open(&cfg.state_dir).expect("store");
    let auth = Arc::new(Auth::new(store.clone(), &[7u8; 32], &cfg));
    let cfg = Arc::new(cfg);
    let routes = roost::proxy::Routes::new(Vec::new());
    let forwarders =
        roost::forward::Forwarders::new(std::net::Ipv4Addr::LOCALHOST).expect("forwarders");
    let tasks = roost::tasks::Tasks::default();
    let hostings = roost::hosting::start(
        cfg.clone(),
        store.clone(),
        routes.clone(),
        forwarders,
        Default::default(),
        &tasks,
    )
    .await;
    let domains = roost::domains::Domains::new(cfg.clone(), store.clone(), routes);
    let state = AppState {
        cfg,
        store,
        auth,
        readiness: Arc::new(ReadinessState::new("disabled")),
        hostings,
        domains,
        https: None,
        metrics: Default::default(),
    };
    App {
        router: app(state),
        _dir: dir,
    }
}

impl App {
    async fn call(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|never| match never {});
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!("{status}: not JSON: {:?}", String::from_utf8_lossy(&bytes))
        });
        (status, v)
    }

    async fn json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        self.call(req.body(Body::from(body.to_string())).expect("request"))
            .await
    }

    async fn token(&self, user: &str) -> String {
        let (s, v) = self
            .json(
                "POST",
                "/api/v1/auth/register",
                None,
                json!({"username": user, "password": "password123"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = self
            .json(
                "POST",
                "/api/v1/auth/login",
                None,
                json!({"username": user, "password": "password123"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["access_token"].as_str().expect("token").to_owned()
    }
}

fn assert_error(status: StatusCode, v: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{v}");
    assert_eq!(v["error"], code, "{v}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message: {v}"
    );
}

#[tokio::test]
async fn every_refusal_is_json_with_the_right_status() {
    let a = app_under_test().await;
    let t = a.token("alice").await;
    let raw = |method: &str, path: &str, ctype: &str, body: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", ctype)
            .body(Body::from(body.to_owned()))
            .expect("request")
    };

    // Routing.
    let (s, v) = a
        .call(
            Request::get("/api/v1/nothing")
                .body(Body::empty())
                .expect("req"),
        )
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    let (s, v) = a
        .call(raw("PUT", "/api/v1/auth/login", "application/json", "{}"))
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{v}");
    assert!(v["message"].as_str().is_some(), "{v}");

    // Bodies: not JSON, malformed, too large, a wrong field.
    let (s, v) = a
        .call(raw("POST", "/api/v1/auth/login", "text/plain", "hi"))
        .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
    assert!(v["message"].as_str().is_some(), "{v}");
    let (s, v) = a
        .call(raw(
            "POST",
            "/api/v1/auth/login",
            "application/json",
            "{\"username\":",
        ))
        .await;
    assert!(
        s == StatusCode::BAD_REQUEST || s == StatusCode::UNPROCESSABLE_ENTITY,
        "{s}: {v}"
    );
    assert!(v["message"].as_str().is_some(), "{v}");
    let big = format!("{{\"username\":\"{}\"}}", "a".repeat(10_000));
    let (s, v) = a
        .call(raw("POST", "/api/v1/auth/login", "application/json", &big))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let (s, v) = a
        .json(
            "POST",
            "/api/v1/auth/register",
            None,
            json!({"username": "sudo", "password": "password123"}),
        )
        .await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("username")),
        "{v}"
    );

    // Tokens: none, malformed, a user's on an admin route.
    let (s, v) = a
        .call(
            Request::get("/api/v1/auth/me")
                .body(Body::empty())
                .expect("req"),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v["message"].as_str().is_some(), "{v}");
    let (s, v) = a
        .call(
            Request::get("/api/v1/auth/me")
                .header("authorization", "Bearer not.a.jwt")
                .body(Body::empty())
                .expect("req"),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, v) = a
        .call(
            Request::get("/api/v1/admin/capacity")
                .header("authorization", format!("Bearer {t}"))
                .body(Body::empty())
                .expect("req"),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // Hosting without a VM runtime: 503 without the host's details; nothing created.
    let (s, v) = a.json("POST", "/api/v1/host", Some(&t), json!({})).await;
    assert_error(s, &v, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(!v.to_string().contains("/nonexistent"), "{v}");
    let (s, v) = a
        .call(
            Request::get("/api/v1/host")
                .header("authorization", format!("Bearer {t}"))
                .body(Body::empty())
                .expect("req"),
        )
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
}
