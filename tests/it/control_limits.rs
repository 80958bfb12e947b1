//! The real srvd binary against hostile control-socket clients: 500 silent
//! connections, a client that pipelines 10,000 requests and never reads its
//! answers, and one that stops half-way through a line. srvctl still gets
//! in at once, srvd holds at most 64 control connections, and SIGTERM stops
//! it within seconds (exit 0, socket file removed, registry, serial and
//! health states on disk). Also SIGTERM in the middle of an add-master.

use crate::common;
use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rand::Rng;
use srvd::control::client::{self, ClientError};
use srvd::control::proto::{Reply, Request, Response};
use srvd::input::config::Config;

const SRVD: &str = env!("CARGO_BIN_EXE_srvd");
const SRVCTL: &str = env!("CARGO_BIN_EXE_srvctl");
/// What the tests allow a SIGTERM to take (srvd's own deadline is 5 s).
const EXIT_BOUND: Duration = Duration::from_secs(10);

fn write_config(dir: &Path) -> PathBuf {
    common::write_binary_config(dir, &["dc1"])
}

struct Srvd {
    child: Child,
    log: PathBuf,
    sock: PathBuf,
}

impl Srvd {
    /// Starts srvd and waits until its control socket answers (retrying
    /// when the DNS port's TCP twin happens to be taken).
    fn start(dir: &Path) -> Srvd {
        let config = write_config(dir);
        let sock = dir.join("control.sock");
        let log = dir.join("srvd.log");
        'attempt: for _ in 0..5 {
            let child = Command::new(SRVD)
                .arg("--config")
                .arg(&config)
                .env("SRVD_LOG", std::env::var("TEST_SRVD_LOG").unwrap_or("info".into()))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let mut s = Srvd { child, log: log.clone(), sock: sock.clone() };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Response::Ok(_)) = client::request(&sock, &Request::List) {
                    return s;
                }
                if let Ok(Some(status)) = s.child.try_wait() {
                    let err = std::fs::read_to_string(&log).unwrap_or_default();
                    if err.contains("Address already in use") {
                        continue 'attempt;
                    }
                    panic!("srvd exited at start: {status}: {err}");
                }
                assert!(Instant::now() < deadline, "srvd did not open its control socket");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        panic!("srvd could not bind its DNS ports 5 times in a row");
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The DNS port, from the "serving" log line.
    fn dns_port(&self) -> u16 {
        let log = std::fs::read_to_string(&self.log).unwrap();
        let line = log.lines().find(|l| l.contains("serving")).unwrap_or_else(|| panic!("no 'serving' line: {log}"));
        let at = line.find("127.0.0.1:").unwrap_or_else(|| panic!("no address in {line}")) + "127.0.0.1:".len();
        line[at..].chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().unwrap()
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(|d| d.count()).unwrap_or(0)
    }

    /// SIGTERM, then how long until the process exited (panics past `EXIT_BOUND`).
    fn terminate(&mut self) -> (Duration, ExitStatus) {
        self.signal(libc::SIGTERM)
    }

