//! Configuration: a TOML file whose every key has an embedded default.
//!
//! Owns parsing and validation only. The file is parsed once into typed values (subnet,
//! networks and port range are [`crate::addr`] types, never strings parsed again later);
//! each section then validates its own ranges, and [`Config::validate`] the rules that span
//! sections. Unknown keys, wrong types and malformed values are rejected naming the key's
//! path and line; out-of-range values naming the key and the expected form. Nothing here
//! touches the host: values are checked for shape, not for availability. Imports only
//! `addr` of roost.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::addr::{Cidr, Ipv4Net, PortRange};

/// Everything that can be wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: expected {expected}, got {got}")]
    Invalid {
        key: &'static str,
        expected: &'static str,
        got: String,
    },
}

/// The whole configuration. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the database, secrets, VM disks, sockets and logs.
    pub state_dir: PathBuf,
    /// The public domain: sites answer at `http://DOMAIN/<slug>/` and `http://<slug>.DOMAIN/`.
    pub domain: String,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    pub log_level: String,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub ssh: SshConfig,
    pub network: NetworkConfig,
    pub vm: VmConfig,
    pub limits: LimitsConfig,
    pub cloudinit: CloudInitConfig,
    pub https: HttpsConfig,
    pub acme: AcmeConfig,
    pub domains: DomainsConfig,
    pub console: ConsoleConfig,
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A separate listener serving `GET /metrics` without authentication, for a Prometheus
    /// on the host: keep it on loopback or behind a firewall. Empty (`""`): none. The API's
    /// own `/metrics` (administrators only) is always there.
    #[serde(deserialize_with = "empty_or_address")]
    pub listen: Option<SocketAddr>,
}

impl MetricsConfig {
    fn validate(&self, http: &HttpConfig, https: &HttpsConfig) -> Result<(), ConfigError> {
        let taken = |a: SocketAddr, b: SocketAddr| {
            a.port() != 0
                && a.port() == b.port()
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        };
        let clash = self
            .listen
            .is_some_and(|l| taken(l, http.listen) || (https.enabled && taken(l, https.listen)));
        check(
            !clash,
            "metrics.listen",
            "an address other than http.listen and https.listen, such as \"127.0.0.1:9464\"",
            self.listen,
        )
    }
}

/// An address, or `""` for none.
fn empty_or_address<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "expected an address such as \"127.0.0.1:9464\", or \"\" for none; got {s:?}"
        ))
    })
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// The dashboard's host name. Empty: `console.DOMAIN`. It takes precedence over a
    /// site of the same name, and should not share an origin with any user's site.
    pub host: String,
    /// How long a browser session lasts after logging in.
    pub session_ttl_secs: u64,
    /// Bytes of each VM's serial output a new console viewer is shown first.
    pub scrollback_bytes: usize,
    /// Console viewers of one VM at once.
    pub max_viewers: usize,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            host: String::new(),
            session_ttl_secs: 12 * 3600,
            scrollback_bytes: 64 * 1024,
            max_viewers: 16,
        }
    }
}

impl ConsoleConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.host.is_empty()
                || (valid_domain(&self.host) && self.host.parse::<std::net::IpAddr>().is_err()),
            "console.host",
            "a DNS name such as \"console.example.com\", or empty for console.DOMAIN",
            &self.host,
        )?;
        check(
            (300..=30 * 86400).contains(&self.session_ttl_secs),
            "console.session_ttl_secs",
            "seconds from 300 to 2592000",
            self.session_ttl_secs,
        )?;
        check(
            (4096..=4 << 20).contains(&self.scrollback_bytes),
            "console.scrollback_bytes",
            "bytes from 4096 to 4194304",
            self.scrollback_bytes,
        )?;
        check(
            (1..=256).contains(&self.max_viewers),
            "console.max_viewers",
            "a count from 1 to 256",
            self.max_viewers,
        )
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DomainsConfig {
    /// DNS servers asked when verifying users' own domains (`"ip:port"`). Empty: the
    /// host's resolvers (`/etc/resolv.conf`). Answers are never cached.
    pub resolvers: Vec<SocketAddr>,
    /// How often verified domains are checked again; a domain whose record is gone is
    /// suspended (no longer routed).
    pub recheck_secs: u64,
    /// Custom domains one hosting may claim.
    pub max_per_hosting: usize,
}

