//! HTTPS end to end with real parts, in one network namespace this test makes: the real
//! `roost` binary as a hosting daemon, one real Debian guest (QEMU), Debian's `pebble` as
//! the ACME CA, `pebble-challtestsrv` as the DNS of the world, `unbound` as the CA's
//! resolver with the operator's delegation of `_acme-challenge.roost.test` to roost, and
//! `curl`, `openssl` and `ssh` as clients:
//!
//! ```text
//!  roost ──ACME over HTTPS──> pebble 127.0.0.1:14000
//!  pebble ──DNS──> unbound ─┬─ _acme-challenge.roost.test ─> roost's challenge DNS 127.0.0.1:5300 (DNS-01)
//!                           └─ the rest ──────────────────> challtestsrv: A 127.0.0.1 for roost.test,
//!                                                           alice.roost.test, shop.example.org
//!  pebble ──HTTP-01──> shop.example.org:8080 = roost's plain listener
//!  roost ──TXT _roost-challenge.shop.example.org──> challtestsrv (domains.resolvers)
//!  curl ──https://…:8443 (--resolve, --cacert pebble's root)──> roost ──> alice's guest
//! ```
//!
//! One guest, one test (booting is expensive); the phases run in order: the certificate
//! of `roost.test` and `*.roost.test` by DNS-01; the site over HTTPS and HTTP/2 by name and
//! by path; a user's own domain claimed, verified by its TXT record, routed and given its
//! own certificate by HTTP-01; the claims that must fail; a forced renewal while a long
//! download continues; the domain released.
//! Privileged: runs only with ROOST_PRIVILEGED_TESTS=1 (scripts/test.sh sets it).

mod common;

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, HOSTING_DOMAIN as DOMAIN, HOSTING_HTTP as HTTP};
use common::guest::{login, qemus_under, roost_taps};
use common::pebble::{self, Procs, CHALLTESTSRV_DNS, PEBBLE};
use common::{http, Reaped};
use serde_json::{json, Value};

/// roost's TLS listener (0.0.0.0 in its config; clients use loopback).
const HTTPS_PORT: u16 = 8443;
/// roost's plain listener, where pebble validates HTTP-01 (its `httpPort`).
const HTTP_PORT: u16 = 8080;
/// Where roost answers `_acme-challenge.roost.test` (`acme.dns_listen`).
const CHALLENGE_DNS: &str = "127.0.0.1:5300";
const ALICE_HOST: &str = "alice.roost.test";
const SHOP: &str = "shop.example.org";
const TXT_NAME: &str = "_roost-challenge.shop.example.org";
/// The file downloaded during the forced renewal, and how fast: about 40 s.
const BIG_BYTES: u64 = 40 << 20;
const BIG_RATE: &str = "1M";

#[test]
fn https_with_acme_certificates_and_custom_domains() {
    if !common::privileged("https_with_acme_certificates_and_custom_domains") {
        return;
    }
    common::in_netns(|| {
        let tmp = tempfile::tempdir().expect("tempdir");
        run(tmp.path());
    });
}

/// What the phases share.
struct Stage {
    roost: Daemon,
    dir: PathBuf,
    /// pebble's issuing root, for `curl --cacert`.
    root: PathBuf,
    admin: String,
    alice: String,
    alice_key: PathBuf,
    ssh_port: u16,
    /// The guest's page as plain HTTP serves it at `/alice/`.
    page: String,
}

