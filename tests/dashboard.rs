//! The dashboard's origin and browser sessions, against the real binary (rootless): pages
//! only on `console.DOMAIN` with a strict CSP; the cookie counts only there; every
//! state-changing cookie request needs the dashboard's Origin and the CSRF token; logging
//! out ends the session on the server. The browser flow itself is `tests/browser.rs`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::daemon::{register, Daemon};
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde_json::{json, Value};

const DOMAIN: &str = "example.test";

/// A client that sends every name of the test's domain to the daemon, and never follows
/// redirects.
fn client(d: &Daemon) -> Client {
    let addr: SocketAddr = format!("127.0.0.1:{}", d.port).parse().expect("addr");
    let mut b = Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none());
    for name in [
        DOMAIN.to_string(),
        format!("console.{DOMAIN}"),
        format!("alice.{DOMAIN}"),
        "console.localhost".into(),
    ] {
        b = b.resolve(&name, addr);
    }
    b.build().expect("client")
}

fn at(d: &Daemon, host: &str, path: &str) -> String {
    format!("http://{host}:{}{path}", d.port)
}

fn console(d: &Daemon, path: &str) -> String {
    at(d, &format!("console.{DOMAIN}"), path)
}

fn origin(d: &Daemon, host: &str) -> String {
    format!("http://{host}:{}", d.port)
}

/// Logs in on the dashboard: (cookie pair "name=value", csrf).
fn session(d: &Daemon, c: &Client, user: &str, pw: &str) -> (String, String) {
    let r = c
        .post(console(d, "/api/v1/session"))
        .header("origin", origin(d, &format!("console.{DOMAIN}")))
        .json(&json!({"username": user, "password": pw}))
        .send()
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let set = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("set-cookie")
        .to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Domain="), "host-only: {set}");
    let body: Value = r.json().expect("json");
    assert_eq!(body["user"]["username"], user);
    let pair = set.split(';').next().expect("pair").to_owned();
    (pair, body["csrf"].as_str().expect("csrf").to_owned())
}

fn json(r: Response) -> (StatusCode, Value) {
    (r.status(), r.json().unwrap_or(Value::Null))
}

#[test]
fn the_dashboard_lives_on_its_own_origin_with_a_strict_policy() {
    let d = Daemon::start();
    let c = client(&d);
    let r = c.get(console(&d, "/")).send().expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    assert!(h["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().expect("csp");
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    let page = r.text().expect("text");
    assert!(!page.contains("<script>"), "no inline script");
    // Deep links get the page too; assets are served with their types.
    let r = c.get(console(&d, "/admin")).send().expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(console(&d, "/assets/app.js")).send().expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/javascript"));
    let r = c
        .get(console(&d, "/assets/vendor/xterm.js"))
        .send()
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(console(&d, "/assets/nope.js")).send().expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The API is the same API there, with JSON errors.
    let (s, v) = json(c.get(console(&d, "/api/v1/nope")).send().expect("send"));
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    // The public domain's front page leads to the dashboard; sites' domain has no pages.
    let r = c.get(at(&d, DOMAIN, "/")).send().expect("send");
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(
        r.headers()["location"],
        format!("http://console.{DOMAIN}:{}/", d.port).as_str()
    );
    let (s, _) = json(
        c.get(at(&d, DOMAIN, "/assets/app.js"))
            .send()
            .expect("send"),
    );
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[test]
fn sessions_need_the_dashboards_origin_and_token_and_end_at_logout() {
    let d = Daemon::start();
    let c = client(&d);
    assert_eq!(
        register(&d, "alice", "correct horse 1").0,
        StatusCode::CREATED
    );
    let me = console(&d, "/api/v1/auth/me");
    let dash = origin(&d, &format!("console.{DOMAIN}"));

    // Sessions exist only on the dashboard's host, and only for its own pages.
    let creds = json!({"username": "alice", "password": "correct horse 1"});
    let (s, v) = json(
        c.post(at(&d, DOMAIN, "/api/v1/session"))
            .header("origin", origin(&d, DOMAIN))
            .json(&creds)
            .send()
            .expect("send"),
    );
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::MISDIRECTED_REQUEST, Some("console_only")),
        "{v}"
    );
    for o in [None, Some(origin(&d, &format!("alice.{DOMAIN}")))] {
        let mut r = c.post(console(&d, "/api/v1/session")).json(&creds);
        if let Some(o) = &o {
            r = r.header("origin", o);
        }
        let (s, v) = json(r.send().expect("send"));
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("cross_site")),
            "{o:?}: {v}"
        );
    }
    let (s, _) = json(
        c.post(console(&d, "/api/v1/session"))
            .header("origin", &dash)
            .json(&json!({"username": "alice", "password": "wrong one!"}))
            .send()
            .expect("send"),
    );
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let (cookie, csrf) = session(&d, &c, "alice", "correct horse 1");
    assert!(
        cookie.starts_with("roost_session="),
        "plain HTTP on a real domain: {cookie}"
    );
    let (s, v) = json(c.get(&me).header("cookie", &cookie).send().expect("send"));
    assert_eq!((s, v["username"].as_str()), (StatusCode::OK, Some("alice")));
    let (s, v) = json(
        c.get(console(&d, "/api/v1/session"))
            .header("cookie", &cookie)
            .send()
            .expect("send"),
    );
    assert_eq!(
        (s, v["csrf"].as_str()),
        (StatusCode::OK, Some(csrf.as_str()))
    );
    // The cookie means nothing on the sites' host.
    let (s, _) = json(
        c.get(at(&d, DOMAIN, "/api/v1/auth/me"))
            .header("cookie", &cookie)
            .send()
            .expect("send"),
    );
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Changing something: Origin and token both required.
    let key = json!({"public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop"});
    let keys = console(&d, "/api/v1/ssh-keys");
    let attempts: Vec<(&str, Option<String>, Option<&str>)> = vec![
        ("no origin", None, Some(csrf.as_str())),
        (
            "a user's site",
            Some(origin(&d, &format!("alice.{DOMAIN}"))),
            Some(csrf.as_str()),
        ),
        ("no token", Some(dash.clone()), None),
        ("wrong token", Some(dash.clone()), Some("forged")),
    ];
    for (what, o, t) in attempts {
        let mut r = c.post(&keys).header("cookie", &cookie).json(&key);
        if let Some(o) = o {
            r = r.header("origin", o);
        }
        if let Some(t) = t {
            r = r.header("x-csrf-token", t);
        }
        let (s, v) = json(r.send().expect("send"));
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("cross_site")),
            "{what}: {v}"
        );
    }
    let (s, v) = json(c.get(&keys).header("cookie", &cookie).send().expect("send"));
    assert_eq!(
        (s, v.as_array().map(Vec::len)),
        (StatusCode::OK, Some(0)),
        "nothing was added: {v}"
    );
    let (s, v) = json(
        c.post(&keys)
            .header("cookie", &cookie)
            .header("origin", &dash)
            .header("x-csrf-token", &csrf)
            .json(&key)
            .send()
            .expect("send"),
    );
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // The live events stream starts with the current hosting (none here).
    let r = c
        .get(console(&d, "/api/v1/host/events"))
        .header("cookie", &cookie)
        .send()
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/event-stream"));
    let mut first = String::new();
    use std::io::Read;
    let mut r = r;
    let mut buf = [0u8; 256];
    while !first.contains("\n\n") {
        let n = r.read(&mut buf).expect("read");
        assert!(n > 0, "stream ended early: {first:?}");
        first.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        first.starts_with("event: hosting\ndata: null\n\n"),
        "{first:?}"
    );
    // Kept open across the logout below, which must end it.
    let stream = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let ended = r.read_to_end(&mut rest).is_ok();
        (ended, started.elapsed())
    });
    // The console needs a hosting, and a WebSocket.
    let (s, _) = json(
        c.get(console(&d, "/api/v1/host/console"))
            .header("cookie", &cookie)
            .send()
            .expect("send"),
    );
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Logging out needs the token too, then the cookie is dead on the server.
    let (s, _) = json(
        c.delete(console(&d, "/api/v1/session"))
            .header("cookie", &cookie)
            .header("origin", origin(&d, &format!("alice.{DOMAIN}")))
            .send()
            .expect("send"),
    );
    assert_eq!(s, StatusCode::FORBIDDEN);
    let r = c
        .delete(console(&d, "/api/v1/session"))
        .header("cookie", &cookie)
        .header("origin", &dash)
        .header("x-csrf-token", &csrf)
        .send()
        .expect("send");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let cleared = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let (s, v) = json(c.get(&me).header("cookie", &cookie).send().expect("send"));
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("session_ended")),
        "{v}"
    );
    // The live stream opened with the session ended with it (re-checked every 15 s).
    let (ended, after) = stream.join().expect("stream thread");
    assert!(ended, "the stream broke instead of ending");
    assert!(
        after < Duration::from_secs(50),
        "still open after {after:?}"
    );
}

