//! The ACME renewal task: obtains `DOMAIN`'s certificate (with `*.DOMAIN` when roost
//! answers DNS-01 itself) when it is missing, covers other names, or has a third of its
//! life left; stores it and swaps it in. Failures are retried with exponential backoff
//! (1 minute doubling to 6 hours), so a misconfigured host does not hammer the ACME
//! server (Let's Encrypt's rate limits). One wildcard certificate serves every site:
//! never one certificate per user.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::acme::{Acme, AcmeSettings, Method};
use super::certs::{self, CertStore};
use super::challenge::{ChallengeDns, Challenges};
use super::manager::{cert_dir, now, DOMAIN_SLOT};
use crate::config::Config;
use crate::tasks::Tasks;

/// How often certificates are checked when nothing failed.
const CHECK_EVERY: Duration = Duration::from_secs(3600);
/// First retry after a failure, doubled each time up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// One certificate roost wants: its slot, its names and how they are validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub slot: String,
    pub names: Vec<String>,
    pub method: Method,
}

/// What `DOMAIN` needs: the wildcard too when DNS-01 is answered here.
pub fn domain_want(domain: &str, dns01: bool) -> Want {
    let domain = domain.to_ascii_lowercase();
    if dns01 {
        Want {
            slot: DOMAIN_SLOT.into(),
            names: vec![domain.clone(), format!("*.{domain}")],
            method: Method::Dns01,
        }
    } else {
        Want {
            slot: DOMAIN_SLOT.into(),
            names: vec![domain],
            method: Method::Http01,
        }
    }
}

/// The slot of the dashboard's certificate when `DOMAIN`'s does not cover it.
pub const CONSOLE_SLOT: &str = "console";

/// What `DOMAIN` and the dashboard's host (`console`) need: the dashboard rides on
/// `DOMAIN`'s certificate (the wildcard covers `console.DOMAIN`; without the wildcard it is
/// a second name, by HTTP-01 like `DOMAIN`), or, when the wildcard cannot cover it, gets
/// its own by HTTP-01.
pub fn domain_wants(domain: &str, console: &str, dns01: bool) -> Vec<Want> {
    let mut d = domain_want(domain, dns01);
    let console = console.trim_end_matches('.').to_ascii_lowercase();
    if d.names.iter().any(|n| super::names::covers(n, &console)) {
        return vec![d];
    }
    if !dns01 {
        d.names.push(console);
        return vec![d];
    }
    vec![
        d,
        Want {
            slot: CONSOLE_SLOT.into(),
            names: vec![console],
            method: Method::Http01,
        },
    ]
}

/// True when `want` needs a new certificate, given what its slot holds now.
pub fn needs_order(want: &Want, held: Option<&certs::CertInfo>, now: i64) -> bool {
    match held {
        None => true,
        Some(info) => {
            let mut have = info.names.clone();
            let mut need = want.names.clone();
            have.sort();
            need.sort();
            have != need || info.renewal_due(now)
        }
    }
}

/// The wait after `failures` failures in a row.
pub fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// Asks the renewal task to order every wanted certificate again now, due or not (an
/// operator's forced renewal). Cheap to clone.
#[derive(Clone, Default)]
pub struct RenewNow {
    flag: Arc<std::sync::atomic::AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
}

