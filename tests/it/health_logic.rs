//! Health checking without a network: the hysteresis state machine as
//! tables, and the whole checker (scheduler, applier, publisher) driven by
//! scripted checks on a paused tokio clock, so the timing is exact.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use srvd::health::Health;
use srvd::health::{self, Check, CheckFactory, CheckOutcome, Hysteresis, Phase, Probe};
use srvd::input::config::Config;
use srvd::input::registry::{Master, Registry, Role};
use srvd::zone::publish::{Inputs, Publisher};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

// ---------------------------------------------------------------------------
// The state machine.

/// Runs `results` ("+" ok, "-" fail) from `start` with rise/fall and returns
/// the phase after each result, as one string per result.
fn run(start: Phase, rise: u32, fall: u32, results: &str) -> Vec<&'static str> {
    let mut h = Hysteresis::new(start);
    results
        .chars()
        .map(|c| {
            h.record(c == '+', rise, fall);
            h.phase().as_str()
        })
        .collect()
}

#[test]
fn hysteresis_tables() {
    use Phase::*;
    #[rustfmt::skip]
    let table: &[(Phase, u32, u32, &str, &[&str])] = &[
        // One lost check does not take an up master out (fall = 2).
        (Up, 2, 2, "+-+-+",  &["up", "up", "up", "up", "up"]),
        (Up, 2, 2, "--",     &["up", "down"]),
        (Up, 2, 3, "--+---", &["up", "up", "up", "up", "up", "down"]),
        (Up, 2, 1, "-",      &["down"]),
        // Down needs `rise` successes in a row; a failure restarts the count.
        (Down, 2, 2, "+-++", &["down", "down", "down", "up"]),
        (Down, 3, 2, "+++",  &["down", "down", "up"]),
        (Down, 1, 2, "+",    &["up"]),
        // Unknown at start (published as up): one pass settles it as up,
        // and like an up master it needs `fall` failures to go down.
        (Unchecked, 2, 2, "+", &["up"]),
        (Unchecked, 2, 2, "-", &["unchecked"]),
        (Unchecked, 2, 2, "--", &["unchecked", "down"]),
        (Unchecked, 2, 2, "-+", &["unchecked", "up"]),
        (Unchecked, 2, 1, "-", &["down"]),
        // Pending (new master, not published): the first check decides.
        (Pending, 2, 2, "+",  &["up"]),
        (Pending, 2, 2, "-++", &["down", "down", "up"]),
    ];
    for (start, rise, fall, results, want) in table {
        assert_eq!(run(*start, *rise, *fall, results), *want, "from {start} rise={rise} fall={fall} results {results}");
    }
}

#[test]
fn transitions_and_fast_rechecks() {
    let mut h = Hysteresis::new(Phase::Up);
    assert!(!h.wants_fast());
    assert_eq!(h.record(false, 2, 2), None);
    assert!(h.wants_fast(), "a failing master is rechecked at fast_interval");
    let t = h.record(false, 2, 2).expect("down after fall failures");
    assert_eq!((t.from, t.to), (Phase::Up, Phase::Down));
    assert!(t.changes_health());
    assert!(h.wants_fast());
    assert_eq!(h.record(true, 2, 2), None);
    let t = h.record(true, 2, 2).expect("up after rise successes");
    assert_eq!((t.from, t.to), (Phase::Down, Phase::Up));
    assert!(!h.wants_fast());
    // Unchecked -> up is a transition of the machine, not of what is published.
    let mut h = Hysteresis::new(Phase::Unchecked);
    assert!(h.wants_fast());
    assert!(!h.record(true, 2, 2).unwrap().changes_health());
    assert_eq!(Phase::Unchecked.health(), Health::Up);
    assert_eq!(Phase::Pending.health(), Health::Pending);
    assert_eq!(Phase::from_health(None), Phase::Unchecked);
    assert_eq!(Phase::from_health(Some(Health::Down)), Phase::Down);
}

