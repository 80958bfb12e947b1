//! The command line of the `srvd` daemon. It lives here, beside srvctl's,
//! so that `srvctl generate man` can render srvd(8) from the same clap
//! definition the daemon parses.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Authoritative DNS for Puppet SRV records, with health-checked failover.
#[derive(Debug, Parser)]
#[command(
    name = "srvd",
    version,
    after_help = "Environment: SRVD_LOG sets the log level (default info, e.g. SRVD_LOG=debug). \
                  SIGHUP reloads the config, zone file and registry; SIGTERM/SIGINT stop. \
                  With NOTIFY_SOCKET set (systemd Type=notify), srvd sends READY=1 once it serves. \
                  See docs/configuration.md and docs/operations.md."
)]
pub struct SrvdArgs {
    /// Config file (TOML). Without it, srvd runs its embedded example
    /// (zone puppet.example.test. on 127.0.0.1:5353).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the config, zone file and registry, then exit (0 valid, 1 invalid).
    #[arg(long)]
    pub check_config: bool,
    /// Log format on stderr: `text` (one human-readable line per event,
    /// coloured only when stderr is a terminal) or `json` (one JSON object
    /// per line, for log shippers).
    #[arg(long, env = "SRVD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
}

/// How srvd writes its log lines (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `2025-01-01T00:00:00Z  INFO srvd::daemon: serving zone=...`
    Text,
    /// `{"timestamp":"...","level":"INFO","fields":{"message":"serving",...},"target":"srvd::daemon"}`
    Json,
}
