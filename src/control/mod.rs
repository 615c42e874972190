//! The operator's control plane: the requests `roost user …`, `roost vm …` and
//! `roost status` make, and the one function that carries them out.
//!
//! The same [`Ops::exec`] runs in two places: inside the daemon behind a local socket that
//! only root can open ([`server`]), and in the CLI itself, directly on the store, while the
//! daemon is stopped. So a command behaves the same whether the daemon runs or not.
//! Owns the wire types of that socket (JSON lines); knows nothing of HTTP.

pub mod client;
pub mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::auth::{Auth, AuthError};
use crate::config::Config;
use crate::hosting::{self, HostingError, Hostings, VmDetail, VmStatus};
use crate::store::{rfc3339, HostingId, Role, Store, StoreError, User};

/// The control socket of the daemon that uses `state_dir`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("control.sock")
}

/// The audit log's actor for operator commands.
pub const ACTOR: &str = "cli";

/// One operator command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    UserAdd {
        username: String,
        password: String,
        admin: bool,
    },
    UserList,
    UserSetAdmin {
        username: String,
        admin: bool,
    },
    UserDisable {
        username: String,
    },
    UserEnable {
        username: String,
    },
    /// Deletes an account (refused while it has a hosting).
    UserDelete {
        username: String,
    },
    /// The operator sets a password (no current one needed).
    UserPassword {
        username: String,
        password: String,
    },
    VmList,
    /// A hosting by id or by slug.
    VmShow {
        vm: String,
    },
    Status,
    /// A consistent copy of the database written to `path` (absolute; never replaced).
    Backup {
        path: PathBuf,
    },
}

/// What a command answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Reply {
    User(UserRow),
    Users(Vec<UserRow>),
    Vms(Vec<VmRow>),
    Vm(VmDetailRow),
    Status(StatusReport),
    Backup(BackupRow),
}

/// A backup that was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRow {
    pub path: PathBuf,
    pub bytes: u64,
    /// Rows copied, by table.
    pub rows: BTreeMap<String, u64>,
}

/// An account as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub role: String,
    pub email: Option<String>,
    pub created_at: String,
    pub disabled_at: Option<String>,
}

/// A hosting's VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRow {
    pub id: String,
    pub slug: String,
    pub owner: String,
    pub state: String,
    pub reason: Option<String>,
    pub desired_running: bool,
    pub ip: String,
    pub ssh_port: u16,
    pub pid: Option<i32>,
    pub uptime_secs: Option<u64>,
    pub qmp_status: Option<String>,
    pub created_at: String,
}

/// A VM with its resource figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmDetailRow {
    #[serde(flatten)]
    pub vm: VmRow,
    pub tap: String,
    pub mac: String,
    pub cpu_time_secs: Option<f64>,
    /// The VM's cgroup memory (else the process's resident set), as the metrics show it.
    pub memory_bytes: Option<u64>,
    pub rss_bytes: Option<u64>,
    pub tap_rx_bytes: Option<u64>,
    pub tap_tx_bytes: Option<u64>,
    /// The disk's snapshots, oldest first: name and when taken.
    #[serde(default)]
    pub snapshots: Vec<(String, String)>,
    pub serial_tail: Vec<String>,
}

/// The running daemon, as it describes itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub version: String,
    pub started_at: String,
    pub uptime_secs: u64,
    pub http_listen: String,
    pub domain: String,
    /// `enabled`, or why VM hosting is disabled on this host.
    pub vm_hosting: String,
}

/// `roost status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// `None` when the daemon is not running (the figures then come from the store).
    pub daemon: Option<DaemonInfo>,
    pub state_dir: String,
    pub users: usize,
    pub admins: usize,
    pub disabled_users: usize,
    /// Hostings per state (`running`, `booting`, …).
    pub hostings: BTreeMap<String, usize>,
    /// QEMU processes found running.
    pub vms_running: usize,
}

/// Why a command failed. Every message names its cause once.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Auth(String),
    #[error("no hosting {0:?} (give its id or its slug)")]
    NoSuchVm(String),
    #[error("{0}")]
    Hosting(String),
    #[error("store: {0}")]
    Store(String),
    #[error("backup: {0}")]
    Backup(String),
}

/// An [`AuthError`] as the operator reads it: what could not be done, then why.
fn cannot(what: String) -> impl FnOnce(AuthError) -> ControlError {
    move |e| ControlError::Auth(format!("{what}: {}", crate::error_chain(&e)))
}

