//! The daemon's configuration file (TOML), parsed strictly and validated once
//! into typed runtime values. Every error names the file, the key and the reason.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::Name;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use serde::Deserialize;

use crate::input::error::InputError;
use crate::input::names::{self, parse_duration};
use crate::input::network::Network;
use crate::input::tls::ClientTls;

/// The example configuration `srvd` runs when started without `--config`.
pub const EXAMPLE_CONFIG: &str = include_str!("../../zones/example.toml");
/// The registry that goes with [`EXAMPLE_CONFIG`].
pub const EXAMPLE_REGISTRY: &str = include_str!("../../zones/example-masters.toml");
/// The static zone file that goes with [`EXAMPLE_CONFIG`].
pub const EXAMPLE_ZONE_FILE: &str = include_str!("../../zones/example.zone");

// ---------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    zone: RawZone,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    site: Vec<RawSite>,
    #[serde(default)]
    tsig_key: Vec<RawTsigKey>,
    #[serde(default)]
    secondary: Vec<RawSecondary>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    /// The delegated subzone srvd is authoritative for, e.g. "puppet.example.com."
    origin: String,
    /// Optional RFC 1035 zone file with static records (glue, TXT, ...).
    file: Option<PathBuf>,
    /// TTL of published records, seconds. Short, so failover reaches agents fast.
    ttl: Option<u32>,
    /// TTL of negative answers (SOA minimum), seconds.
    negative_ttl: Option<u32>,
    /// Name servers of the zone (apex NS), absolute or relative to origin.
    nameservers: Option<Vec<String>>,
    /// SOA RNAME, as a mailbox ("hostmaster@example.com") or a DNS name.
    hostmaster: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    /// Addresses to serve DNS on, UDP and TCP, "addr:port".
    listen: Option<Vec<String>>,
    /// Unix socket srvctl talks to.
    control_socket: Option<PathBuf>,
    /// Where the SOA serial and the last known health states are kept.
    state_dir: Option<PathBuf>,
    /// The masters registry file.
    registry: Option<PathBuf>,
    /// Optional "addr:port" for a plain-text metrics endpoint.
    metrics: Option<String>,
    /// DNS over TCP: connections served at once; at the cap the oldest idle
    /// one is closed for a new one. Default derived from the open-files limit.
    tcp_max_connections: Option<u32>,
    /// DNS over TCP: how long a connection may wait for its next query.
    tcp_idle_timeout: Option<String>,
    /// DNS over TCP: how long one query may take to arrive once its first
    /// byte has, and one answer to be written (slow or stalled clients).
    tcp_message_timeout: Option<String>,
    /// DNS over TCP: total lifetime of a connection.
    tcp_max_lifetime: Option<String>,
    /// DNS over TCP: queries answered on one connection before it is closed.
    tcp_max_queries: Option<u32>,
    /// Networks of resolvers whose EDNS Client Subnet option is believed
    /// when choosing a site by client network.
    ecs_trusted: Option<Vec<String>>,
    /// Serve `[[site]] networks` although `[[secondary]]` servers exist
    /// (which answer the site-less names without them): a warning, not an error.
    allow_secondaries_with_networks: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    /// Time between checks of a healthy master.
    interval: Option<String>,
    /// Time between checks of a master that is failing or down.
    fast_interval: Option<String>,
    /// Time one check may take before it counts as failed.
    timeout: Option<String>,
    /// Consecutive successes before a down master is up.
    rise: Option<u32>,
    /// Consecutive failures before an up master is down.
    fall: Option<u32>,
    /// PEM file of the Puppet CA used to verify masters' certificates.
    ca_file: Option<PathBuf>,
    /// Optional PEM client certificate presented to masters.
    cert_file: Option<PathBuf>,
    /// Private key of `cert_file`.
    key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    /// Priority of the local site's masters.
    local_priority: Option<u16>,
    /// Priority added per failover tier.
    priority_step: Option<u16>,
    /// "serve-all" or "empty": what to publish when no master of a role is up.
    all_down: Option<String>,
    /// CA preference order: master host names, first healthy one is active.
    ca_order: Option<Vec<String>>,
    /// Most SRV records in one answer (big estates).
    max_srv_records: Option<u16>,
    /// "static" (registry weights) or "capacity" (spare JRubies of each master).
    weights: Option<String>,
    /// With weights = "capacity": the published weights change at most once per this.
    weights_period: Option<String>,
    /// The site whose answers clients outside every `[[site]] networks` get
    /// on the site-less names (default: the site-less pool).
    client_site_default: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    /// Site name, a DNS label; agents use srv_domain = NAME.ORIGIN.
    name: String,
    /// Sites to fail over to, in order, before all other sites.
    #[serde(default)]
    failover: Vec<String>,
    /// Client networks (CIDR) whose queries for the site-less names get this site's answers.
    #[serde(default)]
    networks: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTsigKey {
    /// Key name as the secondary knows it (BIND `key "NAME"`), a DNS name.
    name: String,
    /// HMAC algorithm: "hmac-sha256" (default), "hmac-sha384" or "hmac-sha512".
    algorithm: Option<String>,
    /// The shared secret, base64 (what `tsig-keygen` prints).
    secret: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecondary {
    /// "ip" or "ip:port": transfers are allowed from this IP; NOTIFY goes to
    /// this address (port 53 when not given).
    address: String,
    /// Name of a `[[tsig_key]]` the secondary must sign transfers with (and
    /// NOTIFY is signed with). Without it the IP alone authorises transfers.
    key: Option<String>,
    /// Send NOTIFY to this secondary on every change (default true).
    notify: Option<bool>,
}

// ---------------------------------------------------------------------------
// Validated values.

/// What to publish for a role when none of its masters is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllDown {
    /// Publish every non-drained master of the role in its normal tier, up or
    /// not (the default): agents keep trying masters instead of finding none.
    ServeAll,
    /// Publish no records for the role (NODATA), so agents fail fast.
    Empty,
}

