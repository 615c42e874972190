//! The ACME challenges roost is answering right now, and the small authoritative DNS
//! server that publishes the DNS-01 ones.
//!
//! It owns [`Challenges`], the answers that are pending (HTTP-01 key authorizations by
//! token, DNS-01 TXT values by name): the ACME client writes them, each as an [`Answer`]
//! that withdraws itself when dropped; the HTTP listener on port 80 and the DNS server
//! read them. It owns [`ChallengeDns`], the authoritative server for
//! `_acme-challenge.DOMAIN`: the operator delegates that one name to roost (an NS
//! record), and roost answers its TXT records itself, over UDP and TCP.
//!
//! What it must not do, and why:
//! - It never answers for names outside `_acme-challenge.DOMAIN` (REFUSED): it is not the
//!   operator's DNS, and an authoritative answer there would be a lie anyone could cache.
//! - It never recurses, never answers ANY or zone transfers (REFUSED), and keeps every
//!   response small (one SOA, or the few TXT values pending): it faces the internet and
//!   must not be an amplifier.
//! - It never logs per query above debug level: queries come from anyone. The hickory
//!   crates log every response at info; `crate::dns::QUIET_LOGS` silences them.
//! - It decides nothing about orders: what is pending is what the ACME client set.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{SOA, TXT};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::debug;

/// The label ACME puts in front of a domain for its DNS-01 TXT record (RFC 8555 §8.4).
pub const ACME_CHALLENGE_LABEL: &str = "_acme-challenge";
/// TTL of the TXT answers: short, so a resolver does not keep a withdrawn value.
pub const TXT_TTL: u32 = 10;
/// TTL and minimum of the SOA, i.e. how long a "nothing here" answer may be cached: a
/// resolver that asked before the record was set must not keep that answer for long.
const NEGATIVE_TTL: u32 = 5;
/// The largest UDP payload offered to EDNS clients (as in `crate::dns`).
const MAX_UDP_PAYLOAD: u16 = 1232;
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 8;

/// Errors of the challenge DNS server. Messages are short; causes are in `source`.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    #[error("{0:?} is not a domain the challenge DNS server can serve")]
    BadZone(String),
    #[error(transparent)]
    Bind(#[from] crate::dns::serving::BindError),
    #[error("the per-client rate limit must be at least 1")]
    RateLimit,
}

/// The challenges roost is answering right now. Cheap to clone (an `Arc` inside), shared
/// by the ACME client (writer), the HTTP listener on port 80 and the DNS server (readers).
#[derive(Clone, Default)]
pub struct Challenges {
    inner: Arc<RwLock<Pending>>,
}

/// What is pending; every entry carries the id of the [`Answer`] that owns it.
#[derive(Default)]
struct Pending {
    next_id: u64,
    http01: HashMap<String, (u64, String)>,
    txt: HashMap<String, Vec<(u64, String)>>,
}

/// One published answer. Dropping it withdraws exactly this answer (another value for
/// the same TXT name stays).
#[must_use = "the answer is withdrawn as soon as this is dropped"]
pub struct Answer {
    challenges: Challenges,
    key: Key,
    id: u64,
}

enum Key {
    Http01(String),
    Txt(String),
}

