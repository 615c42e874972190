//! API integration tests: the real `roost` binary on a loopback port with a temp state dir,
//! driven over HTTP. No root needed.

mod common;

use common::daemon::*;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Asserts the error shape: `{"error": code, "message": sentence}`.
fn assert_error(v: &Value, code: &str) {
    assert_eq!(v["error"], code, "{v}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message missing: {v}"
    );
}

#[test]
fn register_login_me() {
    let d = Daemon::start();
    let (s, v) = register(&d, "alice", "correct horse");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["username"], "alice");
    assert_eq!(v["role"], "user");
    let id = v["id"].as_str().expect("id").to_owned();

    let (s, v) = login(&d, "alice", "correct horse");
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    let t = v["access_token"].as_str().expect("token");

    let (s, v) = get(&d, "/api/v1/auth/me", Some(t));
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["username"], "alice");
    assert_eq!(v["role"], "user");
    assert!(
        v["created_at"].as_str().is_some_and(|c| c.ends_with('Z')),
        "{v}"
    );
}

/// `POST /api/v1/auth/password` with the `token` of the caller.
fn change_password(
    d: &Daemon,
    token: Option<&str>,
    current: &str,
    new: &str,
) -> (StatusCode, Value) {
    let mut r = client()
        .post(d.url("/api/v1/auth/password"))
        .json(&json!({"current_password": current, "new_password": new}));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().expect("send");
    (r.status(), r.json().unwrap_or(Value::Null))
}

/// A changed password ends every token issued with the old one (another device, a thief),
/// and the caller carries on with the new token it is given.
#[test]
fn changing_the_password_revokes_every_earlier_token() {
    let d = Daemon::start();
    assert_eq!(
        register(&d, "alice", "correct horse").0,
        StatusCode::CREATED
    );
    let laptop = token(&d, "alice", "correct horse");
    let phone = token(&d, "alice", "correct horse");

    let (s, v) = change_password(&d, None, "correct horse", "battery staple");
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, v) = change_password(&d, Some(&laptop), "not my password", "battery staple");
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_error(&v, "wrong_password");
    let (s, v) = change_password(&d, Some(&laptop), "correct horse", "short");
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("new_password")),
        "{v}"
    );
    // Nothing changed so far.
    assert_eq!(get(&d, "/api/v1/auth/me", Some(&phone)).0, StatusCode::OK);
    assert_eq!(login(&d, "alice", "correct horse").0, StatusCode::OK);

    let (s, v) = change_password(&d, Some(&laptop), "correct horse", "battery staple");
    assert_eq!(s, StatusCode::OK, "{v}");
    let fresh = v["access_token"].as_str().expect("a new token").to_owned();
    for old in [&laptop, &phone] {
        let (s, v) = get(&d, "/api/v1/auth/me", Some(old));
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("token_revoked")),
            "{v}"
        );
    }
    assert_eq!(get(&d, "/api/v1/auth/me", Some(&fresh)).0, StatusCode::OK);
    assert_eq!(
        login(&d, "alice", "correct horse").0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(login(&d, "alice", "battery staple").0, StatusCode::OK);

    // Audited, without the password.
    let admin_log = d.log_text();
    assert!(
        !admin_log.contains("battery staple"),
        "the password is never logged"
    );
}

