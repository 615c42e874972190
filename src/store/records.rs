//! Typed records kept in the store, and their typed ids.
//!
//! Records are serialised as JSON inside redb values so that adding an optional field
//! needs no migration; a change of meaning bumps the schema version instead.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use ulid::Ulid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Ulid);

        impl $name {
            pub fn new() -> Self {
                $name(Ulid::new())
            }
            pub(crate) fn key(self) -> u128 {
                self.0 .0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ulid::DecodeError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ulid::from_string(s).map($name)
            }
        }
    };
}

typed_id!(
    /// Identifies a user account.
    UserId
);
typed_id!(
    /// Identifies a hosting (one VM and its routes).
    HostingId
);
typed_id!(
    /// Identifies one registered SSH public key.
    SshKeyId
);

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

/// An account. The username is also the site slug.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub email: Option<String>,
    /// argon2id PHC string; never leaves the daemon.
    pub password_hash: String,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When an operator disabled the account; a disabled account cannot log in and its
    /// tokens are refused.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
    /// Tokens carry the generation they were issued in; disabling the account moves it on,
    /// which revokes every token issued so far (re-enabling does not bring them back).
    #[serde(default)]
    pub token_generation: u32,
}

/// A public key a user registered for their hostings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshKey {
    pub id: SshKeyId,
    pub user: UserId,
    /// One line in OpenSSH format, normalised.
    pub public_key: String,
    /// `SHA256:...` fingerprint, unique per user.
    pub fingerprint: String,
    pub comment: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Where a hosting is in its life. The store holds the desired side too
/// (`desired_running`), so the reconciler can converge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostingState {
    Provisioning,
    Booting,
    Running,
    Paused,
    Stopped,
    Failed,
    Deleting,
}

impl HostingState {
    /// Every state, in declaration order: `ALL[s as usize] == s`.
    pub const ALL: [HostingState; 7] = [
        HostingState::Provisioning,
        HostingState::Booting,
        HostingState::Running,
        HostingState::Paused,
        HostingState::Stopped,
        HostingState::Failed,
        HostingState::Deleting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HostingState::Provisioning => "provisioning",
            HostingState::Booting => "booting",
            HostingState::Running => "running",
            HostingState::Paused => "paused",
            HostingState::Stopped => "stopped",
            HostingState::Failed => "failed",
            HostingState::Deleting => "deleting",
        }
    }
}

/// A hosting: one VM, its reservations and its routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hosting {
    pub id: HostingId,
    pub user: UserId,
    /// Site slug (the owner's username): `/<slug>/` and `<slug>.DOMAIN`.
    pub slug: String,
    pub state: HostingState,
    /// Why the hosting is `failed` (or what the last error was).
    pub reason: Option<String>,
    /// Whether the VM should be running; the reconciler converges to it.
    pub desired_running: bool,
    pub ip: Ipv4Addr,
    pub ssh_port: u16,
    pub mac: String,
    pub tap: String,
    /// Counts boots from a fresh seed, so cloud-init's instance-id changes per incarnation.
    pub incarnation: u32,
    /// Authorised keys installed into the VM at creation.
    pub ssh_keys: Vec<String>,
    /// The owner's serial-console password as a crypt(3) SHA-512 hash, if they set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_password_hash: Option<String>,
    /// The disk's snapshots, oldest first. The VM's qcow2 overlay holds their data; a
    /// record is written before its snapshot is taken and removed after it is deleted, so
    /// the capacity it is charged never lags behind the disk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<Snapshot>,
    /// The owner lets the VM sleep (pause) while nobody visits its site or holds an SSH
    /// session, and wake on the next request or connection.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sleep_when_idle: bool,
    /// The VM is paused because it was idle (state `paused`): a visit wakes it. An
    /// administrator's pause is not a sleep, and no visit resumes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub asleep: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// One snapshot of a hosting's disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// One line of the append-only audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who did it: a username, or `system` / `cli`.
    pub actor: String,
    /// What was done, e.g. `user.register`, `vm.stop`.
    pub action: String,
    /// What it was done to (an id or name).
    pub target: String,
    pub detail: String,
}
