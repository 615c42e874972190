//! The ACME client (RFC 8555, through instant-acme): the account kept on disk, and one
//! order at a time from new order to downloaded certificate.
//!
//! It owns the account file (`account.json` in the directory it is given: the directory
//! 0700, the file 0600, replaced by an fsynced rename) and the steps of an order: answers
//! published in [`Challenges`] (DNS-01 TXT values or HTTP-01 key authorizations), the
//! server told they are ready, the order polled with backoff under one deadline, a fresh
//! ECDSA P-256 key and CSR, the chain downloaded and checked against the order.
//!
//! instant-acme's HTTPS client builds its rustls config from the process-wide crypto
//! provider; [`Acme::load_or_register`] installs ring ([`super::provider`]'s) as that
//! default when none is set, so no other provider is ever picked.
//!
//! What it must not do, and why:
//! - It never leaves an answer published after `obtain` returns, whatever the outcome
//!   (each answer is an [`Answer`] guard owned by the order's future, so even a dropped or
//!   timed-out future withdraws them): a stale key authorization must not linger.
//! - It never asks HTTP-01 for a wildcard (refused before contacting the server): the CA
//!   would refuse it, and a failed order counts against the CA's rate limits.
//! - It never reuses an account stored for another directory URL, and never writes the
//!   account key anywhere but the 0600 file.
//! - It decides nothing about which names need a certificate or when: the caller does
//!   (renewal schedule, custom domains), and stores what `obtain` returns.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use instant_acme::{
    Account, AccountBuilder, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier,
    NewAccount, NewOrder, Order, OrderStatus,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::challenge::{Answer, Challenges, ACME_CHALLENGE_LABEL};

/// How long one order may take, from new order to downloaded certificate.
pub const ORDER_DEADLINE: Duration = Duration::from_secs(300);
/// How long loading or registering the account may take (directory, registration).
pub const ACCOUNT_DEADLINE: Duration = Duration::from_secs(60);
/// The account file inside `AcmeSettings::dir`.
pub const ACCOUNT_FILE: &str = "account.json";
/// The first pause before polling an order, the factor it grows by on each poll, and its
/// largest value.
const FIRST_POLL: Duration = Duration::from_millis(250);
const POLL_BACKOFF: f32 = 1.5;
const MAX_POLL: Duration = Duration::from_secs(10);
/// The prefix of the ACME error types (RFC 8555 §6.7), dropped when shown.
const ACME_ERROR_URN: &str = "urn:ietf:params:acme:error:";

/// Where the ACME server is and where the account is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// The ACME directory URL, e.g. Let's Encrypt's production directory.
    pub directory: String,
    /// The account's contact address; may be empty.
    pub email: String,
    /// A PEM root the ACME server's certificate must chain to (tests, private CAs),
    /// instead of the system's roots. instant-acme reads the first certificate of the file.
    pub ca_roots: Option<PathBuf>,
    /// Where the account is kept: created 0700; the account file is 0600.
    pub dir: PathBuf,
    /// DNS-01 answers go to `_acme-challenge.<alias>` instead of the name's own
    /// `_acme-challenge` (which the operator points there with a CNAME).
    pub dns_alias: Option<String>,
}

/// How the names of an order are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A TXT record at `_acme-challenge.<name>`, served by [`super::challenge::ChallengeDns`].
    Dns01,
    /// `http://<name>/.well-known/acme-challenge/<token>`, served on port 80.
    Http01,
}

impl Method {
    fn challenge_type(self) -> ChallengeType {
        match self {
            Method::Dns01 => ChallengeType::Dns01,
            Method::Http01 => ChallengeType::Http01,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Dns01 => "DNS-01",
            Method::Http01 => "HTTP-01",
        })
    }
}

/// A certificate just issued: the full chain (leaf first) and its key (PKCS#8 PEM,
/// ECDSA P-256, generated for this order only).
#[derive(Clone)]
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("chain_pem", &self.chain_pem)
            .field("key_pem", &"<secret>")
            .finish()
    }
}

/// An ACME problem document (RFC 8555 §6.7): what the server said went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Problem {
    /// The error type without its URN prefix, e.g. `unauthorized`, `rateLimited`.
    pub kind: String,
    /// The server's explanation, with the subproblems' (one per identifier) appended.
    pub detail: String,
}

