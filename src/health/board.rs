//! The health board: the latest check of every (master, role), for
//! `srvctl status` and metrics. Written by the probe tasks after each check,
//! read by whoever holds the `Arc` (see [`crate::daemon::Running::health`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::check::Probe;
use super::hysteresis::Phase;
use crate::registry::{MasterKey, Role};

/// The last check of one (master, role).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastCheck {
    /// When it finished, unix milliseconds.
    pub at_unix_ms: u64,
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
    pub port: u16,
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
    pub consecutive_ok: u32,
    pub consecutive_fail: u32,
    pub last: Option<LastCheck>,
}

/// Shared table of [`RoleStatus`]; a plain mutex, never held across an await.
#[derive(Debug, Default)]
pub struct HealthBoard {
    entries: Mutex<BTreeMap<(MasterKey, Role), RoleStatus>>,
}

pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl HealthBoard {
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

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(MasterKey, Role), RoleStatus>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, key: &MasterKey, role: Role, probe: Probe, phase: Phase, since: SystemTime) {
        let st = RoleStatus {
            host: key.host.to_string().trim_end_matches('.').to_string(),
            port: key.port,
            role,
            probe,
            state: phase.as_str(),
            since_unix: unix_secs(since),
            state_reason: String::new(),
            consecutive_ok: 0,
            consecutive_fail: 0,
            last: None,
        };
        self.lock().insert((key.clone(), role), st);
    }

    pub(crate) fn with<R>(&self, key: &MasterKey, role: Role, f: impl FnOnce(&mut RoleStatus) -> R) -> Option<R> {
        self.lock().get_mut(&(key.clone(), role)).map(f)
    }

    pub(crate) fn retain(&self, mut keep: impl FnMut(&MasterKey, Role, Probe) -> bool) {
        self.lock().retain(|(k, r), s| keep(k, *r, s.probe));
    }
}