/// The one form of a DNS name used as a key: lowercase, no trailing dot.
fn dns_key(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl Challenges {
    /// An empty set.
    pub fn new() -> Challenges {
        Challenges::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Pending> {
        // A panic while holding the lock cannot leave a map half-updated (every write is
        // one insert or remove), so a poisoned lock is still usable.
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Pending> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// HTTP-01: the key authorization for `/.well-known/acme-challenge/<token>`, if one
    /// is pending.
    pub fn http01(&self, token: &str) -> Option<String> {
        self.read().http01.get(token).map(|(_, v)| v.clone())
    }

    /// DNS-01: the TXT values for `fqdn` (e.g. "_acme-challenge.example.com"; case and a
    /// trailing dot do not matter).
    pub fn txt(&self, fqdn: &str) -> Vec<String> {
        self.read()
            .txt
            .get(&dns_key(fqdn))
            .map(|values| values.iter().map(|(_, v)| v.clone()).collect())
            .unwrap_or_default()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        let pending = self.read();
        pending.http01.is_empty() && pending.txt.is_empty()
    }

    /// Publishes the HTTP-01 answer for `token` until the returned [`Answer`] is dropped.
    pub fn answer_http01(&self, token: &str, key_authorization: &str) -> Answer {
        let mut pending = self.write();
        let id = pending.take_id();
        pending
            .http01
            .insert(token.to_owned(), (id, key_authorization.to_owned()));
        Answer {
            challenges: self.clone(),
            key: Key::Http01(token.to_owned()),
            id,
        }
    }

    /// Adds `value` to the TXT records of `fqdn` until the returned [`Answer`] is dropped.
    pub fn answer_txt(&self, fqdn: &str, value: &str) -> Answer {
        let name = dns_key(fqdn);
        let mut pending = self.write();
        let id = pending.take_id();
        pending
            .txt
            .entry(name.clone())
            .or_default()
            .push((id, value.to_owned()));
        Answer {
            challenges: self.clone(),
            key: Key::Txt(name),
            id,
        }
    }
}

impl Pending {
    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        let mut pending = self.challenges.write();
        match &self.key {
            Key::Http01(token) => {
                if pending
                    .http01
                    .get(token)
                    .is_some_and(|(id, _)| *id == self.id)
                {
                    pending.http01.remove(token);
                }
            }
            Key::Txt(name) => {
                if let Some(values) = pending.txt.get_mut(name) {
                    values.retain(|(id, _)| *id != self.id);
                    if values.is_empty() {
                        pending.txt.remove(name);
                    }
                }
            }
        }
    }
}

/// The zone the DNS server is authoritative for: `_acme-challenge.DOMAIN` and below.
#[derive(Debug, Clone)]
pub(crate) struct Zone {
    apex: LowerName,
    soa: Record,
}

/// One question, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Question<'a> {
    /// The name as asked (its case is echoed in answers, for resolvers that randomise it).
    pub(crate) name: &'a Name,
    pub(crate) qtype: RecordType,
    pub(crate) qclass: DNSClass,
}

/// What the server says to one query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub(crate) code: ResponseCode,
    pub(crate) authoritative: bool,
    pub(crate) answers: Vec<Record>,
    /// The zone's SOA, with negative answers (NODATA, NXDOMAIN).
    pub(crate) authority: Vec<Record>,
}

impl Reply {
    fn bare(code: ResponseCode) -> Reply {
        Reply {
            code,
            authoritative: false,
            answers: Vec::new(),
            authority: Vec::new(),
        }
    }
}

impl Zone {
    /// The zone `_acme-challenge.<domain>` for the operator's domain (e.g. `example.com`).
    pub(crate) fn for_domain(domain: &str) -> Result<Zone, ChallengeError> {
        let domain = dns_key(domain);
        let bad = || ChallengeError::BadZone(domain.clone());
        if domain.is_empty() || domain.contains('*') {
            return Err(bad());
        }
        let apex =
            Name::from_ascii(format!("{ACME_CHALLENGE_LABEL}.{domain}.")).map_err(|_| bad())?;
        let rname = Name::from_ascii(format!("hostmaster.{domain}.")).map_err(|_| bad())?;
        let soa = SOA::new(apex.clone(), rname, 1, 3600, 600, 86400, NEGATIVE_TTL);
        Ok(Zone {
            soa: Record::from_rdata(apex.clone(), NEGATIVE_TTL, RData::SOA(soa)),
            apex: LowerName::new(&apex),
        })
    }

