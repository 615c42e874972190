//! The forwarder end to end on loopback: a fake upstream, the real `DnsServer`, a client
//! sending real packets. Nothing leaves 127.0.0.0/8.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;

use super::{DnsPlan, DnsServer, DnsStats, UPSTREAM_TIMEOUT};
use crate::addr::Ipv4Net;
use support::{a_records, ask_tcp, ask_udp, query, with_opcode, FakeUpstream, ZONE, ZONE_A};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test subnet")
}

fn plan(upstream: SocketAddr, allow: Ipv4Net, burst: u32) -> DnsPlan {
    DnsPlan {
        listen: "127.0.0.1:0".parse().expect("loopback"),
        allow,
        upstreams: vec![upstream],
        per_client_qps: 1,
        per_client_burst: burst,
        cache_size: 1024,
    }
}

async fn start(upstream: SocketAddr, allow: &str, burst: u32) -> DnsServer {
    DnsServer::start(plan(upstream, net(allow), burst))
        .await
        .expect("start the forwarder")
}

fn assert_answer(msg: &Message, code: ResponseCode) {
    assert_eq!(msg.metadata.response_code, code, "{msg:?}");
    assert!(msg.metadata.recursion_available, "RA must be set: {msg:?}");
    assert!(
        !msg.metadata.authoritative,
        "a forwarder is not authoritative"
    );
}

#[tokio::test]
async fn resolves_caches_and_passes_negative_answers_through() {
    let up = FakeUpstream::start().await;
    let dns = start(up.addr, "127.0.0.0/8", 1000).await;
    let addr = dns.local_addr();

    let first = ask_udp(addr, LOCAL, &query(ZONE, RecordType::A)).await;
    assert_answer(&first, ResponseCode::NoError);
    assert_eq!(a_records(&first), vec![ZONE_A]);
    let after_first = up.queries();
    assert_eq!(after_first, 1, "one upstream query for a new name");

    let second = ask_udp(addr, LOCAL, &query(ZONE, RecordType::A)).await;
    assert_answer(&second, ResponseCode::NoError);
    assert_eq!(a_records(&second), vec![ZONE_A]);
    assert_eq!(
        up.queries(),
        after_first,
        "the second answer comes from the cache"
    );
    assert!(second.answers.iter().all(|r| r.ttl <= 300));

    let nx = ask_udp(addr, LOCAL, &query("nope.example.test.", RecordType::A)).await;
    assert_answer(&nx, ResponseCode::NXDomain);
    assert!(nx.answers.is_empty());
    assert!(
        nx.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA),
        "NXDOMAIN carries the zone's SOA: {nx:?}"
    );

    let nodata = ask_udp(addr, LOCAL, &query(ZONE, RecordType::AAAA)).await;
    assert_answer(&nodata, ResponseCode::NoError);
    assert!(nodata.answers.is_empty(), "NODATA stays NODATA: {nodata:?}");

    let stats = dns.stats();
    assert_eq!(stats.resolved, 4);
    assert_eq!(stats.refused_outside + stats.refused_over_rate, 0);
    dns.shutdown().await;
}

#[tokio::test]
async fn tcp_answers_too() {
    let up = FakeUpstream::start().await;
    let dns = start(up.addr, "127.0.0.0/8", 1000).await;
    let answer = ask_tcp(dns.local_addr(), &query(ZONE, RecordType::A)).await;
    assert_answer(&answer, ResponseCode::NoError);
    assert_eq!(a_records(&answer), vec![ZONE_A]);
    let nx = ask_tcp(
        dns.local_addr(),
        &query("nope.example.test.", RecordType::A),
    )
    .await;
    assert_answer(&nx, ResponseCode::NXDomain);
    dns.shutdown().await;
}

