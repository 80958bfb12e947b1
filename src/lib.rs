//! srvd: an authoritative DNS server that publishes health-checked, per-site
//! SRV records for a Puppet estate.
//!
//! The layers, lowest first; each is a folder, and a module only uses its
//! own layer and those below it (checked by a test in `src/layers.rs`):
//!
//! ```text
//!  input/    config.toml, masters.toml, zone file, TLS material -> typed values (InputError)
//!    ^
//!  health/   checks every master; Hysteresis -> verdicts -> health::Target
//!    ^
//!  zone/     policy::compute (pure) -> zone::Snapshot (data, serial)  <- publish::Publisher
//!    ^                                        | sinks (every publication)
//!  dns/      served::Served (snapshot + pre-encoded answers + transfer ACL)
//!            server/ (UDP workers, TCP loop) -> reply/encode, fast path; xfr, tsig, notify
//!    ^
//!  control/  srvctl's socket (edits go through the Publisher)   metrics/  Prometheus
//!  cli/      srvctl                                             daemon    the wiring
//! ```
//!
//! Every change of an input (registry edit, health verdict, reload) goes
//! through the [`zone::publish::Publisher`], which recomputes the policy,
//! raises the SOA serial if the records changed (stored before it is
//! served) and hands the new snapshot to the DNS layer; queries never wait
//! for a lock. See docs/architecture.md for where to change what.

#![warn(missing_docs, unreachable_pub)]

pub mod cli;
pub mod control;
pub mod daemon;
pub mod dns;
pub mod health;
pub mod input;
pub mod metrics;
pub mod zone;

#[cfg(test)]
mod layers;