    /// The answer policy, in order: opcodes other than QUERY get NOTIMP, EDNS versions
    /// above 0 get BADVERS, a message without exactly one question gets FORMERR; classes
    /// other than IN, ANY, zone transfers and names outside the zone get REFUSED. Inside
    /// the zone the answer is authoritative: the pending TXT values, the SOA at the apex,
    /// NODATA for other types or nothing pending, NXDOMAIN below the apex where nothing is
    /// pending; negative answers carry the SOA.
    pub(crate) fn answer(
        &self,
        op: OpCode,
        edns_version: Option<u8>,
        question: Option<Question<'_>>,
        challenges: &Challenges,
    ) -> Reply {
        if op != OpCode::Query {
            return Reply::bare(ResponseCode::NotImp);
        }
        if edns_version.is_some_and(|v| v > 0) {
            return Reply::bare(ResponseCode::BADVERS);
        }
        let Some(q) = question else {
            return Reply::bare(ResponseCode::FormErr);
        };
        let lower = LowerName::new(q.name);
        if q.qclass != DNSClass::IN
            || matches!(
                q.qtype,
                RecordType::ANY | RecordType::AXFR | RecordType::IXFR
            )
            || !self.apex.zone_of(&lower)
        {
            return Reply::bare(ResponseCode::Refused);
        }

        let values = challenges.txt(&Name::from(lower.clone()).to_ascii());
        let at_apex = lower == self.apex;
        let mut reply = Reply {
            code: ResponseCode::NoError,
            authoritative: true,
            answers: Vec::new(),
            authority: Vec::new(),
        };
        match q.qtype {
            RecordType::TXT if !values.is_empty() => {
                // One record per value: each ACME validation looks for its own value.
                reply.answers = values
                    .into_iter()
                    .map(|v| {
                        Record::from_rdata(q.name.clone(), TXT_TTL, RData::TXT(TXT::new(vec![v])))
                    })
                    .collect();
            }
            RecordType::SOA if at_apex => {
                let mut soa = self.soa.clone();
                soa.name = q.name.clone();
                reply.answers = vec![soa];
            }
            _ => {
                if !at_apex && values.is_empty() {
                    reply.code = ResponseCode::NXDomain;
                }
                reply.authority = vec![self.soa.clone()];
            }
        }
        reply
    }
}

/// The request handler given to hickory's `Server`.
struct Handler {
    zone: Zone,
    challenges: Challenges,
    /// Queries per client address: an ACME validator asks a handful of times per order;
    /// a flood from one address is answered REFUSED without any work.
    limiter: crate::dns::limit::ClientLimiter<std::net::IpAddr>,
}

/// Queries one client address may send per second, and the burst above it.
const CLIENT_QPS: u32 = 20;
const CLIENT_BURST: u32 = 100;

