//! State and files (issue 8): broken state files never stop a start, the
//! serial never goes back (not across a clock step, not across a storage
//! failure and its repair, not across restarts), an unwritable registry or
//! state_dir turns a srvctl change into an error with nothing applied, a
//! reload that would drop most masters needs --force, and a slow disk
//! never holds up DNS, health checks or the control socket.
//!
//! Unwritable files, as root: the tests run as root, which ignores mode
//! bits, and `chattr +i` is not supported on tmpfs/overlayfs. So a
//! *directory* is put where `write_atomic` creates its temp file
//! (`.NAME.tmp.PID` beside the target): opening it for writing fails with
//! EISDIR for everyone, root included, while the target stays readable.
//! Removing the directory is the repair. A state_dir replaced by a plain
//! file (ENOTDIR) stands in for a lost or unmounted directory.

use crate::common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{TestDaemon, srv, srvctl};
use hickory_proto::rr::RecordType;
use srvd::health::{Check, CheckFactory, CheckOutcome, Probe};
use srvd::input::registry::Master;
use srvd::zone::serial::serial_gt;

const SRVD: &str = env!("CARGO_BIN_EXE_srvd");
const DC1: &str = "_x-puppet._tcp.dc1.puppet.example.test.";

fn config(health: &str) -> String {
    format!(
        "{}\n[health]\ninterval = \"200ms\"\nfast_interval = \"100ms\"\ntimeout = \"5s\"\nrise = 1\nfall = 1\n{health}\n",
        common::BASE_CONFIG
    )
}

fn master(host: &str) -> String {
    format!("[[master]]\nhost = \"{host}\"\nsite = \"dc1\"\ncheck = \"tcp\"\n\n")
}

fn masters(n: usize) -> String {
    (1..=n).map(|i| master(&format!("m{i}.example.com"))).collect()
}

/// Health checks the test scripts: hosts in `down` fail, the others pass;
/// with `hang` every check waits forever. Counts every check.
#[derive(Clone, Default)]
struct Script {
    down: Arc<Mutex<HashSet<String>>>,
    hang: Arc<AtomicBool>,
    checks: Arc<AtomicU64>,
}

impl Script {
    fn set_down(&self, host: &str, down: bool) {
        let mut d = self.down.lock().unwrap();
        if down {
            d.insert(host.to_string());
        } else {
            d.remove(host);
        }
    }
}

struct ScriptCheck {
    host: String,
    s: Script,
}

#[async_trait::async_trait]
impl Check for ScriptCheck {
    async fn check(&mut self) -> CheckOutcome {
        self.s.checks.fetch_add(1, Ordering::Relaxed);
        if self.s.hang.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        if self.s.down.lock().unwrap().contains(&self.host) { CheckOutcome::fail("test: down") } else { CheckOutcome::ok("test: up") }
    }
}

impl CheckFactory for Script {
    fn make(&self, m: &Master, _p: Probe) -> Box<dyn Check> {
        Box::new(ScriptCheck { host: m.host_str(), s: self.clone() })
    }
}

async fn start_in(dir: tempfile::TempDir, registry: &str, script: &Script) -> TestDaemon {
    TestDaemon::start_in_with(dir, &config(""), registry, Some(Arc::new(script.clone()))).await.expect("srvd starts")
}

fn prepared_dir(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    for (name, data) in files {
        std::fs::write(dir.path().join(name), data).unwrap();
    }
    dir
}

fn unix_now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32
}

async fn targets(d: &TestDaemon) -> Vec<String> {
    let mut t: Vec<String> = srv(&d.tcp(DC1, RecordType::SRV).await).into_iter().map(|r| r.3).collect();
    t.sort();
    t
}

/// Polls until `f` holds (generous deadline for a loaded machine).
async fn until(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn exit(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "stdout: {}\nstderr: {}", text(&o.stdout), text(&o.stderr));
}

/// Blocks `write_atomic` of `target` (in this process) until the returned path is removed.
fn block_writes(target: &Path) -> PathBuf {
    let name = target.file_name().unwrap().to_string_lossy();
    let blocker = target.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    std::fs::create_dir_all(&blocker).unwrap();
    blocker
}

