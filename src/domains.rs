//! Users' own domains: claims, DNS verification, periodic re-checks, and what follows
//! from a verified domain (its route to the owner's site and its certificate).
//!
//! A claim stores the normalised name with a random token; the owner publishes the token
//! as a TXT record at `_roost-challenge.<name>` and points the name at roost. Verification
//! asks DNS directly (no cache, so a record just created or just removed is seen at once);
//! only then is the name routed and its certificate ordered. Every verified or suspended
//! domain is checked again every `[domains] recheck_secs`: one whose record is gone is
//! suspended (no longer routed), so a domain that lapses and is bought by someone else
//! cannot keep pointing at the old owner's site, and the new owner can claim it after the
//! old claim is removed. `DOMAIN` and names below it can never be claimed: they are the
//! service's own.
//!
//! Owns the `domains` rows' meaning (the store keeps them) and the custom-domain part of
//! the route table ([`Routes::set_domains`]); publishes the verified names for the ACME
//! task. Knows nothing of HTTP requests or QEMU.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::Resolver;
use tokio::sync::watch;

use crate::config::Config;
use crate::proxy::Routes;
use crate::store::{Domain, DomainState, HostingId, Store, StoreError, UserId};
use crate::tls::names;

/// The label of the TXT record that proves control of a domain.
pub const CHALLENGE_LABEL: &str = "_roost-challenge";

/// Why a domain operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// Not a host name, or one of the service's own names.
    #[error("{0}")]
    Invalid(String),
    /// Someone (maybe the caller) already holds the name.
    #[error("the domain {0} is already claimed")]
    Taken(String),
    #[error("at most {0} domains per hosting")]
    TooMany(usize),
    /// The caller's hosting holds no such domain.
    #[error("no such domain")]
    NotFound,
    /// The TXT record is missing or wrong; the message says what was found.
    #[error("{0}")]
    NotVerified(String),
    /// DNS could not be asked (timeouts, SERVFAIL): try again later.
    #[error("DNS lookup failed: {0}")]
    Lookup(String),
    #[error("store")]
    Store(#[from] StoreError),
}

/// What the owner must publish for a claimed domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instructions {
    /// `_roost-challenge.<name>`
    pub txt_name: String,
    pub txt_value: String,
    /// Where `<name>` must point: a CNAME to `DOMAIN` (or the same A record).
    pub target: String,
}

/// The record the owner publishes for `d`.
pub fn instructions(d: &Domain, service_domain: &str) -> Instructions {
    Instructions {
        txt_name: format!("{CHALLENGE_LABEL}.{}", d.name),
        txt_value: d.token.clone(),
        target: service_domain.to_owned(),
    }
}

/// Checks and normalises a name a user wants to claim.
pub fn claimable(input: &str, service_domain: &str) -> Result<String, DomainError> {
    let name = names::normalize(input).map_err(|e| DomainError::Invalid(e.to_string()))?;
    let own = service_domain.trim_end_matches('.').to_ascii_lowercase();
    if names::is_within(&name, &own) {
        return Err(DomainError::Invalid(format!(
            "{name} belongs to this service ({own} and its subdomains cannot be claimed)"
        )));
    }
    Ok(name)
}

/// Asks DNS for TXT records, bypassing every cache.
#[derive(Clone)]
pub struct TxtLookup {
    resolver: Arc<Resolver<TokioRuntimeProvider>>,
}

impl TxtLookup {
    /// A resolver asking `servers` (UDP, then TCP), with no cache of answers or of
    /// negative answers.
    pub fn new(servers: &[SocketAddr]) -> Result<TxtLookup, DomainError> {
        if servers.is_empty() {
            return Err(DomainError::Lookup("no DNS server to ask".into()));
        }
        let ns = servers
            .iter()
            .map(|s| {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                NameServerConfig::new(s.ip(), true, vec![udp, tcp])
            })
            .collect();
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(5);
        opts.attempts = 1;
        opts.cache_size = 0;
        opts.positive_max_ttl = Some(Duration::ZERO);
        opts.negative_max_ttl = Some(Duration::ZERO);
        opts.use_hosts_file = ResolveHosts::Never;
        let config = ResolverConfig::from_parts(None, vec![], ns);
        let resolver = Resolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| DomainError::Lookup(e.to_string()))?;
        Ok(TxtLookup {
            resolver: Arc::new(resolver),
        })
    }

    /// The TXT strings at `name` (each record's parts joined); empty when there are none.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, DomainError> {
        match self.resolver.txt_lookup(format!("{name}.")).await {
            Ok(l) => Ok(l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    hickory_proto::rr::RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|p| String::from_utf8_lossy(p).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
            Err(e) => Err(DomainError::Lookup(e.to_string())),
        }
    }
}

