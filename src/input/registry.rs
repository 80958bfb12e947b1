//! The masters registry: which Puppet masters exist, where, with which roles.
//! A TOML file of `[[master]]` tables, edited by srvctl (and by hand followed
//! by `srvctl reload`). Parsed strictly; errors name file, key and reason.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use hickory_proto::rr::Name;
use serde::{Deserialize, Serialize};

use crate::input::config::{Config, toml_error};
use crate::input::error::InputError;
use crate::input::names;

/// A service a master offers; each maps to one SRV name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves catalogs to agents (`_x-puppet`).
    Puppet,
    /// Signs agent certificates (`_x-puppet-ca`); only one CA is published at a time.
    Ca,
    /// Receives agent reports (`_x-puppet-report`).
    Report,
    /// Serves files to agents (`_x-puppet-fileserver`).
    Fileserver,
}

impl Role {
    /// Every role, in the order SRV names and status tables list them.
    pub const ALL: [Role; 4] = [Role::Puppet, Role::Ca, Role::Report, Role::Fileserver];

    /// The SRV service label, e.g. `_x-puppet-ca`.
    pub fn service(self) -> &'static str {
        match self {
            Role::Puppet => "_x-puppet",
            Role::Ca => "_x-puppet-ca",
            Role::Report => "_x-puppet-report",
            Role::Fileserver => "_x-puppet-fileserver",
        }
    }

    /// The role's name as written in the registry and on srvctl's command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Puppet => "puppet",
            Role::Ca => "ca",
            Role::Report => "report",
            Role::Fileserver => "fileserver",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = crate::input::names::ParseError;
    fn from_str(s: &str) -> Result<Role, Self::Err> {
        match s {
            "puppet" => Ok(Role::Puppet),
            "ca" => Ok(Role::Ca),
            "report" => Ok(Role::Report),
            "fileserver" => Ok(Role::Fileserver),
            o => Err(format!("unknown role {o:?} (known: puppet, ca, report, fileserver)").into()),
        }
    }
}

/// How a master is health-checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// HTTPS GET of the Puppet status API (per role: `/status/v1/simple`,
    /// `/status/v1/simple/ca`); the default.
    #[default]
    Https,
    /// A TCP connect to the port only; for masters whose status API cannot be reached.
    Tcp,
}

impl FromStr for CheckKind {
    type Err = crate::input::names::ParseError;
    fn from_str(s: &str) -> Result<CheckKind, Self::Err> {
        match s {
            "https" => Ok(CheckKind::Https),
            "tcp" => Ok(CheckKind::Tcp),
            o => Err(format!("unknown check {o:?} (known: https, tcp)").into()),
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckKind::Https => "https",
            CheckKind::Tcp => "tcp",
        })
    }
}

/// Puppet Server port used when a master does not give one.
pub const DEFAULT_PORT: u16 = 8140;
/// SRV weight used when a master does not give one.
pub const DEFAULT_WEIGHT: u16 = 10;

/// Identifies a master: host name and port (one host may run several servers).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MasterKey {
    /// Absolute, lowercase host name.
    pub host: Name,
    /// Puppet Server port.
    pub port: u16,
}

impl Serialize for MasterKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", names::host_string(&self.host), self.port)
    }
}

/// One validated master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    /// Absolute, lowercase host name; the SRV target.
    pub host: Name,
    /// The site (a configured `[[site]]` name, lowercase) the master belongs to.
    pub site: String,
    /// Puppet Server port: the SRV port and the port checked.
    pub port: u16,
    /// Sorted, without duplicates.
    pub roles: Vec<Role>,
    /// SRV weight inside its priority tier (0..=65535).
    pub weight: u16,
    /// Addresses srvd publishes as A/AAAA for an in-zone host (required there),
    /// and checks instead of resolving the host; no duplicates.
    pub addresses: Vec<IpAddr>,
    /// Kept out of the answers (operator maintenance) but still checked, so
    /// its health is known when it comes back.
    pub drained: bool,
    /// How the master is health-checked.
    pub check: CheckKind,
}

impl Master {
    /// The identity the health states and srvctl use for this master.
    pub fn key(&self) -> MasterKey {
        MasterKey { host: self.host.clone(), port: self.port }
    }
    /// Whether the master offers `r`.
    pub fn has_role(&self, r: Role) -> bool {
        self.roles.contains(&r)
    }
    /// Host name without the trailing dot, as operators write it.
    pub fn host_str(&self) -> String {
        names::host_string(&self.host)
    }
}

/// The validated registry, masters in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registry {
    /// Every master, in file order; (host, port) is unique.
    pub masters: Vec<Master>,
}

/// A master as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaster {
    /// Host name agents connect to; must be in the master's certificate.
    pub host: String,
    /// The site (a `[[site]]` name in the config) this master is in.
    pub site: String,
    /// Puppet Server port.
    pub port: Option<i64>,
    /// Services this master offers: puppet, ca, report, fileserver.
    pub roles: Option<Vec<String>>,
    /// SRV weight inside its priority tier, 0..=65535.
    pub weight: Option<i64>,
    /// IP addresses; required when the host is inside the zone.
    pub addresses: Option<Vec<String>>,
    /// Left out of the answers but still checked.
    pub drained: Option<bool>,
    /// "https" (Puppet status API) or "tcp" (connect only).
    pub check: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    #[serde(default)]
    master: Vec<RawMaster>,
}

