//! HTTPS with the operator's certificate files, through the real binary and a real `curl`:
//! SNI, ALPN (HTTP/2 and HTTP/1.1), HSTS, bad clients on the TLS port, a certificate
//! replaced on disk while the daemon runs, and (privileged, in a network namespace, where
//! a client can have a non-loopback address) the redirect of plain HTTP and the refusal of
//! passwords over it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::daemon::Daemon;

/// A CA and a leaf for `names` signed by it, written as `ca.pem`, `cert.pem`, `key.pem`.
fn issue(dir: &Path, names: &[&str]) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "roost test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("leaf");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write");
    // Written by rename, as an operator's tool (certbot, cp to a temp name) would.
    std::fs::write(dir.join("cert.tmp"), leaf.pem()).expect("write");
    std::fs::write(dir.join("key.tmp"), key.serialize_pem()).expect("write");
    std::fs::rename(dir.join("key.tmp"), dir.join("key.pem")).expect("rename");
    std::fs::rename(dir.join("cert.tmp"), dir.join("cert.pem")).expect("rename");
}

/// `curl` with `args`: (exit code, stdout, stderr).
fn curl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Site {
    roost: Daemon,
    https: u16,
    certs: tempfile::TempDir,
}

impl Site {
    fn start(extra_https: &str) -> Site {
        let certs = tempfile::tempdir().expect("tempdir");
        issue(certs.path(), &["example.test", "*.example.test"]);
        let https = common::daemon::free_port();
        let roost = Daemon::start_with(&format!(
            "[https]\nenabled = true\nlisten = \"127.0.0.1:{https}\"\ncert_file = \"{c}\"\nkey_file = \"{k}\"\n{extra_https}\n",
            c = certs.path().join("cert.pem").display(),
            k = certs.path().join("key.pem").display(),
        ));
        Site {
            roost,
            https,
            certs,
        }
    }

    /// `curl` to `https://name:port/path`, resolved to loopback, trusting the test CA.
    fn get(&self, name: &str, path: &str, extra: &[&str]) -> (i32, String, String) {
        let resolve = format!("{name}:{}:127.0.0.1", self.https);
        let url = format!("https://{name}:{}{path}", self.https);
        let ca = self.certs.path().join("ca.pem");
        let ca = ca.to_str().expect("utf-8");
        let mut args = vec!["--resolve", &resolve, "--cacert", ca];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    }
}

#[test]
fn https_serves_the_api_by_sni_over_h2_and_http1() {
    let site = Site::start("hsts = true");
    // HTTP/2 by ALPN, the certificate chained to the test CA and valid for the name.
    let (code, out, err) = site.get(
        "example.test",
        "/healthz",
        &["-o", "/dev/null", "-w", "%{http_code} %{http_version}"],
    );
    assert_eq!((code, out.as_str()), (0, "200 2"), "{err}");
    let (code, out, err) = site.get(
        "example.test",
        "/healthz",
        &[
            "--http1.1",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
        ],
    );
    assert_eq!((code, out.as_str()), (0, "200 1.1"), "{err}");
    // A site's own name is covered by the wildcard (no such site here: the proxy's page).
    let (code, out, err) = site.get(
        "alice.example.test",
        "/",
        &["-o", "/dev/null", "-w", "%{http_code}"],
    );
    assert_eq!((code, out.as_str()), (0, "404"), "{err}");
    // HSTS on HTTPS responses, never on plain ones.
    let (_, head, _) = site.get("example.test", "/healthz", &["-D", "-", "-o", "/dev/null"]);
    assert!(
        head.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "{head}"
    );
    let (_, head, _) = curl(&["-D", "-", "-o", "/dev/null", &site.roost.url("/healthz")]);
    assert!(
        !head.to_ascii_lowercase().contains("strict-transport"),
        "{head}"
    );
    // A site URL over HTTPS reaches the proxy (no such site here: its page, not a TLS error).
    let (code, out, err) = site.get(
        "example.test",
        "/nobody/",
        &["-o", "/dev/null", "-w", "%{http_code}"],
    );
    assert_eq!((code, out.as_str()), (0, "404"), "{err}");
}

