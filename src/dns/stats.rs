//! DNS counters for the hot path: relaxed atomics in cache-line-aligned
//! shards. Each UDP worker thread claims a shard of its own, so counting an
//! answer is two uncontended `fetch_add`s on a line no other core writes;
//! a scrape sums the shards.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use hickory_proto::op::ResponseCode;

use crate::dns::Transport;

/// How an answered query is classified (`rcode` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// NOERROR with records in the answer section.
    NoError,
    /// NOERROR with an empty answer section (the name exists, not that type).
    NoData,
    /// NXDOMAIN: no such name in the zone.
    NxDomain,
    /// REFUSED: outside the zone, or a transfer not allowed.
    Refused,
    /// FORMERR: a malformed query.
    FormErr,
    /// NOTIMP: an opcode srvd does not implement.
    NotImp,
    /// BADVERS: an EDNS version srvd does not speak.
    BadVers,
    /// SERVFAIL: srvd could not answer (should not happen).
    ServFail,
    /// Any other response code (none is sent today).
    Other,
}

impl Outcome {
    /// Every outcome, in metric label order.
    pub const ALL: [Outcome; 9] = [
        Outcome::NoError,
        Outcome::NoData,
        Outcome::NxDomain,
        Outcome::Refused,
        Outcome::FormErr,
        Outcome::NotImp,
        Outcome::BadVers,
        Outcome::ServFail,
        Outcome::Other,
    ];

    /// From a response code and whether the answer section is empty.
    pub fn of(rcode: ResponseCode, no_answers: bool) -> Outcome {
        match rcode {
            ResponseCode::NoError if no_answers => Outcome::NoData,
            ResponseCode::NoError => Outcome::NoError,
            ResponseCode::NXDomain => Outcome::NxDomain,
            ResponseCode::Refused => Outcome::Refused,
            ResponseCode::FormErr => Outcome::FormErr,
            ResponseCode::NotImp => Outcome::NotImp,
            ResponseCode::BADVERS => Outcome::BadVers,
            ResponseCode::ServFail => Outcome::ServFail,
            _ => Outcome::Other,
        }
    }

    /// The `rcode` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::NoError => "noerror",
            Outcome::NoData => "nodata",
            Outcome::NxDomain => "nxdomain",
            Outcome::Refused => "refused",
            Outcome::FormErr => "formerr",
            Outcome::NotImp => "notimp",
            Outcome::BadVers => "badvers",
            Outcome::ServFail => "servfail",
            Outcome::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Which code built the answer (`path` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// A pre-encoded template ([`crate::dns::fast`]).
    Fast,
    /// [`crate::dns::reply`] and encoding.
    General,
}

impl Path {
    /// Both paths, in metric label order.
    pub const ALL: [Path; 2] = [Path::Fast, Path::General];

    /// The `path` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Fast => "fast",
            Path::General => "general",
        }
    }
}

/// Both transports, in metric label order.
pub const TRANSPORTS: [Transport; 2] = [Transport::Udp, Transport::Tcp];

/// The `transport` label value.
pub fn transport_str(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    }
}

fn t_index(t: Transport) -> usize {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
    }
}

const OUTCOMES: usize = Outcome::ALL.len();
const ANSWERS: usize = 0; // [transport][outcome]
const TRUNCATED: usize = ANSWERS + 2 * OUTCOMES; // [transport]
const PATHS: usize = TRUNCATED + 2; // [transport][path]
const DROPPED: usize = PATHS + 4; // [transport]
const SLOTS: usize = DROPPED + 2;

/// Shards per daemon: enough for the UDP workers of a few sockets plus TCP;
/// beyond that, workers share (still correct, just contended).
const SHARDS: usize = 32;

/// One shard: written by (normally) one thread.
#[derive(Debug)]
#[repr(align(128))]
pub struct Shard {
    slots: [AtomicU64; SLOTS],
}