impl Default for DomainsConfig {
    fn default() -> Self {
        DomainsConfig {
            resolvers: Vec::new(),
            recheck_secs: 3600,
            max_per_hosting: 10,
        }
    }
}

impl DomainsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check(
            (60..=7 * 86400).contains(&self.recheck_secs),
            "domains.recheck_secs",
            "seconds from 60 to 604800",
            self.recheck_secs,
        )?;
        check(
            (1..=100).contains(&self.max_per_hosting),
            "domains.max_per_hosting",
            "a count from 1 to 100",
            self.max_per_hosting,
        )
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpsConfig {
    /// Serve HTTPS: with `cert_file` and `key_file` when both are set, else with
    /// certificates from ACME (`[acme]`) for `DOMAIN`, `*.DOMAIN` and verified custom domains.
    pub enabled: bool,
    /// Address of the TLS listener (API, sites, custom domains; HTTP/2 and HTTP/1.1).
    pub listen: SocketAddr,
    /// Plain HTTP from non-loopback clients is answered with a 308 to the same URL over
    /// HTTPS (ACME HTTP-01 challenges excepted).
    pub redirect: bool,
    /// HTTPS responses carry `Strict-Transport-Security: max-age=31536000`.
    pub hsts: bool,
    /// A PEM certificate chain (leaf first) and its PEM private key, instead of ACME;
    /// re-read when either file changes.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// The ACME server's directory URL.
    pub directory: String,
    /// Contact address given to the ACME server for expiry notices (may be empty).
    pub email: String,
    /// Extra PEM root certificates trusted for the ACME server (private CAs, tests).
    pub ca_roots: Option<PathBuf>,
    /// Where roost answers DNS queries for `_acme-challenge.DOMAIN` (UDP and TCP), so it
    /// can get the `*.DOMAIN` wildcard by DNS-01; delegate that name here once. Unset: no
    /// wildcard; `DOMAIN` itself is validated over HTTP-01.
    pub dns_listen: Option<SocketAddr>,
    /// For delegation by CNAME instead of NS: the name whose `_acme-challenge` roost
    /// serves instead of `DOMAIN`'s (e.g. `acme.example.net`, delegated to `dns_listen`
    /// by NS), with `_acme-challenge.DOMAIN CNAME _acme-challenge.<dns_alias>.` in
    /// `DOMAIN`'s zone. Empty: `_acme-challenge.DOMAIN` itself is delegated.
    pub dns_alias: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the API and the reverse proxy.
    pub listen: SocketAddr,
    /// Largest request body the API accepts, in bytes.
    pub max_body_bytes: usize,
    /// Open connections one client address may hold (raise it behind a load balancer or
    /// CDN, where many visitors share an address).
    pub max_conns_per_address: usize,
    /// Open client connections in total (also kept below the open-file limit minus a
    /// reserve for VM management).
    pub max_conns: usize,
    /// Seconds a request body may send nothing before it is cut (408).
    pub body_timeout_secs: u64,
    /// Seconds a VM may send no response head, or nothing of a response body, before
    /// the proxy gives up (504 before the head).
    pub upstream_timeout_secs: u64,
    /// Seconds a client may take no byte of its response before it is disconnected.
    pub send_timeout_secs: u64,
    /// Seconds an upgraded (WebSocket) tunnel may carry nothing before it is closed.
    pub tunnel_idle_secs: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Lifetime of an access token, in seconds.
    pub token_ttl_secs: u64,
    /// Login attempts allowed per client address and per username in `login_window_secs`.
    pub login_attempts: u32,
    pub login_window_secs: u64,
    /// Failed logins per username per hour, from all addresses, before addresses that
    /// never logged in to that account are refused (its known addresses never are).
    pub login_user_failures_per_hour: u32,
    /// Accounts that may be created from one client address per hour (the CLI is exempt).
    pub register_per_hour: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SshConfig {
    /// Host ports handed out to hostings for SSH, `"LOW-HIGH"` inclusive.
    pub port_range: PortRange,
    /// Connect to the guest from the client's own address (transparent proxying), so its
    /// `sshd` log, `$SSH_CLIENT` and `last` show the visitor; `false`: from the gateway.
    pub keep_client_address: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Name of the Linux bridge the VMs' taps join.
    pub bridge: String,
    /// IPv4 subnet of the VMs, `"a.b.c.d/len"` (`/8` to `/30`); the first host address is
    /// the gateway.
    pub subnet: Ipv4Net,
    /// DNS servers written into every guest's network configuration. Empty: the gateway,
    /// where roost answers with its own caching forwarder.
    pub dns: Vec<Ipv4Addr>,
    /// Where roost's forwarder sends guests' queries. Empty: the host's resolvers
    /// (`/etc/resolv.conf`).
    pub dns_upstreams: Vec<SocketAddr>,
    /// Queries per second one VM may send to roost's forwarder, and the burst above it.
    pub dns_queries_per_sec: u32,
    pub dns_burst: u32,
    /// Guests reach the internet through NAT on the uplink.
    pub egress: bool,
    /// The uplink interface for NAT. Empty: the interface of the default route.
    pub uplink: String,
    /// Let guests open connections to port 25 (SMTP) outside.
    pub allow_smtp: bool,
    /// Destinations guests never reach through NAT (the host's LAN, link-local and cloud
    /// metadata, carrier-grade NAT, multicast, ...), `"a.b.c.d/len"` each.
    pub egress_deny: Vec<Cidr>,
}

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AccelSetting {
    /// KVM only when a probe shows that it really runs a guest, TCG otherwise.
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VmConfig {
    pub accel: AccelSetting,
    /// Guest image directory (with `manifest.json`), as built by `scripts/build-image.sh`.
    pub image: PathBuf,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub disk_gib: u32,
    /// Free space the state directory must keep after a new VM's disk, in GiB.
    pub disk_reserve_gib: u32,
    /// First uid of the range QEMUs run as: each VM's QEMU runs as uid = gid = `uid_base` +
    /// its address's offset in `network.subnet` (no two VMs share one). No account may use
    /// the range (`roost check` warns). Default 0x70000000, outside systemd's and
    /// `useradd`'s subordinate ranges.
    pub uid_base: u32,
    /// Put each QEMU in its own cgroups (CPU quota of `vcpus` cores, memory and task
    /// limits). A controller the host lacks is skipped with a warning.
    pub cgroups: bool,
    /// QEMU binary.
    pub qemu: PathBuf,
    /// A graceful stop (ACPI powerdown) waits this long before QEMU is told to quit.
    pub stop_timeout_secs: u64,
    /// A new VM that does not answer on :80 and :22 within this time is marked failed.
    pub boot_timeout_secs: u64,
    /// Bandwidth caps of a VM's internet traffic, out and in, in Mbit/s (0: none). Sites
    /// served through the proxy and SSH sessions are not counted.
    pub egress_mbit: u32,
    pub ingress_mbit: u32,
    /// Connections one VM may hold open to the internet at once.
    pub egress_max_conns: u32,
    /// New connections per second one VM may open to the internet (burst: twice that).
    pub egress_new_conns_per_sec: u32,
    /// A hosting whose owner lets it sleep is paused after nobody visited its site or held
    /// an SSH session for this long (0: no VM ever sleeps).
    pub sleep_after_secs: u64,
    /// A visit to a sleeping site waits this long for its VM to wake.
    pub wake_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// VM creations that run at the same time; the rest wait in order.
    pub max_concurrent_creates: usize,
    /// Hostings this host holds at most (0: no count limit besides memory and disk).
    pub max_vms: u32,
    /// Host memory kept out of the VMs' budget, in MiB.
    pub memory_reserve_mib: u64,
    /// The VMs' memory budget (RAM minus the reserve) times this (1.0: no overcommit).
    pub memory_overcommit: f64,
    /// The VMs' disk budget (the state directory's file system minus
    /// `vm.disk_reserve_gib`) times this (1.0: a guest filling its disk can never eat the
    /// host's reserve).
    pub disk_overcommit: f64,
    /// Disk snapshots one hosting may keep (0: snapshots are off). Each is charged a whole
    /// disk (`vm.disk_gib`) against the disk budget.
    pub snapshots_per_hosting: usize,
    /// Costly operations (create, delete, start, stop, reboot, snapshot take, restore and
    /// delete, console password) one account may ask for per hour: a sixth at once, then evenly (0: no
    /// limit). Administrators are exempt.
    pub operations_per_hour: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CloudInitConfig {
    /// Directory with operator-edited base documents; the embedded ones are used when unset.
    pub templates: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from("/var/lib/roost"),
            domain: "localhost".into(),
            log_level: "info".into(),
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            ssh: SshConfig::default(),
            network: NetworkConfig::default(),
            vm: VmConfig::default(),
            limits: LimitsConfig::default(),
            cloudinit: CloudInitConfig::default(),
            https: HttpsConfig::default(),
            acme: AcmeConfig::default(),
            domains: DomainsConfig::default(),
            console: ConsoleConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Default for HttpsConfig {
    fn default() -> Self {
        HttpsConfig {
            enabled: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 443)),
            redirect: true,
            hsts: false,
            cert_file: None,
            key_file: None,
        }
    }
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            directory: LETS_ENCRYPT.into(),
            email: String::new(),
            ca_roots: None,
            dns_listen: None,
            dns_alias: String::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 80)),
            max_body_bytes: 64 * 1024,
            max_conns_per_address: 256,
            max_conns: 16384,
            body_timeout_secs: 60,
            upstream_timeout_secs: 60,
            send_timeout_secs: 60,
            tunnel_idle_secs: 600,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_ttl_secs: 3600,
            login_attempts: 10,
            login_window_secs: 60,
            login_user_failures_per_hour: 100,
            register_per_hour: 20,
        }
    }
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            port_range: PortRange {
                low: 22000,
                high: 22999,
            },
            keep_client_address: true,
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bridge: "roost0".into(),
            subnet: DEFAULT_SUBNET,
            dns: Vec::new(),
            dns_upstreams: Vec::new(),
            dns_queries_per_sec: 50,
            dns_burst: 200,
            egress: true,
            uplink: String::new(),
            allow_smtp: false,
            egress_deny: DEFAULT_EGRESS_DENY.to_vec(),
        }
    }
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            accel: AccelSetting::Auto,
            image: PathBuf::from("/var/cache/roost/images/default"),
            memory_mib: 512,
            vcpus: 1,
            disk_gib: 4,
            disk_reserve_gib: 2,
            uid_base: crate::addr::DEFAULT_UID_BASE,
            cgroups: true,
            qemu: PathBuf::from("qemu-system-x86_64"),
            stop_timeout_secs: 30,
            boot_timeout_secs: 300,
            egress_mbit: 100,
            ingress_mbit: 100,
            egress_max_conns: 1024,
            egress_new_conns_per_sec: 100,
            sleep_after_secs: 900,
            wake_timeout_secs: 15,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_concurrent_creates: 2,
            max_vms: 0,
            memory_reserve_mib: 2048,
            memory_overcommit: 1.0,
            disk_overcommit: 1.0,
            snapshots_per_hosting: 3,
            operations_per_hour: 120,
        }
    }
}

