//! Loopback-only test fixtures: a fake upstream (hickory's own server with an in-memory
//! `example.test.` zone, counting the queries it receives), a silent upstream, and a
//! client that sends one query over UDP or TCP and waits for the answer with a deadline.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, OpCode, Query};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use hickory_server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// How long a test waits for any one answer.
pub(super) const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

pub(super) const ZONE: &str = "example.test.";
pub(super) const ZONE_A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

pub(super) fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("test name")
}

/// A DNS server for `example.test.` on 127.0.0.1 that counts the queries it receives.
pub(super) struct FakeUpstream {
    pub(super) addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    _server: Server<Counting>,
}

impl FakeUpstream {
    pub(super) async fn start() -> FakeUpstream {
        let origin = name(ZONE);
        let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        );
        let soa = SOA::new(
            name("ns.example.test."),
            name("hostmaster.example.test."),
            1,
            3600,
            600,
            86400,
            300,
        );
        let records = [
            Record::from_rdata(origin.clone(), 300, RData::SOA(soa)),
            Record::from_rdata(origin.clone(), 300, RData::A(A(ZONE_A))),
        ];
        for record in records {
            assert!(zone.upsert_mut(record, 1), "zone record");
        }
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);

        let queries = Arc::new(AtomicUsize::new(0));
        let mut server = Server::new(Counting {
            catalog,
            queries: queries.clone(),
        });
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let addr = udp.local_addr().expect("udp addr");
        server.register_socket(udp);
        // TCP on another port is fine: the forwarder only uses TCP after truncation.
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
        server.register_listener(tcp, Duration::from_secs(5), 32);
        FakeUpstream {
            addr,
            queries,
            _server: server,
        }
    }

    /// Queries received so far.
    pub(super) fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

/// The catalog, counting every request before it answers.
pub(super) struct Counting {
    catalog: Catalog,
    queries: Arc<AtomicUsize>,
}

/// The signature `async_trait` generates for `RequestHandler::handle_request`.
impl RequestHandler for Counting {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: 'async_trait + ResponseHandler,
        T: 'async_trait + Time,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.queries.fetch_add(1, Ordering::SeqCst);
        self.catalog
            .handle_request::<R, T>(request, response_handle)
    }
}

/// A query for `qname`/`qtype` with recursion desired and EDNS, like a stub resolver's.
pub(super) fn query(qname: &str, qtype: RecordType) -> Message {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name(qname), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    msg.set_edns(edns);
    msg
}

/// The same with another opcode.
pub(super) fn with_opcode(mut msg: Message, op: OpCode) -> Message {
    msg.metadata.op_code = op;
    msg
}

/// Sends `msg` over UDP from `from` (a loopback address) and returns the answer with the
/// same id, or panics after `ANSWER_DEADLINE`.
pub(super) async fn ask_udp(server: SocketAddr, from: IpAddr, msg: &Message) -> Message {
    let sock = UdpSocket::bind(SocketAddr::new(from, 0))
        .await
        .expect("bind client");
    let bytes = msg.to_vec().expect("encode query");
    sock.send_to(&bytes, server).await.expect("send query");
    let wait = async {
        let mut buf = vec![0u8; 65535];
        loop {
            let (n, peer) = sock.recv_from(&mut buf).await.expect("recv answer");
            if peer != server {
                continue;
            }
            let answer = Message::from_vec(&buf[..n]).expect("decode answer");
            if answer.metadata.id == msg.metadata.id {
                return answer;
            }
        }
    };
    tokio::time::timeout(ANSWER_DEADLINE, wait)
        .await
        .expect("no UDP answer before the deadline")
}

/// Sends `msg` over TCP (two-byte length prefix) and returns the answer.
pub(super) async fn ask_tcp(server: SocketAddr, msg: &Message) -> Message {
    let exchange = async {
        let mut stream = TcpStream::connect(server).await.expect("connect");
        let bytes = msg.to_vec().expect("encode query");
        let len = u16::try_from(bytes.len()).expect("short query");
        stream.write_all(&len.to_be_bytes()).await.expect("write");
        stream.write_all(&bytes).await.expect("write");
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.expect("read length");
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).await.expect("read answer");
        Message::from_vec(&buf).expect("decode answer")
    };
    tokio::time::timeout(ANSWER_DEADLINE, exchange)
        .await
        .expect("no TCP answer before the deadline")
}

/// The IPv4 addresses in the answer section.
pub(super) fn a_records(msg: &Message) -> Vec<Ipv4Addr> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}
