//! Shared test harness: a real srvd (in-process) on ephemeral ports in a
//! temp dir, and a small DNS client for UDP and TCP.

pub mod mock_master;
pub mod puppet_order;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use srvd::daemon::{self, Running};
use srvd::dns::server::DnsSockets;
use srvd::input::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

/// A minimal valid config; `extra` is appended (more tables), and
/// `{dir}` in the text is replaced by the temp dir.
pub const BASE_CONFIG: &str = r#"
[zone]
origin = "puppet.example.test."
ttl = 30
negative_ttl = 20
nameservers = ["ns1"]
hostmaster = "hostmaster@example.test"

[server]
listen = ["127.0.0.1:0"]
control_socket = "{dir}/control.sock"
state_dir = "{dir}/state"
registry = "{dir}/masters.toml"

[[site]]
name = "dc1"
failover = ["dc2"]

[[site]]
name = "dc2"

[[site]]
name = "dc3"
failover = ["dc2"]
"#;

pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub running: Option<Running>,
    pub addr: SocketAddr,
    pub config: Config,
}

impl TestDaemon {
    /// Starts srvd with `config` (use `{dir}` for the temp dir) and `registry` text.
    pub async fn start(config: &str, registry: &str) -> TestDaemon {
        Self::try_start(config, registry).await.expect("daemon starts")
    }

    pub async fn try_start(config: &str, registry: &str) -> Result<TestDaemon, daemon::DaemonError> {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, config, registry).await
    }

    /// Starts srvd with health checks that always pass: every master is up,
    /// for tests about DNS and policy rather than health.
    pub async fn start_all_up(config: &str, registry: &str) -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in_with(dir, config, registry, Some(Arc::new(AlwaysUp))).await.expect("daemon starts")
    }

    pub async fn start_in(dir: tempfile::TempDir, config: &str, registry: &str) -> Result<TestDaemon, daemon::DaemonError> {
        Self::start_in_with(dir, config, registry, None).await
    }

    pub async fn start_in_with(
        dir: tempfile::TempDir,
        config: &str,
        registry: &str,
        checks: Option<Arc<dyn srvd::health::CheckFactory>>,
    ) -> Result<TestDaemon, daemon::DaemonError> {
        let d = dir.path().display().to_string();
        let cfg_text = config.replace("{dir}", &d);
        let cfg_path = dir.path().join("srvd.toml");
        std::fs::write(&cfg_path, &cfg_text).unwrap();
        std::fs::write(dir.path().join("masters.toml"), registry.replace("{dir}", &d)).unwrap();
        let config = Config::load(&cfg_path)?;
        let sockets = DnsSockets::bind(&config.server.listen).await?;
        let running = daemon::start_with(config.clone(), sockets, CancellationToken::new(), checks).await?;
        let addr = running.dns_addrs[0];
        Ok(TestDaemon { dir, running: Some(running), addr, config })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Where the daemon serves `/metrics` (config `server.metrics`).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.running.as_ref().unwrap().metrics_addr.expect("server.metrics is set")
    }

    pub fn serial(&self) -> u32 {
        self.running.as_ref().unwrap().publisher.snapshot().serial
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    pub async fn udp(&self, name: &str, t: RecordType) -> Message {
        query_udp(self.addr, &build_query(name, t, None)).await
    }

    pub async fn udp_edns(&self, name: &str, t: RecordType, size: u16) -> Message {
        query_udp(self.addr, &build_query(name, t, Some(size))).await
    }

    pub async fn tcp(&self, name: &str, t: RecordType) -> Message {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        tcp_exchange(&mut s, &build_query(name, t, None)).await
    }
}

/// Health checks that always pass.
pub struct AlwaysUp;

struct Pass;

#[async_trait::async_trait]
impl srvd::health::Check for Pass {
    async fn check(&mut self) -> srvd::health::CheckOutcome {
        srvd::health::CheckOutcome::ok("test: always up")
    }
}

impl srvd::health::CheckFactory for AlwaysUp {
    fn make(&self, _m: &srvd::input::registry::Master, _p: srvd::health::Probe) -> Box<dyn srvd::health::Check> {
        Box::new(Pass)
    }
}

impl Drop for TestDaemon {
    /// A test that ends without `stop()` still stops the daemon's tasks
    /// (the UDP workers are threads that exit only on the shutdown token).
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.shutdown.cancel();
        }
    }
}

