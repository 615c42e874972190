//! The store: the only code that opens redb and knows its tables.
//!
//! Every write that belongs together happens in one redb write transaction (redb
//! serialises writers, so uniqueness checks and inserts cannot interleave). Records are
//! JSON values under typed keys; unique indexes (usernames, IPs, ports, key fingerprints)
//! are tables of their own. The schema version is checked at open: an older file is
//! upgraded in place, a newer one is refused with a clear message.
//! This module knows nothing about HTTP, QEMU or the network.

mod backup;
mod domains;
mod records;
mod sessions;
mod watch;

pub use backup::{BackupError, BackupReport};
pub use domains::{Domain, DomainState};
pub use sessions::Session;
pub use watch::{Closed, UserWatch};

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;
use time::OffsetDateTime;

pub use records::{
    AuditEntry, Hosting, HostingId, HostingState, Role, Snapshot, SshKey, SshKeyId, User, UserId,
};

/// The schema this build writes. Bump it with a new entry in [`MIGRATIONS`].
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const USERS: TableDefinition<u128, &[u8]> = TableDefinition::new("users");
const USERNAMES: TableDefinition<&str, u128> = TableDefinition::new("usernames");
const SSH_KEYS: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("ssh_keys");
const HOSTINGS: TableDefinition<u128, &[u8]> = TableDefinition::new("hostings");
const HOSTINGS_BY_USER: TableDefinition<(u128, u128), ()> =
    TableDefinition::new("hostings_by_user");
const IP_RESERVATIONS: TableDefinition<u32, u128> = TableDefinition::new("ip_reservations");
const PORT_RESERVATIONS: TableDefinition<u16, u128> = TableDefinition::new("port_reservations");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// One upgrade step: migrates a file from version `i + 1` to `i + 2`.
type Migration = fn(&redb::WriteTransaction) -> Result<(), StoreError>;
/// Upgrade steps, oldest first. Empty while there is only schema 1.
const MIGRATIONS: &[Migration] = &[];

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path} was written by a newer roost (schema {found}, this build knows up to {supported}); upgrade roost or restore a backup")]
    TooNew {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("database {path} is in use by another roost process")]
    Locked { path: PathBuf },
    #[error("cannot open database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    #[error("database")]
    Db(#[source] Box<redb::Error>),
    #[error("corrupt record in table {table}")]
    Corrupt {
        table: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("username {0:?} is taken")]
    UsernameTaken(String),
    #[error("no such user")]
    NoSuchUser,
    #[error("this key is already registered")]
    DuplicateKey,
    #[error("at most {0} keys per user")]
    TooManyKeys(usize),
    #[error("no such key")]
    NoSuchKey,
    #[error("no such hosting")]
    NoSuchHosting,
    #[error("the user already has a hosting")]
    HostingExists,
    #[error("no free address is left in the subnet")]
    NoFreeIp,
    #[error("no free port is left in the SSH port range")]
    NoFreePort,
    #[error("the domain {0} is already claimed")]
    DomainTaken(String),
    #[error("at most {0} domains per hosting")]
    TooManyDomains(usize),
    #[error("no such domain")]
    NoSuchDomain,
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain records cannot fail (no maps with non-string keys).
    serde_json::to_vec(v).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { table, source })
}

/// Fields of a new account.
pub struct NewUser<'a> {
    pub username: &'a str,
    pub email: Option<&'a str>,
    pub password_hash: &'a str,
    pub role: Role,
}

/// The store handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: std::sync::Arc<Database>,
    path: PathBuf,
    /// Announces committed writes by the user they concern, for whoever shows them live.
    announcer: std::sync::Arc<watch::Announcer>,
}

