//! The answer policy: who gets an answer, and what a lookup's outcome becomes on the wire.
//!
//! In order: a source outside the subnet gets REFUSED; a source over its rate gets
//! REFUSED; then opcodes other than QUERY get NOTIMP, EDNS versions above 0 get BADVERS,
//! a message without exactly one question gets FORMERR, classes other than IN and zone
//! transfers get NOTIMP. Only what passes all of that is looked up (cache first, then
//! the upstreams). Nothing refused is ever looked up.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as Hickory, NetError, NoRecords};
use hickory_resolver::Resolver;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::debug;

use super::limit::ClientLimiter;
use crate::addr::Ipv4Net;

/// The largest UDP payload offered to EDNS clients (the DNS flag day 2020 value: no IP
/// fragmentation on any usual path).
const MAX_UDP_PAYLOAD: u16 = 1232;

/// What happened to queries, for `DnsServer::stats`.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) resolved: AtomicU64,
    pub(super) upstream_failures: AtomicU64,
    pub(super) refused_outside: AtomicU64,
    pub(super) refused_over_rate: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The request handler given to hickory's `Server`.
pub(super) struct Forwarder {
    allow: Ipv4Net,
    limiter: ClientLimiter,
    resolver: Resolver<TokioRuntimeProvider>,
    counters: Arc<Counters>,
}

impl Forwarder {
    pub(super) fn new(
        allow: Ipv4Net,
        limiter: ClientLimiter,
        resolver: Resolver<TokioRuntimeProvider>,
        counters: Arc<Counters>,
    ) -> Self {
        Forwarder {
            allow,
            limiter,
            resolver,
            counters,
        }
    }

    /// The IPv4 source if it is inside the subnet (an IPv4-mapped IPv6 source counts as
    /// IPv4, for a dual-stack socket).
    fn admitted(&self, src: IpAddr) -> Option<Ipv4Addr> {
        let v4 = match src {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(v6) => v6.to_ipv4_mapped()?,
        };
        self.allow.contains(v4).then_some(v4)
    }

    async fn answer<R: ResponseHandler>(&self, request: &Request, response: R) -> ResponseInfo {
        let src = request.src();
        let Some(client) = self.admitted(src.ip()) else {
            bump(&self.counters.refused_outside);
            debug!(%src, "DNS query refused: source outside the guest subnet");
            return reply(request, response, None, ResponseCode::Refused, &[], &[]).await;
        };
        if !self.limiter.check(client) {
            bump(&self.counters.refused_over_rate);
            debug!(%src, "DNS query refused: over the client's rate");
            return reply(request, response, None, ResponseCode::Refused, &[], &[]).await;
        }

        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            edns.set_version(0);
            edns
        });
        let edns = edns.as_ref();
        let refuse = |code| reply(request, response.clone(), edns, code, &[], &[]);
        if request.metadata.op_code != OpCode::Query {
            return refuse(ResponseCode::NotImp).await;
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return refuse(ResponseCode::BADVERS).await;
        }
        let Ok(info) = request.request_info() else {
            return refuse(ResponseCode::FormErr).await;
        };
        let (qname, qtype) = (info.query.name(), info.query.query_type());
        if info.query.query_class() != DNSClass::IN
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            return refuse(ResponseCode::NotImp).await;
        }

        let mut name = Name::from(qname.clone());
        name.set_fqdn(true);
        match self.resolver.lookup(name, qtype).await {
            Ok(lookup) => {
                bump(&self.counters.resolved);
                let answers = lookup.answers();
                reply(request, response, edns, ResponseCode::NoError, answers, &[]).await
            }
            // NXDOMAIN and NODATA pass through, with the zone's SOA so the guest can cache
            // the negative answer too.
            Err(NetError::Dns(Hickory::NoRecordsFound(NoRecords {
                response_code: code @ (ResponseCode::NXDomain | ResponseCode::NoError),
                authorities,
                ..
            }))) => {
                bump(&self.counters.resolved);
                let soa: Vec<Record> = authorities
                    .iter()
                    .flat_map(|records| records.iter())
                    .filter(|r| r.record_type() == RecordType::SOA)
                    .cloned()
                    .collect();
                reply(request, response, edns, code, &[], &soa).await
            }
            Err(error) => {
                bump(&self.counters.upstream_failures);
                debug!(%src, %qname, %qtype, %error, "DNS lookup failed upstream");
                refuse(ResponseCode::ServFail).await
            }
        }
    }
}

/// Sends one response: the request's question, `code`, recursion available, not
/// authoritative.
async fn reply<R: ResponseHandler>(
    request: &Request,
    mut response: R,
    edns: Option<&Edns>,
    code: ResponseCode,
    answers: &[Record],
    authorities: &[Record],
) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.recursion_available = true;
    metadata.response_code = code;
    let message = MessageResponseBuilder::new(&request.queries, edns).build(
        metadata,
        answers.iter(),
        authorities.iter(),
        std::iter::empty(),
        std::iter::empty(),
    );
    match response.send_response(message).await {
        Ok(info) => info,
        Err(error) => {
            debug!(src = %request.src(), %error, "DNS response not sent");
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}

/// `RequestHandler` is an `async_trait`; this is the signature that macro generates,
/// written out so roost needs no `async-trait` dependency for one method.
impl RequestHandler for Forwarder {
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
        Box::pin(self.answer(request, response_handle))
    }
}