#[tokio::test]
async fn broken_serial_files_are_ignored_and_the_serial_still_rises() {
    let script = Script::default();
    // The last serial served ran ahead of the clock (many changes in a row): only the copy says so.
    let ahead = unix_now() + 10_000;
    for junk in [&b""[..], b"\n", b"garbage\n", b"99999999999\n", b"-5\n", b"1.5\n", b"\xff\xfe\x00"] {
        let dir = prepared_dir(&[("state/serial", junk), ("state/serial.bak", format!("{ahead}\n").as_bytes())]);
        let d = start_in(dir, &masters(1), &script).await;
        assert_eq!(d.serial(), ahead + 1, "serial file {junk:?}");
        // Both copies now hold the new serial.
        for f in ["state/serial", "state/serial.bak"] {
            assert_eq!(std::fs::read_to_string(d.path(f)).unwrap(), format!("{}\n", ahead + 1));
        }
        d.stop().await;
    }
    // The copy broken, the primary fine.
    let dir = prepared_dir(&[("state/serial", format!("{ahead}\n").as_bytes()), ("state/serial.bak", b"")]);
    let d = start_in(dir, &masters(1), &script).await;
    assert_eq!(d.serial(), ahead + 1);
    d.stop().await;
    // Both broken: the clock.
    let dir = prepared_dir(&[("state/serial", b"12ab"), ("state/serial.bak", b"")]);
    let before = unix_now();
    let d = start_in(dir, &masters(1), &script).await;
    assert!(d.serial() >= before && d.serial() <= unix_now() + 1, "{}", d.serial());
    assert_eq!(std::fs::read_to_string(d.path("state/serial")).unwrap(), format!("{}\n", d.serial()));
    d.stop().await;
    // The serial file is a directory: unreadable and unwritable. srvd starts anyway and says so.
    let dir = prepared_dir(&[("state/serial.bak", format!("{ahead}\n").as_bytes())]);
    std::fs::create_dir(dir.path().join("state/serial")).unwrap();
    let d = start_in(dir, &masters(1), &script).await;
    assert_eq!(d.serial(), ahead, "the last stored serial, not an unstored one");
    let st = d.running.as_ref().unwrap().publisher.serial_store();
    assert!(st.behind && st.error.as_deref().is_some_and(|e| e.contains("Is a directory")), "{st:?}");
    d.stop().await;
}

