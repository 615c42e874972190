//! The real `roost` binary as a daemon on a loopback port with a temp state dir (no root,
//! no VMs), and the HTTP helpers the API and CLI tests share.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

pub struct Daemon {
    pub child: Option<Child>,
    pub port: u16,
    _dir: tempfile::TempDir,
    pub config: std::path::PathBuf,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_roost")
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with("")
    }

    pub fn start_with(extra: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("roost.toml");
        std::fs::write(
            &config,
            format!(
                // No image: VM hosting stays disabled, so these tests never touch the host's network.
                "state_dir = \"{}\"\ndomain = \"example.test\"\n[http]\nlisten = \"127.0.0.1:{port}\"\nmax_body_bytes = 4096\n[vm]\nimage = \"/nonexistent/roost-test-image\"\n{extra}",
                dir.path().join("state").display()
            ),
        )
        .expect("write config");
        let mut d = Daemon {
            child: None,
            port,
            _dir: dir,
            config,
        };
        d.spawn();
        d
    }

    pub fn spawn(&mut self) {
        let child = Command::new(bin())
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn roost");
        self.child = Some(child);
        let url = self.url("/healthz");
        super::poll("roost to answer /healthz", Duration::from_secs(20), || {
            reqwest::blocking::get(&url)
                .ok()
                .filter(|r| r.status().is_success())
        });
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn state_dir(&self) -> std::path::PathBuf {
        self.config.parent().expect("dir").join("state")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

pub fn register(d: &Daemon, user: &str, pw: &str) -> (StatusCode, Value) {
    let r = client()
        .post(d.url("/api/v1/auth/register"))
        .json(&json!({"username": user, "password": pw}))
        .send()
        .expect("send");
    (r.status(), r.json().unwrap_or(Value::Null))
}

pub fn login(d: &Daemon, user: &str, pw: &str) -> (StatusCode, Value) {
    let r = client()
        .post(d.url("/api/v1/auth/login"))
        .json(&json!({"username": user, "password": pw}))
        .send()
        .expect("send");
    (r.status(), r.json().unwrap_or(Value::Null))
}

/// The response's `Retry-After`, in seconds (it must be there).
pub fn retry_after(r: &reqwest::blocking::Response) -> u64 {
    r.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After")
}

pub fn token(d: &Daemon, user: &str, pw: &str) -> String {
    let (s, v) = login(d, user, pw);
    assert_eq!(s, StatusCode::OK, "{v}");
    v["access_token"].as_str().expect("token").to_owned()
}

pub fn get(d: &Daemon, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut r = client().get(d.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().expect("send");
    (r.status(), r.json().unwrap_or(Value::Null))
}
