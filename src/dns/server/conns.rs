//! A table of the open connections of one listener, with a cap: at the cap,
//! a new connection makes room by closing the connection that has been idle
//! longest (or, if none is idle, the oldest one), so that a crowd of silent
//! clients can never lock out new ones, and the number of descriptors the
//! listener holds stays bounded.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::dns::stats::ConnCounters;

/// The connections of one listener (or several sharing one cap).
#[derive(Debug)]
pub struct ConnTable {
    cap: usize,
    inner: Mutex<Inner>,
    counters: Arc<ConnCounters>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// By id: ids rise with accept time, so the first entry is the oldest.
    conns: BTreeMap<u64, Slot>,
}

#[derive(Debug)]
struct Slot {
    /// When the connection last became idle (waiting for a request); None
    /// while it is reading a request or writing an answer.
    idle_since: Option<Instant>,
    kill: CancellationToken,
}

/// A connection admitted into the table; removes it when dropped.
#[derive(Debug)]
pub struct ConnGuard {
    table: Arc<ConnTable>,
    id: u64,
    /// Fires when the connection is evicted (or [`ConnTable::evict_one`]).
    pub kill: CancellationToken,
}

impl ConnTable {
    /// A table admitting at most `cap` connections (at least 1); publishes
    /// open/peak/evicted and the cap to `counters`.
    pub fn new(cap: usize, counters: Arc<ConnCounters>) -> Arc<ConnTable> {
        let cap = cap.max(1);
        counters.cap.store(cap as u64, Relaxed);
        Arc::new(ConnTable { cap, inner: Mutex::new(Inner::default()), counters })
    }

    /// The most connections open at once.
    pub fn cap(&self) -> usize {
        self.cap
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; if something did, the
        // table is still consistent (every change is one map operation).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new (idle) connection, evicting one first if the table is full.
    pub fn admit(self: &Arc<Self>) -> ConnGuard {
        let kill = CancellationToken::new();
        let mut inner = self.lock();
        while inner.conns.len() >= self.cap {
            if !self.evict_locked(&mut inner) {
                break;
            }
        }
        let id = inner.next_id;
        inner.next_id = inner.next_id.wrapping_add(1);
        inner.conns.insert(id, Slot { idle_since: Some(Instant::now()), kill: kill.clone() });
        self.publish(&inner);
        drop(inner);
        ConnGuard { table: self.clone(), id, kill }
    }

    /// Closes one connection (the longest idle, else the oldest) to free a
    /// descriptor; false if the table is empty.
    pub fn evict_one(&self) -> bool {
        let mut inner = self.lock();
        let done = self.evict_locked(&mut inner);
        self.publish(&inner);
        done
    }

    fn evict_locked(&self, inner: &mut Inner) -> bool {
        let idle = inner.conns.iter().filter_map(|(id, s)| s.idle_since.map(|t| (t, *id))).min();
        let victim = idle.map(|(_, id)| id).or_else(|| inner.conns.keys().next().copied());
        let Some(slot) = victim.and_then(|id| inner.conns.remove(&id)) else {
            return false;
        };
        slot.kill.cancel();
        self.counters.evicted.fetch_add(1, Relaxed);
        true
    }

    fn publish(&self, inner: &Inner) {
        let n = inner.conns.len() as u64;
        self.counters.open.store(n, Relaxed);
        self.counters.peak.fetch_max(n, Relaxed);
    }

    /// Connections in the table now.
    pub fn len(&self) -> usize {
        self.lock().conns.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ConnGuard {
    /// Marks the connection idle (waiting for a request) or busy.
    pub fn set_idle(&self, idle: bool) {
        let mut inner = self.table.lock();
        if let Some(s) = inner.conns.get_mut(&self.id) {
            s.idle_since = if idle { Some(s.idle_since.unwrap_or_else(Instant::now)) } else { None };
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut inner = self.table.lock();
        inner.conns.remove(&self.id);
        self.table.publish(&inner);
    }
}

/// Pause after running out of descriptors or memory on accept.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Accepts the next connection for `table`'s listener, or `None` once
/// `shutdown` fires. An accept error is reported to `on_error` and logged
/// (naming `what`); when it is a lack of descriptors or memory, the
/// connection idle longest is closed to give one back and accepting pauses
/// briefly, so the loop never spins.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    table: &ConnTable,
    shutdown: &CancellationToken,
    what: &'static str,
    on_error: impl Fn(),
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        let err = tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = listener.accept() => match r {
                Ok(x) => return Some(x),
                Err(e) => e,
            },
        };
        on_error();
        if matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)) {
            table.evict_one();
            tracing::warn!(error = %err, "{what}: cannot accept; backing off");
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
            }
        } else {
            tracing::debug!(error = %err, "{what}: accept failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_longest_idle_then_the_oldest() {
        let c = Arc::new(ConnCounters::default());
        let t = ConnTable::new(3, c.clone());
        let a = t.admit();
        let b = t.admit();
        let d = t.admit();
        a.set_idle(false);
        d.set_idle(false);
        // b is the only idle one: it goes, though a is older.
        let e = t.admit();
        assert!(b.kill.is_cancelled() && !a.kill.is_cancelled());
        assert_eq!(t.len(), 3);
        e.set_idle(false);
        // None idle: the oldest (a) goes.
        let _f = t.admit();
        assert!(a.kill.is_cancelled() && !d.kill.is_cancelled() && !e.kill.is_cancelled());
        assert_eq!(c.evicted.load(Relaxed), 2);
        assert_eq!(c.peak.load(Relaxed), 3);
        drop(b);
        drop(a);
        assert_eq!(t.len(), 3);
        drop(d);
        assert_eq!(c.open.load(Relaxed), 2);
    }
}
