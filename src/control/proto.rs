//! The control protocol: one JSON [`Request`] per line from srvctl, one JSON
//! [`Response`] per line back. These types are the wire format *and* the
//! `srvctl --json` output, documented in docs/srvctl.md; fields are only
//! ever added, never renamed or removed.
//!
//! Times are unix seconds (UTC); latencies are milliseconds.

use serde::{Deserialize, Serialize};

/// What srvctl asks the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// Register a new master (`srvctl add-master`).
    AddMaster(AddMaster),
    /// Remove a master from the registry (`srvctl remove-master`).
    RemoveMaster(Target),
    /// Take a master out of the answers but keep checking it (`srvctl drain`).
    Drain(DrainArgs),
    /// Put a drained master back (`srvctl undrain`).
    Undrain(Target),
    /// Change a master's SRV weight (`srvctl set-weight`).
    SetWeight(SetWeight),
    /// The registry's masters (`srvctl list`).
    List,
    /// Every master with its health (`srvctl status`).
    Status,
    /// The published answers and why each master is in or out (`srvctl explain`).
    Explain(ExplainArgs),
    /// Re-read the config, zone file and registry (`srvctl reload`).
    Reload(ReloadArgs),
}

impl Request {
    /// The command name, as srvctl spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Request::AddMaster(_) => "add-master",
            Request::RemoveMaster(_) => "remove-master",
            Request::Drain(_) => "drain",
            Request::Undrain(_) => "undrain",
            Request::SetWeight(_) => "set-weight",
            Request::List => "list",
            Request::Status => "status",
            Request::Explain(_) => "explain",
            Request::Reload(_) => "reload",
        }
    }

    /// Whether the request changes anything (registry or loaded files).
    pub fn is_change(&self) -> bool {
        !matches!(self, Request::List | Request::Status | Request::Explain(_))
    }
}

/// `add-master`. Values are passed as the operator typed them and validated
/// by the daemon, so every refusal reads the same whatever the client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddMaster {
    /// "host" or "host:port".
    pub host: String,
    /// Site name; must be a configured `[[site]]`.
    pub site: String,
    /// Puppet Server port (default 8140); also taken from `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// Role names (default `["puppet"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// SRV weight, 0..=65535 (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    /// IP addresses; required for a host inside the zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// "https" (default) or "tcp".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// Reply only once the first health check of every role has a result.
    #[serde(default)]
    pub wait: bool,
    /// How long `wait` may take, milliseconds (default 60 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_timeout_ms: Option<u64>,
}

/// A master named by "host" or "host:port".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// "host" or "host:port"; without a port it must name exactly one master.
    pub host: String,
}

/// `drain`: a master, and whether to reply only once it is idle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainArgs {
    /// "host" or "host:port"; without a port it must name exactly one master.
    pub host: String,
    /// Reply once the master has been out of every answer for a full TTL
    /// and its status API reports no borrowed JRuby (`--wait-idle`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait_idle: bool,
    /// How long `wait_idle` may take, milliseconds (default 600 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_timeout_ms: Option<u64>,
}

/// `set-weight`: a new SRV weight for one master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetWeight {
    /// "host" or "host:port" of the master.
    pub host: String,
    /// The new weight, 0..=65535 (validated by the daemon).
    pub weight: i64,
}

/// `explain`: which published names to explain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainArgs {
    /// A site name, "@" for the site-less names at the zone apex, or none for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// A client address: explain the site-less names as this client gets them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<std::net::IpAddr>,
}

/// `reload`. `{"command": "reload"}` (what older srvctl sends) is a reload
/// without `force`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadArgs {
    /// Apply the reload even when it would remove every master, or more
    /// than half of them (refused otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// The daemon's answer: `{"ok": {...}}`, `{"refused": {...}}` or `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    /// Done (for a change: on disk and in the DNS answers).
    Ok(Reply),
    /// Not done, nothing changed; the message says why.
    Refused(Failure),
    /// Not done because something failed on the daemon's side (e.g. the
    /// registry file could not be written); nothing changed.
    Error(Failure),
}