/// How SRV weights are chosen inside a priority tier (`policy.weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Weights {
    /// Each master's registry `weight` (the default).
    Static,
    /// Each master's spare JRuby capacity, from Puppet Server's
    /// jruby-metrics status (docs/health.md, "Capacity-aware weights").
    Capacity,
}

/// The validated `[zone]` table: what srvd is authoritative for and the
/// fixed parts of its SOA/NS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneConfig {
    /// The delegated subzone srvd serves, absolute and lowercase.
    pub origin: Name,
    /// Static zone file adding records srvd does not compute (resolved against
    /// the config's directory).
    pub file: Option<PathBuf>,
    /// TTL of every published record, seconds (default 30, at most a day).
    /// Kept short so that failover reaches agents quickly.
    pub ttl: u32,
    /// TTL of negative answers (the SOA minimum), seconds (default 30).
    pub negative_ttl: u32,
    /// Apex NS targets, absolute; at least one, no duplicates (default `ns1.ORIGIN`).
    pub nameservers: Vec<Name>,
    /// SOA RNAME, already turned from a mailbox into a DNS name.
    pub hostmaster: Name,
}

/// The validated `[server]` table: where srvd listens and keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// DNS addresses, each served over UDP and TCP (default `127.0.0.1:5353`).
    pub listen: Vec<SocketAddr>,
    /// Unix socket srvctl connects to (default `/run/srvd/control.sock`).
    pub control_socket: PathBuf,
    /// Directory for the SOA serial and the last known health states
    /// (default `/var/lib/srvd`).
    pub state_dir: PathBuf,
    /// The masters registry file (default `STATE_DIR/masters.toml`).
    pub registry: PathBuf,
    /// Plain-text Prometheus endpoint; `None` serves no metrics.
    pub metrics: Option<SocketAddr>,
    /// Limits that keep DNS-over-TCP clients from holding connections forever.
    pub tcp: TcpLimits,
    /// Resolvers (networks) whose EDNS Client Subnet option decides the
    /// client's site; the ECS of anyone else is ignored (default none).
    pub ecs_trusted: Vec<Network>,
    /// The operator accepts that `[[secondary]]` servers answer the
    /// site-less names without `[[site]] networks` (docs/dns.md).
    pub allow_secondaries_with_networks: bool,
}

/// Limits of DNS over TCP (`[server] tcp_*`, docs/configuration.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpLimits {
    /// None: derived from the open-files limit at start
    /// (`crate::dns::server::default_tcp_max_connections`).
    pub max_connections: Option<usize>,
    /// How long a connection may wait for its next query (default 10 s).
    pub idle_timeout: Duration,
    /// How long one query may take to arrive once its first byte has, and one
    /// answer to be written (default 5 s); cuts off slow or stalled clients.
    pub message_timeout: Duration,
    /// Total lifetime of a connection, however busy (default 120 s).
    pub max_lifetime: Duration,
    /// Queries answered on one connection before it is closed (default 1000).
    pub max_queries: u32,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: None,
            idle_timeout: Duration::from_secs(10),
            message_timeout: Duration::from_secs(5),
            max_lifetime: Duration::from_secs(120),
            max_queries: 1000,
        }
    }
}