/// The VMs' subnet unless configured.
pub const DEFAULT_SUBNET: Ipv4Net = Ipv4Net::constant([10, 88, 0, 0], 24);

/// What guests never reach through NAT by default: this network ("this host"), private
/// networks (the host's LAN), carrier-grade NAT, loopback, link-local (cloud metadata at
/// 169.254.169.254), the IETF protocol block, benchmarking, multicast and reserved space.
pub const DEFAULT_EGRESS_DENY: &[Cidr] = &[
    Cidr::constant([0, 0, 0, 0], 8),
    Cidr::constant([10, 0, 0, 0], 8),
    Cidr::constant([100, 64, 0, 0], 10),
    Cidr::constant([127, 0, 0, 0], 8),
    Cidr::constant([169, 254, 0, 0], 16),
    Cidr::constant([172, 16, 0, 0], 12),
    Cidr::constant([192, 0, 0, 0], 24),
    Cidr::constant([192, 168, 0, 0], 16),
    Cidr::constant([198, 18, 0, 0], 15),
    Cidr::constant([224, 0, 0, 0], 4),
    Cidr::constant([240, 0, 0, 0], 4),
];

/// An out-of-range value: `key`, what it should be, and what it is.
fn bad(key: &'static str, expected: &'static str, got: impl std::fmt::Debug) -> ConfigError {
    ConfigError::Invalid {
        key,
        expected,
        got: format!("{got:?}"),
    }
}

