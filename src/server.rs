//! DNS transports. UDP uses a receive loop of its own per socket (several
//! workers share one socket, no task per packet), answering from the current
//! snapshot; TCP uses hickory-server's `Server`, which handles framing,
//! several queries per connection and idle timeouts, with a `RequestHandler`
//! that calls the same answer code.

use std::iter;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dns::{self, Transport};
use crate::metrics::counters::{DnsStats, Outcome, Path};
use crate::publish::Publisher;
use crate::tsig::ResponseSigner;
use crate::xfr;

/// Sockets the DNS side serves on: bound by the caller (port 0 in tests).
pub struct DnsSockets {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
}

impl DnsSockets {
    /// Binds UDP and TCP on every address.
    pub async fn bind(addrs: &[SocketAddr]) -> std::io::Result<DnsSockets> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for a in addrs {
            // With port 0, UDP picks a port and TCP must get the same one;
            // if that TCP port is taken, try another pair.
            let attempts = if a.port() == 0 { 20 } else { 1 };
            let mut last_err = None;
            for _ in 0..attempts {
                let u = UdpSocket::bind(a).await.map_err(|e| std::io::Error::new(e.kind(), format!("cannot bind UDP {a}: {e}")))?;
                let port = u.local_addr()?.port();
                match TcpListener::bind(SocketAddr::new(a.ip(), port)).await {
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

/// How long an idle TCP connection is kept open.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts serving; every task is tracked and stops on `shutdown`.
/// Answers are counted in `stats` (see [`crate::metrics`]).
pub fn spawn(sockets: DnsSockets, publisher: Arc<Publisher>, stats: Arc<DnsStats>, tracker: &TaskTracker, shutdown: CancellationToken) {
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 8);
    for sock in sockets.udp {
        let sock = match sock.into_std().and_then(|s| {
            s.set_nonblocking(false)?;
            s.set_read_timeout(Some(UDP_WAKEUP))?;
            grow_buffers(&s);
            Ok(Arc::new(s))
        }) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot prepare UDP socket");
                continue;
            }
        };
        for _ in 0..workers {
            // A plain thread, not spawn_blocking: a runtime being dropped
            // must not wait for it. The tracker still waits for it on stop.
            let (sock, publisher, shutdown, stats) = (sock.clone(), publisher.clone(), shutdown.clone(), stats.clone());
            let shard = stats.claim();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            let spawned = std::thread::Builder::new().name("srvd-udp".into()).spawn(move || {
                udp_worker(&sock, &publisher, &stats, shard, &shutdown);
                let _ = done_tx.send(());
            });
            match spawned {
                Ok(_) => {
                    tracker.spawn(async move {
                        let _ = done_rx.await;
                    });
                }
                Err(e) => tracing::error!(error = %e, "cannot start a UDP worker thread"),
            }
        }
    }
    let shard = stats.claim();
    let mut server = Server::new(TcpHandler { publisher, stats, shard });
    for l in sockets.tcp {
        server.register_listener(l, TCP_IDLE_TIMEOUT, 64 * 1024);
    }
    tracker.spawn(async move {
        shutdown.cancelled().await;
        if let Err(e) = server.shutdown_gracefully().await {
            tracing::warn!(error = %e, "TCP server did not stop cleanly");
        }
    });
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

/// How often a blocked UDP worker wakes up to see whether to stop.
const UDP_WAKEUP: Duration = Duration::from_millis(200);

/// One UDP worker: a plain thread blocked in recv_from on a shared socket.
/// Answers are computed synchronously from the snapshot (no await, no task
/// per packet), which is what keeps the common path cheap.
fn udp_worker(sock: &std::net::UdpSocket, publisher: &Publisher, stats: &DnsStats, shard: usize, shutdown: &CancellationToken) {
    let shard = stats.shard(shard);
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
        let snap = publisher.current();
        if let Some(resp) = dns::answer_counted(&snap, &buf[..n], Transport::Udp, Some(src.ip()), shard)
            && let Err(e) = sock.send_to(&resp, src)
        {
            tracing::debug!(error = %e, %src, "UDP send error");
        }
    }
}

struct TcpHandler {
    publisher: Arc<Publisher>,
    stats: Arc<DnsStats>,
    /// The shard every TCP answer is counted in (TCP is the rare path).
    shard: usize,
}

#[async_trait::async_trait]
impl RequestHandler for TcpHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response_handle: R) -> ResponseInfo {
        let snap = self.publisher.snapshot();
        let fallback = || {
            let mut m = Metadata::new(request.metadata.id, MessageType::Response, OpCode::Query);
            m.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header { metadata: m, counts: HeaderCounts::default() })
        };
        let shard = self.stats.shard(self.shard);
        let Some(mut reply) = dns::resolve_from(&snap, request.as_slice(), Transport::Tcp, Some(request.src().ip())) else {
            shard.dropped(Transport::Tcp);
            return fallback();
        };
        let Some(metadata) = reply.metadata else { return fallback() };
        // Counted before sending, so a client that has its answer sees it
        // counted (TCP answers are never truncated: the limit is 64 KiB).
        shard.answered(
            Transport::Tcp,
            Path::General,
            Outcome::of(metadata.response_code, reply.answers.is_empty() && !reply.transfer),
            false,
        );
        let edns = reply.edns.clone();
        let sent = if reply.transfer {
            // AXFR (and IXFR answered as AXFR): SOA, the zone, SOA, in as
            // many messages as needed, each signed when the request was.
            let mut last = Ok(fallback());
            for chunk in xfr::messages(&snap, xfr::MESSAGE_BUDGET) {
                last = send(&mut response_handle, request, metadata, edns.as_ref(), &chunk, &[], &[], reply.tsig.as_mut()).await;
                if last.is_err() {
                    break;
                }
            }
            last
        } else {
            send(
                &mut response_handle,
                request,
                metadata,
                edns.as_ref(),
                &reply.answers,
                &reply.authority,
                &reply.additional,
                reply.tsig.as_mut(),
            )
            .await
        };
        match sent {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "TCP send error");
                fallback()
            }
        }
    }
}

/// Sends one response message; with a signer, the message is encoded once
/// to compute its TSIG (hickory encodes it again, identically, with the
/// TSIG appended).
#[allow(clippy::too_many_arguments)]
async fn send<R: ResponseHandler>(
    handle: &mut R,
    request: &Request,
    metadata: Metadata,
    edns: Option<&Edns>,
    answers: &[Record],
    authority: &[Record],
    additional: &[Record],
    signer: Option<&mut ResponseSigner>,
) -> Result<ResponseInfo, String> {
    let build = || {
        let mut b = MessageResponseBuilder::new(&request.queries, None);
        if let Some(e) = edns {
            b.edns(e);
        }
        b.build(metadata, answers.iter(), authority.iter(), iter::empty(), additional.iter())
    };
    let mut resp = build();
    if let Some(s) = signer {
        let mut bytes = Vec::with_capacity(4096);
        build().destructive_emit(&mut BinEncoder::new(&mut bytes)).map_err(|e| e.to_string())?;
        resp.set_signature(Box::new(s.sign(&bytes)));
    }
    handle.send_response(resp).await.map_err(|e| e.to_string())
}
