//! Health checks and automatic failover (DESIGN.md §6).
//!
//! ```text
//!  Target::changes() ─────> supervisor ── one task per (master, probe) ──┐
//!     (registry, [health])      spawns/cancels   check -> Hysteresis per role│
//!                                                  │ board (last check)      │
//!                                                  v                         │
//!                               applier <── transitions (mpsc) <─────────────┘
//!                                  │  one Target::apply per batch
//!                                  └─> persist: new serial, state_dir/health.json
//! ```
//!
//! - A master gets one probe per kind of request: `GET /status/v1/simple`
//!   decides roles puppet/report/fileserver, `GET /status/v1/simple/ca`
//!   decides role ca (404 = "not a CA (404)"), a `tcp` master gets one
//!   connect that decides all its roles. State is kept per (master, role) by
//!   [`hysteresis::Hysteresis`]: down after `fall` failures in a row, up after
//!   `rise` successes; a master with no known state (or pending) is settled
//!   by its first check, which runs at once.
//! - Timing: checks start `interval` apart (minus up to 10% jitter so many
//!   masters spread out), `fast_interval` apart while a role is failing, down
//!   or unsettled; each check is cut at `timeout`. A check that takes longer
//!   than the period is followed by the next one at once.
//! - Every transition is logged once (host, port, role, old, new, reason)
//!   and sent to the applier, which applies a batch in one
//!   [`Target::apply`] (new snapshot at once, under the served
//!   serial) on a blocking thread; a second task then stores the new serial
//!   and serves it, and writes `state_dir/health.json`. A slow or full disk
//!   never holds up the failover, the probes or DNS: while the serial cannot
//!   be stored the new answers are served under the last stored serial, and
//!   the owed serial is retried every [`SERIAL_RETRY`].
//! - [`HealthBoard`] holds the last check of every (master, role): result,
//!   reason, latency, state and since when. The daemon keeps it in
//!   [`crate::daemon::Running::health`]; `srvctl status` renders
//!   [`HealthBoard::snapshot`] (serde-serialisable [`RoleStatus`] rows).
//! - New, changed or removed masters are noticed through
//!   [`Target::changes`]; so is a changed `[health]` after a reload.

pub mod board;
pub mod capacity;
pub mod check;
pub mod hysteresis;
pub mod latency;
pub mod netwatch;
mod probe;
pub mod state;
pub mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use board::{Counts, HealthBoard, LastCheck, RoleStatus};
pub use capacity::{Capacities, Capacity, JrubyMetrics, JrubyStatus};
pub use check::{Check, CheckFactory, CheckOutcome, MetricsSource, NetworkChecks, Probe};
pub use hysteresis::{Hysteresis, Phase, Transition};
pub use latency::Latency;
pub use state::{Health, HealthStates, health_of};
pub use store::Stored;

use crate::input::config::HealthConfig;
use crate::input::registry::{Master, MasterKey, Registry, Role};

/// The timing the probe tasks run with.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Time between checks of a role that is up and passing (`health.interval`).
    pub interval: Duration,
    /// Time between checks while a role fails, is down or unsettled (`health.fast_interval`).
    pub fast_interval: Duration,
    /// How long one check may take before it is cut off and counts as failed.
    pub timeout: Duration,
    /// Passes in a row that bring a role up (`health.rise`).
    pub rise: u32,
    /// Failures in a row that take a role down (`health.fall`).
    pub fall: u32,
    /// Fraction of a period taken off at random, 0.0..1.0.
    pub jitter: f64,
}

/// Default jitter: up to 10% earlier than the period, never later, so the
/// detection bounds of docs/health.md hold.
pub const DEFAULT_JITTER: f64 = 0.1;

impl Timing {
    /// The timing of `cfg`, with `jitter` clamped to 0.0..=0.9.
    pub fn new(cfg: &HealthConfig, jitter: f64) -> Timing {
        Timing {
            interval: cfg.interval,
            fast_interval: cfg.fast_interval,
            timeout: cfg.timeout,
            rise: cfg.rise,
            fall: cfg.fall,
            jitter: jitter.clamp(0.0, 0.9),
        }
    }

    /// How long a first round can take at most: a confirming check
    /// started at `timeout` / 2 failing at its deadline, plus slack.
    pub fn confirm_bound(&self) -> Duration {
        self.timeout.saturating_mul(4).saturating_add(self.timeout / 2).saturating_add(Duration::from_millis(100))
    }