#[test]
fn probes_per_role() {
    let cfg = config("");
    let reg = Registry::parse(
        r#"
[[master]]
host = "pm1.example.net"
site = "dc1"
roles = ["puppet", "ca", "report"]

[[master]]
host = "pm2.example.net"
site = "dc1"
roles = ["ca"]

[[master]]
host = "pm3.example.net"
site = "dc1"
roles = ["puppet", "ca"]
check = "tcp"
"#,
        Path::new("masters.toml"),
        &cfg,
    )
    .unwrap();
    let plans: Vec<Vec<(Probe, Vec<Role>)>> = reg.masters.iter().map(Probe::plan).collect();
    assert_eq!(plans[0], vec![(Probe::Status, vec![Role::Puppet, Role::Report]), (Probe::CaStatus, vec![Role::Ca])]);
    assert_eq!(plans[1], vec![(Probe::CaStatus, vec![Role::Ca])]);
    assert_eq!(plans[2], vec![(Probe::Tcp, vec![Role::Puppet, Role::Ca])]);
    assert_eq!(Probe::Status.path(), Some("/status/v1/simple"));
    assert_eq!(Probe::CaStatus.path(), Some("/status/v1/simple/ca"));
}

#[test]
fn reasons_format_durations() {
    assert_eq!(health::check::fmt_duration(Duration::from_secs(1)), "1s");
    assert_eq!(health::check::fmt_duration(Duration::from_millis(250)), "250ms");
    assert_eq!(health::check::fmt_duration(Duration::from_millis(1500)), "1.5s");
}

// ---------------------------------------------------------------------------
// The checker on a paused clock, with scripted masters.

