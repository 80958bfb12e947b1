//! The client side of the control socket, used by srvctl (blocking: one
//! request, one response).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::proto::{Request, Response};

/// Where srvctl looks for the socket without `--socket` or `SRVD_SOCKET`.
pub const DEFAULT_SOCKET: &str = "/run/srvd/control.sock";

/// How long a request may take, beyond an `add-master --wait`.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon could not be reached or did not answer (srvctl exit 3).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to srvd at {}: {source}{hint}", path.display())]
    Connect { path: PathBuf, source: io::Error, hint: &'static str },
    #[error("lost the connection to srvd: {0}")]
    Io(#[from] io::Error),
    #[error("no answer from srvd within {0:?}")]
    Timeout(Duration),
    #[error("srvd closed the connection without answering")]
    Closed,
    #[error("srvd sent an answer srvctl does not understand: {0}")]
    Protocol(String),
}

pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| {
            let hint = match e.kind() {
                io::ErrorKind::NotFound => " (is srvd running, with server.control_socket at this path? see --socket, SRVD_SOCKET)",
                io::ErrorKind::ConnectionRefused => " (a stale socket: srvd is not running)",
                io::ErrorKind::PermissionDenied => " (the socket is mode 0660: run as srvd's user or a member of the socket's group)",
                _ => "",
            };
            ClientError::Connect { path: path.to_path_buf(), source: e, hint }
        })?;
        let writer = stream.try_clone()?;
        Ok(Client { reader: BufReader::new(stream), writer })
    }

    /// Sends one request and waits for its response.
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        let timeout = match req {
            Request::AddMaster(a) if a.wait => a.wait_timeout_ms.map_or(super::DEFAULT_WAIT, Duration::from_millis) + REPLY_TIMEOUT,
            _ => REPLY_TIMEOUT,
        };
        self.reader.get_ref().set_read_timeout(Some(timeout))?;
        let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        let mut answer = String::new();
        match self.reader.read_line(&mut answer) {
            Ok(0) => return Err(ClientError::Closed),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(ClientError::Timeout(timeout));
            }
            Err(e) => return Err(e.into()),
        }
        serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(format!("{e}: {}", answer.trim_end())))
    }
}

/// Connects, sends one request, returns the response.
pub fn request(path: &Path, req: &Request) -> Result<Response, ClientError> {
    Client::connect(path)?.call(req)
}