    fn jittered(&self, d: Duration) -> Duration {
        if self.jitter <= 0.0 {
            return d;
        }
        let f = rand::rng().random_range(0.0..self.jitter);
        d.mul_f64(1.0 - f)
    }
}

/// Where the checker gets the masters to check from and sends its
/// verdicts to: the zone layer's publisher (which implements it), so the
/// checker never depends on the layer above it.
pub trait Target: Send + Sync + 'static {
    /// A counter bumped on every change of the inputs (masters, `[health]`).
    fn changes(&self) -> tokio::sync::watch::Receiver<u64>;
    /// The masters to check, the `[health]` settings and the published states.
    fn checked(&self) -> (Registry, HealthConfig, HealthStates);
    /// The published health of each of `roles` of `key` (Up when unknown).
    fn published(&self, key: &MasterKey, roles: &[Role]) -> Vec<Health>;
    /// Publishes a batch of verdicts at once (blocking, CPU only: no I/O).
    /// Returns (states changed, a new serial is owed).
    fn apply(&self, batch: Vec<Verdict>) -> (bool, bool);
    /// Whether a new serial is owed (it could not be stored yet).
    fn serial_owed(&self) -> bool;
    /// Stores an owed serial (blocking: the fsync).
    fn store_serial(&self);
    /// The published states, for `health.json`.
    fn states(&self) -> HealthStates;
}

/// What the checker asks its [`Target`] to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// (master, role) now has this health; ignored if the master or role is gone.
    Health {
        /// The master the verdict is about.
        key: MasterKey,
        /// Which of its roles.
        role: Role,
        /// The role's new published health.
        health: Health,
    },
    /// Forget the states of masters (or roles) no longer in the registry.
    Prune,
    /// The smoothed JRuby capacity of every master with fresh figures
    /// (replaces the previous map; sent at most once per `policy.weights_period`).
    Capacity(Capacities),
}

/// What the checker needs besides its target.
pub struct Options {
    /// Makes the check of each (master, probe): the network in the daemon, scripts in tests.
    pub factory: Arc<dyn CheckFactory>,
    /// States read from `state_dir` at start (for since-times) and where to write them.
    pub stored: Stored,
    /// Fraction of each period taken off at random (see [`DEFAULT_JITTER`]); 0 in tests that need exact timing.
    pub jitter: f64,
    /// Bumped when the host's routes, addresses or links changed
    /// ([`netwatch::watch`] in the daemon): every probe then looks up the
    /// route of its held connection. `None`: never.
    pub network: Option<tokio::sync::watch::Receiver<u64>>,
}

/// While a serial is owed (it could not be stored), the applier retries
/// this often even without new transitions.
pub const SERIAL_RETRY: Duration = Duration::from_secs(5);

/// The new serial owed by published transitions is stored this long after
/// the first of them, so transitions close together share one serial.
pub const SERIAL_COALESCE: Duration = Duration::from_millis(50);

struct Ctx {
    target: Arc<dyn Target>,
    board: Arc<HealthBoard>,
    events: mpsc::UnboundedSender<Msg>,
    network: Option<tokio::sync::watch::Receiver<u64>>,
}

/// What the probe tasks (and the supervisor) tell the applier.
pub(crate) enum Msg {
    Verdict(Verdict),
    /// At start-up: this many probes check at once, hold the verdicts
    /// until each has finished its first round (or `within` has passed), so
    /// the first round publishes at most once.
    Expect {
        probes: usize,
        within: Duration,
    },
    /// A probe of [`Msg::Expect`] finished its first round.
    Settled,
}

/// Starts the checker on `tracker`; everything stops on `shutdown`.
/// Returns the board the probes write their results to.
pub fn spawn(target: Arc<dyn Target>, opts: Options, tracker: &TaskTracker, shutdown: CancellationToken) -> Arc<HealthBoard> {
    let board = Arc::new(HealthBoard::new());
    let (tx, rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Ctx { target: target.clone(), board: board.clone(), events: tx, network: opts.network.clone() });
    let dirty = Arc::new(Dirty { health: std::sync::atomic::AtomicBool::new(false), notify: tokio::sync::Notify::new() });
    tracker.spawn(apply(target.clone(), rx, dirty.clone(), shutdown.clone()));
    tracker.spawn(persist(target, board.clone(), opts.stored.path.clone(), dirty, shutdown.clone()));
    tracker.spawn(supervise(ctx, opts, tracker.clone(), shutdown));
    board
}

/// A running probe task.
struct Running {
    master: Master,
    token: CancellationToken,
}

