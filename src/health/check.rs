//! The checks themselves: an HTTPS GET of the Puppet status API, or a TCP
//! connect. Each returns a [`CheckOutcome`] with a short operator-facing
//! reason ("connection refused", "HTTP 503", "certificate not valid for
//! host", "not a CA (404)", "cannot resolve HOST: ...").
//!
//! Each check holds its connection to the master between checks: an
//! `https` check keeps its TLS connection alive (Puppet Server allows
//! keep-alive) and speaks a minimal HTTP/1.1 on it, so a steady-state check
//! costs one request, not a TCP + TLS handshake; a `tcp` check keeps the
//! connection of its last connect. [`Check::closed`] resolves as soon as
//! the master closes or resets that idle connection (a crashed master's
//! kernel does so at once), and the scheduler then checks again at once: a
//! refused reconnect is a failure, a working one (a master that closed an
//! idle connection by itself) is not.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rustls::CertificateError;
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::input::config::HealthConfig;
use crate::input::registry::{CheckKind, Master, Role};
use crate::input::tls::Fingerprint;

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
    /// For a `ca` check: the fingerprint of the CA certificate the master
    /// serves, when it was fetched (see [`CA_RECHECK`]).
    pub ca_fingerprint: Option<String>,
}

impl CheckOutcome {
    /// A passed check, with what passed ("HTTP 200", "connected").
    pub fn ok(reason: impl Into<String>) -> Self {
        CheckOutcome { ok: true, reason: reason.into(), ca_fingerprint: None }
    }
    /// A failed check, with an operator-facing reason ("connection refused").
    pub fn fail(reason: impl Into<String>) -> Self {
        CheckOutcome { ok: false, reason: reason.into(), ca_fingerprint: None }
    }
    /// The same outcome, noting the CA fingerprint the master serves.
    pub fn with_ca(mut self, fingerprint: Option<String>) -> Self {
        self.ca_fingerprint = fingerprint;
        self
    }
}

/// Something that checks one (master, probe). The scheduler adds the
/// timeout around [`Check::check`]; implementations need not. A check
/// made by [`CheckFactory::make`] starts without a connection, so a second
/// one made while the first is in use is a check on a fresh connection
/// (the scheduler's confirming checks).
#[async_trait]
pub trait Check: Send {
    /// One check: on the held connection when there is one (a held
    /// connection the master closed meanwhile is replaced by a fresh one
    /// before anything counts), else on a new connection.
    async fn check(&mut self) -> CheckOutcome;

    /// Resolves, with a reason, when the held idle connection is closed or
    /// reset by the master (the connection is then dropped); never resolves
    /// while no connection is held. Cancel-safe.
    async fn closed(&mut self) -> String {
        std::future::pending().await
    }

    /// Called after the host's routes, addresses or links changed: when
    /// the held connection can no longer be routed (its route or its local
    /// address is gone), drops it and says why. A lookup, no packet.
    fn unroutable(&mut self) -> Option<String> {
        None
    }
}

/// Makes a [`Check`] for each (master, probe). The daemon uses
/// [`NetworkChecks`]; tests substitute scripted checks.
pub trait CheckFactory: Send + Sync + 'static {
    /// A check of `probe` against `master`, kept for the master's lifetime
    /// (so it may hold a kept-alive connection).
    fn make(&self, master: &Master, probe: Probe) -> Box<dyn Check>;

    /// Called when `[health]` changed on reload (already validated and loaded).
    fn configure(&self, _cfg: &HealthConfig) {}

    /// A fetcher of the master's JRuby figures (`GET
    /// /status/v1/services/jruby-metrics?level=debug`), for capacity
    /// weights and `drain --wait-idle`; `None` when there is none (a `tcp`
    /// master, or scripted checks in tests).
    fn metrics(&self, _master: &Master) -> Option<Box<dyn MetricsSource>> {
        None
    }
}

