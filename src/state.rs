//! Persistent daemon state in `server.state_dir`: the last SOA serial, so it
//! never goes back across restarts.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::fsutil::write_atomic;

pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed) the state directory.
    pub fn open(dir: &Path) -> std::io::Result<StateDir> {
        std::fs::create_dir_all(dir)?;
        Ok(StateDir { dir: dir.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn serial_path(&self) -> PathBuf {
        self.dir.join("serial")
    }

    /// The last serial written, if any.
    pub fn last_serial(&self) -> std::io::Result<Option<u32>> {
        match std::fs::read_to_string(self.serial_path()) {
            Ok(s) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| std::io::Error::other(format!("{}: not a serial number", self.serial_path().display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn store_serial(&self, serial: u32) -> std::io::Result<()> {
        write_atomic(&self.serial_path(), format!("{serial}\n").as_bytes())
    }
}

/// The serial after `last`: max(last + 1, unix time), in RFC 1982 terms
/// always "greater" than `last`.
pub fn next_serial(last: Option<u32>, now: SystemTime) -> u32 {
    let unix = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as u32;
    match last {
        None => unix.max(1),
        Some(l) => {
            let bumped = l.wrapping_add(1);
            // Take the clock only if it is ahead of last in serial arithmetic.
            let ahead = unix.wrapping_sub(l);
            if ahead > 0 && ahead < (1 << 31) { unix } else { bumped }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn serial_rises() {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(next_serial(None, t), 1_800_000_000);
        assert_eq!(next_serial(Some(5), t), 1_800_000_000);
        assert_eq!(next_serial(Some(1_800_000_000), t), 1_800_000_001);
        assert_eq!(next_serial(Some(1_900_000_000), t), 1_900_000_001);
        assert_eq!(next_serial(Some(u32::MAX), t), 1_800_000_000);
    }
}
