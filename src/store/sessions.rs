//! Browser sessions of the dashboard: one row per signed-in browser, keyed by the SHA-256
//! of the cookie's secret (the secret itself is never stored, so a copy of the database
//! signs no one in). Logging out deletes the row; expired rows are swept.

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{decode, encode, now, Store, StoreError, UserId};

pub(super) const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");

/// One signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user: UserId,
    /// The token every state-changing request of this session must carry.
    pub csrf: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl Store {
    /// Stores a new session under the hash of its secret.
    pub fn add_session(&self, key: &[u8; 32], s: &Session) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(SESSIONS)?
            .insert(key.as_slice(), encode(s).as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// The live session under `key`; an expired one is `None` (and left for the sweep).
    pub fn session(&self, key: &[u8; 32]) -> Result<Option<Session>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(SESSIONS)?;
        let Some(v) = t.get(key.as_slice())? else {
            return Ok(None);
        };
        let s: Session = decode("sessions", v.value())?;
        Ok((s.expires_at > now()).then_some(s))
    }

    /// Ends one session. `true` if it existed.
    pub fn remove_session(&self, key: &[u8; 32]) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let existed = tx.open_table(SESSIONS)?.remove(key.as_slice())?.is_some();
        tx.commit()?;
        Ok(existed)
    }

    /// Ends every session of `user` (password change, disabling). Returns how many.
    pub fn remove_sessions_of(&self, user: UserId) -> Result<usize, StoreError> {
        self.remove_sessions_where(|s| s.user == user)
    }

    /// Deletes expired sessions. Returns how many.
    pub fn sweep_sessions(&self) -> Result<usize, StoreError> {
        let t = now();
        self.remove_sessions_where(|s| s.expires_at <= t)
    }

    /// How many sessions of `user` are stored (live or not yet swept).
    pub fn session_count_of(&self, user: UserId) -> Result<usize, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(SESSIONS)?;
        let mut n = 0;
        for row in t.iter()? {
            let (_, v) = row?;
            let s: Session = decode("sessions", v.value())?;
            n += usize::from(s.user == user);
        }
        Ok(n)
    }

    fn remove_sessions_where(&self, f: impl Fn(&Session) -> bool) -> Result<usize, StoreError> {
        let tx = self.db.begin_write()?;
        let n = remove_where(&tx, f)?;
        tx.commit()?;
        Ok(n)
    }
}

/// Removes, inside `tx`, every session for which `f` holds; returns how many.
fn remove_where(
    tx: &redb::WriteTransaction,
    f: impl Fn(&Session) -> bool,
) -> Result<usize, StoreError> {
    let mut t = tx.open_table(SESSIONS)?;
    let mut doomed = Vec::new();
    for row in t.iter()? {
        let (k, v) = row?;
        let s: Session = decode("sessions", v.value())?;
        if f(&s) {
            doomed.push(k.value().to_vec());
        }
    }
    for k in &doomed {
        t.remove(k.as_slice())?;
    }
    Ok(doomed.len())
}

/// Removes every session of `user` inside `tx` (the account's own deletion).
pub(super) fn remove_all_of(tx: &redb::WriteTransaction, user: UserId) -> Result<(), StoreError> {
    remove_where(tx, |s| s.user == user).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(user: UserId, expires_in: time::Duration) -> Session {
        Session {
            user,
            csrf: "c".into(),
            created_at: now(),
            expires_at: now() + expires_in,
        }
    }

    #[test]
    fn sessions_live_expire_and_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let (a, b) = (UserId::new(), UserId::new());
        store
            .add_session(&[1; 32], &session(a, time::Duration::hours(1)))
            .expect("add");
        store
            .add_session(&[2; 32], &session(a, time::Duration::seconds(-1)))
            .expect("add");
        store
            .add_session(&[3; 32], &session(b, time::Duration::hours(1)))
            .expect("add");
        assert_eq!(
            store.session(&[1; 32]).expect("get").map(|s| s.user),
            Some(a)
        );
        assert_eq!(store.session(&[2; 32]).expect("get"), None, "expired");
        assert_eq!(store.session(&[9; 32]).expect("get"), None, "unknown");
        assert_eq!(store.sweep_sessions().expect("sweep"), 1);
        assert_eq!(store.session_count_of(a).expect("count"), 1);
        assert!(store.remove_session(&[1; 32]).expect("remove"));
        assert!(!store.remove_session(&[1; 32]).expect("again"));
        assert_eq!(store.remove_sessions_of(b).expect("of b"), 1);
        assert_eq!(store.session(&[3; 32]).expect("get"), None);
    }
}
