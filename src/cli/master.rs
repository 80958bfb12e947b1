//! Commands on one master: add-master, remove-master, drain, undrain, set-weight.

use clap::Args;

use crate::control::proto::{AddMaster, DrainArgs, Request, SetWeight, Target};

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Host name agents connect to (must be in the master's certificate); HOST or HOST:PORT.
    pub host: String,
    /// The site ([[site]] name in srvd's config).
    #[arg(long)]
    pub site: String,
    /// Puppet Server port [default: 8140].
    #[arg(long, allow_negative_numbers = true)]
    pub port: Option<i64>,
    /// Roles, comma separated: puppet, ca, report, fileserver [default: puppet].
    #[arg(long, value_delimiter = ',')]
    pub roles: Option<Vec<String>>,
    /// SRV weight inside its priority tier, 0..65535 [default: 10].
    #[arg(long, allow_negative_numbers = true)]
    pub weight: Option<i64>,
    /// An IP address of the master (repeatable); required when HOST is inside srvd's zone.
    #[arg(long = "address", value_name = "IP")]
    pub addresses: Vec<String>,
    /// Health check: https (Puppet status API) or tcp (connect only) [default: https].
    #[arg(long)]
    pub check: Option<String>,
    /// Wait until the first health check has a result: exit 0 once the
    /// master is published, 1 if the check failed or timed out.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, like "30s" or "2m".
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub timeout: std::time::Duration,
}

fn parse_timeout(s: &str) -> Result<std::time::Duration, crate::input::names::ParseError> {
    crate::input::names::parse_duration(s)
}

impl AddArgs {
    pub fn request(&self) -> Request {
        Request::AddMaster(AddMaster {
            host: self.host.clone(),
            site: self.site.clone(),
            port: self.port,
            roles: self.roles.clone(),
            weight: self.weight,
            addresses: self.addresses.clone(),
            check: self.check.clone(),
            wait: self.wait,
            wait_timeout_ms: self.wait.then_some(self.timeout.as_millis() as u64),
        })
    }
}

#[derive(Debug, Args)]
pub struct HostArg {
    /// The master: HOST, or HOST:PORT when HOST runs several masters.
    pub host: String,
}

#[derive(Debug, Args)]
pub struct WeightArgs {
    /// The master: HOST, or HOST:PORT when HOST runs several masters.
    pub host: String,
    /// The new SRV weight, 0..65535.
    #[arg(allow_negative_numbers = true)]
    pub weight: i64,
}

impl WeightArgs {
    pub fn request(&self) -> Request {
        Request::SetWeight(SetWeight { host: self.host.clone(), weight: self.weight })
    }
}

pub(super) fn remove(h: &HostArg) -> Request {
    Request::RemoveMaster(Target { host: h.host.clone() })
}

pub(super) fn undrain(h: &HostArg) -> Request {
    Request::Undrain(Target { host: h.host.clone() })
}

#[derive(Debug, Args)]
pub struct DrainCmd {
    /// The master: HOST, or HOST:PORT when HOST runs several masters.
    pub host: String,
    /// Return only once the master has been out of every answer for a full
    /// TTL and reports no borrowed JRuby (no agent run in progress): exit 0
    /// then, 1 on timeout (saying what is still pending).
    #[arg(long)]
    pub wait_idle: bool,
    /// How long --wait-idle waits, like "10m" or "90s".
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_timeout, requires = "wait_idle")]
    pub timeout: std::time::Duration,
}

impl DrainCmd {
    pub fn request(&self) -> Request {
        Request::Drain(DrainArgs {
            host: self.host.clone(),
            wait_idle: self.wait_idle,
            wait_timeout_ms: self.wait_idle.then_some(u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)),
        })
    }
}