/// A user deletes their account: the password confirms it, their tokens die with it, and
/// the name can be registered again (by anyone, with nothing of the old account).
#[test]
fn an_account_deleted_by_its_owner_is_gone_with_its_keys() {
    let d = Daemon::start();
    assert_eq!(
        register(&d, "alice", "correct horse").0,
        StatusCode::CREATED
    );
    let t = token(&d, "alice", "correct horse");
    let r = client()
        .post(d.url("/api/v1/ssh-keys"))
        .bearer_auth(&t)
        .json(&json!({"public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB8Xn8y2vXk5d3Q4Y0Wg0b8kq1rG3Hn0cXr3d4B3n0jW alice@laptop"}))
        .send()
        .expect("send");
    assert_eq!(r.status(), StatusCode::CREATED);
    let delete = |token: &str, password: &str| {
        let r = client()
            .delete(d.url("/api/v1/auth/me"))
            .bearer_auth(token)
            .json(&json!({"password": password}))
            .send()
            .expect("send");
        (r.status(), r.json::<Value>().unwrap_or(Value::Null))
    };
    let (s, v) = delete(&t, "not my password");
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_error(&v, "wrong_password");
    assert_eq!(get(&d, "/api/v1/auth/me", Some(&t)).0, StatusCode::OK);

    let (s, v) = delete(&t, "correct horse");
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(
        get(&d, "/api/v1/auth/me", Some(&t)).0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&d, "alice", "correct horse").0,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(
        register(&d, "alice", "another horse").0,
        StatusCode::CREATED
    );
    let t2 = token(&d, "alice", "another horse");
    let (s, keys) = get(&d, "/api/v1/ssh-keys", Some(&t2));
    assert_eq!(
        (s, keys.as_array().map(Vec::len)),
        (StatusCode::OK, Some(0)),
        "{keys}"
    );
    // The old token does not work for the new account of the same name.
    assert_eq!(
        get(&d, "/api/v1/auth/me", Some(&t)).0,
        StatusCode::UNAUTHORIZED
    );
}

/// An administrator locks an abusive account out from the API (and lets it back in); the
/// account's tokens die at once, and no administrator can lock themselves out.
#[test]
fn an_admin_disables_and_enables_an_account() {
    let d = Daemon::start();
    d.user_add("ops", "ops password", true);
    let admin = token(&d, "ops", "ops password");
    assert_eq!(
        register(&d, "mallory", "mallory pw 1").0,
        StatusCode::CREATED
    );
    let mallory = token(&d, "mallory", "mallory pw 1");
    let act = |token: &str, path: &str| {
        let r = client()
            .post(d.url(path))
            .bearer_auth(token)
            .send()
            .expect("send");
        (r.status(), r.json::<Value>().unwrap_or(Value::Null))
    };
    let (s, v) = act(&mallory, "/api/v1/admin/users/ops/disable");
    assert_eq!(s, StatusCode::FORBIDDEN, "not for users: {v}");
    let (s, v) = act(&admin, "/api/v1/admin/users/mallory/disable");
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["disabled_at"].is_string(), "{v}");
    let (s, v) = get(&d, "/api/v1/auth/me", Some(&mallory));
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("account_disabled"))
    );
    assert_eq!(
        login(&d, "mallory", "mallory pw 1").0,
        StatusCode::FORBIDDEN
    );
    let (s, v) = act(&admin, "/api/v1/admin/users/mallory/enable");
    assert_eq!(
        (s, v["disabled_at"].is_null()),
        (StatusCode::OK, true),
        "{v}"
    );
    assert_eq!(login(&d, "mallory", "mallory pw 1").0, StatusCode::OK);

    let (s, v) = act(&admin, "/api/v1/admin/users/ops/disable");
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_error(&v, "own_account");
    assert_eq!(
        act(&admin, "/api/v1/admin/users/nobody/disable").0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        act(&admin, "/api/v1/admin/users/mallory/explode").0,
        StatusCode::NOT_FOUND
    );
    let (_, audit) = get(&d, "/api/v1/admin/audit", Some(&admin));
    let by_ops: Vec<&str> = audit
        .as_array()
        .expect("audit")
        .iter()
        .filter(|e| e["actor"] == "ops" && e["target"] == "mallory")
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        by_ops.contains(&"user.disable") && by_ops.contains(&"user.enable"),
        "{by_ops:?}"
    );
}