impl RenewNow {
    pub fn request(&self) {
        self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn take(&self) -> bool {
        self.flag.swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

/// What to hold: `DOMAIN`'s certificate and one per verified custom domain (HTTP-01).
pub fn wants(domain: &[Want], custom: &[String]) -> Vec<Want> {
    let mut all = domain.to_vec();
    all.extend(custom.iter().map(|n| Want {
        slot: n.clone(),
        names: vec![n.clone()],
        method: Method::Http01,
    }));
    all
}

/// Starts the challenge DNS server (when configured) and the renewal task, which follows
/// `custom` (the verified custom domains) and `renew` (forced renewals).
pub async fn start(
    cfg: Arc<Config>,
    store: CertStore,
    challenges: Challenges,
    mut custom: watch::Receiver<Vec<String>>,
    renew: RenewNow,
    tasks: &Tasks,
) {
    // Where DOMAIN's `_acme-challenge` points by CNAME, if it does.
    let dns_alias = match cfg.acme.dns_alias.as_str() {
        "" => None,
        alias => Some(alias.to_ascii_lowercase()),
    };
    let dns = match cfg.acme.dns_listen {
        Some(listen) => {
            // The zone delegated to roost: DOMAIN's `_acme-challenge`, or the alias's.
            let zone = dns_alias.clone().unwrap_or_else(|| cfg.domain.clone());
            match ChallengeDns::start(listen, zone, challenges.clone()).await {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::error!(%listen, error = %crate::error_chain(&e), "cannot serve ACME DNS-01 answers; no wildcard certificate");
                    None
                }
            }
        }
        None => None,
    };
    let domain = domain_wants(&cfg.domain, &cfg.console_host(), dns.is_some());
    let settings = AcmeSettings {
        directory: cfg.acme.directory.clone(),
        email: cfg.acme.email.clone(),
        ca_roots: cfg.acme.ca_roots.clone(),
        dir: cfg.state_dir.join("acme"),
        dns_alias,
    };
    let dir = cert_dir(&cfg.state_dir);
    tasks.spawn("acme", move |mut stop| async move {
        // Held for as long as the task runs.
        let _dns = dns;
        let mut acme: Option<Acme> = None;
        // Per slot: failures in a row and when to try again.
        let mut failing: HashMap<String, (u32, Instant)> = HashMap::new();
        loop {
            let all = wants(&domain, &custom.borrow_and_update());
            let forced = renew.take();
            drop_unwanted(&store, &dir, &all);
            failing.retain(|slot, _| all.iter().any(|w| &w.slot == slot));
            for want in &all {
                if !forced && failing.get(&want.slot).is_some_and(|(_, at)| Instant::now() < *at) {
                    continue;
                }
                match renew_once(&settings, &challenges, &mut acme, want, &store, &dir, forced).await {
                    Ok(()) => {
                        failing.remove(&want.slot);
                    }
                    Err(e) => {
                        let n = failing.get(&want.slot).map_or(1, |(n, _)| n + 1);
                        let wait = backoff(n);
                        tracing::error!(names = ?want.names, error = %crate::error_chain(&e), retry_in = ?wait, "certificate not obtained");
                        failing.insert(want.slot.clone(), (n, Instant::now() + wait));
                    }
                }
            }
            let next = failing
                .values()
                .map(|(_, at)| at.saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or(CHECK_EVERY)
                .min(CHECK_EVERY);
            tokio::select! {
                _ = stop.requested() => return,
                _ = tokio::time::sleep(next) => {}
                _ = renew.wake.notified() => {}
                r = custom.changed() => if r.is_err() {
                    // The domains service is gone (shutdown): keep renewing what we have.
                    tokio::select! {
                        _ = stop.requested() => return,
                        _ = tokio::time::sleep(next) => {}
                    }
                },
            }
        }
    });
}

/// Forgets the certificates of custom domains no longer wanted (removed or suspended).
fn drop_unwanted(store: &CertStore, dir: &std::path::Path, all: &[Want]) {
    for info in store.infos() {
        let ours = info.slot != super::manager::FILE_SLOT
            && info.slot != DOMAIN_SLOT
            && info.slot != CONSOLE_SLOT;
        if ours && !all.iter().any(|w| w.slot == info.slot) {
            tracing::info!(slot = %info.slot, "certificate no longer served");
            store.remove(&info.slot);
            certs::delete(dir, &info.slot);
        }
    }
}

/// Why one renewal failed.
#[derive(Debug, thiserror::Error)]
enum RenewError {
    #[error(transparent)]
    Acme(#[from] super::acme::AcmeError),
    #[error("cannot install the certificate")]
    Install(#[from] super::TlsError),
}

/// Obtains and installs `want` if it needs it.
async fn renew_once(
    settings: &AcmeSettings,
    challenges: &Challenges,
    acme: &mut Option<Acme>,
    want: &Want,
    store: &CertStore,
    dir: &std::path::Path,
    forced: bool,
) -> Result<(), RenewError> {
    if !forced && !needs_order(want, store.info(&want.slot).as_ref(), now()) {
        return Ok(());
    }
    let client = match acme {
        Some(a) => a,
        None => acme.insert(Acme::load_or_register(settings.clone(), challenges.clone()).await?),
    };
    tracing::info!(names = ?want.names, method = %want.method, "ordering a certificate");
    let issued = client.obtain(&want.names, want.method).await?;
    let loaded = certs::save(dir, &want.slot, &issued.chain_pem, &issued.key_pem)?;
    tracing::info!(names = ?loaded.info.names, issuer = %loaded.info.issuer, not_after = loaded.info.not_after, "certificate installed");
    store.install(loaded);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_gets_a_wildcard_only_with_dns01() {
        let w = domain_want("Example.com", true);
        assert_eq!(w.names, vec!["example.com", "*.example.com"]);
        assert_eq!(w.method, Method::Dns01);
        let w = domain_want("example.com", false);
        assert_eq!(w.names, vec!["example.com"]);
        assert_eq!(w.method, Method::Http01);
    }

    #[test]
    fn the_dashboard_host_is_always_covered() {
        // The wildcard covers console.DOMAIN.
        let w = domain_wants("example.com", "console.example.com", true);
        assert_eq!(w.len(), 1);
        // Without it, console.DOMAIN is a second name of DOMAIN's certificate.
        let w = domain_wants("example.com", "Console.Example.com.", false);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].names, vec!["example.com", "console.example.com"]);
        // A dashboard elsewhere gets its own certificate by HTTP-01.
        let w = domain_wants("example.com", "panel.example.net", true);
        assert_eq!(w.len(), 2);
        assert_eq!(
            (w[1].slot.as_str(), w[1].names.clone(), w[1].method),
            (
                CONSOLE_SLOT,
                vec!["panel.example.net".to_string()],
                Method::Http01
            )
        );
    }

    #[test]
    fn orders_when_missing_different_or_due() {
        let want = domain_want("example.com", true);
        let held = certs::CertInfo {
            slot: DOMAIN_SLOT.into(),
            names: vec!["*.example.com".into(), "example.com".into()],
            issuer: String::new(),
            not_before: 0,
            not_after: 90,
        };
        assert!(needs_order(&want, None, 10));
        assert!(!needs_order(&want, Some(&held), 10));
        assert!(needs_order(&want, Some(&held), 61));
        let only_apex = certs::CertInfo {
            names: vec!["example.com".into()],
            ..held
        };
        assert!(needs_order(&want, Some(&only_apex), 10));
    }

    #[test]
    fn custom_domains_get_their_own_http01_certificates() {
        let all = wants(
            &[domain_want("example.com", true)],
            &["shop.example.org".to_string()],
        );
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].slot, "shop.example.org");
        assert_eq!(all[1].names, vec!["shop.example.org"]);
        assert_eq!(all[1].method, Method::Http01);
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(2), Duration::from_secs(120));
        assert_eq!(backoff(5), Duration::from_secs(960));
        assert_eq!(backoff(100), MAX_BACKOFF);
    }
}
