//! The last known health states, kept in `state_dir/health.json` so a
//! restart resumes from them instead of publishing dead masters again.
//! Written atomically (temp file, fsync, rename) after every batch of changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::health::{Health, HealthStates};
use crate::input::names;
use crate::input::registry::{MasterKey, Registry, Role};

/// The file in `state_dir` that keeps the health states.
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
    state: Health,
    /// Unix seconds of the last change.
    since: u64,
}

/// States read at start.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// Where the states are written after each change; `None` keeps them in memory only.
    pub path: Option<PathBuf>,
    /// (master, role) -> (state, when it was entered), from the file's valid entries.
    pub states: HashMap<(MasterKey, Role), (Health, SystemTime)>,
    /// What was wrong with the file or some of its entries (each was
    /// logged with the file's path and ignored).
    pub problems: Vec<String>,
}

/// A file written in some later format, or hand-edited: read leniently,
/// entry by entry, so one bad entry costs only itself.
#[derive(Debug, Deserialize)]
struct LooseFile {
    version: serde_json::Value,
    states: Vec<serde_json::Value>,
}

impl Stored {
    /// Reads `dir/health.json`. A missing file is empty; an unreadable,
    /// truncated or corrupt one is logged (warn, with its path and the
    /// reason) and ignored (every master then counts as up until its first
    /// check, as on a first start); a bad entry is logged and skipped.
    /// Never fails, never panics: whatever the file holds.
    pub fn load(dir: &Path) -> Stored {
        let path = dir.join(FILE_NAME);
        let mut out = Stored { path: Some(path.clone()), states: HashMap::new(), problems: Vec::new() };
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
            Err(e) => {
                out.problem(&path, format!("cannot read: {e}"), "starting without stored health states");
                return out;
            }
        };
        let file: LooseFile = match serde_json::from_slice(&text) {
            Ok(f) => f,
            Err(e) if text.iter().all(u8::is_ascii_whitespace) => {
                out.problem(&path, format!("empty file ({e})"), "starting without stored health states");
                return out;
            }
            Err(e) => {
                out.problem(&path, format!("not a health state file: {e}"), "starting without stored health states");
                return out;
            }
        };
        if file.version.as_u64() != Some(1) {
            out.problem(&path, format!("unknown version {}", file.version), "starting without stored health states");
            return out;
        }
        let now = SystemTime::now();
        for (i, v) in file.states.into_iter().enumerate() {
            match parse_entry(v, now) {
                Ok((key, state)) => {
                    out.states.insert(key, state);
                }
                Err(reason) => out.problem(&path, format!("states[{i}]: {reason}"), "ignoring this entry"),
            }
        }
        out
    }

    fn problem(&mut self, path: &Path, reason: String, outcome: &str) {
        tracing::warn!(file = %path.display(), %reason, "stored health states: {reason}; {outcome}");
        self.problems.push(reason);
    }

    /// The states of the masters (and roles) that are in `registry`.
    pub fn states_for(&self, registry: &Registry) -> HealthStates {
        let index = registry.index();
        self.states.iter().filter(|((k, r), _)| index.get(k).is_some_and(|m| m.has_role(*r))).map(|(k, (h, _))| (k.clone(), *h)).collect()
    }
}

/// Serialises states (with the time each last changed) for `health.json`.
pub fn encode(states: &HealthStates, since: impl Fn(&MasterKey, Role) -> Option<SystemTime>) -> Vec<u8> {
    let mut entries: Vec<Entry> = states
        .iter()
        .map(|((k, r), h)| Entry {
            host: crate::input::names::host_string(&k.host),
            port: k.port,
            role: *r,
            state: *h,
            since: since(k, *r).and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()).unwrap_or(0),
        })
        .collect();
    entries.sort_by(|a, b| (&a.host, a.port, a.role).cmp(&(&b.host, b.port, b.role)));
    let mut out = serde_json::to_vec_pretty(&File { version: 1, states: entries }).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Why one entry of the file was skipped.
