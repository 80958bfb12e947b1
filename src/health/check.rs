//! The checks themselves: an HTTPS GET of the Puppet status API, or a TCP
//! connect. Each returns a [`CheckOutcome`] with a short operator-facing
//! reason ("connection refused", "HTTP 503", "certificate not valid for
//! host", "not a CA (404)", "cannot resolve HOST: ...").
//!
//! One `reqwest::Client` per master keeps its connection alive between
//! checks (Puppet Server allows keep-alive), so a steady-state check costs one
//! request, not a TCP + TLS handshake. A master that crashes resets the kept
//! connection and the next check reconnects and sees the refusal.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rustls::CertificateError;
use serde::Serialize;

use crate::input::config::HealthConfig;
use crate::input::registry::{CheckKind, Master, Role};

/// One kind of request made to a master; each covers some of its roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Probe {
    /// `GET /status/v1/simple`: roles puppet, report, fileserver.
    Status,
    /// `GET /status/v1/simple/ca`: role ca.
    CaStatus,
    /// TCP connect only: every role of a `check = "tcp"` master.
    Tcp,
}

impl Probe {
    /// The probes a master needs and the roles each one decides.
    pub fn plan(m: &Master) -> Vec<(Probe, Vec<Role>)> {
        match m.check {
            CheckKind::Tcp => vec![(Probe::Tcp, m.roles.clone())],
            CheckKind::Https => {
                let mut out = Vec::new();
                let status: Vec<Role> = m.roles.iter().copied().filter(|r| *r != Role::Ca).collect();
                if !status.is_empty() {
                    out.push((Probe::Status, status));
                }
                if m.has_role(Role::Ca) {
                    out.push((Probe::CaStatus, vec![Role::Ca]));
                }
                out
            }
        }
    }

    /// The URL path, for https probes.
    pub fn path(self) -> Option<&'static str> {
        match self {
            Probe::Status => Some("/status/v1/simple"),
            Probe::CaStatus => Some("/status/v1/simple/ca"),
            Probe::Tcp => None,
        }
    }

    /// What is done, for status output: "GET /status/v1/simple", "tcp connect".
    pub fn describe(self) -> &'static str {
        match self {
            Probe::Status => "GET /status/v1/simple",
            Probe::CaStatus => "GET /status/v1/simple/ca",
            Probe::Tcp => "tcp connect",
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    /// Whether the master passed (counts toward `rise`; a failure toward `fall`).
    pub ok: bool,
    /// Why it failed, or what passed ("HTTP 200", "connected").
    pub reason: String,
}

impl CheckOutcome {
    /// A passed check, with what passed ("HTTP 200", "connected").
    pub fn ok(reason: impl Into<String>) -> Self {
        CheckOutcome { ok: true, reason: reason.into() }
    }
    /// A failed check, with an operator-facing reason ("connection refused").
    pub fn fail(reason: impl Into<String>) -> Self {
        CheckOutcome { ok: false, reason: reason.into() }
    }
}

/// Something that checks one (master, probe). The scheduler adds the
/// timeout around [`Check::check`]; implementations need not.
#[async_trait]
pub trait Check: Send {
    /// Runs one check; the scheduler cuts it off at `health.timeout`.
    async fn check(&mut self) -> CheckOutcome;
}

/// Makes a [`Check`] for each (master, probe). The daemon uses
/// [`NetworkChecks`]; tests substitute scripted checks.
pub trait CheckFactory: Send + Sync + 'static {
    /// A check of `probe` against `master`, kept for the master's lifetime
    /// (so it may hold a kept-alive connection).
    fn make(&self, master: &Master, probe: Probe) -> Box<dyn Check>;

    /// Called when `[health]` changed on reload (already validated and loaded).
    fn configure(&self, _cfg: &HealthConfig) {}
}

/// The real checks, over the network.
pub struct NetworkChecks {
    tls: Mutex<Arc<rustls::ClientConfig>>,
    /// How long an idle kept-alive connection is kept.
    idle: Mutex<Duration>,
}