/// Why a request was not done. `file`/`key`/`reason` are set when a file is at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The whole message, as srvctl prints it.
    pub message: String,
    /// The file at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The key at fault inside `file` (`master[2].port`, `zone.ttl`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The line of `file` at fault, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Why, without file and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Failure {
    /// A failure that is about no file: only a message.
    pub fn new(message: impl Into<String>) -> Failure {
        Failure { message: message.into(), file: None, key: None, line: None, reason: None }
    }
}

impl From<crate::input::error::InputError> for Failure {
    fn from(e: crate::input::error::InputError) -> Failure {
        Failure { message: e.to_string(), file: Some(e.file), key: Some(e.key), line: e.line, reason: Some(e.reason) }
    }
}

/// The data of a successful request, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reply {
    /// add-master, remove-master, drain, undrain or set-weight.
    Change(ChangeReport),
    /// list.
    Masters(MastersReport),
    /// status.
    Status(StatusReport),
    /// explain.
    Explain(ExplainReport),
    /// reload.
    Reload(ReloadReport),
}

/// A master as the registry has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterInfo {
    /// Host name without the trailing dot.
    pub host: String,
    /// Puppet Server port.
    pub port: u16,
    /// The site it belongs to.
    pub site: String,
    /// Its roles ("puppet", "ca", "report", "fileserver").
    pub roles: Vec<String>,
    /// SRV weight inside its priority tier.
    pub weight: u16,
    /// Registry addresses (published for an in-zone host, used by the checks).
    pub addresses: Vec<String>,
    /// Whether it is drained (out of the answers, still checked).
    pub drained: bool,
    /// "https" or "tcp".
    pub check: String,
}

impl MasterInfo {
    /// "host:port".
    pub fn id(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The outcome of add-master, remove-master, drain, undrain, set-weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeReport {
    /// The command ("add-master", ...).
    pub action: String,
    /// False when the master already was in the asked state (nothing written).
    pub changed: bool,
    /// The master after the change (before it, for remove-master).
    pub master: MasterStatus,
    /// The SOA serial served once the change was applied.
    pub serial: u32,
    /// Human remarks ("pending until its first health check", ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Set by `add-master --wait`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitOutcome>,
}

/// How `add-master --wait` or `drain --wait-idle` ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitOutcome {
    /// add-master: "published" (every role passed its first check), "down"
    /// (a check failed), or "timeout". drain: "idle" (safe to stop),
    /// "timeout" (detail: what is still pending), "undrained" or "removed"
    /// (changed meanwhile).
    pub outcome: String,
    /// A sentence for the operator (which role failed and why, or how long it waited).
    pub detail: String,
}

impl WaitOutcome {
    /// Whether the wait reached its goal (srvctl exits 0 only then):
    /// "published" for add-master, "idle" for drain.
    pub fn succeeded(&self) -> bool {
        self.outcome == "published" || self.outcome == "idle"
    }
}

/// The `list` reply: every master in registry order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MastersReport {
    /// The SOA serial served now.
    pub serial: u32,
    /// The registry file's path.
    pub registry: String,
    /// Every master, in file order.
    pub masters: Vec<MasterInfo>,
}

/// The `status` reply: every master with the health of each role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The SOA serial served now.
    pub serial: u32,
    /// TTL of published records, seconds.
    pub ttl: u32,
    /// When this srvd started.
    pub started: u64,
    /// When this report was made.
    pub now: u64,
    /// Every master in registry order, with its health.
    pub masters: Vec<MasterStatus>,
    /// Set when storing the SOA serial has failed since srvd started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_store: Option<SerialStoreReport>,
}

/// Trouble storing the SOA serial in `state_dir` (full disk, unwritable
/// file). While it lasts, srvctl changes that alter the answers are refused,
/// and health transitions are served under the last stored serial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialStoreReport {
    /// Failed attempts since srvd started.
    pub failures: u64,
    /// The last failure (file and OS error), while storing fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The answers changed under the served serial; a higher serial will be
    /// served as soon as it can be stored.
    pub behind: bool,
}

