//! The published health of each (master, role): what the checker
//! concludes and the zone layer's policy reads.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::input::registry::{MasterKey, Role};

/// The health of one (master, role) as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Passing checks (or not checked yet since srvd started: benefit of the doubt).
    Up,
    /// Failed `fall` checks in a row.
    Down,
    /// Added at runtime and not yet checked: not published until it passes.
    Pending,
}

/// Health per (master, role). A missing entry counts as [`Health::Up`]: at
/// start, masters with no known state are published until their first check.
pub type HealthStates = HashMap<(MasterKey, Role), Health>;

/// The health of (master, role) in `states` (Up when unknown).
pub fn health_of(states: &HealthStates, key: &MasterKey, role: Role) -> Health {
    states.get(&(key.clone(), role)).copied().unwrap_or(Health::Up)
}

impl Health {
    /// The lowercase name used in logs, srvctl, metrics and health.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
            Health::Pending => "pending",
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