fn run(dir: &Path) {
    let started = Instant::now();
    let mut procs = Procs::new(dir);
    procs.challtestsrv();
    for host in [DOMAIN, ALICE_HOST, SHOP] {
        pebble::add_a(host, Ipv4Addr::LOCALHOST);
    }
    let challenge_dns: SocketAddr = CHALLENGE_DNS.parse().expect("addr");
    procs.unbound(&[(DOMAIN, challenge_dns)]);
    // Only the forwarded side is asked now: roost's challenge DNS is not up yet, and
    // asking the stub would teach unbound that its server is down.
    common::poll("unbound answering", pebble::STARTUP, || {
        pebble::resolves_to("shop.example.org.", Ipv4Addr::LOCALHOST).then_some(())
    });
    let pebble = procs.pebble(HTTP_PORT);
    let root = dir.join("pebble-root.pem");
    fs::write(&root, pebble.root()).expect("root");
    eprintln!("services up after {:?}", started.elapsed());

    let config = format!(
        r#"[https]
enabled = true
listen = "0.0.0.0:{HTTPS_PORT}"
redirect = false
[acme]
directory = "https://{PEBBLE}/dir"
email = "hostmaster@{DOMAIN}"
ca_roots = "{ca}"
dns_listen = "{CHALLENGE_DNS}"
[domains]
resolvers = ["{CHALLTESTSRV_DNS}"]
"#,
        ca = pebble.ca_file.display()
    );
    let mut roost = Daemon::hosting(dir, &config);
    roost.user_add("root-admin", "password123", true);
    roost.spawn();
    let admin = login("root-admin", "password123");

    // alice, created through the API as a user would; her key comes back from creation.
    let (s, v) = http(
        "POST",
        "/api/v1/auth/register",
        None,
        Some(&json!({"username": "alice", "password": "password123"})),
    );
    assert_eq!(s, 201, "{v}");
    let alice = login("alice", "password123");
    let (s, created) = http("POST", "/api/v1/host", Some(&alice), None);
    assert_eq!(s, 202, "{created}");
    let alice_key = dir.join("alice_key");
    fs::write(
        &alice_key,
        created["private_key"].as_str().expect("generated key"),
    )
    .expect("key");
    fs::set_permissions(
        &alice_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let ssh_port = created["ssh_port"].as_u64().expect("ssh_port") as u16;

    // While the guest boots: the domain's certificate.
    let t = Instant::now();
    domain_certificate(&roost, &admin);
    eprintln!(
        "certificate for {DOMAIN} and *.{DOMAIN} after {:?} (since start: {:?})",
        t.elapsed(),
        started.elapsed()
    );

    let t = Instant::now();
    common::poll("alice's hosting running", Duration::from_secs(300), || {
        let (s, v) = http("GET", "/api/v1/host", Some(&alice), None);
        assert!(v["state"] != "failed", "hosting failed: {v}");
        (s == 200 && v["state"] == "running").then_some(())
    });
    eprintln!("guest running after {:?}", t.elapsed());
    let (s, page) = plain(DOMAIN, "/alice/");
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("alice"), "{page}");

    let st = Stage {
        roost,
        dir: dir.to_owned(),
        root,
        admin,
        alice,
        alice_key,
        ssh_port,
        page,
    };
    site_over_https(&st);
    let t = Instant::now();
    custom_domain(&st);
    eprintln!("custom domain verified and certified in {:?}", t.elapsed());
    claims_that_fail(&st);
    let t = Instant::now();
    renewal_during_a_download(&st);
    eprintln!("forced renewal phase: {:?}", t.elapsed());
    release_the_domain(&st);

    // No order failed along the way (each would have been retried after a minute).
    let failed: Vec<String> = st
        .roost
        .log_text()
        .lines()
        .filter(|l| l.contains("certificate not obtained"))
        .map(str::to_owned)
        .collect();
    assert!(failed.is_empty(), "failed orders:\n{}", failed.join("\n"));

    // Nothing left behind: the daemon's drop kills its QEMU; its tap goes with it.
    let Stage { roost, dir, .. } = st;
    drop(roost);
    common::poll("no QEMU left", Duration::from_secs(30), || {
        (qemus_under(&dir) == 0).then_some(())
    });
    common::poll("no tap left", Duration::from_secs(30), || {
        roost_taps().is_empty().then_some(())
    });
    drop(procs);
    eprintln!("whole test: {:?}", started.elapsed());
}

