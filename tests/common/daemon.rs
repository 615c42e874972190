//! The real `roost` binary as a daemon for integration tests, in one of two modes:
//!
//! - [`Mode::Rootless`] ([`Daemon::start`], [`Daemon::start_with`]): an ephemeral loopback
//!   port and its own temp state dir, no root, no VMs (tests/api.rs, tests/cli.rs).
//! - [`Mode::Hosting`] ([`Daemon::hosting`]): the real thing inside a test's network
//!   namespace, on 127.0.0.1:8080 with a bridge, taps and QEMU guests from the test image
//!   (tests/e2e.rs).
//!
//! Either one restarts on the same state dir after [`Daemon::kill9`], adds users through the
//! CLI, and is killed when dropped. Also the reqwest HTTP helpers the API and CLI tests share.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The address a [`Mode::Hosting`] daemon listens on, inside the test's network namespace.
pub const HOSTING_HTTP: &str = "127.0.0.1:8080";
/// The domain a [`Mode::Hosting`] daemon serves.
pub const HOSTING_DOMAIN: &str = "roost.test";

/// How a [`Daemon`] is configured, started and cleaned up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No root and no VMs: an image that does not exist keeps VM hosting disabled, so the
    /// host's network is never touched. Listens on an ephemeral loopback port; runs with
    /// `RUST_LOG=warn`, stdout discarded, stderr inherited. Ready when `/healthz` answers
    /// (within 20 s).
    Rootless,
    /// Real VMs (TCG, 512 MiB, the image in `ROOST_TEST_IMAGE`) on bridge `rbr0`,
    /// 10.77.0.0/24, SSH ports 22000-22009, HTTP on [`HOSTING_HTTP`]: run it inside
    /// `common::in_netns`. Stdout and stderr are appended to `roost.log` (kept across
    /// restarts). Ready when `/readyz` says 200 (within 60 s). On drop, when the test is
    /// panicking, prints the log's and each guest's serial log's tail; and always kills every
    /// QEMU whose pid file is under the state dir.
    Hosting,
}

pub struct Daemon {
    pub mode: Mode,
    /// The running daemon, if any (`None` after [`Daemon::kill9`] or before the first start).
    pub child: Option<Child>,
    /// The loopback port it listens on for HTTP.
    pub port: u16,
    /// The directory holding `roost.toml`, `state/` and (hosting) `roost.log`.
    pub dir: PathBuf,
    pub config: PathBuf,
    /// Where stdout and stderr go ([`Mode::Hosting`] only).
    pub log: Option<PathBuf>,
    _tmp: Option<tempfile::TempDir>,
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

/// The prepared VM image the hosting tests boot: `ROOST_TEST_IMAGE`, or the installed default.
pub fn image_dir() -> PathBuf {
    std::env::var_os("ROOST_TEST_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/roost/images/default"))
}

impl Daemon {
    /// A rootless daemon with the default config, started.
    pub fn start() -> Daemon {
        Daemon::start_with("")
    }

    /// A rootless daemon with `extra` appended to its config (it lands in `[vm]` unless it
    /// opens a table), started.
    pub fn start_with(extra: &str) -> Daemon {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let port = free_port();
        let config = dir.join("roost.toml");
        std::fs::write(
            &config,
            format!(
                // No image: VM hosting stays disabled, so these tests never touch the host's network.
                "state_dir = \"{}\"\ndomain = \"example.test\"\n[http]\nlisten = \"127.0.0.1:{port}\"\nmax_body_bytes = 4096\n[vm]\nimage = \"/nonexistent/roost-test-image\"\n{extra}",
                dir.join("state").display()
            ),
        )
        .expect("write config");
        let mut d = Daemon {
            mode: Mode::Rootless,
            child: None,
            port,
            dir,
            config,
            log: None,
            _tmp: Some(tmp),
        };
        d.spawn();
        d
    }

    /// A hosting daemon whose config, state and log live in `dir` (the test owns it; several
    /// daemons may use it one after another), with `extra` appended to its config (it lands
    /// in `[vm]` unless it opens a table). Written, not started: add users first if needed,
    /// then [`Daemon::spawn`] or [`Daemon::spawn_env`].
    pub fn hosting(dir: &Path, extra: &str) -> Daemon {
        Daemon::hosting_with(dir, "", extra)
    }

