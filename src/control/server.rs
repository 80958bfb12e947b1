//! The control socket: a Unix stream socket at `server.control_socket`,
//! mode 0660 (owner and group), newline-delimited JSON.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Control;
use super::proto::{Failure, Request, Response};

/// Mode of the socket: the owner (srvd's user) and its group may connect.
pub const SOCKET_MODE: u32 = 0o660;
/// Longest request line accepted.
pub const MAX_REQUEST: u64 = 64 * 1024;
/// A connection idle this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// A bound control socket; remembers its inode so that it only removes its own file.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    ino: u64,
}

/// Binds the control socket at `path`, replacing a stale socket file (one
/// nobody listens on). Refuses to replace a socket another process is
/// serving, or anything that is not a socket. The socket gets its mode
/// before it appears at `path` (bound under a temporary name, then renamed).
pub fn bind(path: &Path) -> io::Result<ControlSocket> {
    let err = |what: String, e: io::Error| io::Error::new(e.kind(), format!("control socket {}: {what}: {e}", path.display()));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| err(format!("cannot create {}", dir.display()), e))?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("control socket {}: another process (srvd?) is listening on it", path.display()),
                ));
            }
            tracing::info!(path = %path.display(), "replacing stale control socket");
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("control socket {}: exists and is not a socket; not replacing it", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("cannot inspect".into(), e)),
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "control.sock".into());
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let std_listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(|e| err(format!("cannot bind {}", tmp.display()), e))?;
    let placed = (|| {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(SOCKET_MODE))?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(err("cannot put in place".into(), e));
    }
    let ino = std::fs::metadata(path).map_err(|e| err("cannot inspect".into(), e))?.ino();
    std_listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(std_listener)?;
    Ok(ControlSocket { listener, path: path.to_path_buf(), ino })
}

/// Serves the control socket until `shutdown`; removes the socket file then.
pub fn spawn(socket: ControlSocket, control: Arc<Control>, tracker: &TaskTracker, shutdown: CancellationToken) {
    let conns = tracker.clone();
    tracker.spawn(async move {
        let ControlSocket { listener, path, ino } = socket;
        tracing::info!(path = %path.display(), "control socket listening");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok((stream, _)) => {
                        conns.spawn(serve(stream, control.clone(), shutdown.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        // Remove the socket file only if it is still ours.
        if std::fs::metadata(&path).is_ok_and(|m| m.ino() == ino) {
            let _ = std::fs::remove_file(&path);
        }
    });
}

/// One connection: any number of requests, answered in order.
async fn serve(stream: UnixStream, control: Arc<Control>, shutdown: CancellationToken) {
    let uid = stream.peer_cred().ok().map(|c| c.uid());
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_REQUEST + 1);
        let read = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(IDLE_TIMEOUT, limited.read_line(&mut line)) => r,
        };
        let resp = match read {
            Err(_) | Ok(Err(_)) | Ok(Ok(0)) => return,
            Ok(Ok(_)) if !line.ends_with('\n') => {
                Response::Error(Failure::new(format!("request longer than {MAX_REQUEST} bytes or not ending in a newline")))
            }
            Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
                Ok(req) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        resp = control.handle(req, uid) => resp,
                    }
                }
                Err(e) => Response::Error(Failure::new(format!("bad request: {e}"))),
            },
        };
        let mut out = serde_json::to_vec(&resp).expect("responses serialise");
        out.push(b'\n');
        if w.write_all(&out).await.is_err() {
            return;
        }
        if !line.ends_with('\n') {
            return;
        }
    }
}
