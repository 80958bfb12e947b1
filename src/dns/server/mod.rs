//! DNS transports. UDP uses worker threads with a socket each (SO_REUSEPORT),
//! receiving and answering in batches, no task per packet (see [`udp`]); TCP
//! uses an accept loop and one task per connection with a connection cap and
//! per-connection limits (see [`tcp`]). Both call the same answer code
//! ([`crate::dns`]), and both survive a panic in it: the request is dropped,
//! counted and logged (at most every few seconds), the worker lives on.

pub mod conns;
pub mod tcp;
pub mod udp;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Once, OnceLock};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::served::ServedZone;
use crate::dns::Transport;
use crate::dns::stats::DnsStats;
use crate::input::config::TcpLimits;

/// Listen backlog of TCP listeners (DNS and metrics); the kernel caps it at
/// net.core.somaxconn (4096 on current kernels).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Sockets the DNS side serves on: bound by the caller (port 0 in tests).
pub struct DnsSockets {
    /// Per address, one UDP socket per worker thread (SO_REUSEPORT).
    pub udp: Vec<udp::UdpGroup>,
    /// Bound TCP listeners, served by srvd's own accept loop with its limits.
    pub tcp: Vec<TcpListener>,
}

/// UDP worker threads (and sockets) per listen address: one per two
/// cores, 1 to 8. A busy worker finds a full batch waiting at every
/// receive; more workers than that share the load so thinly that each
/// sleeps and wakes for a few datagrams, which costs more CPU per query
/// than it buys (docs/performance.md). The other cores are left to the
/// kernel's network work, TCP, health checks and publication.
pub fn udp_workers() -> usize {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    (cores / 2).clamp(1, 8)
}

impl DnsSockets {
    /// Binds UDP (one socket per worker, see [`udp_workers`]) and TCP on every address.
    pub async fn bind(addrs: &[SocketAddr]) -> std::io::Result<DnsSockets> {
        let workers = udp_workers();
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for a in addrs {
            // With port 0, UDP picks a port and TCP must get the same one;
            // if that TCP port is taken (or the UDP port was taken between
            // picking it and binding the group), try another pair.
            let attempts = if a.port() == 0 { 20 } else { 1 };
            let mut last_err = None;
            for _ in 0..attempts {
                let u = match udp::UdpGroup::bind(*a, workers) {
                    Ok(u) => u,
                    Err(e) => {
                        last_err = Some(std::io::Error::new(e.kind(), format!("cannot bind UDP {a}: {e}")));
                        continue;
                    }
                };
                let port = u.local_addr()?.port();
                match listen_tcp(SocketAddr::new(a.ip(), port)) {
                    Ok(t) => {
                        udp.push(u);
                        tcp.push(t);
                        last_err = None;
                        break;
                    }
                    Err(e) => last_err = Some(std::io::Error::new(e.kind(), format!("cannot bind TCP {a}: {e}"))),
                }
            }
            if let Some(e) = last_err {
                return Err(e);
            }
        }
        Ok(DnsSockets { udp, tcp })
    }

    /// The addresses actually bound (UDP and TCP share them).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().filter_map(|s| s.local_addr().ok()).collect()
    }
}

/// A TCP listener with SO_REUSEADDR and a backlog of [`LISTEN_BACKLOG`]
/// (tokio's `TcpListener::bind` uses 1024). Needs a tokio runtime.
pub fn listen_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(LISTEN_BACKLOG)
}

/// The soft limit on open files (after [`crate::daemon::raise_fd_limit`]).
pub fn open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    ok.then_some(lim.rlim_cur)
}

/// Descriptors kept out of reach of DNS over TCP: health checks (one
/// connection per master and role, counted twice for reconnects), the
/// control socket and its clients, metrics, UDP sockets, files, and margin.
pub fn reserved_descriptors(masters: usize) -> u64 {
    256u64.saturating_add((masters as u64).saturating_mul(2 * 4))
}

/// Default `tcp_max_connections`: half of what is left of the open-files
/// limit after [`reserved_descriptors`], at most 1024, at least 16.
pub fn default_tcp_max_connections(limit: u64, masters: usize) -> usize {
    let room = limit.saturating_sub(reserved_descriptors(masters)) / 2;
    room.clamp(16, 1024) as usize
}