/// Keeps one probe task per (master, probe) in line with the registry.
async fn supervise(ctx: Arc<Ctx>, opts: Options, tracker: TaskTracker, shutdown: CancellationToken) {
    let mut generation = ctx.target.changes();
    let mut running: HashMap<(MasterKey, Probe), Running> = HashMap::new();
    let mut since_restored: HashMap<(MasterKey, Role), SystemTime> = opts.stored.states.iter().map(|(k, (_, t))| (k.clone(), *t)).collect();
    let mut current_cfg: Option<HealthConfig> = None;
    let mut timing = None;
    let mut first_pass = true;
    // Metrics tasks per master, with the interval they fetch at.
    let mut fetching: HashMap<MasterKey, (Duration, Master, CancellationToken)> = HashMap::new();
    // Capacity weights: when the figures are next handed on, and what was last.
    let mut next_capacity: Option<Instant> = None;
    let mut sent_capacity: Option<Capacities> = None;
    'outer: loop {
        let (registry, cfg, states) = ctx.target.checked();
        if current_cfg.as_ref() != Some(&cfg) {
            if current_cfg.is_some() {
                opts.factory.configure(&cfg);
                tracing::info!("[health] changed; restarting checks");
                for (_, r) in running.drain() {
                    r.token.cancel();
                }
            }
            timing = Some(Timing::new(&cfg, opts.jitter));
            current_cfg = Some(cfg);
        }
        let timing = timing.clone().expect("set above");

        // What should run.
        let mut wanted: HashMap<(MasterKey, Probe), (&Master, Vec<Role>)> = HashMap::new();
        for m in &registry.masters {
            for (probe, roles) in Probe::plan(m) {
                wanted.insert((m.key(), probe), (m, roles));
            }
        }
        // A probe keeps running (and keeps its history) when only fields
        // that do not change the check itself changed: drained, weight, site.
        running.retain(|k, r| {
            let keep = wanted.get(k).is_some_and(|(m, _)| same_check(m, &r.master));
            if !keep {
                r.token.cancel();
            } else if let Some((m, _)) = wanted.get(k) {
                r.master = (*m).clone();
            }
            keep
        });
        ctx.board.retain(|k, role, probe| wanted.get(&(k.clone(), probe)).is_some_and(|(_, roles)| roles.contains(&role)));
        if first_pass {
            first_pass = false;
            // Probes with a state to settle check at once; the applier holds
            // their verdicts until all have (at most one publication at start).
            let probes = wanted
                .iter()
                .filter(|((k, _), (_, roles))| {
                    roles.iter().any(|r| !matches!(states.get(&(k.clone(), *r)), Some(Health::Up | Health::Down)))
                })
                .count();
            // A first round ends by then even against hung masters.
            let within = timing.confirm_bound();
            let _ = ctx.events.send(Msg::Expect { probes, within });
        }
        for (k, (m, roles)) in wanted {
            if running.contains_key(&k) {
                continue;
            }
            let token = shutdown.child_token();
            let phases: Vec<Phase> = roles.iter().map(|r| Phase::from_health(states.get(&(k.0.clone(), *r)).copied())).collect();
            let now = SystemTime::now();
            for (r, p) in roles.iter().zip(&phases) {
                let since = since_restored.remove(&(k.0.clone(), *r)).unwrap_or(now);
                ctx.board.insert(&k.0, *r, k.1, *p, since);
            }
            let spec = probe::ProbeSpec { key: k.0.clone(), master: m.clone(), probe: k.1, roles, phases };
            tracker.spawn(probe::run_probe(ctx.clone(), spec, opts.factory.clone(), timing.clone(), token.clone()));
            running.insert(k, Running { master: m.clone(), token });
        }

        // JRuby figures: for every https master while capacity weights are
        // on, and for drained masters (drain --wait-idle, status).
        let cfg = current_cfg.as_ref().expect("set above");
        let mut wanted_metrics: HashMap<MasterKey, (&Master, Duration)> = HashMap::new();
        for m in &registry.masters {
            let every = match (cfg.capacity.map(capacity::poll_interval), m.drained) {
                (Some(p), true) => p.min(capacity::DRAIN_POLL),
                (Some(p), false) => p,
                (None, true) => capacity::DRAIN_POLL,
                (None, false) => continue,
            };
            wanted_metrics.insert(m.key(), (m, every));
        }
        fetching.retain(|k, (every, was, token)| {
            let keep = wanted_metrics.get(k).is_some_and(|(m, e)| e == every && same_check(m, was));
            if !keep {
                token.cancel();
            }
            keep
        });
        ctx.board.retain_jrubies(|k| wanted_metrics.contains_key(k));
        for (k, (m, every)) in wanted_metrics {
            if fetching.contains_key(&k) {
                continue;
            }
            let Some(source) = opts.factory.metrics(m) else { continue };
            let token = shutdown.child_token();
            tracker.spawn(fetch_metrics(ctx.board.clone(), k.clone(), source, every, timing.timeout, token.clone()));
            fetching.insert(k, (every, m.clone(), token));
        }
        match cfg.capacity {
            None => {
                next_capacity = None;
                if sent_capacity.take().is_some_and(|c| !c.is_empty()) {
                    let _ = ctx.events.send(Msg::Verdict(Verdict::Capacity(Capacities::new())));
                }
            }
            // The first figures are handed on after two fetches, then once per period.
            Some(period) => {
                if next_capacity.is_none() {
                    next_capacity = Some(Instant::now() + capacity::poll_interval(period).saturating_mul(2).saturating_add(timing.timeout));
                }
            }
        }

        // Forget states of masters (or roles) that are gone.
        let index = registry.index();
        let stale = states.keys().any(|(k, r)| !index.get(k).is_some_and(|m| m.has_role(*r)));
        if stale {
            // Published by the applier, off the async runtime.
            let _ = ctx.events.send(Msg::Verdict(Verdict::Prune));
        }

        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break 'outer,
                r = generation.changed() => if r.is_err() { break 'outer } else { break },
                _ = tokio::time::sleep_until(next_capacity.unwrap_or_else(Instant::now)), if next_capacity.is_some() => {
                    let period = cfg.capacity.unwrap_or(Duration::from_secs(crate::input::config::DEFAULT_WEIGHTS_PERIOD_S));
                    next_capacity = Some(Instant::now() + period);
                    let stale = capacity::poll_interval(period).saturating_mul(capacity::STALE_AFTER_POLLS).saturating_add(timing.timeout);
                    let now_ms = board::unix_ms(SystemTime::now());
                    let caps = ctx.board.capacities(now_ms, stale);
                    if sent_capacity.as_ref() != Some(&caps) {
                        sent_capacity = Some(caps.clone());
                        let _ = ctx.events.send(Msg::Verdict(Verdict::Capacity(caps)));
                    }
                }
            }
        }
    }
    for (_, r) in running {
        r.token.cancel();
    }
    for (_, (_, _, token)) in fetching {
        token.cancel();
    }
}