#[test]
fn every_error_status_from_real_bad_requests() {
    let d = Daemon::start_with("[auth]\nlogin_attempts = 5\nlogin_window_secs = 600\n");
    let c = client();
    assert_eq!(register(&d, "bob", "password1").0, StatusCode::CREATED);
    let t = token(&d, "bob", "password1");

    // 400: malformed JSON.
    let r = c
        .post(d.url("/api/v1/auth/register"))
        .header("content-type", "application/json")
        .body("{\"username\": ")
        .send()
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_error(&r.json().expect("json"), "malformed_json");

    // 401: missing, tampered, garbage tokens; wrong password.
    let (s, v) = get(&d, "/api/v1/auth/me", None);
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, "unauthorized");
    let mut tampered = t.clone();
    let last = tampered.pop().expect("char");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let (s, v) = get(&d, "/api/v1/auth/me", Some(&tampered));
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, "invalid_token");
    assert_eq!(
        get(&d, "/api/v1/auth/me", Some("x.y.z")).0,
        StatusCode::UNAUTHORIZED
    );
    let (s, v) = login(&d, "bob", "wrong password");
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, "invalid_credentials");
    let (s, v) = login(&d, "nobody", "wrong password");
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, "invalid_credentials");

    // 403: a user on an admin route.
    let (s, v) = get(&d, "/api/v1/admin/users", Some(&t));
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, "forbidden");

    // 404: no such route, JSON too.
    let (s, v) = get(&d, "/api/v1/nope", None);
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, "not_found");

    // The sleep switch: 422 for a non-boolean, 404 without a hosting, 401 without a token.
    let put_sleep = |body: &str, token: Option<&str>| {
        let mut r = c
            .put(d.url("/api/v1/host/sleep"))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().expect("send");
        (r.status(), r.json::<Value>().unwrap_or(Value::Null))
    };
    let (s, v) = put_sleep(r#"{"enabled": "yes"}"#, Some(&t));
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = put_sleep(r#"{"enabled": true}"#, Some(&t));
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_error(&v, "not_found");
    assert_eq!(
        put_sleep(r#"{"enabled": true}"#, None).0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&d, "/api/v1/host/sleep", Some(&t)).0,
        StatusCode::NOT_FOUND
    );
    // The console password: 422 for a short one (before anything is looked up), 404
    // without a hosting.
    let put_pw = |body: &str| {
        let r = c
            .put(d.url("/api/v1/host/console-password"))
            .header("content-type", "application/json")
            .bearer_auth(&t)
            .body(body.to_owned())
            .send()
            .expect("send");
        (r.status(), r.json::<Value>().unwrap_or(Value::Null))
    };
    let (s, v) = put_pw(r#"{"password": "short"}"#);
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("password")),
        "{v}"
    );
    let (s, v) = put_pw(r#"{"password": "long enough password"}"#);
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    // 405.
    let r = c.delete(d.url("/api/v1/auth/login")).send().expect("send");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&r.json().expect("json"), "method_not_allowed");

    // 409: duplicate username.
    let (s, v) = register(&d, "bob", "password2");
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&v, "conflict");

    // 413: body over the limit (4096 in this config), with and without Content-Length.
    let big = json!({"username": "carol", "password": "x".repeat(8000)});
    let r = c
        .post(d.url("/api/v1/auth/register"))
        .json(&big)
        .send()
        .expect("send");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        r.headers().get("connection").and_then(|v| v.to_str().ok()),
        Some("close"),
        "a refused body leaves the connection unusable"
    );
    assert_error(&r.json().expect("json"), "payload_too_large");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(vec![b' '; 3000]), Ok(vec![b' '; 3000])];
    let r = c
        .post(d.url("/api/v1/auth/register"))
        .header("content-type", "application/json")
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(
            chunks
                .into_iter()
                .flat_map(|c| c.unwrap_or_default())
                .collect::<Vec<u8>>(),
        )))
        .send()
        .expect("send");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // 415: wrong content type.
    let r = c
        .post(d.url("/api/v1/auth/register"))
        .header("content-type", "text/plain")
        .body(r#"{"username":"carol","password":"password1"}"#)
        .send()
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_error(&r.json().expect("json"), "unsupported_media_type");

    // 422: invalid fields, the message names the field.
    for (body, field) in [
        (
            json!({"username": "Carol", "password": "password1"}),
            "username",
        ),
        (
            json!({"username": "ab", "password": "password1"}),
            "username",
        ),
        (
            json!({"username": "admin", "password": "password1"}),
            "username",
        ),
        (
            json!({"username": "-carol", "password": "password1"}),
            "username",
        ),
        // The username is the login name in the VM: nothing that the guest would refuse
        // (a system account, a leading digit) gets an account and then a failed seed.
        (
            json!({"username": "sudo", "password": "password1"}),
            "system account",
        ),
        (
            json!({"username": "nginx", "password": "password1"}),
            "system account",
        ),
        (
            json!({"username": "123abc", "password": "password1"}),
            "start with a letter",
        ),
        (
            json!({"username": "carol", "password": "short"}),
            "password",
        ),
        (
            json!({"username": "carol", "password": "password1", "email": "nope"}),
            "email",
        ),
        (json!({"username": "carol"}), "password"),
        (json!({"username": 5, "password": "password1"}), "username"),
        (
            json!({"username": "carol", "password": "password1", "colour": "red"}),
            "colour",
        ),
    ] {
        let r = c
            .post(d.url("/api/v1/auth/register"))
            .json(&body)
            .send()
            .expect("send");
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let v: Value = r.json().expect("json");
        assert_error(&v, "invalid_field");
        assert!(
            v["message"].as_str().is_some_and(|m| m.contains(field)),
            "{body} -> {v}"
        );
    }
    // Nothing was created by the refused requests.
    assert_eq!(login(&d, "carol", "password1").0, StatusCode::UNAUTHORIZED);

    // 429: login attempts per username (5 per 600 s here; 4 were used above on bob/nobody).
    let mut limited = None;
    for _ in 0..6 {
        let r = c
            .post(d.url("/api/v1/auth/login"))
            .json(&json!({"username": "bob", "password": "wrong password"}))
            .send()
            .expect("send");
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = limited.expect("rate limit reached");
    let retry = retry_after(&r);
    assert!((1..=600).contains(&retry), "{retry}");
    assert_error(&r.json().expect("json"), "rate_limited");
    // Even the right password is refused while limited.
    assert_eq!(
        login(&d, "bob", "password1").0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[test]
fn registrations_per_address_are_limited() {
    let d = Daemon::start_with("[auth]\nregister_per_hour = 2\n");
    // Refused before any hashing: these do not use up the address's quota.
    assert_eq!(
        register(&d, "Bad Name", "password1").0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    for user in ["alice", "bob"] {
        let (s, v) = register(&d, user, "password1");
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let r = client()
        .post(d.url("/api/v1/auth/register"))
        .json(&json!({"username": "carol", "password": "password1"}))
        .send()
        .expect("send");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry = retry_after(&r);
    // 2 per hour: the next one is allowed within half an hour.
    assert!((1..=1800).contains(&retry), "{retry}");
    assert_error(&r.json().expect("json"), "rate_limited");
    // Nothing was created for carol; the accounts made before still work.
    assert_eq!(login(&d, "carol", "password1").0, StatusCode::UNAUTHORIZED);
    assert_eq!(login(&d, "alice", "password1").0, StatusCode::OK);
}

#[test]
fn bad_input_never_makes_a_5xx() {
    let d = Daemon::start();
    let c = client();
    let bodies: [&[u8]; 9] = [
        b"",
        b"null",
        b"[]",
        b"{}",
        b"\xff\xfe\x00",
        b"{\"username\": \"\\u0000\", \"password\": \"\\ud800\"}",
        b"{\"username\": [1,2,3], \"password\": {}}",
        b"{\"username\": \"a\", \"username\": \"b\", \"password\": \"password1\"}",
        b"9999999999999999999999999999",
    ];
    for path in ["/api/v1/auth/register", "/api/v1/auth/login"] {
        for b in bodies {
            let r = c
                .post(d.url(path))
                .header("content-type", "application/json")
                .body(b.to_vec())
                .send()
                .expect("send");
            assert!(
                r.status().is_client_error(),
                "{path} {b:?} -> {}",
                r.status()
            );
            let v: Value = r.json().expect("json error body");
            assert!(v["error"].is_string(), "{v}");
        }
    }
    for auth in [
        "Bearer",
        "Bearer ",
        "Basic abc",
        "bearer a.b.c",
        "Bearer \u{7f}",
    ] {
        let r = c
            .get(d.url("/api/v1/auth/me"))
            .header("authorization", auth)
            .send();
        if let Ok(r) = r {
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        }
    }
    let (s, _) = get(&d, "/api/v1/admin/audit?limit=abc", None);
    assert!(s.is_client_error());
    assert_eq!(get(&d, "/healthz", None).0, StatusCode::OK);
}

#[test]
fn restart_keeps_users_and_the_jwt_secret() {
    let mut d = Daemon::start();
    assert_eq!(register(&d, "dora", "password1").0, StatusCode::CREATED);
    let t = token(&d, "dora", "password1");
    let secret = std::fs::read(d.state_dir().join("jwt.secret")).expect("secret");
    d.kill9();
    d.spawn();
    assert_eq!(
        std::fs::read(d.state_dir().join("jwt.secret")).expect("secret"),
        secret
    );
    let (s, v) = get(&d, "/api/v1/auth/me", Some(&t));
    assert_eq!(s, StatusCode::OK, "old token still valid: {v}");
    assert_eq!(v["username"], "dora");
    assert_eq!(login(&d, "dora", "password1").0, StatusCode::OK);
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let mut d = Daemon::start();
    let mut child = d.child.take().expect("child");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let status = common::poll("roost to exit", Duration::from_secs(10), || {
        child.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status:?}");
}

#[test]
fn concurrent_registrations_of_one_name_give_exactly_one_201() {
    let d = Daemon::start();
    let url = d.url("/api/v1/auth/register");
    let handles: Vec<_> = (0..12)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                client()
                    .post(url)
                    .json(&json!({"username": "erin", "password": format!("password{i}")}))
                    .send()
                    .expect("send")
                    .status()
            })
        })
        .collect();
    let statuses: Vec<StatusCode> = handles
        .into_iter()
        .map(|h| h.join().expect("join"))
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
}

#[test]
fn openapi_covers_every_route_and_health_endpoints_answer() {
    let d = Daemon::start();
    let (s, doc) = get(&d, "/api/v1/openapi.json", None);
    assert_eq!(s, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/auth/me",
        "/api/v1/admin/users",
        "/api/v1/admin/audit",
        "/api/v1/openapi.json",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains_key(p), "{p} missing from OpenAPI");
    }
    // Every operation documents the answers of its kind: 401 where a token is needed, 403
    // on admin routes, 413/415/422 where a JSON body is read.
    for (p, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            let codes = op["responses"].as_object().expect("responses");
            let mut want = Vec::new();
            if op["security"].as_array().is_some_and(|s| !s.is_empty()) {
                want.push("401");
            }
            if p.starts_with("/api/v1/admin/") {
                want.push("403");
            }
            if op.get("requestBody").is_some() {
                want.extend(["413", "415", "422"]);
            }
            for code in want {
                assert!(
                    codes.contains_key(code),
                    "{method} {p} does not document {code}"
                );
            }
        }
    }
    // And every documented GET without parameters really answers (no 404/405).
    for (p, item) in paths {
        if item.get("get").is_some() && !p.contains('{') {
            let (s, _) = get(&d, p, None);
            assert!(
                s != StatusCode::NOT_FOUND && s != StatusCode::METHOD_NOT_ALLOWED,
                "{p}: {s}"
            );
        }
    }
    let (s, v) = get(&d, "/readyz", None);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["store"], "ok");
}

