//! DNS over UDP: plain worker threads, each with a socket of its own bound
//! with SO_REUSEPORT to the listen address (the kernel spreads datagrams
//! over the sockets, so workers never wait on each other), receiving and
//! sending in batches (`recvmmsg`/`sendmmsg`) and answering synchronously
//! from the snapshot (no await, no task per packet) into reply buffers
//! kept for the worker's life.
//!
//! Each request's answer code runs under `super::guarded`: a panic drops
//! that request only. A supervisor task per worker starts it again should
//! the thread end anyway (with a short pause, so a worker that keeps dying
//! cannot spin); `srvd_dns_udp_workers` shows how many run. A worker
//! sleeps in `recvmmsg` until a datagram comes: on shutdown its supervisor
//! wakes it with `shutdown(2)` on the socket (no periodic wake-ups).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dns::served::ServedZone;
use crate::dns::stats::DnsStats;
use crate::dns::{self, Transport};

/// Pause before a worker that ended is started again.
const RESTART_PAUSE: Duration = Duration::from_millis(100);
/// Datagrams received (and answered) per system call at most.
const BATCH: usize = 32;
/// Receive buffer per datagram: larger queries are cut (and then answered
/// FORMERR or not at all), as before.
const RECV_SIZE: usize = 4096;

/// The UDP sockets of one listen address: one per worker, all bound with
/// SO_REUSEPORT to the same address and port.
pub struct UdpGroup {
    sockets: Vec<std::net::UdpSocket>,
}

impl UdpGroup {
    /// Binds `workers` (at least one) sockets to `addr`. The address is
    /// first taken by a plain socket, so a port in use by anyone (another
    /// srvd included) fails as it always did, and port 0 picks a port no
    /// other socket holds; the group then binds that port.
    pub fn bind(addr: SocketAddr, workers: usize) -> std::io::Result<UdpGroup> {
        let port = {
            let probe = std::net::UdpSocket::bind(addr)?;
            probe.local_addr()?.port()
        };
        let at = SocketAddr::new(addr.ip(), port);
        let mut sockets = Vec::new();
        for _ in 0..workers.max(1) {
            sockets.push(reuseport_socket(at)?);
        }
        Ok(UdpGroup { sockets })
    }

    /// The address the group is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self.sockets.first() {
            Some(s) => s.local_addr(),
            None => Err(std::io::Error::other("no UDP socket")),
        }
    }
}

fn reuseport_socket(at: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(at), Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    s.bind(&SockAddr::from(at))?;
    let s: std::net::UdpSocket = s.into();
    grow_buffers(&s);
    Ok(s)
}

/// Starts one supervised worker thread per socket of `group`.
pub fn spawn(group: UdpGroup, served: Arc<ServedZone>, stats: Arc<DnsStats>, tracker: &TaskTracker, shutdown: CancellationToken) {
    for sock in group.sockets {
        let (served, stats, shutdown) = (served.clone(), stats.clone(), shutdown.clone());
        tracker.spawn(supervise(Arc::new(sock), served, stats, shutdown));
    }
}

