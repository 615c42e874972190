//! A small W3C WebDriver client over blocking reqwest, for `tests/browser.rs`: Debian's
//! `chromedriver` driving headless `chromium`. Only the commands the test uses.
//!
//! [`Browser::start`] runs chromedriver on a free loopback port and opens one session; on
//! drop the session is deleted (chromedriver quits Chromium), chromedriver is killed, and
//! any process still naming the browser's own profile directory is killed too, so a
//! panicking test leaves no browser behind.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::blocking::Client;
use serde_json::{json, Value};

/// The key of an element reference in WebDriver's JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// WebDriver's code for the Enter key.
pub const ENTER: &str = "\u{E007}";

/// A WebDriver error: the command, its `error` code and message.
#[derive(Debug)]
pub struct WdError {
    pub what: String,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.what, self.code, self.message)
    }
}

pub struct Browser {
    http: Client,
    base: String,
    session: Option<String>,
    driver: Option<std::process::Child>,
    profile: PathBuf,
}

/// One element of the current page.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// chromedriver and one headless Chromium session. `resolver_rules` goes to
    /// `--host-resolver-rules`; `dir` holds the profile and chromedriver's log.
    pub fn start(dir: &Path, resolver_rules: &str) -> Browser {
        let port = free_port();
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).expect("profile dir");
        let log = std::fs::File::create(dir.join("chromedriver.log")).expect("log");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("chromedriver (Debian's chromium-driver package)");
        let mut b = Browser {
            http: Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client"),
            base: format!("http://127.0.0.1:{port}"),
            session: None,
            driver: Some(driver),
            profile: profile.clone(),
        };
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = b
                .http
                .get(format!("{}/status", b.base))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            if let Some(st) = b.driver.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("chromedriver exited at start: {st}");
            }
            assert!(Instant::now() < end, "chromedriver did not start in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-renderer-backgrounding".to_owned(),
            "--disable-background-timer-throttling".to_owned(),
            "--disable-backgrounding-occluded-windows".to_owned(),
            "--force-device-scale-factor=1".to_owned(),
            "--window-size=1280,900".to_owned(),
            "--lang=en-US".to_owned(),
            format!("--user-data-dir={}", profile.display()),
            format!("--host-resolver-rules={resolver_rules}"),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"pageLoad": 60000, "script": 30000, "implicit": 0},
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let v = b
            .raw("POST", "/session", Some(caps), "new session")
            .unwrap_or_else(|e| panic!("{e}"));
        b.session = Some(v["sessionId"].as_str().expect("sessionId").to_owned());
        b
    }

    fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<Value, WdError> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self
                .http
                .post(&url)
                .json(&body.unwrap_or_else(|| json!({}))),
        };
        let r = req.send().map_err(|e| WdError {
            what: what.to_owned(),
            code: "transport".into(),
            message: e.to_string(),
        })?;
        let ok = r.status().is_success();
        let v: Value = r.json().map_err(|e| WdError {
            what: what.to_owned(),
            code: "bad json".into(),
            message: e.to_string(),
        })?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(WdError {
                what: what.to_owned(),
                code: v["value"]["error"].as_str().unwrap_or("?").to_owned(),
                message: v["value"]["message"]
                    .as_str()
                    .unwrap_or("?")
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            })
        }
    }

    /// A command of this session (`path` after `/session/{id}`).
    pub fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        let s = self.session.as_deref().expect("session");
        self.raw(method, &format!("/session/{s}{path}"), body, path)
    }

    fn must(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.cmd(method, path, body)
            .unwrap_or_else(|e| panic!("webdriver {e}"))
    }

    pub fn goto(&self, url: &str) {
        self.must("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.must("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body; `arguments` are `args`) and answers what it returns.
    pub fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.must(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// The first element matching the CSS selector, if any.
    pub fn find(&self, css: &str) -> Option<Element> {
        self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )
        .ok()
        .and_then(|v| v[ELEMENT].as_str().map(|s| Element(s.to_owned())))
    }

    /// Waits for an element matching `css`.
    pub fn wait_for(&self, css: &str, within: Duration) -> Element {
        poll(&format!("the element {css}"), within, || self.find(css))
    }

    /// Waits until the element is there and clicks it (retrying while it is covered or
    /// not yet interactable).
    pub fn click(&self, css: &str) {
        poll(&format!("clicking {css}"), Duration::from_secs(20), || {
            let e = self.find(css)?;
            self.cmd("POST", &format!("/element/{}/click", e.0), None)
                .ok()
        });
    }

    /// Types `text` into the element (after clearing it when `clear`).
    pub fn type_into(&self, css: &str, text: &str, clear: bool) {
        let e = self.wait_for(css, Duration::from_secs(20));
        if clear {
            let _ = self.cmd("POST", &format!("/element/{}/clear", e.0), None);
        }
        self.must(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        );
    }

    /// Types `text` (WebDriver key codes such as [`ENTER`] allowed) into whatever has the
    /// focus, key by key, as a person would.
    pub fn keys(&self, text: &str) {
        let mut acts = Vec::new();
        for c in text.chars() {
            acts.push(json!({"type": "keyDown", "value": c.to_string()}));
            acts.push(json!({"type": "keyUp", "value": c.to_string()}));
        }
        self.must(
            "POST",
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": acts}]})),
        );
        let _ = self.cmd("DELETE", "/actions", None);
    }

    /// The text of the first element matching `css` (`None` when there is none).
    pub fn text(&self, css: &str) -> Option<String> {
        let v = self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            vec![json!(css)],
        );
        v.as_str().map(str::to_owned)
    }

    /// A cookie of the current page's site, HttpOnly ones included.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cmd("GET", &format!("/cookie/{name}"), None)
            .ok()
            .and_then(|v| v["value"].as_str().map(str::to_owned))
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.must("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("base64"))
            .expect("png")
    }

    /// Makes the viewport exactly `width`×`height` CSS pixels (`mobile`: a phone's
    /// viewport rules), through the DevTools protocol.
    pub fn viewport(&self, width: u32, height: u32, mobile: bool) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
    }

    pub fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.must(
            "POST",
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
    }

    /// The browser's console messages since the last call (all windows): level and text.
    pub fn console_log(&self) -> Vec<(String, String)> {
        self.cmd("POST", "/se/log", Some(json!({"type": "browser"})))
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|e| {
                (
                    e["level"].as_str().unwrap_or("").to_owned(),
                    e["message"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    /// The current window's handle.
    pub fn window(&self) -> String {
        self.must("GET", "/window", None)
            .as_str()
            .expect("handle")
            .to_owned()
    }

    /// Opens a new top-level window (not a tab: both stay visible and rendering) and
    /// answers its handle; the current window does not change.
    pub fn new_window(&self) -> String {
        self.must("POST", "/window/new", Some(json!({"type": "window"})))["handle"]
            .as_str()
            .expect("handle")
            .to_owned()
    }

    /// Every window's handle.
    pub fn windows(&self) -> Vec<String> {
        self.must("GET", "/window/handles", None)
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn switch_to(&self, handle: &str) {
        self.must("POST", "/window", Some(json!({ "handle": handle })));
    }

    /// Closes the current window.
    pub fn close_window(&self) {
        self.must("DELETE", "/window", None);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = self.raw("DELETE", &format!("/session/{s}"), None, "delete session");
        }
        if let Some(mut c) = self.driver.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Whatever chromedriver did not end: every process naming our own profile.
        kill_naming(&self.profile.display().to_string());
    }
}

/// SIGKILLs every process whose command line contains `needle` (a path only this test
/// uses), until none is left.
pub fn kill_naming(needle: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = pids_naming(needle);
        if pids.is_empty() || Instant::now() > end {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Processes whose command line contains `needle`.
pub fn pids_naming(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&pid| pid != me)
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).contains(needle))
                        .unwrap_or(false)
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Element {
    pub fn id(&self) -> &str {
        &self.0
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls `check` every 200 ms until it answers `Some`, or panics after `within`.
pub fn poll<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