impl From<&instant_acme::Problem> for Problem {
    fn from(p: &instant_acme::Problem) -> Problem {
        let kind = p.r#type.as_deref().unwrap_or("");
        let kind = kind.strip_prefix(ACME_ERROR_URN).unwrap_or(kind).to_owned();
        let mut detail = p.detail.clone().unwrap_or_default();
        if detail.is_empty() {
            detail.clone_from(&kind);
        }
        for sub in &p.subproblems {
            let name = match &sub.identifier {
                Some(Identifier::Dns(name)) => name.as_str(),
                _ => "",
            };
            let what = sub
                .detail
                .as_deref()
                .or(sub.r#type.as_deref())
                .unwrap_or("");
            detail.push_str(&format!("; {name}: {what}"));
        }
        Problem { kind, detail }
    }
}

/// Why a request to the ACME server failed: what the server said, or the client's error.
#[derive(Debug, thiserror::Error)]
pub enum AcmeCause {
    #[error(transparent)]
    Problem(Problem),
    #[error(transparent)]
    Client(instant_acme::Error),
}

impl From<instant_acme::Error> for AcmeCause {
    fn from(e: instant_acme::Error) -> AcmeCause {
        match e {
            instant_acme::Error::Api(p) => AcmeCause::Problem(Problem::from(&p)),
            other => AcmeCause::Client(other),
        }
    }
}

/// Errors of the ACME client. Messages are short and name the step and the name; causes
/// (the server's problem document, I/O) are in `source`.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("cannot create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}", path.display())]
    ReadAccount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not an ACME account file (move it away to register a new account)", path.display())]
    BadAccount {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {}", path.display())]
    WriteAccount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("ACME server {directory}: {step}")]
    Account {
        directory: String,
        step: &'static str,
        #[source]
        source: AcmeCause,
    },
    #[error("ACME server {directory}: no answer within {}s", after.as_secs())]
    AccountTimeout { directory: String, after: Duration },
    #[error("an ACME order needs at least one name")]
    NoNames,
    #[error("{0:?} is not a DNS name for a certificate")]
    BadName(String),
    #[error("HTTP-01 for {0}: a wildcard name can only be validated by DNS-01")]
    WildcardHttp01(String),
    #[error("order for {names}: {step}")]
    Order {
        names: String,
        step: &'static str,
        #[source]
        source: AcmeCause,
    },
    #[error("{method} for {name}: {step}")]
    Challenge {
        method: Method,
        name: String,
        step: &'static str,
        #[source]
        source: AcmeCause,
    },
    #[error("{method} for {name}: the server offers no such challenge")]
    NoChallenge { method: Method, name: String },
    /// The authorization of `name` ended in `status` (e.g. `invalid`): the server's reason
    /// is the source.
    #[error("{method} for {name}: {status}")]
    Rejected {
        method: Method,
        name: String,
        status: String,
        #[source]
        problem: Option<Problem>,
    },
    #[error("order for {names}: {status}")]
    OrderFailed {
        names: String,
        status: String,
        #[source]
        problem: Option<Problem>,
    },
    #[error("order for {names}: not done within {}s", after.as_secs())]
    Timeout { names: String, after: Duration },
    #[error("order for {names}: cannot make the certificate key or request")]
    Key {
        names: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("order for {names}: the issued certificate does not fit the order: {reason}")]
    Mismatch { names: String, reason: String },
}

impl AcmeError {
    /// Whether the server said it does not know (or no longer accepts) the account the
    /// request was signed with: RFC 8555's `accountDoesNotExist`, or `unauthorized` for a
    /// deactivated account (Let's Encrypt's and pebble's wording).
    pub fn account_is_gone(&self) -> bool {
        let cause = match self {
            AcmeError::Order { source, .. }
            | AcmeError::Challenge { source, .. }
            | AcmeError::Account { source, .. } => source,
            _ => return false,
        };
        match cause {
            AcmeCause::Problem(p) => {
                p.kind == "accountDoesNotExist"
                    || (p.kind == "unauthorized"
                        && p.detail.to_ascii_lowercase().contains("deactivated"))
            }
            AcmeCause::Client(_) => false,
        }
    }
}

/// The account as stored in `account.json`: the directory it belongs to, and its
/// credentials (id URL and PKCS#8 key, instant-acme's serialisation).
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    directory: String,
    credentials: AccountCredentials,
}

