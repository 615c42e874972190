//! HTTPS: TLS termination for the HTTP listener, certificates picked by SNI, and their
//! automatic issuance and renewal with ACME.
//!
//! Layout:
//! - [`names`]: DNS-name rules, pure: normalisation (case, trailing dot, IDNA) and which
//!   certificate name covers which host (exact, or one `*.` label).
//! - [`certs`]: [`CertStore`], the SNI resolver: certificates by name, swapped atomically
//!   while connections continue; PEM loading and what a certificate says ([`CertInfo`]).
//! - [`challenge`]: the ACME challenges being answered (HTTP-01 tokens on port 80, DNS-01
//!   TXT records) and the tiny authoritative DNS server for `_acme-challenge.DOMAIN`.
//! - [`acme`]: the ACME client (instant-acme): account kept on disk, orders, challenges,
//!   certificate download.
//! - [`manager`]: where the served certificates come from (the operator's files, re-read on
//!   change, or ACME) and [`acme_loop`], the renewal task with its backoff.
//!
//! One crypto provider, `ring`, is chosen explicitly ([`provider`]) for every configuration
//! roost builds; instant-acme's HTTP client reads rustls's process-wide default, so `acme`
//! installs ring as that default when none is set; nothing else relies on it. Knows
//! nothing of users, hostings or the store; `manager` and `acme_loop` read `config` and
//! run as named `tasks`.

pub mod acme;
pub mod acme_loop;
pub mod certs;
pub mod challenge;
pub mod manager;
pub mod names;

pub use certs::{CertInfo, CertStore};
pub use manager::Https;

use std::sync::Arc;

/// `tracing` directives for the daemon's filter: rustls warns once per handshake about
/// client-chosen input (an IP address sent as SNI, for one), which would let anonymous
/// clients flood the journal. roost logs handshake failures itself, at debug.
pub const QUIET_LOGS: [&str; 1] = ["rustls=error"];

/// The crypto provider of every TLS config roost builds.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What can go wrong with certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: no PEM {kind} found")]
    NoPem { what: String, kind: &'static str },
    #[error("{what}: {reason}")]
    BadCert { what: String, reason: String },
    #[error("the private key does not fit the certificate: {0}")]
    KeyMismatch(String),
    #[error("TLS configuration")]
    Config(#[from] rustls::Error),
}
