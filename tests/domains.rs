//! Custom domains through the real service over a real store, verified against a real DNS
//! server (`dnsmasq` on loopback, restarted with different records): claims, refusals,
//! verification (missing, wrong and right TXT), routing, re-checks that suspend and
//! restore, removal, and removal with the hosting.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use roost::config::Config;
use roost::domains::{DomainError, Domains};
use roost::proxy::Routes;
use roost::store::{DomainState, Hosting, HostingId, HostingState, NewUser, Role, Store};

/// A `dnsmasq` answering only the given TXT records on 127.0.0.1:`port`; killed on drop.
struct Dns {
    port: u16,
    child: Option<Child>,
}

impl Dns {
    fn new() -> Dns {
        // Free for UDP and TCP both, and below the ephemeral range (32768 up), so no
        // outgoing connection of another test takes it between two starts of dnsmasq.
        let seed = std::process::id() as u16;
        let port = (0..2000u16)
            .map(|i| 20000 + (seed.wrapping_add(i.wrapping_mul(7)) % 12000))
            .find(|&p| {
                std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
                    && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            })
            .expect("a free port for dnsmasq");
        Dns { port, child: None }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// (Re)starts the server with exactly these `(name, value)` TXT records.
    fn serve(&mut self, records: &[(&str, &str)]) {
        self.stop();
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "-k",
            "--conf-file=/dev/null",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--log-facility=-",
            // Authoritative-like for the test zone: a missing name is NXDOMAIN, not REFUSED.
            "--local=/example.org/",
            // Answers that a caching resolver would keep for 5 minutes.
            "--local-ttl=300",
            "--neg-ttl=300",
        ])
        .arg(format!("--port={}", self.port));
        if nix::unistd::Uid::effective().is_root() {
            cmd.arg("--user=root");
        }
        for (name, value) in records {
            cmd.arg(format!("--txt-record={name},{value}"));
        }
        self.child = Some(
            cmd.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("dnsmasq (package dnsmasq-base)"),
        );
        // Up when it answers a query (any answer).
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let query =
            b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01x\x04test\x00\x00\x10\x00\x01";
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let _ = sock.send_to(query, self.addr());
            let mut buf = [0u8; 512];
            if sock.recv_from(&mut buf).is_ok() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "dnsmasq did not start"
            );
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop();
    }
}

fn hosting_for(store: &Store, username: &str) -> Hosting {
    let u = store
        .create_user(
            NewUser {
                username,
                email: None,
                password_hash: "$argon2id$x",
                role: Role::User,
            },
            "test",
        )
        .expect("user");
    store
        .reserve_hosting(
            u.id,
            (2u8..=9).map(|i| Ipv4Addr::new(10, 0, 0, i)),
            22000..=22009,
            |_| true,
            |ip, port| Hosting {
                id: HostingId::new(),
                user: u.id,
                slug: username.into(),
                state: HostingState::Running,
                reason: None,
                desired_running: true,
                ip,
                ssh_port: port,
                mac: "52:54:00:00:00:01".into(),
                tap: "rt0".into(),
                incarnation: 1,
                ssh_keys: vec![],
                console_password_hash: None,
                snapshots: Vec::new(),
                sleep_when_idle: false,
                asleep: false,
                created_at: time::OffsetDateTime::now_utc(),
                updated_at: time::OffsetDateTime::now_utc(),
            },
            "test",
        )
        .expect("hosting")
}

