//! The metrics listener under a crowd of idle connections (issue 8: 32
//! busy slots used to lock out every scrape): 2,000 connections that never
//! send a request, and a scrape still gets through, because a new
//! connection closes the one that has waited longest for its request.

use crate::common;

use std::time::{Duration, Instant};

use common::TestDaemon;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_stop_a_scrape() {
    const IDLE: usize = 2000;
    let cfg =
        common::BASE_CONFIG.replace("registry = \"{dir}/masters.toml\"", "registry = \"{dir}/masters.toml\"\nmetrics = \"127.0.0.1:0\"");
    let d = TestDaemon::start(&cfg, "").await;
    let addr = d.metrics_addr();
    let t0 = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let opened = t0.elapsed();
    for _ in 0..3 {
        let t = Instant::now();
        let scrape = async {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let out = tokio::time::timeout(Duration::from_secs(5), scrape).await.expect("a scrape is answered within 5 s");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("srvd_zone_serial"));
        eprintln!("scrape with {IDLE} idle connections (opened in {opened:?}): {:?}", t.elapsed());
    }
    // The oldest idle connection was closed by the server.
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), idle[0].read(&mut buf)).await.expect("the oldest idle connection is closed");
    assert!(matches!(r, Ok(0) | Err(_)));
    d.stop().await;
}
