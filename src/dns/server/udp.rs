//! DNS over UDP: plain worker threads blocked in `recv_from` on a shared
//! socket, answering synchronously from the snapshot (no await, no task per
//! packet), which is what keeps the common path cheap.
//!
//! Each request's answer code runs under `super::guarded`: a panic drops
//! that request only. A supervisor task per worker starts it again should
//! the thread end anyway (with a short pause, so a worker that keeps dying
//! cannot spin); `srvd_dns_udp_workers` shows how many run.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dns::served::ServedZone;
use crate::dns::stats::DnsStats;
use crate::dns::{self, Transport};

/// How often a blocked UDP worker wakes up to see whether to stop.
const UDP_WAKEUP: Duration = Duration::from_millis(200);
/// Pause before a worker that ended is started again.
const RESTART_PAUSE: Duration = Duration::from_millis(100);

/// Starts `workers` supervised worker threads on `sock`.
pub fn spawn(
    sock: UdpSocket,
    workers: usize,
    served: Arc<ServedZone>,
    stats: Arc<DnsStats>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    let sock = match sock.into_std().and_then(|s| {
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(UDP_WAKEUP))?;
        grow_buffers(&s);
        Ok(Arc::new(s))
    }) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot prepare UDP socket");
            return;
        }
    };
    for _ in 0..workers {
        let (sock, served, stats, shutdown) = (sock.clone(), served.clone(), stats.clone(), shutdown.clone());
        tracker.spawn(supervise(sock, served, stats, shutdown));
    }
}

/// Keeps one worker thread running until `shutdown`.
async fn supervise(sock: Arc<std::net::UdpSocket>, served: Arc<ServedZone>, stats: Arc<DnsStats>, shutdown: CancellationToken) {
    let shard = stats.claim();
    let mut first = true;
    while !shutdown.is_cancelled() {
        if !first {
            stats.transport.udp_worker_restarts.fetch_add(1, Relaxed);
            tracing::error!("a UDP worker thread ended; starting it again");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RESTART_PAUSE) => {}
            }
        }
        first = false;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let (sock, served, stats, shutdown) = (sock.clone(), served.clone(), stats.clone(), shutdown.clone());
        // A plain thread, not spawn_blocking: a runtime being dropped must
        // not wait for it. The tracker still waits for it (via this task).
        let spawned = std::thread::Builder::new().name("srvd-udp".into()).spawn(move || {
            let _running = Running::new(&stats);
            // A panic outside the per-request guard ends this worker (its
            // loop may be in an unknown state); the supervisor starts a new one.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker(&sock, &served, &stats, shard, &shutdown)));
            drop(done_tx);
        });
        match spawned {
            // Resolves (with an error) when the thread drops the sender.
            Ok(_) => {
                let _ = done_rx.await;
            }
            Err(e) => tracing::error!(error = %e, "cannot start a UDP worker thread"),
        }
    }
}

/// Counts a running worker in `srvd_dns_udp_workers` for its lifetime.
struct Running<'a>(&'a DnsStats);

impl<'a> Running<'a> {
    fn new(stats: &'a DnsStats) -> Running<'a> {
        stats.transport.udp_workers.fetch_add(1, Relaxed);
        Running(stats)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.transport.udp_workers.fetch_sub(1, Relaxed);
    }
}

/// One worker: receive, answer, send, until `shutdown`.
fn worker(sock: &std::net::UdpSocket, served: &ServedZone, stats: &DnsStats, shard: usize, shutdown: &CancellationToken) {
    let counts = stats.shard(shard);
    let mut buf = vec![0u8; 4096];
    while !shutdown.is_cancelled() {
        let (n, src) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) =>
            {
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        if src.port() == 0 {
            continue;
        }
        let Some(query) = buf.get(..n) else { continue };
        super::test_hooks::maybe_kill(query);
        let snap = served.current();
        let answer = super::guarded(stats, Transport::Udp, src, || {
            super::test_hooks::maybe_panic(query);
            dns::answer(&snap, query, Transport::Udp, Some(src.ip()))
        });
        match answer {
            Some(Some(a)) => {
                counts.answered(Transport::Udp, a.path, a.outcome, a.truncated);
                if let Err(e) = sock.send_to(&a.bytes, src) {
                    tracing::debug!(error = %e, %src, "UDP send error");
                }
            }
            Some(None) => counts.dropped(Transport::Udp),
            // A panic: counted by `guarded`.
            None => {}
        }
    }
}

/// Asks for large socket buffers so bursts are queued, not dropped: 4 MiB
/// (SO_RCVBUFFORCE as root, else SO_RCVBUF up to net.core.rmem_max).
fn grow_buffers(s: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4 << 20;
    let fd = s.as_raw_fd();
    for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
        let set = |opt| {
            // SAFETY: fd is a valid socket for the duration of the call; the
            // option value is a c_int whose size is passed.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        if set(force) != 0 {
            set(plain);
        }
    }
}