/// (1) roost obtains `roost.test` + `*.roost.test` from pebble by DNS-01 through its own
/// challenge DNS, reached through unbound's delegation.
fn domain_certificate(roost: &Daemon, admin: &str) {
    let cert = wait_cert(
        roost,
        admin,
        "the certificate of roost.test and *.roost.test",
        Duration::from_secs(180),
        |certs| {
            slot(certs, "domain").filter(|c| {
                names(c) == [format!("*.{DOMAIN}"), DOMAIN.to_owned()] && issued_by_pebble(c)
            })
        },
    );
    assert_eq!(cert["expired"], false, "{cert}");
    let (s, tls) = http("GET", "/api/v1/admin/tls", Some(admin), None);
    assert_eq!(s, 200, "{tls}");
    assert_eq!(tls["enabled"], true, "{tls}");
    assert_eq!(tls["acme"], true, "{tls}");
    // DOMAIN and its wildcard are one certificate: never one per user.
    assert_eq!(
        tls["certificates"].as_array().map(Vec::len),
        Some(1),
        "{tls}"
    );
}

/// (2) The guest's page over HTTPS, by host and by path, over HTTP/2, exactly as plain
/// HTTP serves it; the certificate verifies against pebble's root for both names.
fn site_over_https(st: &Stage) {
    for (host, path) in [(ALICE_HOST, "/"), (DOMAIN, "/alice/")] {
        let got = https(st, host, path);
        assert_eq!(got.exit, 0, "https://{host}{path}: {}", got.err);
        assert_eq!(
            (got.status, got.version.as_str()),
            (200, "2"),
            "https://{host}{path}"
        );
        assert_eq!(got.body, st.page, "https://{host}{path}");
    }
    // And plain HTTP by host serves the same page (no redirect: `redirect = false`).
    let (s, body) = plain(ALICE_HOST, "/");
    assert_eq!((s, body.as_str()), (200, st.page.as_str()));
}

/// (3) A user's own domain: claimed (normalised), refused verification without its TXT
/// record and with a wrong one (and not routed meanwhile), verified with the right one;
/// then routed over plain HTTP, certified by HTTP-01 through roost's plain listener, and
/// served over HTTPS.
fn custom_domain(st: &Stage) {
    let (s, d) = http(
        "POST",
        "/api/v1/host/domains",
        Some(&st.alice),
        Some(&json!({"name": "Shop.Example.ORG."})),
    );
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["name"], SHOP, "{d}");
    assert_eq!(d["state"], "pending", "{d}");
    assert_eq!(d["txt_name"], TXT_NAME, "{d}");
    assert_eq!(d["target"], DOMAIN, "{d}");
    let token = d["txt_value"].as_str().expect("txt_value").to_owned();
    assert!(!token.is_empty(), "{d}");
    let (_, host) = http("GET", "/api/v1/host", Some(&st.alice), None);
    assert_eq!(host["domains"][0]["name"], SHOP, "{host}");
    assert_eq!(host["domains"][0]["state"], "pending", "{host}");

    let verify_path = format!("/api/v1/host/domains/{SHOP}/verify");
    // No TXT record yet.
    let (s, v) = http("POST", &verify_path, Some(&st.alice), None);
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"], "not_verified", "{v}");
    assert!(
        v["message"].as_str().is_some_and(|m| m.contains(TXT_NAME)),
        "{v}"
    );
    let (s, body) = plain(SHOP, "/");
    assert_ne!(body, st.page, "an unverified domain is routed ({s})");
    // A wrong value.
    pebble::set_txt(TXT_NAME, "roost-not-the-token");
    let (s, v) = http("POST", &verify_path, Some(&st.alice), None);
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"], "not_verified", "{v}");
    let (_, body) = plain(SHOP, "/");
    assert_ne!(body, st.page, "a domain with a wrong TXT record is routed");
    // The right one.
    pebble::clear_txt(TXT_NAME);
    pebble::set_txt(TXT_NAME, &token);
    let (s, v) = http("POST", &verify_path, Some(&st.alice), None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "verified", "{v}");
    assert_eq!(v["name"], SHOP, "{v}");
    let (_, host) = http("GET", "/api/v1/host", Some(&st.alice), None);
    assert_eq!(host["domains"][0]["state"], "verified", "{host}");

    // Routed at once over plain HTTP, the whole host to alice's site.
    let (s, body) = plain(SHOP, "/");
    assert_eq!((s, body.as_str()), (200, st.page.as_str()));
    // Its own certificate, by HTTP-01 on roost's plain listener.
    wait_cert(
        &st.roost,
        &st.admin,
        "the certificate of shop.example.org",
        Duration::from_secs(180),
        |certs| slot(certs, SHOP).filter(|c| names(c) == [SHOP] && issued_by_pebble(c)),
    );
    let got = https(st, SHOP, "/");
    assert_eq!(got.exit, 0, "https://{SHOP}/: {}", got.err);
    assert_eq!((got.status, got.version.as_str()), (200, "2"));
    assert_eq!(got.body, st.page);
    // Stored, so a restarted daemon serves it without ordering again.
    for ext in ["crt", "key"] {
        assert!(tls_file(st, SHOP, ext).exists(), "{SHOP}.{ext} not stored");
    }
}