impl From<AuthError> for ControlError {
    fn from(e: AuthError) -> Self {
        ControlError::Auth(crate::error_chain(&e))
    }
}

impl From<HostingError> for ControlError {
    fn from(e: HostingError) -> Self {
        ControlError::Hosting(crate::error_chain(&e))
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        ControlError::Store(crate::error_chain(&e))
    }
}

/// Where commands are carried out: inside the daemon (with its live VM manager) or in the
/// CLI on the store alone.
pub struct Ops {
    cfg: Arc<Config>,
    store: Store,
    auth: Arc<Auth>,
    live: Option<Live>,
}

struct Live {
    hostings: Hostings,
    started: OffsetDateTime,
    started_mono: std::time::Instant,
}

impl Ops {
    /// Inside the daemon.
    pub fn live(cfg: Arc<Config>, store: Store, auth: Arc<Auth>, hostings: Hostings) -> Ops {
        Ops {
            cfg,
            store,
            auth,
            live: Some(Live {
                hostings,
                started: crate::store::now(),
                started_mono: std::time::Instant::now(),
            }),
        }
    }

    /// In the CLI, with the daemon stopped (the store is opened by the caller).
    pub fn offline(cfg: Arc<Config>, store: Store, auth: Arc<Auth>) -> Ops {
        Ops {
            cfg,
            store,
            auth,
            live: None,
        }
    }

    /// Carries out one command.
    pub async fn exec(&self, req: Request) -> Result<Reply, ControlError> {
        match req {
            Request::UserAdd {
                username,
                password,
                admin,
            } => {
                let role = if admin { Role::Admin } else { Role::User };
                let u = self
                    .auth
                    .register(None, &username, &password, None, role, ACTOR)
                    .await
                    .map_err(cannot(format!("cannot add user {username:?}")))?;
                Ok(Reply::User(user_row(&u)))
            }
            Request::UserList => Ok(Reply::Users(
                self.auth.users()?.iter().map(user_row).collect(),
            )),
            Request::UserSetAdmin { username, admin } => Ok(Reply::User(user_row(
                &self.auth.set_admin(&username, admin, ACTOR)?,
            ))),
            Request::UserDisable { username } => {
                Ok(Reply::User(user_row(&self.auth.disable(&username, ACTOR)?)))
            }
            Request::UserEnable { username } => {
                Ok(Reply::User(user_row(&self.auth.enable(&username, ACTOR)?)))
            }
            Request::UserDelete { username } => {
                let u = self
                    .auth
                    .delete_account(None, &username, None, ACTOR)
                    .await
                    .map_err(cannot(format!("cannot delete user {username:?}")))?;
                Ok(Reply::User(user_row(&u)))
            }
            Request::UserPassword { username, password } => {
                let u = self
                    .auth
                    .change_password(None, &username, None, &password, ACTOR)
                    .await
                    .map_err(cannot(format!("cannot set the password of {username:?}")))?;
                Ok(Reply::User(user_row(&u)))
            }
            Request::VmList => {
                let mut vms: Vec<VmRow> = self.vm_list().await?.into_iter().map(vm_row).collect();
                vms.sort_by(|a, b| a.slug.cmp(&b.slug));
                Ok(Reply::Vms(vms))
            }
            Request::VmShow { vm } => {
                let id = self.find_vm(&vm)?;
                let d = match &self.live {
                    Some(l) => l.hostings.vm_detail(id).await?,
                    None => hosting::offline::vm_detail(&self.cfg, &self.store, id)?,
                };
                Ok(Reply::Vm(detail_row(d)))
            }
            Request::Status => self.status().await.map(Reply::Status),
            Request::Backup { path } => {
                // Blocking file I/O, as long as the database is big: off the runtime.
                let store = self.store.clone();
                let r = tokio::task::spawn_blocking(move || store.backup_to(&path))
                    .await
                    .map_err(|e| ControlError::Backup(e.to_string()))?
                    .map_err(|e| ControlError::Backup(crate::error_chain(&e)))?;
                tracing::info!(path = %r.path.display(), bytes = r.bytes, "database backed up");
                Ok(Reply::Backup(BackupRow {
                    path: r.path,
                    bytes: r.bytes,
                    rows: r.rows,
                }))
            }
        }
    }