    /// [`Daemon::hosting`] with `network` appended to its `[network]` table.
    pub fn hosting_with(dir: &Path, network: &str, extra: &str) -> Daemon {
        let config = dir.join("roost.toml");
        let port: u16 = HOSTING_HTTP
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("port");
        std::fs::write(
            &config,
            format!(
                r#"state_dir = "{state}"
domain = "{HOSTING_DOMAIN}"
log_level = "info,roost=debug"
[http]
listen = "0.0.0.0:{port}"
[ssh]
port_range = "22000-22009"
[network]
bridge = "rbr0"
subnet = "10.77.0.0/24"
dns = ["10.77.0.1"]
{network}
[vm]
accel = "tcg"
image = "{image}"
memory_mib = 512
stop_timeout_secs = 20
boot_timeout_secs = 240
{extra}"#,
                state = dir.join("state").display(),
                image = image_dir().display()
            ),
        )
        .expect("config");
        Daemon {
            mode: Mode::Hosting,
            child: None,
            port,
            dir: dir.to_path_buf(),
            log: Some(dir.join("roost.log")),
            config,
            _tmp: None,
        }
    }

    /// Starts `roost serve` on this config (again, after [`Daemon::kill9`]: same state dir)
    /// and waits until it is ready.
    pub fn spawn(&mut self) {
        self.spawn_env(&[]);
    }

    /// [`Daemon::spawn`] with these variables added to the daemon's environment.
    pub fn spawn_env(&mut self, env: &[(&str, &str)]) {
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--config"]).arg(&self.config);
        match &self.log {
            None => {
                cmd.env("RUST_LOG", "warn").stdout(Stdio::null());
            }
            Some(path) => {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("log");
                cmd.stdout(log.try_clone().expect("log")).stderr(log);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn roost"));
        let (path, within) = match self.mode {
            Mode::Rootless => ("/healthz", Duration::from_secs(20)),
            Mode::Hosting => ("/readyz", Duration::from_secs(60)),
        };
        let url = self.url(path);
        let child = self.child.as_mut().expect("child");
        super::poll(&format!("roost to answer {path}"), within, || {
            if let Some(status) = child.try_wait().expect("wait") {
                panic!("roost exited while starting: {status}");
            }
            client()
                .get(&url)
                .send()
                .ok()
                .filter(|r| r.status() == StatusCode::OK)
        });
    }

    /// SIGKILL the daemon and reap it (nothing if it is not running). Its VMs, if any, live on.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The running daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon").id()
    }

    /// `roost user add NAME [--admin]` on this config with `password` on stdin; must succeed.
    pub fn user_add(&self, name: &str, password: &str, admin: bool) {
        use std::io::Write;
        let mut cmd = Command::new(bin());
        cmd.args(["user", "add", name, "--config"])
            .arg(&self.config);
        if admin {
            cmd.arg("--admin");
        }
        let mut c = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        c.stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("write");
        assert!(c.wait().expect("wait").success());
    }

    /// Everything the daemon has logged so far (empty in [`Mode::Rootless`]).
    pub fn log_text(&self) -> String {
        // Lossy: one stray byte must not hide the whole log when a test fails.
        self.log
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The log's last `n` lines.
    pub fn log_tail(&self, n: usize) -> String {
        let s = self.log_text();
        let mut tail: Vec<&str> = s.lines().rev().take(n).collect();
        tail.reverse();
        tail.join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Each VM directory under the state dir.
    fn vm_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.state_dir().join("vms"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.mode == Mode::Hosting && std::thread::panicking() {
            eprintln!("--- roost log tail ---\n{}", self.log_tail(60));
            for vm in self.vm_dirs() {
                let log = std::fs::read_to_string(vm.join("serial.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- serial log of {} ---", vm.display());
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        self.kill9();
        if self.mode == Mode::Hosting {
            // Whatever the test left: kill every QEMU whose files live under our state dir.
            for vm in self.vm_dirs() {
                if let Ok(pid) = std::fs::read_to_string(vm.join("qemu.pid")) {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
        }
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

/// `GET /metrics` with an administrator's `token`: the Prometheus text. A hosting's series
/// carry `vm="<hosting id>"`, and are gone once the hosting is.
pub fn metrics_text(d: &Daemon, token: &str) -> String {
    let r = client()
        .get(d.url("/metrics"))
        .bearer_auth(token)
        .send()
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    r.text().expect("body")
}
