//! A panic in the answer code costs one request, not a worker (issue 8):
//! with the test hook on, queries for `srvd-test-panic.<origin>` panic
//! inside the answer code. After 100 of them over UDP and 100 over TCP the
//! same number of UDP workers runs, normal queries are answered (on the same
//! TCP connection too), and the panics are counted per transport. A worker
//! thread that dies anyway is started again.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{TestDaemon, build_query, raw_udp_within, tcp_exchange};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const ORIGIN: &str = "puppet.example.test.";
const PANIC_NAME: &str = "srvd-test-panic.puppet.example.test.";
const KILL_NAME: &str = "srvd-test-kill-worker.puppet.example.test.";

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start() -> TestDaemon {
    srvd::dns::server::test_hooks::enable_panic_queries(true);
    let cfg =
        common::BASE_CONFIG.replace("registry = \"{dir}/masters.toml\"", "registry = \"{dir}/masters.toml\"\nmetrics = \"127.0.0.1:0\"");
    TestDaemon::start(&cfg, "").await
}

async fn scrape(addr: SocketAddr) -> String {
    let fetch = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    tokio::time::timeout(Duration::from_secs(5), fetch).await.expect("scrape answered")
}

fn metric(body: &str, series: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in metrics"))
        .parse::<f64>()
        .unwrap() as u64
}

async fn until(d: &TestDaemon, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let t0 = Instant::now();
    loop {
        let body = scrape(d.metrics_addr()).await;
        if cond(&body) {
            return body;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "{what}: not true after 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn soa_over_udp(addr: SocketAddr) {
    let r = raw_udp_within(addr, &build_query(ORIGIN, RecordType::SOA, None), Duration::from_secs(2)).await.expect("UDP answer");
    assert_eq!(Message::from_vec(&r).unwrap().metadata.response_code, ResponseCode::NoError);
}

const WORKERS: &str = "srvd_dns_udp_workers";

/// UDP workers srvd starts (one socket each), once all have started.
async fn all_workers(d: &TestDaemon) -> u64 {
    let want = srvd::dns::server::udp_workers() as u64;
    until(d, "all UDP workers running", |b| metric(b, WORKERS) == want).await;
    want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_request_is_dropped_and_the_workers_live_on() {
    let _g = SERIAL.lock().await;
    let d = start().await;
    let workers = all_workers(&d).await;

    // UDP: 100 panics, from one socket, no answer expected.
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let bad = build_query(PANIC_NAME, RecordType::A, None);
    for _ in 0..100 {
        s.send_to(&bad, d.addr).await.unwrap();
    }
    let body = until(&d, "100 UDP panics counted", |b| metric(b, "srvd_dns_request_panics_total{transport=\"udp\"}") >= 100).await;
    assert_eq!(metric(&body, "srvd_dns_request_panics_total{transport=\"udp\"}"), 100);
    let mut buf = [0u8; 512];
    assert!(tokio::time::timeout(Duration::from_millis(200), s.recv_from(&mut buf)).await.is_err(), "a panicking request gets no answer");
    assert_eq!(metric(&body, WORKERS), workers, "no UDP worker lost");
    // Every worker still answers: more queries than workers, all answered.
    for _ in 0..(4 * workers) {
        soa_over_udp(d.addr).await;
    }

    // TCP: 100 panics pipelined on one connection, then a normal query on it.
    let mut c = TcpStream::connect(d.addr).await.unwrap();
    let mut all = Vec::new();
    for _ in 0..100 {
        all.extend((bad.len() as u16).to_be_bytes());
        all.extend(&bad);
    }
    c.write_all(&all).await.unwrap();
    let m = tcp_exchange(&mut c, &build_query(ORIGIN, RecordType::SOA, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1, "the first answer on the connection is the normal query's");
    let m = tcp_exchange(&mut TcpStream::connect(d.addr).await.unwrap(), &build_query(ORIGIN, RecordType::SOA, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let body = scrape(d.metrics_addr()).await;
    assert_eq!(metric(&body, "srvd_dns_request_panics_total{transport=\"tcp\"}"), 100);
    assert_eq!(metric(&body, WORKERS), workers);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_thread_that_dies_is_started_again() {
    let _g = SERIAL.lock().await;
    let d = start().await;
    let workers = all_workers(&d).await;
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(&build_query(KILL_NAME, RecordType::A, None), d.addr).await.unwrap();
    let body = until(&d, "restarted", |b| metric(b, "srvd_dns_udp_worker_restarts_total") == 1 && metric(b, WORKERS) == workers).await;
    assert_eq!(metric(&body, WORKERS), workers);
    for _ in 0..(4 * workers) {
        soa_over_udp(d.addr).await;
    }
    d.stop().await;
}