/// `Err` naming `key` unless `ok`.
fn check(
    ok: bool,
    key: &'static str,
    expected: &'static str,
    got: impl std::fmt::Debug,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(bad(key, expected, got))
    }
}

impl Config {
    /// Loads `path`, or the embedded defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Ok(Config::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Config::from_toml(&text).map_err(|e| match e {
                    ConfigError::Parse { message, .. } => ConfigError::Parse {
                        path: p.to_path_buf(),
                        message,
                    },
                    other => other,
                })
            }
        }
    }

    /// Parses TOML text into typed values and validates them. A parse error names the
    /// key's path (`network.subnet`) and its line.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .span()
                .and_then(|r| text.get(..r.start))
                .map(|before| format!("line {}: ", before.matches('\n').count() + 1))
                .unwrap_or_default();
            let key = if key == "." {
                String::new()
            } else {
                format!("key `{key}`: ")
            };
            ConfigError::Parse {
                path: PathBuf::from("<text>"),
                message: format!(
                    "{line}{key}{}",
                    inner.message().trim_end().replace('\n', " ")
                ),
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every section's ranges, then the rules between sections; names the key of the
    /// first bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.state_dir.is_absolute(),
            "state_dir",
            "an absolute path",
            &self.state_dir,
        )?;
        check(
            valid_domain(&self.domain),
            "domain",
            "a DNS name or IP address such as \"example.com\"",
            &self.domain,
        )?;
        self.http.validate()?;
        self.auth.validate()?;
        self.network.validate()?;
        self.vm.validate()?;
        self.limits.validate()?;
        self.https.validate(&self.http)?;
        self.acme.validate()?;
        self.domains.validate()?;
        self.console.validate()?;
        self.metrics.validate(&self.http, &self.https)?;
        if self.https.enabled && self.https.cert_file.is_none() {
            check(
                self.domain.contains('.') && self.domain.parse::<std::net::IpAddr>().is_err(),
                "domain",
                "a public DNS name such as \"example.com\" when HTTPS certificates come from ACME (or set https.cert_file and https.key_file)",
                &self.domain,
            )?;
        }
        check(
            self.vm_uids().is_some(),
            "vm.uid_base",
            "a uid of at least 65536 whose range (one uid per address of network.subnet) stays below 4294967295",
            self.vm.uid_base,
        )
    }

    /// The uids QEMUs may run as: `uid_base` plus every offset in the subnet; `None` when
    /// the range reaches below 65536 (ordinary users, `nobody`) or up to `u32::MAX`.
    pub fn vm_uids(&self) -> Option<std::ops::RangeInclusive<u32>> {
        let size = 1u32.checked_shl(32 - u32::from(self.network.subnet.prefix()))?;
        let last = crate::addr::vm_uid(self.vm.uid_base, size - 1)?;
        (self.vm.uid_base >= 65536).then_some(self.vm.uid_base..=last)
    }

    /// The dashboard's host name: `console.host`, or `console.DOMAIN`, lowercase.
    pub fn console_host(&self) -> String {
        let h = if self.console.host.is_empty() {
            format!("console.{}", self.domain.trim_end_matches('.'))
        } else {
            self.console.host.trim_end_matches('.').to_string()
        };
        h.to_ascii_lowercase()
    }

    /// The DNS servers guests are given: `network.dns`, or the gateway when it is empty.
    pub fn guest_dns(&self) -> Vec<Ipv4Addr> {
        match &self.network.dns[..] {
            [] => vec![self.network.subnet.gateway()],
            dns => dns.to_vec(),
        }
    }

    /// True when guests are told to ask the gateway, so roost must answer there.
    pub fn serves_guest_dns(&self) -> bool {
        self.guest_dns().contains(&self.network.subnet.gateway())
    }
}