#[derive(Debug, thiserror::Error)]
enum EntryError {
    #[error("{0}")]
    Shape(#[from] serde_json::Error),
    #[error("host {host:?}: {reason}")]
    Host { host: String, reason: String },
    #[error("since {0} is not a past unix time")]
    Since(u64),
}

type StoredState = ((MasterKey, Role), (Health, SystemTime));

/// One entry of the file; `since` must be a unix time no later than `now`
/// (one up to [`MAX_CLOCK_SKEW`] later is taken as `now`: clocks are stepped).
fn parse_entry(v: serde_json::Value, now: SystemTime) -> Result<StoredState, EntryError> {
    let e: Entry = serde_json::from_value(v)?;
    let host = names::parse_absolute(&e.host).map_err(|r| EntryError::Host { host: e.host.clone(), reason: r.to_string() })?;
    let latest = now.checked_add(MAX_CLOCK_SKEW).unwrap_or(now);
    let since = UNIX_EPOCH.checked_add(Duration::from_secs(e.since)).filter(|t| *t <= latest).ok_or(EntryError::Since(e.since))?;
    Ok(((MasterKey { host, port: e.port }, e.role), (e.state, since.min(now))))
}

/// How far in the future a `since` may lie (a clock stepped back since it was written).
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(366 * 86400);

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &[u8]) -> Stored {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE_NAME), text).unwrap();
        Stored::load(d.path())
    }

    const GOOD: &str = r#"{"host": "pm1.example.com", "port": 8140, "role": "puppet", "state": "down", "since": 1700000000}"#;

    #[test]
    fn garbage_files_are_ignored() {
        for text in
            [&b""[..], b"   \n", b"{", b"{\"version\": 1, \"states\": [", b"null", b"[]", b"\xff\xfe", b"{\"version\": 2, \"states\": []}"]
        {
            let s = load(text);
            assert!(s.states.is_empty());
            assert_eq!(s.problems.len(), 1, "{text:?}: {:?}", s.problems);
        }
        // A directory where the file should be.
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join(FILE_NAME)).unwrap();
        assert!(Stored::load(d.path()).problems[0].contains("cannot read"));
        // Missing: no problem.
        assert!(Stored::load(d.path().join("nope").as_path()).problems.is_empty());
    }

    #[test]
    fn bad_entries_are_skipped_one_by_one() {
        let bad_since = ["9223372036854775808", "18446744073709551615", "-1", "1.5", "\"x\"", "null", "99999999999999"];
        let mut entries = vec![GOOD.to_string()];
        for b in bad_since {
            entries.push(format!(r#"{{"host": "pm2.example.com", "port": 8140, "role": "puppet", "state": "down", "since": {b}}}"#));
        }
        entries.push(r#"{"host": "bad host!", "port": 8140, "role": "puppet", "state": "down", "since": 1}"#.into());
        entries.push(r#"{"host": "pm3.example.com", "port": 70000, "role": "puppet", "state": "down", "since": 1}"#.into());
        entries.push(r#"{"host": "pm3.example.com", "port": 8140, "role": "dns", "state": "down", "since": 1}"#.into());
        entries.push("42".into());
        let text = format!(r#"{{"version": 1, "states": [{}]}}"#, entries.join(","));
        let s = load(text.as_bytes());
        assert_eq!(s.problems.len(), entries.len() - 1, "{:?}", s.problems);
        assert_eq!(s.states.len(), 1);
        let key = (MasterKey { host: names::parse_absolute("pm1.example.com").unwrap(), port: 8140 }, Role::Puppet);
        assert_eq!(s.states[&key], (Health::Down, UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
        assert!(s.problems[0].starts_with("states[1]:"), "{:?}", s.problems);
    }

    #[test]
    fn since_slightly_ahead_is_now() {
        let ahead = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
        let text = format!(r#"{{"version": 1, "states": [{}]}}"#, GOOD.replace("1700000000", &ahead.to_string()));
        let s = load(text.as_bytes());
        let (_, since) = s.states.values().next().unwrap();
        assert!(*since <= SystemTime::now());
    }
}
