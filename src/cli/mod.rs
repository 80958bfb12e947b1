//! srvctl: administer a running srvd over its control socket.
//!
//! Each command noun has a file that turns its arguments into a
//! [`Request`]; `output` renders every [`Response`](crate::control::proto::Response) (aligned tables, or
//! `--json`) and picks the exit code. `src/bin/srvctl.rs` only calls [`main`].

mod explain;
pub mod generate;
mod master;
mod output;
mod reload;
pub mod srvd_args;
mod status;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::control::client::{self, DEFAULT_SOCKET};
use crate::control::proto::Request;

/// Exit codes (DESIGN.md §5).
pub mod exit {
    /// Done.
    pub const DONE: u8 = 0;
    /// Refused (or failed) by the daemon; the message says why. Also an
    /// `add-master --wait` whose master did not come up.
    pub const REFUSED: u8 = 1;
    /// Bad command line.
    pub const USAGE: u8 = 2;
    /// The daemon could not be reached or did not answer.
    pub const UNREACHABLE: u8 = 3;
}

/// Administer a running srvd: add, remove, drain and weigh Puppet masters,
/// show their health and why each is (not) in the SRV answers.
#[derive(Debug, Parser)]
#[command(name = "srvctl", version, after_help = "Exit codes: 0 done, 1 refused, 2 usage, 3 srvd unreachable. See docs/srvctl.md.")]
pub struct Cli {
    /// srvd's control socket.
    #[arg(long, global = true, env = "SRVD_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// Print srvd's answer as JSON (one object; schema in docs/srvctl.md).
    #[arg(long, global = true)]
    pub json: bool,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// srvctl's commands; each becomes one [`Request`].
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add a master; it is published after its first successful health check.
    AddMaster(master::AddArgs),
    /// Remove a master from the registry and the answers.
    RemoveMaster(master::HostArg),
    /// Take a master out of the answers; it is still checked. With
    /// --wait-idle, return once it is safe to stop.
    Drain(master::DrainCmd),
    /// Put a drained master back into the answers.
    Undrain(master::HostArg),
    /// Set a master's SRV weight (0..65535).
    SetWeight(master::WeightArgs),
    /// List the registered masters.
    List,
    /// Health of every master and role, drain state, zone serial.
    Status,
    /// Every published SRV name, its records in order, and why each master is in or out.
    Explain(explain::Args),
    /// Re-read config, zone file and registry (what SIGHUP does).
    Reload(reload::Args),
    /// Shell completions and man pages (for packagers; `make install` runs it).
    #[command(subcommand, hide = true)]
    Generate(generate::Generate),
}

impl Command {
    /// The request sent to srvd; None for `generate`, which srvd is not asked about.
    pub fn request(&self) -> Option<Request> {
        Some(match self {
            Command::AddMaster(a) => a.request(),
            Command::RemoveMaster(h) => master::remove(h),
            Command::Drain(d) => d.request(),
            Command::Undrain(h) => master::undrain(h),
            Command::SetWeight(w) => w.request(),
            Command::List => Request::List,
            Command::Status => status::request(),
            Command::Explain(a) => a.request(),
            Command::Reload(a) => a.request(),
            Command::Generate(_) => return None,
        })
    }
}

fn usage(msg: &str) -> u8 {
    let _ = writeln!(std::io::stderr(), "srvctl: {msg}");
    exit::USAGE
}

/// Parses `args` (program name first), runs the command, prints, and
/// returns the exit code.
pub fn main(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { exit::USAGE } else { exit::DONE };
        }
    };
    if let Command::Generate(g) = &cli.command {
        return g.run();
    }
    let timeout = match std::env::var("SRVCTL_TIMEOUT") {
        Ok(v) if !v.trim().is_empty() => match crate::input::names::parse_duration(v.trim()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => return usage("SRVCTL_TIMEOUT: must be more than 0s"),
            Err(e) => return usage(&format!("SRVCTL_TIMEOUT={v:?}: {e} (a duration like \"30s\" or \"2m\")")),
        },
        _ => client::REPLY_TIMEOUT,
    };
    let Some(req) = cli.command.request() else {
        return usage("nothing to ask srvd");
    };
    let result = client::request_within(&cli.socket, &req, timeout);
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let (code, out, err) = output::render(&req, &result, cli.json);
    let _ = stdout.lock().write_all(out.as_bytes());
    let _ = stderr.lock().write_all(err.as_bytes());
    code
}