    /// Sends `sig` (SIGTERM or SIGINT), then measures as [`Srvd::terminate`].
    fn signal(&mut self, sig: i32) -> (Duration, ExitStatus) {
        let t = Instant::now();
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (t.elapsed(), status);
            }
            if t.elapsed() > EXIT_BOUND {
                let _ = self.child.kill();
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("srvd still running {EXIT_BOUND:?} after SIGTERM; log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Srvd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hostile clients, running until dropped.
struct Hostile {
    stop: Arc<AtomicBool>,
    /// Silent connections still open on our side.
    silent: Vec<UnixStream>,
    /// Requests the pipeliner got into the socket; times it found srvd not
    /// reading (its answers not taken); connections it opened (srvd closes
    /// one after its answers went untaken for 5 s).
    sent: Arc<AtomicU64>,
    stalls: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

const SILENT: usize = 500;
const PIPELINED: usize = 10_000;

impl Hostile {
    fn start(sock: &Path) -> Hostile {
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, stalls, connections) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut threads = Vec::new();
        // Pipelines 10,000 requests (list and status) without reading; when
        // srvd gives up on the connection, starts again.
        {
            let (sock, stop, sent, stalls, connections) =
                (sock.to_path_buf(), stop.clone(), sent.clone(), stalls.clone(), connections.clone());
            threads.push(std::thread::spawn(move || {
                let mut batch = Vec::new();
                for i in 0..PIPELINED {
                    batch.extend_from_slice(if i % 2 == 0 { b"{\"command\":\"list\"}\n" } else { b"{\"command\":\"status\"}\n" });
                }
                let per = batch.len() / PIPELINED;
                while !stop.load(Relaxed) {
                    let Ok(mut s) = UnixStream::connect(&sock) else { break };
                    connections.fetch_add(1, Relaxed);
                    s.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
                    let mut off = 0;
                    while !stop.load(Relaxed) && off < batch.len() {
                        match s.write(&batch[off..]) {
                            Ok(n) => {
                                off += n;
                                sent.fetch_add((n / per) as u64, Relaxed);
                            }
                            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                                stalls.fetch_add(1, Relaxed);
                            }
                            Err(_) => break, // closed by srvd
                        }
                    }
                    // All written (or closed): hold it, never reading, until srvd closes it.
                    while !stop.load(Relaxed) && off >= batch.len() {
                        match s.write(b"{\"command\":\"list\"}\n") {
                            Ok(_) => {}
                            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                                stalls.fetch_add(1, Relaxed);
                            }
                            Err(_) => break,
                        }
                    }
                }
            }));
        }
        // Half a line, then nothing; again when srvd closes it.
        {
            let (sock, stop) = (sock.to_path_buf(), stop.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    let Ok(mut s) = UnixStream::connect(&sock) else { break };
                    if s.write_all(b"{\"command\":\"li").is_err() {
                        continue;
                    }
                    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                    let mut b = [0u8; 4096];
                    while !stop.load(Relaxed) {
                        match std::io::Read::read(&mut s, &mut b) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                            Err(_) => break,
                        }
                    }
                }
            }));
        }
        let silent = (0..SILENT).map(|_| UnixStream::connect(sock).unwrap()).collect();
        Hostile { stop, silent, sent, stalls, connections, threads }
    }

    /// Waits until srvd has stopped taking the pipeliner's requests (it is
    /// blocked writing answers nobody reads).
    fn wait_for_stall(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.stalls.load(Relaxed) == 0 {
            assert!(Instant::now() < deadline, "the pipelining client never filled its socket");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many of the silent connections srvd has closed.
    fn silent_closed(&self) -> usize {
        self.silent
            .iter()
            .filter(|s| {
                s.set_nonblocking(true).unwrap();
                let mut b = [0u8; 1];
                match std::io::Read::read(&mut &**s, &mut b) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != ErrorKind::WouldBlock,
                }
            })
            .count()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn srvctl(sock: &Path, args: &[&str]) -> (Duration, std::process::Output) {
    let t = Instant::now();
    let out = Command::new(SRVCTL).args(args).env("SRVD_SOCKET", sock).env("SRVCTL_TIMEOUT", "20s").output().unwrap();
    (t.elapsed(), out)
}

fn dig_serial(port: u16) -> u32 {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "puppet.example.test.", "SOA", "+short", "+time=2", "+tries=3"])
        .output()
        .expect("dig (bind9-dnsutils, make deps)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(2).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no SOA serial from dig: {text:?}"))
}

#[test]
fn hostile_control_clients_neither_lock_out_srvctl_nor_hold_up_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Srvd::start(dir.path());
    let fds_before = d.open_fds();
    let hostile = Hostile::start(&d.sock);
    hostile.wait_for_stall();
    // srvd never holds more than its 64 control connections: the rest were closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hostile.silent_closed() < SILENT - 64 {
        assert!(Instant::now() < deadline, "only {} of {SILENT} silent connections closed", hostile.silent_closed());
        std::thread::sleep(Duration::from_millis(20));
    }
    let fds_flooded = d.open_fds();
    assert!(fds_flooded <= fds_before + 64 + 8, "srvd fds {fds_before} -> {fds_flooded}");

    // (a) srvctl gets in at once.
    let (t_list, out) = srvctl(&d.sock, &["list"]);
    assert!(out.status.success(), "list: {out:?}");
    let (t_add, out) = srvctl(&d.sock, &["add-master", "pm1.example.com", "--site", "dc1", "--port", "1", "--check", "tcp"]);
    assert!(out.status.success(), "add-master: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("added pm1.example.com"), "{out:?}");
    assert!(t_list < Duration::from_secs(5) && t_add < Duration::from_secs(5), "srvctl took {t_list:?} / {t_add:?}");

    // The new master's first check fails (port 1): health.json gets written.
    let health = dir.path().join("state/health.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !health.exists() {
        assert!(Instant::now() < deadline, "health.json never written");
        std::thread::sleep(Duration::from_millis(20));
    }
    let served = dig_serial(d.dns_port());
    let closed = hostile.silent_closed();
    assert!(hostile.stalls.load(Relaxed) > 0);

    // (b) SIGTERM with all of them still connected.
    let (took, status) = d.terminate();
    let (sent, connections) = (hostile.sent.load(Relaxed), hostile.connections.load(Relaxed));
    drop(hostile);
    eprintln!(
        "control socket under fire: {SILENT} silent connections ({closed} closed by srvd), pipeliner sent {sent} requests \
         on {connections} connections, 1 half-line client; srvd fds {fds_before} -> {fds_flooded}; srvctl list {t_list:?}, add-master {t_add:?}; \
         SIGTERM -> exit in {took:?}"
    );
    assert!(status.success(), "exit status {status}");
    assert!(took < EXIT_BOUND);
    assert!(!d.sock.exists(), "control socket file left behind");
    let reg = std::fs::read_to_string(dir.path().join("masters.toml")).unwrap();
    assert!(reg.contains("host = \"pm1.example.com\""), "{reg}");
    let stored: u32 = std::fs::read_to_string(dir.path().join("state/serial")).unwrap().trim().parse().unwrap();
    assert_eq!(stored, served, "state_dir/serial holds the served serial");
    let h: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&health).unwrap()).unwrap();
    assert!(h.to_string().contains("pm1.example.com"), "{h}");
    let log = std::fs::read_to_string(&d.log).unwrap();
    if std::env::var_os("TEST_SRVD_LOG").is_some() {
        std::fs::copy(&d.log, "/tmp/control_limits.log").unwrap();
    }
    assert!(!log.contains("did not stop in time"), "{log}");
}