impl NetworkChecks {
    /// Checks with the TLS material and timing of `cfg` (loaded by the config).
    pub fn new(cfg: &HealthConfig) -> NetworkChecks {
        NetworkChecks { tls: Mutex::new(cfg.tls.config().clone()), idle: Mutex::new(idle_for(cfg)) }
    }
}

fn idle_for(cfg: &HealthConfig) -> Duration {
    (cfg.interval * 3).max(Duration::from_secs(10))
}

impl CheckFactory for NetworkChecks {
    fn make(&self, master: &Master, probe: Probe) -> Box<dyn Check> {
        let host = master.host_str();
        match probe.path() {
            None => Box::new(TcpCheck { host, port: master.port, addresses: master.addresses.clone() }),
            Some(path) => {
                let tls = (**self.tls.lock().unwrap_or_else(|e| e.into_inner())).clone();
                let idle = *self.idle.lock().unwrap_or_else(|e| e.into_inner());
                let addresses = master.addresses.clone();
                let make_client: ClientMaker = Box::new(move || {
                    reqwest::Client::builder()
                        .use_preconfigured_tls(tls.clone())
                        .dns_resolver(Arc::new(MasterResolver { addresses: addresses.clone() }))
                        .no_proxy()
                        .redirect(reqwest::redirect::Policy::none())
                        .pool_max_idle_per_host(1)
                        .pool_idle_timeout(idle)
                        .tcp_nodelay(true)
                        .user_agent(concat!("srvd/", env!("CARGO_PKG_VERSION"), " health-check"))
                        .build()
                });
                let url = format!("https://{host}:{}{path}", master.port);
                Box::new(HttpsCheck { client: make_client(), make_client, url, probe, host })
            }
        }
    }

    fn configure(&self, cfg: &HealthConfig) {
        *self.tls.lock().unwrap_or_else(|e| e.into_inner()) = cfg.tls.config().clone();
        *self.idle.lock().unwrap_or_else(|e| e.into_inner()) = idle_for(cfg);
    }
}

/// Resolution failure, kept recognisable in the reqwest error chain.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {reason}")]
struct ResolveError {
    host: String,
    reason: String,
}

/// Resolves a master: its registry `addresses` when given, else the system resolver.
struct MasterResolver {
    addresses: Vec<IpAddr>,
}

impl reqwest::dns::Resolve for MasterResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let fixed: Vec<SocketAddr> = self.addresses.iter().map(|ip| SocketAddr::new(*ip, 0)).collect();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = if fixed.is_empty() { system_resolve(&host, 0).await? } else { fixed };
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

async fn system_resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
    let err = |reason: String| ResolveError { host: host.to_string(), reason };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await.map_err(|e| err(resolve_reason(&e)))?.collect();
    if addrs.is_empty() {
        return Err(err("no addresses".into()));
    }
    Ok(addrs)
}

fn resolve_reason(e: &io::Error) -> String {
    let s = e.to_string();
    // "failed to lookup address information: Name or service not known"
    s.rsplit_once(": ").map(|(_, r)| r.to_string()).unwrap_or(s)
}

struct TcpCheck {
    host: String,
    port: u16,
    addresses: Vec<IpAddr>,
}

#[async_trait]
impl Check for TcpCheck {
    async fn check(&mut self) -> CheckOutcome {
        let addrs = if self.addresses.is_empty() {
            match system_resolve(&self.host, self.port).await {
                Ok(a) => a,
                Err(e) => return CheckOutcome::fail(e.to_string()),
            }
        } else {
            self.addresses.iter().map(|ip| SocketAddr::new(*ip, self.port)).collect()
        };
        let mut last = None;
        for a in addrs {
            match tokio::net::TcpStream::connect(a).await {
                Ok(_) => return CheckOutcome::ok("connected"),
                Err(e) => last = Some(e),
            }
        }
        CheckOutcome::fail(last.map(|e| io_reason(&e)).unwrap_or_else(|| "no address to connect to".into()))
    }
}

/// Builds a fresh HTTPS client (and so a fresh connection pool).
type ClientMaker = Box<dyn Fn() -> Result<reqwest::Client, reqwest::Error> + Send + Sync>;

