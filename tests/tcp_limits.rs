//! DNS over TCP under hostile clients (issue 8): thousands of idle
//! connections, slow (one byte a second) clients, a client that pipelines
//! without reading, partial frames with a huge length, and the per-connection
//! query and lifetime limits. Each test runs the real daemon in-process on
//! loopback with small limits, and checks that UDP and other TCP clients are
//! still answered, that the connection gauge stays under the cap and that
//! memory stays bounded (RSS of this process, which holds the daemon).
//!
//! The tests take a shared lock: they are heavy, and the memory figures
//! would be meaningless with two of them running at once.

// The harness of the `it` test binary (tests/it/main.rs). This file is a
// binary of its own because it measures its process's memory, so the helpers
// it does not use are dead here.
#[path = "it/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{TestDaemon, build_query, raw_udp_within, tcp_exchange};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const ORIGIN: &str = "puppet.example.test.";

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// BASE_CONFIG with a metrics listener and `extra` keys in `[server]`.
fn config(extra: &str) -> String {
    common::BASE_CONFIG
        .replace("registry = \"{dir}/masters.toml\"", &format!("registry = \"{{dir}}/masters.toml\"\nmetrics = \"127.0.0.1:0\"\n{extra}"))
}

async fn start(extra: &str) -> TestDaemon {
    TestDaemon::start(&config(extra), "").await
}

/// Raises this process's soft open-files limit to at least `want` (up to
/// the hard limit); returns the limit in force.
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write only the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            let new = libc::rlimit { rlim_cur: want.min(lim.rlim_max), rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &new) == 0 {
                lim.rlim_cur = new.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

/// Resident memory of this process (daemon and test client), KiB.
fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap()
}