#[tokio::test]
async fn over_the_burst_is_refused_and_never_forwarded() {
    let up = FakeUpstream::start().await;
    let burst = 5;
    let dns = start(up.addr, "127.0.0.0/8", burst).await;
    let addr = dns.local_addr();

    // Distinct names: each one that got through reaches the upstream exactly once, so
    // the upstream's count is the number of queries that were not refused.
    let total = 3 * burst;
    let mut refused = 0;
    for i in 0..total {
        let q = query(&format!("n{i}.example.test."), RecordType::A);
        let answer = ask_udp(addr, LOCAL, &q).await;
        match answer.metadata.response_code {
            ResponseCode::Refused => refused += 1,
            ResponseCode::NXDomain => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // qps is 1: at most a token or two came back while the loop ran.
    assert!(refused >= total - burst - 2, "refused {refused} of {total}");
    assert_eq!(up.queries() as u64, u64::from(total - refused));
    assert_eq!(dns.stats().refused_over_rate, u64::from(refused));

    // Another client has its own bucket.
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let answer = ask_udp(addr, other, &query(ZONE, RecordType::A)).await;
    assert_answer(&answer, ResponseCode::NoError);
    dns.shutdown().await;
}

#[tokio::test]
async fn sources_outside_the_subnet_are_refused_and_never_forwarded() {
    let up = FakeUpstream::start().await;
    let dns = start(up.addr, "10.0.0.0/8", 1000).await;
    let udp = ask_udp(dns.local_addr(), LOCAL, &query(ZONE, RecordType::A)).await;
    assert_eq!(udp.metadata.response_code, ResponseCode::Refused);
    assert!(udp.answers.is_empty());
    let tcp = ask_tcp(dns.local_addr(), &query(ZONE, RecordType::A)).await;
    assert_eq!(tcp.metadata.response_code, ResponseCode::Refused);
    assert_eq!(up.queries(), 0);
    assert_eq!(
        dns.stats(),
        DnsStats {
            refused_outside: 2,
            ..DnsStats::default()
        }
    );
    dns.shutdown().await;
}

#[tokio::test]
async fn only_standard_queries_in_class_in() {
    let up = FakeUpstream::start().await;
    let dns = start(up.addr, "127.0.0.0/8", 1000).await;
    let addr = dns.local_addr();
    for op in [OpCode::Status, OpCode::Notify, OpCode::Update] {
        let answer = ask_udp(addr, LOCAL, &with_opcode(query(ZONE, RecordType::SOA), op)).await;
        assert_answer(&answer, ResponseCode::NotImp);
    }
    let axfr = ask_tcp(addr, &query(ZONE, RecordType::AXFR)).await;
    assert_answer(&axfr, ResponseCode::NotImp);
    let mut chaos = query("version.bind.", RecordType::TXT);
    chaos.queries[0].set_query_class(hickory_proto::rr::DNSClass::CH);
    assert_answer(&ask_udp(addr, LOCAL, &chaos).await, ResponseCode::NotImp);
    assert_eq!(up.queries(), 0);
    dns.shutdown().await;
}

#[tokio::test]
async fn dead_upstream_gives_servfail_in_bounded_time() {
    // Bound and never read: queries vanish, as with an unreachable resolver.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind silent upstream");
    let dns = start(silent.local_addr().expect("addr"), "127.0.0.0/8", 1000).await;
    let started = Instant::now();
    let answer = ask_udp(dns.local_addr(), LOCAL, &query(ZONE, RecordType::A)).await;
    let took = started.elapsed();
    assert_answer(&answer, ResponseCode::ServFail);
    assert!(
        took < UPSTREAM_TIMEOUT + Duration::from_secs(3),
        "SERVFAIL after {took:?}"
    );
    let mut buf = [0u8; 512];
    let got = silent.try_recv_from(&mut buf);
    assert!(got.is_ok(), "the query was forwarded to the upstream");
    assert_eq!(dns.stats().upstream_failures, 1);
    dns.shutdown().await;
}

/// Polls until both the UDP and TCP port can be bound again, or the deadline passes.
async fn port_released(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let udp = std::net::UdpSocket::bind(addr);
        let tcp = std::net::TcpListener::bind(addr);
        if udp.is_ok() && tcp.is_ok() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutdown_and_drop_close_the_sockets() {
    let up = FakeUpstream::start().await;
    let dns = start(up.addr, "127.0.0.0/8", 1000).await;
    let addr = dns.local_addr();
    dns.shutdown().await;
    assert!(port_released(addr).await, "shutdown closes UDP and TCP");

    let dns = start(up.addr, "127.0.0.0/8", 1000).await;
    let addr = dns.local_addr();
    drop(dns);
    assert!(port_released(addr).await, "drop closes UDP and TCP");
}

#[tokio::test]
async fn bad_plans_and_taken_ports_are_errors() {
    let up = FakeUpstream::start().await;
    let taken = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut p = plan(up.addr, net("127.0.0.0/8"), 10);
    p.listen = taken.local_addr().expect("addr");
    let err = DnsServer::start(p.clone())
        .await
        .err()
        .expect("the port is taken");
    assert!(err.to_string().contains(&p.listen.to_string()), "{err}");

    p.upstreams = vec![p.listen];
    let err = DnsServer::start(p.clone()).await.err().expect("a loop");
    assert!(matches!(err, super::DnsError::InvalidPlan(_)), "{err}");
    p.upstreams.clear();
    assert!(DnsServer::start(p.clone()).await.is_err(), "no upstreams");
    p.upstreams.push(up.addr);
    p.per_client_qps = 0;
    assert!(DnsServer::start(p).await.is_err(), "zero rate");
}

/// A `tracing` writer into memory, to read back what would reach the journal.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Set in the child process that runs `journal_check_in_child` alone.
const LOG_CHILD: &str = "ROOST_DNS_LOG_CHECK_CHILD";

/// What reaches the journal (info and above, with `QUIET_LOGS`) while guests query: one
/// line when serving and one when stopped, nothing per query, refusal or failure.
///
/// `tracing` caches per callsite, process-wide, whether anyone wants its events, and tests
/// on other threads hit the same callsites with no subscriber; so the check runs alone in
/// a child process (this test binary, filtered to that one test).
#[test]
fn guests_cannot_flood_the_journal() {
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "dns::tests::journal_check_in_child",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(LOG_CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the check");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the log check did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{report}");
    assert!(stdout.contains("journal check done"), "{report}");
}

// In the child: `tokio::test` runs every task on this thread, so the thread's default
// subscriber sees the events of hickory's serving tasks too.
#[tokio::test]
async fn journal_check_in_child() {
    if std::env::var_os(LOG_CHILD).is_none() {
        return;
    }
    use tracing_subscriber::EnvFilter;
    let captured = Captured::default();
    let mut filter = EnvFilter::new("info");
    for directive in super::QUIET_LOGS {
        filter = filter.add_directive(directive.parse().expect("directive"));
    }
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let up = FakeUpstream::start().await;
    let dns = start(up.addr, "127.0.0.0/8", 2).await;
    let addr = dns.local_addr();
    for i in 0..6 {
        let q = query(&format!("n{i}.example.test."), RecordType::A);
        ask_udp(addr, LOCAL, &q).await;
    }
    ask_udp(
        addr,
        LOCAL,
        &with_opcode(query(ZONE, RecordType::A), OpCode::Notify),
    )
    .await;
    assert!(dns.stats().refused_over_rate >= 3);
    dns.shutdown().await;
    let outside = start(up.addr, "10.0.0.0/8", 2).await;
    ask_udp(outside.local_addr(), LOCAL, &query(ZONE, RecordType::A)).await;
    outside.shutdown().await;

    let text = String::from_utf8(captured.0.lock().expect("log buffer").clone()).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("DNS forwarder serving"))
            .count(),
        2,
        "{text}"
    );
    // Serving and stopped, twice; nothing per query.
    assert_eq!(lines.len(), 4, "{text}");
    println!("journal check done");
}
