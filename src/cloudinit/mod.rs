//! NoCloud documents as data, and the `cidata` seed image that carries them into a VM.
//!
//! This module owns: the operator-editable templates (`cloud-init/` at the repository root,
//! embedded into the binary as a fallback), the validation of everything a user can influence
//! in them (names, SSH public keys), the building of `meta-data`, `user-data` and
//! `network-config`, and the FAT image with volume label `CIDATA` that cloud-init's NoCloud
//! datasource finds at boot.
//!
//! What it must not do: know about users, hostings or HTTP (it receives a [`SeedInput`] of plain
//! values), allocate addresses or MACs (that is `net`), or start anything. User text never
//! reaches a document as text to interpolate: templates are parsed into YAML values, whole
//! scalars that name a placeholder (`$username`) are replaced by values, and the result is
//! emitted by [`yaml::to_cloud_yaml`], which quotes every string that YAML 1.1 (cloud-init's
//! PyYAML) could read as anything but a string. The HTML page is the one text template, and
//! every value put into it is HTML-escaped.

mod documents;
mod keys;
mod names;
mod seed;
pub mod yaml;

use std::path::PathBuf;

pub use documents::{html_escape, seed_documents, Templates};
pub use keys::{generate_ed25519, parse_public_key, KeyAlgorithm, ValidatedKey};
pub use names::{is_system_account, validate_hostname, validate_slug, validate_username};
pub use seed::{read_seed_image, write_seed_image, SEED_LABEL};

/// The crypt(3) SHA-512 hash (`$6$rounds=…$salt$…`) of a console password, as
/// `/etc/shadow` holds it. Costs a few milliseconds: call it off the async threads.
pub fn hash_console_password(password: &str) -> Result<String, CloudInitError> {
    sha_crypt::sha512_simple(password, &sha_crypt::Sha512Params::default()).map_err(|_| {
        CloudInitError::InvalidInput {
            field: "console password",
            reason: "cannot be hashed",
        }
    })
}

use std::net::Ipv4Addr;

/// Everything one hosting contributes to its seed, as plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedInput {
    /// Unique per hosting incarnation (a new disk means a new id): cloud-init runs its
    /// per-instance steps (user, keys, default page) once per id, so a reboot keeps the
    /// user's own page.
    pub instance_id: String,
    /// The VM's hostname: one DNS label, `[a-z0-9-]`.
    pub hostname: String,
    /// The login created in the VM: `[a-z_][a-z0-9_-]*`, not a system account.
    pub username: String,
    /// OpenSSH public keys, one line each; validated with [`parse_public_key`].
    pub ssh_authorized_keys: Vec<String>,
    /// The VM's address on the bridge.
    pub ip: Ipv4Addr,
    /// Prefix length of the bridge subnet.
    pub prefix_len: u8,
    /// The host's address on the bridge.
    pub gateway: Ipv4Addr,
    /// Resolvers for the VM (may be empty).
    pub dns: Vec<Ipv4Addr>,
    /// The MAC address QEMU gives the VM's NIC.
    pub mac: [u8; 6],
    /// The hosting's slug, shown on the default page (`http://DOMAIN/<slug>/`).
    pub slug: String,
    /// The public domain of the service, shown on the default page.
    pub domain: String,
    /// The public SSH port the forwarder maps to this VM, shown on the default page.
    pub ssh_port: u16,
    /// Add `packages: [nginx]` (for base images without nginx).
    pub install_nginx: bool,
    /// A crypt(3) hash (`$6$…`) that lets the owner log in on the serial console when SSH
    /// is broken. SSH never accepts passwords (`ssh_pwauth: false`). `None`: no password.
    pub console_password_hash: Option<String>,
}

/// The three NoCloud documents, as the exact bytes written into the seed image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// `meta-data`: `instance-id` and `local-hostname`.
    pub meta_data: String,
    /// `user-data`: starts with `#cloud-config`.
    pub user_data: String,
    /// `network-config`: network config version 2.
    pub network_config: String,
}

/// Why a seed could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum CloudInitError {
    #[error("cannot read template {path}")]
    ReadTemplate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("template {name} is not valid YAML")]
    TemplateYaml {
        name: &'static str,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("template {name}: {reason}")]
    TemplateShape { name: &'static str, reason: String },
    #[error("template {name} uses unknown placeholder {placeholder}")]
    UnknownPlaceholder {
        name: &'static str,
        placeholder: String,
    },
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        field: &'static str,
        reason: &'static str,
    },
    #[error("SSH public key must be a single line")]
    KeyNotOneLine,
    #[error("SSH public key is not in OpenSSH format")]
    KeyParse(#[source] ssh_key::Error),
    #[error("SSH key algorithm {0} is not allowed (use ed25519, ecdsa or rsa)")]
    KeyAlgorithm(String),
    #[error("RSA key has {bits} bits, at least 2048 are required")]
    KeyTooShort { bits: usize },
    #[error("SSH key comment contains control characters")]
    KeyComment,
    #[error("cannot generate an SSH key")]
    KeyGenerate(#[source] ssh_key::Error),
    #[error("cannot write a document")]
    Emit(#[source] std::fmt::Error),
    #[error("seed image {path}")]
    SeedIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("seed image {path} has no file {file}")]
    SeedMissing { path: PathBuf, file: &'static str },
}