/// `GET /metrics`, the body.
async fn scrape(addr: SocketAddr) -> String {
    let fetch = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let out = tokio::time::timeout(Duration::from_secs(5), fetch).await.expect("a scrape is answered within 5 s");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

fn metric(body: &str, series: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in metrics"))
        .parse::<f64>()
        .unwrap() as u64
}

fn closed(body: &str, reason: &str) -> u64 {
    metric(body, &format!("srvd_dns_tcp_connections_closed_total{{reason=\"{reason}\"}}"))
}

/// Polls the metrics until `cond` holds, for up to `within`.
async fn until(d: &TestDaemon, within: Duration, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let t0 = Instant::now();
    loop {
        let body = scrape(d.metrics_addr()).await;
        if cond(&body) {
            return body;
        }
        assert!(t0.elapsed() < within, "{what}: not true after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An SOA query over UDP is answered, NOERROR, within 2 s.
async fn udp_answers(addr: SocketAddr) -> Duration {
    let t0 = Instant::now();
    let r = raw_udp_within(addr, &build_query(ORIGIN, RecordType::SOA, None), Duration::from_secs(2)).await.expect("UDP answer");
    let m = Message::from_vec(&r).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    t0.elapsed()
}

/// A new TCP client gets its SOA answer within 5 s.
async fn tcp_answers(addr: SocketAddr) -> Duration {
    let t0 = Instant::now();
    let run = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        tcp_exchange(&mut s, &build_query(ORIGIN, RecordType::SOA, None)).await
    };
    let m = tokio::time::timeout(Duration::from_secs(5), run).await.expect("TCP answer within 5 s");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    t0.elapsed()
}

fn framed(q: &[u8]) -> Vec<u8> {
    let mut v = (q.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(q);
    v
}

/// Reads until EOF or an error (the server closed), up to `within`.
async fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let r = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    r.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_evict_the_oldest_and_others_are_served() {
    let _g = SERIAL.lock().await;
    const CAP: u64 = 256;
    const CLIENTS: usize = 3000;
    let limit = raise_nofile(2 * CLIENTS as u64 + 1000);
    assert!(limit >= CLIENTS as u64 + CAP + 200, "open-files limit {limit} too low for this test");
    let d = start("tcp_max_connections = 256\ntcp_idle_timeout = \"60s\"").await;
    let body = scrape(d.metrics_addr()).await;
    assert_eq!(metric(&body, "srvd_dns_tcp_max_connections"), CAP);
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let mut conns = Vec::with_capacity(CLIENTS);
    let mut max_seen = 0;
    for i in 0..CLIENTS {
        conns.push(TcpStream::connect(d.addr).await.unwrap());
        if i % 500 == 499 {
            let body = scrape(d.metrics_addr()).await;
            let open = metric(&body, "srvd_dns_tcp_connections");
            max_seen = max_seen.max(open);
            assert!(open <= CAP, "{open} connections open, cap {CAP}");
            // Served while the crowd grows.
            udp_answers(d.addr).await;
        }
    }
    let flood = t0.elapsed();
    // Every connection beyond the cap evicted an idle one.
    let body = until(&d, Duration::from_secs(20), "evictions", |b| closed(b, "evicted") >= (CLIENTS as u64 - CAP)).await;
    let udp = udp_answers(d.addr).await;
    let tcp = tcp_answers(d.addr).await;
    let open = metric(&body, "srvd_dns_tcp_connections");
    let peak = metric(&body, "srvd_dns_tcp_connections_peak");
    assert!(peak <= CAP && open <= CAP, "peak {peak}, open {open}, cap {CAP}");
    // The oldest connections are the ones closed: the first is gone.
    assert!(closed_by_server(&mut conns[0], Duration::from_secs(5)).await, "the oldest idle connection was closed");
    let rss1 = rss_kib();
    eprintln!(
        "idle flood: {CLIENTS} connections in {flood:?}, cap {CAP}, peak open {peak}, evicted {}, \
         then UDP answered in {udp:?}, a new TCP client in {tcp:?}; RSS {rss0} -> {rss1} KiB",
        closed(&body, "evicted")
    );
    drop(conns);
    until(&d, Duration::from_secs(20), "all closed", |b| metric(b, "srvd_dns_tcp_connections") == 0).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_by_the_message_deadline() {
    let _g = SERIAL.lock().await;
    const SLOW: usize = 20;
    let d = start("tcp_message_timeout = \"500ms\"\ntcp_idle_timeout = \"30s\"").await;
    let addr = d.addr;
    let q = framed(&build_query(ORIGIN, RecordType::SOA, None));
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let q = q.clone();
        slow.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let t0 = Instant::now();
            // One byte a second; the server must hang up long before the end.
            for b in &q {
                if s.write_all(&[*b]).await.is_err() || closed_by_server(&mut s, Duration::from_secs(1)).await {
                    return Some(t0.elapsed());
                }
            }
            None
        }));
    }
    // Meanwhile other clients are served.
    for _ in 0..5 {
        udp_answers(addr).await;
        tcp_answers(addr).await;
    }
    let mut times = Vec::new();
    for t in slow {
        let took = t.await.unwrap().expect("a slow client is closed before it has sent its query");
        assert!(took < Duration::from_secs(4), "closed after {took:?}");
        times.push(took);
    }
    let body = until(&d, Duration::from_secs(10), "read timeouts counted", |b| closed(b, "read_timeout") >= SLOW as u64).await;
    assert_eq!(closed(&body, "read_timeout"), SLOW as u64);
    eprintln!("slow clients: {SLOW} closed after {:?} .. {:?}", times.iter().min().unwrap(), times.iter().max().unwrap());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pipelining_without_reading_does_not_grow_memory() {
    let _g = SERIAL.lock().await;
    const QUERIES: usize = 100_000;
    let d = start("tcp_message_timeout = \"1s\"\ntcp_max_queries = 1000000").await;
    let addr = d.addr;
    let rss0 = rss_kib();
    // A small receive buffer, so the answers back up quickly.
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let s = sock.connect(addr).await.unwrap();
    let (_rd, mut wr) = s.into_split();
    let batch: Vec<u8> = (0..1000).flat_map(|_| framed(&build_query(ORIGIN, RecordType::SOA, None))).collect();
    let writer = tokio::spawn(async move {
        let mut sent = 0;
        while sent < QUERIES {
            match tokio::time::timeout(Duration::from_secs(20), wr.write_all(&batch)).await {
                Ok(Ok(())) => sent += 1000,
                _ => break,
            }
        }
        sent
    });
    // Other clients are answered while it pushes.
    let mut rss_max = rss0;
    let t0 = Instant::now();
    let body = loop {
        udp_answers(addr).await;
        tcp_answers(addr).await;
        rss_max = rss_max.max(rss_kib());
        let body = scrape(d.metrics_addr()).await;
        if closed(&body, "write_timeout") >= 1 {
            break body;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "the non-reading client was not closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let sent = writer.await.unwrap();
    let answered = metric(&body, "srvd_dns_responses_total{transport=\"tcp\",rcode=\"noerror\"}");
    let rss1 = rss_kib();
    eprintln!(
        "pipelining: client wrote {sent} of {QUERIES} queries before being cut off, {answered} TCP answers; \
         closed by the write timeout after {:?}; RSS {rss0} -> max {rss_max} -> {rss1} KiB",
        t0.elapsed()
    );
    assert!(rss_max.saturating_sub(rss0) < 50 * 1024, "RSS grew by {} KiB", rss_max - rss0);
    // The kernel may take all the queries into its buffers; srvd stops
    // answering (and reading) once its answers cannot be written.
    assert!(answered < QUERIES as u64, "{answered} answered to a client that never reads");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_frames_with_a_huge_length_cost_little_memory() {
    let _g = SERIAL.lock().await;
    const CLIENTS: usize = 2000;
    raise_nofile(2 * CLIENTS as u64 + 1000);
    let d = start("tcp_max_connections = 2500\ntcp_idle_timeout = \"60s\"\ntcp_message_timeout = \"60s\"").await;
    let rss0 = rss_kib();
    let mut conns = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut s = TcpStream::connect(d.addr).await.unwrap();
        // 65,000 announced, 3 sent.
        s.write_all(&[0xfd, 0xe8, 1, 2, 3]).await.unwrap();
        conns.push(s);
    }
    until(&d, Duration::from_secs(20), "all connections open", |b| metric(b, "srvd_dns_tcp_connections") == CLIENTS as u64).await;
    // Give the connection tasks time to read their 5 bytes, sampling RSS.
    let mut rss1 = 0;
    for _ in 0..10 {
        tcp_answers(d.addr).await;
        rss1 = rss1.max(rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    udp_answers(d.addr).await;
    drop(conns);
    until(&d, Duration::from_secs(20), "all closed", |b| metric(b, "srvd_dns_tcp_connections") == 0).await;
    let rss2 = rss_kib();
    let grew = rss1.saturating_sub(rss0);
    eprintln!(
        "partial frames: {CLIENTS} connections each announcing 65000 bytes and sending 3: RSS {rss0} -> {rss1} KiB \
         (+{grew} KiB, {} bytes per connection), {rss2} KiB after they closed",
        grew * 1024 / CLIENTS as u64
    );
    // 64 KiB each up front would be 125 MiB.
    assert!(grew < 24 * 1024, "RSS grew by {grew} KiB for {CLIENTS} partial frames");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_cap_closes_after_answering_that_many() {
    let _g = SERIAL.lock().await;
    let d = start("tcp_max_queries = 5").await;
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    let mut all = Vec::new();
    for _ in 0..8 {
        all.extend(framed(&build_query(ORIGIN, RecordType::SOA, None)));
    }
    s.write_all(&all).await.unwrap();
    let mut answers = 0;
    let read = async {
        loop {
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).await.is_err() {
                return;
            }
            let mut m = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut m).await.unwrap();
            assert_eq!(Message::from_vec(&m).unwrap().metadata.response_code, ResponseCode::NoError);
            answers += 1;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.expect("the server closes the connection");
    assert_eq!(answers, 5);
    until(&d, Duration::from_secs(10), "counted", |b| closed(b, "queries") == 1).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifetime_limit_closes_a_busy_connection() {
    let _g = SERIAL.lock().await;
    let d = start("tcp_max_lifetime = \"1s\"\ntcp_idle_timeout = \"10s\"").await;
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    let t0 = Instant::now();
    let mut answered = 0;
    // A query every 200 ms keeps it from ever being idle for long.
    let took = loop {
        let q = framed(&build_query(ORIGIN, RecordType::SOA, None));
        if s.write_all(&q).await.is_err() {
            break t0.elapsed();
        }
        let mut len = [0u8; 2];
        match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len)).await.expect("answer or close") {
            Err(_) => break t0.elapsed(),
            Ok(_) => {
                let mut m = vec![0u8; u16::from_be_bytes(len) as usize];
                s.read_exact(&mut m).await.unwrap();
                answered += 1;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "still open after 10 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    assert!(answered >= 3, "{answered} answered before the close");
    until(&d, Duration::from_secs(10), "counted", |b| closed(b, "lifetime") == 1).await;
    eprintln!("lifetime: closed after {took:?}, {answered} queries answered");
    d.stop().await;
}

#[tokio::test]
async fn bad_limits_are_config_errors_naming_the_key() {
    for (line, key) in [
        ("tcp_max_connections = 0", "server.tcp_max_connections"),
        ("tcp_max_queries = 0", "server.tcp_max_queries"),
        ("tcp_idle_timeout = \"0s\"", "server.tcp_idle_timeout"),
        ("tcp_message_timeout = \"soon\"", "server.tcp_message_timeout"),
        ("tcp_max_lifetime = \"-1s\"", "server.tcp_max_lifetime"),
    ] {
        let err = match TestDaemon::try_start(&config(line), "").await {
            Ok(_) => panic!("{line} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(key), "{line}: {err}");
    }
}

#[test]
fn the_default_cap_leaves_room_for_health_checks() {
    use srvd::dns::server::{default_tcp_max_connections, reserved_descriptors};
    assert_eq!(default_tcp_max_connections(1024, 10), (1024 - 256 - 80) / 2);
    assert_eq!(default_tcp_max_connections(20_000, 100), 1024);
    assert_eq!(default_tcp_max_connections(100, 100), 16);
    for (limit, masters) in [(1024u64, 0usize), (4096, 300), (20_000, 2000), (65_536, 50)] {
        let cap = default_tcp_max_connections(limit, masters) as u64;
        assert!(cap + reserved_descriptors(masters) <= limit, "limit {limit}, {masters} masters: cap {cap}");
    }
}