/// The ACME client: one account on one ACME server, answering through `challenges`.
pub struct Acme {
    account: Account,
    settings: AcmeSettings,
    challenges: Challenges,
    order_deadline: Duration,
}

impl Acme {
    /// Loads the stored account for `settings.directory`, or registers one (terms of
    /// service agreed) and stores it. A stored account for another directory is replaced.
    pub async fn load_or_register(
        settings: AcmeSettings,
        challenges: Challenges,
    ) -> Result<Acme, AcmeError> {
        let directory = settings.directory.clone();
        match tokio::time::timeout(ACCOUNT_DEADLINE, load_or_register(&settings)).await {
            Ok(account) => Ok(Acme {
                account: account?,
                settings,
                challenges,
                order_deadline: ORDER_DEADLINE,
            }),
            Err(_) => Err(AcmeError::AccountTimeout {
                directory,
                after: ACCOUNT_DEADLINE,
            }),
        }
    }

    /// The account's URL on the ACME server (its id).
    pub fn account_id(&self) -> &str {
        self.account.id()
    }

    /// Sets how long one order may take ([`ORDER_DEADLINE`] unless set).
    pub fn set_order_deadline(&mut self, deadline: Duration) {
        self.order_deadline = deadline;
    }

    /// One order for exactly these names (e.g. `["example.com", "*.example.com"]` with
    /// DNS-01, `["shop.example.org"]` with HTTP-01): publishes the answers in the
    /// challenges, tells the server they are ready, polls the order with backoff until
    /// the deadline, finalizes with a fresh key and CSR, and downloads the chain. The
    /// answers are withdrawn in every outcome.
    ///
    /// When the server no longer knows the account (a CA that lost or deactivated it, a
    /// test CA restarted), the stored account is dropped, a new one is registered and
    /// stored, and the order is tried once more with it; otherwise every renewal would
    /// fail with the same stale account until an operator deleted the file.
    pub async fn obtain(&mut self, names: &[String], method: Method) -> Result<Issued, AcmeError> {
        match self.obtain_once(names, method).await {
            Err(e) if e.account_is_gone() => {
                warn!(
                    account = self.account.id(),
                    error = %crate::error_chain(&e),
                    "the ACME server no longer knows this account: registering a new one"
                );
                self.reregister().await?;
                self.obtain_once(names, method).await
            }
            result => result,
        }
    }