#[tokio::test]
async fn a_custom_domain_is_routed_only_while_its_txt_record_proves_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let alice = hosting_for(&store, "alice");
    let mut dns = Dns::new();
    let mut cfg = Config {
        domain: "example.com".into(),
        ..Config::default()
    };
    cfg.domains.resolvers = vec![dns.addr()];
    let routes = Routes::new(Vec::new());
    let domains = Domains::new(Arc::new(cfg), store.clone(), routes.clone());
    let names = domains.verified_names();
    let routed = |name: &str| routes.snapshot().slug_of_domain(name).map(str::to_owned);

    // Claims: normalised; the service's own names and a second claim refused.
    let d = domains
        .claim(alice.user, alice.id, "Shop.Example.ORG.", "alice")
        .expect("claim");
    assert_eq!(d.name, "shop.example.org");
    assert_eq!(d.state, DomainState::Pending);
    let how = roost::domains::instructions(&d, "example.com");
    assert_eq!(how.txt_name, "_roost-challenge.shop.example.org");
    assert_eq!(how.target, "example.com");
    for own in ["example.com", "alice.example.com"] {
        assert!(matches!(
            domains.claim(alice.user, alice.id, own, "alice"),
            Err(DomainError::Invalid(_))
        ));
    }
    assert!(matches!(
        domains.claim(alice.user, alice.id, "shop.example.org", "alice"),
        Err(DomainError::Taken(_))
    ));
    // Another user cannot take it while it is claimed, in any spelling.
    let bob = hosting_for(&store, "bob");
    assert!(matches!(
        domains.claim(bob.user, bob.id, "SHOP.example.org.", "bob"),
        Err(DomainError::Taken(_))
    ));

    // No record, then a wrong one: refused with what DNS had, and nothing routed.
    dns.serve(&[]);
    match domains.verify(alice.id, "shop.example.org", "alice").await {
        Err(DomainError::NotVerified(m)) => assert!(
            m.contains("no TXT record at _roost-challenge.shop.example.org"),
            "{m}"
        ),
        other => panic!("verified without a record: {other:?}"),
    }
    dns.serve(&[("_roost-challenge.shop.example.org", "roost-wrong")]);
    match domains.verify(alice.id, "shop.example.org", "alice").await {
        Err(DomainError::NotVerified(m)) => assert!(m.contains("roost-wrong"), "{m}"),
        other => panic!("verified with a wrong record: {other:?}"),
    }
    assert_eq!(routed("shop.example.org"), None);

    // The right record: verified, routed to alice's site, announced for a certificate.
    dns.serve(&[("_roost-challenge.shop.example.org", &d.token)]);
    let v = domains
        .verify(alice.id, "SHOP.example.org", "alice")
        .await
        .expect("verified");
    assert_eq!(v.state, DomainState::Verified);
    assert_eq!(routed("shop.example.org").as_deref(), Some("alice"));
    assert_eq!(*names.borrow(), vec!["shop.example.org".to_string()]);

    // The record disappears: the re-check suspends it at once (no cached answer)...
    dns.serve(&[]);
    domains.recheck().await;
    let now = store
        .domain("shop.example.org")
        .expect("read")
        .expect("row");
    assert_eq!(now.state, DomainState::Suspended);
    assert_eq!(routed("shop.example.org"), None);
    assert!(names.borrow().is_empty());
    // ...a DNS outage changes nothing...
    dns.stop();
    domains.recheck().await;
    let now = store
        .domain("shop.example.org")
        .expect("read")
        .expect("row");
    assert_eq!(now.state, DomainState::Suspended);
    // ...and the record back restores it.
    dns.serve(&[("_roost-challenge.shop.example.org", &d.token)]);
    domains.recheck().await;
    assert_eq!(routed("shop.example.org").as_deref(), Some("alice"));

    // Removal unroutes; someone else may then claim it.
    domains
        .remove(alice.id, "shop.example.org", "alice")
        .expect("remove");
    assert_eq!(routed("shop.example.org"), None);
    assert!(matches!(
        domains.remove(alice.id, "shop.example.org", "alice"),
        Err(DomainError::NotFound)
    ));
    domains
        .claim(bob.user, bob.id, "shop.example.org", "bob")
        .expect("free again");
    // Alice cannot verify or remove bob's claim.
    assert!(matches!(
        domains.verify(alice.id, "shop.example.org", "alice").await,
        Err(DomainError::NotFound)
    ));
    // Deleting bob's hosting releases his domains with it.
    store
        .remove_hosting(bob.id, "test")
        .expect("remove hosting");
    assert!(store.domain("shop.example.org").expect("read").is_none());
}
