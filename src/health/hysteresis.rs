//! The per-(master, role) state machine, pure: check results in, published
//! state and transitions out. No clock, no I/O, so it is tested with tables.
//!
//! ```text
//!            ok (first check)                       fall failures in a row
//!  Unchecked ───────────────> Up  <──────────────────────────────> Down
//!     │ └─ fall failures in a row ───────────────────────────────> Down
//!  Pending   ───────────────>      rise successes in a row
//!       └──── fail (first check) ─────────────────────────────────> Down
//! ```
//!
//! `Unchecked` is a master with no known state at start: it is published
//! (counts as up), one passing check settles it as up, and like an up master
//! it goes down only after `fall` failures in a row. `Pending` is a master
//! added at runtime: not published until a check passes; its first check
//! settles it either way, so `srvctl add-master --wait` gets an answer after
//! one check.

use crate::health::Health;

/// Where a (master, role) stands in the hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No state known since start: published as up; up after one pass,
    /// down after `fall` failures.
    Unchecked,
    /// Added at runtime: unpublished, first check decides.
    Pending,
    /// Settled up: published; down after `fall` failures in a row.
    Up,
    /// Settled down: withdrawn; up after `rise` successes in a row.
    Down,
}

impl Phase {
    /// How the policy sees this phase.
    pub fn health(self) -> Health {
        match self {
            Phase::Unchecked | Phase::Up => Health::Up,
            Phase::Pending => Health::Pending,
            Phase::Down => Health::Down,
        }
    }

    /// The phase to resume from a stored state (`None`: nothing known).
    pub fn from_health(h: Option<Health>) -> Phase {
        match h {
            None => Phase::Unchecked,
            Some(Health::Up) => Phase::Up,
            Some(Health::Down) => Phase::Down,
            Some(Health::Pending) => Phase::Pending,
        }
    }

    /// The phase's name in status output, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Unchecked => "unchecked",
            Phase::Pending => "pending",
            Phase::Up => "up",
            Phase::Down => "down",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of phase caused by one check result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The phase before the check.
    pub from: Phase,
    /// The phase after it.
    pub to: Phase,
}

impl Transition {
    /// Whether the published state changes (Unchecked -> Up does not).
    pub fn changes_health(&self) -> bool {
        self.from.health() != self.to.health()
    }
}

/// Consecutive-result counters around one [`Phase`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    phase: Phase,
    /// Consecutive successes (reset by a failure).
    oks: u32,
    /// Consecutive failures (reset by a success).
    fails: u32,
}

impl Hysteresis {
    /// Counters at zero in `phase` (a restored or fresh state).
    pub fn new(phase: Phase) -> Hysteresis {
        Hysteresis { phase, oks: 0, fails: 0 }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Passing checks in a row, for status output.
    pub fn consecutive_ok(&self) -> u32 {
        self.oks
    }

    /// Failed checks in a row, for status output.
    pub fn consecutive_fail(&self) -> u32 {
        self.fails
    }

    /// True when the next check should come after `fast_interval`: the
    /// master is down, unsettled, or has failed its last check.
    pub fn wants_fast(&self) -> bool {
        self.phase != Phase::Up || self.fails > 0
    }

    /// Feeds one check result; returns the transition it caused, if any.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> Option<Transition> {
        if ok {
            self.oks = self.oks.saturating_add(1);
            self.fails = 0;
        } else {
            self.fails = self.fails.saturating_add(1);
            self.oks = 0;
        }
        let to = match (self.phase, ok) {
            (Phase::Unchecked | Phase::Pending, true) => Phase::Up,
            // A published master with no known state gets the same benefit
            // as an up one: one lost packet at start does not take it out.
            (Phase::Unchecked, false) if self.fails >= fall.max(1) => Phase::Down,
            (Phase::Pending, false) => Phase::Down,
            (Phase::Up, false) if self.fails >= fall.max(1) => Phase::Down,
            (Phase::Down, true) if self.oks >= rise.max(1) => Phase::Up,
            (p, _) => p,
        };
        if to == self.phase {
            return None;
        }
        let t = Transition { from: self.phase, to };
        self.phase = to;
        Some(t)
    }
}
