//! Health-check benchmark (run by `make bench` through bench/health.sh; the
//! tests are `#[ignore]`d so `make test` skips them):
//!
//! 1. failover timing with the DEFAULT [health] settings, against the real
//!    `srvd` binary: crash (connection refused) -> gone from DNS, hang ->
//!    gone, HTTP 503 -> gone, recovery -> back, each HEALTH_BENCH_ROUNDS
//!    (10) times at random phases, as min / median / max; then a master
//!    failing 1 check in 100 for HEALTH_BENCH_LOSSY_S (600) s: the number
//!    of answer changes (must be 0);
//! 2. CPU cost of checking 1,000 masters (https, then tcp), read from
//!    /proc/PID/stat of the srvd process while 1,000 mock masters run here.

use crate::common;

use std::net::SocketAddr;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mock_master::{Behaviour, MockMaster, TestCa};
use common::{build_query, query_udp, srv};
use hickory_proto::rr::RecordType;
use rand::Rng;

const ORIGIN: &str = "puppet.example.test";

struct Srvd {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Srvd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// Starts the srvd binary with default [health] timing (only ca_file set).
async fn srvd(ca: &TestCa, registry: &str) -> Srvd {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca.write(&d.join("ca.pem"));
    std::fs::write(d.join("masters.toml"), registry).unwrap();
    let port = free_port();
    let cfg = format!(
        r#"
[zone]
origin = "{ORIGIN}."
nameservers = ["ns1"]

[server]
listen = ["127.0.0.1:{port}"]
control_socket = "{d}/control.sock"
state_dir = "{d}/state"
registry = "{d}/masters.toml"

[health]
ca_file = "{d}/ca.pem"

[[site]]
name = "dc1"
failover = ["dc2"]

[[site]]
name = "dc2"

[[site]]
name = "dc3"
"#,
        d = d.display()
    );
    std::fs::write(d.join("srvd.toml"), cfg).unwrap();
    let child = common::spawn_srvd(&d.join("srvd.toml"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let s = Srvd { child, addr, _dir: dir };
    // Wait until it answers.
    let q = build_query(&format!("{ORIGIN}."), RecordType::SOA, None);
    let t0 = Instant::now();
    while common::raw_udp_within(addr, &q, Duration::from_millis(100)).await.is_none() {
        assert!(t0.elapsed() < Duration::from_secs(10), "srvd does not answer");
    }
    s
}

async fn targets(addr: SocketAddr, name: &str) -> Vec<String> {
    srv(&query_udp(addr, &build_query(name, RecordType::SRV, None)).await).into_iter().map(|r| r.3).collect()
}

/// Polls every 5 ms until `cond(targets)`; returns the time taken.
async fn until(addr: SocketAddr, name: &str, limit: Duration, cond: impl Fn(&[String]) -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if cond(&targets(addr, name).await) {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "{name}: no change within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn summary(v: &[Duration]) -> String {
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n == 0 {
        0.0
    } else if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    let min = ms.first().copied().unwrap_or(0.0);
    let max = ms.last().copied().unwrap_or(0.0);
    format!("min {min:6.0} ms   median {median:6.0} ms   max {max:6.0} ms   (n={n})")
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/health.sh"]
async fn bench_failover_timing_with_defaults() {
    let ca = TestCa::new();
    let pm1 = MockMaster::start(&ca, &format!("pm1.dc1.{ORIGIN}")).await;
    let pm2 = MockMaster::start(&ca, &format!("pm2.dc1.{ORIGIN}")).await;
    let reg = pm1.registry_entry("dc1", &["puppet"]) + &pm2.registry_entry("dc1", &["puppet"]);
    let s = srvd(&ca, &reg).await;
    let name = format!("_x-puppet._tcp.dc1.{ORIGIN}.");
    let both = |t: &[String]| t.len() == 2;
    let one = |t: &[String]| t.len() == 1;
    until(s.addr, &name, Duration::from_secs(5), both).await;
    let (mut crash, mut hang, mut sick, mut back) = (vec![], vec![], vec![], vec![]);
    let rounds: usize = env_or("HEALTH_BENCH_ROUNDS", 10);
    for _ in 0..rounds {
        for (b, out) in [(Behaviour::Refuse, &mut crash), (Behaviour::Hang, &mut hang), (Behaviour::Status(503), &mut sick)] {
            // A random phase relative to the 1 s check interval (after the
            // 2 s a recovered master needs to settle).
            let phase = rand::rng().random_range(2000..3000);
            tokio::time::sleep(Duration::from_millis(phase)).await;
            pm1.set(b).await;
            out.push(until(s.addr, &name, Duration::from_secs(10), one).await);
            pm1.set(Behaviour::Healthy).await;
            back.push(until(s.addr, &name, Duration::from_secs(10), both).await);
        }
    }
    println!();
    println!("health failover with default settings (interval 1s, fast_interval 250ms, timeout 700ms, rise 2, fall 3):");
    println!("  crash (connection refused) -> gone from DNS: {}   target median <= 200, max <= 500", summary(&crash));
    println!("  hang -> gone from DNS:                       {}   target median <= 1500, max <= 2000", summary(&hang));
    println!("  HTTP 503 -> gone from DNS:                   {}", summary(&sick));
    println!("  recovery -> back in DNS:                     {}   target median <= 1000", summary(&back));
}

/// A master failing 1 check in 100 at random (reset, never answered, or a
/// new connection dropped) for HEALTH_BENCH_LOSSY_S (600) seconds: the
/// answers must not change. Counts changes of the answer (polled every
/// 20 ms) and of the SOA serial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/health.sh"]
async fn bench_lossy_master_does_not_flap() {
    let secs: u64 = env_or("HEALTH_BENCH_LOSSY_S", 600);
    let ca = TestCa::new();
    let pm1 = MockMaster::start(&ca, &format!("pm1.dc1.{ORIGIN}")).await;
    let pm2 = MockMaster::start(&ca, &format!("pm2.dc1.{ORIGIN}")).await;
    let reg = pm1.registry_entry("dc1", &["puppet"]) + &pm2.registry_entry("dc1", &["puppet"]);
    let s = srvd(&ca, &reg).await;
    let name = format!("_x-puppet._tcp.dc1.{ORIGIN}.");
    until(s.addr, &name, Duration::from_secs(5), |t| t.len() == 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    pm1.set(Behaviour::Lossy(100)).await;
    let soa = |addr| async move {
        let m = query_udp(addr, &build_query(&format!("{ORIGIN}."), RecordType::SOA, None)).await;
        m.answers.iter().find_map(|a| match &a.data {
            hickory_proto::rr::RData::SOA(s) => Some(s.serial),
            _ => None,
        })
    };
    let serial0 = soa(s.addr).await;
    let (req0, conn0) = (pm1.requests(), pm1.connections());
    let t0 = Instant::now();
    let (mut changes, mut last) = (0, 2usize);
    while t0.elapsed() < Duration::from_secs(secs) {
        let n = targets(s.addr, &name).await.len();
        if n != last {
            changes += 1;
            last = n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let serial1 = soa(s.addr).await;
    println!();
    println!(
        "lossy master (1 failure in 100: reset, unanswered, dropped connection) for {secs} s: {changes} answer changes, serial {} ({} requests, {} connections)",
        if serial0 == serial1 { "unchanged".to_string() } else { format!("{serial0:?} -> {serial1:?}") },
        pm1.requests() - req0,
        pm1.connections() - conn0,
    );
    assert_eq!(changes, 0, "a lossy master flapped");
}

async fn cpu_for(ca: &TestCa, masters: &[MockMaster], check: &str, window: Duration) {
    let sites = ["dc1", "dc2", "dc3"];
    let mut reg = String::new();
    for (i, m) in masters.iter().enumerate() {
        reg += &m.registry_entry(sites[i % 3], &["puppet"]);
        reg += &format!("check = {check:?}\n\n");
    }
    let before: u64 = masters.iter().map(|m| m.requests()).sum();
    let conns_before: u64 = masters.iter().map(|m| m.connections()).sum();
    let s = srvd(ca, &reg).await;
    let pid = s.child.id();
    // Let the first round (and every TLS handshake) pass, then measure steady state.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let req0: u64 = masters.iter().map(|m| m.requests()).sum();
    let conn0: u64 = masters.iter().map(|m| m.connections()).sum();
    let c0 = common::cpu_seconds(pid);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let c1 = common::cpu_seconds(pid);
    let secs = t0.elapsed().as_secs_f64();
    let req1: u64 = masters.iter().map(|m| m.requests()).sum();
    let conn1: u64 = masters.iter().map(|m| m.connections()).sum();
    // 1,000 SRV records do not fit one DNS message; count the states srvd stored.
    let stored = std::fs::read_to_string(s._dir.path().join("state/health.json")).unwrap_or_default();
    let all_up = stored.matches("\"state\": \"up\"").count();
    let cpu = c1 - c0;
    println!(
        "  {n} {check:5} masters: {:.2} CPU s per minute = {:.1}% of one core; {:.0} checks/s; {} new connections/s; RSS {} MiB; {} of {n} up (warm-up, first 5 s: {} requests, {} connections)",
        cpu / secs * 60.0,
        cpu / secs * 100.0,
        if check == "https" { (req1 - req0) as f64 / secs } else { (conn1 - conn0) as f64 / secs },
        ((conn1 - conn0) as f64 / secs).round(),
        common::rss_kib(pid) / 1024,
        all_up,
        req0 - before,
        conn0 - conns_before,
        n = masters.len(),
    );
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/health.sh"]
async fn bench_cpu_of_checking_1000_masters() {
    let n: usize = std::env::var("HEALTH_BENCH_MASTERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let window = Duration::from_secs(std::env::var("HEALTH_BENCH_WINDOW_S").ok().and_then(|v| v.parse().ok()).unwrap_or(30));
    let ca = TestCa::new();
    let names: Vec<String> = ["dc1", "dc2", "dc3"].iter().map(|s| format!("*.{s}.{ORIGIN}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let good = ca.server_tls(&name_refs, false);
    let wrong = ca.server_tls(&["wrong-name.example.test"], false);
    let sites = ["dc1", "dc2", "dc3"];
    let mut masters = Vec::with_capacity(n);
    for i in 0..n {
        let host = format!("m{i:04}.{}.{ORIGIN}", sites[i % 3]);
        masters.push(MockMaster::start_with(&host, Arc::clone(&good), Arc::clone(&wrong), Behaviour::Healthy).await);
    }
    println!();
    println!("CPU of srvd checking {n} masters on loopback (default timing, {}s window, {} cores):", window.as_secs(), num_cpus());
    cpu_for(&ca, &masters, "https", window).await;
    cpu_for(&ca, &masters, "tcp", window).await;
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
