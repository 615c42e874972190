//! A consistent copy of the whole database while the daemon runs: one read transaction
//! (a snapshot: writers go on, and nothing they commit afterwards is in the copy) whose
//! every table is written into a new redb file. The copy is a database roost opens as it
//! is: restoring is putting it in place of `roost.redb` while the daemon is stopped.
//!
//! The file is created 0600 (it holds password hashes and session digests) under a
//! temporary name beside the destination and linked into place only when complete, so a
//! destination never holds half a backup and an existing file is never replaced.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use redb::{Database, ReadTransaction, ReadableTableMetadata, TableDefinition, TableHandle};

use super::{
    domains::DOMAINS, sessions::SESSIONS, Store, StoreError, AUDIT, HOSTINGS, HOSTINGS_BY_USER,
    IP_RESERVATIONS, META, PORT_RESERVATIONS, SSH_KEYS, USERNAMES, USERS,
};

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub path: PathBuf,
    /// The file's size in bytes.
    pub bytes: u64,
    /// Rows copied, by table.
    pub rows: BTreeMap<String, u64>,
}

/// Why a backup was not made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{} exists: a backup never replaces a file", .0.display())]
    Exists(PathBuf),
    #[error("the backup path must be absolute, with a file name: {}", .0.display())]
    BadPath(PathBuf),
    #[error("cannot write {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the backup database {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    /// A table this build does not know how to copy (added without being listed here).
    #[error("table {0:?} is not known to the backup; nothing was written")]
    UnknownTable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn store_err(e: impl Into<redb::Error>) -> BackupError {
    BackupError::Store(StoreError::Db(Box::new(e.into())))
}

/// Copies every row of `def` from the snapshot into `to`; returns how many.
fn copy<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &ReadTransaction,
    to: &redb::WriteTransaction,
    def: TableDefinition<K, V>,
    rows: &mut BTreeMap<String, u64>,
) -> Result<(), BackupError> {
    let src = from.open_table(def).map_err(store_err)?;
    let mut dst = to.open_table(def).map_err(store_err)?;
    for row in redb::ReadableTable::iter(&src).map_err(store_err)? {
        let (k, v) = row.map_err(store_err)?;
        dst.insert(k.value(), v.value()).map_err(store_err)?;
    }
    rows.insert(def.name().to_owned(), src.len().map_err(store_err)?);
    Ok(())
}

impl Store {
    /// Writes a consistent copy of the database to `dest` (absolute; must not exist).
    pub fn backup_to(&self, dest: &Path) -> Result<BackupReport, BackupError> {
        let (Some(dir), Some(name)) = (dest.parent(), dest.file_name()) else {
            return Err(BackupError::BadPath(dest.to_owned()));
        };
        if !dest.is_absolute() {
            return Err(BackupError::BadPath(dest.to_owned()));
        }
        if dest.symlink_metadata().is_ok() {
            return Err(BackupError::Exists(dest.to_owned()));
        }
        let snapshot = self.db.begin_read().map_err(store_err)?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BackupError::Io { path, source }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let result = (|| -> Result<BTreeMap<String, u64>, BackupError> {
            let db =
                Database::builder()
                    .create_file(file)
                    .map_err(|source| BackupError::Create {
                        path: tmp.clone(),
                        source: Box::new(source),
                    })?;
            let tx = db.begin_write().map_err(store_err)?;
            let mut rows = BTreeMap::new();
            copy(&snapshot, &tx, META, &mut rows)?;
            copy(&snapshot, &tx, USERS, &mut rows)?;
            copy(&snapshot, &tx, USERNAMES, &mut rows)?;
            copy(&snapshot, &tx, SSH_KEYS, &mut rows)?;
            copy(&snapshot, &tx, HOSTINGS, &mut rows)?;
            copy(&snapshot, &tx, HOSTINGS_BY_USER, &mut rows)?;
            copy(&snapshot, &tx, IP_RESERVATIONS, &mut rows)?;
            copy(&snapshot, &tx, PORT_RESERVATIONS, &mut rows)?;
            copy(&snapshot, &tx, AUDIT, &mut rows)?;
            copy(&snapshot, &tx, DOMAINS, &mut rows)?;
            copy(&snapshot, &tx, SESSIONS, &mut rows)?;
            // Every table in the file must be one copied above: a table added later and
            // not listed there fails the backup instead of being left out of it.
            for t in snapshot.list_tables().map_err(store_err)? {
                if !rows.contains_key(t.name()) {
                    return Err(BackupError::UnknownTable(t.name().to_owned()));
                }
            }
            tx.commit().map_err(store_err)?;
            drop(db);
            // On disk before it gets its name.
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io(&tmp))?;
            // A hard link never replaces an existing file (unlike rename).
            std::fs::hard_link(&tmp, dest).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => BackupError::Exists(dest.to_owned()),
                _ => io(dest)(e),
            })?;
            Ok(rows)
        })();
        let _ = std::fs::remove_file(&tmp);
        let rows = result?;
        let bytes = std::fs::metadata(dest).map_err(io(dest))?.len();
        Ok(BackupReport {
            path: dest.to_owned(),
            bytes,
            rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::store::{NewUser, Role};

    fn add_user(s: &Store, username: &str) {
        let u = NewUser {
            username,
            email: None,
            password_hash: "$argon2id$x",
            role: Role::User,
        };
        s.create_user(u, "t").expect("user");
    }

    #[test]
    fn a_backup_is_a_database_roost_opens_with_every_row() {
        let dir = tempfile::tempdir().expect("tmp");
        let live = dir.path().join("live");
        std::fs::create_dir(&live).expect("dir");
        let s = Store::open(&live).expect("open");
        for name in ["alice", "bob"] {
            add_user(&s, name);
        }
        let dest = dir.path().join("copy.redb");
        let report = s.backup_to(&dest).expect("backup");
        assert_eq!(report.rows.len(), 11, "every table: {:?}", report.rows);
        assert_eq!(report.rows["users"], 2);
        assert_eq!(report.rows["audit"], 2);
        let mode = std::fs::metadata(&dest).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Written after the backup: not in it.
        add_user(&s, "carol");
        // Never over an existing file.
        assert!(matches!(s.backup_to(&dest), Err(BackupError::Exists(_))));
        assert!(matches!(
            s.backup_to(Path::new("relative.redb")),
            Err(BackupError::BadPath(_))
        ));
        // Restoring is putting the file in place.
        let restored = dir.path().join("restored");
        std::fs::create_dir(&restored).expect("dir");
        std::fs::copy(&dest, restored.join("roost.redb")).expect("copy");
        let r = Store::open(&restored).expect("open the backup");
        assert!(r.user_by_name("alice").expect("read").is_some());
        assert!(r.user_by_name("carol").expect("read").is_none());
        assert_eq!(r.user_count().expect("count"), 2);
        // Nothing but the backup was left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");

        // A table the backup does not list fails it, and leaves nothing behind.
        const EXTRA: TableDefinition<u8, u8> = TableDefinition::new("extra");
        let tx = s.db.begin_write().expect("tx");
        tx.open_table(EXTRA)
            .expect("table")
            .insert(1, 2)
            .expect("row");
        tx.commit().expect("commit");
        let other = dir.path().join("other.redb");
        assert!(matches!(
            s.backup_to(&other),
            Err(BackupError::UnknownTable(t)) if t == "extra"
        ));
        assert!(!other.exists());
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 3);
    }
}