/// Fetches a master's JRuby figures; holds its own connection.
#[async_trait]
pub trait MetricsSource: Send {
    /// One fetch (the caller adds the timeout).
    async fn fetch(&mut self) -> Result<super::capacity::JrubyMetrics, String>;
}

/// The real checks, over the network.
pub struct NetworkChecks {
    tls: Mutex<(Arc<rustls::ClientConfig>, Arc<Vec<Fingerprint>>)>,
}

impl NetworkChecks {
    /// Checks with the TLS material of `cfg` (loaded by the config).
    pub fn new(cfg: &HealthConfig) -> NetworkChecks {
        NetworkChecks { tls: Mutex::new(Self::material(cfg)) }
    }

    fn material(cfg: &HealthConfig) -> (Arc<rustls::ClientConfig>, Arc<Vec<Fingerprint>>) {
        (cfg.tls.config().clone(), Arc::new(cfg.tls.ca_fingerprints().to_vec()))
    }

    fn conn(&self, master: &Master) -> (HttpsConn, Arc<Vec<Fingerprint>>) {
        let target = Target::of(master);
        let (cfg, fps) = self.tls.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let name = ServerName::try_from(target.host.clone()).ok();
        (HttpsConn { target, tls: TlsConnector::from(cfg), name, conn: None, buf: Vec::new() }, fps)
    }
}

