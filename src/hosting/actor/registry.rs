//! The live actors, by hosting: who to send a command to, and the QEMU each watches (for
//! read-only queries).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tracing::{info_span, Instrument};

use super::{run, Command, Ctx};
use crate::hosting::effects::Effects;
use crate::hosting::HostingError;
use crate::store::{Hosting, HostingId};

/// A running actor, as the registry keeps it.
struct Entry<V> {
    tx: mpsc::Sender<Command>,
    /// The actor's QEMU, published for read-only queries (status, statistics).
    vm: Arc<Mutex<Option<Arc<V>>>>,
    serial: u64,
}

/// The live actors, by hosting.
pub(in crate::hosting) struct Registry<E: Effects> {
    map: Arc<Mutex<HashMap<HostingId, Entry<E::Vm>>>>,
    serial: Arc<std::sync::atomic::AtomicU64>,
}

impl<E: Effects> Clone for Registry<E> {
    fn clone(&self) -> Self {
        Registry {
            map: self.map.clone(),
            serial: self.serial.clone(),
        }
    }
}

impl<E: Effects> Default for Registry<E> {
    fn default() -> Self {
        Registry {
            map: Arc::default(),
            serial: Arc::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Commands queued per actor before senders wait (ticks are dropped instead).
const MAILBOX: usize = 64;

impl<E: Effects> Registry<E> {
    /// The actor of `id`'s sender, if one runs.
    pub(in crate::hosting) fn sender(&self, id: HostingId) -> Option<mpsc::Sender<Command>> {
        lock(&self.map).get(&id).map(|e| e.tx.clone())
    }

    /// The QEMU `id`'s actor watches now.
    pub(in crate::hosting) fn vm(&self, id: HostingId) -> Option<Arc<E::Vm>> {
        lock(&self.map).get(&id).and_then(|e| lock(&e.vm).clone())
    }

    #[cfg(test)]
    pub(in crate::hosting) fn is_empty(&self) -> bool {
        lock(&self.map).is_empty()
    }

    /// Starts `row`'s actor unless one runs, and gives it `first`; `None` (and `first`
    /// dropped) when one already runs. `guard` runs under the registry's lock first (a
    /// creation reserves its row there, so the reconciler never sees a row without its
    /// actor); the actor is not started when it fails.
    pub(in crate::hosting) fn spawn_with<T>(
        &self,
        ctx: &Arc<Ctx<E>>,
        guard: impl FnOnce() -> Result<(Hosting, T), HostingError>,
        first: Option<Command>,
    ) -> Result<Option<T>, HostingError> {
        let mut map = lock(&self.map);
        let (row, out) = guard()?;
        if map.contains_key(&row.id) {
            return Ok(None);
        }
        let (tx, rx) = mpsc::channel(MAILBOX);
        let view = Arc::new(Mutex::new(None));
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(first) = first {
            // Cannot fail: the receiver is alive and the queue empty.
            let _ = tx.try_send(first);
        }
        map.insert(
            row.id,
            Entry {
                tx,
                vm: view.clone(),
                serial,
            },
        );
        let span = info_span!("hosting", hosting = %row.id, slug = %row.slug);
        tokio::spawn(run(ctx.clone(), row, rx, view, serial).instrument(span));
        Ok(Some(out))
    }

    pub(super) fn remove(&self, id: HostingId, serial: u64) {
        let mut map = lock(&self.map);
        if map.get(&id).is_some_and(|e| e.serial == serial) {
            map.remove(&id);
        }
    }
}