impl HttpConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.max_conns_per_address >= 1,
            "http.max_conns_per_address",
            "at least 1",
            self.max_conns_per_address,
        )?;
        check(
            self.max_conns >= self.max_conns_per_address,
            "http.max_conns",
            "at least http.max_conns_per_address",
            self.max_conns,
        )?;
        for (key, v) in [
            ("http.body_timeout_secs", self.body_timeout_secs),
            ("http.upstream_timeout_secs", self.upstream_timeout_secs),
            ("http.send_timeout_secs", self.send_timeout_secs),
            ("http.tunnel_idle_secs", self.tunnel_idle_secs),
        ] {
            check((1..=86400).contains(&v), key, "seconds from 1 to 86400", v)?;
        }
        check(
            self.max_body_bytes >= 1024,
            "http.max_body_bytes",
            "at least 1024",
            self.max_body_bytes,
        )
    }
}

impl AuthConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check(
            (60..=30 * 86400).contains(&self.token_ttl_secs),
            "auth.token_ttl_secs",
            "seconds from 60 to 2592000",
            self.token_ttl_secs,
        )?;
        for (key, v) in [
            ("auth.login_attempts", self.login_attempts),
            (
                "auth.login_user_failures_per_hour",
                self.login_user_failures_per_hour,
            ),
            ("auth.register_per_hour", self.register_per_hour),
        ] {
            check(v >= 1, key, "at least 1", v)?;
        }
        check(
            self.login_window_secs >= 1,
            "auth.login_window_secs",
            "at least 1",
            self.login_window_secs,
        )
    }
}