/// Starts serving `served`; every task is tracked and stops on `shutdown`.
/// `masters` (how many are checked) sizes the descriptors kept for health checks.
/// Answers are counted in `stats` (see [`crate::metrics`]).
pub fn spawn(
    sockets: DnsSockets,
    served: Arc<ServedZone>,
    stats: Arc<DnsStats>,
    limits: &TcpLimits,
    masters: usize,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    install_quiet_panic_hook();
    for group in sockets.udp {
        udp::spawn(group, served.clone(), stats.clone(), tracker, shutdown.clone());
    }
    let limit = open_files_limit();
    let cap = match limits.max_connections {
        Some(n) => {
            if let Some(l) = limit
                && (n as u64).saturating_add(reserved_descriptors(masters)) > l
            {
                tracing::warn!(
                    tcp_max_connections = n,
                    open_files_limit = l,
                    "server.tcp_max_connections leaves too few descriptors for health checks and srvctl; lower it or raise the limit"
                );
            }
            n
        }
        None => default_tcp_max_connections(limit.unwrap_or(1024), masters),
    };
    tracing::info!(tcp_max_connections = cap, open_files_limit = ?limit, "DNS over TCP connection cap");
    tcp::spawn(sockets.tcp, served, stats, limits.clone(), cap, tracker, shutdown);
}

// ---------------------------------------------------------------------------
// Panics in the answer code: dropped, counted, logged now and then.

thread_local! {
    /// Set while this thread runs the answer code of one request.
    static IN_REQUEST: Cell<bool> = const { Cell::new(false) };
    /// What the last panic in a request said (message and location).
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Replaces the panic hook once per process: a panic inside a request's
/// answer code is recorded for [`request_panicked`] (which logs it, rate
/// limited) instead of being printed at once; other panics go to the
/// previous hook as before.
fn install_quiet_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_REQUEST.with(Cell::get) {
                LAST_PANIC.with(|p| *p.borrow_mut() = info.to_string());
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs the answer code of one request; `None` if it panicked (the panic
/// is counted and logged).
pub(crate) fn guarded<R>(stats: &DnsStats, t: Transport, src: SocketAddr, f: impl FnOnce() -> R) -> Option<R> {
    IN_REQUEST.with(|c| c.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_REQUEST.with(|c| c.set(false));
    match r {
        Ok(r) => Some(r),
        Err(_) => {
            request_panicked(stats, t, src);
            None
        }
    }
}

/// Minimum time between two log lines about panicking requests.
const PANIC_LOG_INTERVAL: Duration = Duration::from_secs(10);

fn request_panicked(stats: &DnsStats, t: Transport, src: SocketAddr) {
    stats.transport.panicked(t);
    static START: OnceLock<Instant> = OnceLock::new();
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    static LOGGED_ONCE: AtomicBool = AtomicBool::new(false);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64;
    let last = LAST_MS.load(Relaxed);
    let due = !LOGGED_ONCE.load(Relaxed) || now.saturating_sub(last) >= PANIC_LOG_INTERVAL.as_millis() as u64;
    if due && LAST_MS.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
        LOGGED_ONCE.store(true, Relaxed);
        let suppressed = SUPPRESSED.swap(0, Relaxed);
        let what = LAST_PANIC.with(|p| std::mem::take(&mut *p.borrow_mut()));
        tracing::error!(
            transport = crate::dns::stats::transport_str(t),
            %src,
            panic = %what,
            not_logged_since_last = suppressed,
            "BUG: answering a DNS request panicked; the request was dropped (see srvd_dns_request_panics_total)"
        );
    } else {
        SUPPRESSED.fetch_add(1, Relaxed);
    }
}

/// Test hooks: make the answer code panic for a magic query name, to prove
/// that the transports survive it. Off unless a test turns it on; the check
/// is one relaxed load per request.
#[doc(hidden)]
pub mod test_hooks {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

    static ENABLED: AtomicBool = AtomicBool::new(false);

    /// First label of a query that panics inside the answer code.
    pub const PANIC_LABEL: &[u8] = b"srvd-test-panic";
    /// First label of a query that panics in a UDP worker outside the
    /// per-request guard, ending the worker thread (it is restarted).
    pub const KILL_LABEL: &[u8] = b"srvd-test-kill-worker";

    #[doc(hidden)]
    pub fn enable_panic_queries(on: bool) {
        ENABLED.store(on, Relaxed);
    }

    fn first_label_is(q: &[u8], label: &[u8]) -> bool {
        q.get(12).is_some_and(|&n| n as usize == label.len()) && q.get(13..13 + label.len()).is_some_and(|l| l.eq_ignore_ascii_case(label))
    }

    pub(crate) fn maybe_panic(q: &[u8]) {
        if ENABLED.load(Relaxed) && first_label_is(q, PANIC_LABEL) {
            panic!("test hook: panicking on a {} query", String::from_utf8_lossy(PANIC_LABEL));
        }
    }

    pub(crate) fn maybe_kill(q: &[u8]) {
        if ENABLED.load(Relaxed) && first_label_is(q, KILL_LABEL) {
            panic!("test hook: ending this UDP worker");
        }
    }
}