    /// Forgets the stored account and registers a new one.
    async fn reregister(&mut self) -> Result<(), AcmeError> {
        let path = self.settings.dir.join(ACCOUNT_FILE);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(AcmeError::WriteAccount { path, source }),
        }
        let fresh = Acme::load_or_register(self.settings.clone(), self.challenges.clone()).await?;
        self.account = fresh.account;
        info!(account = self.account.id(), "new ACME account in use");
        Ok(())
    }

    async fn obtain_once(&self, names: &[String], method: Method) -> Result<Issued, AcmeError> {
        let names = order_names(names, method)?;
        let label = names.join(", ");
        debug!(names = %label, %method, "ACME order started");
        let deadline = Instant::now() + self.order_deadline;
        let order = self.order(&names, &label, method, deadline);
        let result = match tokio::time::timeout_at(deadline, order).await {
            Ok(result) => result,
            Err(_) => Err(AcmeError::Timeout {
                names: label.clone(),
                after: self.order_deadline,
            }),
        };
        // A failure is the caller's to log (once, as a chain).
        if result.is_ok() {
            debug!(names = %label, "ACME certificate issued");
        }
        result
    }

    /// The order's steps. The answers live in this future: they are withdrawn once the
    /// order is ready, or when it returns or is dropped.
    async fn order(
        &self,
        names: &[String],
        label: &str,
        method: Method,
        deadline: Instant,
    ) -> Result<Issued, AcmeError> {
        let order_err = |step| {
            move |e: instant_acme::Error| AcmeError::Order {
                names: label.to_owned(),
                step,
                source: e.into(),
            }
        };
        let timed_out = || AcmeError::Timeout {
            names: label.to_owned(),
            after: self.order_deadline,
        };
        let identifiers: Vec<Identifier> = names.iter().cloned().map(Identifier::Dns).collect();
        let mut order = self
            .account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(order_err("new order"))?;
        let answers = self.answer(&mut order, label, method).await?;

        let ready = |s| matches!(s, OrderStatus::Ready | OrderStatus::Invalid);
        match poll_until(&mut order, deadline, ready).await {
            Ok(Some(OrderStatus::Ready)) if order.state().error.is_none() => {}
            Ok(Some(_)) => return Err(why_invalid(&mut order, label, method).await),
            Ok(None) => return Err(timed_out()),
            Err(e) => return Err(order_err("poll the order")(e)),
        }
        // Validated: the answers are not needed any more.
        drop(answers);
        debug!(names = %label, "ACME order ready");

        let key_err = |source| AcmeError::Key {
            names: label.to_owned(),
            source,
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(key_err)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(key_err)?;
        params.distinguished_name = DistinguishedName::new();
        let csr = params.serialize_request(&key).map_err(key_err)?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(order_err("finalize"))?;
        let issued = |s| matches!(s, OrderStatus::Valid | OrderStatus::Invalid);
        if !issued(order.state().status) {
            match poll_until(&mut order, deadline, issued).await {
                Ok(Some(_)) => {}
                Ok(None) => return Err(timed_out()),
                Err(e) => return Err(order_err("poll the order")(e)),
            }
        }
        let state = order.state();
        if state.status != OrderStatus::Valid || state.error.is_some() {
            return Err(AcmeError::OrderFailed {
                names: label.to_owned(),
                status: status_text(state.status),
                problem: state.error.as_ref().map(Problem::from),
            });
        }
        let chain_pem = match order.certificate().await {
            Ok(Some(chain)) => chain,
            Ok(None) => return Err(timed_out()),
            Err(e) => return Err(order_err("download the certificate")(e)),
        };
        check_issued(&chain_pem, names, key.public_key_raw()).map_err(|reason| {
            AcmeError::Mismatch {
                names: label.to_owned(),
                reason,
            }
        })?;
        Ok(Issued {
            chain_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// Publishes the answer of each pending authorization, then tells the server they are
    /// ready. All answers are published before the first is declared ready: the CA's
    /// resolver may cache the TXT set it sees first, and `example.com` and
    /// `*.example.com` share one TXT name. Authorizations already valid (reused by the
    /// server) need nothing.
    async fn answer(
        &self,
        order: &mut Order,
        label: &str,
        method: Method,
    ) -> Result<Vec<Answer>, AcmeError> {
        let fetch_err = |e: instant_acme::Error| AcmeError::Order {
            names: label.to_owned(),
            step: "fetch the authorizations",
            source: e.into(),
        };
        let mut answers = Vec::new();
        // Per authorization, in the order's order: the name, if it waits for an answer.
        let mut pending: Vec<Option<String>> = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(fetch_err)?;
            let name = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => {
                    debug!(%name, "ACME authorization already valid");
                    pending.push(None);
                    continue;
                }
                other => {
                    return Err(AcmeError::Rejected {
                        method,
                        name,
                        status: status_text(other),
                        problem: None,
                    })
                }
            }
            let Some(challenge) = authz.challenge(method.challenge_type()) else {
                return Err(AcmeError::NoChallenge { method, name });
            };
            let key_authorization = challenge.key_authorization();
            answers.push(match method {
                Method::Dns01 => {
                    let at = match &self.settings.dns_alias {
                        Some(alias) => txt_name(alias),
                        None => txt_name(&name),
                    };
                    self.challenges
                        .answer_txt(&at, &key_authorization.dns_value())
                }
                Method::Http01 => self
                    .challenges
                    .answer_http01(&challenge.token, key_authorization.as_str()),
            });
            pending.push(Some(name));
        }

        // The states are cached in the order now: this walk makes no request.
        let mut authorizations = order.authorizations();
        let mut index = 0;
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(fetch_err)?;
            let Some(Some(name)) = pending.get(index).cloned() else {
                index += 1;
                continue;
            };
            index += 1;
            let Some(mut challenge) = authz.challenge(method.challenge_type()) else {
                return Err(AcmeError::NoChallenge { method, name });
            };
            challenge
                .set_ready()
                .await
                .map_err(|e| AcmeError::Challenge {
                    method,
                    name: name.clone(),
                    step: "tell the server the answer is ready",
                    source: e.into(),
                })?;
            debug!(%name, %method, "ACME challenge ready");
        }
        Ok(answers)
    }
}

