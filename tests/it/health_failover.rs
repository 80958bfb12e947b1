//! Failover speed without flaps (issue 9), on a paused tokio clock with
//! scripted masters whose checks can also see their held connection close
//! (`Check::closed`), so every figure is exact virtual time:
//!
//! - a crash (the held connection is reset, reconnects are refused) is out
//!   of the answers within the coalescing window; a master that merely
//!   closes an idle connection is not;
//! - a hang fails at `timeout` plus the confirming check's `confirm_after`;
//!   an 800 ms GC pause does not flap;
//! - 10 minutes of 1 failure in 100 at random (seeded) change nothing;
//! - a whole site crashing at once publishes one serial; so does start-up;
//! - the latency history and the HTTP/1.1 answer reader as tables.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use srvd::health::check::Parser;
use srvd::health::{self, Check, CheckFactory, CheckOutcome, Latency, Probe};
use srvd::input::config::Config;
use srvd::input::registry::{Master, Registry, Role};
use srvd::zone::publish::{Inputs, Publisher};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Lets virtual time pass (the paused clock jumps to the next timer).
async fn pass(d: Duration) {
    tokio::time::sleep(d).await;
}

/// What a scripted master does with the next check.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    /// Crashed: the held connection is reset, every check is refused.
    Crashed,
    /// Hung: checks never answer.
    Hung,
    /// Paused (a GC pause) until then: every check answers (passes) then.
    PausedUntil(Instant),
    /// Each check fails with probability 1/n (refused, reset or timeout).
    Lossy(u32),
    /// The host's route is gone: the held connection stays silent (no
    /// reset), a route lookup fails, connects fail at once.
    Vanished,
}

#[derive(Clone)]
struct Masters {
    modes: Arc<Mutex<HashMap<String, Mode>>>,
    /// Bumped per host to close its held connections (a crash or an idle close).
    closes: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
    rng: Arc<Mutex<rand::rngs::StdRng>>,
    checks: Arc<Mutex<u64>>,
    /// Route lookups of held connections (after a network change).
    lookups: Arc<Mutex<u64>>,
}

impl Masters {
    fn new(seed: u64) -> Masters {
        Masters {
            modes: Arc::default(),
            closes: Arc::default(),
            rng: Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed))),
            checks: Arc::default(),
            lookups: Arc::default(),
        }
    }

    fn mode(&self, host: &str) -> Mode {
        self.modes.lock().unwrap().get(host).copied().unwrap_or(Mode::Ok)
    }

    fn set(&self, host: &str, m: Mode) {
        self.modes.lock().unwrap().insert(host.to_string(), m);
        if m == Mode::Crashed {
            self.close(host);
        }
    }

    /// Closes the held connections of `host`.
    fn close(&self, host: &str) {
        self.closer(host).send_modify(|n| *n += 1);
    }

    fn closer(&self, host: &str) -> watch::Sender<u64> {
        self.closes.lock().unwrap().entry(host.to_string()).or_insert_with(|| watch::channel(0).0).clone()
    }
}

struct Scripted {
    host: String,
    masters: Masters,
    /// The held connection: the close counter seen when it was opened.
    held: Option<watch::Receiver<u64>>,
}

#[async_trait::async_trait]
impl Check for Scripted {
    async fn check(&mut self) -> CheckOutcome {
        *self.masters.checks.lock().unwrap() += 1;
        let outcome = match self.masters.mode(&self.host) {
            Mode::Ok => CheckOutcome::ok("HTTP 200"),
            Mode::Crashed => CheckOutcome::fail("connection refused"),
            Mode::Vanished => CheckOutcome::fail("host unreachable"),
            Mode::Hung => std::future::pending().await,
            Mode::PausedUntil(t) => {
                tokio::time::sleep_until(t).await;
                CheckOutcome::ok("HTTP 200")
            }
            Mode::Lossy(n) => {
                let (lose, kind) = {
                    let mut r = self.masters.rng.lock().unwrap();
                    (r.random_range(0..n) == 0, r.random_range(0..3))
                };
                match (lose, kind) {
                    (false, _) => CheckOutcome::ok("HTTP 200"),
                    (true, 0) => CheckOutcome::fail("connection refused"),
                    (true, 1) => CheckOutcome::fail("connection reset"),
                    (true, _) => std::future::pending().await,
                }
            }
        };
        let mut rx = self.masters.closer(&self.host).subscribe();
        rx.borrow_and_update();
        self.held = outcome.ok.then_some(rx);
        outcome
    }

    async fn closed(&mut self) -> String {
        let Some(rx) = self.held.as_mut() else { return std::future::pending().await };
        let _ = rx.changed().await;
        self.held = None;
        "connection reset".into()
    }