fn add(host: &str) -> Request {
    common::add_tcp_master(host)
}

fn hosts(text: &str, file: &Path, config: &Config) -> Vec<String> {
    common::registry_hosts(text, file, config, "SIGTERM")
}

#[test]
fn sigterm_or_sigint_during_add_master_applies_all_or_acknowledges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("masters.toml");
    std::fs::write(&reg, "# under SIGTERM\n[[master]]\nhost = \"base.example.com\"\nsite = \"dc1\"\n").unwrap();
    let config = Config::load(&write_config(dir.path())).unwrap();
    // How long one add takes, to aim the signals inside it.
    let d = Srvd::start(dir.path());
    let t = Instant::now();
    assert!(matches!(client::request(&d.sock, &add("probe.example.com")), Ok(Response::Ok(Reply::Change(_)))));
    let window = (t.elapsed() * 2).max(Duration::from_millis(2));
    drop(d);

    let runs = 12;
    let (mut acked, mut unacked, mut slowest) = (0, 0, Duration::ZERO);
    let mut rng = rand::rng();
    for i in 0..runs {
        let old = std::fs::read_to_string(&reg).unwrap();
        let host = format!("run{i}.example.com");
        let mut d = Srvd::start(dir.path());
        let mut conn = client::Client::connect(&d.sock).unwrap();
        let req = add(&host);
        // The request and the signal each at a random point of the window:
        // either may come first.
        let before_call = Duration::from_micros(rng.random_range(0..=window.as_micros() as u64));
        let call = std::thread::spawn(move || {
            std::thread::sleep(before_call);
            conn.call(&req)
        });
        std::thread::sleep(Duration::from_micros(rng.random_range(0..=window.as_micros() as u64)));
        let (took, status) = d.signal(if i % 2 == 0 { libc::SIGTERM } else { libc::SIGINT });
        slowest = slowest.max(took);
        assert!(status.success(), "run {i}: exit status {status}");
        let ack = match call.join().unwrap() {
            Ok(Response::Ok(Reply::Change(c))) => c.changed,
            Ok(other) => panic!("run {i}: unexpected answer {other:?}"),
            Err(ClientError::Closed | ClientError::Io(_)) => false,
            Err(e) => panic!("run {i}: unexpected client error: {e}"),
        };
        let now = std::fs::read_to_string(&reg).unwrap();
        let mut expect = hosts(&old, &reg, &config);
        if now == old {
            assert!(!ack, "run {i}: acknowledged but not on disk");
            unacked += 1;
        } else {
            expect.push(host);
            assert_eq!(hosts(&now, &reg, &config), expect, "run {i}: neither the old nor the new registry");
            if ack {
                acked += 1;
            } else {
                unacked += 1;
            }
        }
    }
    eprintln!(
        "SIGTERM/SIGINT during add-master: {runs} runs within {window:?}: {acked} acknowledged, {unacked} not; slowest exit {slowest:?}"
    );
    // The daemon starts from what is on disk.
    let d = Srvd::start(dir.path());
    let Ok(Response::Ok(Reply::Masters(m))) = client::request(&d.sock, &Request::List) else { panic!("list") };
    let listed: Vec<String> = m.masters.iter().map(|m| m.host.clone()).collect();
    assert_eq!(listed, hosts(&std::fs::read_to_string(&reg).unwrap(), &reg, &config));
}

#[test]
fn srvctl_gives_up_on_a_daemon_that_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("wedged.sock");
    // Accepts (the backlog does it) and never answers.
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let t = Instant::now();
    let out = Command::new(SRVCTL).args(["list"]).env("SRVD_SOCKET", &sock).env("SRVCTL_TIMEOUT", "1s").output().unwrap();
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("timed out") && err.contains("SRVCTL_TIMEOUT"), "{err}");
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(10), "{took:?}");

    let out = Command::new(SRVCTL).args(["list"]).env("SRVD_SOCKET", &sock).env("SRVCTL_TIMEOUT", "soon").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SRVCTL_TIMEOUT"));
}