/// Keeps one worker thread running until `shutdown`, then wakes it.
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
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
        let (sock2, served, stats, shutdown2) = (sock.clone(), served.clone(), stats.clone(), shutdown.clone());
        // A plain thread, not spawn_blocking: a runtime being dropped must
        // not wait for it. The tracker still waits for it (via this task).
        let spawned = std::thread::Builder::new().name("srvd-udp".into()).spawn(move || {
            let _running = Running::new(&stats);
            // A panic outside the per-request guard ends this worker (its
            // loop may be in an unknown state); the supervisor starts a new one.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker(&sock2, &served, &stats, shard, &shutdown2)));
            drop(done_tx);
        });
        match spawned {
            // Resolves (with an error) when the thread drops the sender.
            Ok(_) => {
                tokio::select! {
                    _ = &mut done_rx => {}
                    _ = shutdown.cancelled() => {
                        wake(&sock);
                        let _ = done_rx.await;
                        return;
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot start a UDP worker thread"),
        }
    }
}

/// Wakes a worker blocked in `recvmmsg` on `sock` for good: after
/// `shutdown(SHUT_RD)` every receive returns at once (Linux wakes the
/// waiters; the call itself reports ENOTCONN on an unconnected socket,
/// which is expected).
fn wake(sock: &std::net::UdpSocket) {
    // SAFETY: the descriptor is valid (we hold the socket); shutdown(2)
    // only changes the socket's state.
    unsafe {
        libc::shutdown(sock.as_raw_fd(), libc::SHUT_RD);
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

/// The buffers of one worker, allocated once: received datagrams with
/// their sources, and the replies with their destinations.
struct Buffers {
    recv: Vec<u8>,
    from: Vec<libc::sockaddr_storage>,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    replies: Vec<Vec<u8>>,
    /// Which received slot each reply answers (its destination).
    reply_to: Vec<usize>,
    out_iov: Vec<libc::iovec>,
    out_msgs: Vec<libc::mmsghdr>,
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain old data (null pointers, zero lengths).
    unsafe { std::mem::zeroed() }
}

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            recv: vec![0u8; BATCH * RECV_SIZE],
            from: vec![zeroed_storage(); BATCH],
            iov: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH],
            msgs: (0..BATCH).map(|_| zeroed_mmsghdr()).collect(),
            replies: (0..BATCH).map(|_| Vec::with_capacity(1232)).collect(),
            reply_to: Vec::with_capacity(BATCH),
            out_iov: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH],
            out_msgs: (0..BATCH).map(|_| zeroed_mmsghdr()).collect(),
        }
    }

    /// Receives up to [`BATCH`] datagrams, blocking until the first one.
    fn receive(&mut self, fd: libc::c_int) -> std::io::Result<usize> {
        let base = self.recv.as_mut_ptr();
        for (i, ((iov, msg), from)) in self.iov.iter_mut().zip(self.msgs.iter_mut()).zip(self.from.iter_mut()).enumerate() {
            // SAFETY (pointer arithmetic): i < BATCH, so the slot lies inside `recv`.
            *iov = libc::iovec { iov_base: unsafe { base.add(i * RECV_SIZE) }.cast(), iov_len: RECV_SIZE };
            point(msg, iov, from, std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t);
        }
        // SAFETY: every header points at live buffers of this struct of the
        // sizes given; the kernel writes at most that much into them.
        let n = unsafe { libc::recvmmsg(fd, self.msgs.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_WAITFORONE, std::ptr::null_mut()) };
        if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok((n as usize).min(BATCH)) }
    }

    /// Sends the replies in `replies[..reply_to.len()]`, each to the source
    /// of its slot. A datagram the kernel refuses is skipped.
    fn send(&mut self, fd: libc::c_int) {
        let count = self.reply_to.len();
        for (k, &slot) in self.reply_to.iter().enumerate() {
            let (Some(reply), Some(iov), Some(msg), Some(from), Some(rmsg)) =
                (self.replies.get_mut(k), self.out_iov.get_mut(k), self.out_msgs.get_mut(k), self.from.get_mut(slot), self.msgs.get(slot))
            else {
                continue;
            };
            *iov = libc::iovec { iov_base: reply.as_mut_ptr().cast(), iov_len: reply.len() };
            point(msg, iov, from, rmsg.msg_hdr.msg_namelen);
        }
        let mut sent = 0usize;
        while sent < count {
            let Some(rest) = self.out_msgs.get_mut(sent..count) else { break };
            // SAFETY: the headers point at the reply buffers and addresses
            // set up above, which live (unmoved) until this function returns.
            let n = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) };
            if n > 0 {
                sent = sent.saturating_add(n as usize);
            } else {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::debug!(error = %e, "UDP send error");
                    sent = sent.saturating_add(1);
                }
            }
        }
    }
}

