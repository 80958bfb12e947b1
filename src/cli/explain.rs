//! `explain [--site S | --client IP]`: every published name, its records,
//! and why each master is in or out; with `--client`, the site a client
//! gets on the site-less names and why.

use clap::Args as ClapArgs;

use crate::control::proto::{ExplainArgs, Request};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Only this site's names; "@" for the site-less names at the zone apex.
    #[arg(long, conflicts_with = "client")]
    pub site: Option<String>,
    /// Show what a client at this address gets on the site-less names
    /// (`[[site]] networks`): its site, why, and the answers.
    #[arg(long, value_name = "IP")]
    pub client: Option<std::net::IpAddr>,
}

impl Args {
    pub fn request(&self) -> Request {
        Request::Explain(ExplainArgs { site: self.site.clone(), client: self.client })
    }
}
