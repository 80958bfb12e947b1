//! NOTIFY (RFC 1996): on every new serial, tell each `[[secondary]]` with
//! `notify = true` that the zone changed, so it refreshes now instead of
//! after the SOA refresh interval.
//!
//! One task watches the serial; each new serial starts one round, one task
//! per secondary, which retries with backoff (1 s, 2 s, 4 s … at most 60 s)
//! until the secondary answers NOERROR or the next serial supersedes the
//! round. Publication never waits for any of this.
//!
//! What each secondary was last sent and has acknowledged is kept on a
//! [`NotifyStatus`] board, read by the status page and the metrics.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dns::tsig;
use crate::input::config::{Secondary, TsigKey};
use crate::zone::Snapshot;
use crate::zone::publish::Publisher;

/// Wait for the first answer; doubled after every unanswered attempt.
pub const FIRST_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait between attempts.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// The NOTIFY state of one secondary (`notify = true`). Times are unix
/// seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecondaryNotify {
    /// "ip:port".
    pub secondary: String,
    /// The serial of the last NOTIFY sent (None: none sent yet).
    pub sent_serial: Option<u32>,
    /// When that NOTIFY was last sent.
    pub sent_at: Option<u64>,
    /// Attempts made for `sent_serial` so far.
    pub attempts: u32,
    /// The highest serial the secondary acknowledged since srvd started.
    pub acked_serial: Option<u32>,
    /// When it was acknowledged, unix seconds.
    pub acked_at: Option<u64>,
    /// Why the last attempt failed ("no answer within 1s", "answered
    /// REFUSED", ...); cleared when an attempt is acknowledged.
    pub last_error: Option<String>,
    /// When the last attempt failed, unix seconds.
    pub last_error_at: Option<u64>,
}

impl SecondaryNotify {
    /// Acknowledged the serial it was last sent (or nothing sent yet).
    pub fn in_sync(&self) -> bool {
        self.sent_serial.is_none() || self.sent_serial == self.acked_serial
    }
}

/// What the notifier did for each secondary, shared with the status page
/// and the metrics. Only the secondaries of the current configuration are
/// kept.
#[derive(Debug, Default)]
pub struct NotifyStatus {
    board: Mutex<BTreeMap<SocketAddr, SecondaryNotify>>,
}

impl NotifyStatus {
    /// An empty board, shared by the notifier and its readers.
    pub fn new() -> Arc<NotifyStatus> {
        Arc::new(NotifyStatus::default())
    }

    /// Every secondary NOTIFY is sent to, by address.
    pub fn snapshot(&self) -> Vec<SecondaryNotify> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SocketAddr, SecondaryNotify>> {
        self.board.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps exactly these secondaries (a reload may add or remove some).
    fn keep(&self, secondaries: &[SocketAddr]) {
        let mut b = self.lock();
        b.retain(|a, _| secondaries.contains(a));
        for a in secondaries {
            b.entry(*a).or_insert_with(|| SecondaryNotify { secondary: a.to_string(), ..SecondaryNotify::default() });
        }
    }

    fn update(&self, addr: SocketAddr, f: impl FnOnce(&mut SecondaryNotify)) {
        let mut b = self.lock();
        let e = b.entry(addr).or_insert_with(|| SecondaryNotify { secondary: addr.to_string(), ..SecondaryNotify::default() });
        f(e);
    }

    fn sent(&self, addr: SocketAddr, serial: u32, attempt: u32) {
        self.update(addr, |e| {
            e.sent_serial = Some(serial);
            e.sent_at = Some(unix_now());
            e.attempts = attempt;
        });
    }

    fn acked(&self, addr: SocketAddr, serial: u32) {
        self.update(addr, |e| {
            e.acked_serial = Some(serial);
            e.acked_at = Some(unix_now());
            e.last_error = None;
            e.last_error_at = None;
        });
    }

    fn failed(&self, addr: SocketAddr, error: &NotifyError) {
        self.update(addr, |e| {
            e.last_error = Some(error.to_string());
            e.last_error_at = Some(unix_now());
        });
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Starts the notifier. `listen` are srvd's DNS addresses: NOTIFY is sent
/// from the first one of the secondary's address family (secondaries accept
/// NOTIFY from their primary's address), unless it is a wildcard. What it
/// does is recorded on `status`.
pub fn spawn(
    publisher: Arc<Publisher>,
    listen: Vec<SocketAddr>,
    status: Arc<NotifyStatus>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    let tasks = tracker.clone();
    tracker.spawn(async move {
        let mut serial = publisher.subscribe();
        serial.mark_changed(); // notify at start too: the serial is new
        let mut round = shutdown.child_token();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = serial.changed() => if changed.is_err() { break },
            }
            let snap = publisher.snapshot();
            round.cancel();
            round = shutdown.child_token();
            let access = crate::dns::xfr::Access::from_config(&snap.config);
            let targets: Vec<SocketAddr> = access.secondaries.iter().filter(|s| s.notify).map(|s| s.address).collect();
            status.keep(&targets);
            for sec in access.secondaries.iter().filter(|s| s.notify) {
                let key = sec.key.as_ref().and_then(|k| access.keys.iter().find(|t| &t.name == k)).cloned();
                let source = source_for(&listen, sec.address);
                tasks.spawn(notify_until_acked(snap.clone(), sec.clone(), key, source, status.clone(), round.clone()));
            }
        }
        round.cancel();
    });
}

fn source_for(listen: &[SocketAddr], target: SocketAddr) -> SocketAddr {
    let ip = listen
        .iter()
        .map(|a| a.ip())
        .find(|ip| ip.is_ipv4() == target.is_ipv4() && !ip.is_unspecified())
        .unwrap_or(if target.is_ipv4() { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) });
    SocketAddr::new(ip, 0)
}

