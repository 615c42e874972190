//! The ACME client end to end against a real CA, Debian's `pebble`, inside a private
//! network namespace this test creates (nothing leaves it, nothing outlives the test):
//!
//! ```text
//!  roost's Acme ──HTTPS──> pebble 127.0.0.1:14000 (its TLS certificate made here; roots on :15000)
//!  pebble ──DNS──> unbound 127.0.0.1:5053 ─┬─ _acme-challenge.example.test ─> roost's ChallengeDns (stub zone)
//!                                          └─ everything else ──────────────> pebble-challtestsrv 127.0.0.1:8053
//!  pebble ──HTTP-01──> shop.example.org (A 127.0.0.1, set in challtestsrv):5002 ─> this test's server of
//!                      `Challenges::http01`
//! ```
//! unbound stands in for the operator's delegation (`_acme-challenge.DOMAIN NS roost`): pebble
//! really asks a resolver, which really asks ChallengeDns. The three services are
//! tests/common/pebble.rs's (shared with tests/https_acme.rs).
//! Privileged: runs only with ROOST_PRIVILEGED_TESTS=1 (scripts/test.sh sets it).

mod common;

use std::convert::Infallible;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use roost::tls::acme::{Acme, AcmeError, AcmeSettings, Issued, Method, ACCOUNT_FILE};
use roost::tls::challenge::{ChallengeDns, Challenges};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::RootCertStore;

use common::pebble::{self, Procs, PEBBLE, STARTUP};

const ZONE: &str = "example.test";
/// The name whose `_acme-challenge` answers for `cname.test`'s (delegation by CNAME).
const ALIAS: &str = "alias.test";
/// Where pebble validates HTTP-01 (its `httpPort`), and where this test answers.
const HTTP01: &str = "127.0.0.1:5002";

