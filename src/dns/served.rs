//! What the DNS transports answer from: the zone layer's [`Snapshot`]
//! plus what the DNS layer derives from it once per publication (the
//! pre-encoded fast-path answers and the transfer access list).
//!
//! [`ServedZone`] attaches to the [`Publisher`] as a sink, so every
//! published snapshot is turned into a [`Served`] on the publishing thread
//! (never under the inputs lock) and swapped in before the publication
//! returns: a change srvctl acknowledged is already in the answers.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::fast::FastZone;
use super::xfr::Access;
use crate::zone::Snapshot;
use crate::zone::clients::ClientSites;
use crate::zone::publish::Publisher;

/// A zone snapshot ready to answer from.
#[derive(Debug)]
pub struct Served {
    /// The published data.
    pub zone: Arc<Snapshot>,
    /// Pre-encoded responses for the common queries.
    pub fast: FastZone,
    /// Who may transfer the zone, with which keys (from the snapshot's config).
    pub xfr: Arc<Access>,
    /// Which site's answers a client gets on the site-less names (from the snapshot's config).
    pub clients: Arc<ClientSites>,
}

impl Served {
    /// Derives the DNS layer's view of `zone` (pre-encodes its answers).
    pub fn new(zone: Arc<Snapshot>) -> Served {
        Served::following(zone, None)
    }

    /// Like [`Served::new`], sharing what it can with `prev`, the zone
    /// served before (the pre-encoded answers, when only the serial changed).
    pub fn following(zone: Arc<Snapshot>, prev: Option<&Served>) -> Served {
        let (xfr, clients) = match prev {
            Some(p) if Arc::ptr_eq(&p.zone.config, &zone.config) => (p.xfr.clone(), p.clients.clone()),
            _ => (Arc::new(Access::from_config(&zone.config)), Arc::new(ClientSites::new(&zone.config))),
        };
        let mut served = Served { zone, fast: FastZone::default(), xfr, clients };
        served.fast = FastZone::build(&served, prev);
        served
    }
}

impl Deref for Served {
    type Target = Snapshot;
    fn deref(&self) -> &Snapshot {
        &self.zone
    }
}

/// The snapshot the transports answer from, kept in step with the publisher.
pub struct ServedZone {
    current: ArcSwap<Served>,
}

impl ServedZone {
    /// Follows `publisher` from now on.
    pub fn attach(publisher: &Publisher) -> Arc<ServedZone> {
        // The sink needs the ServedZone it updates, which is built from the
        // snapshot current at attaching; a publication in between is kept
        // and applied once the zone exists (in order: both under `link`).
        #[derive(Default)]
        struct Link {
            zone: Option<Arc<ServedZone>>,
            pending: Option<Arc<Snapshot>>,
        }
        let link: Arc<Mutex<Link>> = Arc::default();
        let l = link.clone();
        let first = publisher.attach(Box::new(move |snap| {
            let mut link = l.lock().unwrap_or_else(|e| e.into_inner());
            match &link.zone {
                Some(z) => {
                    let next = Served::following(snap.clone(), Some(&z.current.load()));
                    // The zone served until now is freed off the publishing thread.
                    crate::zone::retire::later(z.current.swap(Arc::new(next)));
                }
                None => link.pending = Some(snap.clone()),
            }
        }));
        let zone = Arc::new(ServedZone { current: ArcSwap::from_pointee(Served::new(first)) });
        let mut link = link.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(later) = link.pending.take() {
            zone.current.store(Arc::new(Served::new(later)));
        }
        link.zone = Some(zone.clone());
        zone
    }

    /// A served snapshot of `zone` alone, not following any publisher (tests, fuzzing).
    pub fn fixed(zone: Arc<Snapshot>) -> Arc<ServedZone> {
        Arc::new(ServedZone { current: ArcSwap::from_pointee(Served::new(zone)) })
    }

    /// The current snapshot; cheap, lock-free.
    pub fn snapshot(&self) -> Arc<Served> {
        self.current.load_full()
    }

    /// The current snapshot for one query: lock-free and without touching
    /// the `Arc`'s shared reference count (no cache-line traffic between the
    /// UDP workers). Not to be held for long.
    pub fn current(&self) -> arc_swap::Guard<Arc<Served>> {
        self.current.load()
    }
}
