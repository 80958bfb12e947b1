//! Persistent daemon state in `server.state_dir`: the last SOA serial, so it
//! never goes back across restarts.
//!
//! The serial is written to two files, `serial` and `serial.bak` (each
//! atomically: temp file, fsync, rename). At start the greater readable value
//! (RFC 1982) wins, so one corrupt, truncated or emptied file does not lose
//! the last serial served; a problem with either file is reported with its
//! path and reason. Only when neither is readable does srvd fall back to the
//! clock (the serial is then the unix time, which is past the last served
//! serial unless that one ran ahead of the clock). See docs/configuration.md.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::input::fsutil::write_atomic;

/// The file names in `state_dir`.
pub const SERIAL_FILE: &str = "serial";
/// The second copy of the serial, so one damaged file does not lose it.
pub const SERIAL_COPY_FILE: &str = "serial.bak";

/// The state directory (`server.state_dir`) and the serial files in it.
pub struct StateDir {
    dir: PathBuf,
}

/// A serial could not be stored; names the file and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("cannot store the SOA serial {serial} in {}: {source}", path.display())]
pub struct StoreError {
    /// The serial that could not be stored.
    pub serial: u32,
    /// The file it was being written to.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

/// Why a serial file was not used at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct SerialProblem {
    /// The serial file at fault.
    pub path: PathBuf,
    /// Why it was not used (unreadable, empty, not a number).
    pub reason: String,
}

/// What the state directory says about the last serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedSerial {
    /// The greatest readable serial (RFC 1982); `None` on a first start or
    /// when no file could be read.
    pub last: Option<u32>,
    /// Files that exist but could not be used.
    pub problems: Vec<SerialProblem>,
}

impl StateDir {
    /// The state directory, created if needed. A directory that cannot be
    /// created is reported (error log) but not fatal: srvd serves anyway and
    /// every later attempt to store a serial reports the failure.
    pub fn new(dir: &Path) -> StateDir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::error!(dir = %dir.display(), error = %e, "cannot create state_dir; the SOA serial and health states cannot be stored");
        }
        let s = StateDir { dir: dir.to_path_buf() };
        // Temp files left by a write interrupted by kill -9.
        for p in [s.serial_path(), s.copy_path()] {
            let n = crate::input::fsutil::remove_stale_temps(&p);
            if n > 0 {
                tracing::info!(file = %p.display(), removed = n, "removed temp files left by an interrupted write");
            }
        }
        s
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Path of the main serial file ([`SERIAL_FILE`]).
    pub fn serial_path(&self) -> PathBuf {
        self.dir.join(SERIAL_FILE)
    }

    /// Path of the serial's copy ([`SERIAL_COPY_FILE`]).
    pub fn copy_path(&self) -> PathBuf {
        self.dir.join(SERIAL_COPY_FILE)
    }

    /// Reads both serial files. Never fails: problems are returned (and
    /// logged by [`StateDir::load_serial`]).
    pub fn read_serial(&self) -> LoadedSerial {
        let mut out = LoadedSerial { last: None, problems: Vec::new() };
        for path in [self.serial_path(), self.copy_path()] {
            match read_one(&path) {
                Ok(Some(v)) => {
                    out.last = Some(match out.last {
                        Some(l) if !serial_gt(v, l) => l,
                        _ => v,
                    })
                }
                // Missing: a first start, or only `serial` (written by an older srvd).
                Ok(None) => {}
                Err(e) => out.problems.push(SerialProblem { path, reason: e.to_string() }),
            }
        }
        out
    }

    /// Like [`StateDir::read_serial`], logging every problem with its path
    /// and reason (warn; error when no serial could be read at all).
    pub fn load_serial(&self) -> LoadedSerial {
        let loaded = self.read_serial();
        for p in &loaded.problems {
            if loaded.last.is_some() {
                tracing::warn!(file = %p.path.display(), reason = %p.reason, "ignoring an unusable serial file; the other copy is used");
            } else {
                tracing::error!(
                    file = %p.path.display(),
                    reason = %p.reason,
                    "ignoring an unusable serial file; no copy is readable, so the new serial is taken from the clock (unix time)"
                );
            }
        }
        loaded
    }

    /// Writes `serial` to both files. Only when both are written is the
    /// serial stored: a serial is never served before that.
    pub fn store_serial(&self, serial: u32) -> Result<(), StoreError> {
        let data = format!("{serial}\n");
        for path in [self.serial_path(), self.copy_path()] {
            write_atomic(&path, data.as_bytes()).map_err(|source| StoreError { serial, path, source })?;
        }
        Ok(())
    }
}