#[test]
fn bad_tls_clients_get_no_certificate_and_no_hang() {
    let site = Site::start("");
    // SNI for a name no certificate covers: the handshake fails (no default certificate
    // is handed out for unknown names).
    // `-k`: even a client that accepts any certificate gets none.
    let (code, _, err) = site.get("other.invalid", "/healthz", &["-k"]);
    assert_ne!(code, 0, "a handshake for an unknown name succeeded");
    assert!(
        err.to_lowercase().contains("ssl") || err.contains("TLS") || err.contains("alert"),
        "{err}"
    );
    // Two labels deep is not covered by *.example.test.
    let (code, _, _) = site.get("a.b.example.test", "/healthz", &["-k"]);
    assert_ne!(code, 0);
    // Plain HTTP to the TLS port: refused at once, not held open.
    let started = std::time::Instant::now();
    let (code, _, _) = curl(&[&format!("http://127.0.0.1:{}/healthz", site.https)]);
    assert_ne!(code, 0, "plain HTTP on the TLS port got an answer");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "plain HTTP on the TLS port hung"
    );
    // The daemon still serves afterwards.
    let (code, _, err) = site.get("example.test", "/healthz", &["-o", "/dev/null"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_certificate_replaced_on_disk_is_served_without_a_restart() {
    let site = Site::start("");
    // The serial number of the certificate served for example.test.
    let serial = |site: &Site| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl s_client -connect 127.0.0.1:{} -servername example.test </dev/null 2>/dev/null | openssl x509 -noout -serial",
                site.https
            ))
            .output()
            .expect("openssl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.starts_with("serial="), "no certificate served: {text}");
        text
    };
    let before = serial(&site);
    // A broken pair first: the old certificate must stay.
    // (A change is seen by modification time and length, so no wait is needed between.)
    std::fs::write(site.certs.path().join("key.pem"), "not a key").expect("write");
    assert_eq!(serial(&site), before);
    issue(site.certs.path(), &["example.test", "*.example.test"]);
    common::poll(
        "the new certificate served",
        Duration::from_secs(30),
        || (serial(&site) != before).then_some(()),
    );
}

/// The address a "remote" client uses inside the test's network namespace (on `lo`, so
/// it reaches the daemon's loopback listener, but it is not a loopback address).
const REMOTE: &str = "192.0.2.10";

fn in_netns_with_remote<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    common::in_netns(move || {
        common::run("ip", &["addr", "add", &format!("{REMOTE}/32"), "dev", "lo"]);
        f()
    })
}

/// `curl` from [`REMOTE`] to the daemon's plain listener: (status, Location).
fn plain_from_remote(site: &Site, method: &str, path: &str) -> (String, String) {
    let port = site.roost.port;
    let resolve = format!("example.test:{port}:127.0.0.1");
    let url = format!("http://example.test:{port}{path}");
    let (code, out, err) = curl(&[
        "--interface",
        REMOTE,
        "--resolve",
        &resolve,
        "-X",
        method,
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"username":"nobody","password":"wrong-password"}"#,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        &url,
    ]);
    assert_eq!(code, 0, "{err}");
    let (status, location) = out.split_once(' ').unwrap_or((&out, ""));
    (status.to_owned(), location.to_owned())
}

#[test]
fn plain_http_redirects_remote_clients_but_answers_acme_and_loopback() {
    if !common::privileged("plain_http_redirects_remote_clients_but_answers_acme_and_loopback") {
        return;
    }
    in_netns_with_remote(|| {
        let site = Site::start("");
        let (status, location) = plain_from_remote(&site, "POST", "/api/v1/auth/login?x=1");
        assert_eq!(status, "308");
        assert_eq!(
            location,
            format!("https://example.test:{}/api/v1/auth/login?x=1", site.https)
        );
        // ACME's HTTP-01 path is answered on plain HTTP, never redirected.
        let (status, _) =
            plain_from_remote(&site, "GET", "/.well-known/acme-challenge/nonexistent");
        assert_eq!(status, "404");
        // Loopback (the operator's own checks) is not redirected.
        let (code, out, _) = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &site.roost.url("/healthz"),
        ]);
        assert_eq!((code, out.as_str()), (0, "200"));
    });
}

