//! srvd: an authoritative DNS server that publishes health-checked, per-site
//! SRV records for a Puppet estate.
//!
//! ```text
//!  config.toml ─┐                      ┌─ health (checks every master)
//!  zone file ───┼─> publish::Inputs ───┤
//!  masters.toml ┘        │             └─ control (srvctl edits registry)
//!                        v
//!            policy::compute (pure)  ->  zone::Snapshot (immutable, Arc)
//!                                              │ ArcSwap
//!                                              v
//!              server (UDP worker threads, TCP via hickory-server) -> fast / dns
//!                              │                     └─ AXFR to secondaries (xfr, tsig)
//!                              └─ serial watch -> notify (NOTIFY to secondaries)
//! ```
//!
//! `metrics` reads counters kept along the way (DNS answers, checks,
//! reloads) and serves them to Prometheus at `server.metrics`.
//!
//! Every change of an input (registry edit, health transition, reload)
//! recomputes the policy, raises the SOA serial if the data changed and swaps
//! in a new snapshot; queries never wait for a lock.

#![warn(missing_docs, unreachable_pub)]

pub mod cli;
pub mod control;
pub mod daemon;
pub mod dns;
pub mod health;
pub mod input;
pub mod metrics;
pub mod zone;