impl Handler {
    async fn handle<R: ResponseHandler>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            edns
        });
        let reply = if self.limiter.check(request.src().ip().to_canonical()) {
            let info = request.request_info().ok();
            let question = info.as_ref().map(|info| Question {
                name: info.query.original().name(),
                qtype: info.query.query_type(),
                qclass: info.query.query_class(),
            });
            self.zone.answer(
                request.metadata.op_code,
                request.edns.as_ref().map(|e| e.version()),
                question,
                &self.challenges,
            )
        } else {
            Reply::bare(ResponseCode::Refused)
        };

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = false;
        metadata.response_code = reply.code;
        let message = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            reply.answers.iter(),
            reply.authority.iter(),
            std::iter::empty(),
            std::iter::empty(),
        );
        match response.send_response(message).await {
            Ok(info) => info,
            Err(error) => {
                debug!(src = %request.src(), %error, "challenge DNS response not sent");
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// `RequestHandler` is an `async_trait`; this is the signature that macro generates,
/// written out so roost needs no `async-trait` dependency for one method.
impl RequestHandler for Handler {
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
        Box::pin(self.handle(request, response_handle))
    }
}

/// The authoritative server for `_acme-challenge.<zone>`: the operator delegates that name
/// to roost once (an NS record pointing at this host), and roost answers its TXT records
/// itself. `shutdown` stops it and waits; dropping it stops it too.
pub struct ChallengeDns {
    serving: crate::dns::serving::Serving,
}

impl ChallengeDns {
    /// Binds UDP and TCP on `listen` and serves `_acme-challenge.<zone>` from `challenges`
    /// on the current tokio runtime. `zone` is the operator's domain, e.g. `example.com`.
    pub async fn start(
        listen: SocketAddr,
        zone: String,
        challenges: Challenges,
    ) -> Result<ChallengeDns, ChallengeError> {
        let zone = Zone::for_domain(&zone)?;
        let apex = zone.apex.clone();
        let serving = crate::dns::serving::Serving::start(
            listen,
            Handler {
                zone,
                challenges,
                limiter: crate::dns::limit::ClientLimiter::new(CLIENT_QPS, CLIENT_BURST)
                    .ok_or(ChallengeError::RateLimit)?,
            },
            TCP_RESPONSE_BUFFER,
            "ACME challenge DNS",
        )
        .await?;
        tracing::info!(listen = %serving.local_addr(), zone = %apex, "ACME challenge DNS serving");
        Ok(ChallengeDns { serving })
    }

    /// The bound address (the chosen port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.serving.local_addr()
    }

    /// Stops serving and waits until both sockets are closed.
    pub async fn shutdown(self) {
        self.serving.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use hickory_proto::op::{Message, Query};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpStream, UdpSocket};

    use super::*;

    const APEX: &str = "_acme-challenge.example.com.";

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("test name")
    }

    fn zone() -> Zone {
        Zone::for_domain("example.com").expect("zone")
    }

    fn ask(zone: &Zone, c: &Challenges, qname: &str, qtype: RecordType) -> Reply {
        let qname = name(qname);
        let q = Question {
            name: &qname,
            qtype,
            qclass: DNSClass::IN,
        };
        zone.answer(OpCode::Query, Some(0), Some(q), c)
    }

    fn txt_values(records: &[Record]) -> Vec<String> {
        let mut values: Vec<String> = records
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(txt.to_string()),
                _ => None,
            })
            .collect();
        values.sort();
        values
    }

    fn is_soa(records: &[Record]) -> bool {
        records.len() == 1 && records[0].record_type() == RecordType::SOA
    }

    #[test]
    fn answers_are_withdrawn_by_their_own_guard_only() {
        let c = Challenges::new();
        let apex = c.answer_txt("_acme-challenge.Example.COM.", "one");
        let wildcard = c.answer_txt("_acme-challenge.example.com", "two");
        let http = c.answer_http01("tok", "tok.thumb");
        let mut both = c.txt("_ACME-challenge.example.com");
        both.sort();
        assert_eq!(both, ["one", "two"]);
        assert_eq!(c.http01("tok").as_deref(), Some("tok.thumb"));
        assert_eq!(c.http01("other"), None);

        drop(apex);
        assert_eq!(c.txt("_acme-challenge.example.com."), ["two"]);
        // A newer answer for the same token is not withdrawn by the older guard.
        let newer = c.answer_http01("tok", "tok.newer");
        drop(http);
        assert_eq!(c.http01("tok").as_deref(), Some("tok.newer"));
        drop(newer);
        drop(wildcard);
        assert!(c.is_empty());
        assert!(c.txt("_acme-challenge.example.com").is_empty());
    }

    #[test]
    fn zone_names_must_be_plain_domains() {
        assert!(Zone::for_domain("example.com.").is_ok());
        for bad in ["", ".", "*.example.com", "exa mple.com"] {
            assert!(Zone::for_domain(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn pending_txt_values_are_answered_authoritatively_with_a_short_ttl() {
        let (z, c) = (zone(), Challenges::new());
        let _a = c.answer_txt(APEX, "apex-value");
        let _b = c.answer_txt(APEX, "wildcard-value");
        // A resolver randomising the case (0x20) gets its own spelling back.
        let reply = ask(&z, &c, "_ACME-Challenge.Example.com.", RecordType::TXT);
        assert_eq!(reply.code, ResponseCode::NoError);
        assert!(reply.authoritative);
        assert_eq!(txt_values(&reply.answers), ["apex-value", "wildcard-value"]);
        for r in &reply.answers {
            assert_eq!(r.ttl, TXT_TTL);
            assert_eq!(r.name.to_ascii(), "_ACME-Challenge.Example.com.");
        }
        assert!(reply.authority.is_empty());
    }

    #[test]
    fn nothing_pending_is_nodata_or_nxdomain_with_the_soa() {
        let (z, c) = (zone(), Challenges::new());
        for qtype in [RecordType::TXT, RecordType::A, RecordType::NS] {
            let reply = ask(&z, &c, APEX, qtype);
            assert_eq!(reply.code, ResponseCode::NoError, "{qtype}");
            assert!(reply.authoritative && reply.answers.is_empty());
            assert!(is_soa(&reply.authority), "{reply:?}");
            assert!(reply.authority[0].ttl <= NEGATIVE_TTL);
        }
        let soa = ask(&z, &c, APEX, RecordType::SOA);
        assert!(is_soa(&soa.answers), "{soa:?}");

        let below = ask(&z, &c, "x._acme-challenge.example.com.", RecordType::TXT);
        assert_eq!(below.code, ResponseCode::NXDomain);
        assert!(below.authoritative && is_soa(&below.authority));

        // A pending value at the apex is no answer to another type.
        let _a = c.answer_txt(APEX, "v");
        let a = ask(&z, &c, APEX, RecordType::A);
        assert_eq!(a.code, ResponseCode::NoError);
        assert!(a.answers.is_empty() && is_soa(&a.authority));
    }

    #[test]
    fn names_outside_the_zone_are_refused_even_when_pending() {
        let (z, c) = (zone(), Challenges::new());
        let _other = c.answer_txt("_acme-challenge.other.test", "v");
        let _sub = c.answer_txt("_acme-challenge.sub.example.com", "v");
        for qname in [
            "example.com.",
            "www.example.com.",
            "_acme-challenge.other.test.",
            "_acme-challenge.sub.example.com.",
            "_acme-challenge.example.com.evil.test.",
            ".",
        ] {
            let reply = ask(&z, &c, qname, RecordType::TXT);
            assert_eq!(reply, Reply::bare(ResponseCode::Refused), "{qname}");
        }
    }

    #[test]
    fn any_transfers_other_classes_and_odd_messages_are_refused() {
        let (z, c) = (zone(), Challenges::new());
        let _a = c.answer_txt(APEX, "v");
        for qtype in [RecordType::ANY, RecordType::AXFR, RecordType::IXFR] {
            assert_eq!(
                ask(&z, &c, APEX, qtype),
                Reply::bare(ResponseCode::Refused),
                "{qtype}"
            );
        }
        let apex = name(APEX);
        let q = |qclass| Question {
            name: &apex,
            qtype: RecordType::TXT,
            qclass,
        };
        let chaos = z.answer(OpCode::Query, None, Some(q(DNSClass::CH)), &c);
        assert_eq!(chaos, Reply::bare(ResponseCode::Refused));
        let update = z.answer(OpCode::Update, None, Some(q(DNSClass::IN)), &c);
        assert_eq!(update, Reply::bare(ResponseCode::NotImp));
        let edns1 = z.answer(OpCode::Query, Some(1), Some(q(DNSClass::IN)), &c);
        assert_eq!(edns1, Reply::bare(ResponseCode::BADVERS));
        let none = z.answer(OpCode::Query, None, None, &c);
        assert_eq!(none, Reply::bare(ResponseCode::FormErr));
    }

    /// How long a test waits for any one answer.
    const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

    fn query(qname: &str, qtype: RecordType) -> Message {
        let mut msg = Message::query();
        msg.add_query(Query::query(name(qname), qtype));
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        msg.set_edns(edns);
        msg
    }

    async fn ask_udp(server: SocketAddr, msg: &Message) -> Message {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind client");
        sock.send_to(&msg.to_vec().expect("encode"), server)
            .await
            .expect("send query");
        let wait = async {
            let mut buf = vec![0u8; 65535];
            loop {
                let (n, peer) = sock.recv_from(&mut buf).await.expect("recv answer");
                let answer = Message::from_vec(&buf[..n]).expect("decode answer");
                if peer == server && answer.metadata.id == msg.metadata.id {
                    return answer;
                }
            }
        };
        tokio::time::timeout(ANSWER_DEADLINE, wait)
            .await
            .expect("no UDP answer before the deadline")
    }

    async fn ask_tcp(server: SocketAddr, msg: &Message) -> Message {
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

    #[tokio::test]
    async fn serves_real_queries_over_udp_and_tcp() {
        let c = Challenges::new();
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let dns = ChallengeDns::start(listen, "example.com".into(), c.clone())
            .await
            .expect("start");
        let addr = dns.local_addr();
        let a = c.answer_txt(APEX, "apex-value");
        let b = c.answer_txt(APEX, "wildcard-value");

        let udp = ask_udp(addr, &query(APEX, RecordType::TXT)).await;
        assert_eq!(udp.metadata.response_code, ResponseCode::NoError);
        assert!(udp.metadata.authoritative, "AA must be set: {udp:?}");
        assert!(!udp.metadata.recursion_available);
        assert_eq!(txt_values(&udp.answers), ["apex-value", "wildcard-value"]);

        let tcp = ask_tcp(addr, &query(APEX, RecordType::TXT)).await;
        assert_eq!(tcp.metadata.response_code, ResponseCode::NoError);
        assert_eq!(txt_values(&tcp.answers), ["apex-value", "wildcard-value"]);

        let outside = ask_udp(addr, &query("example.com.", RecordType::TXT)).await;
        assert_eq!(outside.metadata.response_code, ResponseCode::Refused);
        assert!(!outside.metadata.authoritative && outside.answers.is_empty());
        let any = ask_udp(addr, &query(APEX, RecordType::ANY)).await;
        assert_eq!(any.metadata.response_code, ResponseCode::Refused);

        drop((a, b));
        let gone = ask_udp(addr, &query(APEX, RecordType::TXT)).await;
        assert_eq!(gone.metadata.response_code, ResponseCode::NoError);
        assert!(gone.answers.is_empty());
        assert!(is_soa(&gone.authorities), "{gone:?}");

        dns.shutdown().await;
        // The sockets are closed: the port can be bound again.
        UdpSocket::bind(addr).await.expect("UDP port released");
    }

    #[tokio::test]
    async fn a_flood_from_one_address_is_refused_without_work() {
        let c = Challenges::new();
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let dns = ChallengeDns::start(listen, "example.com".into(), c.clone())
            .await
            .expect("start");
        let addr = dns.local_addr();
        let _a = c.answer_txt(APEX, "value");
        // 400 queries from one socket as fast as it sends, then every answer collected.
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let started = std::time::Instant::now();
        const SENT: u16 = 400;
        for id in 0..SENT {
            let mut q = query(APEX, RecordType::TXT);
            q.metadata.id = id;
            sock.send_to(&q.to_vec().expect("encode"), addr)
                .await
                .expect("send");
        }
        let (mut answered, mut refused) = (0u32, 0u32);
        let mut buf = vec![0u8; 4096];
        while answered + refused < u32::from(SENT) {
            let got = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await;
            let Ok(Ok((n, _))) = got else { break };
            let m = Message::from_vec(&buf[..n]).expect("decode");
            match m.metadata.response_code {
                ResponseCode::NoError if !m.answers.is_empty() => answered += 1,
                ResponseCode::Refused if m.answers.is_empty() => refused += 1,
                other => panic!("unexpected answer {other:?}"),
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        // At most the burst plus what refilled meanwhile was answered; the rest refused.
        let allowed = f64::from(CLIENT_BURST) + f64::from(CLIENT_QPS) * elapsed + 1.0;
        assert!(
            f64::from(answered) <= allowed,
            "{answered} answered in {elapsed:.2}s"
        );
        assert!(
            refused > 0,
            "nothing refused ({answered} answered in {elapsed:.2}s)"
        );
        dns.shutdown().await;
    }
}