impl NetworkConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let b = &self.bridge;
        check(
            !b.is_empty()
                && b.len() <= 15
                && b.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "network.bridge",
            "an interface name of 1-15 characters [A-Za-z0-9_-]",
            b,
        )?;
        // Ipv4Net itself stops at /30; below /8 the per-VM uid range is absurd.
        check(
            self.subnet.prefix() >= 8,
            "network.subnet",
            "an IPv4 network \"a.b.c.d/len\" with len 8-30, e.g. \"10.88.0.0/24\"",
            self.subnet.to_string(),
        )?;
        check(
            self.uplink.is_empty() || crate::addr::valid_ifname(&self.uplink),
            "network.uplink",
            "an interface name, or \"\" for the default route's",
            &self.uplink,
        )?;
        check(
            self.dns_queries_per_sec >= 1 && self.dns_burst >= 1,
            "network.dns_queries_per_sec",
            "dns_queries_per_sec and dns_burst of at least 1",
            (self.dns_queries_per_sec, self.dns_burst),
        )
    }
}

impl VmConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("vm.egress_mbit", self.egress_mbit),
            ("vm.ingress_mbit", self.ingress_mbit),
        ] {
            check(v <= 100_000, key, "Mbit/s from 0 (no cap) to 100000", v)?;
        }
        check(
            self.egress_max_conns >= 1 && self.egress_new_conns_per_sec >= 1,
            "vm.egress_max_conns",
            "egress_max_conns and egress_new_conns_per_sec of at least 1",
            (self.egress_max_conns, self.egress_new_conns_per_sec),
        )?;
        check(
            self.image.is_absolute(),
            "vm.image",
            "an absolute path to an image directory",
            &self.image,
        )?;
        check(
            (64..=1024 * 1024).contains(&self.memory_mib),
            "vm.memory_mib",
            "MiB from 64 to 1048576",
            self.memory_mib,
        )?;
        check(
            (1..=64).contains(&self.vcpus),
            "vm.vcpus",
            "a count from 1 to 64",
            self.vcpus,
        )?;
        check(
            (1..=2048).contains(&self.disk_gib),
            "vm.disk_gib",
            "GiB from 1 to 2048",
            self.disk_gib,
        )?;
        check(
            (1..=3600).contains(&self.stop_timeout_secs),
            "vm.stop_timeout_secs",
            "seconds from 1 to 3600",
            self.stop_timeout_secs,
        )?;
        check(
            (10..=3600).contains(&self.boot_timeout_secs),
            "vm.boot_timeout_secs",
            "seconds from 10 to 3600",
            self.boot_timeout_secs,
        )?;
        check(
            self.sleep_after_secs <= 7 * 86400,
            "vm.sleep_after_secs",
            "seconds from 0 (never) to 604800",
            self.sleep_after_secs,
        )?;
        check(
            (1..=300).contains(&self.wake_timeout_secs),
            "vm.wake_timeout_secs",
            "seconds from 1 to 300",
            self.wake_timeout_secs,
        )
    }
}