/// A GET request for `path`, built once per check.
fn get_request(host: &str, port: u16, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: srvd/{} health-check\r\nAccept: */*\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

impl CheckFactory for NetworkChecks {
    fn make(&self, master: &Master, probe: Probe) -> Box<dyn Check> {
        match probe.path() {
            None => {
                let target = Target::of(master);
                Box::new(TcpCheck { target, conn: None })
            }
            Some(path) => {
                let (conn, fps) = self.conn(master);
                let request = get_request(&conn.target.host, conn.target.port, path);
                let ca = (probe == Probe::CaStatus).then(|| CaGuard {
                    trusted: fps,
                    request: get_request(&conn.target.host, conn.target.port, CA_CERT_PATH),
                    seen: None,
                });
                Box::new(HttpsCheck { conn, request, probe, ca })
            }
        }
    }

    fn configure(&self, cfg: &HealthConfig) {
        *self.tls.lock().unwrap_or_else(|e| e.into_inner()) = Self::material(cfg);
    }

    fn metrics(&self, master: &Master) -> Option<Box<dyn MetricsSource>> {
        if master.check != CheckKind::Https {
            return None;
        }
        let (conn, _) = self.conn(master);
        let request = get_request(&conn.target.host, conn.target.port, super::capacity::METRICS_PATH);
        Some(Box::new(HttpsMetrics { conn, request }))
    }
}

/// Where Puppet Server serves its CA certificate (PEM; no client
/// certificate needed: agents fetch it before they have one).
pub const CA_CERT_PATH: &str = "/puppet-ca/v1/certificate/ca";

/// How long a CA master's served CA certificate, once fetched and
/// compared, is trusted on the same connection before it is fetched again.
/// It is always fetched on a new connection: a master restarted with
/// another CA (restored from an old backup, or built with a fresh CA)
/// closes the held connection, so it is compared before its first
/// passing check counts and is never published with the wrong CA. This
/// period only bounds how long a swap behind a connection that stays open
/// (a TLS-terminating proxy) goes unseen.
pub const CA_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// Where a master is reached: its registry `addresses`, else what the
/// system resolver returns for its host name.
struct Target {
    host: String,
    port: u16,
    addresses: Vec<IpAddr>,
}

impl Target {
    fn of(master: &Master) -> Target {
        Target { host: master.host_str(), port: master.port, addresses: master.addresses.clone() }
    }

    /// Connects to the first address that accepts.
    async fn connect(&self) -> Result<TcpStream, String> {
        let addrs = if self.addresses.is_empty() {
            system_resolve(&self.host, self.port).await.map_err(|e| e.to_string())?
        } else {
            self.addresses.iter().map(|ip| SocketAddr::new(*ip, self.port)).collect()
        };
        let mut last = None;
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.map(|e| io_reason(&e)).unwrap_or_else(|| "no address to connect to".into()))
    }
}

/// Why the held connection `s` can no longer be routed, if so: its peer
/// has no route any more (an unreachable, prohibit or blackhole route, the
/// interface down) or its local address is gone. A UDP socket bound to the
/// connection's local address and connected to its peer does the kernel's
/// route lookup without sending anything. When that cannot be told (out of
/// file descriptors, say), the next check will tell.
fn route_gone(s: &TcpStream) -> Option<String> {
    let (local, peer) = match (s.local_addr(), s.peer_addr()) {
        (Ok(l), Ok(p)) => (l, p),
        (Err(e), _) | (_, Err(e)) => return Some(io_reason(&e)),
    };
    let probe = match std::net::UdpSocket::bind(SocketAddr::new(local.ip(), 0)) {
        Ok(u) => u,
        Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => return Some(format!("local address {} is gone", local.ip())),
        Err(_) => return None,
    };
    match probe.connect(peer) {
        Ok(()) => None,
        Err(e) => Some(format!("no route to {} any more ({})", peer.ip(), io_reason(&e))),
    }
}

/// Resolution failure.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {reason}")]
struct ResolveError {
    host: String,
    reason: String,
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

/// A TCP connect; the connection of the last successful connect is held,
/// so a crash (the master's kernel resets it) is seen at once.
struct TcpCheck {
    target: Target,
    conn: Option<TcpStream>,
}

#[async_trait]
impl Check for TcpCheck {
    async fn check(&mut self) -> CheckOutcome {
        match self.target.connect().await {
            Ok(s) => {
                self.conn = Some(s);
                CheckOutcome::ok("connected")
            }
            Err(reason) => {
                self.conn = None;
                CheckOutcome::fail(reason)
            }
        }
    }

    async fn closed(&mut self) -> String {
        let Some(c) = self.conn.as_mut() else { return std::future::pending().await };
        let mut b = [0u8; 256];
        let reason = loop {
            // Whatever a master sends unasked on a bare TCP connection is
            // read and ignored; only the end of the connection matters.
            match c.read(&mut b).await {
                Ok(0) => break "connection closed by the master".to_string(),
                Ok(_) => continue,
                Err(e) => break io_reason(&e),
            }
        };
        self.conn = None;
        reason
    }

    fn unroutable(&mut self) -> Option<String> {
        let reason = route_gone(self.conn.as_ref()?)?;
        self.conn = None;
        Some(reason)
    }
}

/// A kept-alive TLS connection to a master and the minimal HTTP/1.1 client on it.
struct HttpsConn {
    target: Target,
    tls: TlsConnector,
    /// The name the certificate is verified for (`None`: not a DNS name).
    name: Option<ServerName<'static>>,
    conn: Option<TlsStream<TcpStream>>,
    /// Read buffer, kept between requests.
    buf: Vec<u8>,
}

/// One answer of [`HttpsConn::get`].
struct Got {
    status: u16,
    /// The body, whole unless it was larger than [`MAX_BODY`].
    body: Vec<u8>,
    /// Whether the body was cut at [`MAX_BODY`].
    cut: bool,
    /// Whether the answer came on a connection opened for this request.
    fresh: bool,
}

impl HttpsConn {
    /// `request` on the held connection (a stale one is replaced first),
    /// else on a new one; the connection is kept when the answer allows.
    async fn get(&mut self, request: &[u8]) -> Result<Got, String> {
        if let Some(mut c) = self.conn.take() {
            match exchange(&mut c, request, &mut self.buf).await {
                Ok((a, body, cut)) => {
                    if a.keep {
                        self.conn = Some(c);
                    }
                    return Ok(Got { status: a.status, body, cut, fresh: false });
                }
                // Closed before any byte of the answer (the master may drop
                // idle connections): not a failure, try a fresh connection.
                Err(HttpError::Stale(_)) => {}
                Err(e) => return Err(e.reason(&self.target.host)),
            }
        }
        let Some(name) = self.name.clone() else {
            return Err(format!("{} is not a valid TLS server name", self.target.host));
        };
        let tcp = self.target.connect().await?;
        let mut c = match self.tls.connect(name, tcp).await {
            Ok(c) => c,
            Err(e) => return Err(find_reason(&e, &self.target.host).unwrap_or_else(|| format!("TLS handshake: {e}"))),
        };
        match exchange(&mut c, request, &mut self.buf).await {
            Ok((a, body, cut)) => {
                if a.keep {
                    self.conn = Some(c);
                }
                Ok(Got { status: a.status, body, cut, fresh: true })
            }
            Err(e) => Err(e.reason(&self.target.host)),
        }
    }

    /// See [`Check::closed`].
    async fn closed(&mut self) -> String {
        let Some(c) = self.conn.as_mut() else { return std::future::pending().await };
        // TLS session tickets and the like are handled inside rustls; the
        // read returns only on application data, the end, or an error.
        let mut b = [0u8; 256];
        let reason = match c.read(&mut b).await {
            Ok(0) => "connection closed by the master".to_string(),
            Ok(_) => "unexpected data from the master".to_string(),
            Err(e) => find_reason(&e, &self.target.host).unwrap_or_else(|| e.to_string()),
        };
        self.conn = None;
        reason
    }

    /// See [`Check::unroutable`].
    fn unroutable(&mut self) -> Option<String> {
        let reason = route_gone(self.conn.as_ref()?.get_ref().0)?;
        self.conn = None;
        Some(reason)
    }
}

/// `GET` of the Puppet status API over a kept-alive TLS connection.
struct HttpsCheck {
    conn: HttpsConn,
    /// The whole request, built once.
    request: Vec<u8>,
    probe: Probe,
    /// For the `ca` probe: the CA identity guard.
    ca: Option<CaGuard>,
}

/// The CA identity guard of one CA master: the served CA certificate must
/// be one of `health.ca_file`'s.
struct CaGuard {
    /// The fingerprints of `health.ca_file` (empty: no file, guard off; the
    /// served certificate is still fetched and shown).
    trusted: Arc<Vec<Fingerprint>>,
    request: Vec<u8>,
    /// The last comparison: when, and its result (fingerprint, or why none).
    seen: Option<(tokio::time::Instant, Result<Fingerprint, String>)>,
}

impl CaGuard {
    /// Whether the served certificate must be fetched (again).
    fn due(&self, fresh_connection: bool) -> bool {
        // While the last comparison failed, every check compares again.
        let passed = |r: &Result<Fingerprint, String>| r.as_ref().is_ok_and(|fp| self.trusted.is_empty() || self.trusted.contains(fp));
        fresh_connection || self.seen.as_ref().is_none_or(|(at, r)| !passed(r) || at.elapsed() >= CA_RECHECK)
    }

    /// The outcome of a passing status check once the CA is compared.
    fn judge(&self) -> CheckOutcome {
        match &self.seen {
            None => CheckOutcome::ok("HTTP 200"),
            Some((_, Err(reason))) => CheckOutcome::fail(reason.clone()),
            Some((_, Ok(fp))) => {
                let shown = Some(fp.to_string());
                if self.trusted.is_empty() || self.trusted.contains(fp) {
                    CheckOutcome::ok("HTTP 200").with_ca(shown)
                } else {
                    CheckOutcome::fail(format!("serves a different CA certificate (fingerprint {fp})")).with_ca(shown)
                }
            }
        }
    }
}

/// The fingerprint of the CA certificate in a `/puppet-ca/v1/certificate/ca`
/// answer: its first certificate (Puppet serves the signing CA first, then
/// any chain above it), or why there is none.
pub fn served_ca(status: u16, body: &[u8], cut: bool) -> Result<Fingerprint, String> {
    if status != 200 {
        return Err(format!("CA certificate: HTTP {status} from {CA_CERT_PATH}"));
    }
    if cut {
        return Err(format!("CA certificate: answer larger than {} KiB", MAX_BODY / 1024));
    }
    let certs = crate::input::tls::pem_certificates(body).ok_or_else(|| "CA certificate: the answer is not valid PEM".to_string())?;
    let first = certs.first().ok_or_else(|| "CA certificate: the answer holds no PEM certificate".to_string())?;
    Ok(Fingerprint::of_der(first.as_ref()))
}

/// Bodies are read (so the connection can be reused) up to this size.
const MAX_BODY: usize = 64 * 1024;
/// A response head larger than this is not a status answer.
const MAX_HEAD: usize = 16 * 1024;

#[async_trait]
impl Check for HttpsCheck {
    async fn check(&mut self) -> CheckOutcome {
        let got = match self.conn.get(&self.request).await {
            Ok(g) => g,
            Err(reason) => return CheckOutcome::fail(reason),
        };
        match got.status {
            200 => {}
            404 if self.probe == Probe::CaStatus => return CheckOutcome::fail("not a CA (404)"),
            code => return CheckOutcome::fail(format!("HTTP {code}")),
        }
        let Some(guard) = self.ca.as_mut() else { return CheckOutcome::ok("HTTP 200") };
        // A new connection may be a restarted master: compare its CA
        // before this check counts (see CA_RECHECK).
        if guard.due(got.fresh) {
            let seen = match self.conn.get(&guard.request).await {
                Ok(g) => served_ca(g.status, &g.body, g.cut),
                Err(reason) => Err(format!("CA certificate: {reason}")),
            };
            guard.seen = Some((tokio::time::Instant::now(), seen));
        }
        guard.judge()
    }

    async fn closed(&mut self) -> String {
        self.conn.closed().await
    }

    fn unroutable(&mut self) -> Option<String> {
        self.conn.unroutable()
    }
}

/// Fetches jruby-metrics over its own kept-alive connection.
struct HttpsMetrics {
    conn: HttpsConn,
    request: Vec<u8>,
}

#[async_trait]
impl MetricsSource for HttpsMetrics {
    async fn fetch(&mut self) -> Result<super::capacity::JrubyMetrics, String> {
        let g = self.conn.get(&self.request).await?;
        if g.status != 200 {
            return Err(format!("HTTP {} from {}", g.status, super::capacity::METRICS_PATH));
        }
        if g.cut {
            return Err(format!("jruby-metrics answer larger than {} KiB", MAX_BODY / 1024));
        }
        super::capacity::JrubyMetrics::parse(&g.body).map_err(|e| e.to_string())
    }
}

/// A status answer: its code and whether the connection can be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The connection may be kept for the next check (keep-alive, body read whole).
    pub keep: bool,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The connection was gone before any byte of the answer.
    #[error("connection closed: {0}")]
    Stale(io::Error),
    /// Reading or writing failed after the answer had begun.
    #[error("{0}")]
    Io(io::Error),
    /// The master closed the connection in the middle of the answer.
    #[error("connection closed by the master")]
    Eof,
    /// The bytes are not an HTTP/1.1 answer srvd understands.
    #[error("malformed HTTP answer: {0}")]
    Malformed(&'static str),
}

impl HttpError {
    fn reason(&self, host: &str) -> String {
        match self {
            HttpError::Stale(e) | HttpError::Io(e) => find_reason(e, host).unwrap_or_else(|| e.to_string()),
            other => other.to_string(),
        }
    }
}

/// Sends `request` and reads one answer (head and body) into `buf`;
/// returns it with its body (decoded, at most [`MAX_BODY`]) and whether
/// the body was cut there.
async fn exchange<S>(c: &mut S, request: &[u8], buf: &mut Vec<u8>) -> Result<(Answer, Vec<u8>, bool), HttpError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    buf.clear();
    if let Err(e) = c.write_all(request).await {
        return Err(HttpError::Stale(e));
    }
    if let Err(e) = c.flush().await {
        return Err(HttpError::Stale(e));
    }
    let mut parser = Parser::default();
    loop {
        match parser.advance(buf)? {
            Some(a) => {
                let (body, cut) = parser.body(buf);
                return Ok((a, body, cut));
            }
            None => {
                let start = buf.len();
                buf.resize(start.saturating_add(4096), 0);
                let r = c.read(buf.get_mut(start..).unwrap_or_default()).await;
                let n = match r {
                    Ok(n) => n,
                    Err(e) if start == 0 => return Err(HttpError::Stale(e)),
                    Err(e) => return Err(HttpError::Io(e)),
                };
                buf.truncate(start.saturating_add(n));
                if n == 0 {
                    if start == 0 {
                        return Err(HttpError::Stale(io::ErrorKind::UnexpectedEof.into()));
                    }
                    // A body delimited by the end of the connection.
                    if let Some(a) = parser.at_eof() {
                        let (body, cut) = parser.body(buf);
                        return Ok((a, body, cut));
                    }
                    return Err(HttpError::Eof);
                }
            }
        }
    }
}

/// How the body of an answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// An incremental HTTP/1.1 response reader over a growing buffer.
#[derive(Debug, Default)]
pub struct Parser {
    head: Option<(usize, u16, bool, Framing)>,
    /// Chunked: where the next chunk-size line starts.
    pos: usize,
}

impl Parser {
    /// Looks at `buf` (everything read so far); `Some` once the answer is whole.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Option<Answer>, HttpError> {
        let (body_start, status, keep, framing) = match self.head {
            Some(h) => h,
            None => {
                let Some(end) = find(buf, b"\r\n\r\n") else {
                    if buf.len() > MAX_HEAD {
                        return Err(HttpError::Malformed("head too large"));
                    }
                    return Ok(None);
                };
                let h = parse_head(buf.get(..end).unwrap_or_default())?;
                let body_start = end.saturating_add(4);
                let h = (body_start, h.0, h.1, h.2);
                self.head = Some(h);
                self.pos = body_start;
                h
            }
        };
        let body = buf.get(body_start..).unwrap_or_default();
        match framing {
            Framing::Length(n) if n > MAX_BODY => Ok(Some(Answer { status, keep: false })),
            Framing::Length(n) => Ok((body.len() >= n).then_some(Answer { status, keep: keep && body.len() == n })),
            Framing::UntilClose => {
                if body.len() > MAX_BODY {
                    return Ok(Some(Answer { status, keep: false }));
                }
                Ok(None)
            }
            Framing::Chunked => loop {
                if self.pos.saturating_sub(body_start) > MAX_BODY {
                    return Ok(Some(Answer { status, keep: false }));
                }
                let rest = buf.get(self.pos..).unwrap_or_default();
                let Some(eol) = find(rest, b"\r\n") else { return Ok(None) };
                let line = rest.get(..eol).unwrap_or_default();
                let hex = line.split(|b| *b == b';').next().unwrap_or_default();
                let size = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                    .ok_or(HttpError::Malformed("bad chunk size"))?;
                let data = eol.saturating_add(2);
                if size == 0 {
                    // Trailers (usually none) end with an empty line.
                    let trailers = rest.get(data..).unwrap_or_default();
                    if trailers.starts_with(b"\r\n") {
                        let end = self.pos.saturating_add(data).saturating_add(2);
                        return Ok(Some(Answer { status, keep: keep && buf.len() == end }));
                    }
                    return match find(trailers, b"\r\n\r\n") {
                        Some(t) => {
                            let end = self.pos.saturating_add(data).saturating_add(t).saturating_add(4);
                            Ok(Some(Answer { status, keep: keep && buf.len() == end }))
                        }
                        None => Ok(None),
                    };
                }
                let next = data.checked_add(size).and_then(|n| n.checked_add(2)).ok_or(HttpError::Malformed("bad chunk size"))?;
                if rest.len() < next {
                    if size > MAX_BODY {
                        return Ok(Some(Answer { status, keep: false }));
                    }
                    return Ok(None);
                }
                if rest.get(next.saturating_sub(2)..next) != Some(b"\r\n") {
                    return Err(HttpError::Malformed("bad chunk"));
                }
                self.pos = self.pos.saturating_add(next);
            },
        }
    }

    /// The body of the answer [`Parser::advance`] found whole in `buf`,
    /// de-chunked, at most 64 KiB; and whether it was cut there.
    pub fn body(&self, buf: &[u8]) -> (Vec<u8>, bool) {
        let Some((start, _, _, framing)) = self.head else { return (Vec::new(), false) };
        let rest = buf.get(start..).unwrap_or_default();
        match framing {
            Framing::Length(n) => {
                let take = n.min(MAX_BODY);
                (rest.get(..take).unwrap_or(rest).to_vec(), n > MAX_BODY || rest.len() < n)
            }
            Framing::UntilClose => (rest.get(..MAX_BODY).unwrap_or(rest).to_vec(), rest.len() > MAX_BODY),
            Framing::Chunked => {
                let mut out = Vec::new();
                let mut at = rest;
                loop {
                    let Some(eol) = find(at, b"\r\n") else { return (out, true) };
                    let hex = at.get(..eol).unwrap_or_default().split(|b| *b == b';').next().unwrap_or_default();
                    let Some(size) = std::str::from_utf8(hex).ok().and_then(|s| usize::from_str_radix(s.trim(), 16).ok()) else {
                        return (out, true);
                    };
                    if size == 0 {
                        return (out, false);
                    }
                    let data = eol.saturating_add(2);
                    let Some(chunk) = data.checked_add(size).and_then(|e| at.get(data..e)) else { return (out, true) };
                    if out.len().saturating_add(chunk.len()) > MAX_BODY {
                        return (out, true);
                    }
                    out.extend_from_slice(chunk);
                    at = at.get(data.saturating_add(size).saturating_add(2)..).unwrap_or_default();
                }
            }
        }
    }

    /// The answer when the connection ended (a body delimited by the close).
    pub fn at_eof(&self) -> Option<Answer> {
        match self.head {
            Some((_, status, _, Framing::UntilClose)) => Some(Answer { status, keep: false }),
            _ => None,
        }
    }
}

/// Status line and headers: (status, keep-alive, framing).
fn parse_head(head: &[u8]) -> Result<(u16, bool, Framing), HttpError> {
    let text = std::str::from_utf8(head).map_err(|_| HttpError::Malformed("head is not text"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .filter(|s| s.len() == 3)
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or(HttpError::Malformed("bad status line"))?;
    let mut keep = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(HttpError::Malformed("not HTTP/1.x")),
    };
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else { return Err(HttpError::Malformed("bad header")) };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            let n: usize = v.parse().map_err(|_| HttpError::Malformed("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Malformed("conflicting Content-Length"));
            }
            length = Some(n);
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.rsplit(',').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        } else if k.eq_ignore_ascii_case("connection") {
            for t in v.split(',') {
                if t.trim().eq_ignore_ascii_case("close") {
                    keep = false;
                } else if t.trim().eq_ignore_ascii_case("keep-alive") && version == "HTTP/1.0" {
                    keep = true;
                }
            }
        }
    }
    let framing = if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        keep = false;
        Framing::UntilClose
    };
    Ok((status, keep, framing))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
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
