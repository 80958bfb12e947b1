//! The health board: the latest check of every (master, role), for
//! `srvctl status` and metrics. Written by the probe tasks after each check,
//! read by whoever holds the `Arc` (see [`crate::daemon::Running::health`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::capacity::{Capacities, JrubyMetrics, JrubyStatus};
use super::check::Probe;
use super::hysteresis::Phase;
use crate::input::registry::{MasterKey, Role};

/// The last check of one (master, role).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastCheck {
    /// When it finished, unix milliseconds.
    pub at_unix_ms: u64,
    /// Whether it passed (counts toward `rise`; a failure toward `fall`).
    pub ok: bool,
    /// "HTTP 200", "connection refused", "timeout after 1s", ...
    pub reason: String,
    /// How long the check took, milliseconds.
    pub latency_ms: f64,
}

/// What the checker knows about one (master, role).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoleStatus {
    /// Host name without the trailing dot.
    pub host: String,
    /// The master's port (with `host`, its identity).
    pub port: u16,
    /// The role this row is about; one probe may decide several roles.
    pub role: Role,
    /// The request that decides this role.
    pub probe: Probe,
    /// "unchecked" (no state known yet, published), "pending" (new, not
    /// published yet), "up" or "down".
    pub state: &'static str,
    /// When `state` was entered, unix seconds (for states restored from
    /// `state_dir`, when they were entered before the restart).
    pub since_unix: u64,
    /// The reason of the check that caused the current state.
    pub state_reason: String,
    /// Passing checks in a row (reset by a failure); `rise` of them bring a down role up.
    pub consecutive_ok: u32,
    /// Failed checks in a row (reset by a pass); `fall` of them take an up role down.
    pub consecutive_fail: u32,
    /// The most recent check; `None` until the first one finishes.
    pub last: Option<LastCheck>,
    /// Role `ca`: the fingerprint of the CA certificate the master served
    /// when last compared with `health.ca_file` (the CA identity guard).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_fingerprint: Option<String>,
}

/// Shared table of [`RoleStatus`]; a plain mutex, never held across an await.
/// Also counts checks and transitions since start (for metrics).
#[derive(Debug, Default)]
pub struct HealthBoard {
    entries: Mutex<BTreeMap<(MasterKey, Role), RoleStatus>>,
    /// JRuby figures of the masters whose metrics are fetched.
    jrubies: Mutex<BTreeMap<MasterKey, JrubyStatus>>,
    checks: AtomicU64,
    check_failures: AtomicU64,
    /// Transitions that changed published health, to up and to down.
    to_up: AtomicU64,
    to_down: AtomicU64,
}

/// Totals since start, see [`HealthBoard::counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Checks run (one check can decide several roles).
    pub checks: u64,
    /// Checks that failed.
    pub check_failures: u64,
    /// (master, role) transitions that published a master again.
    pub to_up: u64,
    /// (master, role) transitions that withdrew a master.
    pub to_down: u64,
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl HealthBoard {
    /// An empty board; the checker fills it as checks finish.
    pub fn new() -> HealthBoard {
        HealthBoard::default()
    }

    /// Every entry, ordered by (host, port, role).
    pub fn snapshot(&self) -> Vec<RoleStatus> {
        self.lock().values().cloned().collect()
    }

    /// One entry.
    pub fn get(&self, key: &MasterKey, role: Role) -> Option<RoleStatus> {
        self.lock().get(&(key.clone(), role)).cloned()
    }

    /// When the current state of (master, role) was entered.
    pub fn since(&self, key: &MasterKey, role: Role) -> Option<SystemTime> {
        self.lock().get(&(key.clone(), role)).map(|s| UNIX_EPOCH + Duration::from_secs(s.since_unix))
    }

    /// Checks and transitions since start.
    pub fn counts(&self) -> Counts {
        Counts {
            checks: self.checks.load(Relaxed),
            check_failures: self.check_failures.load(Relaxed),
            to_up: self.to_up.load(Relaxed),
            to_down: self.to_down.load(Relaxed),
        }
    }

    pub(crate) fn count_check(&self, ok: bool) {
        self.checks.fetch_add(1, Relaxed);
        if !ok {
            self.check_failures.fetch_add(1, Relaxed);
        }
    }

    /// Counts a transition that changed published health (to up or down).
    pub(crate) fn count_transition(&self, to: Phase) {
        match to {
            Phase::Up => self.to_up.fetch_add(1, Relaxed),
            Phase::Down => self.to_down.fetch_add(1, Relaxed),
            Phase::Unchecked | Phase::Pending => return,
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(MasterKey, Role), RoleStatus>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, key: &MasterKey, role: Role, probe: Probe, phase: Phase, since: SystemTime) {
        let st = RoleStatus {
            host: crate::input::names::host_string(&key.host),
            port: key.port,
            role,
            probe,
            state: phase.as_str(),
            since_unix: unix_secs(since),
            state_reason: String::new(),
            consecutive_ok: 0,
            consecutive_fail: 0,
            last: None,
            ca_fingerprint: None,
        };
        self.lock().insert((key.clone(), role), st);
    }

    pub(crate) fn with<R>(&self, key: &MasterKey, role: Role, f: impl FnOnce(&mut RoleStatus) -> R) -> Option<R> {
        self.lock().get_mut(&(key.clone(), role)).map(f)
    }

    pub(crate) fn retain(&self, mut keep: impl FnMut(&MasterKey, Role, Probe) -> bool) {
        self.lock().retain(|(k, r), s| keep(k, *r, s.probe));
    }

    fn jlock(&self) -> std::sync::MutexGuard<'_, BTreeMap<MasterKey, JrubyStatus>> {
        self.jrubies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The JRuby figures of one master, when they are fetched.
    pub fn jrubies(&self, key: &MasterKey) -> Option<JrubyStatus> {
        self.jlock().get(key).cloned()
    }

    /// The smoothed capacity of every master with fresh figures.
    pub fn capacities(&self, now_ms: u64, stale: Duration) -> Capacities {
        self.jlock().iter().filter_map(|(k, s)| Some((k.clone(), s.capacity(now_ms, stale)?))).collect()
    }

    pub(crate) fn record_jrubies(&self, key: &MasterKey, r: Result<JrubyMetrics, String>, now_ms: u64) {
        self.jlock().entry(key.clone()).or_insert_with(JrubyStatus::new).record(r, now_ms);
    }

    /// Forgets the figures of masters no longer fetched.
    pub(crate) fn retain_jrubies(&self, mut keep: impl FnMut(&MasterKey) -> bool) {
        self.jlock().retain(|k, _| keep(k));
    }
}