/// A stored certificate or key: `state_dir/tls/<slot>.<ext>`.
fn tls_file(st: &Stage, slot: &str, ext: &str) -> PathBuf {
    st.roost
        .state_dir()
        .join("tls")
        .join(format!("{slot}.{ext}"))
}

/// (4) The service's own names cannot be claimed, and a claimed name cannot be claimed
/// again.
fn claims_that_fail(st: &Stage) {
    let claim = |token: &str, name: &str| {
        http(
            "POST",
            "/api/v1/host/domains",
            Some(token),
            Some(&json!({ "name": name })),
        )
    };
    for own in [DOMAIN, "x.roost.test", "X.Roost.Test."] {
        let (s, v) = claim(&st.alice, own);
        assert_eq!(s, 422, "{own}: {v}");
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("belongs to this service")),
            "{own}: {v}"
        );
    }
    // A second user cannot take the domain. bob has no hosting (a second guest would
    // double this test's cost), and a claim without a hosting is refused as 404 before
    // the name is looked at; the name's uniqueness is decided by the store's key
    // whoever claims it, so alice's claiming it again (in another spelling) exercises
    // the same 409.
    let (s, v) = http(
        "POST",
        "/api/v1/auth/register",
        None,
        Some(&json!({"username": "bob", "password": "password123"})),
    );
    assert_eq!(s, 201, "{v}");
    let bob = login("bob", "password123");
    let (s, v) = claim(&bob, SHOP);
    assert_eq!(s, 404, "{v}");
    let (s, v) = claim(&st.alice, "SHOP.example.org");
    assert_eq!(s, 409, "{v}");
    // Nothing changed: still one domain, verified.
    let (_, host) = http("GET", "/api/v1/host", Some(&st.alice), None);
    assert_eq!(host["domains"].as_array().map(Vec::len), Some(1), "{host}");
    assert_eq!(host["domains"][0]["state"], "verified", "{host}");
}

