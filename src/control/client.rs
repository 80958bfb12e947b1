//! The client side of the control socket, used by srvctl (blocking: one
//! request, one response).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::proto::{Request, Response};

/// Where srvctl looks for the socket without `--socket` or `SRVD_SOCKET`.
pub const DEFAULT_SOCKET: &str = "/run/srvd/control.sock";

/// How long connecting and a request may take (beyond an `add-master
/// --wait`), unless `SRVCTL_TIMEOUT` says otherwise.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon could not be reached or did not answer (srvctl exit 3).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be connected to (missing, refused, no permission).
    #[error("cannot connect to srvd at {}: {source}{hint}", path.display())]
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
        /// A parenthesised hint chosen by the error kind (not running, permissions), or "".
        hint: &'static str,
    },
    /// Connecting did not finish in time: srvd is not accepting.
    #[error("cannot connect to srvd at {}: timed out after {} (srvd is not accepting connections: stuck or stopped?)", path.display(), fmt(*after))]
    ConnectTimeout {
        /// The socket path tried.
        path: PathBuf,
        /// How long srvctl waited.
        after: Duration,
    },
    /// The connection broke while sending or reading.
    #[error("lost the connection to srvd: {0}")]
    Io(#[from] io::Error),
    /// No answer within the client's timeout.
    #[error("timed out: no answer from srvd within {} (srvd may be stuck; SRVCTL_TIMEOUT sets this limit)", fmt(*.0))]
    Timeout(Duration),
    /// srvd closed the connection before answering.
    #[error("srvd closed the connection without answering")]
    Closed,
    /// The answer is not a [`Response`] srvctl knows (a newer or broken srvd).
    #[error("srvd sent an answer srvctl does not understand: {0}")]
    Protocol(String),
}

fn fmt(d: Duration) -> String {
    crate::input::names::fmt_duration(d)
}

/// A connection to srvd's control socket: send a [`Request`], read its [`Response`].
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    timeout: Duration,
}

impl Client {
    /// Connects, waiting at most [`REPLY_TIMEOUT`]; requests then may take as long.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        Client::connect_within(path, REPLY_TIMEOUT)
    }

    /// Connects, waiting at most `timeout` (a daemon that does not accept
    /// leaves a connect hanging once the socket's backlog is full); each
    /// request may then take `timeout` too (plus the wait of `add-master --wait`).
    pub fn connect_within(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.to_path_buf();
        // The thread is left behind on a timeout; srvctl exits soon after.
        std::thread::spawn(move || {
            let _ = tx.send(UnixStream::connect(&p));
        });
        let stream = match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(_) => return Err(ClientError::ConnectTimeout { path: path.to_path_buf(), after: timeout }),
        };
        let stream = stream.map_err(|e| {
            let hint = match e.kind() {
                io::ErrorKind::NotFound => " (is srvd running, with server.control_socket at this path? see --socket, SRVD_SOCKET)",
                io::ErrorKind::ConnectionRefused => " (a stale socket: srvd is not running)",
                io::ErrorKind::PermissionDenied => " (the socket is mode 0660: run as srvd's user or a member of the socket's group)",
                _ => "",
            };
            ClientError::Connect { path: path.to_path_buf(), source: e, hint }
        })?;
        let writer = stream.try_clone()?;
        Ok(Client { reader: BufReader::new(stream), writer, timeout })
    }

    /// Sends one request and waits for its response.
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        let timeout = match req {
            Request::Drain(d) if d.wait_idle => {
                d.wait_timeout_ms.map_or(super::DEFAULT_IDLE_WAIT, Duration::from_millis).saturating_add(self.timeout)
            }
            Request::AddMaster(a) if a.wait => {
                a.wait_timeout_ms.map_or(super::DEFAULT_WAIT, Duration::from_millis).saturating_add(self.timeout)
            }
            _ => self.timeout,
        };
        let deadline = Instant::now().checked_add(timeout);
        let left = || match deadline {
            Some(d) => d.checked_duration_since(Instant::now()).filter(|l| !l.is_zero()).ok_or(ClientError::Timeout(timeout)),
            None => Ok(timeout),
        };
        let timed_out = |e: io::Error| {
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) { ClientError::Timeout(timeout) } else { e.into() }
        };
        let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.writer.set_write_timeout(Some(left()?))?;
        self.writer.write_all(&line).map_err(timed_out)?;
        let mut answer = Vec::new();
        loop {
            self.reader.get_ref().set_read_timeout(Some(left()?))?;
            let buf = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(timed_out(e)),
            };
            if buf.is_empty() {
                return Err(ClientError::Closed);
            }
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    answer.extend_from_slice(buf.get(..i).unwrap_or_default());
                    self.reader.consume(i.saturating_add(1));
                    break;
                }
                None => {
                    let n = buf.len();
                    answer.extend_from_slice(buf);
                    self.reader.consume(n);
                }
            }
        }
        serde_json::from_slice(&answer).map_err(|e| ClientError::Protocol(format!("{e}: {}", String::from_utf8_lossy(&answer))))
    }
}

/// Connects, sends one request, returns the response ([`REPLY_TIMEOUT`]).
pub fn request(path: &Path, req: &Request) -> Result<Response, ClientError> {
    request_within(path, req, REPLY_TIMEOUT)
}

/// Like [`request`], connecting and answering within `timeout` (plus the wait of `add-master --wait`).
pub fn request_within(path: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    Client::connect_within(path, timeout)?.call(req)
}