/// Why a serial file that exists cannot be used.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("cannot read: {0}")]
    Io(#[from] io::Error),
    #[error("empty file (truncated?)")]
    Empty,
    #[error("not a serial number (0..=4294967295): {0:?}")]
    NotANumber(String),
}

/// One serial file: `Ok(None)` when it does not exist.
fn read_one(path: &Path) -> Result<Option<u32>, ReadError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let text = String::from_utf8_lossy(&bytes);
    let t = text.trim();
    if t.is_empty() {
        return Err(ReadError::Empty);
    }
    t.parse::<u32>().map(Some).map_err(|_| ReadError::NotANumber(t.chars().take(40).collect()))
}

/// RFC 1982 serial arithmetic: whether `a` is greater than `b`. Values
/// exactly 2^31 apart are not comparable (neither is greater).
pub fn serial_gt(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < (1 << 31)
}

/// The serial after `last`: max(last + 1, unix time), in RFC 1982 terms
/// always "greater" than `last`, whatever the clock says (a clock stepped
/// back, or before 1970, gives last + 1).
pub fn next_serial(last: Option<u32>, now: SystemTime) -> u32 {
    // Truncation to 32 bits is the serial arithmetic's own wrap (year 2106).
    let unix = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as u32;
    match last {
        None => unix.max(1),
        Some(l) => {
            // Take the clock only if it is ahead of last in serial arithmetic.
            if serial_gt(unix, l) { unix } else { l.wrapping_add(1) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn serial_rises() {
        let t = at(1_800_000_000);
        assert_eq!(next_serial(None, t), 1_800_000_000);
        assert_eq!(next_serial(Some(5), t), 1_800_000_000);
        assert_eq!(next_serial(Some(1_800_000_000), t), 1_800_000_001);
        assert_eq!(next_serial(Some(1_900_000_000), t), 1_900_000_001);
        assert_eq!(next_serial(Some(u32::MAX), t), 1_800_000_000);
    }

    #[test]
    fn clock_stepped_back_never_lowers_the_serial() {
        // Served 1796292765 at that time; the clock is then set back 17 s, an hour, a year, to 1970.
        let last = 1_796_292_765;
        for back in [at(1_796_292_748), at(1_796_289_165), at(1_764_756_765), UNIX_EPOCH, UNIX_EPOCH - Duration::from_secs(5)] {
            let s = next_serial(Some(last), back);
            assert_eq!(s, last + 1);
            assert!(serial_gt(s, last));
        }
        // A sequence of changes with the clock going back and forth only ever rises.
        let mut s = Some(1_796_292_765);
        for t in [1_796_292_770, 1_796_292_700, 1_796_292_771, 1_000, 1_796_292_800, 1_796_292_799] {
            let n = next_serial(s, at(t));
            assert!(serial_gt(n, s.unwrap()), "{n} after {s:?} at {t}");
            s = Some(n);
        }
    }

    #[test]
    fn wraps_past_u32_max() {
        // Near the wrap, last + 1 wraps to 0 and is still "greater" (RFC 1982).
        let t = at(1_800_000_000);
        // (The clock just behind last: last + 1 is taken.)
        assert_eq!(next_serial(Some(u32::MAX - 1), at(4_000_000_000)), u32::MAX);
        assert_eq!(next_serial(Some(u32::MAX), at(4_000_000_000)), 0);
        // The clock a little "after" the wrap is greater than last (RFC 1982) and taken.
        assert_eq!(next_serial(Some(u32::MAX - 1), at(5)), 5);
        assert!(serial_gt(0, u32::MAX));
        // The clock far "ahead" in serial terms (more than 2^31) is ignored.
        assert_eq!(next_serial(Some(3_000_000_000), t), 3_000_000_001);
        // 2^31 - 1 ahead is taken.
        let last = 1_800_000_000u32.wrapping_sub((1 << 31) - 1);
        assert_eq!(next_serial(Some(last), t), 1_800_000_000);
        // Exhaustive-ish: for every last around the wrap and every clock, the result is greater.
        for l in (u32::MAX - 3..=u32::MAX).chain(0..3).chain([1 << 31, (1 << 31) - 1, (1 << 31) + 1]) {
            for secs in [0u64, 1, 1 << 31, (1 << 31) + 1, u64::from(u32::MAX), u64::from(u32::MAX) + 7, 1_800_000_000] {
                let n = next_serial(Some(l), at(secs));
                assert!(serial_gt(n, l), "next_serial({l}, {secs}) = {n}");
            }
        }
    }

    #[test]
    fn two_copies_and_problems() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::new(d.path());
        assert_eq!(s.read_serial(), LoadedSerial { last: None, problems: vec![] });
        s.store_serial(1_700_000_000).unwrap();
        assert_eq!(s.read_serial().last, Some(1_700_000_000));
        // Either copy corrupt: the other one is used, the corrupt one reported with its path.
        for bad in [s.serial_path(), s.copy_path()] {
            for junk in [&b""[..], b"17000", b"garbage", b"99999999999", b"\xff\xfe", b"-3", b"1.5"] {
                s.store_serial(1_700_000_000).unwrap();
                std::fs::write(&bad, junk).unwrap();
                let l = s.read_serial();
                if junk == b"17000" {
                    // A truncated but valid number: the greater copy wins.
                    assert_eq!(l.last, Some(1_700_000_000));
                    assert!(l.problems.is_empty());
                    continue;
                }
                assert_eq!(l.last, Some(1_700_000_000), "{junk:?} in {}", bad.display());
                assert_eq!(l.problems.len(), 1);
                assert_eq!(l.problems[0].path, bad);
            }
        }
        // Both unusable: no serial, two problems.
        std::fs::write(s.serial_path(), b"").unwrap();
        std::fs::write(s.copy_path(), b"x").unwrap();
        let l = s.load_serial();
        assert_eq!(l.last, None);
        assert_eq!(l.problems.len(), 2);
        assert!(l.problems[0].reason.contains("empty"), "{:?}", l.problems);
        // The copies differ (a crash between the two writes): the greater wins, also across the wrap.
        std::fs::write(s.serial_path(), b"5\n").unwrap();
        std::fs::write(s.copy_path(), b"4294967290\n").unwrap();
        assert_eq!(s.read_serial().last, Some(5));
        // Only the primary (written by an older srvd) is fine.
        std::fs::remove_file(s.copy_path()).unwrap();
        assert_eq!(s.read_serial(), LoadedSerial { last: Some(5), problems: vec![] });
    }

    #[test]
    fn store_failure_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::new(d.path());
        // A directory where the serial file should be: rename over it fails, even for root.
        std::fs::create_dir(s.serial_path()).unwrap();
        let e = s.store_serial(42).unwrap_err();
        assert_eq!(e.path, s.serial_path());
        let msg = e.to_string();
        assert!(msg.contains("serial 42") && msg.contains(&s.serial_path().display().to_string()), "{msg}");
        // A state_dir that cannot be created is not fatal.
        let file = d.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let s2 = StateDir::new(&file.join("state"));
        assert!(s2.store_serial(1).is_err());
        assert_eq!(s2.read_serial().last, None);
    }
}