/// A master with its health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MasterStatus {
    /// The master as the registry has it (flattened into this object).
    #[serde(flatten)]
    pub master: MasterInfo,
    /// When the master was drained (for a master already drained when srvd
    /// started, or drained by hand and reloaded: that moment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained_since: Option<u64>,
    /// drained_since + zone ttl: after this no cached answer names the master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers_expire: Option<u64>,
    /// Drained and answers_expire has passed: the master can be stopped.
    pub safe_to_stop: bool,
    /// One entry per role of the master.
    pub health: Vec<RoleHealth>,
    /// The master's JRuby figures, when srvd fetches them (capacity
    /// weights, or the master is drained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jrubies: Option<Box<JrubyReport>>,
    /// Drained, answers expired, and no JRuby borrowed in figures fetched
    /// after that: no agent run is in progress, the master can be stopped.
    /// `None` when the master is not drained or has no JRuby figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<bool>,
}

/// A master's JRuby pool as last fetched from its status API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JrubyReport {
    /// When the figures were fetched (none yet: 0).
    pub at: u64,
    /// Pool size (`num-jrubies`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u32>,
    /// Idle instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free: Option<u32>,
    /// Instances lent to requests (agent runs in progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub borrowed: Option<u32>,
    /// Requests waiting for an instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<u32>,
    /// Moving average of spare instances (what capacity weights use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spare_avg: Option<f64>,
    /// Why the last fetch failed, while it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The health of one role of a master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleHealth {
    /// "puppet", "ca", "report" or "fileserver".
    pub role: String,
    /// "up", "down", "pending" (added, not published before its first
    /// successful check) or "unchecked" (no state known since srvd started:
    /// published until its first check).
    pub state: String,
    /// When the state was entered, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// The result of the check that caused the state ("connection refused", ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// None when not checked since srvd started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<CheckResult>,
    /// Whether the master is in the answers for this role on at least one name.
    pub published: bool,
    /// Role `ca`: the fingerprint (`SHA256:..`) of the CA certificate the
    /// master served when last compared with `health.ca_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_fingerprint: Option<String>,
}

/// The last health check of one role of a master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// When it finished, unix seconds.
    pub at: u64,
    /// Whether it passed.
    pub ok: bool,
    /// "200 OK", "connection refused", ...
    pub detail: String,
    /// How long it took, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// The `explain` reply: every published SRV name with its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainReport {
    /// The SOA serial the answers are served under.
    pub serial: u32,
    /// TTL of the records, seconds (how long resolvers may keep them).
    pub ttl: u32,
    /// The names asked for, in config order (each site's four roles, then the apex's).
    pub names: Vec<NameExplain>,
    /// With `--client`: the site that client gets on the site-less names, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientExplain>,
}

/// Which site's answers a client gets on the site-less names (`explain --client`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientExplain {
    /// The client address asked about.
    pub address: std::net::IpAddr,
    /// The site whose answers it gets; `None`: the site-less pool.
    pub site: Option<String>,
    /// `"network"` (inside one of the site's networks), `"default"`
    /// (`policy.client_site_default`), `"pool"` (no network and no
    /// default) or `"no-networks"` (no site has networks).
    pub reason: String,
    /// The longest matching network, for `"network"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The prefix length of the address within which every client gets the
    /// same answer (the ECS scope srvd answers a trusted resolver with).
    pub scope: u8,
    /// The same in words.
    pub why: String,
}

/// One published SRV name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameExplain {
    /// Fully qualified, with the trailing dot.
    pub name: String,
    /// None for the site-less names at the apex.
    pub site: Option<String>,
    /// "puppet", "ca", "report" or "fileserver".
    pub role: String,
    /// "normal", "all-down", "empty" or "no-masters".
    pub mode: String,
    /// In answer order.
    pub records: Vec<SrvRecord>,
    /// Every master with this role, in or out, and why.
    pub masters: Vec<MasterVerdict>,
}