/// The validated `[health]` table: how often and how strictly masters are
/// checked (defaults and their reasoning: [`DEFAULT_INTERVAL_S`], docs/health.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Time between checks of a master that is up (default 1 s).
    pub interval: Duration,
    /// Time between checks of a master that is failing or down (default 250 ms,
    /// never more than `interval`), so that failure and recovery are seen sooner.
    pub fast_interval: Duration,
    /// Time one check may take before it counts as failed (default 1 s).
    pub timeout: Duration,
    /// Consecutive passing checks that bring a down master up (1..=100, default 2).
    pub rise: u32,
    /// Consecutive failed checks that take an up master down (1..=100, default 2).
    pub fall: u32,
    /// PEM file of the Puppet CA that signed the masters' certificates;
    /// `None` trusts the system bundle.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate presented to masters (with `key_file`), for
    /// Puppet Servers that require one.
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The TLS client config built from the three files (read once, here).
    pub tls: ClientTls,
    /// `policy.weights_period` when `policy.weights = "capacity"` (else
    /// `None`): the checker then fetches every master's jruby-metrics and
    /// hands the smoothed figures on at most once per this period. Kept
    /// here so the checker needs no other table.
    pub capacity: Option<Duration>,
}

/// Default health timing (measured figures and reasoning: docs/health.md).
/// Checks run every `interval` (1 s) while a master is healthy and every
/// `fast_interval` (250 ms) while it is down. A crashed master resets the
/// held connection: it is rechecked at once and `fall` = 3 refused connects
/// take it out within milliseconds. A hung one fails its check at `timeout`
/// (700 ms) and two confirming checks started timeout / 8 apart at their
/// own deadlines: out within interval + 700 ms + 2 × 87.5 ms. A recovered
/// one returns after `rise` = 2 passing checks, 250 ms apart. fall = 3 keeps
/// two lost checks in a row (1 in 10,000 for a master losing 1 in 100) from
/// removing a master; confirmations are immediate, so it costs no time.
pub const DEFAULT_INTERVAL_S: u64 = 1;
/// Time between checks of a master that passes (`health.fast_interval` default), milliseconds.
pub const DEFAULT_FAST_INTERVAL_MS: u64 = 250;
/// Time one check may take (`health.timeout` default), milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 700;
/// Passing checks before a down master is up again (`health.rise` default).
pub const DEFAULT_RISE: u32 = 2;
/// Failed checks before an up master is taken out (`health.fall` default).
pub const DEFAULT_FALL: u32 = 3;

/// The validated `[policy]` table: how SRV priorities and the CA are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Priority of a site's own masters (default 10).
    pub local_priority: u16,
    /// Priority added per failover tier (default 10): tier i gets
    /// `local_priority + i * priority_step`; validation keeps the last tier <= 65535.
    pub priority_step: u16,
    /// What to publish for a role when none of its masters is up.
    pub all_down: AllDown,
    /// Host names (absolute, lowercase) in CA preference order.
    pub ca_order: Vec<Name>,
    /// Most SRV records in one answer: whole priority groups first, then a
    /// window of the first group that does not fit (docs/dns.md, "Big estates").
    pub max_srv_records: usize,
    /// Where SRV weights come from: the registry, or spare JRuby capacity.
    pub weights: Weights,
    /// With capacity weights: the published weights change at most once
    /// per this period (default 60 s, at least 1 s).
    pub weights_period: Duration,
    /// The site (a known one, lowercase) whose answers a client outside every
    /// `[[site]] networks` gets on the site-less names; `None`: the site-less pool.
    pub client_site_default: Option<String>,
}

/// Default `policy.weights_period`, seconds.
pub const DEFAULT_WEIGHTS_PERIOD_S: u64 = 60;

/// Default `policy.max_srv_records`.
pub const DEFAULT_MAX_SRV_RECORDS: usize = 64;
/// Highest `policy.max_srv_records`: even with 255-byte target names, that
/// many SRV records fit a 64 KiB TCP message.
pub const MAX_MAX_SRV_RECORDS: usize = 200;

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            local_priority: 10,
            priority_step: 10,
            all_down: AllDown::ServeAll,
            ca_order: vec![],
            max_srv_records: DEFAULT_MAX_SRV_RECORDS,
            weights: Weights::Static,
            weights_period: Duration::from_secs(DEFAULT_WEIGHTS_PERIOD_S),
            client_site_default: None,
        }
    }
}