#[test]
fn check_fails_without_an_image_and_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{}\"\n[vm]\nimage = \"{}\"\n",
            dir.path().join("s").display(),
            dir.path().join("no-image").display()
        ),
    )
    .expect("write");
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("image") && text.contains("build-image.sh"),
        "{text}"
    );
    assert!(text.contains("cannot run"), "{text}");
}

#[test]
fn bad_config_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    for (text, key) in [
        ("[vm]\nvcpu = 2\n", "vcpu"),
        ("[ssh]\nport_range = \"x\"\n", "ssh.port_range"),
    ] {
        std::fs::write(&cfg, text).expect("write");
        let out = Command::new(bin())
            .args(["serve", "--config"])
            .arg(&cfg)
            .output()
            .expect("run");
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(key),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!Path::new("/nonexistent-roost-config").exists());
    let out = Command::new(bin())
        .args(["serve", "--config", "/nonexistent-roost-config"])
        .output()
        .expect("run");
    assert!(!out.status.success());
}

#[test]
fn ssh_keys_crud_and_hosting_without_vm_support() {
    let d = Daemon::start();
    assert_eq!(register(&d, "frank", "password1").0, StatusCode::CREATED);
    assert_eq!(register(&d, "grace", "password1").0, StatusCode::CREATED);
    let t = token(&d, "frank", "password1");
    let g = token(&d, "grace", "password1");
    let c = client();
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGqCMGQmuykGwc4qobqcDUvfAGhGj4tcpADEWk3sUAy2 frank@laptop";

    // 422 naming the problem; nothing stored.
    for bad in [
        "ssh-ed25519 notbase64!",
        "not a key",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGqCMGQmuykGwc4qobqcDUvfAGhGj4tcpADEWk3sUAy2\nrunCmd: [x]",
        "",
    ] {
        let r = c
            .post(d.url("/api/v1/ssh-keys"))
            .bearer_auth(&t)
            .json(&json!({ "public_key": bad }))
            .send()
            .expect("send");
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
        let v: Value = r.json().expect("json");
        assert_error(&v, "invalid_field");
        assert!(v["message"].as_str().is_some_and(|m| m.contains("public_key")), "{v}");
    }
    assert_eq!(get(&d, "/api/v1/ssh-keys", Some(&t)).1, json!([]));

    let r = c
        .post(d.url("/api/v1/ssh-keys"))
        .bearer_auth(&t)
        .json(&json!({ "public_key": key }))
        .send()
        .expect("send");
    assert_eq!(r.status(), StatusCode::CREATED);
    let k: Value = r.json().expect("json");
    assert!(
        k["fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("SHA256:")),
        "{k}"
    );
    assert_eq!(k["comment"], "frank@laptop");
    // The same key twice: 409.
    let r = c
        .post(d.url("/api/v1/ssh-keys"))
        .bearer_auth(&t)
        .json(&json!({ "public_key": key }))
        .send()
        .expect("send");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // Keys are per user.
    assert_eq!(get(&d, "/api/v1/ssh-keys", Some(&g)).1, json!([]));
    let id = k["id"].as_str().expect("id");
    let r = c
        .delete(d.url(&format!("/api/v1/ssh-keys/{id}")))
        .bearer_auth(&g)
        .send()
        .expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (s, list) = get(&d, "/api/v1/ssh-keys", Some(&t));
    assert_eq!(
        (s, list.as_array().map(Vec::len)),
        (StatusCode::OK, Some(1))
    );
    let r = c
        .delete(d.url(&format!("/api/v1/ssh-keys/{id}")))
        .bearer_auth(&t)
        .send()
        .expect("send");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(get(&d, "/api/v1/ssh-keys", Some(&t)).1, json!([]));

    // This daemon has no guest image: hosting answers 503 without the host's details (the
    // reason names paths; the operator sees it in `roost status`), creates nothing.
    let (s, v, _) = post_host(&d, &t);
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_error(&v, "unavailable");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("not available") && !m.contains('/')),
        "{v}"
    );
    assert_eq!(get(&d, "/api/v1/host", Some(&t)).0, StatusCode::NOT_FOUND);
    let (s, v) = get(&d, "/readyz", None);
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["bridge"], "disabled", "{v}");
    assert!(
        !v.to_string().contains('/'),
        "no host paths or errors to anonymous clients: {v}"
    );
    assert_eq!(
        get(&d, "/api/v1/host/access-urls", Some(&t)).0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&d, "/api/v1/host/proxy-info", Some(&t)).1, json!([]));
    let (s, _) = get(&d, "/api/v1/admin/vms", Some(&t));
    assert_eq!(s, StatusCode::FORBIDDEN);
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

