//! A master's own latency history, and the two deadlines derived from it
//! (docs/health.md, "Hang"). Pure: durations in, durations out.
//!
//! - `deadline`: how long one check may take before it counts as failed:
//!   `timeout`, or 4 × the master's usual answer time (p75 of its last 32
//!   passing checks) when that is longer, never more than 4 × `timeout`. A
//!   Puppet Server answers the status API in milliseconds, so this is
//!   `timeout` for it; a master that is always slow gets room instead of
//!   flapping.
//! - `confirm_after`: when a check has not answered by then, a confirming
//!   check on a fresh connection starts beside it, and another
//!   `confirm_after` later, up to `fall` in flight: 2 × the usual answer
//!   time, at least `timeout` / 8, at most `timeout` / 2. A hung master
//!   then fails `fall` times within deadline + (fall − 1) × confirm_after;
//!   a pause shorter than that (a GC pause) lets the last confirming check
//!   pass, and one pass ends the failures.

use std::time::Duration;

/// How many passing checks are remembered.
pub const SAMPLES: usize = 32;

/// The latencies of the last [`SAMPLES`] passing checks (microseconds).
#[derive(Debug, Clone, Default)]
pub struct Latency {
    samples: Vec<u32>,
    next: usize,
}

impl Latency {
    /// No samples yet: deadlines start from `health.timeout`.
    pub fn new() -> Latency {
        Latency::default()
    }

    /// Remembers the latency of a passing check.
    pub fn push(&mut self, d: Duration) {
        let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        if self.samples.len() < SAMPLES {
            self.samples.push(us);
        } else if let Some(s) = self.samples.get_mut(self.next) {
            *s = us;
        }
        self.next = (self.next + 1) % SAMPLES;
    }

    /// The usual latency: the 75th percentile of the remembered ones, so
    /// a few GC pauses do not count (`None`: none yet).
    pub fn usual(&self) -> Option<Duration> {
        if self.samples.is_empty() {
            return None;
        }
        let mut v = self.samples.clone();
        v.sort_unstable();
        // The rank ceil(0.75 n), 1-based.
        let rank = (v.len() * 3).div_ceil(4).max(1);
        v.get(rank - 1).map(|us| Duration::from_micros(u64::from(*us)))
    }

    /// How long a check may take before it counts as failed.
    pub fn deadline(&self, timeout: Duration) -> Duration {
        match self.usual() {
            None => timeout,
            Some(p) => timeout.max(p.saturating_mul(4).min(timeout.saturating_mul(4))),
        }
    }

    /// When a confirming check starts beside a check that has not answered.
    pub fn confirm_after(&self, timeout: Duration) -> Duration {
        let p = self.usual().unwrap_or(Duration::ZERO);
        p.saturating_mul(2).clamp(timeout / 8, timeout / 2)
    }
}