/// One SRV record of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrvRecord {
    /// SRV priority (lower is tried first).
    pub priority: u16,
    /// SRV weight among records of the same priority.
    pub weight: u16,
    /// The port agents connect to.
    pub port: u16,
    /// Host name without the trailing dot.
    pub target: String,
}

/// Why one master is, or is not, in one answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterVerdict {
    /// "host:port".
    pub master: String,
    /// The master's site.
    pub site: String,
    /// True when the master is in the answer.
    #[serde(rename = "in")]
    pub included: bool,
    /// "in", "in-all-down", "down", "pending", "drained", "standby-ca", "all-down-empty".
    pub verdict: String,
    /// Failover tier of the master's site as seen from this name (0 = local), when in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<usize>,
    /// SRV priority it is published with, when in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
    /// A sentence saying why.
    pub reason: String,
    /// SRV weight it is published with, when in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
    /// How the weight was chosen (`policy.weights`): the registry, or the
    /// capacity figures it follows (spare JRubies, pool size, level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_inputs: Option<String>,
}

/// The `reload` reply: what the reload changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The SOA serial served after the reload.
    pub serial: u32,
    /// Whether the published data changed.
    pub changed: bool,
    /// Masters ("host:port") added, removed or modified by the reload.
    pub added: Vec<String>,
    /// Masters removed by the reload.
    pub removed: Vec<String>,
    /// Masters whose entry changed.
    pub modified: Vec<String>,
    /// Settings that changed in the file but only take effect at restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_needed: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shapes() {
        let r = Request::SetWeight(SetWeight { host: "pm1.example.com".into(), weight: 5 });
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"command":"set-weight","host":"pm1.example.com","weight":5}"#);
        assert_eq!(serde_json::to_string(&Request::List).unwrap(), r#"{"command":"list"}"#);
        let back: Request = serde_json::from_str(r#"{"command":"list"}"#).unwrap();
        assert_eq!(back, Request::List);
        // reload: old clients send no `force`; an unforced reload is sent the same way.
        let back: Request = serde_json::from_str(r#"{"command":"reload"}"#).unwrap();
        assert_eq!(back, Request::Reload(ReloadArgs { force: false }));
        assert_eq!(serde_json::to_string(&back).unwrap(), r#"{"command":"reload"}"#);
        let forced = Request::Reload(ReloadArgs { force: true });
        assert_eq!(serde_json::to_string(&forced).unwrap(), r#"{"command":"reload","force":true}"#);
        assert_eq!(serde_json::from_str::<Request>(r#"{"command":"reload","force":true}"#).unwrap(), forced);
        let resp = Response::Refused(Failure::new("no"));
        assert_eq!(serde_json::to_string(&resp).unwrap(), r#"{"refused":{"message":"no"}}"#);
        let st = Response::Ok(Reply::Status(StatusReport {
            serial: 7,
            ttl: 30,
            started: 1,
            now: 2,
            masters: vec![MasterStatus {
                master: MasterInfo {
                    host: "a.example".into(),
                    port: 8140,
                    site: "dc1".into(),
                    roles: vec!["puppet".into()],
                    weight: 10,
                    addresses: vec![],
                    drained: false,
                    check: "https".into(),
                },
                drained_since: None,
                answers_expire: None,
                safe_to_stop: false,
                health: vec![RoleHealth {
                    role: "puppet".into(),
                    state: "up".into(),
                    since: Some(1),
                    reason: None,
                    last_check: Some(CheckResult { at: 2, ok: true, detail: "200".into(), latency_ms: Some(1.5) }),
                    published: true,
                    ca_fingerprint: None,
                }],
                jrubies: None,
                idle: None,
            }],
            serial_store: None,
        }));
        let text = serde_json::to_string(&st).unwrap();
        assert!(text.starts_with(r#"{"ok":{"kind":"status","serial":7"#), "{text}");
        let back: Response = serde_json::from_str(&text).unwrap();
        assert_eq!(back, st);
    }
}