/// Refreshes the order, after a pause that starts short and grows to at most
/// [`MAX_POLL`], until its status is `settled` (or it carries a problem): that status; or
/// `None` once `deadline` has passed (the last refresh is at the deadline itself).
async fn poll_until(
    order: &mut Order,
    deadline: Instant,
    settled: impl Fn(OrderStatus) -> bool,
) -> Result<Option<OrderStatus>, instant_acme::Error> {
    let mut pause = FIRST_POLL;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        tokio::time::sleep_until((now + pause).min(deadline)).await;
        let state = order.refresh().await?;
        if state.error.is_some() || settled(state.status) {
            return Ok(Some(state.status));
        }
        pause = pause.mul_f32(POLL_BACKOFF).min(MAX_POLL);
    }
}

/// The order failed: finds the authorization that did, and what the server said about
/// its challenge; else the order's own problem.
async fn why_invalid(order: &mut Order, label: &str, method: Method) -> AcmeError {
    let order_problem = order.state().error.as_ref().map(Problem::from);
    let order_status = status_text(order.state().status);
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        // The states here are the ones fetched before the challenges were answered.
        if authz.refresh().await.is_err() {
            continue;
        }
        if matches!(
            authz.status,
            AuthorizationStatus::Pending | AuthorizationStatus::Valid
        ) {
            continue;
        }
        let problem = authz
            .challenges
            .iter()
            .filter(|c| c.r#type == method.challenge_type())
            .find_map(|c| c.error.as_ref().map(Problem::from))
            .or_else(|| order_problem.clone());
        return AcmeError::Rejected {
            method,
            name: authz.identifier().to_string(),
            status: status_text(authz.status),
            problem,
        };
    }
    AcmeError::OrderFailed {
        names: label.to_owned(),
        status: order_status,
        problem: order_problem,
    }
}

/// `invalid`, `expired`, … as RFC 8555 writes them.
fn status_text(status: impl fmt::Debug) -> String {
    format!("{status:?}").to_ascii_lowercase()
}

/// The names of an order, checked before anything is sent: lowercase, no trailing dot,
/// duplicates dropped (first one kept), a wildcard only as a whole first label, and no
/// wildcard with HTTP-01.
pub(crate) fn order_names(names: &[String], method: Method) -> Result<Vec<String>, AcmeError> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for raw in names {
        let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        let base = name.strip_prefix("*.").unwrap_or(&name);
        let plain_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.len() > 253 || !base.contains('.') || !base.split('.').all(plain_label) {
            return Err(AcmeError::BadName(raw.clone()));
        }
        if name.starts_with("*.") && method == Method::Http01 {
            return Err(AcmeError::WildcardHttp01(name));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    if out.is_empty() {
        return Err(AcmeError::NoNames);
    }
    Ok(out)
}

/// Where the DNS-01 TXT record of `name` goes: `_acme-challenge.<name>`, the wildcard's
/// `*.` dropped (so `example.com` and `*.example.com` share one name).
pub(crate) fn txt_name(name: &str) -> String {
    let base = name.strip_prefix("*.").unwrap_or(name);
    format!("{ACME_CHALLENGE_LABEL}.{base}")
}

/// Checks that the chain's first certificate is for exactly `names` and for the key the
/// CSR was made with (`public_key` as raw subject public key bits).
pub(crate) fn check_issued(
    chain_pem: &str,
    names: &[String],
    public_key: &[u8],
) -> Result<(), String> {
    let pem = x509_parser::pem::Pem::iter_from_buffer(chain_pem.as_bytes())
        .next()
        .ok_or("no certificate in the chain")?
        .map_err(|e| format!("unreadable PEM: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    if cert.public_key().subject_public_key.data.as_ref() != public_key {
        return Err("it is not for the key of the request".into());
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("unreadable subject alternative names: {e}"))?
        .ok_or("it names no subject alternative names")?;
    let mut got: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => d.to_ascii_lowercase(),
            other => other.to_string(),
        })
        .collect();
    let mut want = names.to_vec();
    got.sort();
    want.sort();
    if got != want {
        return Err(format!("it names {}", got.join(", ")));
    }
    Ok(())
}