/// Fetches one master's JRuby figures every `every` until cancelled.
async fn fetch_metrics(
    board: Arc<HealthBoard>,
    key: MasterKey,
    mut source: Box<dyn MetricsSource>,
    every: Duration,
    timeout: Duration,
    token: CancellationToken,
) {
    loop {
        let started = Instant::now();
        let r = tokio::select! {
            _ = token.cancelled() => return,
            r = tokio::time::timeout(timeout, source.fetch()) => r,
        };
        let r = r.unwrap_or_else(|_| Err(format!("jruby-metrics: timeout after {}", check::fmt_duration(timeout))));
        if let Err(e) = &r {
            tracing::debug!(master = %key, error = %e, "cannot fetch JRuby figures");
        }
        board.record_jrubies(&key, r, board::unix_ms(SystemTime::now()));
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep_until(started + every) => {}
        }
    }
}

/// Whether two versions of a master are checked the same way.
fn same_check(a: &Master, b: &Master) -> bool {
    a.host == b.host && a.port == b.port && a.addresses == b.addresses && a.check == b.check && a.roles == b.roles
}

pub(crate) fn log_transition(host: &str, port: u16, role: Role, t: Transition, reason: &str) {
    let (old, new) = (t.from.as_str(), t.to.as_str());
    if !t.changes_health() {
        tracing::debug!(host, port, %role, old, new, reason, "first check of {host}:{port} ({role}) passed");
    } else if t.to == Phase::Down {
        tracing::warn!(host, port, %role, old, new, reason, "{host}:{port} ({role}) is down: {reason}");
    } else {
        tracing::info!(host, port, %role, old, new, reason, "{host}:{port} ({role}) is up: {reason}");
    }
}

/// After the first transition of a batch, the applier waits for more
/// until none has come for [`COALESCE_QUIET`], at most [`COALESCE_MAX`]: a
/// whole site failing at once publishes once (one new serial), and no
/// failover waits more than [`COALESCE_MAX`].
pub const COALESCE_QUIET: Duration = Duration::from_millis(3);
/// See [`COALESCE_QUIET`].
pub const COALESCE_MAX: Duration = Duration::from_millis(10);