impl Store {
    /// Opens (creating if needed) `dir/roost.redb`, checks and upgrades the schema.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join("roost.redb");
        let db = Database::create(&path).map_err(|source| match source {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path.clone() },
            source => StoreError::Open {
                path: path.clone(),
                source: Box::new(source),
            },
        })?;
        let store = Store {
            db: std::sync::Arc::new(db),
            path,
            announcer: std::sync::Arc::new(watch::Announcer::new()),
        };
        store.check_schema()?;
        Ok(store)
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        let found = {
            let meta = tx.open_table(META)?;
            let v = meta.get("schema_version")?.map(|g| g.value());
            v
        };
        match found {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::TooNew {
                    path: self.path.clone(),
                    found: v,
                    supported: SCHEMA_VERSION,
                })
            }
            Some(v) => {
                for (i, step) in MIGRATIONS.iter().enumerate().skip(v as usize - 1) {
                    tracing::info!(from = i + 1, to = i + 2, "upgrading store schema");
                    step(&tx)?;
                }
            }
            None => {}
        }
        // Create every table so that read transactions never meet a missing one.
        tx.open_table(USERS)?;
        tx.open_table(USERNAMES)?;
        tx.open_table(SSH_KEYS)?;
        tx.open_table(HOSTINGS)?;
        tx.open_table(HOSTINGS_BY_USER)?;
        tx.open_table(IP_RESERVATIONS)?;
        tx.open_table(PORT_RESERVATIONS)?;
        tx.open_table(AUDIT)?;
        tx.open_table(domains::DOMAINS)?;
        tx.open_table(sessions::SESSIONS)?;
        tx.open_table(META)?
            .insert("schema_version", SCHEMA_VERSION)?;
        tx.commit()?;
        Ok(())
    }

    /// Wakes whoever watches `user` ([`Store::watch_user`]).
    fn written_for(&self, user: UserId) {
        self.announcer.written(user);
    }

    /// Wakes after every committed write that changes what `user`'s hosting view shows
    /// (their hosting's creation, any change of it, its removal, and its domains'). Reads
    /// stay the caller's.
    pub fn watch_user(&self, user: UserId) -> UserWatch {
        self.announcer.watch(user)
    }

    /// A cheap read that proves the database answers (for `/readyz`).
    pub fn ping(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_read()?;
        tx.open_table(META)?;
        Ok(())
    }

    // ----- users -----

    /// Creates an account; the username must be free. Audited in the same transaction.
    pub fn create_user(&self, new: NewUser<'_>, actor: &str) -> Result<User, StoreError> {
        let user = User {
            id: UserId::new(),
            username: new.username.to_owned(),
            email: new.email.map(str::to_owned),
            password_hash: new.password_hash.to_owned(),
            role: new.role,
            created_at: now(),
            disabled_at: None,
            token_generation: 0,
        };
        let tx = self.db.begin_write()?;
        {
            let mut names = tx.open_table(USERNAMES)?;
            if names.get(user.username.as_str())?.is_some() {
                return Err(StoreError::UsernameTaken(user.username));
            }
            names.insert(user.username.as_str(), user.id.key())?;
            tx.open_table(USERS)?
                .insert(user.id.key(), encode(&user).as_slice())?;
            append_audit(
                &tx,
                actor,
                "user.create",
                &user.username,
                user.role.as_str(),
            )?;
        }
        tx.commit()?;
        Ok(user)
    }

    pub fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(USERS)?;
        let v = t.get(id.key())?;
        v.map(|g| decode("users", g.value())).transpose()
    }

    pub fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        let tx = self.db.begin_read()?;
        let id = tx.open_table(USERNAMES)?.get(username)?.map(|g| g.value());
        match id {
            None => Ok(None),
            Some(id) => {
                let t = tx.open_table(USERS)?;
                let v = t.get(id)?;
                v.map(|g| decode("users", g.value())).transpose()
            }
        }
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(USERS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(decode("users", v.value())?);
        }
        Ok(out)
    }

    /// Reads, changes and writes one account (found by username) in a single transaction,
    /// with an audit line `action` whose detail is what `f` returns. `f` may refuse the
    /// change with an error; then nothing is written.
    pub fn modify_user<E: From<StoreError>>(
        &self,
        username: &str,
        actor: &str,
        action: &str,
        f: impl FnOnce(&mut User) -> Result<String, E>,
    ) -> Result<User, E> {
        let tx = self.db.begin_write().map_err(StoreError::from)?;
        let user = {
            let id = tx
                .open_table(USERNAMES)
                .map_err(StoreError::from)?
                .get(username)
                .map_err(StoreError::from)?
                .map(|g| g.value())
                .ok_or(StoreError::NoSuchUser)?;
            let mut t = tx.open_table(USERS).map_err(StoreError::from)?;
            let mut user: User = match t.get(id).map_err(StoreError::from)? {
                Some(g) => decode("users", g.value())?,
                None => return Err(StoreError::NoSuchUser.into()),
            };
            let detail = f(&mut user)?;
            t.insert(id, encode(&user).as_slice())
                .map_err(StoreError::from)?;
            append_audit(&tx, actor, action, &user.username, &detail)?;
            user
        };
        tx.commit().map_err(StoreError::from)?;
        Ok(user)
    }

    pub fn user_count(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(USERS)?.len()?)
    }

    // ----- SSH keys -----

    /// Registers a key for a user; the same fingerprint twice is refused.
    /// Adds a key unless the user already has it or already has `max` keys; the count and
    /// the insert are one transaction, so concurrent adds cannot pass the limit.
    pub fn add_ssh_key(&self, key: &SshKey, max: usize) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            if tx.open_table(USERS)?.get(key.user.key())?.is_none() {
                return Err(StoreError::NoSuchUser);
            }
            let mut t = tx.open_table(SSH_KEYS)?;
            let user = key.user.key();
            let mut count = 0;
            for row in t.range((user, 0)..=(user, u128::MAX))? {
                let (_, v) = row?;
                let k: SshKey = decode("ssh_keys", v.value())?;
                if k.fingerprint == key.fingerprint {
                    return Err(StoreError::DuplicateKey);
                }
                count += 1;
            }
            if count >= max {
                return Err(StoreError::TooManyKeys(max));
            }
            t.insert((user, key.id.key()), encode(key).as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes an account with its SSH keys and browser sessions, in one transaction;
    /// refused while it has a hosting ([`StoreError::HostingExists`]: the hosting goes
    /// first, with its VM). The username is free again; the audit log keeps its entries.
    pub fn delete_user(&self, id: UserId, actor: &str) -> Result<User, StoreError> {
        let tx = self.db.begin_write()?;
        let user = {
            let u = id.key();
            if tx
                .open_table(HOSTINGS_BY_USER)?
                .range((u, 0)..=(u, u128::MAX))?
                .next()
                .is_some()
            {
                return Err(StoreError::HostingExists);
            }
            let user: User = match tx.open_table(USERS)?.remove(u)? {
                Some(g) => decode("users", g.value())?,
                None => return Err(StoreError::NoSuchUser),
            };
            tx.open_table(USERNAMES)?.remove(user.username.as_str())?;
            let mut keys = tx.open_table(SSH_KEYS)?;
            let ids: Vec<(u128, u128)> = keys
                .range((u, 0)..=(u, u128::MAX))?
                .map(|r| r.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?;
            for k in ids {
                keys.remove(k)?;
            }
            sessions::remove_all_of(&tx, id)?;
            append_audit(&tx, actor, "user.delete", &user.username, "")?;
            user
        };
        tx.commit()?;
        Ok(user)
    }

    pub fn ssh_keys(&self, user: UserId) -> Result<Vec<SshKey>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(SSH_KEYS)?;
        let u = user.key();
        let mut out = Vec::new();
        for row in t.range((u, 0)..=(u, u128::MAX))? {
            let (_, v) = row?;
            out.push(decode("ssh_keys", v.value())?);
        }
        Ok(out)
    }

    pub fn delete_ssh_key(&self, user: UserId, id: SshKeyId) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        let removed = tx
            .open_table(SSH_KEYS)?
            .remove((user.key(), id.key()))?
            .is_some();
        if !removed {
            return Err(StoreError::NoSuchKey);
        }
        tx.commit()?;
        Ok(())
    }

    // ----- hostings -----

    /// Reserves everything a new hosting needs in one write transaction: the lowest free
    /// address in `ips` (in order), and the lowest free port in `ports` for which
    /// `port_usable` holds (e.g. it also binds on the host). `build` gets the chosen pair
    /// and returns the record to insert. Two concurrent calls can never get the same IP or
    /// port, because redb serialises write transactions.
    pub fn reserve_hosting(
        &self,
        user: UserId,
        ips: impl IntoIterator<Item = Ipv4Addr>,
        ports: std::ops::RangeInclusive<u16>,
        port_usable: impl Fn(u16) -> bool,
        build: impl FnOnce(Ipv4Addr, u16) -> Hosting,
        actor: &str,
    ) -> Result<Hosting, StoreError> {
        let tx = self.db.begin_write()?;
        let h = {
            let u = user.key();
            // An account deleted since its request was authenticated gets nothing.
            if tx.open_table(USERS)?.get(u)?.is_none() {
                return Err(StoreError::NoSuchUser);
            }
            let mut by_user = tx.open_table(HOSTINGS_BY_USER)?;
            if by_user.range((u, 0)..=(u, u128::MAX))?.next().is_some() {
                return Err(StoreError::HostingExists);
            }
            let mut ip_t = tx.open_table(IP_RESERVATIONS)?;
            let mut ip = None;
            for cand in ips {
                if ip_t.get(u32::from(cand))?.is_none() {
                    ip = Some(cand);
                    break;
                }
            }
            let ip = ip.ok_or(StoreError::NoFreeIp)?;
            let mut port_t = tx.open_table(PORT_RESERVATIONS)?;
            let mut port = None;
            for cand in ports {
                if port_t.get(cand)?.is_none() && port_usable(cand) {
                    port = Some(cand);
                    break;
                }
            }
            let port = port.ok_or(StoreError::NoFreePort)?;
            let h = build(ip, port);
            ip_t.insert(u32::from(ip), h.id.key())?;
            port_t.insert(port, h.id.key())?;
            by_user.insert((u, h.id.key()), ())?;
            tx.open_table(HOSTINGS)?
                .insert(h.id.key(), encode(&h).as_slice())?;
            append_audit(
                &tx,
                actor,
                "hosting.create",
                &h.id.to_string(),
                &format!("{} ip={ip} ssh_port={port}", h.slug),
            )?;
            h
        };
        tx.commit()?;
        self.written_for(h.user);
        Ok(h)
    }

    /// Reads, changes and writes one hosting in a single transaction.
    pub fn modify_hosting(
        &self,
        id: HostingId,
        f: impl FnOnce(&mut Hosting),
    ) -> Result<Hosting, StoreError> {
        self.try_modify_hosting(id, |h| {
            f(h);
            Ok::<(), StoreError>(())
        })
    }

    /// [`Store::modify_hosting`] with a change that may refuse: an error from `f` writes
    /// nothing. The check and the write are one transaction, so a rule `f` checks (a limit,
    /// a unique name) holds against concurrent changes.
    pub fn try_modify_hosting<E: From<StoreError>>(
        &self,
        id: HostingId,
        f: impl FnOnce(&mut Hosting) -> Result<(), E>,
    ) -> Result<Hosting, E> {
        let tx = self.db.begin_write().map_err(StoreError::from)?;
        let h = {
            let mut t = tx.open_table(HOSTINGS).map_err(StoreError::from)?;
            let mut h: Hosting = match t.get(id.key()).map_err(StoreError::from)? {
                Some(g) => decode("hostings", g.value())?,
                None => return Err(StoreError::NoSuchHosting.into()),
            };
            f(&mut h)?;
            h.updated_at = now();
            t.insert(id.key(), encode(&h).as_slice())
                .map_err(StoreError::from)?;
            h
        };
        tx.commit().map_err(StoreError::from)?;
        self.written_for(h.user);
        Ok(h)
    }

    /// Removes a hosting and releases its IP and port, atomically.
    pub fn remove_hosting(&self, id: HostingId, actor: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        let user = {
            let h: Hosting = match tx.open_table(HOSTINGS)?.remove(id.key())? {
                Some(g) => decode("hostings", g.value())?,
                None => return Err(StoreError::NoSuchHosting),
            };
            tx.open_table(HOSTINGS_BY_USER)?
                .remove((h.user.key(), id.key()))?;
            tx.open_table(IP_RESERVATIONS)?.remove(u32::from(h.ip))?;
            tx.open_table(PORT_RESERVATIONS)?.remove(h.ssh_port)?;
            domains::remove_all_of(&tx, id)?;
            append_audit(&tx, actor, "hosting.delete", &id.to_string(), &h.slug)?;
            h.user
        };
        tx.commit()?;
        self.written_for(user);
        Ok(())
    }

    pub fn hosting(&self, id: HostingId) -> Result<Option<Hosting>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(HOSTINGS)?;
        let v = t.get(id.key())?;
        v.map(|g| decode("hostings", g.value())).transpose()
    }

    pub fn hostings(&self) -> Result<Vec<Hosting>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(HOSTINGS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(decode("hostings", v.value())?);
        }
        Ok(out)
    }

    pub fn hostings_of(&self, user: UserId) -> Result<Vec<Hosting>, StoreError> {
        let tx = self.db.begin_read()?;
        let idx = tx.open_table(HOSTINGS_BY_USER)?;
        let t = tx.open_table(HOSTINGS)?;
        let u = user.key();
        let mut out = Vec::new();
        for row in idx.range((u, 0)..=(u, u128::MAX))? {
            let (k, _) = row?;
            if let Some(g) = t.get(k.value().1)? {
                out.push(decode("hostings", g.value())?);
            }
        }
        Ok(out)
    }

    /// Reserved IPs and ports, for choosing the lowest free ones.
    pub fn reserved_ips(&self) -> Result<Vec<Ipv4Addr>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(IP_RESERVATIONS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            out.push(Ipv4Addr::from(row?.0.value()));
        }
        Ok(out)
    }

    pub fn reserved_ports(&self) -> Result<Vec<u16>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(PORT_RESERVATIONS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            out.push(row?.0.value());
        }
        Ok(out)
    }

    // ----- audit log -----

    /// Appends one line to the audit log in its own transaction.
    pub fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        append_audit(&tx, actor, action, target, detail)?;
        tx.commit()?;
        Ok(())
    }

    /// The newest `limit` audit lines, newest first.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(AUDIT)?;
        let mut out = Vec::new();
        for row in t.iter()?.rev().take(limit) {
            let (_, v) = row?;
            out.push(decode("audit", v.value())?);
        }
        Ok(out)
    }
}