/// The state directory holds password hashes, the JWT secret and VM disks: 0711 (QEMUs pass
/// through to their own directories, nobody lists it), its files 0600, and fixed at every
/// start whatever made them looser.
#[test]
fn state_files_are_private_and_fixed_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let mut d = Daemon::start();
    let state = d.state_dir();
    let files = [state.join("roost.redb"), state.join("jwt.secret")];
    assert_eq!(mode(&state), 0o711);
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    d.kill9();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for f in &files {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    d.spawn();
    assert_eq!(
        mode(&state),
        0o711,
        "the state directory is tightened at start"
    );
    for f in &files {
        assert_eq!(mode(f), 0o600, "{} is tightened at start", f.display());
    }
}

/// Two daemons on one state directory would corrupt each other: the second is refused,
/// naming the first's PID, before it touches anything.
#[test]
fn a_second_daemon_on_the_same_state_dir_is_refused() {
    let d = Daemon::start();
    let first = d.child.as_ref().expect("daemon").id();
    let mut second = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&d.config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn a second daemon");
    let status = common::poll(
        "the second daemon to give up",
        Duration::from_secs(20),
        || second.try_wait().expect("wait"),
    );
    let mut err = String::new();
    use std::io::Read;
    second
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert!(!status.success());
    assert!(
        err.contains(&format!("in use by another roost daemon (PID {first})")),
        "{err}"
    );
    // The first one still serves.
    assert_eq!(get(&d, "/healthz", None).0, StatusCode::OK);
}