async fn notify_until_acked(
    snap: Arc<Snapshot>,
    sec: Secondary,
    key: Option<TsigKey>,
    source: SocketAddr,
    status: Arc<NotifyStatus>,
    stop: CancellationToken,
) {
    let mut wait = FIRST_TIMEOUT;
    for attempt in 1u32.. {
        let next = tokio::time::Instant::now() + wait;
        status.sent(sec.address, snap.serial, attempt);
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            r = notify_once(&snap, sec.address, key.as_ref(), source, wait) => r,
        };
        match outcome {
            Ok(()) => {
                tracing::info!(secondary = %sec.address, serial = snap.serial, attempt, "NOTIFY acknowledged");
                status.acked(sec.address, snap.serial);
                return;
            }
            Err(e) => {
                status.failed(sec.address, &e);
                tracing::warn!(secondary = %sec.address, serial = snap.serial, attempt, error = %e, retry_in = ?wait, "NOTIFY failed");
            }
        }
        // A timeout has used up the wait already; a fast failure (refused,
        // unreachable) waits the rest of it.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        wait = (wait * 2).min(MAX_TIMEOUT);
    }
}

/// Why a NOTIFY was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The NOTIFY could not be TSIG-signed with the secondary's key.
    #[error("cannot sign: {0}")]
    Sign(hickory_proto::ProtoError),
    /// The NOTIFY message could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(hickory_proto::ProtoError),
    /// The local UDP socket to send from could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The local address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Sending the datagram failed.
    #[error("cannot send: {0}")]
    Send(std::io::Error),
    /// Reading the answer failed.
    #[error("receive: {0}")]
    Receive(std::io::Error),
    /// The secondary did not answer in time (the attempt is retried with backoff).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The secondary answered with an error code.
    #[error("answered {0}")]
    Rcode(ResponseCode),
    /// The secondary's answer carries a TSIG that does not verify.
    #[error("bad TSIG on the answer: {0}")]
    Tsig(tsig::VerifyError),
}

/// Sends one NOTIFY and waits up to `wait` for its answer.
pub async fn notify_once(
    snap: &Snapshot,
    target: SocketAddr,
    key: Option<&TsigKey>,
    source: SocketAddr,
    wait: Duration,
) -> Result<(), NotifyError> {
    let id: u16 = rand::random();
    let mut msg = Message::new(id, MessageType::Query, OpCode::Notify);
    msg.metadata.authoritative = true;
    let mut q = Query::query(snap.origin.clone(), RecordType::SOA);
    q.set_query_class(DNSClass::IN);
    msg.add_query(q);
    msg.add_answer(snap.soa.clone());
    let (bytes, request_mac) = match key {
        Some(k) => {
            let (b, mac) = tsig::sign_request(k, &mut msg, tsig::now()).map_err(NotifyError::Sign)?;
            (b, Some(mac))
        }
        None => (msg.to_vec().map_err(NotifyError::Encode)?, None),
    };
    let sock = UdpSocket::bind(source).await.map_err(|e| NotifyError::Bind { addr: source, source: e })?;
    sock.send_to(&bytes, target).await.map_err(NotifyError::Send)?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (n, from) = match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
            Err(_) => return Err(NotifyError::Timeout(wait)),
            Ok(Err(e)) => return Err(NotifyError::Receive(e)),
            Ok(Ok(x)) => x,
        };
        if from != target {
            continue;
        }
        let Some(raw) = buf.get(..n) else { continue };
        let Ok(resp) = Message::from_vec(raw) else { continue };
        if resp.metadata.id != id || resp.metadata.message_type != MessageType::Response || resp.metadata.op_code != OpCode::Notify {
            continue;
        }
        if resp.metadata.response_code != ResponseCode::NoError {
            return Err(NotifyError::Rcode(resp.metadata.response_code));
        }
        if let (Some(k), Some(mac)) = (key, &request_mac) {
            tsig::verify_response(k, raw, mac, tsig::now()).map_err(NotifyError::Tsig)?;
        }
        return Ok(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_follows_sends_acks_errors_and_reloads() {
        let b = NotifyStatus::new();
        let (s1, s2): (SocketAddr, SocketAddr) = ("127.0.0.1:53".parse().unwrap(), "[::1]:5353".parse().unwrap());
        b.keep(&[s1, s2]);
        assert!(b.snapshot().iter().all(|n| n.in_sync() && n.sent_serial.is_none()));
        b.sent(s1, 7, 1);
        b.failed(s1, &NotifyError::Timeout(FIRST_TIMEOUT));
        b.sent(s1, 7, 2);
        let n = b.snapshot().into_iter().find(|n| n.secondary == "127.0.0.1:53").unwrap();
        assert_eq!((n.sent_serial, n.attempts, n.acked_serial, n.in_sync()), (Some(7), 2, None, false));
        assert_eq!(n.last_error.as_deref(), Some("no answer within 1s"));
        b.acked(s1, 7);
        let n = b.snapshot().into_iter().find(|n| n.secondary == "127.0.0.1:53").unwrap();
        assert_eq!((n.acked_serial, n.last_error.as_deref(), n.in_sync()), (Some(7), None, true));
        // A reload drops a secondary: it leaves the board.
        b.keep(&[s2]);
        assert_eq!(b.snapshot().iter().map(|n| n.secondary.as_str()).collect::<Vec<_>>(), ["[::1]:5353"]);
    }
}