/// A `[[site]]`: a group of masters that agents of that site prefer.
/// Agents use `srv_domain = NAME.ORIGIN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// DNS label, lowercase; unique among sites.
    pub name: String,
    /// Sites (lowercase, known, not itself, no repeats) whose masters come next,
    /// in order, before all remaining sites in config order.
    pub failover: Vec<String>,
    /// Client networks whose queries for the site-less names under the
    /// origin get this site's answers (longest prefix over all sites wins).
    pub networks: Vec<Network>,
}

/// A shared TSIG secret. Its `Debug` does not print the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// A TSIG key (RFC 8945) shared with secondaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// Key name as the secondary knows it (BIND `key "NAME"`).
    pub name: Name,
    /// HMAC algorithm, one of [`TSIG_ALGORITHMS`].
    pub algorithm: TsigAlgorithm,
    /// The shared secret, decoded from base64; at least [`MIN_TSIG_SECRET`] bytes.
    pub secret: Secret,
}

/// A secondary name server that may transfer the zone and gets NOTIFY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secondary {
    /// Where NOTIFY goes; transfers are allowed from `address.ip()`.
    pub address: SocketAddr,
    /// The key it must sign transfer requests with (a [`TsigKey::name`]).
    pub key: Option<Name>,
    /// Send NOTIFY to `address` on every serial change (default true).
    pub notify: bool,
}

/// The TSIG algorithms srvd signs and verifies with (config spelling).
pub const TSIG_ALGORITHMS: [(&str, TsigAlgorithm); 3] =
    [("hmac-sha256", TsigAlgorithm::HmacSha256), ("hmac-sha384", TsigAlgorithm::HmacSha384), ("hmac-sha512", TsigAlgorithm::HmacSha512)];

/// Shortest TSIG secret accepted, in bytes (`tsig-keygen` makes 32).
pub const MIN_TSIG_SECRET: usize = 16;

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file this came from (`<embedded example>` for the built-in one).
    pub path: PathBuf,
    /// The `[zone]` table.
    pub zone: ZoneConfig,
    /// The `[server]` table.
    pub server: ServerConfig,
    /// The `[health]` table.
    pub health: HealthConfig,
    /// The `[policy]` table.
    pub policy: PolicyConfig,
    /// The `[[site]]` tables in file order; the order decides the failover tiers
    /// after a site's own `failover` list.
    pub sites: Vec<Site>,
    /// TSIG keys for zone transfers and NOTIFY.
    pub tsig_keys: Vec<TsigKey>,
    /// Secondaries allowed to transfer the zone (and notified of changes).
    pub secondaries: Vec<Secondary>,
}

impl Config {
    /// Things valid but worth an operator's attention, logged at start and
    /// on every reload.
    pub fn warnings(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.any_client_networks() && !self.secondaries.is_empty() {
            v.push(format!(
                "{}: [[site]] networks with {} [[secondary]] server(s) (allowed by server.allow_secondaries_with_networks): \
                 the secondaries answer the site-less names with the site-less pool, srvd by client network",
                self.path.display(),
                self.secondaries.len()
            ));
        }
        v
    }

    /// Whether any site lists client networks (the site-less names are then
    /// answered per client).
    pub fn any_client_networks(&self) -> bool {
        self.sites.iter().any(|s| !s.networks.is_empty())
    }

    /// Reads and validates a config file. Relative paths inside it are taken
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, InputError> {
        let text = std::fs::read_to_string(path).map_err(|e| InputError::new(path, "-", format!("cannot read: {e}")))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, path, &base)
    }

    /// Parses config text; `file` is used in errors, `base` resolves relative paths.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Config, InputError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
        validate(raw, file, base)
    }

    /// The site called `name` (lowercase, as validated), if configured.
    pub fn site(&self, name: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.name == name)
    }

    /// Site names in config order.
    pub fn site_names(&self) -> impl Iterator<Item = &str> {
        self.sites.iter().map(|s| s.name.as_str())
    }

    /// The failover tiers of a site: itself, its failover list, then every
    /// other site in config order.
    pub fn tiers<'a>(&'a self, site: &'a str) -> Vec<&'a str> {
        let mut out: Vec<&str> = vec![site];
        if let Some(s) = self.site(site) {
            for f in &s.failover {
                if !out.contains(&f.as_str()) {
                    out.push(f);
                }
            }
        }
        for s in &self.sites {
            if !out.contains(&s.name.as_str()) {
                out.push(&s.name);
            }
        }
        out
    }
}