impl Default for Shard {
    fn default() -> Shard {
        Shard { slots: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl Shard {
    #[inline]
    fn bump(&self, slot: usize) {
        self.slots[slot].fetch_add(1, Relaxed);
    }

    /// Counts one answered query.
    #[inline]
    pub fn answered(&self, t: Transport, path: Path, outcome: Outcome, truncated: bool) {
        let ti = t_index(t);
        self.bump(ANSWERS + ti * OUTCOMES + outcome.index());
        self.bump(PATHS + ti * 2 + path as usize);
        if truncated {
            self.bump(TRUNCATED + ti);
        }
    }

    /// Counts a packet that got no answer (a response, or too short to parse).
    #[inline]
    pub fn dropped(&self, t: Transport) {
        self.bump(DROPPED + t_index(t));
    }
}

/// Why srvd closed (or saw the end of) a DNS TCP connection (`reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it.
    Client,
    /// No query within `tcp_idle_timeout`.
    Idle,
    /// A query did not arrive completely within `tcp_message_timeout`.
    ReadTimeout,
    /// An answer could not be written within `tcp_message_timeout` (a
    /// client that does not read).
    WriteTimeout,
    /// `tcp_max_lifetime` reached.
    Lifetime,
    /// `tcp_max_queries` answered.
    Queries,
    /// Closed to make room for a new connection at `tcp_max_connections`
    /// (counted by the [`ConnCounters`]).
    Evicted,
    /// A read or write failed (reset by the peer, ...).
    Error,
}

impl CloseReason {
    /// Every reason, in metric label order.
    pub const ALL: [CloseReason; 8] = [
        CloseReason::Client,
        CloseReason::Idle,
        CloseReason::ReadTimeout,
        CloseReason::WriteTimeout,
        CloseReason::Lifetime,
        CloseReason::Queries,
        CloseReason::Evicted,
        CloseReason::Error,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Idle => "idle",
            CloseReason::ReadTimeout => "read_timeout",
            CloseReason::WriteTimeout => "write_timeout",
            CloseReason::Lifetime => "lifetime",
            CloseReason::Queries => "queries",
            CloseReason::Evicted => "evicted",
            CloseReason::Error => "error",
        }
    }
}

/// Connections of a listener with a connection cap
/// ([`crate::dns::server::conns::ConnTable`]): open now, most open at once, and
/// closed to make room.
#[derive(Debug, Default)]
pub struct ConnCounters {
    /// Connections open now.
    pub open: AtomicU64,
    /// Most connections open at once since start.
    pub peak: AtomicU64,
    /// Connections closed to make room for a new one.
    pub evicted: AtomicU64,
    /// The cap (a gauge, for dashboards).
    pub cap: AtomicU64,
}

/// Transport-level events: rare, so plain (unsharded) atomics.
#[derive(Debug, Default)]
pub struct TransportStats {
    panics: [AtomicU64; 2],
    /// UDP worker threads running now.
    pub udp_workers: AtomicU64,
    /// UDP worker threads that ended and were started again.
    pub udp_worker_restarts: AtomicU64,
    /// Counters of the DNS-over-TCP connection table.
    pub tcp: std::sync::Arc<ConnCounters>,
    /// TCP connections accepted.
    pub tcp_accepted: AtomicU64,
    /// Failed `accept` calls (e.g. out of file descriptors).
    pub tcp_accept_errors: AtomicU64,
    tcp_closed: [AtomicU64; CloseReason::ALL.len()],
}

impl TransportStats {
    /// Counts a request whose answer code panicked (the request was dropped).
    pub fn panicked(&self, t: Transport) {
        if let Some(a) = self.panics.get(t_index(t)) {
            a.fetch_add(1, Relaxed);
        }
    }

    /// Answers abandoned because their code panicked, over `t`.
    pub fn panics(&self, t: Transport) -> u64 {
        self.panics.get(t_index(t)).map_or(0, |a| a.load(Relaxed))
    }

    /// Counts a closed TCP connection (evictions are counted by the table).
    pub fn tcp_closed(&self, r: CloseReason) {
        if r == CloseReason::Evicted {
            return;
        }
        if let Some(a) = self.tcp_closed.get(r as usize) {
            a.fetch_add(1, Relaxed);
        }
    }

