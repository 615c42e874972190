//! The certificates roost serves, picked by SNI during the handshake.
//!
//! Owns [`CertStore`]: named slots (`domain` for `DOMAIN` + `*.DOMAIN`, `file` for the
//! operator's files, one per custom domain), each one certificate chain with its key. A slot
//! is replaced atomically: handshakes already done keep the old certificate, the next one
//! gets the new, and no connection is dropped. It also owns reading and writing PEM (the
//! key checked against the certificate before anything is replaced), what a certificate
//! says ([`CertInfo`]), and the certificate directory on disk (0700, files 0600, replaced by
//! rename). It must not fetch certificates (that is `acme`) or know who owns a name.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{names, provider, TlsError};

/// What a certificate says, for `roost check`, the API and the renewal schedule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertInfo {
    /// The slot it fills (`domain`, `file`, or a custom domain's name).
    pub slot: String,
    /// The DNS names it is valid for (subject alternative names), lowercase.
    pub names: Vec<String>,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// Validity, in Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl CertInfo {
    /// True when `now` (Unix seconds) is past the end of validity.
    pub fn expired(&self, now: i64) -> bool {
        now >= self.not_after
    }

    /// True once a third of the lifetime is left (30 days of Let's Encrypt's 90, as
    /// certbot does), so a failing renewal has weeks of retries before visitors notice.
    pub fn renewal_due(&self, now: i64) -> bool {
        let life = (self.not_after - self.not_before).max(0);
        now >= self.not_after - life / 3
    }

    /// True when this certificate is valid for `host`.
    pub fn covers(&self, host: &str) -> bool {
        self.names.iter().any(|n| names::covers(n, host))
    }
}

/// A parsed, checked certificate chain with its signing key.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub info: CertInfo,
    key: Arc<CertifiedKey>,
}

/// Parses a PEM chain (leaf first) and a PEM private key for `slot`, and checks that the
/// key belongs to the leaf. `what` names the source in errors (a path, or `ACME`).
pub fn parse(slot: &str, what: &str, chain_pem: &[u8], key_pem: &[u8]) -> Result<Loaded, TlsError> {
    let bad = |reason: String| TlsError::BadCert {
        what: what.to_owned(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("unreadable certificate PEM: {e:?}")))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoPem {
            what: what.to_owned(),
            kind: "certificate",
        });
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoPem {
        what: what.to_owned(),
        kind: "private key",
    })?;
    let info = describe(slot, leaf.as_ref()).map_err(bad)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| bad(format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| TlsError::KeyMismatch(e.to_string()))?;
    Ok(Loaded {
        info,
        key: Arc::new(certified),
    })
}

/// Reads the names, issuer and validity of a DER certificate.
fn describe(slot: &str, der: &[u8]) -> Result<CertInfo, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut found: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                found.push(d.to_ascii_lowercase());
            }
        }
    }
    if found.is_empty() {
        return Err("the certificate names no DNS name (subject alternative name)".into());
    }
    let validity = cert.validity();
    Ok(CertInfo {
        slot: slot.to_owned(),
        names: found,
        issuer: cert.issuer().to_string(),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

#[derive(Default)]
struct Index {
    slots: BTreeMap<String, Loaded>,
    /// Exact names and `*.parent` names to the slot that serves them.
    by_name: HashMap<String, String>,
}

impl Index {
    fn rebuild(&mut self) {
        self.by_name.clear();
        // A later-expiring certificate wins a name two slots share.
        let mut order: Vec<&Loaded> = self.slots.values().collect();
        order.sort_by_key(|l| l.info.not_after);
        for l in order {
            for n in &l.info.names {
                self.by_name.insert(n.clone(), l.info.slot.clone());
            }
        }
    }

    fn find(&self, host: &str) -> Option<&Loaded> {
        let slot = self.by_name.get(host).or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.by_name.get(&format!("*.{parent}"))
        })?;
        self.slots.get(slot)
    }
}

/// The certificates being served, by slot; cheap to clone. Also the rustls resolver.
#[derive(Clone)]
pub struct CertStore {
    inner: Arc<RwLock<Index>>,
    /// The name whose certificate a client without SNI (an IP address in the URL) gets.
    default_name: String,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("slots", &self.infos())
            .finish()
    }
}