/// Turns a toml/serde error into file + key + reason. The key is worked out
/// from the error's position: the enclosing `[table]` and the key on that
/// line, plus the line number (`site[1].name (line 12)`).
pub fn toml_error(file: &Path, text: &str, e: &toml::de::Error) -> InputError {
    let msg = e.message().trim().to_string();
    let Some(span) = e.span() else {
        return InputError::new(file, "-", msg);
    };
    let start = span.start.min(text.len());
    let line_no = text.get(..start).unwrap_or(text).matches('\n').count() + 1;
    let line = text.lines().nth(line_no.saturating_sub(1)).unwrap_or("");
    // Which table: the last header before the error, counting array entries.
    let mut table = String::new();
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let upto = text.char_indices().filter(|(_, c)| *c == '\n').map(|(i, _)| i).find(|i| *i >= start).unwrap_or(text.len());
    for l in text.get(..upto).unwrap_or(text).lines() {
        let t = l.trim();
        if let Some(h) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let h = h.trim().to_string();
            let n = counts.entry(h.clone()).or_insert(0);
            table = format!("{h}[{n}]");
            *n += 1;
        } else if let Some(h) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = h.trim().to_string();
        }
    }
    let missing = msg.strip_prefix("missing field `").and_then(|r| r.split('`').next()).map(str::to_string);
    let key = missing.or_else(|| {
        line.split_once('=').map(|(k, _)| k.trim().trim_matches('"').to_string()).filter(|k| !k.is_empty() && !k.starts_with('['))
    });
    if span.start == 0 && (span.end == 0 || span.end >= text.trim_end().len()) {
        table.clear(); // the error is about the whole document
    }
    let full = match (table.is_empty(), key) {
        (false, Some(k)) => format!("{table}.{k}"),
        (true, Some(k)) => k,
        (false, None) => table,
        (true, None) => String::new(),
    };
    InputError::new(file, full, msg).at_line(line_no)
}

