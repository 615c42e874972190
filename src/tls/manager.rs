//! Keeping the served certificates current: the daemon's side of HTTPS.
//!
//! Owns where certificates come from and when they change: the operator's files
//! (`[https] cert_file`/`key_file`, re-read when they change), or ACME (stored under
//! `state_dir/tls`, obtained at start when missing, renewed when a third of their life is
//! left, retried with backoff). Every new certificate goes through [`CertStore::install`],
//! so handshakes pick it up at once and open connections are untouched. A certificate that
//! cannot be read or obtained is logged and the old one stays; HTTPS for names without a
//! certificate fails its handshake, and plain HTTP keeps working.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::certs::{self, CertStore};
use super::challenge::Challenges;
use super::TlsError;
use crate::config::Config;
use crate::tasks::Tasks;

/// The slot of the operator's certificate files.
pub const FILE_SLOT: &str = "file";
/// The slot of `DOMAIN` (and `*.DOMAIN` when DNS-01 is available).
pub const DOMAIN_SLOT: &str = "domain";

/// How often the operator's files are checked for a change.
const FILE_POLL: Duration = Duration::from_secs(5);

/// HTTPS as the rest of the daemon sees it.
#[derive(Clone)]
pub struct Https {
    pub store: CertStore,
    pub challenges: Challenges,
    pub server_config: Arc<rustls::ServerConfig>,
    /// Forces ACME renewals now (a no-op with the operator's files).
    pub renew: super::acme_loop::RenewNow,
    /// Certificates come from ACME (not the operator's files).
    pub acme: bool,
}

/// Where the certificate store keeps ACME certificates.
pub fn cert_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("tls")
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Sets up HTTPS for `cfg` (which must have it enabled): loads what exists and starts the
/// tasks that keep it current.
pub async fn start(
    cfg: Arc<Config>,
    custom: tokio::sync::watch::Receiver<Vec<String>>,
    tasks: &Tasks,
) -> Result<Https, TlsError> {
    let store = CertStore::new(&cfg.domain);
    let challenges = Challenges::default();
    let server_config = store.server_config()?;
    let renew = super::acme_loop::RenewNow::default();
    let acme = cfg.https.cert_file.is_none();
    match (&cfg.https.cert_file, &cfg.https.key_file) {
        (Some(cert), Some(key)) => {
            load_files_into(&store, cert, key);
            let (store, cert, key) = (store.clone(), cert.clone(), key.clone());
            let mut seen = stamp(&cert, &key);
            tasks.every("tls-files", FILE_POLL, move || {
                let now = stamp(&cert, &key);
                if now != seen {
                    seen = now;
                    load_files_into(&store, &cert, &key);
                }
                std::future::ready(())
            });
        }
        _ => {
            let dir = cert_dir(&cfg.state_dir);
            let (good, bad) = certs::load_dir(&dir);
            for e in bad {
                tracing::warn!(error = %crate::error_chain(&e), "stored certificate not used");
            }
            for l in good {
                tracing::info!(slot = %l.info.slot, names = ?l.info.names, not_after = l.info.not_after, "certificate loaded");
                store.install(l);
            }
            super::acme_loop::start(
                cfg.clone(),
                store.clone(),
                challenges.clone(),
                custom,
                renew.clone(),
                tasks,
            )
            .await;
        }
    }
    Ok(Https {
        store,
        challenges,
        server_config,
        renew,
        acme,
    })
}

/// What identifies a version of the two files: modification time and length of each.
type Stamp = Option<(SystemTime, u64, SystemTime, u64)>;

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let m = |p: &Path| {
        let md = std::fs::metadata(p).ok()?;
        Some((md.modified().ok()?, md.len()))
    };
    let (a, b) = (m(cert)?, m(key)?);
    Some((a.0, a.1, b.0, b.1))
}

/// Reads the operator's files into the `file` slot; on any error the old certificate stays.
fn load_files_into(store: &CertStore, cert: &Path, key: &Path) {
    match certs::load_files(FILE_SLOT, cert, key) {
        Ok(l) => {
            if l.info.expired(now()) {
                tracing::warn!(cert = %cert.display(), not_after = l.info.not_after, "the certificate file has expired; serving it until it is replaced");
            }
            tracing::info!(cert = %cert.display(), names = ?l.info.names, issuer = %l.info.issuer, "certificate file loaded");
            store.install(l);
        }
        Err(e) => tracing::error!(
            cert = %cert.display(),
            error = %crate::error_chain(&e),
            "cannot use the certificate files; the previous certificate (if any) stays"
        ),
    }
}