impl CertStore {
    /// An empty store; clients without SNI get the certificate of `default_name`.
    pub fn new(default_name: &str) -> CertStore {
        CertStore {
            inner: Arc::default(),
            default_name: default_name.to_ascii_lowercase(),
        }
    }

    /// Puts `loaded` in its slot, replacing what was there. Connections already made keep
    /// the certificate they were made with.
    pub fn install(&self, loaded: Loaded) {
        let mut idx = self.inner.write().unwrap_or_else(|p| p.into_inner());
        idx.slots.insert(loaded.info.slot.clone(), loaded);
        idx.rebuild();
    }

    /// Empties a slot.
    pub fn remove(&self, slot: &str) {
        let mut idx = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if idx.slots.remove(slot).is_some() {
            idx.rebuild();
        }
    }

    /// What each slot holds.
    pub fn infos(&self) -> Vec<CertInfo> {
        let idx = self.inner.read().unwrap_or_else(|p| p.into_inner());
        idx.slots.values().map(|l| l.info.clone()).collect()
    }

    /// What one slot holds.
    pub fn info(&self, slot: &str) -> Option<CertInfo> {
        let idx = self.inner.read().unwrap_or_else(|p| p.into_inner());
        idx.slots.get(slot).map(|l| l.info.clone())
    }

    /// The certificate for `host` (normalised), if a slot covers it.
    pub fn lookup(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let idx = self.inner.read().unwrap_or_else(|p| p.into_inner());
        idx.find(host).map(|l| l.key.clone())
    }

    /// A rustls server configuration that picks certificates from this store by SNI and
    /// offers HTTP/2 and HTTP/1.1 (ALPN).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(self.clone()));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Returning visitors resume instead of a full handshake: stateless tickets (keys
        // rotated every 6 hours by rustls) and a larger cache for TLS 1.2 session ids.
        cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
        cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
        Ok(Arc::new(cfg))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // rustls hands SNI over already lowercased and without a trailing dot; an unknown
        // name gets no certificate, so the handshake fails (unrecognized_name alert).
        let name = hello.server_name().unwrap_or(&self.default_name);
        self.lookup(name)
    }
}

/// Where a slot's files live under `dir`: `<slot>.crt` (the chain) and `<slot>.key`.
fn slot_paths(dir: &Path, slot: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{slot}.crt")),
        dir.join(format!("{slot}.key")),
    )
}

/// True for slot names that are safe file names (normalised DNS names and `domain`).
fn safe_slot(slot: &str) -> bool {
    !slot.is_empty()
        && !slot.starts_with('.')
        && slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Writes `bytes` to `path` with mode 0600: a temporary file, fsynced, renamed into place.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let werr = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(werr)?;
    f.write_all(bytes).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    std::fs::rename(&tmp, path).map_err(werr)
}

/// Creates the certificate directory (0700) if needed.
pub fn prepare_dir(dir: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let werr = |source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(werr)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(werr)
}

/// Checks and stores a slot's chain and key under `dir`, then returns it parsed. The key
/// is written first, so a crash leaves at worst a new key beside the old chain, which
/// [`load_dir`] refuses (mismatch) rather than serving.
pub fn save(dir: &Path, slot: &str, chain_pem: &str, key_pem: &str) -> Result<Loaded, TlsError> {
    if !safe_slot(slot) {
        return Err(TlsError::BadCert {
            what: slot.to_owned(),
            reason: "not a valid slot name".into(),
        });
    }
    let loaded = parse(slot, slot, chain_pem.as_bytes(), key_pem.as_bytes())?;
    prepare_dir(dir)?;
    let (crt, key) = slot_paths(dir, slot);
    write_private(&key, key_pem.as_bytes())?;
    write_private(&crt, chain_pem.as_bytes())?;
    Ok(loaded)
}

/// Removes a slot's files (missing files are fine).
pub fn delete(dir: &Path, slot: &str) {
    if safe_slot(slot) {
        let (crt, key) = slot_paths(dir, slot);
        let _ = std::fs::remove_file(crt);
        let _ = std::fs::remove_file(key);
    }
}

