//! `GET /metrics`: the real `roost` binary on loopback (no root, no VMs). Administrators
//! get Prometheus text that `promtool check metrics` accepts; other users and anonymous
//! clients get the API's usual 403 and 401; the separate `[metrics] listen` answers
//! without a token. Per-VM series of real guests are checked in `tests/e2e.rs`.

mod common;

use common::daemon::*;
use common::PRIVILEGED_ENV;

use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::StatusCode;

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn scrape(url: &str, token: Option<&str>, accept: Option<&str>) -> (StatusCode, String, String) {
    let mut r = client().get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(a) = accept {
        r = r.header("accept", a);
    }
    let r = r.send().expect("send");
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ct, r.text().expect("body"))
}

fn has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

/// The value of the sample line that starts with `series ` (labels included).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series}:\n{text}"))
}

/// `promtool check metrics` on `body`: `Some(report)` when it found problems, `None` when
/// it accepted it. Without promtool the check is skipped, except under the privileged
/// tests (`scripts/test.sh` installs it with the `prometheus` package).
fn promtool(body: &str) -> Option<String> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var(PRIVILEGED_ENV).as_deref() != Ok("1"),
                "promtool is missing; scripts/test.sh installs it (Debian package prometheus)"
            );
            eprintln!("skipping promtool check metrics: promtool is not installed (apt-get install prometheus)");
            return None;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    (!out.status.success()).then(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn administrators_scrape_metrics_and_others_are_refused() {
    let mport = free_port();
    let d = Daemon::start_with(&format!("[metrics]\nlisten = \"127.0.0.1:{mport}\"\n"));
    d.user_add("ops", "password123", true);
    let admin = token(&d, "ops", "password123");
    assert_eq!(register(&d, "bob", "password1").0, StatusCode::CREATED);
    let bob = token(&d, "bob", "password1");
    // A request for a site that does not exist: answered by roost itself.
    let r = client()
        .get(d.url("/"))
        .header("host", "nosuch.example.test")
        .send()
        .expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let url = d.url("/metrics");
    let (s, _, body) = scrape(&url, None, None);
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
    assert_eq!(v["error"], "unauthorized", "{v}");
    let (s, _, body) = scrape(&url, Some(&bob), None);
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
    assert_eq!(v["error"], "forbidden", "{v}");

    let (s, ct, text) = scrape(&url, Some(&admin), None);
    assert_eq!(s, StatusCode::OK, "{text}");
    assert_eq!(ct, PROMETHEUS_TEXT);
    // The logins and registrations above were answered by the API; the unknown site by
    // roost itself.
    assert!(value(&text, r#"roost_http_requests_total{kind="api",code="2xx"}"#) >= 3.0);
    assert!(value(&text, r#"roost_http_requests_total{kind="api",code="4xx"}"#) >= 2.0);
    assert!(
        value(
            &text,
            r#"roost_http_requests_total{kind="other",code="4xx"}"#
        ) >= 1.0
    );
    assert!(
        value(
            &text,
            r#"roost_http_request_duration_seconds_count{kind="api",code="2xx"}"#
        ) >= 3.0
    );
    // No VMs on this host, but every state is listed, and capacity is known.
    for state in [
        "provisioning",
        "booting",
        "running",
        "paused",
        "stopped",
        "failed",
        "deleting",
    ] {
        assert!(
            has(&text, &format!("roost_hostings{{state=\"{state}\"}} 0")),
            "{state}:\n{text}"
        );
    }
    assert!(has(&text, "roost_capacity_vms 0"), "{text}");
    assert!(
        value(&text, "roost_capacity_memory_budget_bytes") > 0.0,
        "{text}"
    );
    assert!(
        value(&text, "roost_capacity_disk_budget_bytes") > 0.0,
        "{text}"
    );
    for l in [
        "roost_ssh_forwards 0",
        "roost_ssh_open_connections 0",
        "roost_hosting_boot_duration_seconds_count 0",
        "roost_hosting_create_duration_seconds_count 0",
    ] {
        assert!(has(&text, l), "{l} missing:\n{text}");
    }
    assert!(text.contains("roost_build_info{version="), "{text}");
    assert!(!text.contains("roost_vm_"), "no VM, no VM series:\n{text}");
    if let Some(report) = promtool(&text) {
        panic!("promtool check metrics:\n{report}\n--- body ---\n{text}");
    }

    // What Prometheus asks for: OpenMetrics.
    let (s, ct, om) = scrape(
        &url,
        Some(&admin),
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(s, StatusCode::OK);
    assert!(
        ct.starts_with("application/openmetrics-text; version=1.0.0"),
        "{ct}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");

    // The separate listener: no token needed, and nothing but /metrics.
    let (s, ct, open) = scrape(&format!("http://127.0.0.1:{mport}/metrics"), None, None);
    assert_eq!(s, StatusCode::OK, "{open}");
    assert_eq!(ct, PROMETHEUS_TEXT);
    assert!(has(&open, "roost_hostings{state=\"running\"} 0"), "{open}");
    assert!(
        value(&open, r#"roost_http_requests_total{kind="api",code="2xx"}"#) >= 3.0,
        "{open}"
    );
    let (s, _, _) = scrape(
        &format!("http://127.0.0.1:{mport}/api/v1/auth/me"),
        None,
        None,
    );
    assert_eq!(s, StatusCode::NOT_FOUND);
}
