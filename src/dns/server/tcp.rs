//! DNS over TCP (RFC 7766): an accept loop per listener and one task per
//! connection, with limits so that no client, or crowd of clients, can
//! starve the others or the rest of srvd:
//!
//! - at most `tcp_max_connections` open at once; at the cap a new connection
//!   closes the longest-idle one ([`super::conns::ConnTable`]);
//! - a connection waits at most `tcp_idle_timeout` for its next query, and
//!   lives at most `tcp_max_lifetime` and `tcp_max_queries` answers;
//! - once the first byte of a query arrives, the whole query must arrive
//!   within `tcp_message_timeout` (a client trickling bytes is closed), and
//!   each answer must be written within it (a client that never reads is
//!   closed);
//! - queries on one connection are answered one after the other, so a
//!   client pipelining without reading stops being read (the kernel buffers
//!   fill, the write times out): nothing queues in srvd;
//! - a query's body is read into a buffer that grows with the bytes actually
//!   received, so a length prefix of 65,000 costs nothing up front;
//! - accept errors such as EMFILE back off instead of spinning.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conns::{ConnGuard, ConnTable};
use crate::dns::served::ServedZone;
use crate::dns::stats::{CloseReason, DnsStats, Outcome, Path};
use crate::dns::{self, Reply, Transport};
use crate::input::config::TcpLimits;

/// Read-ahead buffer of a connection (a few pipelined queries).
const READ_BUFFER: usize = 1024;
/// First allocation for a query body; it grows with the bytes received.
const BODY_START: usize = 512;
/// A body buffer larger than this is not kept between queries.
const BODY_KEEP: usize = 4096;

struct Ctx {
    served: Arc<ServedZone>,
    stats: Arc<DnsStats>,
    /// The shard every TCP answer is counted in (TCP is the rare path).
    shard: usize,
    limits: TcpLimits,
    table: Arc<ConnTable>,
}

/// Serves every listener (sharing one connection cap) until `shutdown`.
pub fn spawn(
    listeners: Vec<TcpListener>,
    served: Arc<ServedZone>,
    stats: Arc<DnsStats>,
    limits: TcpLimits,
    cap: usize,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    let shard = stats.claim();
    // The table keeps its counters in DnsStats, for /metrics.
    let table = ConnTable::new(cap, stats.transport.tcp.clone());
    let ctx = Arc::new(Ctx { served, stats, shard, limits, table });
    for l in listeners {
        tracker.spawn(accept_loop(l, ctx.clone(), tracker.clone(), shutdown.clone()));
    }
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, tracker: TaskTracker, shutdown: CancellationToken) {
    loop {
        let on_error = || {
            ctx.stats.transport.tcp_accept_errors.fetch_add(1, Relaxed);
        };
        let Some((stream, peer)) = super::conns::accept(&listener, &ctx.table, &shutdown, "DNS over TCP", on_error).await else {
            return;
        };
        ctx.stats.transport.tcp_accepted.fetch_add(1, Relaxed);
        let guard = ctx.table.admit();
        let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
        tracker.spawn(async move {
            let kill = guard.kill.clone();
            let reason = tokio::select! {
                _ = shutdown.cancelled() => None,
                _ = kill.cancelled() => Some(CloseReason::Evicted),
                r = serve(stream, peer, &guard, &ctx) => Some(r),
            };
            drop(guard);
            if let Some(r) = reason {
                tracing::trace!(%peer, reason = r.as_str(), "DNS over TCP: connection closed");
                ctx.stats.transport.tcp_closed(r);
            }
        });
    }
}

/// What the answer code made of one query.
enum Answer {
    /// Nothing to send (not a query, or it panicked).
    Nothing,
    One(Vec<u8>),
    /// An allowed zone transfer: sent as several messages.
    Transfer(Box<Reply>),
}

/// Serves one connection; returns why it ended.
async fn serve(stream: TcpStream, peer: SocketAddr, guard: &ConnGuard, ctx: &Ctx) -> CloseReason {
    let _ = stream.set_nodelay(true);
    let limits = &ctx.limits;
    let end_of_life = Instant::now() + limits.max_lifetime;
    let mut rd = BufReader::with_capacity(READ_BUFFER, stream);
    let mut body: Vec<u8> = Vec::new();
    let mut answered: u32 = 0;
    loop {
        // Idle: wait for the first byte of the next query.
        guard.set_idle(true);
        let idle_end = Instant::now() + limits.idle_timeout;
        let (deadline, on_timeout) =
            if idle_end < end_of_life { (idle_end, CloseReason::Idle) } else { (end_of_life, CloseReason::Lifetime) };
        let first = match timeout_at(deadline, rd.read_u8()).await {
            Err(_) => return on_timeout,
            Ok(Err(e)) => return read_error(&e),
            Ok(Ok(b)) => b,
        };
        guard.set_idle(false);
        // The rest of the query, within the message deadline.
        let read = timeout(limits.message_timeout, read_message(&mut rd, first, &mut body)).await;
        match read {
            Err(_) => return CloseReason::ReadTimeout,
            Ok(Err(e)) => return read_error(&e),
            Ok(Ok(())) => {}
        }
        let snap = ctx.served.snapshot();
        let answer = super::guarded(&ctx.stats, Transport::Tcp, peer, || answer(ctx, &snap, &body, peer)).unwrap_or(Answer::Nothing);
        let sent = match answer {
            Answer::Nothing => Ok(()),
            Answer::One(bytes) => write_message(&mut rd, &bytes, limits.message_timeout).await,
            Answer::Transfer(reply) => transfer(&mut rd, ctx, &snap, *reply, peer).await,
        };
        if let Err(r) = sent {
            return r;
        }
        answered = answered.saturating_add(1);
        if body.capacity() > BODY_KEEP {
            body = Vec::new();
        }
        if answered >= limits.max_queries {
            let _ = timeout(limits.message_timeout, rd.get_mut().shutdown()).await;
            return CloseReason::Queries;
        }
        if Instant::now() >= end_of_life {
            let _ = timeout(limits.message_timeout, rd.get_mut().shutdown()).await;
            return CloseReason::Lifetime;
        }
    }
}

