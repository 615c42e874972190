//! Custom domains: one row per claimed name (the table key, so a name is unique across
//! users), with the hosting it serves, the verification token and its state. Removed with
//! their hosting, in the same transaction.

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{append_audit, decode, encode, HostingId, Store, StoreError, UserId, HOSTINGS};

pub(super) const DOMAINS: TableDefinition<&str, &[u8]> = TableDefinition::new("domains");

/// Where a custom domain is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainState {
    /// Claimed; waiting for its TXT record to be verified. Not routed.
    Pending,
    /// Its TXT record was found: routed to the owner's site, certificate requested.
    Verified,
    /// Its TXT record disappeared at a re-check: no longer routed, until verified again.
    Suspended,
}

impl DomainState {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainState::Pending => "pending",
            DomainState::Verified => "verified",
            DomainState::Suspended => "suspended",
        }
    }
}

/// A custom domain claimed for a hosting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    /// Normalised: ASCII (punycode), lowercase, no trailing dot.
    pub name: String,
    pub hosting: HostingId,
    pub user: UserId,
    /// The value the owner publishes at `_roost-challenge.<name>` (TXT).
    pub token: String,
    pub state: DomainState,
    /// Why the last verification failed or the domain was suspended.
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub verified_at: Option<OffsetDateTime>,
}

impl Store {
    /// Claims `d.name` for `d.hosting`: refused when anyone holds the name already, when
    /// the hosting is gone, or when the hosting holds `max` names. Audited.
    pub fn add_domain(&self, d: &Domain, max: usize, actor: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            if tx.open_table(HOSTINGS)?.get(d.hosting.key())?.is_none() {
                return Err(StoreError::NoSuchHosting);
            }
            let mut t = tx.open_table(DOMAINS)?;
            if t.get(d.name.as_str())?.is_some() {
                return Err(StoreError::DomainTaken(d.name.clone()));
            }
            let mut count = 0;
            for row in t.iter()? {
                let (_, v) = row?;
                let other: Domain = decode("domains", v.value())?;
                count += usize::from(other.hosting == d.hosting);
            }
            if count >= max {
                return Err(StoreError::TooManyDomains(max));
            }
            t.insert(d.name.as_str(), encode(d).as_slice())?;
            append_audit(&tx, actor, "domain.add", &d.hosting.to_string(), &d.name)?;
        }
        tx.commit()?;
        self.written_for(d.user);
        Ok(())
    }

    pub fn domain(&self, name: &str) -> Result<Option<Domain>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(DOMAINS)?;
        let v = t.get(name)?;
        v.map(|g| decode("domains", g.value())).transpose()
    }

    /// Every claimed domain, by name.
    pub fn domains(&self) -> Result<Vec<Domain>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(DOMAINS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(decode("domains", v.value())?);
        }
        Ok(out)
    }

    /// The domains of one hosting, by name.
    pub fn domains_of(&self, hosting: HostingId) -> Result<Vec<Domain>, StoreError> {
        Ok(self
            .domains()?
            .into_iter()
            .filter(|d| d.hosting == hosting)
            .collect())
    }

    /// Writes a domain's new state, if it still exists for the same hosting (a check that
    /// ran while the owner removed it must not bring it back). Audited when the state
    /// changes.
    pub fn update_domain(&self, d: &Domain, actor: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(DOMAINS)?;
            let old: Domain = match t.get(d.name.as_str())? {
                Some(g) => decode("domains", g.value())?,
                None => return Err(StoreError::NoSuchDomain),
            };
            if old.hosting != d.hosting || old.token != d.token {
                return Err(StoreError::NoSuchDomain);
            }
            t.insert(d.name.as_str(), encode(d).as_slice())?;
            if old.state != d.state {
                let detail = format!("{} {}", d.name, d.state.as_str());
                append_audit(&tx, actor, "domain.state", &d.hosting.to_string(), &detail)?;
            }
        }
        tx.commit()?;
        self.written_for(d.user);
        Ok(())
    }

    /// Releases `name` if `hosting` holds it.
    pub fn remove_domain(
        &self,
        name: &str,
        hosting: HostingId,
        actor: &str,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        let user = {
            let mut t = tx.open_table(DOMAINS)?;
            let held = match t.get(name)? {
                Some(g) => Some(decode::<Domain>("domains", g.value())?),
                None => None,
            };
            let Some(held) = held.filter(|d| d.hosting == hosting) else {
                return Err(StoreError::NoSuchDomain);
            };
            t.remove(name)?;
            append_audit(&tx, actor, "domain.remove", &hosting.to_string(), name)?;
            held.user
        };
        tx.commit()?;
        self.written_for(user);
        Ok(())
    }
}

/// Removes every domain of `hosting` inside `tx` (the hosting's own removal).
pub(super) fn remove_all_of(
    tx: &redb::WriteTransaction,
    hosting: HostingId,
) -> Result<(), StoreError> {
    let mut t = tx.open_table(DOMAINS)?;
    let mut names = Vec::new();
    for row in t.iter()? {
        let (k, v) = row?;
        let d: Domain = decode("domains", v.value())?;
        if d.hosting == hosting {
            names.push(k.value().to_owned());
        }
    }
    for n in names {
        t.remove(n.as_str())?;
    }
    Ok(())
}