fn validate(raw: RawConfig, file: &Path, base: &Path) -> Result<Config, InputError> {
    let err = |key: &str, reason: String| InputError::new(file, key, reason);
    let under_base = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };

    // [zone]
    let origin = names::parse_absolute(&raw.zone.origin).map_err(|r| err("zone.origin", format!("{:?}: {r}", raw.zone.origin)))?;
    if origin.is_root() {
        return Err(err("zone.origin", "must not be the root zone".into()));
    }
    let ttl = raw.zone.ttl.unwrap_or(30);
    let negative_ttl = raw.zone.negative_ttl.unwrap_or(30);
    for (k, v) in [("zone.ttl", ttl), ("zone.negative_ttl", negative_ttl)] {
        if v > 86400 {
            return Err(err(k, format!("{v} is more than a day; srvd answers must stay fresh")));
        }
    }
    let ns_raw = raw.zone.nameservers.unwrap_or_else(|| vec![format!("ns1.{origin}")]);
    if ns_raw.is_empty() {
        return Err(err("zone.nameservers", "needs at least one name server".into()));
    }
    let mut nameservers = Vec::new();
    for (i, n) in ns_raw.iter().enumerate() {
        let name = names::parse_relative_to(n, &origin).map_err(|r| err(&format!("zone.nameservers[{i}]"), format!("{n:?}: {r}")))?;
        if nameservers.contains(&name) {
            return Err(err(&format!("zone.nameservers[{i}]"), format!("{n:?} listed twice")));
        }
        nameservers.push(name);
    }
    let hm = raw.zone.hostmaster.unwrap_or_else(|| format!("hostmaster.{origin}"));
    let hostmaster = names::parse_mailbox(&hm).map_err(|r| err("zone.hostmaster", format!("{hm:?}: {r}")))?;
    let zone_file = raw.zone.file.map(under_base);

    // [server]
    let tcp = validate_tcp(&raw.server, &err)?;
    let listen_raw = raw.server.listen.unwrap_or_else(|| vec!["127.0.0.1:5353".into()]);
    if listen_raw.is_empty() {
        return Err(err("server.listen", "needs at least one address".into()));
    }
    let mut listen = Vec::new();
    for (i, a) in listen_raw.iter().enumerate() {
        let addr: SocketAddr = a.parse().map_err(|_| err(&format!("server.listen[{i}]"), format!("{a:?} is not \"addr:port\"")))?;
        if listen.contains(&addr) {
            return Err(err(&format!("server.listen[{i}]"), format!("{a:?} listed twice")));
        }
        listen.push(addr);
    }
    let metrics = match raw.server.metrics {
        None => None,
        Some(m) => Some(m.parse::<SocketAddr>().map_err(|_| err("server.metrics", format!("{m:?} is not \"addr:port\"")))?),
    };
    let state_dir = under_base(raw.server.state_dir.unwrap_or_else(|| "/var/lib/srvd".into()));
    let server = ServerConfig {
        listen,
        control_socket: under_base(raw.server.control_socket.unwrap_or_else(|| "/run/srvd/control.sock".into())),
        registry: under_base(raw.server.registry.unwrap_or_else(|| state_dir.join("masters.toml"))),
        state_dir,
        metrics,
        tcp,
        ecs_trusted: parse_networks(&raw.server.ecs_trusted.unwrap_or_default(), "server.ecs_trusted", &err)?,
        allow_secondaries_with_networks: raw.server.allow_secondaries_with_networks.unwrap_or(false),
    };

    // [health]
    let dur = |key: &str, v: Option<String>, default: Duration| -> Result<Duration, InputError> {
        match v {
            None => Ok(default),
            Some(s) => {
                let d = parse_duration(&s).map_err(|r| err(key, format!("{s:?}: {r}")))?;
                if d.is_zero() {
                    return Err(err(key, "must be more than zero".into()));
                }
                Ok(d)
            }
        }
    };
    let interval = dur("health.interval", raw.health.interval, Duration::from_secs(DEFAULT_INTERVAL_S))?;
    let fast_interval =
        dur("health.fast_interval", raw.health.fast_interval, Duration::from_millis(DEFAULT_FAST_INTERVAL_MS).min(interval))?;
    let timeout = dur("health.timeout", raw.health.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS))?;
    let rise = raw.health.rise.unwrap_or(DEFAULT_RISE);
    let fall = raw.health.fall.unwrap_or(DEFAULT_FALL);
    if rise == 0 || rise > 100 {
        return Err(err("health.rise", format!("{rise} is not in 1..=100")));
    }
    if fall == 0 || fall > 100 {
        return Err(err("health.fall", format!("{fall} is not in 1..=100")));
    }
    let (ca_file, cert_file, key_file) =
        (raw.health.ca_file.map(under_base), raw.health.cert_file.map(under_base), raw.health.key_file.map(under_base));
    // The checker's TLS material, read once: files readable, PEM valid, CA
    // usable, key matching the certificate.
    let tls = ClientTls::load_paths(&ca_file, &cert_file, &key_file).map_err(|e| InputError::new(file, e.key, e.reason))?;
    let mut health = HealthConfig { interval, fast_interval, timeout, rise, fall, ca_file, cert_file, key_file, tls, capacity: None };

    // [[site]]
    if raw.site.is_empty() {
        return Err(err("site", "at least one [[site]] is needed".into()));
    }
    let mut seen = HashSet::new();
    for (i, s) in raw.site.iter().enumerate() {
        names::check_label(&s.name).map_err(|r| err(&format!("site[{i}].name"), format!("{:?}: {r}", s.name)))?;
        if !seen.insert(s.name.to_ascii_lowercase()) {
            return Err(err(&format!("site[{i}].name"), format!("duplicate site {:?}", s.name)));
        }
    }
    let mut sites = Vec::new();
    for (i, s) in raw.site.into_iter().enumerate() {
        let mut fo_seen = HashSet::new();
        for (j, f) in s.failover.iter().enumerate() {
            let key = format!("site[{i}].failover[{j}]");
            if !seen.contains(&f.to_ascii_lowercase()) {
                return Err(err(&key, format!("unknown site {f:?}")));
            }
            if f.eq_ignore_ascii_case(&s.name) {
                return Err(err(&key, "a site cannot fail over to itself".into()));
            }
            if !fo_seen.insert(f.to_ascii_lowercase()) {
                return Err(err(&key, format!("{f:?} listed twice")));
            }
        }
        let networks = parse_networks(&s.networks, &format!("site[{i}].networks"), &err)?;
        sites.push(Site {
            name: s.name.to_ascii_lowercase(),
            failover: s.failover.iter().map(|f| f.to_ascii_lowercase()).collect(),
            networks,
        });
    }
    check_network_owners(&sites, &err)?;

    // [policy]
    let pd = PolicyConfig::default();
    let all_down = match raw.policy.all_down.as_deref() {
        None | Some("serve-all") => AllDown::ServeAll,
        Some("empty") => AllDown::Empty,
        Some(o) => return Err(err("policy.all_down", format!("{o:?} is not \"serve-all\" or \"empty\""))),
    };
    let mut ca_order = Vec::new();
    for (i, h) in raw.policy.ca_order.unwrap_or_default().iter().enumerate() {
        let n = names::parse_absolute(h).map_err(|r| err(&format!("policy.ca_order[{i}]"), format!("{h:?}: {r}")))?;
        if ca_order.contains(&n) {
            return Err(err(&format!("policy.ca_order[{i}]"), format!("{h:?} listed twice")));
        }
        ca_order.push(n);
    }
    let max_srv_records = match raw.policy.max_srv_records {
        None => pd.max_srv_records,
        Some(n) if (1..=MAX_MAX_SRV_RECORDS).contains(&usize::from(n)) => usize::from(n),
        Some(n) => return Err(err("policy.max_srv_records", format!("{n} is not between 1 and {MAX_MAX_SRV_RECORDS}"))),
    };
    let weights = match raw.policy.weights.as_deref() {
        None | Some("static") => Weights::Static,
        Some("capacity") => Weights::Capacity,
        Some(o) => return Err(err("policy.weights", format!("{o:?} is not \"static\" or \"capacity\""))),
    };
    let weights_period = match raw.policy.weights_period {
        None => pd.weights_period,
        Some(s) => {
            let d = parse_duration(&s).map_err(|r| err("policy.weights_period", format!("{s:?}: {r}")))?;
            if d < Duration::from_secs(1) {
                return Err(err("policy.weights_period", format!("{s:?}: must be at least 1s")));
            }
            d
        }
    };
    if weights == Weights::Capacity {
        health.capacity = Some(weights_period);
    }
    let any_networks = sites.iter().any(|s| !s.networks.is_empty());
    let client_site_default = match raw.policy.client_site_default {
        None => None,
        Some(d) => {
            let d = d.to_ascii_lowercase();
            if !seen.contains(&d) {
                return Err(err("policy.client_site_default", format!("unknown site {d:?}")));
            }
            if !any_networks {
                return Err(err(
                    "policy.client_site_default",
                    "needs [[site]] networks: without them no client is matched to a site".into(),
                ));
            }
            Some(d)
        }
    };
    let policy = PolicyConfig {
        local_priority: raw.policy.local_priority.unwrap_or(pd.local_priority),
        priority_step: raw.policy.priority_step.unwrap_or(pd.priority_step),
        all_down,
        ca_order,
        max_srv_records,
        weights,
        weights_period,
        client_site_default,
    };
    let max = policy.local_priority as u64 + policy.priority_step as u64 * (sites.len() as u64).saturating_sub(1);
    if max > u16::MAX as u64 {
        return Err(err("policy.priority_step", format!("with {} sites the last tier's priority {max} exceeds 65535", sites.len())));
    }

    let (tsig_keys, secondaries) = validate_xfr(raw.tsig_key, raw.secondary, file)?;
    if any_networks && !secondaries.is_empty() && !server.allow_secondaries_with_networks {
        let site = sites.iter().position(|s| !s.networks.is_empty()).unwrap_or(0);
        return Err(err(
            &format!("site[{site}].networks"),
            "secondaries cannot choose answers by client network: with [[secondary]] servers, clients asking them get the \
             site-less pool while srvd answers by network. Remove the secondaries or the networks, or set \
             [server] allow_secondaries_with_networks = true to accept the difference (docs/dns.md)"
                .into(),
        ));
    }

    Ok(Config {
        path: file.to_path_buf(),
        zone: ZoneConfig { origin, file: zone_file, ttl, negative_ttl, nameservers, hostmaster },
        server,
        health,
        policy,
        sites,
        tsig_keys,
        secondaries,
    })
}

