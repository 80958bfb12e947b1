//! The last known health states, kept in `state_dir/health.json` so a
//! restart resumes from them instead of publishing dead masters again.
//! Written atomically (temp file, fsync, rename) after every batch of changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::names;
use crate::policy::{Health, HealthStates};
use crate::registry::{MasterKey, Registry, Role};

pub const FILE_NAME: &str = "health.json";

#[derive(Debug, Serialize, Deserialize)]
struct File {
    version: u32,
    states: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    host: String,
    port: u16,
    role: Role,
    state: State,
    /// Unix seconds of the last change.
    since: u64,
}

/// [`Health`] as written in the file.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum State {
    Up,
    Down,
    Pending,
}

impl From<Health> for State {
    fn from(h: Health) -> State {
        match h {
            Health::Up => State::Up,
            Health::Down => State::Down,
            Health::Pending => State::Pending,
        }
    }
}

impl From<State> for Health {
    fn from(s: State) -> Health {
        match s {
            State::Up => Health::Up,
            State::Down => Health::Down,
            State::Pending => Health::Pending,
        }
    }
}

/// States read at start.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    pub path: Option<PathBuf>,
    pub states: HashMap<(MasterKey, Role), (Health, SystemTime)>,
}

impl Stored {
    /// Reads `dir/health.json`. A missing file is empty; an unreadable or
    /// corrupt one is logged and ignored (every master then counts as up
    /// until its first check, as on a first start).
    pub fn load(dir: &Path) -> Stored {
        let path = dir.join(FILE_NAME);
        let mut out = Stored { path: Some(path.clone()), states: HashMap::new() };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read stored health states; starting without them");
                return out;
            }
        };
        let file: File = match serde_json::from_str(&text) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "stored health states are corrupt; starting without them");
                return out;
            }
        };
        for e in file.states {
            let Ok(host) = names::parse_absolute(&e.host) else { continue };
            let since = UNIX_EPOCH + Duration::from_secs(e.since);
            out.states.insert((MasterKey { host, port: e.port }, e.role), (e.state.into(), since));
        }
        out
    }

    /// The states of the masters (and roles) that are in `registry`.
    pub fn states_for(&self, registry: &Registry) -> HealthStates {
        self.states
            .iter()
            .filter(|((k, r), _)| registry.get(k).is_some_and(|m| m.has_role(*r)))
            .map(|(k, (h, _))| (k.clone(), *h))
            .collect()
    }
}

/// Serialises states (with the time each last changed) for `health.json`.
pub fn encode(states: &HealthStates, since: impl Fn(&MasterKey, Role) -> Option<SystemTime>) -> Vec<u8> {
    let mut entries: Vec<Entry> = states
        .iter()
        .map(|((k, r), h)| Entry {
            host: crate::names::host_string(&k.host),
            port: k.port,
            role: *r,
            state: (*h).into(),
            since: since(k, *r).and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()).unwrap_or(0),
        })
        .collect();
    entries.sort_by(|a, b| (&a.host, a.port, a.role).cmp(&(&b.host, b.port, b.role)));
    let mut out = serde_json::to_vec_pretty(&File { version: 1, states: entries }).unwrap_or_default();
    out.push(b'\n');
    out
}