#[test]
fn certificates_from_pebble_by_dns01_through_challenge_dns_and_by_http01() {
    if !common::privileged("acme") {
        return;
    }
    common::in_netns(run_in_netns);
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn run_in_netns() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut procs = Procs::new(dir);

    procs.challtestsrv();
    pebble::add_a("shop.example.org", Ipv4Addr::LOCALHOST);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let challenges = Challenges::new();
    let (dns, alias_dns, http01) = rt.block_on(async {
        let dns = ChallengeDns::start(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ZONE.into(),
            challenges.clone(),
        )
        .await
        .expect("start ChallengeDns");
        // Delegation by CNAME: `_acme-challenge.cname.test` points at
        // `_acme-challenge.alias.test`, which this second server answers.
        let alias_dns = ChallengeDns::start(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ALIAS.into(),
            challenges.clone(),
        )
        .await
        .expect("start the alias's ChallengeDns");
        let listener = tokio::net::TcpListener::bind(HTTP01)
            .await
            .expect("bind HTTP-01");
        (
            dns,
            alias_dns,
            tokio::spawn(serve_http01(listener, challenges.clone())),
        )
    });
    pebble::set_cname(
        "_acme-challenge.cname.test",
        &format!("_acme-challenge.{ALIAS}"),
    );

    // A name server that never answers, for an order that cannot finish in time.
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind silent");
    let silent_addr = silent.local_addr().expect("silent addr");
    procs.unbound(&[
        (ZONE, dns.local_addr()),
        (ALIAS, alias_dns.local_addr()),
        ("silent.test", silent_addr),
    ]);
    // Both paths of the resolver work: the delegation (the SOA comes from ChallengeDns; no
    // TXT is asked, so no negative answer is cached) and the rest of the "internet".
    common::poll("unbound answering", STARTUP, || {
        let soa = pebble::resolve("_acme-challenge.example.test.", RecordType::SOA)?;
        let soa_ok = soa.metadata.response_code == ResponseCode::NoError && !soa.answers.is_empty();
        let a_ok = pebble::resolves_to("shop.example.org.", Ipv4Addr::LOCALHOST);
        (soa_ok && a_ok).then_some(())
    });

    let pebble = procs.pebble(5002);
    eprintln!("services up after {:?}", started.elapsed());

    let account_dir = dir.join("acme");
    let settings = AcmeSettings {
        directory: format!("https://{PEBBLE}/dir"),
        email: "hostmaster@example.test".into(),
        ca_roots: Some(pebble.ca_file.clone()),
        dir: account_dir.clone(),
        dns_alias: None,
    };

    let pebble_root = pebble.root();
    rt.block_on(async {
        let mut acme = Acme::load_or_register(settings.clone(), challenges.clone())
            .await
            .expect("register");

        // (1) The domain and its wildcard by DNS-01, through ChallengeDns: one TXT name,
        // two values at once.
        let t = Instant::now();
        let issued = acme
            .obtain(&names(&[ZONE, "*.example.test"]), Method::Dns01)
            .await
            .unwrap_or_else(|e| panic!("DNS-01: {}", roost::error_chain(&e)));
        eprintln!("DNS-01 order: {:?}", t.elapsed());
        assert_eq!(sans(&issued), ["*.example.test", "example.test"]);
        verify(&issued, &pebble_root, &["example.test", "www.example.test"]);
        assert!(challenges.is_empty(), "answers left after success");

        // (2) A custom domain by HTTP-01, served from the same Challenges.
        let t = Instant::now();
        let issued = acme
            .obtain(&names(&["shop.example.org"]), Method::Http01)
            .await
            .unwrap_or_else(|e| panic!("HTTP-01: {}", roost::error_chain(&e)));
        eprintln!("HTTP-01 order: {:?}", t.elapsed());
        assert_eq!(sans(&issued), ["shop.example.org"]);
        verify(&issued, &pebble_root, &["shop.example.org"]);
        assert!(challenges.is_empty());

        // (2b) Delegation by CNAME ([acme] dns_alias): the answers are published at the
        // alias's `_acme-challenge`, which the CA reaches through the CNAME.
        let aliased = AcmeSettings {
            dns_alias: Some(ALIAS.into()),
            ..settings.clone()
        };
        let mut acme_alias = Acme::load_or_register(aliased, challenges.clone())
            .await
            .expect("load");
        let issued = acme_alias
            .obtain(&names(&["cname.test", "*.cname.test"]), Method::Dns01)
            .await
            .unwrap_or_else(|e| panic!("DNS-01 through a CNAME: {}", roost::error_chain(&e)));
        assert_eq!(sans(&issued), ["*.cname.test", "cname.test"]);
        verify(&issued, &pebble_root, &["cname.test", "www.cname.test"]);
        assert!(challenges.is_empty());
        // Without the alias, the answer sits at a name nothing delegates: refused.
        let err = acme
            .obtain(&names(&["cname.test"]), Method::Dns01)
            .await
            .expect_err("DNS-01 at the CNAME's own name");
        assert!(matches!(err, AcmeError::Rejected { .. }), "{err}");
        assert!(challenges.is_empty());

        // (3) No answer reaches the CA: DNS-01 for a zone ChallengeDns does not serve
        // (the TXT value is set, but only for a name it refuses), and HTTP-01 from
        // answers that nothing serves.
        let err = acme
            .obtain(&names(&["other.test"]), Method::Dns01)
            .await
            .expect_err("DNS-01 outside the zone");
        let chain = roost::error_chain(&err);
        eprintln!("expected failure: {chain}");
        assert!(matches!(err, AcmeError::Rejected { .. }), "{chain}");
        assert!(
            chain.starts_with("DNS-01 for other.test: invalid: ") && chain.contains("TXT"),
            "{chain}"
        );
        assert!(challenges.is_empty(), "answers left after a failure");

        let unserved = Challenges::new();
        let mut acme2 = Acme::load_or_register(settings.clone(), unserved.clone())
            .await
            .expect("load");
        let err = acme2
            .obtain(&names(&["shop.example.org"]), Method::Http01)
            .await
            .expect_err("HTTP-01 with nothing served");
        let chain = roost::error_chain(&err);
        eprintln!("expected failure: {chain}");
        assert!(
            chain.starts_with("HTTP-01 for shop.example.org: invalid: ") && chain.contains("404"),
            "{chain}"
        );
        assert!(unserved.is_empty());

        // An order past its deadline fails as such, and withdraws the answer it had
        // published (the CA's resolver never hears back about `silent.test`).
        let silent_challenges = Challenges::new();
        let mut acme3 = Acme::load_or_register(settings.clone(), silent_challenges.clone())
            .await
            .expect("load");
        acme3.set_order_deadline(Duration::from_secs(2));
        let published = async {
            while silent_challenges
                .txt("_acme-challenge.silent.test")
                .is_empty()
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let silent_names = names(&["silent.test"]);
        let t = Instant::now();
        let (result, published) = tokio::join!(
            acme3.obtain(&silent_names, Method::Dns01),
            tokio::time::timeout(Duration::from_secs(5), published),
        );
        let err = result.expect_err("an order that cannot finish");
        eprintln!(
            "expected failure after {:?}: {}",
            t.elapsed(),
            roost::error_chain(&err)
        );
        assert!(
            published.is_ok(),
            "the answer was published during the order"
        );
        assert!(matches!(err, AcmeError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("silent.test"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(4), "the deadline held");
        assert!(silent_challenges.is_empty(), "answers left after a timeout");

        // A wildcard by HTTP-01 is refused before any request.
        let err = acme2
            .obtain(&names(&["*.example.test"]), Method::Http01)
            .await
            .expect_err("wildcard by HTTP-01");
        assert!(matches!(err, AcmeError::WildcardHttp01(_)), "{err}");

        // (4) The account is stored 0600 in a 0700 directory, and reused: the second
        // load above got the same account, and left the file as it was.
        let file = account_dir.join(ACCOUNT_FILE);
        assert_eq!(mode(&account_dir), 0o700);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(acme2.account_id(), acme.account_id());
        let stored = fs::read(&file).expect("account file");
        let again = Acme::load_or_register(settings.clone(), Challenges::new())
            .await
            .expect("load again");
        assert_eq!(again.account_id(), acme.account_id());
        assert_eq!(fs::read(&file).expect("account file"), stored, "rewritten");

        // An account stored for another directory URL is not reused.
        let other = AcmeSettings {
            directory: format!(
                "https://localhost:{}/dir",
                PEBBLE.rsplit(':').next().unwrap_or("")
            ),
            ..settings.clone()
        };
        let moved = Acme::load_or_register(other, Challenges::new())
            .await
            .expect("register for the other URL");
        assert_ne!(moved.account_id(), acme.account_id());
        assert_eq!(mode(&file), 0o600);
        let left: Vec<_> = fs::read_dir(&account_dir).expect("ls").collect();
        assert_eq!(left.len(), 1, "only account.json in the account directory");
    });

    // (5) A CA that no longer knows the stored account (pebble keeps accounts in memory
    // only; Let's Encrypt may deactivate one): the order is refused as
    // `accountDoesNotExist`, a new account is registered and stored, and the order goes
    // through with it.
    let file = account_dir.join(ACCOUNT_FILE);
    let mut acme = rt
        .block_on(Acme::load_or_register(settings.clone(), challenges.clone()))
        .expect("load");
    let stale = acme.account_id().to_owned();
    procs.restart_pebble();
    let pebble_root = pebble.root();
    let issued = rt
        .block_on(acme.obtain(&names(&["shop.example.org"]), Method::Http01))
        .unwrap_or_else(|e| {
            panic!(
                "HTTP-01 after the CA forgot the account: {}",
                roost::error_chain(&e)
            )
        });
    verify(&issued, &pebble_root, &["shop.example.org"]);
    assert_ne!(acme.account_id(), stale, "a new account");
    let again = rt
        .block_on(Acme::load_or_register(settings.clone(), Challenges::new()))
        .expect("load the new account");
    assert_eq!(
        again.account_id(),
        acme.account_id(),
        "the new account is stored"
    );
    assert_eq!(mode(&file), 0o600);

    drop(silent);
    http01.abort();
    rt.block_on(dns.shutdown());
    rt.block_on(alias_dns.shutdown());
    drop(rt);
    eprintln!("whole test: {:?}", started.elapsed());
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

/// The issued certificate's DNS names, sorted.
fn sans(issued: &Issued) -> Vec<String> {
    let leaf = CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("PEM");
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).expect("X.509");
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .expect("SAN extension")
        .expect("SANs")
        .value
        .general_names
        .iter()
        .map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => d.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    names.sort();
    names
}

/// The chain verifies to pebble's root for each host, and the key is the leaf's.
fn verify(issued: &Issued, root_pem: &str, hosts: &[&str]) {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("chain PEM");
    assert!(chain.len() >= 2, "a full chain: leaf and intermediate");
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(root_pem.as_bytes()).expect("root PEM"))
        .expect("root");
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), roost::tls::provider())
            .build()
            .expect("verifier");
    for host in hosts {
        let name = ServerName::try_from(host.to_string()).expect("server name");
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .unwrap_or_else(|e| panic!("{host}: {e}"));
    }

    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("key PEM");
    assert!(matches!(key, PrivateKeyDer::Pkcs8(_)), "PKCS#8 key");
    let signing = roost::tls::provider()
        .key_provider
        .load_private_key(key)
        .expect("load key");
    rustls::sign::CertifiedKey::new(chain, signing)
        .keys_match()
        .expect("the key is the certificate's");
}

/// Serves `GET /.well-known/acme-challenge/<token>` from `challenges`; 404 otherwise.
async fn serve_http01(listener: tokio::net::TcpListener, challenges: Challenges) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let challenges = challenges.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let answer = req
                    .uri()
                    .path()
                    .strip_prefix("/.well-known/acme-challenge/")
                    .and_then(|token| challenges.http01(token));
                async move {
                    let mut response =
                        Response::new(Full::new(Bytes::from(answer.clone().unwrap_or_default())));
                    if answer.is_none() {
                        *response.status_mut() = StatusCode::NOT_FOUND;
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