/// A list of CIDR networks at `key`; each once.
fn parse_networks(raw: &[String], key: &str, err: &dyn Fn(&str, String) -> InputError) -> Result<Vec<Network>, InputError> {
    let mut out: Vec<Network> = Vec::with_capacity(raw.len());
    for (j, n) in raw.iter().enumerate() {
        let net = Network::parse(n).map_err(|e| err(&format!("{key}[{j}]"), e.to_string()))?;
        if out.contains(&net) {
            return Err(err(&format!("{key}[{j}]"), format!("{net} listed twice")));
        }
        out.push(net);
    }
    Ok(out)
}

/// Two sites claiming the same network: longest prefix decides between
/// nested networks, but nothing decides between equal ones.
fn check_network_owners(sites: &[Site], err: &dyn Fn(&str, String) -> InputError) -> Result<(), InputError> {
    let mut owner: std::collections::HashMap<Network, &str> = std::collections::HashMap::new();
    for (i, s) in sites.iter().enumerate() {
        for (j, n) in s.networks.iter().enumerate() {
            if let Some(other) = owner.insert(*n, &s.name) {
                return Err(err(
                    &format!("site[{i}].networks[{j}]"),
                    format!("{n} is claimed by both site {other:?} and site {:?}", s.name),
                ));
            }
        }
    }
    Ok(())
}