#[tokio::test]
async fn garbage_in_health_json_is_ignored_entry_by_entry() {
    // Checks hang: the states at start are the stored ones.
    let script = Script::default();
    script.hang.store(true, Ordering::Relaxed);
    let entry =
        |host: &str, since: &str| format!(r#"{{"host": "{host}", "port": 8140, "role": "puppet", "state": "down", "since": {since}}}"#);
    // since = 2^63 panicked at every start; so would u64::MAX.
    for bad in ["9223372036854775808", "18446744073709551615", "-1", "1.5", "\"yesterday\"", "null", "1e30"] {
        let file = format!(r#"{{"version": 1, "states": [{}, {}]}}"#, entry("m1.example.com", "1700000000"), entry("m2.example.com", bad));
        let dir = prepared_dir(&[("state/health.json", file.as_bytes())]);
        let d = start_in(dir, &masters(2), &script).await;
        let running = d.running.as_ref().unwrap();
        {
            let core = running.publisher.lock();
            let states: Vec<String> = core.health.iter().map(|((k, r), h)| format!("{k} {r} {h:?}")).collect();
            assert_eq!(states, vec!["m1.example.com:8140 puppet Down".to_string()], "since {bad}");
        }
        // m1 (stored down) is out, m2 (its entry ignored: up until checked) is in.
        assert_eq!(targets(&d).await, vec!["m2.example.com"]);
        d.stop().await;
    }
    // Whole-file garbage: empty, truncated, not JSON, a directory.
    let good = format!(r#"{{"version": 1, "states": [{}]}}"#, entry("m1.example.com", "1700000000"));
    let truncated = &good.as_bytes()[..good.len() / 2];
    for junk in [&b""[..], truncated, b"\x00\x01garbage", b"[1,2,3]", b"{\"version\": 99, \"states\": []}"] {
        let dir = prepared_dir(&[("state/health.json", junk)]);
        let d = start_in(dir, &masters(2), &script).await;
        assert!(d.running.as_ref().unwrap().publisher.lock().health.is_empty());
        assert_eq!(targets(&d).await, vec!["m1.example.com", "m2.example.com"]);
        d.stop().await;
    }
    let dir = prepared_dir(&[]);
    std::fs::create_dir(dir.path().join("state/health.json")).unwrap();
    let d = start_in(dir, &masters(2), &script).await;
    assert_eq!(targets(&d).await.len(), 2);
    d.stop().await;
}

/// The issue's report: with the serial unstorable, srvctl said success, a
/// restart was refused, and after the repair the serial went back.
#[tokio::test]
async fn serial_is_never_served_unstored_and_never_goes_back() {
    let script = Script::default();
    let registry = masters(2);
    let d = start_in(prepared_dir(&[]), &registry, &script).await;
    until("both masters published", Duration::from_secs(20), async || targets(&d).await.len() == 2).await;
    let mut served = vec![d.serial()];
    let s0 = d.serial();
    let serial_path = d.path("state/serial");
    let blocker = block_writes(&serial_path);
    let reg_before = std::fs::read(d.path("masters.toml")).unwrap();

    // A srvctl change of the answers: refused, naming the file and the OS error; nothing applied.
    let o = srvctl(&d, &["drain", "m1.example.com"]).await;
    exit(&o, 1);
    let err = text(&o.stderr);
    assert!(err.contains(&serial_path.display().to_string()) && err.contains("Is a directory"), "{err}");
    assert!(err.contains("nothing changed"), "{err}");
    assert_eq!(std::fs::read(d.path("masters.toml")).unwrap(), reg_before);
    assert_eq!(targets(&d).await, vec!["m1.example.com", "m2.example.com"]);
    assert_eq!(d.serial(), s0);

    // A health transition: the answers change at once, under the stored serial.
    script.set_down("m2.example.com", true);
    until("m2 out of the answers", Duration::from_secs(20), async || targets(&d).await == vec!["m1.example.com"]).await;
    assert_eq!(d.serial(), s0, "an unstored serial was served");
    // The owed serial is tried by the persisting task, just after the answers changed.
    let publisher = d.running.as_ref().unwrap().publisher.clone();
    until("the owed serial tried and failed", Duration::from_secs(20), async || publisher.serial_store().failures >= 2).await;
    assert_eq!(d.serial(), s0, "an unstored serial was served");
    let st = publisher.serial_store();
    assert!(st.behind && st.failures >= 2, "{st:?}");
    assert!(st.error.as_deref().unwrap_or("").contains(&serial_path.display().to_string()), "{st:?}");
    let status = srvctl(&d, &["--json", "status"]).await;
    exit(&status, 0);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["ok"]["serial_store"]["behind"], true, "{v}");
    let human = srvctl(&d, &["status"]).await;
    assert!(text(&human.stdout).contains("WARNING: the SOA serial cannot be stored"), "{}", text(&human.stdout));

    // A restart while it lasts: srvd starts, serving the last stored serial.
    let dir = d.stop().await;
    let d = start_in(dir, &registry, &script).await;
    assert_eq!(d.serial(), s0);
    assert!(d.running.as_ref().unwrap().publisher.serial_store().error.is_some());

    // Repair: the owed serial is stored and served, higher than every served one.
    std::fs::remove_dir(&blocker).unwrap();
    until("the owed serial", Duration::from_secs(30), async || d.serial() != s0).await;
    assert!(serial_gt(d.serial(), s0));
    served.push(d.serial());
    let st = d.running.as_ref().unwrap().publisher.serial_store();
    assert!(!st.behind && st.error.is_none(), "{st:?}");
    exit(&srvctl(&d, &["drain", "m1.example.com"]).await, 0);
    served.push(d.serial());
    let dir = d.stop().await;
    let d = start_in(dir, &registry, &script).await;
    served.push(d.serial());
    for w in served.windows(2) {
        assert!(serial_gt(w[1], w[0]), "serials served: {served:?}");
    }
    assert_eq!(std::fs::read_to_string(d.path("state/serial")).unwrap(), format!("{}\n", d.serial()));
    d.stop().await;
}

#[tokio::test]
async fn unwritable_registry_or_state_dir_refuses_changes_while_serving_goes_on() {
    let script = Script::default();
    let d = start_in(prepared_dir(&[]), &masters(2), &script).await;
    until("both masters published", Duration::from_secs(20), async || targets(&d).await.len() == 2).await;
    let reg = d.path("masters.toml");
    let before = std::fs::read(&reg).unwrap();
    let serial = d.serial();

    // The registry cannot be written.
    let blocker = block_writes(&reg);
    let o = srvctl(&d, &["add-master", "m3.example.com", "--site", "dc1", "--check", "tcp"]).await;
    exit(&o, 1);
    let err = text(&o.stderr);
    assert!(err.contains(&format!("cannot write the registry {}", reg.display())) && err.contains("nothing changed"), "{err}");
    assert_eq!(std::fs::read(&reg).unwrap(), before);
    let list = srvctl(&d, &["--json", "list"]).await;
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v["ok"]["masters"].as_array().unwrap().len(), 2);
    // A change of the answers: the serial is stored first, then the write fails: nothing served changes.
    exit(&srvctl(&d, &["drain", "m1.example.com"]).await, 1);
    assert_eq!(targets(&d).await, vec!["m1.example.com", "m2.example.com"]);
    assert_eq!(d.serial(), serial);
    std::fs::remove_dir(&blocker).unwrap();
    exit(&srvctl(&d, &["add-master", "m3.example.com", "--site", "dc1", "--check", "tcp"]).await, 0);
    until("m3 published", Duration::from_secs(20), async || targets(&d).await.len() == 3).await;

    // The state_dir is gone and a file sits in its place.
    let state = d.path("state");
    std::fs::rename(&state, d.path("state.moved")).unwrap();
    std::fs::write(&state, b"not a directory").unwrap();
    let reg_now = std::fs::read(&reg).unwrap();
    let serial = d.serial();
    let o = srvctl(&d, &["drain", "m2.example.com"]).await;
    exit(&o, 1);
    let err = text(&o.stderr);
    assert!(err.contains(&state.join("serial").display().to_string()) && err.contains("Not a directory"), "{err}");
    assert_eq!(std::fs::read(&reg).unwrap(), reg_now);
    assert_eq!(targets(&d).await.len(), 3);
    assert_eq!(d.serial(), serial);
    std::fs::remove_file(&state).unwrap();
    std::fs::rename(d.path("state.moved"), &state).unwrap();
    exit(&srvctl(&d, &["drain", "m2.example.com"]).await, 0);
    assert!(serial_gt(d.serial(), serial));
    assert_eq!(targets(&d).await, vec!["m1.example.com", "m3.example.com"]);
    d.stop().await;
}

#[tokio::test]
async fn reload_that_drops_most_masters_needs_force() {
    let script = Script::default();
    let d = start_in(prepared_dir(&[]), &masters(10), &script).await;
    until("ten masters published", Duration::from_secs(20), async || targets(&d).await.len() == 10).await;
    let reg = d.path("masters.toml");
    let full = std::fs::read_to_string(&reg).unwrap();
    let control = d.running.as_ref().unwrap().control.clone();
    let count = || d.running.as_ref().unwrap().publisher.lock().inputs.registry.masters.len();

    for (what, content) in [("empty", Some(String::new())), ("missing", None), ("one of ten", Some(masters(1)))] {
        match &content {
            Some(c) => std::fs::write(&reg, c).unwrap(),
            None => std::fs::remove_file(&reg).unwrap(),
        }
        let o = srvctl(&d, &["reload"]).await;
        exit(&o, 1);
        let err = text(&o.stderr);
        assert!(err.contains(&reg.display().to_string()) && err.contains("--force"), "{what}: {err}");
        // What SIGHUP runs: refused too.
        assert!(matches!(control.reload(), srvd::control::proto::Response::Refused(_)), "{what}");
        assert_eq!(count(), 10, "{what}");
        assert_eq!(targets(&d).await.len(), 10, "{what}");
    }
    // Two of ten removed: fine without force.
    std::fs::write(&reg, masters(8)).unwrap();
    exit(&srvctl(&d, &["reload"]).await, 0);
    assert_eq!(count(), 8);
    // One of ten with --force: applied.
    std::fs::write(&reg, masters(1)).unwrap();
    let o = srvctl(&d, &["reload", "--force"]).await;
    exit(&o, 0);
    assert_eq!(count(), 1);
    until("one master left", Duration::from_secs(10), async || targets(&d).await == vec!["m1.example.com"]).await;
    // And back.
    std::fs::write(&reg, &full).unwrap();
    exit(&srvctl(&d, &["reload"]).await, 0);
    assert_eq!(count(), 10);
    d.stop().await;
}

/// SIGHUP to the real binary with a truncated registry: refused and logged
/// with the counts, the masters stay.
#[test]
fn sighup_with_an_empty_registry_keeps_the_masters() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("").replace("{dir}", &dir.path().display().to_string());
    let cfg_path = dir.path().join("srvd.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let reg = dir.path().join("masters.toml");
    std::fs::write(&reg, masters(10)).unwrap();
    let log = dir.path().join("srvd.log");
    let sock = dir.path().join("control.sock");
    let mut child = std::process::Command::new(SRVD)
        .arg("--config")
        .arg(&cfg_path)
        .env("SRVD_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let list = || srvd::control::client::request(&sock, &srvd::control::proto::Request::List);
    let count = || match list() {
        Ok(srvd::control::proto::Response::Ok(srvd::control::proto::Reply::Masters(m))) => Some(m.masters.len()),
        _ => None,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while count().is_none() {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "srvd did not start: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count(), Some(10));
    std::fs::write(&reg, "").unwrap();
    // SAFETY: kill with a pid we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let l = std::fs::read_to_string(&log).unwrap();
        if l.contains("reload refused") {
            assert!(l.contains("would remove 10 of 10 masters") && l.contains(&reg.display().to_string()), "{l}");
            break;
        }
        assert!(Instant::now() < deadline, "no refusal logged: {l}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count(), Some(10));
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

/// A slow disk (1 s per file write: a serial is two files, so 2 s per
/// serial) under a health failover and a srvctl change: the failover is in
/// the answers before its serial is stored, and TCP DNS, the health checks
/// and the control socket go on while a change is stuck writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_disk_delays_persistence_not_answers() {
    let script = Script::default();
    let d = start_in(prepared_dir(&[]), &masters(4), &script).await;
    until("masters published", Duration::from_secs(20), async || targets(&d).await.len() == 4).await;
    const DELAY: Duration = Duration::from_secs(1);
    srvd::input::fsutil::set_write_delay(d.dir.path(), DELAY);

    // Failover: the answers change before the new serial is stored.
    let s0 = d.serial();
    let t = Instant::now();
    script.set_down("m3.example.com", true);
    until("m3 out of the answers", Duration::from_secs(20), async || targets(&d).await.len() == 3).await;
    let failover = t.elapsed();
    assert_eq!(d.serial(), s0, "the answers waited for the serial to be stored");
    until("the new serial", Duration::from_secs(20), async || d.serial() != s0).await;
    assert!(t.elapsed() >= 2 * DELAY);

    // A srvctl change of the answers: serial (2 files) and registry written slowly.
    let sock = d.path("control.sock");
    let started = Instant::now();
    let drain = tokio::task::spawn_blocking(move || {
        let req =
            srvd::control::proto::Request::Drain(srvd::control::proto::DrainArgs { host: "m1.example.com".into(), ..Default::default() });
        (srvd::control::client::request(&sock, &req), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let checks_before = script.checks.load(Ordering::Relaxed);
    let mut slowest = Duration::ZERO;
    let mut rounds = 0;
    // A failover while the drain is stuck writing: not held up by it.
    script.set_down("m4.example.com", true);
    let mut m4_out = None;
    while started.elapsed() < 2 * DELAY + DELAY / 2 {
        let t = Instant::now();
        let now = targets(&d).await;
        slowest = slowest.max(t.elapsed());
        assert!(now.contains(&"m1.example.com".to_string()), "the drain is applied before it is stored: {now:?}");
        if !now.contains(&"m4.example.com".to_string()) {
            m4_out.get_or_insert(started.elapsed());
        }
        // The control socket answers reads meanwhile.
        let sock = d.path("control.sock");
        let (r, took) = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            (srvd::control::client::request(&sock, &srvd::control::proto::Request::Status), t.elapsed())
        })
        .await
        .unwrap();
        assert!(matches!(r, Ok(srvd::control::proto::Response::Ok(_))), "{r:?}");
        slowest = slowest.max(took);
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let checks_during = script.checks.load(Ordering::Relaxed) - checks_before;
    let (resp, took) = drain.await.unwrap();
    srvd::input::fsutil::set_write_delay(d.dir.path(), Duration::ZERO);
    assert!(matches!(resp, Ok(srvd::control::proto::Response::Ok(_))), "{resp:?}");
    assert!(took >= 3 * DELAY, "the writes were not slowed down ({took:?})");
    assert_eq!(targets(&d).await, vec!["m2.example.com"]);
    let m4_out = m4_out.expect("m4 left the answers while the drain was writing");
    assert!(m4_out < took, "failover at {m4_out:?}, drain done at {took:?}");
    assert!(rounds >= 4, "{rounds} rounds");
    assert!(slowest < Duration::from_millis(500), "a TCP DNS query or srvctl status took {slowest:?} during the slow writes");
    // 4 masters checked every 100-200 ms for ~2 s: dozens of checks unless the runtime stalled.
    assert!(checks_during >= 10, "{checks_during} health checks during the slow writes");
    eprintln!(
        "failover {failover:?} with 1 s writes; drain took {took:?}, failover during it at {m4_out:?}; {rounds} rounds, slowest {slowest:?}, {checks_during} checks"
    );
    d.stop().await;
}
