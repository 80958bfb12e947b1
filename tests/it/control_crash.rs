//! The real srvd binary: `kill -9` at random points of an add-master, many
//! times. The registry file is always the old or the new version and
//! parseable, and an acknowledged change is never lost. Also SIGHUP = reload.

use crate::common;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use rand::Rng;
use srvd::control::client::{self, ClientError};
use srvd::control::proto::{Reply, Request, Response};
use srvd::input::config::Config;

const SRVD: &str = env!("CARGO_BIN_EXE_srvd");

fn write_config(dir: &Path) -> PathBuf {
    common::write_binary_config(dir, &["dc1", "dc2"])
}

struct Srvd {
    child: Child,
}

impl Srvd {
    /// Starts srvd and waits until its control socket answers. Retries
    /// when port 0 gave a UDP port whose TCP twin is taken (srvd binds TCP
    /// on the port UDP got; a busy machine sometimes has it in use).
    fn start(config: &Path, socket: &Path) -> Srvd {
        for _ in 0..5 {
            match Srvd::try_start(config, socket) {
                Ok(s) => return s,
                Err(e) if e.contains("Address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("srvd could not bind its DNS ports 5 times in a row");
    }

    fn try_start(config: &Path, socket: &Path) -> Result<Srvd, String> {
        let log = config.with_extension("log");
        let child = Command::new(SRVD)
            .arg("--config")
            .arg(config)
            .env("SRVD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut s = Srvd { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Response::Ok(_)) = client::request(socket, &Request::List) {
                return Ok(s);
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                let err = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("srvd exited at start: {status}: {err}"));
            }
            assert!(Instant::now() < deadline, "srvd did not open its control socket");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Srvd {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn add(host: &str) -> Request {
    common::add_tcp_master(host)
}

fn hosts(text: &str, file: &Path, config: &Config) -> Vec<String> {
    common::registry_hosts(text, file, config, "kill -9")
}

#[test]
fn kill_9_during_add_master_never_tears_or_loses_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path());
    let config = Config::load(&config_path).unwrap();
    let reg = dir.path().join("masters.toml");
    let sock = dir.path().join("control.sock");
    std::fs::write(&reg, "# registry under fire\n\n[[master]]\nhost = \"base.example.com\"\nsite = \"dc2\"\n").unwrap();

    // How long one add takes (median of 5), to aim the kills inside it.
    let d = Srvd::start(&config_path, &sock);
    let mut times: Vec<Duration> = (0..5)
        .map(|i| {
            let t = Instant::now();
            let r = client::request(&sock, &add(&format!("probe{i}.example.com")));
            assert!(matches!(r, Ok(Response::Ok(Reply::Change(_)))), "{r:?}");
            t.elapsed()
        })
        .collect();
    times.sort();
    let one_add = times[2];
    drop(d);
    let window = (one_add * 2).max(Duration::from_millis(2));

    let runs = 40;
    let (mut acked, mut unacked, mut old_files, mut new_files) = (0, 0, 0, 0);
    let mut rng = rand::rng();
    for i in 0..runs {
        let old = std::fs::read_to_string(&reg).unwrap();
        let old_hosts = hosts(&old, &reg, &config);
        let host = format!("run{i}.example.com");
        let mut d = Srvd::start(&config_path, &sock);
        let sock2 = sock.clone();
        let req = add(&host);
        let conn = client::Client::connect(&sock2).unwrap();
        let call = std::thread::spawn(move || {
            let mut conn = conn;
            conn.call(&req)
        });
        let delay = Duration::from_micros(rng.random_range(0..=window.as_micros() as u64));
        std::thread::sleep(delay);
        d.kill9();
        let result = call.join().unwrap();
        let ack = match result {
            Ok(Response::Ok(Reply::Change(c))) => {
                assert!(c.changed);
                true
            }
            Ok(other) => panic!("unexpected answer: {other:?}"),
            Err(ClientError::Closed | ClientError::Io(_)) => false,
            Err(e) => panic!("unexpected client error: {e}"),
        };
        let now = std::fs::read_to_string(&reg).unwrap();
        let now_hosts = hosts(&now, &reg, &config);
        if now == old {
            assert!(!ack, "run {i}: change acknowledged but lost");
            old_files += 1;
        } else {
            // The new version: the old text with one entry appended.
            let mut expect = old_hosts.clone();
            expect.push(host.clone());
            assert_eq!(now_hosts, expect, "run {i}: neither the old nor the new registry");
            assert!(now.starts_with(old.trim_end_matches('\n')), "run {i}: old text not kept");
            new_files += 1;
        }
        if ack {
            acked += 1;
        } else {
            unacked += 1;
        }
    }
    // The daemon starts from what is on disk, acknowledged changes included.
    let d = Srvd::start(&config_path, &sock);
    let Ok(Response::Ok(Reply::Masters(m))) = client::request(&sock, &Request::List) else { panic!("list") };
    let listed: Vec<String> = m.masters.iter().map(|m| m.host.clone()).collect();
    assert_eq!(listed, hosts(&std::fs::read_to_string(&reg).unwrap(), &reg, &config));
    drop(d);
    eprintln!(
        "kill -9 during add-master: {runs} runs, one add ≈ {one_add:?}, kills within {window:?}: \
         {acked} acknowledged, {unacked} not; file old {old_files}, new {new_files}"
    );
    assert_eq!(acked + unacked, runs);
}

#[test]
fn sighup_reloads_and_a_bad_file_keeps_the_old_state() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path());
    let reg = dir.path().join("masters.toml");
    let sock = dir.path().join("control.sock");
    std::fs::write(&reg, "[[master]]\nhost = \"a.example.com\"\nsite = \"dc1\"\naddresses = [\"127.0.0.1\"]\ncheck = \"tcp\"\n").unwrap();
    let d = Srvd::start(&config_path, &sock);
    let list = || match client::request(&sock, &Request::List) {
        Ok(Response::Ok(Reply::Masters(m))) => m.masters.iter().map(|m| m.host.clone()).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let hup = || unsafe { libc::kill(d.child.id() as i32, libc::SIGHUP) };
    let wait_for = |want: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while list() != want {
            assert!(Instant::now() < deadline, "reload did not happen: {:?}", list());
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let good = "[[master]]\nhost = \"a.example.com\"\nsite = \"dc1\"\naddresses = [\"127.0.0.1\"]\ncheck = \"tcp\"\n\n\
                [[master]]\nhost = \"b.example.com\"\nsite = \"dc2\"\naddresses = [\"127.0.0.1\"]\ncheck = \"tcp\"\n";
    std::fs::write(&reg, good).unwrap();
    assert_eq!(hup(), 0);
    wait_for(&["a.example.com", "b.example.com"]);
    // A bad file: srvd keeps serving (and keeps answering srvctl) with the old state.
    std::fs::write(&reg, format!("{good}\n[[master]]\nhost = \"c.example.com\"\nsite = \"dc9\"\n")).unwrap();
    assert_eq!(hup(), 0);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(list(), ["a.example.com", "b.example.com"]);
    // srvctl reload names the fault.
    match client::request(&sock, &Request::Reload(Default::default())) {
        Ok(Response::Refused(f)) => {
            assert_eq!(f.key.as_deref(), Some("master[2].site"));
            assert!(f.reason.unwrap().contains("unknown site"));
        }
        other => panic!("{other:?}"),
    }
    drop(d);
}

/// The cause of a flake in the test above (ConnectionReset from the first
/// `list` after SIGHUP): srvd answered on its control socket before it had
/// installed its SIGHUP handler, so a SIGHUP sent at once killed it (the
/// default action), 4 times in 30. Handlers now come first.
#[test]
fn sighup_right_after_the_control_socket_answers_reloads_and_does_not_kill() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path());
    let sock = dir.path().join("control.sock");
    // Before the fix about one run in 7 failed here.
    for i in 0..40 {
        let mut d = Srvd::start(&config_path, &sock);
        assert_eq!(unsafe { libc::kill(d.child.id() as i32, libc::SIGHUP) }, 0);
        let r = client::request(&sock, &Request::List);
        assert!(matches!(r, Ok(Response::Ok(Reply::Masters(_)))), "run {i}: {r:?}");
        assert!(d.child.try_wait().unwrap().is_none(), "run {i}: srvd died of SIGHUP");
    }
}
