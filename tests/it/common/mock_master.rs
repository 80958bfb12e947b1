//! A mock Puppet master for tests: HTTPS on 127.0.0.1 with a certificate
//! from a test CA generated at test time (rcgen), answering the Puppet
//! status API, switchable at runtime between behaviours:
//!
//! - `Healthy`: 200 "running" on `/status/v1/simple` and `/status/v1/simple/ca`
//! - `Status(code)`: that status on every path (503, 404, 500, ...)
//! - `NotCa`: a compiler: 200 on `/status/v1/simple`, 404 on `.../ca`
//! - `Refuse`: the listener is closed and open connections dropped (a crash)
//! - `Hang`: TCP is accepted but nothing is answered (a stuck JVM); open
//!   connections stop answering too
//! - `WrongName`: presents a certificate for another host name
//!
//! Besides the status API, a mock started from a [`TestCa`] serves that CA's
//! certificate on `/puppet-ca/v1/certificate/ca` (the CA identity guard);
//! [`MockMaster::serve`] sets the answer of any path (another CA, garbage,
//! jruby-metrics figures: [`jruby_metrics`]) while the master is healthy.
//!
//! Switching to or from `Refuse` or `WrongName` drops open connections, as
//! restarting the server would. Counters tell how many TCP connections and
//! requests were seen (connection reuse).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// A throw-away certificate authority (the "Puppet CA" of a test).
pub struct TestCa {
    pub cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM and DER.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Puppet CA: srvd test");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert_pem: cert.pem(), cert_der: cert.der().clone(), issuer: Issuer::new(params, key) }
    }

    /// The SHA-256 fingerprint of the CA certificate, as srvd shows it.
    pub fn fingerprint(&self) -> String {
        srvd::input::tls::Fingerprint::of_der(self.cert_der.as_ref()).to_string()
    }

    /// Writes the CA certificate (PEM) to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, &self.cert_pem).unwrap();
    }

    /// Issues a certificate for `names` (server and client auth).
    pub fn issue(&self, names: &[&str]) -> Issued {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("srvd-test"));
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key_der: key.serialize_der(),
        }
    }

    /// A TLS server config presenting a certificate for `names`; with
    /// `client_auth`, clients must present a certificate of this CA.
    pub fn server_tls(&self, names: &[&str], client_auth: bool) -> Arc<ServerConfig> {
        let id = self.issue(names);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
        let b = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.cert_der.clone()).unwrap();
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            b.with_client_cert_verifier(v)
        } else {
            b.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der));
        Arc::new(b.with_single_cert(id.chain, key).unwrap())
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// What the mock master does; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Healthy,
    Status(u16),
    NotCa,
    Refuse,
    Hang,
    WrongName,
    /// Healthy, but each request (and each new connection) fails with
    /// probability 1/n: the connection is reset, or the request is never
    /// answered (held 5 s), or a new connection is dropped at once.
    Lossy(u32),
}

impl Behaviour {
    fn restarts(self) -> bool {
        matches!(self, Behaviour::Refuse | Behaviour::WrongName)
    }
}

struct Inner {
    behaviour: watch::Sender<(Behaviour, u64)>,
    good: Arc<ServerConfig>,
    wrong: Arc<ServerConfig>,
    connections: AtomicU64,
    requests: AtomicU64,
    paths: Mutex<HashMap<String, u64>>,
    /// Answers (status, content type, body) for paths beyond the status API.
    served: Mutex<HashMap<String, (u16, &'static str, String)>>,
}

/// One mock master on 127.0.0.1:`port`.
pub struct MockMaster {
    pub host: String,
    pub port: u16,
    inner: Arc<Inner>,
    /// Bumped when connections must be dropped (a restart).
    epoch: Mutex<u64>,
}

impl MockMaster {
    /// A master for `host` with its own certificate from `ca`.
    pub async fn start(ca: &TestCa, host: &str) -> MockMaster {
        let good = ca.server_tls(&[host], false);
        let wrong = ca.server_tls(&["wrong-name.example.test"], false);
        let m = Self::start_with(host, good, wrong, Behaviour::Healthy).await;
        m.serve(CA_PATH, 200, &ca.cert_pem);
        m
    }