    async fn vm_list(&self) -> Result<Vec<VmStatus>, ControlError> {
        Ok(match &self.live {
            Some(l) => l.hostings.vm_list().await?,
            None => hosting::offline::vm_list(&self.cfg, &self.store)?,
        })
    }

    /// A hosting id, from an id or a slug.
    fn find_vm(&self, what: &str) -> Result<HostingId, ControlError> {
        if let Ok(id) = what.parse::<HostingId>() {
            if self.store.hosting(id)?.is_some() {
                return Ok(id);
            }
        }
        self.store
            .hostings()?
            .into_iter()
            .find(|h| h.slug == what)
            .map(|h| h.id)
            .ok_or_else(|| ControlError::NoSuchVm(what.to_owned()))
    }

    async fn status(&self) -> Result<StatusReport, ControlError> {
        let users = self.store.users()?;
        let vms = self.vm_list().await?;
        let mut hostings = BTreeMap::new();
        for v in &vms {
            *hostings
                .entry(v.hosting.state.as_str().to_owned())
                .or_insert(0) += 1;
        }
        let daemon = self.live.as_ref().map(|l| DaemonInfo {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: rfc3339(l.started),
            uptime_secs: l.started_mono.elapsed().as_secs(),
            http_listen: self.cfg.http.listen.to_string(),
            domain: self.cfg.domain.clone(),
            vm_hosting: match l.hostings.disabled_reason() {
                Some(r) => format!("disabled: {r}"),
                None => "enabled".to_owned(),
            },
        });
        Ok(StatusReport {
            daemon,
            state_dir: self.cfg.state_dir.display().to_string(),
            admins: users.iter().filter(|u| u.role == Role::Admin).count(),
            disabled_users: users.iter().filter(|u| u.disabled_at.is_some()).count(),
            users: users.len(),
            hostings,
            vms_running: vms.iter().filter(|v| v.pid.is_some()).count(),
        })
    }
}

fn user_row(u: &User) -> UserRow {
    UserRow {
        id: u.id.to_string(),
        username: u.username.clone(),
        role: u.role.as_str().to_owned(),
        email: u.email.clone(),
        created_at: rfc3339(u.created_at),
        disabled_at: u.disabled_at.map(rfc3339),
    }
}

fn vm_row(s: VmStatus) -> VmRow {
    let h = s.hosting;
    VmRow {
        id: h.id.to_string(),
        slug: h.slug,
        owner: s.owner,
        state: h.state.as_str().to_owned(),
        reason: h.reason,
        desired_running: h.desired_running,
        ip: h.ip.to_string(),
        ssh_port: h.ssh_port,
        pid: s.pid,
        uptime_secs: s.uptime_secs,
        qmp_status: s.qmp_status,
        created_at: rfc3339(h.created_at),
    }
}

fn detail_row(d: VmDetail) -> VmDetailRow {
    let (tap, mac) = (d.status.hosting.tap.clone(), d.status.hosting.mac.clone());
    let snapshots = d
        .status
        .hosting
        .snapshots
        .iter()
        .map(|s| (s.name.clone(), crate::store::rfc3339(s.created_at)))
        .collect();
    let (cpu_time_secs, memory_bytes, rss_bytes) = (
        d.status.cpu_time_secs,
        d.status.memory_bytes,
        d.status.rss_bytes,
    );
    VmDetailRow {
        vm: vm_row(d.status),
        tap,
        mac,
        cpu_time_secs,
        memory_bytes,
        rss_bytes,
        tap_rx_bytes: d.tap_rx_bytes,
        tap_tx_bytes: d.tap_tx_bytes,
        snapshots,
        serial_tail: d.serial_tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_tagged_json() {
        let r = Request::UserAdd {
            username: "ops".into(),
            password: "pw".into(),
            admin: true,
        };
        let s = serde_json::to_string(&r).expect("json");
        assert_eq!(
            s,
            r#"{"op":"user_add","username":"ops","password":"pw","admin":true}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&s).expect("back"), r);
        assert_eq!(
            serde_json::to_string(&Request::VmList).expect("json"),
            r#"{"op":"vm_list"}"#
        );
        let reply: Result<Reply, String> = Ok(Reply::Users(vec![]));
        assert_eq!(
            serde_json::to_string(&reply).expect("json"),
            r#"{"Ok":{"kind":"users","data":[]}}"#
        );
    }
}