/// The account, loaded or registered; the file written when registered.
async fn load_or_register(settings: &AcmeSettings) -> Result<Account, AcmeError> {
    let dir = &settings.dir;
    let path = dir.join(ACCOUNT_FILE);
    fs::create_dir_all(dir)
        .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o700)))
        .map_err(|source| AcmeError::CreateDir {
            path: dir.clone(),
            source,
        })?;
    let server_err = |step| {
        move |e: instant_acme::Error| AcmeError::Account {
            directory: settings.directory.clone(),
            step,
            source: e.into(),
        }
    };

    let stored = read_account(&path)?;
    match stored {
        Some(stored) if stored.directory == settings.directory => {
            let account = builder(settings)
                .map_err(server_err("HTTP client"))?
                .from_credentials(stored.credentials)
                .await
                .map_err(server_err("load the stored account"))?;
            info!(id = account.id(), "ACME account loaded");
            return Ok(account);
        }
        Some(stored) => info!(
            stored = %stored.directory,
            directory = %settings.directory,
            "the stored ACME account is for another directory: registering a new one"
        ),
        None => {}
    }

    let contact = format!("mailto:{}", settings.email.trim());
    let contacts: Vec<&str> = match settings.email.trim() {
        "" => Vec::new(),
        _ => vec![contact.as_str()],
    };
    let new = NewAccount {
        contact: &contacts,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = builder(settings)
        .map_err(server_err("HTTP client"))?
        .create(&new, settings.directory.clone(), None)
        .await
        .map_err(server_err("register an account"))?;
    let stored = Stored {
        directory: settings.directory.clone(),
        credentials,
    };
    write_account(&path, &stored)?;
    info!(id = account.id(), path = %path.display(), "ACME account registered");
    Ok(account)
}

/// instant-acme's HTTPS client, trusting `ca_roots` or else the system's roots.
fn builder(settings: &AcmeSettings) -> Result<AccountBuilder, instant_acme::Error> {
    // instant-acme builds its rustls config with the process-wide crypto provider; make
    // it ring (the one roost uses) before anything picks another. Ignored when set.
    let ring = super::provider().as_ref().clone();
    let _ = rustls::crypto::CryptoProvider::install_default(ring);
    match &settings.ca_roots {
        Some(pem) => Account::builder_with_root(pem),
        None => Account::builder(),
    }
}

/// The stored account, if there is one.
fn read_account(path: &Path) -> Result<Option<Stored>, AcmeError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AcmeError::ReadAccount {
                path: path.to_owned(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| AcmeError::BadAccount {
            path: path.to_owned(),
            source,
        })
}