#[derive(Debug, Clone, PartialEq)]
enum Script {
    Ok,
    Fail(&'static str),
    /// Fails the next check only (a lost packet), then passes.
    FailOnce(&'static str),
    Hang,
}

/// Scripted checks: every master answers what its host's script says.
#[derive(Default, Clone)]
struct Scripts {
    by_host: Arc<Mutex<HashMap<String, Script>>>,
    /// (host, probe) of every check started.
    log: Arc<Mutex<Vec<(String, Probe, Instant)>>>,
}

impl Scripts {
    fn set(&self, host: &str, s: Script) {
        self.by_host.lock().unwrap().insert(host.to_string(), s);
    }
    fn checks_of(&self, host: &str) -> Vec<Instant> {
        self.log.lock().unwrap().iter().filter(|(h, _, _)| h == host).map(|(_, _, t)| *t).collect()
    }
}

struct ScriptedCheck {
    host: String,
    probe: Probe,
    scripts: Scripts,
}

#[async_trait::async_trait]
impl Check for ScriptedCheck {
    async fn check(&mut self) -> CheckOutcome {
        self.scripts.log.lock().unwrap().push((self.host.clone(), self.probe, Instant::now()));
        let s = self.scripts.by_host.lock().unwrap().get(&self.host).cloned().unwrap_or(Script::Ok);
        if let Script::FailOnce(_) = s {
            self.scripts.set(&self.host, Script::Ok);
        }
        match s {
            Script::Ok => CheckOutcome::ok("HTTP 200"),
            Script::FailOnce(r) => CheckOutcome::fail(r),
            Script::Fail(r) => CheckOutcome::fail(r),
            Script::Hang => std::future::pending().await,
        }
    }
}

impl CheckFactory for Scripts {
    fn make(&self, master: &Master, probe: Probe) -> Box<dyn Check> {
        Box::new(ScriptedCheck { host: master.host_str(), probe, scripts: self.clone() })
    }
}

const CONFIG: &str = r#"
[zone]
origin = "puppet.example.test."

[health]
interval = "1s"
fast_interval = "250ms"
timeout = "1s"
rise = 2
fall = 2

[[site]]
name = "dc1"
failover = ["dc2"]

[[site]]
name = "dc2"
"#;

const REGISTRY: &str = r#"
[[master]]
host = "pm1.example.net"
site = "dc1"
roles = ["puppet"]

[[master]]
host = "pm2.example.net"
site = "dc2"
roles = ["puppet"]
"#;

fn config(policy: &str) -> Config {
    Config::parse(&format!("{CONFIG}\n{policy}"), Path::new("test.toml"), Path::new("/nonexistent")).unwrap()
}

struct Harness {
    publisher: Arc<Publisher>,
    scripts: Scripts,
    board: Arc<health::HealthBoard>,
    tracker: TaskTracker,
    token: CancellationToken,
}

impl Harness {
    fn start(policy: &str, registry: &str, states: srvd::health::HealthStates) -> Harness {
        let cfg = config(policy);
        let reg = Registry::parse(registry, Path::new("masters.toml"), &cfg).unwrap();
        let inputs = Inputs::assemble(cfg, vec![], reg).unwrap();
        let publisher = Publisher::new(inputs, states, None).unwrap();
        let scripts = Scripts::default();
        let tracker = TaskTracker::new();
        let token = CancellationToken::new();
        let opts = health::Options { factory: Arc::new(scripts.clone()), stored: health::Stored::default(), jitter: 0.0, network: None };
        let board = health::spawn(publisher.clone(), opts, &tracker, token.clone());
        Harness { publisher, scripts, board, tracker, token }
    }

    /// Hosts of `_x-puppet._tcp.dc1` (or another role), in answer order.
    fn published(&self, role: Role) -> Vec<String> {
        let snap = self.publisher.snapshot();
        let a = snap.answers.iter().find(|a| a.site.as_deref() == Some("dc1") && a.role == role).unwrap();
        a.records.iter().map(|r| r.target.to_string().trim_end_matches('.').to_string()).collect()
    }

    /// Advances virtual time in 10 ms steps until `cond`; returns the time taken.
    async fn until(&self, what: &str, limit: Duration, cond: impl Fn(&Harness) -> bool) -> Duration {
        let t0 = Instant::now();
        while !cond(self) {
            assert!(t0.elapsed() <= limit, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        t0.elapsed()
    }

    async fn stop(self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

fn pm(n: u8) -> String {
    format!("pm{n}.example.net")
}

#[tokio::test(start_paused = true)]
async fn crash_is_detected_at_the_next_check_and_confirmed_at_once() {
    let h = Harness::start("", REGISTRY, HashMap::new());
    // First checks run at once; both masters settle up.
    h.until("first checks", Duration::from_millis(50), |h| h.scripts.checks_of(&pm(1)).len() == 1).await;
    assert_eq!(h.published(Role::Puppet), [pm(1), pm(2)]);
    // Crash right after a check: the worst case for detection.
    tokio::time::sleep(Duration::from_millis(5)).await;
    h.scripts.set(&pm(1), Script::Fail("connection refused"));
    let serial = h.publisher.snapshot().serial;
    let took = h.until("pm1 removed", Duration::from_secs(3), |h| h.published(Role::Puppet) == [pm(2)]).await;
    // Next regular check at 1 s (fail 1), confirmed at once on a fresh
    // connection (fail 2). (Scripted checks hold no connection, so no
    // close is seen before; tests/health_failover.rs covers that.)
    assert!(took <= Duration::from_millis(1010), "took {took:?}");
    assert!(took >= Duration::from_millis(990), "took {took:?}");
    // The new serial follows within SERIAL_COALESCE (the answers are already served).
    h.until("serial bumped", Duration::from_millis(100), |h| h.publisher.snapshot().serial > serial).await;
    let st = h.board.get(&key(&pm(1)), Role::Puppet).unwrap();
    assert_eq!((st.state, st.state_reason.as_str()), ("down", "connection refused"));
    // Checks of the first master: 0, 1.0, 1.0 s (the confirmation); then every 250 ms while down.
    let t = h.scripts.checks_of(&pm(1));
    let gaps: Vec<u128> = t.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    assert_eq!(&gaps[..2], &[1000, 0]);
    // The other master was left alone at the regular interval.
    let gaps2: Vec<u128> = h.scripts.checks_of(&pm(2)).windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    assert!(gaps2.iter().all(|g| *g == 1000), "{gaps2:?}");
    h.stop().await;
}

fn key(host: &str) -> srvd::input::registry::MasterKey {
    srvd::input::registry::MasterKey { host: srvd::input::names::parse_absolute(host).unwrap(), port: 8140 }
}

#[tokio::test(start_paused = true)]
async fn hang_is_detected_within_interval_plus_timeout_plus_confirm_after() {
    let h = Harness::start("", REGISTRY, HashMap::new());
    h.until("first checks", Duration::from_millis(50), |h| h.scripts.checks_of(&pm(1)).len() == 1).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    h.scripts.set(&pm(1), Script::Hang);
    let took = h.until("pm1 removed", Duration::from_secs(5), |h| h.published(Role::Puppet) == [pm(2)]).await;
    // interval (1 s), then the check fails at its deadline (timeout, 1 s)
    // and the confirming check started timeout / 8 after it fails at its own.
    assert!(took <= Duration::from_millis(2140), "took {took:?}");
    assert!(took >= Duration::from_millis(2100), "took {took:?}");
    let st = h.board.get(&key(&pm(1)), Role::Puppet).unwrap();
    assert_eq!(st.state_reason, "timeout after 1s");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn recovery_takes_rise_fast_checks_and_one_blip_is_ignored() {
    let h = Harness::start("", REGISTRY, HashMap::new());
    h.scripts.set(&pm(1), Script::Fail("HTTP 503"));
    // fall = 2 checks, fast_interval (250 ms) apart.
    h.until("pm1 down", Duration::from_millis(300), |h| h.published(Role::Puppet) == [pm(2)]).await;
    // Recovery: rechecked every 250 ms while down, up after 2 successes.
    tokio::time::sleep(Duration::from_millis(5)).await;
    h.scripts.set(&pm(1), Script::Ok);
    let took = h.until("pm1 back", Duration::from_secs(3), |h| h.published(Role::Puppet) == [pm(1), pm(2)]).await;
    assert!(took <= Duration::from_millis(500), "took {took:?} (target rise x interval = 2 s)");
    // A single failed check (one lost packet) does not remove it.
    let n = h.scripts.checks_of(&pm(1)).len();
    h.until("next check", Duration::from_secs(2), |h| h.scripts.checks_of(&pm(1)).len() > n).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    h.scripts.set(&pm(1), Script::FailOnce("connection reset"));
    let n = h.scripts.checks_of(&pm(1)).len();
    h.until("one failed check", Duration::from_secs(2), |h| h.scripts.checks_of(&pm(1)).len() > n).await;
    for _ in 0..300 {
        assert_eq!(h.published(Role::Puppet), [pm(1), pm(2)], "no flap on one failure");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn unknown_masters_are_published_until_their_first_check_pending_ones_after_it() {
    // pm1 has no known state (fresh start) and is dead; pm2 is pending (just
    // added) and healthy.
    let mut states = HashMap::new();
    states.insert((key(&pm(2)), Role::Puppet), Health::Pending);
    let h = Harness::start("", REGISTRY, states);
    h.scripts.set(&pm(1), Script::Fail("connection refused"));
    assert_eq!(h.published(Role::Puppet), [pm(1)], "at start: unknown published, pending not");
    let took = h.until("settled", Duration::from_secs(1), |h| h.published(Role::Puppet) == [pm(2)]).await;
    // pm2 is published after its first check (at once); pm1, like an up
    // master, leaves after `fall` (2) failures: at once and its confirmation
    // right after; both in the one start-up publication.
    assert!(took <= Duration::from_millis(20), "took {took:?}");
    assert_eq!(h.scripts.checks_of(&pm(1)).len(), 2);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_master_added_at_runtime_is_published_after_its_first_check() {
    let h = Harness::start("", REGISTRY, HashMap::new());
    h.until("first checks", Duration::from_millis(50), |h| h.published(Role::Puppet).len() == 2).await;
    let cfg = h.publisher.lock().inputs.config.clone();
    let extra = Registry::parse("[[master]]\nhost = \"pm3.example.net\"\nsite = \"dc1\"\n", Path::new("x"), &cfg).unwrap();
    h.scripts.set(&pm(3), Script::Hang);
    // What srvctl add-master does: registry + Pending in one update.
    h.publisher.update(|core| {
        let m = extra.masters[0].clone();
        core.health.insert((m.key(), Role::Puppet), Health::Pending);
        core.inputs.registry.masters.push(m);
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.published(Role::Puppet), [pm(1), pm(2)], "not published while its first check runs");
    assert_eq!(h.board.get(&key(&pm(3)), Role::Puppet).unwrap().state, "pending");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(h.published(Role::Puppet), [pm(1), pm(2)], "not published after a failed check");
    let st = h.board.get(&key(&pm(3)), Role::Puppet).unwrap();
    assert_eq!((st.state, st.state_reason.as_str()), ("down", "timeout after 1s"));
    h.scripts.set(&pm(3), Script::Ok);
    h.until("pm3 published", Duration::from_secs(2), |h| h.published(Role::Puppet).len() == 3).await;
    // Removal stops its checks and forgets its state.
    h.publisher.update(|core| core.inputs.registry.masters.retain(|m| m.host_str() != pm(3)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let n = h.scripts.checks_of(&pm(3)).len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.scripts.checks_of(&pm(3)).len(), n, "no checks after removal");
    assert!(h.board.get(&key(&pm(3)), Role::Puppet).is_none());
    assert!(!h.publisher.lock().health.contains_key(&(key(&pm(3)), Role::Puppet)));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn all_down_policies_with_real_health() {
    for (policy, want) in [("", vec![pm(1), pm(2)]), ("[policy]\nall_down = \"empty\"\n", vec![])] {
        let h = Harness::start(policy, REGISTRY, HashMap::new());
        h.scripts.set(&pm(1), Script::Fail("HTTP 503"));
        h.scripts.set(&pm(2), Script::Fail("HTTP 503"));
        h.until("both down", Duration::from_secs(1), |h| {
            let core = h.publisher.lock();
            core.health.values().filter(|s| **s == Health::Down).count() == 2
        })
        .await;
        assert_eq!(h.published(Role::Puppet), want, "policy {policy:?}");
        h.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn single_active_ca_fails_over_to_the_standby_and_back() {
    let reg = r#"
[[master]]
host = "ca1.example.net"
site = "dc1"
roles = ["ca"]

[[master]]
host = "ca2.example.net"
site = "dc2"
roles = ["ca"]
"#;
    let h = Harness::start("", reg, HashMap::new());
    h.until("first checks", Duration::from_millis(50), |h| h.scripts.checks_of("ca2.example.net").len() == 1).await;
    assert_eq!(h.published(Role::Ca), ["ca1.example.net"]);
    h.scripts.set("ca1.example.net", Script::Fail("connection refused"));
    h.until("standby active", Duration::from_secs(2), |h| h.published(Role::Ca) == ["ca2.example.net"]).await;
    // Both down: the first CA stays published (never an empty CA answer).
    h.scripts.set("ca2.example.net", Script::Fail("connection refused"));
    h.until("both down", Duration::from_secs(3), |h| h.published(Role::Ca) == ["ca1.example.net"]).await;
    h.scripts.set("ca2.example.net", Script::Ok);
    h.until("standby back", Duration::from_secs(2), |h| h.published(Role::Ca) == ["ca2.example.net"]).await;
    h.scripts.set("ca1.example.net", Script::Ok);
    h.until("primary back", Duration::from_secs(2), |h| h.published(Role::Ca) == ["ca1.example.net"]).await;
    h.stop().await;
}