fn read_error(e: &std::io::Error) -> CloseReason {
    if e.kind() == std::io::ErrorKind::UnexpectedEof { CloseReason::Client } else { CloseReason::Error }
}

/// Reads the rest of one length-prefixed message (the length's first byte
/// is `first`) into `body`, which grows only as bytes arrive.
async fn read_message(rd: &mut BufReader<TcpStream>, first: u8, body: &mut Vec<u8>) -> std::io::Result<()> {
    let second = rd.read_u8().await?;
    let len = usize::from(u16::from_be_bytes([first, second]));
    body.clear();
    while body.len() < len {
        let want = len.saturating_sub(body.len());
        if body.capacity() == body.len() {
            // Double what we hold (at least BODY_START), never past the length.
            body.reserve(want.min(body.len().max(BODY_START)));
        }
        let n = (&mut *rd).take(want as u64).read_buf(body).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// Writes one message with its length prefix, within `limit`.
async fn write_message(rd: &mut BufReader<TcpStream>, msg: &[u8], limit: Duration) -> Result<(), CloseReason> {
    let Ok(len) = u16::try_from(msg.len()) else {
        tracing::error!(len = msg.len(), "BUG: a DNS answer longer than 65535 bytes; not sent");
        return Ok(());
    };
    let mut framed = Vec::with_capacity(msg.len().saturating_add(2));
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    match timeout(limit, rd.get_mut().write_all(&framed)).await {
        Err(_) => Err(CloseReason::WriteTimeout),
        Ok(Err(_)) => Err(CloseReason::Error),
        Ok(Ok(())) => Ok(()),
    }
}

/// The answer to one query, counted like UDP answers. TCP always takes the
/// general path (docs/metrics.md: `path="general"` for every TCP answer);
/// an allowed transfer is left to [`transfer`].
fn answer(ctx: &Ctx, snap: &crate::dns::served::Served, query: &[u8], peer: SocketAddr) -> Answer {
    super::test_hooks::maybe_panic(query);
    let shard = ctx.stats.shard(ctx.shard);
    let Some(reply) = dns::reply_from(snap, query, Transport::Tcp, Some(peer.ip())) else {
        shard.dropped(Transport::Tcp);
        return Answer::Nothing;
    };
    let rcode = reply.metadata.map_or(hickory_proto::op::ResponseCode::ServFail, |m| m.response_code);
    // Counted before sending, so a client that has its answer sees it counted.
    shard.answered(Transport::Tcp, Path::General, Outcome::of(rcode, reply.answers.is_empty() && !reply.transfer), false);
    if reply.transfer {
        return Answer::Transfer(Box::new(reply));
    }
    Answer::One(dns::encode(&reply))
}

/// AXFR (and IXFR answered as AXFR): SOA, the zone, SOA, in as many
/// messages as needed, each with the reply's header and question and,
/// when the request was signed, a TSIG chained over the messages (RFC 8945
/// §5.3.1).
async fn transfer(
    rd: &mut BufReader<TcpStream>,
    ctx: &Ctx,
    snap: &crate::dns::served::Served,
    reply: Reply,
    peer: SocketAddr,
) -> Result<(), CloseReason> {
    // The messages are built (and signed, chained) by the same code the
    // fuzz harness checks (`dns::encode_transfer`).
    let Some(messages) = super::guarded(&ctx.stats, Transport::Tcp, peer, || dns::encode_transfer(snap, &reply)) else {
        // A transfer that cannot be built ends the connection: the secondary
        // sees it incomplete and retries, rather than getting a partial zone.
        return Err(CloseReason::Error);
    };
    for msg in messages {
        write_message(rd, &msg, ctx.limits.message_timeout).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_large_length_costs_only_what_arrives() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        let mut rd = BufReader::with_capacity(READ_BUFFER, s);
        c.write_all(&[0xfd, 0xe8, 1, 2, 3]).await.unwrap();
        let first = rd.read_u8().await.unwrap();
        let mut body = Vec::new();
        let r = timeout(Duration::from_millis(300), read_message(&mut rd, first, &mut body)).await;
        assert!(r.is_err(), "still waiting for 64997 more bytes");
        assert_eq!(body.len(), 3);
        assert!(body.capacity() <= BODY_START, "capacity {}", body.capacity());
        drop(c);
        let mut body = Vec::new();
        let mut c2 = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (s2, _) = l.accept().await.unwrap();
        let mut rd2 = BufReader::with_capacity(READ_BUFFER, s2);
        let mut msg = vec![0x03, 0xe8];
        msg.extend(std::iter::repeat_n(7u8, 1000));
        c2.write_all(&msg).await.unwrap();
        let first = rd2.read_u8().await.unwrap();
        read_message(&mut rd2, first, &mut body).await.unwrap();
        assert_eq!(body.len(), 1000);
        assert!(body.capacity() <= 1024, "capacity {}", body.capacity());
    }
}