/// The custom-domain service; cheap to clone.
#[derive(Clone)]
pub struct Domains {
    store: Store,
    routes: Routes,
    cfg: Arc<Config>,
    lookup: Option<TxtLookup>,
    /// The verified names, for the ACME task.
    verified: watch::Sender<Vec<String>>,
}

impl Domains {
    /// The service over `store`, publishing routes into `routes`. Without a usable DNS
    /// server, claims still work and verification answers why it cannot run.
    pub fn new(cfg: Arc<Config>, store: Store, routes: Routes) -> Domains {
        let servers = if cfg.domains.resolvers.is_empty() {
            crate::dns::host_upstreams(std::net::Ipv4Addr::UNSPECIFIED.into()).unwrap_or_default()
        } else {
            cfg.domains.resolvers.clone()
        };
        let lookup = match TxtLookup::new(&servers) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "custom domains cannot be verified");
                None
            }
        };
        let (verified, _) = watch::channel(Vec::new());
        Domains {
            store,
            routes,
            cfg,
            lookup,
            verified,
        }
    }

    /// The verified names as they change (for the ACME task).
    pub fn verified_names(&self) -> watch::Receiver<Vec<String>> {
        self.verified.subscribe()
    }

    /// Claims `input` for `hosting`; nothing is routed until it is verified.
    pub fn claim(
        &self,
        user: UserId,
        hosting: HostingId,
        input: &str,
        actor: &str,
    ) -> Result<Domain, DomainError> {
        let name = claimable(input, &self.cfg.domain)?;
        let d = Domain {
            name: name.clone(),
            hosting,
            user,
            token: new_token(),
            state: DomainState::Pending,
            reason: None,
            created_at: time::OffsetDateTime::now_utc(),
            verified_at: None,
        };
        match self
            .store
            .add_domain(&d, self.cfg.domains.max_per_hosting, actor)
        {
            Ok(()) => {}
            Err(StoreError::DomainTaken(n)) => return Err(DomainError::Taken(n)),
            Err(StoreError::TooManyDomains(n)) => return Err(DomainError::TooMany(n)),
            Err(e) => return Err(e.into()),
        }
        Ok(d)
    }

    /// The domains of `hosting`.
    pub fn of(&self, hosting: HostingId) -> Result<Vec<Domain>, DomainError> {
        Ok(self.store.domains_of(hosting)?)
    }

    fn owned(&self, hosting: HostingId, input: &str) -> Result<Domain, DomainError> {
        let name = names::normalize(input).map_err(|_| DomainError::NotFound)?;
        match self.store.domain(&name)? {
            Some(d) if d.hosting == hosting => Ok(d),
            _ => Err(DomainError::NotFound),
        }
    }

    /// Looks for the TXT record now. Found: the domain is verified, routed, and its
    /// certificate ordered. Not found: it stays unrouted and the error says what DNS had.
    pub async fn verify(
        &self,
        hosting: HostingId,
        input: &str,
        actor: &str,
    ) -> Result<Domain, DomainError> {
        let mut d = self.owned(hosting, input)?;
        match self.check(&d).await {
            Ok(()) => {
                d.state = DomainState::Verified;
                d.reason = None;
                d.verified_at = Some(time::OffsetDateTime::now_utc());
                self.write(&d, actor)?;
                self.publish()?;
                Ok(d)
            }
            Err(DomainError::NotVerified(why)) => {
                d.reason = Some(why.clone());
                if d.state == DomainState::Verified {
                    d.state = DomainState::Suspended;
                }
                self.write(&d, actor)?;
                self.publish()?;
                Err(DomainError::NotVerified(why))
            }
            Err(e) => Err(e),
        }
    }

    fn write(&self, d: &Domain, actor: &str) -> Result<(), DomainError> {
        match self.store.update_domain(d, actor) {
            Ok(()) => Ok(()),
            Err(StoreError::NoSuchDomain) => Err(DomainError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// Ok when `_roost-challenge.<name>` holds the domain's token.
    async fn check(&self, d: &Domain) -> Result<(), DomainError> {
        let Some(lookup) = &self.lookup else {
            return Err(DomainError::Lookup(
                "no DNS server is configured on this host".into(),
            ));
        };
        let at = format!("{CHALLENGE_LABEL}.{}", d.name);
        let found = lookup.txt(&at).await?;
        if found.iter().any(|v| v.trim() == d.token) {
            Ok(())
        } else if found.is_empty() {
            Err(DomainError::NotVerified(format!(
                "no TXT record at {at}; publish {at} TXT \"{}\" and try again",
                d.token
            )))
        } else {
            Err(DomainError::NotVerified(format!(
                "the TXT record at {at} does not hold the token (found {found:?}); publish {at} TXT \"{}\"",
                d.token
            )))
        }
    }

    /// Releases a domain: unrouted at once, its certificate no longer renewed.
    pub fn remove(&self, hosting: HostingId, input: &str, actor: &str) -> Result<(), DomainError> {
        let d = self.owned(hosting, input)?;
        match self.store.remove_domain(&d.name, hosting, actor) {
            Ok(()) => {}
            Err(StoreError::NoSuchDomain) => return Err(DomainError::NotFound),
            Err(e) => return Err(e.into()),
        }
        self.publish()
    }

    /// Puts the verified domains into the route table and tells the ACME task.
    pub fn publish(&self) -> Result<(), DomainError> {
        let hostings: HashMap<HostingId, String> = self
            .store
            .hostings()?
            .into_iter()
            .map(|h| (h.id, h.slug))
            .collect();
        let mut map = HashMap::new();
        for d in self.store.domains()? {
            if d.state == DomainState::Verified {
                if let Some(slug) = hostings.get(&d.hosting) {
                    map.insert(d.name, slug.clone());
                }
            }
        }
        let mut names: Vec<String> = map.keys().cloned().collect();
        names.sort();
        self.routes.set_domains(map);
        self.verified.send_if_modified(|old| {
            let changed = *old != names;
            *old = names;
            changed
        });
        Ok(())
    }

    /// Checks every verified or suspended domain again: suspends those whose record is
    /// gone, restores those whose record is back. A failed lookup changes nothing.
    pub async fn recheck(&self) {
        let Ok(all) = self.store.domains() else {
            return;
        };
        for mut d in all {
            if d.state == DomainState::Pending {
                continue;
            }
            let before = d.state;
            match self.check(&d).await {
                Ok(()) => {
                    d.state = DomainState::Verified;
                    d.reason = None;
                }
                Err(DomainError::NotVerified(why)) => {
                    d.state = DomainState::Suspended;
                    d.reason = Some(why);
                }
                Err(e) => {
                    tracing::info!(domain = %d.name, error = %e, "domain re-check postponed");
                    continue;
                }
            }
            if d.state != before {
                tracing::info!(domain = %d.name, state = d.state.as_str(), "domain re-checked");
                if let Err(e) = self.write(&d, "system") {
                    tracing::warn!(domain = %d.name, error = %e, "domain state not saved");
                }
            }
        }
        if let Err(e) = self.publish() {
            tracing::warn!(error = %e, "custom domain routes not published");
        }
    }
}

/// 128 random bits, hex.
fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    format!("roost-{}", hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_names_cannot_be_claimed() {
        for own in ["example.com", "WWW.Example.com.", "alice.example.com"] {
            let e = claimable(own, "example.com").expect_err(own).to_string();
            assert!(e.contains("belongs to this service"), "{own}: {e}");
        }
        assert_eq!(
            claimable("Shop.Example.ORG.", "example.com")
                .ok()
                .as_deref(),
            Some("shop.example.org")
        );
        assert_eq!(
            claimable("badexample.com", "example.com").ok().as_deref(),
            Some("badexample.com")
        );
        assert!(claimable("localhost", "example.com").is_err());
        assert!(claimable("10.0.0.1", "example.com").is_err());
    }

    #[test]
    fn tokens_are_unguessable_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), "roost-".len() + 32);
    }
}
