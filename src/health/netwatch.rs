//! Watches the host's routes, addresses and links (rtnetlink, Linux).
//!
//! A master host that vanishes without a reset (its route withdrawn, the
//! interface to it down, srvd's own address removed) leaves the held
//! connection silent: nothing would tell the checker before its next check.
//! The kernel does announce the change itself, though: every probe is told
//! (a counter on a [`tokio::sync::watch`] channel), looks up the route of its held
//! connection ([`super::check::Check::unroutable`]: two syscalls, no
//! packet) and, when there is none any more, checks at once on a fresh
//! connection, whose connect fails at once ("host unreachable"), so the
//! master is out within milliseconds, as for a crash.
//!
//! Bursts (a routing daemon installing many routes) are coalesced: the
//! first change is announced at once, later ones at most every
//! [`MIN_SPACING`].

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Changes after the first of a burst are announced at most this often.
pub const MIN_SPACING: Duration = Duration::from_millis(200);

/// Starts watching; the counter is bumped after each change (or burst of
/// changes). When the watch cannot be set up (not Linux, netlink not
/// allowed) that is logged once and the counter never moves: checks go on
/// at their usual pace.
pub fn watch(tracker: &TaskTracker, shutdown: CancellationToken) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    match sys::Socket::open() {
        Ok(sock) => {
            tracker.spawn(run(sock, tx, shutdown));
        }
        Err(e) => {
            tracing::info!(error = %e, "not watching routes and addresses (a vanished host is seen at its next check)");
            // Keep the sender alive so the receivers simply never change.
            tracker.spawn(async move {
                shutdown.cancelled().await;
                drop(tx);
            });
        }
    }
    rx
}

async fn run(sock: sys::Socket, tx: watch::Sender<u64>, shutdown: CancellationToken) {
    let mut last: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = sock.wait_and_drain() => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "route watch failed; a vanished host is seen at its next check");
                    shutdown.cancelled().await;
                    return;
                }
            }
        }
        if let Some(at) = last {
            let due = at + MIN_SPACING;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(due) => {}
            }
            // What arrived meanwhile is covered by this announcement.
            if let Err(e) = sock.drain() {
                tracing::warn!(error = %e, "route watch failed; a vanished host is seen at its next check");
                return;
            }
        }
        last = Some(tokio::time::Instant::now());
        tracing::debug!("routes, addresses or links changed; probes look up their routes");
        tx.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use tokio::io::unix::AsyncFd;

    /// Multicast groups: links, IPv4/IPv6 addresses and routes.
    const GROUPS: u32 =
        (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV4_ROUTE | libc::RTMGRP_IPV6_IFADDR | libc::RTMGRP_IPV6_ROUTE)
            as u32;

    /// A non-blocking NETLINK_ROUTE socket joined to [`GROUPS`].
    pub(super) struct Socket {
        fd: AsyncFd<OwnedFd>,
    }

    impl Socket {
        pub(super) fn open() -> io::Result<Socket> {
            // SAFETY: plain socket(2); the result is checked before use.
            let raw =
                unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, libc::NETLINK_ROUTE) };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: an all-zero sockaddr_nl is valid; the fields are set below.
            let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            addr.nl_groups = GROUPS;
            let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: `addr` is a valid sockaddr_nl of `len` bytes for the call's duration.
            let r = unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast::<libc::sockaddr>(), len) };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: the OwnedFd is moved into the AsyncFd, which owns it
            // (and its one descriptor) until it is dropped.
            let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
            Ok(Socket { fd })
        }

        /// Waits until notifications arrive, then reads all there are.
        pub(super) async fn wait_and_drain(&self) -> io::Result<()> {
            loop {
                let mut guard = self.fd.readable().await?;
                match self.read_all() {
                    Ok(true) => return Ok(()),
                    Ok(false) => guard.clear_ready(),
                    Err(e) => return Err(e),
                }
            }
        }

        /// Reads (and drops) whatever is queued.
        pub(super) fn drain(&self) -> io::Result<()> {
            self.read_all().map(|_| ())
        }

        /// Reads every queued message; whether there was one. The content
        /// does not matter: any change makes the probes look up their
        /// routes. An overrun (ENOBUFS: more changes than the socket
        /// buffer holds) is a change too.
        fn read_all(&self) -> io::Result<bool> {
            let mut buf = [0u8; 8192];
            let mut any = false;
            loop {
                // SAFETY: `buf` is writable for its whole length during the call.
                let n = unsafe { libc::recv(self.fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
                if n >= 0 {
                    any = true;
                    continue;
                }
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(any),
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => any = true,
                    _ => return Err(e),
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;

    pub(super) struct Socket;

    impl Socket {
        pub(super) fn open() -> io::Result<Socket> {
            Err(io::Error::new(io::ErrorKind::Unsupported, "route watching needs Linux rtnetlink"))
        }
        pub(super) async fn wait_and_drain(&self) -> io::Result<()> {
            std::future::pending().await
        }
        pub(super) fn drain(&self) -> io::Result<()> {
            Ok(())
        }
    }
}
