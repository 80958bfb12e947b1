//! Durable file replacement: write a temp file beside the target, fsync it,
//! rename it over the target, fsync the directory. A crash at any point
//! leaves either the old or the new file, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Test hook: writes under a directory take this much longer (see
/// [`set_write_delay`]).
static WRITE_DELAY: Mutex<Option<(PathBuf, Duration)>> = Mutex::new(None);

/// Test hook, not for production use: every [`write_atomic`] of a file under
/// `dir` sleeps `delay` before its fsync, standing in for a slow disk
/// (`Duration::ZERO` removes the delay). Lets tests check that a slow disk
/// delays persistence, never answers.
#[doc(hidden)]
pub fn set_write_delay(dir: &Path, delay: Duration) {
    let mut d = WRITE_DELAY.lock().unwrap_or_else(|e| e.into_inner());
    *d = (!delay.is_zero()).then(|| (dir.to_path_buf(), delay));
}

fn injected_delay(path: &Path) -> Option<Duration> {
    let d = WRITE_DELAY.lock().unwrap_or_else(|e| e.into_inner());
    d.as_ref().filter(|(dir, _)| path.starts_with(dir)).map(|(_, t)| *t)
}

/// Replaces `path` with `data` durably. Blocking (fsync): never call it on
/// an async task; use `spawn_blocking` or a thread.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| io::Error::other("path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp.{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        // Keep the mode of the file being replaced (operators may restrict it).
        if let Ok(meta) = fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(data)?;
        if let Some(d) = injected_delay(path) {
            std::thread::sleep(d);
        }
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes temp files [`write_atomic`] left beside `path` when the process
/// was killed between creating and renaming them. Returns how many.
pub fn remove_stale_temps(path: &Path) -> usize {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return 0 };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!(".{}.tmp.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for e in entries.flatten() {
        let fname = e.file_name();
        let f = fname.to_string_lossy();
        // Only our own pattern, and never a live process's file.
        if let Some(pid) = f.strip_prefix(&prefix) {
            let alive = pid.parse::<u32>().is_ok_and(|p| p != std::process::id() && Path::new(&format!("/proc/{p}")).exists());
            if !alive && fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_and_stale_temp_cleanup() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("masters.toml");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        // A temp file of a dead process (pid 0 never names a live one here) and an unrelated file.
        fs::write(d.path().join(".masters.toml.tmp.999999999"), b"half").unwrap();
        fs::write(d.path().join(".other.tmp.1"), b"x").unwrap();
        assert_eq!(remove_stale_temps(&p), 1);
        assert!(d.path().join(".other.tmp.1").exists());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 2);
    }
}