    /// TCP connections closed for `r` (evictions from the table's counter).
    pub fn tcp_closed_by(&self, r: CloseReason) -> u64 {
        match r {
            CloseReason::Evicted => self.tcp.evicted.load(Relaxed),
            r => self.tcp_closed.get(r as usize).map_or(0, |a| a.load(Relaxed)),
        }
    }
}

/// DNS counters of one daemon.
#[derive(Debug)]
pub struct DnsStats {
    shards: Box<[Shard]>,
    next: AtomicUsize,
    /// Workers, connections and panics.
    pub transport: TransportStats,
}

impl Default for DnsStats {
    fn default() -> DnsStats {
        DnsStats {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            next: AtomicUsize::new(0),
            transport: TransportStats::default(),
        }
    }
}

impl DnsStats {
    /// Zeroed counters with their shards.
    pub fn new() -> DnsStats {
        DnsStats::default()
    }

    /// A shard for one worker; keep it for the worker's lifetime.
    pub fn claim(&self) -> usize {
        self.next.fetch_add(1, Relaxed) % SHARDS
    }

    /// Shard `i` (as returned by [`DnsStats::claim`], wrapped into range).
    pub fn shard(&self, i: usize) -> &Shard {
        &self.shards[i % SHARDS]
    }

    fn sum(&self, slot: usize) -> u64 {
        self.shards.iter().map(|s| s.slots[slot].load(Relaxed)).sum()
    }

    /// Answers sent over `t` classified as `o`.
    pub fn answers(&self, t: Transport, o: Outcome) -> u64 {
        self.sum(ANSWERS + t_index(t) * OUTCOMES + o.index())
    }

    /// Answers sent over `t` with TC set.
    pub fn truncated(&self, t: Transport) -> u64 {
        self.sum(TRUNCATED + t_index(t))
    }

    /// Answers over `t` built by `path`.
    pub fn path(&self, t: Transport, p: Path) -> u64 {
        self.sum(PATHS + t_index(t) * 2 + p as usize)
    }

    /// Packets over `t` that got no answer.
    pub fn dropped(&self, t: Transport) -> u64 {
        self.sum(DROPPED + t_index(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_sum_and_slots_do_not_overlap() {
        let s = DnsStats::new();
        let (a, b) = (s.claim(), s.claim());
        assert_ne!(a, b);
        s.shard(a).answered(Transport::Udp, Path::Fast, Outcome::NoError, false);
        s.shard(b).answered(Transport::Udp, Path::Fast, Outcome::NoError, false);
        s.shard(b).answered(Transport::Udp, Path::General, Outcome::NoError, true);
        s.shard(a).answered(Transport::Tcp, Path::General, Outcome::Other, false);
        s.shard(a).dropped(Transport::Tcp);
        assert_eq!(s.answers(Transport::Udp, Outcome::NoError), 3);
        assert_eq!(s.answers(Transport::Tcp, Outcome::NoError), 0);
        assert_eq!(s.answers(Transport::Tcp, Outcome::Other), 1);
        assert_eq!(s.truncated(Transport::Udp), 1);
        assert_eq!(s.truncated(Transport::Tcp), 0);
        assert_eq!(s.path(Transport::Udp, Path::Fast), 2);
        assert_eq!(s.path(Transport::Udp, Path::General), 1);
        assert_eq!(s.path(Transport::Tcp, Path::General), 1);
        assert_eq!(s.dropped(Transport::Tcp), 1);
        assert_eq!(s.dropped(Transport::Udp), 0);
        assert_eq!(std::mem::align_of::<Shard>(), 128);
    }

    #[test]
    fn outcome_of_rcode() {
        assert_eq!(Outcome::of(ResponseCode::NoError, true), Outcome::NoData);
        assert_eq!(Outcome::of(ResponseCode::NoError, false), Outcome::NoError);
        assert_eq!(Outcome::of(ResponseCode::BADVERS, true), Outcome::BadVers);
        assert_eq!(Outcome::of(ResponseCode::NXDomain, true), Outcome::NxDomain);
    }
}
