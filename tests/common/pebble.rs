//! A small ACME world for the privileged tests, inside the test's network namespace:
//! Debian's `pebble` as the CA, `pebble-challtestsrv` as the rest of DNS (A and TXT
//! records set through its management API), and `unbound` as the CA's resolver, standing
//! in for the operator's delegation of `_acme-challenge.<zone>` to roost's challenge DNS
//! (a stub zone per delegated zone; everything else goes to challtestsrv):
//!
//! ```text
//!  ACME client ──HTTPS──> pebble 127.0.0.1:14000 (its TLS certificate from a CA made here; roots on :15000)
//!  pebble ──DNS──> unbound 127.0.0.1:5053 ─┬─ _acme-challenge.<zone> ─> the stub server given
//!                                          └─ everything else ───────> pebble-challtestsrv 127.0.0.1:8053
//!  pebble ──HTTP-01──> <name> (an A record set in challtestsrv):<http_port>
//! ```
//! Every service logs to `<name>.log` in the test's directory, is killed when [`Procs`]
//! drops (or when the spawning thread ends: `PR_SET_PDEATHSIG`), and has its log's tail
//! printed when the test failed. Used by tests/acme.rs and tests/https_acme.rs.

use std::fs::{self, File};
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use serde_json::{json, Value};

use super::Reaped;

/// pebble's ACME listener (its directory is `https://PEBBLE/dir`).
pub const PEBBLE: &str = "127.0.0.1:14000";
/// pebble's management API (`/roots/0`: the root of the certificates it issues).
pub const PEBBLE_MANAGEMENT: &str = "127.0.0.1:15000";
pub const CHALLTESTSRV_DNS: &str = "127.0.0.1:8053";
pub const CHALLTESTSRV_MANAGEMENT: &str = "127.0.0.1:8055";
/// unbound, the resolver pebble asks.
pub const RESOLVER: &str = "127.0.0.1:5053";
/// How long any one service may take to come up.
pub const STARTUP: Duration = Duration::from_secs(20);

/// The services of a test, each logging to `<name>.log` in `dir`; all killed when dropped,
/// and their logs' tails printed when the test failed.
pub struct Procs {
    pub dir: PathBuf,
    children: Vec<(String, Reaped)>,
}

/// A running pebble: the CA its TLS listener's certificate chains to.
pub struct Pebble {
    /// The PEM of that CA (give it to ACME clients as an extra root).
    pub ca_pem: String,
    /// The same, as a file in the test's directory.
    pub ca_file: PathBuf,
}

impl Pebble {
    /// The root of the certificates pebble issues (new at every start), from its
    /// management API.
    pub fn root(&self) -> String {
        let out = Command::new("curl")
            .args(["-sS", "-f", "-m", "20", "--cacert"])
            .arg(&self.ca_file)
            .arg(format!("https://{PEBBLE_MANAGEMENT}/roots/0"))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "pebble's root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pem = String::from_utf8(out.stdout).expect("utf-8 root");
        assert!(pem.contains("BEGIN CERTIFICATE"), "pebble's root: {pem}");
        pem
    }
}

impl Procs {
    pub fn new(dir: &Path) -> Procs {
        Procs {
            dir: dir.to_owned(),
            children: Vec::new(),
        }
    }

