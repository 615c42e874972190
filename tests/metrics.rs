//! `GET /metrics`: the real `roost` binary on loopback (no root, no VMs). Administrators
//! get Prometheus text that `promtool check metrics` accepts; other users and anonymous
//! clients get the API's usual 403 and 401; the separate `[metrics] listen` answers
//! without a token. Per-VM series of real guests are checked in `tests/e2e.rs`.
//!
//! The alerting rules (`docs/alerts/`) pass `promtool check rules` and their own
//! `promtool test rules`, and name only series a real daemon exposes.

mod common;

use common::daemon::*;
use common::PRIVILEGED_ENV;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

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

/// `promtool` with `args` in `dir`, `stdin` written to it: its output, or `None` when
/// promtool is not installed (the check is then skipped, except under the privileged
/// tests: `scripts/test.sh` installs it with the `prometheus` package).
fn run_promtool(args: &[&str], dir: Option<&std::path::Path>, stdin: &str) -> Option<Output> {
    let mut cmd = Command::new("promtool");
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var(PRIVILEGED_ENV).as_deref() != Ok("1"),
                "promtool is missing; scripts/test.sh installs it (Debian package prometheus)"
            );
            eprintln!(
                "skipping promtool {args:?}: promtool is not installed (apt-get install prometheus)"
            );
            return None;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    Some(child.wait_with_output().expect("promtool"))
}

/// What promtool printed.
fn report(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `promtool check metrics` on `body`: `Some(report)` when it found problems, `None` when
/// it accepted it (or promtool is not installed).
fn promtool(body: &str) -> Option<String> {
    let out = run_promtool(&["check", "metrics"], None, body)?;
    (!out.status.success()).then(|| report(&out))
}

/// The directory of the alerting rules and their tests.
fn alerts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/alerts")
}

const RULES: &str = "roost.rules.yml";
const RULE_TESTS: &str = "roost.rules.test.yml";

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
    assert!(has(&text, "roost_hostings_asleep 0"), "{text}");
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
    // The state directory's file system is read at each scrape; no crash yet; no HTTPS,
    // no certificate series.
    assert!(has(&text, "roost_hosting_crashes_total 0"), "{text}");
    let (free, size) = (
        value(&text, "roost_state_dir_free_bytes"),
        value(&text, "roost_state_dir_size_bytes"),
    );
    assert!(free > 0.0 && free <= size, "free {free} of {size}");
    assert!(!text.contains("roost_tls_"), "{text}");
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

#[test]
fn alert_rules_pass_promtool_and_their_own_tests() {
    let dir = alerts_dir();
    let Some(out) = run_promtool(&["check", "rules", RULES], Some(&dir), "") else {
        return;
    };
    assert!(
        out.status.success(),
        "promtool check rules:\n{}",
        report(&out)
    );
    let out = run_promtool(&["test", "rules", RULE_TESTS], Some(&dir), "").expect("promtool");
    assert!(
        out.status.success(),
        "promtool test rules:\n{}",
        report(&out)
    );
}

/// The names of roost's series (`roost_…`) used in the rules' expressions.
fn series_in_rules() -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(alerts_dir().join(RULES)).expect("rules");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    let mut names = std::collections::BTreeSet::new();
    let groups = doc["groups"].as_sequence().expect("groups");
    for rule in groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules"))
    {
        let expr = rule["expr"].as_str().expect("expr");
        let mut rest = expr;
        while let Some(at) = rest.find("roost_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}

/// A self-signed certificate for `example.test` valid until 2033-05-18, written as
/// `cert.pem` and `key.pem` in `dir`.
fn certificate_until_2033(dir: &std::path::Path) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec!["example.test".into(), "*.example.test".into()])
            .expect("params");
    params.not_after = rcgen::date_time_ymd(2033, 5, 18);
    let cert = params.self_signed(&key).expect("certificate");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write");
}

#[test]
fn alert_rules_name_only_series_a_daemon_exposes() {
    let names = series_in_rules();
    // Every alert but RoostDown (which reads Prometheus's own `up`) is about roost's series.
    assert!(names.len() >= 10, "{names:?}");
    let certs = tempfile::tempdir().expect("tempdir");
    certificate_until_2033(certs.path());
    let (mport, https) = (free_port(), free_port());
    // A limit on the number of hostings, so its series exists too.
    let d = Daemon::start_with(&format!(
        "[limits]\nmax_vms = 10\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n[https]\nenabled = true\nlisten = \"127.0.0.1:{https}\"\ncert_file = \"{c}\"\nkey_file = \"{k}\"\n",
        c = certs.path().join("cert.pem").display(),
        k = certs.path().join("key.pem").display(),
    ));
    let (s, _, text) = scrape(&format!("http://127.0.0.1:{mport}/metrics"), None, None);
    assert_eq!(s, StatusCode::OK, "{text}");
    // The operator's certificate, by its slot, with its notAfter (2033-05-18T00:00:00Z).
    assert!(
        has(
            &text,
            r#"roost_tls_certificate_expiry_timestamp_seconds{slot="file"} 1999987200"#
        ),
        "{text}"
    );
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| {
            !text.lines().any(|l| {
                l.strip_prefix(n.as_str())
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{RULES} uses series /metrics does not have: {missing:?}\n--- scrape ---\n{text}"
    );
    if let Some(report) = promtool(&text) {
        panic!("promtool check metrics:\n{report}\n--- body ---\n{text}");
    }
    drop(d);
}