/// Applies transitions in batches: each batch is one
/// [`Target::apply`] on a blocking thread (CPU only: the answers
/// change at once). A batch is what arrives within the coalescing window
/// ([`COALESCE_QUIET`], [`COALESCE_MAX`]) after its first transition, plus
/// whatever arrives while the previous batch is applied; at start-up, the
/// verdicts of the first round are held until every probe has finished it
/// ([`Msg::Expect`]), so start-up publishes at most once. Persistence (the
/// new serial, health.json) is left to [`persist`], so a slow or full disk
/// delays persistence, never the failover, the probes or the DNS tasks.
async fn apply(target: Arc<dyn Target>, mut rx: mpsc::UnboundedReceiver<Msg>, dirty: Arc<Dirty>, shutdown: CancellationToken) {
    let mut batch: Vec<Verdict> = Vec::new();
    // At start-up: probes still to finish their first round, and until when to wait.
    let mut startup: Option<(usize, Instant)> = None;
    let take = |m: Msg, batch: &mut Vec<Verdict>, startup: &mut Option<(usize, Instant)>| match m {
        Msg::Verdict(v) => batch.push(v),
        Msg::Expect { probes, within } => *startup = Some((probes, Instant::now() + within)),
        Msg::Settled => {
            if let Some((left, _)) = startup {
                *left = left.saturating_sub(1);
            }
        }
    };
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        take(first, &mut batch, &mut startup);
        while let Some((left, until)) = startup {
            if left == 0 {
                startup = None;
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                m = rx.recv() => match m { Some(m) => take(m, &mut batch, &mut startup), None => return },
                _ = tokio::time::sleep_until(until) => startup = None,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let end = Instant::now() + COALESCE_MAX;
        loop {
            tokio::select! {
                biased;
                m = rx.recv() => match m { Some(m) => take(m, &mut batch, &mut startup), None => break },
                _ = tokio::time::sleep(COALESCE_QUIET) => break,
                _ = tokio::time::sleep_until(end) => break,
            }
        }
        while let Ok(m) = rx.try_recv() {
            take(m, &mut batch, &mut startup);
        }
        let t = target.clone();
        let b = std::mem::take(&mut batch);
        match tokio::task::spawn_blocking(move || t.apply(b)).await {
            Ok((changed, owed)) => {
                dirty.health.fetch_or(changed, std::sync::atomic::Ordering::Relaxed);
                if changed || owed {
                    dirty.notify.notify_one();
                }
            }
            Err(e) => tracing::error!(error = %e, "publishing health transitions failed"),
        }
    }
}

/// What [`persist`] has to write.
struct Dirty {
    /// Health states changed since health.json was last written.
    health: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

/// Stores the serial owed by published transitions and writes health.json,
/// on a blocking thread, as often as the disk allows (notifications that
/// arrive meanwhile are coalesced). While a serial is owed but cannot be
/// stored, retries every [`SERIAL_RETRY`]. At shutdown, writes health.json
/// one last time if it is behind.
async fn persist(target: Arc<dyn Target>, board: Arc<HealthBoard>, file: Option<PathBuf>, dirty: Arc<Dirty>, shutdown: CancellationToken) {
    loop {
        let behind = target.serial_owed();
        let stop = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = dirty.notify.notified() => false,
            _ = tokio::time::sleep(SERIAL_RETRY), if behind => false,
        };
        if !stop {
            // Batches that follow within a moment share one new serial (the
            // answers are already served; only the serial waits).
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(SERIAL_COALESCE) => {}
            }
        }
        // At shutdown, always write: a batch published just before the stop
        // may not have marked the file dirty yet (the applier sets the flag
        // after its blocking publish returns), and one more write is cheap.
        let write = dirty.health.swap(false, std::sync::atomic::Ordering::Relaxed) || stop;
        let (t, b, f) = (target.clone(), board.clone(), file.clone());
        let res = tokio::task::spawn_blocking(move || {
            if !stop {
                t.store_serial();
            }
            if let (true, Some(path)) = (write, f) {
                let states = t.states();
                let data = store::encode(&states, |k, r| b.since(k, r));
                if let Err(e) = crate::input::fsutil::write_atomic(&path, &data) {
                    tracing::error!(file = %path.display(), error = %e, "cannot store health states");
                }
            }
        })
        .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "storing health states failed");
        }
        if stop {
            return;
        }
    }
}