    fn unroutable(&mut self) -> Option<String> {
        *self.masters.lookups.lock().unwrap() += 1;
        if self.held.is_some() && self.masters.mode(&self.host) == Mode::Vanished {
            self.held = None;
            return Some("no route to the master any more".into());
        }
        None
    }
}

impl CheckFactory for Masters {
    fn make(&self, master: &Master, _probe: Probe) -> Box<dyn Check> {
        Box::new(Scripted { host: master.host_str(), masters: self.clone(), held: None })
    }
}

/// Default [health] timing (only what the tests need is set).
const CONFIG: &str = r#"
[zone]
origin = "puppet.example.test."

[[site]]
name = "dc1"
failover = ["dc2"]

[[site]]
name = "dc2"
"#;

fn registry(n: usize) -> String {
    let mut r = String::new();
    for i in 1..=n {
        r += &format!("[[master]]\nhost = \"pm{i}.example.net\"\nsite = \"dc1\"\nroles = [\"puppet\"]\n\n");
    }
    r + "[[master]]\nhost = \"other.example.net\"\nsite = \"dc2\"\nroles = [\"puppet\"]\n"
}

fn pm(i: usize) -> String {
    format!("pm{i}.example.net")
}

struct Harness {
    publisher: Arc<Publisher>,
    masters: Masters,
    tracker: TaskTracker,
    token: CancellationToken,
    /// Serial changes seen so far.
    serials: Arc<Mutex<Vec<(Instant, u32)>>>,
    /// Announces a change of the host's routes (as the route watch does).
    network: watch::Sender<u64>,
}

impl Harness {
    fn start(n: usize, masters: Masters, states: health::HealthStates) -> Harness {
        let cfg = Config::parse(CONFIG, Path::new("test.toml"), Path::new("/nonexistent")).unwrap();
        let reg = Registry::parse(&registry(n), Path::new("masters.toml"), &cfg).unwrap();
        let inputs = Inputs::assemble(cfg, vec![], reg).unwrap();
        let publisher = Publisher::new(inputs, states, None).unwrap();
        let tracker = TaskTracker::new();
        let token = CancellationToken::new();
        let serials = Arc::new(Mutex::new(Vec::new()));
        let mut rx = publisher.subscribe();
        let s = serials.clone();
        let stop = token.clone();
        tracker.spawn(async move {
            while tokio::select! { r = rx.changed() => r.is_ok(), _ = stop.cancelled() => false } {
                let v = *rx.borrow_and_update();
                s.lock().unwrap().push((Instant::now(), v));
            }
        });
        let (network, network_rx) = watch::channel(0);
        let opts = health::Options {
            factory: Arc::new(masters.clone()),
            stored: health::Stored::default(),
            jitter: 0.1,
            network: Some(network_rx),
        };
        health::spawn(publisher.clone(), opts, &tracker, token.clone());
        Harness { publisher, masters, tracker, token, serials, network }
    }

    fn dc1(&self) -> Vec<String> {
        let snap = self.publisher.snapshot();
        let a = snap.answers.iter().find(|a| a.site.as_deref() == Some("dc1") && a.role == Role::Puppet).unwrap();
        // dc1's own masters (dc2's follows them as failover).
        a.records.iter().map(|r| r.target.to_string().trim_end_matches('.').to_string()).filter(|t| t.starts_with("pm")).collect()
    }

    /// Advances virtual time in 1 ms steps until `cond`; returns the time taken.
    async fn until(&self, what: &str, limit: Duration, cond: impl Fn(&Harness) -> bool) -> Duration {
        let t0 = Instant::now();
        while !cond(self) {
            assert!(t0.elapsed() <= limit, "{what}: not within {limit:?}");
            pass(Duration::from_millis(1)).await;
        }
        t0.elapsed()
    }

    fn serial_changes(&self) -> usize {
        self.serials.lock().unwrap().len()
    }

