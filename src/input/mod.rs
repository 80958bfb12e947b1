//! The inputs layer: everything srvd reads from files, validated once.
//! The config (`config`), the masters registry (`registry`, edited in
//! place by `regedit`), the static zone file (`zonefile`), DNS names and
//! durations (`names`), CIDR networks (`network`), the health checker's TLS material (`tls`) and
//! atomic file writes (`fsutil`). Nothing here imports another layer.

pub mod config;
pub mod error;
pub mod fsutil;
pub mod names;
pub mod network;
pub mod regedit;
pub mod registry;
pub mod tls;
pub mod zonefile;