/// The datagram received in slot `i` (of `recv`, with `msgs` and `from`
/// as `recvmmsg` left them), and its source.
fn datagram<'a>(recv: &'a [u8], msgs: &[libc::mmsghdr], from: &[libc::sockaddr_storage], i: usize) -> Option<(&'a [u8], SocketAddr)> {
    let msg = msgs.get(i)?;
    let len = (msg.msg_len as usize).min(RECV_SIZE);
    let start = i.checked_mul(RECV_SIZE)?;
    let data = recv.get(start..start.checked_add(len)?)?;
    Some((data, socket_addr(from.get(i)?, msg.msg_hdr.msg_namelen)?))
}

/// A received source address (IPv4 or IPv6).
fn socket_addr(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, which
            // it is large and aligned enough for.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
        }
        _ => None,
    }
}

/// One worker: receive a batch, answer it, send the answers, until `shutdown`.
fn worker(sock: &std::net::UdpSocket, served: &ServedZone, stats: &DnsStats, shard: usize, shutdown: &CancellationToken) {
    let counts = stats.shard(shard);
    let fd = sock.as_raw_fd();
    if let Err(e) = sock.set_nonblocking(false) {
        tracing::error!(error = %e, "cannot make a UDP socket blocking");
        return;
    }
    let mut b = Buffers::new();
    // SAFETY: prctl(PR_SET_TIMERSLACK) on the calling thread, plain integers.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    while !shutdown.is_cancelled() {
        let n = match b.receive(fd) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        if shutdown.is_cancelled() {
            break;
        }
        let snap = served.current();
        b.reply_to.clear();
        for i in 0..n {
            let Some((query, src)) = datagram(&b.recv, &b.msgs, &b.from, i) else { continue };
            if src.port() == 0 || query.is_empty() {
                continue;
            }
            super::test_hooks::maybe_kill(query);
            let k = b.reply_to.len();
            let Some(out) = b.replies.get_mut(k) else { continue };
            let ip: IpAddr = src.ip();
            let answer = super::guarded(stats, Transport::Udp, src, || {
                super::test_hooks::maybe_panic(query);
                dns::answer_into(&snap, query, Transport::Udp, Some(ip), out)
            });
            match answer {
                Some(Some(a)) => {
                    counts.answered(Transport::Udp, a.path, a.outcome, a.truncated);
                    b.reply_to.push(i);
                }
                Some(None) => counts.dropped(Transport::Udp),
                // A panic: counted by `guarded`.
                None => {}
            }
        }
        drop(snap);
        if !b.reply_to.is_empty() {
            b.send(fd);
        }
        if n > 0 && n < BATCH / 4 {
            std::thread::sleep(COALESCE);
        }
    }
}

/// After a small batch, the worker waits this long before receiving again,
/// so that busy traffic is taken in larger batches.
const COALESCE: std::time::Duration = std::time::Duration::from_micros(30);

/// Asks for large socket buffers so bursts are queued, not dropped: 4 MiB
/// (SO_RCVBUFFORCE as root, else SO_RCVBUF up to net.core.rmem_max).
fn grow_buffers(s: &std::net::UdpSocket) {
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

/// Points one mmsghdr at one buffer (`iov`) and one peer address (`name`,
/// `namelen` bytes of it used), with no control data; for recvmmsg and
/// sendmmsg alike.
fn point(msg: &mut libc::mmsghdr, iov: &mut libc::iovec, name: &mut libc::sockaddr_storage, namelen: libc::socklen_t) {
    msg.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
    msg.msg_hdr.msg_namelen = namelen;
    msg.msg_hdr.msg_iov = iov;
    msg.msg_hdr.msg_iovlen = 1;
    msg.msg_hdr.msg_control = std::ptr::null_mut();
    msg.msg_hdr.msg_controllen = 0;
    msg.msg_hdr.msg_flags = 0;
    msg.msg_len = 0;
}