/// The registry file's text; `None` when the file does not exist (an empty
/// registry, which `srvctl add-master` turns into a file).
pub fn read_text(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Registry {
    /// Reads and validates a registry file, returning the text it parsed too
    /// (srvctl compares it with the file to notice hand edits).
    pub fn load(path: &Path, config: &Config) -> Result<(Registry, Option<String>), InputError> {
        let text = read_text(path).map_err(|e| InputError::new(path, "-", format!("cannot read: {e}")))?;
        if text.is_none() {
            tracing::warn!(file = %path.display(), "registry file does not exist: no masters yet (srvctl add-master creates it)");
        }
        let registry = Registry::parse(text.as_deref().unwrap_or(""), path, config)?;
        Ok((registry, text))
    }

    /// Parses and validates registry text against `config` (sites, zone);
    /// `file` is used in errors. Empty text is an empty registry.
    pub fn parse(text: &str, file: &Path, config: &Config) -> Result<Registry, InputError> {
        let raw: RawRegistry = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
        let mut masters = Vec::new();
        let mut seen = HashSet::new();
        for (i, m) in raw.master.into_iter().enumerate() {
            let prefix = format!("master[{i}]");
            let master = validate_master(m, config).map_err(|e| InputError::new(file, format!("{prefix}.{}", e.key), e.reason))?;
            if !seen.insert(master.key()) {
                return Err(InputError::new(file, format!("{prefix}.host"), format!("duplicate master {}", master.key())));
            }
            masters.push(master);
        }
        Ok(Registry { masters })
    }

    /// The master with this (host, port), if registered. A scan: to look
    /// up many masters, use [`Registry::index`].
    pub fn get(&self, key: &MasterKey) -> Option<&Master> {
        self.masters.iter().find(|m| &m.key() == key)
    }

    /// Every master by (host, port), built in one pass: for lookups of
    /// many masters (`get` in a loop over the masters or their health
    /// states is quadratic: 10,000 masters, 400 million comparisons).
    pub fn index(&self) -> std::collections::HashMap<MasterKey, &Master> {
        self.masters.iter().map(|m| (m.key(), m)).collect()
    }

    /// Finds masters by "host" or "host:port".
    pub fn find(&self, spec: &str) -> Vec<&Master> {
        let (host, port) = split_host_port(spec);
        let Ok(host) = names::parse_absolute(host) else { return vec![] };
        self.masters.iter().filter(|m| m.host == host && port.is_none_or(|p| p == m.port)).collect()
    }
}

/// Splits "host:port" (port optional).
pub fn split_host_port(spec: &str) -> (&str, Option<u16>) {
    match spec.rsplit_once(':') {
        Some((h, p)) => match p.parse() {
            Ok(p) => (h, Some(p)),
            Err(_) => (spec, None),
        },
        None => (spec, None),
    }
}

/// A field of a master that is refused: which key, and why. The caller
/// adds where the master is (`master[2].` in a file, the flag in srvctl).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct FieldError {
    /// The refused key, as written in a `[[master]]` table (`"port"`, `"roles"`, ...).
    pub key: &'static str,
    /// Why it is refused, with the value given.
    pub reason: String,
}

fn field(key: &'static str, reason: impl Into<String>) -> FieldError {
    FieldError { key, reason: reason.into() }
}

/// Validates one master against the config.
pub fn validate_master(m: RawMaster, config: &Config) -> Result<Master, FieldError> {
    let host = names::parse_absolute(&m.host).map_err(|r| field("host", format!("{:?}: {r}", m.host)))?;
    let site = m.site.to_ascii_lowercase();
    if config.site(&site).is_none() {
        let known: Vec<&str> = config.site_names().collect();
        return Err(field("site", format!("unknown site {:?} (known: {})", m.site, known.join(", "))));
    }
    let port = m.port.unwrap_or(DEFAULT_PORT as i64);
    if !(1..=65535).contains(&port) {
        return Err(field("port", format!("{port} is not in 1..=65535")));
    }
    let mut roles = Vec::new();
    for r in m.roles.unwrap_or_else(|| vec!["puppet".into()]) {
        let role = r.parse::<Role>().map_err(|e| field("roles", e.0))?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    if roles.is_empty() {
        return Err(field("roles", "a master needs at least one role"));
    }
    roles.sort();
    let weight = m.weight.unwrap_or(DEFAULT_WEIGHT as i64);
    if !(0..=65535).contains(&weight) {
        return Err(field("weight", format!("{weight} is not in 0..=65535")));
    }
    let mut addresses = Vec::new();
    for a in m.addresses.unwrap_or_default() {
        let ip: IpAddr = a.parse().map_err(|_| field("addresses", format!("{a:?} is not an IP address")))?;
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(field("addresses", format!("{a} cannot be a master's address")));
        }
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    let origin = &config.zone.origin;
    if origin.zone_of(&host) {
        if addresses.is_empty() {
            return Err(field("addresses", format!("{} is inside the zone {origin}, so srvd serves its address: give addresses", m.host)));
        }
        if let Some(reason) = in_zone_conflict(&host, config) {
            return Err(field("host", format!("{}: {reason}", m.host)));
        }
    }
    let check = match m.check {
        None => CheckKind::default(),
        Some(c) => c.parse::<CheckKind>().map_err(|e| field("check", e.0))?,
    };
    Ok(Master { host, site, port: port as u16, roles, weight: weight as u16, addresses, drained: m.drained.unwrap_or(false), check })
}

/// An in-zone master host must not sit on a name srvd publishes itself.
fn in_zone_conflict(host: &Name, config: &Config) -> Option<String> {
    let origin = &config.zone.origin;
    if host == origin {
        return Some("is the zone apex".into());
    }
    for s in config.site_names() {
        let site = Name::from_ascii(s).ok()?.append_domain(origin).ok()?;
        if host == &site {
            return Some(format!("is the name of site {s}"));
        }
    }
    None
}