    /// Sets the answer to `path` (exactly as requested, query included) while healthy.
    pub fn serve(&self, path: &str, status: u16, body: &str) {
        let ctype = if path.starts_with("/status/v1/services") { "application/json" } else { "text/plain" };
        self.inner.served.lock().unwrap().insert(path.to_string(), (status, ctype, body.to_string()));
    }

    /// Serves jruby-metrics figures (Puppet Server 7's format).
    pub fn set_jrubies(&self, total: u32, free: u32, queued: u32) {
        self.serve(METRICS_PATH, 200, &jruby_metrics(total, free, queued));
    }

    /// A master with given TLS configs (shared by many mocks in benchmarks).
    pub async fn start_with(host: &str, good: Arc<ServerConfig>, wrong: Arc<ServerConfig>, b: Behaviour) -> MockMaster {
        let inner = Arc::new(Inner {
            behaviour: watch::channel((b, 0)).0,
            good,
            wrong,
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            paths: Mutex::new(HashMap::new()),
            served: Mutex::new(HashMap::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        if b != Behaviour::Refuse {
            tokio::spawn(accept_loop(listener, inner.clone(), 0));
        }
        MockMaster { host: host.to_string(), port, inner, epoch: Mutex::new(0) }
    }

    pub fn behaviour(&self) -> Behaviour {
        self.inner.behaviour.borrow().0
    }

    /// Switches behaviour; from `Refuse` to anything else the port is bound again.
    pub async fn set(&self, b: Behaviour) {
        let old = self.behaviour();
        if old == b {
            return;
        }
        let epoch = {
            let mut e = self.epoch.lock().unwrap();
            if old.restarts() || b.restarts() {
                *e += 1;
            }
            *e
        };
        self.inner.behaviour.send_replace((b, epoch));
        if old == Behaviour::Refuse {
            let listener = bind_again(self.port).await;
            tokio::spawn(accept_loop(listener, self.inner.clone(), epoch));
        }
    }

    /// Drops every open connection, as a restart of the server would, and
    /// keeps the behaviour (new connections are served as before).
    pub fn drop_connections(&self) {
        let epoch = {
            let mut e = self.epoch.lock().unwrap();
            *e += 1;
            *e
        };
        let b = self.behaviour();
        self.inner.behaviour.send_replace((b, epoch));
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// HTTP requests answered (or held) so far.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Requests seen for one path.
    pub fn requests_for(&self, path: &str) -> u64 {
        self.inner.paths.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Registry entry (TOML) for this master in `site`, checked over https.
    pub fn registry_entry(&self, site: &str, roles: &[&str]) -> String {
        let roles: Vec<String> = roles.iter().map(|r| format!("{r:?}")).collect();
        format!(
            "[[master]]\nhost = {:?}\nsite = {site:?}\nport = {}\nroles = [{}]\naddresses = [\"127.0.0.1\"]\n\n",
            self.host,
            self.port,
            roles.join(", ")
        )
    }
}

impl Drop for MockMaster {
    fn drop(&mut self) {
        // Stops the accept loop and every connection.
        let e = *self.epoch.lock().unwrap() + 1;
        self.inner.behaviour.send_replace((Behaviour::Refuse, e));
    }
}

async fn bind_again(port: u16) -> TcpListener {
    // The port was ours a moment ago; retry briefly in case the kernel lags.
    for _ in 0..50 {
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)).await {
            return l;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("cannot bind 127.0.0.1:{port} again");
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>, epoch: u64) {
    let mut rx = inner.behaviour.subscribe();
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((stream, _)) = r else { continue };
                inner.connections.fetch_add(1, Ordering::Relaxed);
                if let Behaviour::Lossy(n) = inner.behaviour.borrow().0
                    && rand::random_range(0..n.max(1)) == 0
                {
                    let _ = stream.set_zero_linger();
                    continue; // dropped at once: reset
                }
                tokio::spawn(connection(stream, inner.clone()));
            }
            r = rx.changed() => {
                if r.is_err() || rx.borrow_and_update().0 == Behaviour::Refuse {
                    return; // drops the listener: connection refused from now on
                }
                let _ = epoch;
            }
        }
    }
}

/// Serves one connection until it closes or the master "restarts".
async fn connection(stream: TcpStream, inner: Arc<Inner>) {
    let mut rx = inner.behaviour.subscribe();
    let (b, epoch) = *rx.borrow_and_update();
    let gone = |rx: &watch::Receiver<(Behaviour, u64)>| {
        let (b, e) = *rx.borrow();
        e != epoch || b == Behaviour::Refuse
    };
    if b == Behaviour::Hang {
        // Accepted by the kernel, never served.
        hold(&mut rx, |rx| rx.borrow().0 != Behaviour::Hang).await;
        return;
    }
    let tls = if b == Behaviour::WrongName { inner.wrong.clone() } else { inner.good.clone() };
    let mut s = tokio::select! {
        r = TlsAcceptor::from(tls).accept(stream) => match r { Ok(s) => s, Err(_) => return },
        _ = hold(&mut rx, gone) => return,
    };
    let mut buf = Vec::with_capacity(1024);
    loop {
        // Read one request head.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 2048];
            let n = tokio::select! {
                r = s.read(&mut chunk) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
                _ = hold(&mut rx, gone) => return,
            };
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        inner.requests.fetch_add(1, Ordering::Relaxed);
        *inner.paths.lock().unwrap().entry(path.clone()).or_default() += 1;
        let b = rx.borrow_and_update().0;
        if gone(&rx) {
            return;
        }
        let status = match b {
            Behaviour::Hang => {
                hold(&mut rx, |rx| rx.borrow().0 != Behaviour::Hang).await;
                return;
            }
            Behaviour::Healthy => known_path(&path),
            Behaviour::Lossy(n) if rand::random_range(0..n.max(1)) == 0 => {
                if rand::random_bool(0.5) {
                    let _ = s.get_ref().0.set_zero_linger();
                    return; // reset
                }
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), hold(&mut rx, gone)).await;
                return; // never answered
            }
            Behaviour::Lossy(_) => known_path(&path),
            Behaviour::NotCa if path == "/status/v1/simple/ca" => 404,
            Behaviour::NotCa => known_path(&path),
            Behaviour::Status(c) => c,
            Behaviour::Refuse | Behaviour::WrongName => known_path(&path),
        };
        let custom = match b {
            Behaviour::Healthy | Behaviour::Lossy(_) | Behaviour::NotCa => inner.served.lock().unwrap().get(&path).cloned(),
            _ => None,
        };
        let (status, ctype, body) = match custom {
            Some((code, ctype, body)) if status == 200 || status == 404 => (code, ctype, body),
            _ => (status, "text/plain", if status == 200 { "running" } else { "error" }.to_string()),
        };
        let reply =
            format!("HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}", reason_phrase(status), body.len());
        if s.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Where Puppet Server serves the CA certificate.
pub const CA_PATH: &str = "/puppet-ca/v1/certificate/ca";
/// Where srvd fetches JRuby figures.
pub const METRICS_PATH: &str = "/status/v1/services/jruby-metrics?level=debug";

/// A jruby-metrics answer as Puppet Server 7.9 writes it (debug level).
pub fn jruby_metrics(total: u32, free: u32, queued: u32) -> String {
    let requested: Vec<String> = (0..queued).map(|i| format!(r#"{{"time":{i},"duration-millis":5,"reason":{{}}}}"#)).collect();
    format!(
        r#"{{"service_version":"7.9.5","service_status_version":1,"detail_level":"debug","state":"running","status":{{"experimental":{{"jruby-pool-lock-status":{{"current-state":":not-in-use"}},"metrics":{{"average-lock-wait-time":0,"num-free-jrubies":{free},"borrow-count":10,"average-requested-jrubies":0.0,"borrowed-instances":[],"num-jrubies":{total},"requested-count":0,"requested-instances":[{}],"average-free-jrubies":{free}.0,"average-wait-time":3}}}}}},"active_alerts":[],"service_name":"jruby-metrics"}}"#,
        requested.join(",")
    )
}

fn known_path(path: &str) -> u16 {
    if path == "/status/v1/simple" || path == "/status/v1/simple/ca" { 200 } else { 404 }
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Waits until `done` holds for the behaviour (or the master is dropped).
async fn hold(rx: &mut watch::Receiver<(Behaviour, u64)>, done: impl Fn(&watch::Receiver<(Behaviour, u64)>) -> bool) {
    loop {
        if done(rx) {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
        if rx.borrow().0 == Behaviour::Refuse {
            return;
        }
    }
}