/// A login from a chosen loopback source address (the daemon sees it as the client's).
fn login_from(d: &Daemon, from: [u8; 4], user: &str, pw: &str) -> StatusCode {
    Client::builder()
        .local_address(std::net::IpAddr::from(from))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
        .post(d.url("/api/v1/auth/login"))
        .json(&json!({"username": user, "password": pw}))
        .send()
        .expect("send")
        .status()
}

/// Failed logins slow guessing without locking the owner out: one attacking address is
/// stopped on its own; guessing spread over many addresses stops strangers, while the
/// owner's own (known) address still logs in.
#[test]
fn an_attacker_cannot_lock_the_owner_out() {
    let d = Daemon::start_with(
        "[auth]\nlogin_attempts = 3\nlogin_window_secs = 600\nlogin_user_failures_per_hour = 5\n",
    );
    assert_eq!(
        register(&d, "alice", "alice password").0,
        StatusCode::CREATED
    );
    let home = [127, 0, 0, 2];
    assert_eq!(
        login_from(&d, home, "alice", "alice password"),
        StatusCode::OK
    );

    // One address guessing: blocked after its 3 failures, also with the right password.
    let attacker = [127, 0, 0, 66];
    for _ in 0..3 {
        assert_eq!(
            login_from(&d, attacker, "alice", "guess"),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login_from(&d, attacker, "alice", "alice password"),
        StatusCode::TOO_MANY_REQUESTS
    );
    // The owner from an address the account has never seen: not affected.
    assert_eq!(
        login_from(&d, [127, 0, 0, 3], "alice", "alice password"),
        StatusCode::OK
    );

    // Guessing from many addresses uses up the username's budget (5 failures, 3 so far).
    for i in 10..13 {
        login_from(&d, [127, 0, 1, i], "alice", "guess");
    }
    assert_eq!(
        login_from(&d, [127, 0, 2, 1], "alice", "alice password"),
        StatusCode::TOO_MANY_REQUESTS,
        "a stranger's address is refused once the username's budget is used up"
    );
    for known in [home, [127, 0, 0, 3]] {
        assert_eq!(
            login_from(&d, known, "alice", "alice password"),
            StatusCode::OK,
            "the owner's known addresses still log in"
        );
    }
}

/// `POST /api/v1/host` without a body: status, JSON body and whether `Retry-After` came.
fn post_host(d: &Daemon, token: &str) -> (StatusCode, Value, bool) {
    let r = client()
        .post(d.url("/api/v1/host"))
        .bearer_auth(token)
        .send()
        .expect("send");
    let retry = r.headers().contains_key("retry-after");
    (r.status(), r.json().unwrap_or(Value::Null), retry)
}

/// A full host refuses a new VM with a message naming the budget that is full (503 for
/// memory, 507 for disk), and nothing is created; the capacity report is for admins only.
#[test]
fn a_full_host_refuses_new_vms_naming_the_limit() {
    let cases = [
        // Memory: a reserve larger than any host leaves no memory for VMs.
        (
            "[limits]\nmemory_reserve_mib = 1000000000\n",
            StatusCode::SERVICE_UNAVAILABLE,
            "no_capacity",
            ["memory", "MiB"],
        ),
        // Disk: 2 TiB per VM against a tenth of this file system (this text lands in `[vm]`).
        (
            "disk_gib = 2048\n[limits]\ndisk_overcommit = 0.1\n",
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
            ["disk", "GiB"],
        ),
    ];
    for (extra, status, code, words) in cases {
        let d = Daemon::start_with(extra);
        assert_eq!(register(&d, "alice", "password123").0, StatusCode::CREATED);
        let t = token(&d, "alice", "password123");
        let (s, v, retry) = post_host(&d, &t);
        assert_eq!(s, status, "{v}");
        assert_error(&v, code);
        assert_eq!(retry, status == StatusCode::SERVICE_UNAVAILABLE, "{v}");
        let m = v["message"].as_str().unwrap_or_default();
        assert!(words.iter().all(|w| m.contains(w)), "{v}");
        assert_eq!(get(&d, "/api/v1/host", Some(&t)).0, StatusCode::NOT_FOUND);
        assert_eq!(
            get(&d, "/api/v1/admin/capacity", Some(&t)).0,
            StatusCode::FORBIDDEN
        );
    }
}

/// An account hammering costly operations (here snapshots of a hosting it does not have,
/// and reboots) gets 429 with `Retry-After` once its budget is spent, whatever each would
/// have answered; reads stay free, another account's budget is its own, and administrators
/// are exempt.
#[test]
fn costly_operations_are_budgeted_per_account() {
    let d = Daemon::start_with("[limits]\noperations_per_hour = 60\n");
    d.user_add("root-admin", "password123", true);
    for u in ["mallory", "alice"] {
        assert_eq!(register(&d, u, "password123").0, StatusCode::CREATED);
    }
    let (mallory, alice) = (
        token(&d, "mallory", "password123"),
        token(&d, "alice", "password123"),
    );
    let admin = token(&d, "root-admin", "password123");
    let send = |method: reqwest::Method, path: &str, t: &str| {
        let mut r = client().request(method, d.url(path)).bearer_auth(t);
        // Only taking a snapshot has a body (the others would refuse one before counting).
        if path == "/api/v1/host/snapshots" {
            r = r.json(&json!({"name": "snap"}));
        }
        let r = r.send().expect("send");
        let retry = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        (r.status(), retry, r.json::<Value>().unwrap_or(Value::Null))
    };
    let take = |t: &str| send(reqwest::Method::POST, "/api/v1/host/snapshots", t);
    // 60 an hour: 10 at once. Each is answered on its merits until then (no hosting).
    for i in 0..10 {
        let (s, _, v) = take(&mallory);
        assert_eq!(s, StatusCode::NOT_FOUND, "operation {i}: {v}");
    }
    let (s, retry, v) = take(&mallory);
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_error(&v, "rate_limited");
    assert!(matches!(retry, Some(1..=60)), "{retry:?}");
    // Every costly operation draws on the same budget.
    for (method, path) in [
        (reqwest::Method::DELETE, "/api/v1/host/snapshots/snap"),
        (reqwest::Method::POST, "/api/v1/host/snapshots/snap/restore"),
        (reqwest::Method::POST, "/api/v1/host"),
        (
            reqwest::Method::POST,
            "/api/v1/host/01ARZ3NDEKTSV4RRFFQ69G5FAV/reboot",
        ),
        (
            reqwest::Method::DELETE,
            "/api/v1/host/01ARZ3NDEKTSV4RRFFQ69G5FAV",
        ),
    ] {
        let (s, _, v) = send(method, path, &mallory);
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{path}: {v}");
    }
    // Reads are free.
    for _ in 0..20 {
        assert_eq!(
            get(&d, "/api/v1/host/snapshots", Some(&mallory)).0,
            StatusCode::NOT_FOUND
        );
    }
    // Alice's budget is hers; the administrator has none.
    assert_eq!(take(&alice).0, StatusCode::NOT_FOUND);
    for _ in 0..30 {
        let (s, _, v) = send(
            reqwest::Method::POST,
            "/api/v1/admin/vms/01ARZ3NDEKTSV4RRFFQ69G5FAV/stop",
            &admin,
        );
        assert_ne!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
        let (s, _, v) = send(
            reqwest::Method::POST,
            "/api/v1/host/01ARZ3NDEKTSV4RRFFQ69G5FAV/reboot",
            &admin,
        );
        assert_ne!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    }
}