struct HttpsCheck {
    client: Result<reqwest::Client, reqwest::Error>,
    /// After a failed check the pool is dropped: the next check opens a new
    /// connection instead of reusing one the master may have given up on
    /// (e.g. after a TLS 1.3 post-handshake alert).
    make_client: ClientMaker,
    url: String,
    probe: Probe,
    host: String,
}

/// Bodies are read (so the connection can be reused) up to this size.
const MAX_BODY: usize = 64 * 1024;

#[async_trait]
impl Check for HttpsCheck {
    async fn check(&mut self) -> CheckOutcome {
        let outcome = self.check_once().await;
        if !outcome.ok {
            self.client = (self.make_client)();
        }
        outcome
    }
}

impl HttpsCheck {
    async fn check_once(&mut self) -> CheckOutcome {
        let client = match &self.client {
            Ok(c) => c,
            Err(e) => return CheckOutcome::fail(format!("cannot build HTTPS client: {e}")),
        };
        let mut resp = match client.get(&self.url).send().await {
            Ok(r) => r,
            Err(e) => return CheckOutcome::fail(error_reason(&e, &self.host)),
        };
        let status = resp.status();
        let mut read = 0usize;
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    read += c.len();
                    if read > MAX_BODY {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => return CheckOutcome::fail(format!("HTTP {}: body: {}", status.as_u16(), error_reason(&e, &self.host))),
            }
        }
        match status.as_u16() {
            200 => CheckOutcome::ok("HTTP 200"),
            404 if self.probe == Probe::CaStatus => CheckOutcome::fail("not a CA (404)"),
            code => CheckOutcome::fail(format!("HTTP {code}")),
        }
    }
}

/// Turns a reqwest error into a short reason by looking through its causes.
pub fn error_reason(e: &reqwest::Error, host: &str) -> String {
    if let Some(r) = find_reason(e, host) {
        return r;
    }
    let mut innermost: &(dyn std::error::Error + 'static) = e;
    while let Some(s) = innermost.source() {
        innermost = s;
    }
    if e.is_connect() { format!("connect failed: {innermost}") } else { innermost.to_string() }
}

/// The first cause with a known short reason. io::Errors may wrap other
/// errors (even other io::Errors) that `source()` skips, so look inside.
fn find_reason(err: &(dyn std::error::Error + 'static), host: &str) -> Option<String> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<ResolveError>() {
            return Some(r.to_string());
        }
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(tls_reason(t, host));
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(r) = io.get_ref().and_then(|inner| find_reason(inner, host)) {
                return Some(r);
            }
            if let Some(r) = known_io_reason(io.kind()) {
                return Some(r.to_string());
            }
        }
        cur = e.source();
    }
    None
}

fn known_io_reason(kind: io::ErrorKind) -> Option<&'static str> {
    use io::ErrorKind::*;
    Some(match kind {
        ConnectionRefused => "connection refused",
        ConnectionReset => "connection reset",
        ConnectionAborted => "connection aborted",
        TimedOut => "connect timed out",
        HostUnreachable => "host unreachable",
        NetworkUnreachable => "network unreachable",
        AddrNotAvailable => "address not available",
        UnexpectedEof => "connection closed by the master",
        BrokenPipe => "connection closed by the master",
        _ => return None,
    })
}

fn io_reason(e: &io::Error) -> String {
    known_io_reason(e.kind()).map(str::to_string).unwrap_or_else(|| e.to_string())
}

fn tls_reason(e: &rustls::Error, host: &str) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "certificate not valid for host".to_string()
            }
            CertificateError::UnknownIssuer => "certificate not signed by health.ca_file".to_string(),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "certificate expired".to_string(),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "certificate not yet valid".to_string(),
            CertificateError::Revoked => "certificate revoked".to_string(),
            other => format!("certificate rejected for {host}: {other:?}"),
        },
        rustls::Error::AlertReceived(a) => format!("TLS alert from the master: {a:?}"),
        other => format!("TLS failure: {other}"),
    }
}

/// How durations appear in reasons ("1s", "250ms", "1.5s").
pub use crate::input::names::fmt_duration;