/// (5) A forced renewal while a rate-limited HTTPS download runs: the new certificate is
/// installed while the download's connection stays open, new connections get it (another
/// serial number), and the download completes whole.
fn renewal_during_a_download(st: &Stage) {
    // The file, in the guest's web root; sparse, so it costs nothing. Without sudo, right
    // after `running`: the owner can write the site as soon as SSH answers (the web root
    // is group-writable for them from cloud-init's first stage), and edit the default page.
    let out = ssh(
        st,
        &format!(
            "truncate -s {BIG_BYTES} /var/www/html/big.bin && cp /var/www/html/index.html /tmp/page && echo edited >> /var/www/html/index.html && cp /tmp/page /var/www/html/index.html && stat -c %s /var/www/html/big.bin"
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        BIG_BYTES.to_string()
    );

    let before = domain_slot(&st.admin);
    let shop_before = slot(&certificates(&st.admin), SHOP).expect("shop's certificate");
    let serial_before = served_serial(ALICE_HOST);

    let body = st.dir.join("big.out");
    let meta = st.dir.join("big.meta");
    let err = st.dir.join("big.err");
    let mut download = Reaped(
        Command::new("curl")
            .args(["-sS", "-m", "300", "--limit-rate", BIG_RATE])
            .args(["--resolve", &format!("{ALICE_HOST}:{HTTPS_PORT}:127.0.0.1")])
            .arg("--cacert")
            .arg(&st.root)
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code} %{http_version} %{size_download}"])
            .arg(format!("https://{ALICE_HOST}:{HTTPS_PORT}/big.bin"))
            .stdin(Stdio::null())
            .stdout(File::create(&meta).expect("meta"))
            .stderr(File::create(&err).expect("err"))
            .spawn()
            .expect("curl"),
    );
    let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    common::poll("the download to start", Duration::from_secs(60), || {
        if let Some(status) = download.0.try_wait().expect("wait") {
            panic!(
                "the download ended before the renewal: {status}: {}",
                fs::read_to_string(&err).unwrap_or_default()
            );
        }
        (size(&body) > 0).then_some(())
    });
    let t = Instant::now();

    let (s, v) = http("POST", "/api/v1/admin/tls/renew", Some(&st.admin), None);
    assert_eq!(s, 202, "{v}");
    let after = wait_cert(
        &st.roost,
        &st.admin,
        "the renewed certificate of roost.test",
        Duration::from_secs(120),
        |certs| {
            slot(certs, "domain").filter(|c| {
                (c["not_before"] != before["not_before"] || c["not_after"] != before["not_after"])
                    && issued_by_pebble(c)
            })
        },
    );
    eprintln!("renewed in {:?}: {before} -> {after}", t.elapsed());
    assert_eq!(names(&after), names(&before));
    // The download's connection, opened before, is still going.
    assert!(
        download.0.try_wait().expect("wait").is_none(),
        "the download ended before the new certificate was installed ({} of {BIG_BYTES} bytes): {}",
        size(&body),
        fs::read_to_string(&err).unwrap_or_default()
    );
    let during = size(&body);
    assert!(during < BIG_BYTES, "{during}");
    // A new connection is served the new certificate, which verifies as the old one did.
    let serial_after = served_serial(ALICE_HOST);
    assert_ne!(serial_after, serial_before, "still the old certificate");
    let got = https(st, ALICE_HOST, "/");
    assert_eq!((got.exit, got.status), (0, 200), "{}", got.err);
    assert_eq!(got.body, st.page);
    // Every ACME certificate is ordered again, the custom domain's too.
    wait_cert(
        &st.roost,
        &st.admin,
        "the renewed certificate of shop.example.org",
        Duration::from_secs(120),
        |certs| {
            slot(certs, SHOP).filter(|c| {
                c["not_before"] != shop_before["not_before"]
                    || c["not_after"] != shop_before["not_after"]
            })
        },
    );

    // The download completes, whole.
    let status = common::poll("the download to finish", Duration::from_secs(240), || {
        download.0.try_wait().expect("wait")
    });
    let err_text = fs::read_to_string(&err).unwrap_or_default();
    assert!(status.success(), "curl: {status}: {err_text}");
    assert_eq!(
        fs::read_to_string(&meta).expect("meta").trim(),
        format!("200 2 {BIG_BYTES}"),
        "{err_text}"
    );
    assert_eq!(size(&body), BIG_BYTES);
    eprintln!(
        "download: {during} bytes when the certificate changed, {BIG_BYTES} at the end, {:?} after the renewal request",
        t.elapsed()
    );
}

/// (6) A released domain is unrouted at once, and its certificate is forgotten.
fn release_the_domain(st: &Stage) {
    let (s, v) = http(
        "DELETE",
        &format!("/api/v1/host/domains/{SHOP}"),
        Some(&st.alice),
        None,
    );
    assert_eq!(s, 204, "{v}");
    let (s, body) = plain(SHOP, "/");
    assert_ne!(body, st.page, "a released domain is still routed ({s})");
    wait_cert(
        &st.roost,
        &st.admin,
        "the certificate of shop.example.org to go",
        Duration::from_secs(60),
        |certs| slot(certs, SHOP).is_none().then_some(()),
    );
    for ext in ["crt", "key"] {
        assert!(
            !tls_file(st, SHOP, ext).exists(),
            "{SHOP}.{ext} left behind"
        );
    }
    // No certificate for it any more: the handshake fails.
    let got = https(st, SHOP, "/");
    assert_ne!(got.exit, 0, "HTTPS for a released domain: {}", got.status);
    let (_, host) = http("GET", "/api/v1/host", Some(&st.alice), None);
    assert_eq!(host["domains"].as_array().map(Vec::len), Some(0), "{host}");
    // DOMAIN's certificate stays.
    assert!(slot(&certificates(&st.admin), "domain").is_some());
}

