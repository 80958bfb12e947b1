//! `reload`: re-read config, zone file and registry (like SIGHUP).

use clap::Args as ClapArgs;

use crate::control::proto::{ReloadArgs, Request};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Apply the reload even if it removes every master, or more than half
    /// of them (an empty or missing registry file is refused otherwise).
    #[arg(long)]
    pub force: bool,
}

impl Args {
    pub fn request(&self) -> Request {
        Request::Reload(ReloadArgs { force: self.force })
    }
}