    async fn stop(self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

async fn settled(n: usize, seed: u64) -> Harness {
    let h = Harness::start(n, Masters::new(seed), HashMap::new());
    h.until("first round", Duration::from_secs(1), |h| h.dc1().len() == n).await;
    // Let the start-up publication and its serial pass.
    pass(Duration::from_secs(2)).await;
    h
}

#[tokio::test(start_paused = true)]
async fn a_crash_is_out_within_the_coalescing_window_at_any_phase() {
    let h = settled(2, 1).await;
    // Crashes at several phases of the 1 s check interval.
    for phase_ms in [0u64, 130, 370, 640, 910] {
        pass(Duration::from_millis(phase_ms)).await;
        h.masters.set(&pm(1), Mode::Crashed);
        let took = h.until("pm1 out", Duration::from_secs(3), |h| h.dc1() == [pm(2)]).await;
        assert!(took <= health::COALESCE_MAX, "phase {phase_ms} ms: took {took:?}");
        h.masters.set(&pm(1), Mode::Ok);
        // Back after rise (2) checks fast_interval (250 ms) apart.
        let back = h.until("pm1 back", Duration::from_secs(3), |h| h.dc1().len() == 2).await;
        assert!(back <= Duration::from_millis(520), "recovery took {back:?}");
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_route_change_takes_a_vanished_host_out_at_once_and_costs_nothing_otherwise() {
    let h = settled(3, 9).await;
    // A route change that leaves every master reachable: one lookup per
    // held connection, no check, no change.
    let (checks, lookups) = (*h.masters.checks.lock().unwrap(), *h.masters.lookups.lock().unwrap());
    h.network.send_modify(|n| *n += 1);
    pass(Duration::from_millis(1)).await;
    assert_eq!(*h.masters.lookups.lock().unwrap() - lookups, 4, "one route lookup per held connection (3 in dc1, 1 in dc2)");
    assert_eq!(*h.masters.checks.lock().unwrap(), checks, "no check for a route change that changes nothing");
    assert_eq!(h.dc1().len(), 3);
    // pm1's host vanishes: nothing closes its connection, its next check
    // would be up to 1 s away; the route change takes it out at once, at
    // any phase of the interval.
    for phase_ms in [0u64, 290, 610, 880] {
        pass(Duration::from_millis(phase_ms)).await;
        h.masters.set(&pm(1), Mode::Vanished);
        h.network.send_modify(|n| *n += 1);
        let took = h.until("pm1 out", Duration::from_secs(3), |h| h.dc1() == [pm(2), pm(3)]).await;
        assert!(took <= health::COALESCE_MAX, "phase {phase_ms} ms: took {took:?}");
        h.masters.set(&pm(1), Mode::Ok);
        h.until("pm1 back", Duration::from_secs(3), |h| h.dc1().len() == 3).await;
    }
    // Without the announcement, a vanished host waits for its next check.
    pass(Duration::from_millis(1100)).await;
    h.masters.set(&pm(1), Mode::Vanished);
    pass(Duration::from_millis(20)).await;
    assert_eq!(h.dc1().len(), 3, "nothing tells srvd before the next check");
    h.until("pm1 out at its next check", Duration::from_millis(1100), |h| h.dc1() == [pm(2), pm(3)]).await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_master_closing_its_idle_connections_is_not_marked_down() {
    let h = settled(2, 2).await;
    let serials = h.serial_changes();
    let checks = *h.masters.checks.lock().unwrap();
    for _ in 0..20 {
        pass(Duration::from_millis(1500)).await;
        h.masters.close(&pm(1));
        pass(Duration::from_millis(1)).await;
        assert_eq!(h.dc1().len(), 2);
    }
    assert_eq!(h.serial_changes(), serials, "no serial change");
    // Each close got an immediate check (on top of the regular ones).
    let more = *h.masters.checks.lock().unwrap() - checks;
    assert!(more >= 20 * 3, "{more} checks");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_hang_is_out_after_timeout_plus_confirm_after_and_a_gc_pause_is_not() {
    let h = settled(2, 3).await;
    // 800 ms GC pauses, one every few seconds at random phases: never out.
    let mut rng = rand::rngs::StdRng::seed_from_u64(33);
    for _ in 0..20 {
        pass(Duration::from_millis(rng.random_range(5000..20000))).await;
        h.masters.set(&pm(1), Mode::PausedUntil(Instant::now() + Duration::from_millis(800)));
        for _ in 0..100 {
            assert_eq!(h.dc1().len(), 2, "a GC pause does not flap");
            pass(Duration::from_millis(10)).await;
        }
        h.masters.set(&pm(1), Mode::Ok);
    }
    pass(Duration::from_secs(3)).await;
    // Hung: the next check (within 1 s) fails at 700 ms, the two
    // confirming checks started 87.5 ms apart fail at their own deadlines.
    h.masters.set(&pm(1), Mode::Hung);
    let took = h.until("pm1 out", Duration::from_secs(3), |h| h.dc1() == [pm(2)]).await;
    assert!(took <= Duration::from_millis(1000 + 700 + 175 + 10), "took {took:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn ten_minutes_of_one_failure_in_a_hundred_change_nothing() {
    for seed in [7u64, 8, 9] {
        let h = settled(3, seed).await;
        let serials = h.serial_changes();
        for i in 1..=3 {
            h.masters.set(&pm(i), Mode::Lossy(100));
        }
        let checks0 = *h.masters.checks.lock().unwrap();
        let end = Instant::now() + Duration::from_secs(600);
        while Instant::now() < end {
            assert_eq!(h.dc1().len(), 3, "seed {seed}: a flap");
            pass(Duration::from_millis(50)).await;
        }
        assert_eq!(h.serial_changes(), serials, "seed {seed}: no serial change");
        let checks = *h.masters.checks.lock().unwrap() - checks0;
        assert!(checks >= 3 * 550, "seed {seed}: {checks} checks");
        h.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_whole_site_crashing_at_once_publishes_one_serial() {
    let h = settled(10, 4).await;
    let before = h.serial_changes();
    // Ten masters crash within 6 ms of each other.
    for i in 1..=10 {
        h.masters.set(&pm(i), Mode::Crashed);
        if i % 2 == 0 {
            pass(Duration::from_millis(1)).await;
        }
    }
    h.until("all out", Duration::from_secs(2), |h| h.dc1().is_empty()).await;
    pass(Duration::from_secs(2)).await;
    assert_eq!(h.serial_changes(), before + 1, "{:?}", h.serials.lock().unwrap());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn start_up_publishes_at_most_once() {
    // Ten masters with no known state: four crashed, one hung, five fine.
    let masters = Masters::new(5);
    for i in 1..=4 {
        masters.set(&pm(i), Mode::Crashed);
    }
    masters.set(&pm(5), Mode::Hung);
    let h = Harness::start(10, masters, HashMap::new());
    h.until("first round", Duration::from_secs(2), |h| h.dc1().len() == 5).await;
    pass(Duration::from_secs(3)).await;
    assert_eq!(h.serial_changes(), 1, "{:?}", h.serials.lock().unwrap());
    h.stop().await;
}

#[test]
fn latency_history_sets_the_deadlines() {
    let ms = Duration::from_millis;
    let timeout = ms(700);
    #[rustfmt::skip]
    let table: &[(&[u64], Duration, Duration)] = &[
        // (latencies ms, deadline, confirm_after)
        (&[],                     ms(700),  Duration::from_micros(87_500)),
        (&[3; 32],                ms(700),  Duration::from_micros(87_500)),
        // One GC pause in 32 is above p95: the history stays "fast".
        (&[3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 800],
                                  ms(700),  Duration::from_micros(87_500)),
        // An always slow master gets room.
        (&[300; 32],              ms(1200), ms(350)),
        (&[5000; 32],             ms(2800), ms(350)),
    ];
    for (lat, deadline, confirm) in table {
        let mut l = Latency::new();
        for x in *lat {
            l.push(ms(*x));
        }
        assert_eq!(l.deadline(timeout), *deadline, "{lat:?}");
        assert_eq!(l.confirm_after(timeout), *confirm, "{lat:?}");
    }
    // Only the last 32 count.
    let mut l = Latency::new();
    for _ in 0..32 {
        l.push(ms(300));
    }
    for _ in 0..32 {
        l.push(ms(2));
    }
    assert_eq!(l.usual(), Some(ms(2)));
}

#[test]
fn http_answers_are_read_to_their_end() {
    // (bytes as they arrive, status, keep-alive; None: incomplete)
    #[rustfmt::skip]
    let table: &[(&str, Option<(u16, bool)>)] = &[
        ("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nrunning", Some((200, true))),
        ("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nrunn", None),
        ("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", Some((503, false))),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nrunning\r\n0\r\n\r\n", Some((200, true))),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nrun\r\n4\r\nning\r\n0\r\nX-T: 1\r\n\r\n", Some((200, true))),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nrunning\r\n", None),
        ("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", Some((200, false))),
        ("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", Some((200, true))),
        ("HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno", Some((404, true))),
        ("HTTP/1.1 200 OK\r\n\r\nuntil close", None),
        ("HTTP/1.1 204 No Content\r\n\r\n", Some((204, true))),
        // Extra bytes after the answer: not reused.
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", Some((200, false))),
    ];
    for (text, want) in table {
        let mut p = Parser::default();
        let got = p.advance(text.as_bytes()).unwrap().map(|a| (a.status, a.keep));
        assert_eq!(got, *want, "{text:?}");
    }
    for bad in [
        "HTTP/2 200\r\n\r\n",
        "SSH-2.0-OpenSSH\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        assert!(Parser::default().advance(bad.as_bytes()).is_err(), "{bad:?}");
    }
    // Until-close bodies end at the close.
    let mut p = Parser::default();
    assert!(p.advance(b"HTTP/1.1 200 OK\r\n\r\nbody").unwrap().is_none());
    assert_eq!(p.at_eof().map(|a| (a.status, a.keep)), Some((200, false)));
}
