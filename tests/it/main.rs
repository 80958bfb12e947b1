//! srvd's integration tests, one test binary (`cargo test --test it`): one
//! module per area, all sharing the harness in `common/` (a real srvd
//! in-process on port 0, a small DNS client, mock Puppet masters, the
//! Puppet agent's SRV code through `tests/puppet/`). Run one area with a
//! name filter: `cargo test --test it -- dns::`.
//!
//! One binary instead of one per file: the shared code and the link happen
//! once, and the tests of every area share the test threads. Tests that
//! must not overlap take a lock of their own (`static ... Mutex`).
//! `tests/tcp_limits.rs` stays a separate binary: it asserts on the memory
//! (RSS) of its whole process, which other tests running beside it would
//! change.

mod common;

mod ca_guard;
mod capacity;
mod client_sites;
mod config;
mod control;
mod control_crash;
mod control_limits;
mod dns;
mod drain_idle;
mod fast_path;
mod health_bench;
mod health_daemon;
mod health_failover;
mod health_logic;
mod hostile;
mod metrics;
mod metrics_listener;
mod ops_daemon;
mod packaging;
mod policy;
mod puppet_agent;
mod puppet_agent_run;
mod puppetserver;
mod scale;
mod state_files;
mod status_page;
mod transport_panics;
mod xfr;