    pub fn spawn(&mut self, name: &str, program: &str, args: &[&str], env: &[(&str, &str)]) {
        let log = File::create(self.dir.join(format!("{name}.log"))).expect("log file");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe. The child is killed when this thread (the
        // test's, in the namespace) ends, even if the test process itself is killed.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e} (is it installed?)"));
        self.children.push((name.to_owned(), Reaped(child)));
    }

    /// pebble-challtestsrv as a DNS server only (no default addresses: a name resolves
    /// only once [`add_a`] gave it one); ready when its management API answers.
    pub fn challtestsrv(&mut self) {
        self.spawn(
            "challtestsrv",
            "pebble-challtestsrv",
            &[
                "-dns01",
                CHALLTESTSRV_DNS,
                "-management",
                CHALLTESTSRV_MANAGEMENT,
                "-defaultIPv4",
                "",
                "-defaultIPv6",
                "",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ],
            &[],
        );
        wait_tcp(CHALLTESTSRV_MANAGEMENT);
    }

    /// unbound on [`RESOLVER`]: each `(zone, server)` in `stubs` is a stub zone (the
    /// operator's NS delegation), everything else goes to challtestsrv. Not waited for:
    /// the caller knows what it may ask (asking a stub before its server is up would
    /// only teach unbound that the server is down).
    pub fn unbound(&mut self, stubs: &[(&str, SocketAddr)]) {
        let conf = self.dir.join("unbound.conf");
        fs::write(&conf, unbound_config(&self.dir, stubs)).expect("unbound.conf");
        self.spawn(
            "unbound",
            "unbound",
            &["-d", "-c", conf.to_str().expect("utf-8 path")],
            &[],
        );
    }

    /// pebble on [`PEBBLE`], asking [`RESOLVER`], validating HTTP-01 on `http_port`; its
    /// TLS certificate comes from a CA made here. Ready when both its listeners accept.
    pub fn pebble(&mut self, http_port: u16) -> Pebble {
        let ca = TestCa::new();
        let ca_file = self.dir.join("pebble-ca.pem");
        fs::write(&ca_file, &ca.cert_pem).expect("CA pem");
        let (cert_pem, key_pem) = ca.leaf(&["localhost", "127.0.0.1"]);
        fs::write(self.dir.join("pebble.pem"), cert_pem).expect("pebble cert");
        fs::write(self.dir.join("pebble.key"), key_pem).expect("pebble key");
        let config = json!({"pebble": {
            "listenAddress": PEBBLE,
            "managementListenAddress": PEBBLE_MANAGEMENT,
            "certificate": self.dir.join("pebble.pem"),
            "privateKey": self.dir.join("pebble.key"),
            "httpPort": http_port,
            "tlsPort": 5001,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }});
        let conf = self.dir.join("pebble.json");
        fs::write(&conf, config.to_string()).expect("pebble.json");
        self.spawn_pebble();
        Pebble {
            ca_pem: ca.cert_pem,
            ca_file,
        }
    }

    /// Stops pebble and starts it again with the same configuration and TLS certificate:
    /// a CA that has forgotten every account, order and root it had.
    pub fn restart_pebble(&mut self) {
        let before = self.children.len();
        self.children.retain(|(name, _)| name != "pebble");
        assert_eq!(self.children.len() + 1, before, "one pebble was running");
        self.spawn_pebble();
    }

    fn spawn_pebble(&mut self) {
        let conf = self.dir.join("pebble.json");
        self.spawn(
            "pebble",
            "pebble",
            &[
                "-config",
                conf.to_str().expect("utf-8 path"),
                "-dnsserver",
                RESOLVER,
            ],
            &[
                ("PEBBLE_VA_NOSLEEP", "1"),
                // instant-acme retries a rejected nonce only 3 times; no random rejections.
                ("PEBBLE_WFE_NONCEREJECT", "0"),
                // Every order gets fresh authorizations, so each one is really validated.
                ("PEBBLE_AUTHZREUSE", "0"),
            ],
        );
        wait_tcp(PEBBLE);
        wait_tcp(PEBBLE_MANAGEMENT);
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (name, _) in &self.children {
            let mut log = String::new();
            if let Ok(mut f) = File::open(self.dir.join(format!("{name}.log"))) {
                let _ = f.read_to_string(&mut log);
            }
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- {name}.log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// One call to challtestsrv's management API; it must succeed.
fn challtestsrv(path: &str, body: Value) {
    let r = reqwest::blocking::Client::new()
        .post(format!("http://{CHALLTESTSRV_MANAGEMENT}{path}"))
        .json(&body)
        .send()
        .unwrap_or_else(|e| panic!("challtestsrv {path}: {e}"));
    assert!(
        r.status().is_success(),
        "challtestsrv {path}: {}",
        r.status()
    );
}

/// challtestsrv answers A queries for `host` (a name, with or without the final dot).
pub fn add_a(host: &str, addr: Ipv4Addr) {
    challtestsrv(
        "/add-a",
        json!({"host": fqdn(host), "addresses": [addr.to_string()]}),
    );
}

/// challtestsrv answers TXT queries for `host` with `value` too.
pub fn set_txt(host: &str, value: &str) {
    challtestsrv("/set-txt", json!({"host": fqdn(host), "value": value}));
}

/// challtestsrv answers `host` with a CNAME to `target`.
pub fn set_cname(host: &str, target: &str) {
    challtestsrv(
        "/set-cname",
        json!({"host": fqdn(host), "target": fqdn(target)}),
    );
}

/// challtestsrv forgets the TXT records of `host`.
pub fn clear_txt(host: &str) {
    challtestsrv("/clear-txt", json!({"host": fqdn(host)}));
}

fn fqdn(host: &str) -> String {
    format!("{}.", host.trim_end_matches('.'))
}

/// A CA made for pebble's own TLS listener.
pub struct TestCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "roost test CA for pebble");
        let key = KeyPair::generate().expect("CA key");
        let cert_pem = params.self_signed(&key).expect("CA cert").pem();
        TestCa {
            cert_pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `sans`, and its key.
    pub fn leaf(&self, sans: &[&str]) -> (String, String) {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name.push(DnType::CommonName, "pebble");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        (cert.pem(), key.serialize_pem())
    }
}

/// unbound as the CA's resolver: `_acme-challenge.<zone>` for each stub is served by its
/// server (the operator's NS delegation), everything else goes to challtestsrv. Tiny
/// negative TTLs so a "nothing yet" is never kept across orders; `test.` is not one of
/// unbound's built-in local zones here.
pub fn unbound_config(dir: &Path, stubs: &[(&str, SocketAddr)]) -> String {
    let (fip, fport) = CHALLTESTSRV_DNS.split_once(':').expect("addr");
    let (rip, rport) = RESOLVER.split_once(':').expect("addr");
    let stub_zones: String = stubs
        .iter()
        .map(|(zone, server)| {
            format!(
                "stub-zone:\n    name: \"_acme-challenge.{zone}\"\n    stub-addr: {}@{}\n",
                server.ip(),
                server.port()
            )
        })
        .collect();
    format!(
        r#"server:
    interface: {rip}
    port: {rport}
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    module-config: "iterator"
    qname-minimisation: no
    cache-max-negative-ttl: 1
    local-zone: "test." nodefault
remote-control:
    control-enable: no
{stub_zones}forward-zone:
    name: "."
    forward-addr: {fip}@{fport}
"#,
        dir = dir.display()
    )
}

/// One query to the resolver over UDP; `None` if it does not answer within a second.
pub fn resolve(name: &str, qtype: RecordType) -> Option<Message> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    sock.send_to(&query.to_vec().expect("encode"), RESOLVER)
        .ok()?;
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).ok()?;
        let answer = Message::from_vec(&buf[..n]).ok()?;
        if answer.metadata.id == query.metadata.id {
            return Some(answer);
        }
    }
}

/// True when the resolver answers `name` with the A record `addr`.
pub fn resolves_to(name: &str, addr: Ipv4Addr) -> bool {
    resolve(name, RecordType::A).is_some_and(|m| {
        m.answers
            .iter()
            .any(|r| matches!(&r.data, hickory_proto::rr::RData::A(a) if a.0 == addr))
    })
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_tcp(addr: &str) {
    super::poll(addr, STARTUP, || TcpStream::connect(addr).ok().map(drop));
}