fn append_audit(
    tx: &redb::WriteTransaction,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), StoreError> {
    let mut t = tx.open_table(AUDIT)?;
    let seq = t.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
    let e = AuditEntry {
        seq,
        at: now(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail: detail.to_owned(),
    };
    t.insert(seq, encode(&e).as_slice())?;
    Ok(())
}

/// A record's time as the API and the CLI show it.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The current time, UTC, truncated to whole seconds (what the API shows).
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        (dir, s)
    }

    fn new_user<'a>(name: &'a str) -> NewUser<'a> {
        NewUser {
            username: name,
            email: None,
            password_hash: "$argon2id$x",
            role: Role::User,
        }
    }

    fn hosting(user: UserId, ip: [u8; 4], port: u16) -> Hosting {
        Hosting {
            id: HostingId::new(),
            user,
            slug: "alice".into(),
            state: HostingState::Provisioning,
            reason: None,
            desired_running: true,
            ip: Ipv4Addr::from(ip),
            ssh_port: port,
            mac: "52:54:00:00:00:01".into(),
            tap: "rt0".into(),
            incarnation: 1,
            ssh_keys: vec![],
            console_password_hash: None,
            snapshots: Vec::new(),
            sleep_when_idle: false,
            asleep: false,
            created_at: now(),
            updated_at: now(),
        }
    }

    #[test]
    fn users_round_trip_and_names_are_unique() {
        let (_d, s) = store();
        let u = s.create_user(new_user("alice"), "test").expect("create");
        assert_eq!(s.user(u.id).expect("read"), Some(u.clone()));
        assert_eq!(s.user_by_name("alice").expect("read"), Some(u));
        assert!(matches!(
            s.create_user(new_user("alice"), "test"),
            Err(StoreError::UsernameTaken(_))
        ));
        assert_eq!(s.user_count().expect("count"), 1);
        let log = s.audit_log(10).expect("audit");
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].action, "user.create");
    }

    #[test]
    fn reopening_keeps_data_and_a_second_open_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path()).expect("open");
            s.create_user(new_user("bob"), "test").expect("create");
            assert!(matches!(
                Store::open(dir.path()),
                Err(StoreError::Locked { .. })
            ));
        }
        let s = Store::open(dir.path()).expect("reopen");
        assert!(s.user_by_name("bob").expect("read").is_some());
    }

    #[test]
    fn a_newer_schema_is_refused_with_a_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = Database::create(dir.path().join("roost.redb")).expect("create");
            let tx = db.begin_write().expect("tx");
            tx.open_table(META)
                .expect("meta")
                .insert("schema_version", SCHEMA_VERSION + 1)
                .expect("insert");
            tx.commit().expect("commit");
        }
        let e = Store::open(dir.path()).err().expect("must fail");
        assert!(matches!(e, StoreError::TooNew { .. }));
        assert!(e.to_string().contains("newer roost"), "{e}");
    }

    #[test]
    fn hosting_reservations_are_unique_and_released() {
        let (_d, s) = store();
        let a = s.create_user(new_user("alice"), "t").expect("a");
        let b = s.create_user(new_user("bob"), "t").expect("b");
        let reserve = |user: UserId| {
            s.reserve_hosting(
                user,
                (2u8..=9).map(|i| Ipv4Addr::new(10, 0, 0, i)),
                22000..=22009,
                |_| true,
                |ip, port| hosting(user, ip.octets(), port),
                "t",
            )
        };
        let h = reserve(a.id).expect("reserve");
        assert_eq!((h.ip, h.ssh_port), (Ipv4Addr::new(10, 0, 0, 2), 22000));
        assert!(matches!(reserve(a.id), Err(StoreError::HostingExists)));
        let hb = reserve(b.id).expect("reserve");
        assert_eq!((hb.ip, hb.ssh_port), (Ipv4Addr::new(10, 0, 0, 3), 22001));
        assert_eq!(s.hostings_of(a.id).expect("of").len(), 1);
        let h2 = s
            .modify_hosting(h.id, |h| h.state = HostingState::Running)
            .expect("modify");
        assert_eq!(h2.state, HostingState::Running);
        s.remove_hosting(h.id, "t").expect("remove");
        assert_eq!(
            s.reserved_ips().expect("ips"),
            vec![Ipv4Addr::new(10, 0, 0, 3)]
        );
        assert_eq!(s.reserved_ports().expect("ports"), vec![22001]);
        assert!(s.hostings_of(a.id).expect("of").is_empty());
        // Released addresses and ports are handed out again, lowest first.
        let h3 = reserve(a.id).expect("reuse after release");
        assert_eq!((h3.ip, h3.ssh_port), (Ipv4Addr::new(10, 0, 0, 2), 22000));
    }

    /// Deleting an account takes its keys and sessions and frees its name, in one
    /// transaction, and never while it has a hosting (nor can a hosting be reserved for an
    /// account deleted meanwhile).
    #[test]
    fn deleting_an_account_takes_its_keys_and_sessions_but_not_its_hosting() {
        let (_d, s) = store();
        let a = s.create_user(new_user("alice"), "t").expect("a");
        let b = s.create_user(new_user("bob"), "t").expect("b");
        for (n, u) in [&a, &b].into_iter().enumerate() {
            let key = SshKey {
                id: SshKeyId::new(),
                user: u.id,
                public_key: format!("ssh-ed25519 AAAA{}", u.username),
                fingerprint: format!("SHA256:{}", u.username),
                comment: String::new(),
                created_at: now(),
            };
            s.add_ssh_key(&key, 32).expect("key");
            let session = Session {
                user: u.id,
                csrf: "c".into(),
                created_at: now(),
                expires_at: now() + std::time::Duration::from_secs(60),
            };
            s.add_session(&[n as u8; 32], &session).expect("session");
        }
        let reserve = |user: UserId| {
            s.reserve_hosting(
                user,
                [Ipv4Addr::new(10, 0, 0, 2)],
                22000..=22000,
                |_| true,
                |ip, port| hosting(user, ip.octets(), port),
                "t",
            )
        };
        let h = reserve(a.id).expect("hosting");
        assert!(matches!(
            s.delete_user(a.id, "t"),
            Err(StoreError::HostingExists)
        ));
        assert!(s.user(a.id).expect("read").is_some(), "nothing removed");
        assert_eq!(s.ssh_keys(a.id).expect("keys").len(), 1);
        s.remove_hosting(h.id, "t").expect("remove");

        let gone = s.delete_user(a.id, "t").expect("delete");
        assert_eq!(gone.username, "alice");
        assert!(s.user(a.id).expect("read").is_none());
        assert!(s.user_by_name("alice").expect("read").is_none());
        assert!(s.ssh_keys(a.id).expect("keys").is_empty());
        assert_eq!(s.session_count_of(a.id).expect("sessions"), 0);
        // Bob keeps his.
        assert_eq!(s.ssh_keys(b.id).expect("keys").len(), 1);
        assert_eq!(s.session_count_of(b.id).expect("sessions"), 1);
        assert!(matches!(reserve(a.id), Err(StoreError::NoSuchUser)));
        assert!(matches!(
            s.delete_user(a.id, "t"),
            Err(StoreError::NoSuchUser)
        ));
        // The name is free again, for a new account.
        let again = s.create_user(new_user("alice"), "t").expect("alice again");
        assert_ne!(again.id, a.id);
        let log = s.audit_log(20).expect("audit");
        assert!(log
            .iter()
            .any(|e| e.action == "user.delete" && e.target == "alice"));
    }

    /// A watcher wakes for its own user's hosting and domains, never for another user's
    /// writes, and re-reads rather than stalls when it falls behind.
    #[test]
    fn a_users_watch_wakes_for_their_writes_only() {
        use futures::FutureExt;
        let (_d, s) = store();
        let a = s.create_user(new_user("alice"), "t").expect("a");
        let b = s.create_user(new_user("bob"), "t").expect("b");
        let mut wa = s.watch_user(a.id);
        let woke = |w: &mut UserWatch| w.changed().now_or_never().is_some();
        let reserve = |user: UserId, last: u8| {
            s.reserve_hosting(
                user,
                [Ipv4Addr::new(10, 0, 0, last)],
                22000..=22009,
                |_| true,
                |ip, port| hosting(user, ip.octets(), port),
                "t",
            )
            .expect("reserve")
        };
        let hb = reserve(b.id, 3);
        s.modify_hosting(hb.id, |h| h.state = HostingState::Running)
            .expect("modify");
        assert!(!woke(&mut wa), "bob's writes do not wake alice's watch");
        let ha = reserve(a.id, 2);
        assert!(woke(&mut wa), "creation");
        assert!(!woke(&mut wa), "one write, one wake");
        s.modify_hosting(ha.id, |h| h.state = HostingState::Running)
            .expect("modify");
        assert!(woke(&mut wa), "a state change");
        let d = Domain {
            name: "shop.example.org".into(),
            hosting: ha.id,
            user: a.id,
            token: "tok".into(),
            state: DomainState::Pending,
            reason: None,
            created_at: now(),
            verified_at: None,
        };
        s.add_domain(&d, 10, "t").expect("claim");
        assert!(woke(&mut wa), "a domain claimed");
        s.update_domain(
            &Domain {
                state: DomainState::Verified,
                ..d.clone()
            },
            "t",
        )
        .expect("verify");
        assert!(woke(&mut wa), "a domain verified");
        s.remove_domain(&d.name, ha.id, "t").expect("release");
        assert!(woke(&mut wa), "a domain released");
        s.remove_hosting(hb.id, "t").expect("remove");
        assert!(!woke(&mut wa), "bob's removal");
        // Far behind: told to re-read, once, then quiet again.
        for _ in 0..2000 {
            s.modify_hosting(ha.id, |_| {}).expect("modify");
        }
        assert!(woke(&mut wa), "lagged");
        while woke(&mut wa) {}
        s.remove_hosting(ha.id, "t").expect("remove");
        assert!(woke(&mut wa), "removal");
    }

    #[test]
    fn reserve_hosting_picks_lowest_free_and_reports_exhaustion() {
        let (_d, s) = store();
        let ips = || (2u8..=4).map(|i| Ipv4Addr::new(10, 0, 0, i));
        let mut got = vec![];
        for name in ["u1", "u2", "u3"] {
            let u = s.create_user(new_user(name), "t").expect("user");
            let h = s
                .reserve_hosting(
                    u.id,
                    ips(),
                    22000..=22010,
                    |p| p != 22001,
                    |ip, port| hosting(u.id, ip.octets(), port),
                    "t",
                )
                .expect("reserve");
            got.push((h.ip.octets()[3], h.ssh_port));
        }
        assert_eq!(got, vec![(2, 22000), (3, 22002), (4, 22003)]);
        let u4 = s.create_user(new_user("u4"), "t").expect("user");
        let e = s.reserve_hosting(
            u4.id,
            ips(),
            22000..=22010,
            |_| true,
            |ip, port| hosting(u4.id, ip.octets(), port),
            "t",
        );
        assert!(matches!(e, Err(StoreError::NoFreeIp)));
        let e = s.reserve_hosting(
            u4.id,
            [Ipv4Addr::new(10, 0, 0, 9)],
            22000..=22003,
            |p| p != 22001,
            |ip, port| hosting(u4.id, ip.octets(), port),
            "t",
        );
        assert!(matches!(e, Err(StoreError::NoFreePort)));
        // Refused reservations wrote nothing.
        assert_eq!(s.reserved_ips().expect("ips").len(), 3);
        assert!(s.hostings_of(u4.id).expect("of").is_empty());
    }

    #[test]
    fn ssh_keys_are_per_user_and_deduplicated() {
        let (_d, s) = store();
        let a = s.create_user(new_user("alice"), "t").expect("a");
        let k = SshKey {
            id: SshKeyId::new(),
            user: a.id,
            public_key: "ssh-ed25519 AAAA".into(),
            fingerprint: "SHA256:x".into(),
            comment: String::new(),
            created_at: now(),
        };
        s.add_ssh_key(&k, 2).expect("add");
        let dup = SshKey {
            id: SshKeyId::new(),
            ..k.clone()
        };
        assert!(matches!(
            s.add_ssh_key(&dup, 2),
            Err(StoreError::DuplicateKey)
        ));
        let other = SshKey {
            id: SshKeyId::new(),
            fingerprint: "SHA256:y".into(),
            ..k.clone()
        };
        assert!(matches!(
            s.add_ssh_key(&other, 1),
            Err(StoreError::TooManyKeys(1))
        ));
        assert_eq!(s.ssh_keys(a.id).expect("list"), vec![k.clone()]);
        s.delete_ssh_key(a.id, k.id).expect("delete");
        assert!(matches!(
            s.delete_ssh_key(a.id, k.id),
            Err(StoreError::NoSuchKey)
        ));
    }
}