#[test]
fn passwords_are_refused_over_plain_http_from_remote_clients() {
    if !common::privileged("passwords_are_refused_over_plain_http_from_remote_clients") {
        return;
    }
    in_netns_with_remote(|| {
        let site = Site::start("redirect = false");
        for path in ["/api/v1/auth/login", "/api/v1/auth/register"] {
            let (status, _) = plain_from_remote(&site, "POST", path);
            assert_eq!(status, "403", "{path} over plain HTTP from a remote client");
        }
        // The body says what to do.
        let port = site.roost.port;
        let (_, body, _) = curl(&[
            "--interface",
            REMOTE,
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"username":"nobody","password":"wrong-password"}"#,
            &format!("http://127.0.0.1:{port}/api/v1/auth/login"),
        ]);
        assert!(
            body.contains("https_required") && body.contains("use https://"),
            "{body}"
        );
        // Over HTTPS from the same client, and over plain HTTP from loopback: checked as
        // usual (wrong credentials: 401).
        let resolve = format!("example.test:{}:127.0.0.1", site.https);
        let ca = site.certs.path().join("ca.pem");
        let (code, out, err) = wrong_login(
            &[
                "--interface",
                REMOTE,
                "--resolve",
                &resolve,
                "--cacert",
                ca.to_str().expect("utf-8"),
            ],
            &format!("https://example.test:{}/api/v1/auth/login", site.https),
        );
        assert_eq!((code, out.as_str()), (0, "401"), "{err}");
        let (code, out, _) = wrong_login(&[], &site.roost.url("/api/v1/auth/login"));
        assert_eq!((code, out.as_str()), (0, "401"));
    });
}

/// A login with a wrong password POSTed to `url` with `curl` and `args`: (exit code,
/// HTTP status, stderr).
fn wrong_login(args: &[&str], url: &str) -> (i32, String, String) {
    let mut all = args.to_vec();
    all.extend([
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"username":"nobody","password":"wrong-password"}"#,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        url,
    ]);
    curl(&all)
}

/// `roost check` on the daemon's config: its report.
fn check_report(site: &Daemon) -> String {
    let out = Command::new(common::daemon::bin())
        .arg("--config")
        .arg(&site.config)
        .arg("check")
        .output()
        .expect("roost check");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_missing_or_expired_certificate_at_start_is_reported_and_plain_http_still_works() {
    let certs = tempfile::tempdir().expect("tempdir");
    let https = common::daemon::free_port();
    let roost = Daemon::start_with(&format!(
        "accel = \"tcg\"\n[https]\nenabled = true\nlisten = \"127.0.0.1:{https}\"\ncert_file = \"{c}\"\nkey_file = \"{k}\"\n",
        c = certs.path().join("cert.pem").display(),
        k = certs.path().join("key.pem").display(),
    ));
    // Started (Daemon waits for /healthz over plain HTTP); HTTPS has nothing to offer.
    let (code, _, _) = curl(&[
        "-k",
        "--resolve",
        &format!("example.test:{https}:127.0.0.1"),
        &format!("https://example.test:{https}/healthz"),
    ]);
    assert_ne!(code, 0, "a handshake succeeded without any certificate");
    let report = check_report(&roost);
    assert!(
        report.contains("warn certificate") && report.contains("cert.pem"),
        "{report}"
    );
    // An expired certificate appears on disk: served (and reported), until replaced.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(vec!["example.test".to_string()]).expect("params");
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(100);
    p.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(10);
    let cert = p.self_signed(&key).expect("sign");
    std::fs::write(certs.path().join("key.pem"), key.serialize_pem()).expect("write");
    std::fs::write(certs.path().join("cert.pem"), cert.pem()).expect("write");
    let report = check_report(&roost);
    assert!(report.contains("EXPIRED 10 days ago"), "{report}");
    common::poll(
        "the expired certificate picked up",
        Duration::from_secs(30),
        || {
            let (code, _, _) = curl(&[
                "-k",
                "--resolve",
                &format!("example.test:{https}:127.0.0.1"),
                "-o",
                "/dev/null",
                &format!("https://example.test:{https}/healthz"),
            ]);
            (code == 0).then_some(())
        },
    );
    // A client that checks dates refuses it (curl: certificate has expired).
    let (code, _, err) = curl(&[
        "--cacert",
        certs.path().join("cert.pem").to_str().expect("utf-8"),
        "--resolve",
        &format!("example.test:{https}:127.0.0.1"),
        &format!("https://example.test:{https}/healthz"),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("expired"), "{err}");
}