/// The dashboard's password change: the session's CSRF token is needed like for any
/// change, and the change ends every browser session of the account, this one included.
#[test]
fn a_password_change_needs_the_token_and_ends_the_sessions() {
    let d = Daemon::start();
    let c = client(&d);
    assert_eq!(
        register(&d, "alice", "correct horse 1").0,
        StatusCode::CREATED
    );
    let (cookie, csrf) = session(&d, &c, "alice", "correct horse 1");
    let (other, _) = session(&d, &c, "alice", "correct horse 1");
    let dash = origin(&d, &format!("console.{DOMAIN}"));
    let body = json!({"current_password": "correct horse 1", "new_password": "correct horse 2"});
    let change = |token: Option<&str>| {
        let mut r = c
            .post(console(&d, "/api/v1/auth/password"))
            .header("cookie", &cookie)
            .header("origin", &dash)
            .json(&body);
        if let Some(t) = token {
            r = r.header("x-csrf-token", t);
        }
        json(r.send().expect("send"))
    };
    let (s, v) = change(None);
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("cross_site")),
        "{v}"
    );
    let (s, v) = change(Some(&csrf));
    assert_eq!(s, StatusCode::OK, "{v}");
    for c2 in [&cookie, &other] {
        let (s, _) = json(
            c.get(console(&d, "/api/v1/session"))
                .header("cookie", c2)
                .send()
                .expect("send"),
        );
        assert_eq!(s, StatusCode::UNAUTHORIZED, "a session of the old password");
    }
    assert_eq!(
        common::daemon::login(&d, "alice", "correct horse 2").0,
        StatusCode::OK
    );
}

#[test]
fn on_localhost_the_cookie_is_host_prefixed_and_secure() {
    let d = Daemon::start_with("[console]\nhost = \"console.localhost\"\n");
    let c = client(&d);
    assert_eq!(
        register(&d, "bob", "correct horse 1").0,
        StatusCode::CREATED
    );
    let r = c
        .post(at(&d, "console.localhost", "/api/v1/session"))
        .header("origin", origin(&d, "console.localhost"))
        .json(&json!({"username": "bob", "password": "correct horse 1"}))
        .send()
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let set = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(set.starts_with("__Host-roost_session="), "{set}");
    assert!(set.contains("; Secure"), "{set}");
}