/// Loads every stored slot under `dir`; each slot that cannot be used is returned as an
/// error beside the good ones, so one bad file never stops the others.
pub fn load_dir(dir: &Path) -> (Vec<Loaded>, Vec<TlsError>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (good, bad);
    };
    for e in entries.flatten() {
        let path = e.path();
        let Some(slot) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".crt"))
        else {
            continue;
        };
        if !safe_slot(slot) {
            continue;
        }
        let (crt, key) = slot_paths(dir, slot);
        match load_files(slot, &crt, &key) {
            Ok(l) => good.push(l),
            Err(e) => bad.push(e),
        }
    }
    (good, bad)
}

/// Reads and checks a chain file and a key file.
pub fn load_files(slot: &str, cert: &Path, key: &Path) -> Result<Loaded, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let chain = read(cert)?;
    let k = read(key)?;
    parse(slot, &cert.display().to_string(), &chain, &k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `names`, valid from `from` for `days`.
    pub(crate) fn self_signed(names: &[&str], from: i64, days: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.not_before = time::OffsetDateTime::from_unix_timestamp(from).expect("time");
        params.not_after =
            time::OffsetDateTime::from_unix_timestamp(from + days * 86400).expect("time");
        let cert = params.self_signed(&key).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn certificates_are_found_by_exact_and_wildcard_name() {
        let store = CertStore::new("example.com");
        let (c, k) = self_signed(&["example.com", "*.example.com"], now() - 60, 90);
        store.install(parse("domain", "test", c.as_bytes(), k.as_bytes()).expect("parse"));
        let (c, k) = self_signed(&["shop.example.org"], now() - 60, 90);
        store
            .install(parse("shop.example.org", "test", c.as_bytes(), k.as_bytes()).expect("parse"));
        assert!(store.lookup("example.com").is_some());
        assert!(store.lookup("alice.example.com").is_some());
        assert!(store.lookup("a.b.example.com").is_none());
        assert!(store.lookup("shop.example.org").is_some());
        assert!(store.lookup("example.org").is_none());
        let info = store.info("domain").expect("slot");
        assert_eq!(info.names, vec!["example.com", "*.example.com"]);
        store.remove("shop.example.org");
        assert!(store.lookup("shop.example.org").is_none());
    }

    #[test]
    fn a_key_that_does_not_fit_is_refused() {
        let (c, _) = self_signed(&["example.com"], now(), 90);
        let (_, other) = self_signed(&["example.com"], now(), 90);
        let e = parse("domain", "test", c.as_bytes(), other.as_bytes()).expect_err("mismatch");
        assert!(matches!(e, TlsError::KeyMismatch(_)), "{e}");
        let e = parse("domain", "test", b"garbage", other.as_bytes()).expect_err("no pem");
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let e = parse("domain", "test", c.as_bytes(), b"").expect_err("no key");
        assert!(e.to_string().contains("no PEM private key"), "{e}");
    }

    #[test]
    fn renewal_is_due_with_a_third_of_the_life_left() {
        let info = CertInfo {
            slot: "domain".into(),
            names: vec![],
            issuer: String::new(),
            not_before: 0,
            not_after: 90,
        };
        assert!(!info.renewal_due(59));
        assert!(info.renewal_due(60));
        assert!(!info.expired(89));
        assert!(info.expired(90));
    }

    #[test]
    fn slots_survive_on_disk_with_private_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("tls");
        let (c, k) = self_signed(&["example.com"], now(), 90);
        save(&certs, "domain", &c, &k).expect("save");
        assert!(save(&certs, "../evil", &c, &k).is_err());
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&certs), 0o700);
        assert_eq!(mode(&certs.join("domain.key")), 0o600);
        assert_eq!(mode(&certs.join("domain.crt")), 0o600);
        // A mismatched pair on disk is reported, never served.
        let (c2, _) = self_signed(&["example.org"], now(), 90);
        std::fs::write(certs.join("other.crt"), c2).expect("write");
        std::fs::write(certs.join("other.key"), &k).expect("write");
        let (good, bad) = load_dir(&certs);
        assert_eq!(good.len(), 1);
        assert_eq!(good[0].info.slot, "domain");
        assert_eq!(bad.len(), 1);
    }
}