impl HttpsConfig {
    fn validate(&self, http: &HttpConfig) -> Result<(), ConfigError> {
        check(
            self.cert_file.is_some() == self.key_file.is_some(),
            "https.cert_file",
            "https.cert_file and https.key_file both set, or neither",
            (&self.cert_file, &self.key_file),
        )?;
        for (key, p) in [
            ("https.cert_file", &self.cert_file),
            ("https.key_file", &self.key_file),
        ] {
            if let Some(p) = p {
                check(p.is_absolute(), key, "an absolute path", p)?;
            }
        }
        check(
            !self.enabled || self.listen != http.listen,
            "https.listen",
            "an address other than http.listen",
            self.listen,
        )
    }
}

impl AcmeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.directory.starts_with("https://"),
            "acme.directory",
            "an https:// URL of an ACME directory",
            &self.directory,
        )?;
        check(
            self.email.is_empty()
                || (self.email.contains('@') && !self.email.contains(char::is_whitespace)),
            "acme.email",
            "an email address, or \"\"",
            &self.email,
        )?;
        if let Some(p) = &self.ca_roots {
            check(
                p.is_absolute(),
                "acme.ca_roots",
                "an absolute path to a PEM file",
                p,
            )?;
        }
        if !self.dns_alias.is_empty() {
            check(
                valid_domain(&self.dns_alias),
                "acme.dns_alias",
                "a DNS name such as \"acme.example.net\", or \"\"",
                &self.dns_alias,
            )?;
            check(
                self.dns_listen.is_some(),
                "acme.dns_alias",
                "set together with acme.dns_listen (where roost answers for it)",
                &self.dns_alias,
            )?;
        }
        Ok(())
    }
}

impl LimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("limits.memory_overcommit", self.memory_overcommit),
            ("limits.disk_overcommit", self.disk_overcommit),
        ] {
            check(
                (0.1..=10.0).contains(&v),
                key,
                "a ratio from 0.1 to 10.0",
                v,
            )?;
        }
        check(
            (1..=64).contains(&self.max_concurrent_creates),
            "limits.max_concurrent_creates",
            "a count from 1 to 64",
            self.max_concurrent_creates,
        )
    }
}

fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match Config::from_toml(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::from_toml("").ok(), Some(Config::default()));
    }

    #[test]
    fn the_example_file_parses_and_matches_the_defaults() {
        let text = include_str!("../roost.example.toml");
        assert_eq!(Config::from_toml(text).ok(), Some(Config::default()));
    }

    #[test]
    fn values_are_read() {
        let c = Config::from_toml(
            "domain = \"example.com\"\n[http]\nlisten = \"127.0.0.1:8080\"\n[ssh]\nport_range = \"30000-30009\"\n[network]\nsubnet = \"10.9.0.0/16\"\n[vm]\naccel = \"tcg\"\n",
        )
        .expect("valid");
        assert_eq!(c.domain, "example.com");
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(
            c.ssh.port_range,
            PortRange {
                low: 30000,
                high: 30009
            }
        );
        assert_eq!(c.network.subnet.gateway(), Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(c.guest_dns(), vec![Ipv4Addr::new(10, 9, 0, 1)]);
        assert!(c.serves_guest_dns());
        assert_eq!(c.vm.accel, AccelSetting::Tcg);
    }

    #[test]
    fn unknown_keys_are_named() {
        assert!(err("colour = 1").contains("colour"));
        let e = err("[vm]\nmemory = 5");
        assert!(e.contains("line 2") && e.contains("`vm.memory`"), "{e}");
        assert!(err("[nope]\n").contains("nope"));
    }

    #[test]
    fn invalid_values_name_key_and_form() {
        for (text, key) in [
            ("[ssh]\nport_range = \"abc\"", "ssh.port_range"),
            ("[ssh]\nport_range = \"3000-20\"", "ssh.port_range"),
            ("[ssh]\nport_range = \"1-70000\"", "ssh.port_range"),
            ("[network]\nsubnet = \"10.0.0.1/24\"", "network.subnet"),
            ("[network]\nsubnet = \"10.0.0.0/31\"", "network.subnet"),
            ("[network]\nsubnet = \"banana\"", "network.subnet"),
            ("[network]\nsubnet = \"10.0.0.0/7\"", "network.subnet"),
            (
                "[network]\negress_deny = [\"10.0.0.0/8\", \"10.0.0.1/8\"]",
                "network.egress_deny[1]",
            ),
            ("[network]\nuplink = \"a b\"", "network.uplink"),
            (
                "[network]\nbridge = \"a-very-long-bridge-name\"",
                "network.bridge",
            ),
            ("[vm]\nvcpus = 0", "vm.vcpus"),
            ("[http]\nbody_timeout_secs = 0", "http.body_timeout_secs"),
            ("[http]\ntunnel_idle_secs = 100000", "http.tunnel_idle_secs"),
            ("[vm]\nmemory_mib = 1", "vm.memory_mib"),
            ("[vm]\ndisk_gib = 0", "vm.disk_gib"),
            ("[vm]\nuid_base = 1000", "vm.uid_base"),
            ("[vm]\nuid_base = 65535", "vm.uid_base"),
            ("[vm]\nuid_base = 4294967040", "vm.uid_base"),
            (
                "[network]\nsubnet = \"10.0.0.0/8\"\n[vm]\nuid_base = 4278190080",
                "vm.uid_base",
            ),
            (
                "[limits]\nmemory_overcommit = 0.0",
                "limits.memory_overcommit",
            ),
            (
                "[limits]\nmax_concurrent_creates = 0",
                "limits.max_concurrent_creates",
            ),
            ("state_dir = \"relative\"", "state_dir"),
            ("[https]\ncert_file = \"/a.pem\"", "https.cert_file"),
            (
                "[https]\ncert_file = \"a.pem\"\nkey_file = \"/k\"",
                "https.cert_file",
            ),
            (
                "[https]\nenabled = true\nlisten = \"0.0.0.0:80\"\n[http]\nlisten = \"0.0.0.0:80\"",
                "https.listen",
            ),
            ("[https]\nenabled = true", "domain"),
            ("[acme]\ndirectory = \"http://x/dir\"", "acme.directory"),
            ("[acme]\nemail = \"nobody\"", "acme.email"),
            ("[acme]\ndns_alias = \"acme.example.net\"", "acme.dns_alias"),
            (
                "[acme]\ndns_listen = \"127.0.0.1:53\"\ndns_alias = \"not a name\"",
                "acme.dns_alias",
            ),
            ("domain = \"bad domain\"", "domain"),
        ] {
            let e = err(text);
            assert!(
                e.contains(&format!("`{key}`"))
                    && (e.contains("expected") || e.contains("invalid")),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn wrong_types_and_enum_values_are_parse_errors_naming_the_key() {
        let e = err("[vm]\naccel = \"fast\"");
        assert!(e.contains("accel") || e.contains("fast"), "{e}");
        let e = err("[vm]\nvcpus = \"two\"");
        assert!(e.contains("line 2") && e.contains("`vm.vcpus`"), "{e}");
        assert!(err("[http]\nlisten = \"nowhere\"").contains("`http.listen`"));
        let e = err("\n\n[network]\nsubnet = \"10.0.0.1/24\"");
        assert!(
            e.contains("line 4") && e.contains("host bits are set"),
            "a malformed value says why and where: {e}"
        );
    }

    #[test]
    fn metrics_listen_is_an_address_or_empty() {
        let on = Config::from_toml("[metrics]\nlisten = \"127.0.0.1:9464\"").expect("valid");
        assert_eq!(
            on.metrics.listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        let off = Config::from_toml("[metrics]\nlisten = \"\"").expect("valid");
        assert_eq!(off.metrics.listen, None);
        let e = err("[metrics]\nlisten = \"localhost\"");
        assert!(
            e.contains("`metrics.listen`") && e.contains("127.0.0.1:9464"),
            "{e}"
        );
        // Not on a port the HTTP or HTTPS listener takes.
        for text in [
            "[http]\nlisten = \"0.0.0.0:8080\"\n[metrics]\nlisten = \"127.0.0.1:8080\"",
            "[https]\nenabled = true\ncert_file = \"/c\"\nkey_file = \"/k\"\nlisten = \"127.0.0.1:8443\"\n[metrics]\nlisten = \"0.0.0.0:8443\"",
        ] {
            let e = err(text);
            assert!(e.contains("`metrics.listen`") && e.contains("expected"), "{text}: {e}");
        }
        assert!(Config::from_toml(
            "[http]\nlisten = \"127.0.0.1:8080\"\n[metrics]\nlisten = \"127.0.0.2:8080\""
        )
        .is_ok());
    }
}