/// The certificates `GET /api/v1/admin/tls` lists.
fn certificates(admin: &str) -> Vec<Value> {
    let (s, v) = http("GET", "/api/v1/admin/tls", Some(admin), None);
    assert_eq!(s, 200, "{v}");
    v["certificates"].as_array().cloned().unwrap_or_default()
}

fn slot(certs: &[Value], name: &str) -> Option<Value> {
    certs.iter().find(|c| c["slot"] == name).cloned()
}

fn domain_slot(admin: &str) -> Value {
    slot(&certificates(admin), "domain").expect("the domain's certificate")
}

/// A certificate's names, sorted.
fn names(cert: &Value) -> Vec<String> {
    let mut n: Vec<String> = cert["names"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    n.sort();
    n
}

/// pebble's intermediates are called "Pebble Intermediate CA …".
fn issued_by_pebble(cert: &Value) -> bool {
    cert["issuer"]
        .as_str()
        .is_some_and(|i| i.contains("Pebble"))
}

/// Polls the admin's certificate list until `check` finds what it wants; on timeout the
/// panic carries what the daemon logged about certificates.
fn wait_cert<T>(
    roost: &Daemon,
    admin: &str,
    what: &str,
    within: Duration,
    mut check: impl FnMut(&[Value]) -> Option<T>,
) -> T {
    let started = Instant::now();
    common::poll(what, within + Duration::from_secs(5), || {
        let certs = certificates(admin);
        if let Some(v) = check(&certs) {
            return Some(v);
        }
        if started.elapsed() > within {
            panic!(
                "timed out after {within:?} waiting for {what}; certificates: {certs:?}\n--- what roost logged about ACME ---\n{}",
                acme_log(roost)
            );
        }
        None
    })
}

/// The daemon's log lines about certificates and challenges.
fn acme_log(roost: &Daemon) -> String {
    roost
        .log_text()
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            ["acme", "certificate", "challenge", "order", "tls"]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What curl got.
struct Got {
    exit: i32,
    status: u16,
    version: String,
    body: String,
    err: String,
}

/// `curl https://host:8443/path`, resolved to loopback, trusting only pebble's root.
fn https(st: &Stage, host: &str, path: &str) -> Got {
    let out = Command::new("curl")
        .args(["-sS", "-m", "20", "--resolve"])
        .arg(format!("{host}:{HTTPS_PORT}:127.0.0.1"))
        .arg("--cacert")
        .arg(&st.root)
        .args(["-w", "\n%{http_code} %{http_version}"])
        .arg(format!("https://{host}:{HTTPS_PORT}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (status, version) = tail.split_once(' ').unwrap_or((tail, ""));
    Got {
        exit: out.status.code().unwrap_or(-1),
        status: status.parse().unwrap_or(0),
        version: version.to_owned(),
        body: body.to_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `curl http://host:8080/path` (plain, resolved to loopback): status and body.
fn plain(host: &str, path: &str) -> (u16, String) {
    let port = HTTP.rsplit_once(':').map_or("", |(_, p)| p);
    let out = Command::new("curl")
        .args(["-sS", "-m", "20", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .args(["-w", "\n%{http_code}"])
        .arg(format!("http://{host}:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// The serial number of the certificate a new TLS connection for `host` is served.
fn served_serial(host: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{HTTPS_PORT} -servername {host} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(text.starts_with("serial="), "no certificate served: {text}");
    text
}

fn ssh(st: &Stage, cmd: &str) -> std::process::Output {
    common::guest::ssh(st.ssh_port, "alice", &st.alice_key, cmd)
}