/// The `[server] tcp_*` keys; durations must be more than zero, counts at least 1.
fn validate_tcp(raw: &RawServer, err: &dyn Fn(&str, String) -> InputError) -> Result<TcpLimits, InputError> {
    let d = TcpLimits::default();
    let dur = |key: &str, v: &Option<String>, default: Duration| -> Result<Duration, InputError> {
        match v {
            None => Ok(default),
            Some(s) => {
                let d = parse_duration(s).map_err(|r| err(key, format!("{s:?}: {r}")))?;
                if d.is_zero() {
                    return Err(err(key, "must be more than zero".into()));
                }
                Ok(d)
            }
        }
    };
    let max_connections = match raw.tcp_max_connections {
        None => None,
        Some(0) => return Err(err("server.tcp_max_connections", "must be at least 1".into())),
        Some(n) if n > 1_000_000 => return Err(err("server.tcp_max_connections", format!("{n} is more than 1000000"))),
        Some(n) => Some(n as usize),
    };
    let max_queries = match raw.tcp_max_queries {
        None => d.max_queries,
        Some(0) => return Err(err("server.tcp_max_queries", "must be at least 1".into())),
        Some(n) => n,
    };
    Ok(TcpLimits {
        max_connections,
        idle_timeout: dur("server.tcp_idle_timeout", &raw.tcp_idle_timeout, d.idle_timeout)?,
        message_timeout: dur("server.tcp_message_timeout", &raw.tcp_message_timeout, d.message_timeout)?,
        max_lifetime: dur("server.tcp_max_lifetime", &raw.tcp_max_lifetime, d.max_lifetime)?,
        max_queries,
    })
}

/// `[[tsig_key]]` and `[[secondary]]`: zone transfers and NOTIFY.
fn validate_xfr(
    raw_keys: Vec<RawTsigKey>,
    raw_secondaries: Vec<RawSecondary>,
    file: &Path,
) -> Result<(Vec<TsigKey>, Vec<Secondary>), InputError> {
    let err = |key: String, reason: String| InputError::new(file, key, reason);
    let mut keys: Vec<TsigKey> = Vec::new();
    for (i, k) in raw_keys.into_iter().enumerate() {
        let name = names::parse_absolute(&k.name).map_err(|r| err(format!("tsig_key[{i}].name"), format!("{:?}: {r}", k.name)))?;
        if keys.iter().any(|o| o.name == name) {
            return Err(err(format!("tsig_key[{i}].name"), format!("duplicate key {:?}", k.name)));
        }
        let alg_text = k.algorithm.unwrap_or_else(|| "hmac-sha256".into());
        let algorithm = TSIG_ALGORITHMS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(alg_text.trim_end_matches('.')))
            .map(|(_, a)| a.clone())
            .ok_or_else(|| {
                err(format!("tsig_key[{i}].algorithm"), format!("{alg_text:?} is not one of hmac-sha256, hmac-sha384, hmac-sha512"))
            })?;
        let secret = data_encoding::BASE64
            .decode(k.secret.trim().as_bytes())
            .map_err(|e| err(format!("tsig_key[{i}].secret"), format!("not base64: {e}")))?;
        if secret.len() < MIN_TSIG_SECRET {
            return Err(err(
                format!("tsig_key[{i}].secret"),
                format!("{} bytes is too short; use at least {MIN_TSIG_SECRET} (tsig-keygen makes 32)", secret.len()),
            ));
        }
        keys.push(TsigKey { name, algorithm, secret: Secret(secret) });
    }
    let mut secondaries: Vec<Secondary> = Vec::new();
    for (i, s) in raw_secondaries.into_iter().enumerate() {
        let a = s.address.trim();
        let address = a
            .parse::<SocketAddr>()
            .or_else(|_| a.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map_err(|_| err(format!("secondary[{i}].address"), format!("{:?} is not \"ip\" or \"ip:port\"", s.address)))?;
        if address.port() == 0 {
            return Err(err(format!("secondary[{i}].address"), format!("{:?}: port 0", s.address)));
        }
        if secondaries.iter().any(|o| o.address == address) {
            return Err(err(format!("secondary[{i}].address"), format!("{:?} listed twice", s.address)));
        }
        let key = match s.key {
            None => None,
            Some(k) => {
                let name = names::parse_absolute(&k).map_err(|r| err(format!("secondary[{i}].key"), format!("{k:?}: {r}")))?;
                if !keys.iter().any(|o| o.name == name) {
                    return Err(err(format!("secondary[{i}].key"), format!("unknown tsig_key {k:?}")));
                }
                Some(name)
            }
        };
        secondaries.push(Secondary { address, key, notify: s.notify.unwrap_or(true) });
    }
    Ok((keys, secondaries))
}