/// Writes the account atomically: a new 0600 file beside it, fsynced, renamed over it,
/// then the directory fsynced.
fn write_account(path: &Path, stored: &Stored) -> Result<(), AcmeError> {
    let err = |source| AcmeError::WriteAccount {
        path: path.to_owned(),
        source,
    };
    let json = serde_json::to_vec_pretty(stored).map_err(|e| err(io::Error::other(e)))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{ACCOUNT_FILE}.{}.tmp", std::process::id()));
    let written = (|| {
        // A leftover from a crash of this same pid would make `create_new` fail.
        let _ = fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn order_names_are_normalised_and_checked_before_any_request() {
        assert_eq!(
            order_names(
                &names(&["Example.COM.", "*.example.com", "example.com"]),
                Method::Dns01
            )
            .expect("valid"),
            ["example.com", "*.example.com"]
        );
        assert_eq!(
            order_names(&names(&["shop.example.org"]), Method::Http01).expect("valid"),
            ["shop.example.org"]
        );
        let err = order_names(
            &names(&["shop.example.org", "*.example.org"]),
            Method::Http01,
        )
        .expect_err("wildcard with HTTP-01");
        assert!(matches!(&err, AcmeError::WildcardHttp01(n) if n == "*.example.org"));
        assert_eq!(
            err.to_string(),
            "HTTP-01 for *.example.org: a wildcard name can only be validated by DNS-01"
        );
        assert!(matches!(
            order_names(&[], Method::Dns01),
            Err(AcmeError::NoNames)
        ));
        for bad in [
            "",
            "com",
            "a..b",
            "*.*.example.com",
            "ex ample.com",
            "foo.*.example.com",
            "*",
        ] {
            assert!(
                matches!(
                    order_names(&names(&[bad]), Method::Dns01),
                    Err(AcmeError::BadName(_))
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn a_name_and_its_wildcard_share_one_txt_name() {
        assert_eq!(txt_name("example.com"), "_acme-challenge.example.com");
        assert_eq!(txt_name("*.example.com"), "_acme-challenge.example.com");
        assert_eq!(
            txt_name("a.b.example.com"),
            "_acme-challenge.a.b.example.com"
        );
    }

    #[test]
    fn an_account_the_server_does_not_know_is_told_apart() {
        let order = |kind: &str, detail: &str| AcmeError::Order {
            names: "example.com".into(),
            step: "new order",
            source: AcmeCause::Problem(Problem {
                kind: kind.into(),
                detail: detail.into(),
            }),
        };
        assert!(order("accountDoesNotExist", "unable to find account").account_is_gone());
        assert!(order(
            "unauthorized",
            "An account with the provided public key exists but is deactivated"
        )
        .account_is_gone());
        // The usual failures keep the account.
        assert!(!order("unauthorized", "no TXT record found").account_is_gone());
        assert!(!order("rateLimited", "too many certificates").account_is_gone());
        assert!(!AcmeError::Timeout {
            names: "example.com".into(),
            after: Duration::from_secs(1)
        }
        .account_is_gone());
    }

    #[test]
    fn problems_read_as_the_servers_detail() {
        let p: instant_acme::Problem = serde_json::from_str(
            r#"{"type":"urn:ietf:params:acme:error:unauthorized",
                "detail":"no TXT record found at _acme-challenge.example.com","status":403}"#,
        )
        .expect("problem json");
        let p = Problem::from(&p);
        assert_eq!(p.kind, "unauthorized");
        assert_eq!(
            p.to_string(),
            "no TXT record found at _acme-challenge.example.com"
        );

        let err = AcmeError::Rejected {
            method: Method::Dns01,
            name: "*.example.com".into(),
            status: "invalid".into(),
            problem: Some(p),
        };
        assert_eq!(
            crate::error_chain(&err),
            "DNS-01 for *.example.com: invalid: no TXT record found at _acme-challenge.example.com"
        );

        let sub: instant_acme::Problem = serde_json::from_str(
            r#"{"type":"urn:ietf:params:acme:error:rejectedIdentifier","detail":"some rejected",
                "subproblems":[{"type":"urn:ietf:params:acme:error:rejectedIdentifier",
                "detail":"forbidden name","identifier":{"type":"dns","value":"bad.example"}}]}"#,
        )
        .expect("problem json");
        assert_eq!(
            Problem::from(&sub).to_string(),
            "some rejected; bad.example: forbidden name"
        );
        let bare: instant_acme::Problem =
            serde_json::from_str(r#"{"type":"urn:ietf:params:acme:error:badCSR"}"#).expect("json");
        assert_eq!(Problem::from(&bare).to_string(), "badCSR");
    }

    fn self_signed(sans: &[&str], key: &KeyPair) -> String {
        let params = CertificateParams::new(names(sans)).expect("params");
        params.self_signed(key).expect("self-signed").pem()
    }

    #[test]
    fn the_issued_certificate_must_fit_the_order() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let want = names(&["example.com", "*.example.com"]);
        let pem = self_signed(&["*.example.com", "example.com"], &key);
        check_issued(&pem, &want, key.public_key_raw()).expect("fits");

        let fewer = self_signed(&["example.com"], &key);
        let err = check_issued(&fewer, &want, key.public_key_raw()).expect_err("fewer names");
        assert!(err.contains("names example.com"), "{err}");

        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let err = check_issued(&pem, &want, other.public_key_raw()).expect_err("other key");
        assert!(err.contains("key"), "{err}");

        assert!(check_issued("", &want, key.public_key_raw()).is_err());
    }

    #[test]
    fn the_account_file_is_written_0600_and_read_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("acme");
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(ACCOUNT_FILE);
        assert!(read_account(&path).expect("no file yet").is_none());

        let json = r#"{"directory":"https://acme.test/dir","credentials":
            {"id":"https://acme.test/acct/1","key_pkcs8":"MAAA","directory":"https://acme.test/dir"}}"#;
        let stored: Stored = serde_json::from_str(json).expect("stored json");
        write_account(&path, &stored).expect("write");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = read_account(&path).expect("read").expect("stored");
        assert_eq!(back.directory, "https://acme.test/dir");
        // Replaced in place, nothing left beside it.
        write_account(&path, &back).expect("rewrite");
        let entries: Vec<_> = fs::read_dir(&dir).expect("ls").collect();
        assert_eq!(entries.len(), 1);

        fs::write(&path, "not json").expect("garble");
        assert!(matches!(
            read_account(&path),
            Err(AcmeError::BadAccount { .. })
        ));
    }
}