/// Encodes a query (RD clear), optionally with EDNS of that payload size.
pub fn build_query(name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static N: AtomicU16 = AtomicU16::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Sends raw bytes over UDP; returns the raw reply.
pub async fn raw_udp(addr: SocketAddr, q: &[u8]) -> Option<Vec<u8>> {
    raw_udp_within(addr, q, Duration::from_secs(2)).await
}

/// Like [`raw_udp`] with a chosen wait (short when silence is expected).
pub async fn raw_udp_within(addr: SocketAddr, q: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(q, addr).await.unwrap();
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(wait, s.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

pub async fn query_udp(addr: SocketAddr, q: &[u8]) -> Message {
    let r = raw_udp(addr, q).await.expect("UDP reply");
    Message::from_vec(&r).expect("parsable reply")
}

/// One query/answer on an open TCP connection.
pub async fn tcp_exchange(s: &mut TcpStream, q: &[u8]) -> Message {
    s.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
    s.write_all(q).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len)).await.expect("TCP reply in time").unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).expect("parsable reply")
}

/// SRV answers as (priority, weight, port, target-without-dot), in answer order.
pub fn srv(m: &Message) -> Vec<(u16, u16, u16, String)> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::SRV(s) => {
                Some((s.priority, s.weight, s.port, s.target.to_string().trim_end_matches('.').to_string()))
            }
            _ => None,
        })
        .collect()
}

/// Writes `srvd.toml` in `dir` for a srvd binary started by a test: zone
/// puppet.example.test., UDP/TCP on 127.0.0.1:0, control socket, state and
/// registry inside `dir`, 1 s / 200 ms health timing, and `sites`.
pub fn write_binary_config(dir: &std::path::Path, sites: &[&str]) -> std::path::PathBuf {
    let mut cfg = format!(
        r#"
[zone]
origin = "puppet.example.test."
ttl = 30
nameservers = ["ns1"]
hostmaster = "hostmaster@example.test"

[server]
listen = ["127.0.0.1:0"]
control_socket = "{d}/control.sock"
state_dir = "{d}/state"
registry = "{d}/masters.toml"

[health]
interval = "1s"
timeout = "200ms"
"#,
        d = dir.display()
    );
    for s in sites {
        cfg.push_str(&format!("\n[[site]]\nname = \"{s}\"\n"));
    }
    let path = dir.join("srvd.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// The add-master request the crash tests send: a tcp-checked master of
/// site dc1 at 127.0.0.1:1.
pub fn add_tcp_master(host: &str) -> srvd::control::proto::Request {
    srvd::control::proto::Request::AddMaster(srvd::control::proto::AddMaster {
        host: host.into(),
        site: "dc1".into(),
        port: Some(1),
        addresses: vec!["127.0.0.1".into()],
        check: Some("tcp".into()),
        ..Default::default()
    })
}

/// The hosts of a registry file's text, in file order; a file that does not
/// parse fails the test, naming `after` (what the file went through).
pub fn registry_hosts(text: &str, file: &std::path::Path, config: &srvd::input::config::Config, after: &str) -> Vec<String> {
    let reg = srvd::input::registry::Registry::parse(text, file, config)
        .unwrap_or_else(|e| panic!("registry unparseable after {after}: {e}\n{text}"));
    reg.masters.iter().map(|m| m.host_str()).collect()
}

/// A raw HTTP/1.1 exchange with srvd's metrics listener (which closes the
/// connection after answering): (status code, head, body).
pub async fn http(addr: std::net::SocketAddr, request: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut raw)).await.expect("HTTP reply in time").unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 reply");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// The srvctl binary of this build.
pub const SRVCTL: &str = env!("CARGO_BIN_EXE_srvctl");

/// Runs srvctl against the control socket `socket` (SRVD_SOCKET unset).
pub async fn srvctl_in(socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(SRVCTL).arg("--socket").arg(socket).args(args).env_remove("SRVD_SOCKET").output().await.unwrap()
}

/// Runs srvctl against the daemon's control socket.
pub async fn srvctl(d: &TestDaemon, args: &[&str]) -> std::process::Output {
    srvctl_in(&d.path("control.sock"), args).await
}

/// Starts the srvd binary of this build on `config` (log level error,
/// stderr shown), as the benchmarks that measure its process do.
pub fn spawn_srvd(config: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_srvd"))
        .arg("--config")
        .arg(config)
        .env("SRVD_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("srvd runs")
}

/// utime + stime of process `pid`, in seconds; panics when the process
/// is gone (a benchmark figure of 0 would mislead).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process is alive");
    let rest = stat.rfind(')').and_then(|i| stat.get(i + 2..)).expect("/proc/PID/stat has \"pid (comm) \"");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat: index 11 and 12 after "pid (comm) ".
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).expect("utime and stime in /proc/PID/stat");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (field(11) + field(12)) / if hz > 0 { hz as f64 } else { 100.0 }
}

/// VmRSS of process `pid`, KiB (0 when unreadable).
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
}
