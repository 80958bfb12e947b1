//! `explain [--site S]`: every published name, its records, and why each master is in or out.

use clap::Args as ClapArgs;

use crate::control::proto::{ExplainArgs, Request};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Only this site's names; "@" for the site-less names at the zone apex.
    #[arg(long)]
    pub site: Option<String>,
}

impl Args {
    pub fn request(&self) -> Request {
        Request::Explain(ExplainArgs { site: self.site.clone() })
    }
}
