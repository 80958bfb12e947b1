//! The control socket: a Unix stream socket at `server.control_socket`,
//! mode 0660 (owner and group), newline-delimited JSON.

//!
//! Limits (docs/srvctl.md, "Control socket limits"): at most
//! [`MAX_CONNECTIONS`] connections at once; when a new one arrives at the cap
//! the connection idle the longest is closed (then one stuck in a slow
//! request or a blocked write), so srvctl always gets in. A request line
//! must be complete within [`REQUEST_TIMEOUT`] of its first byte and is at
//! most [`MAX_REQUEST`] bytes; an answer must be taken by the client within
//! [`WRITE_TIMEOUT`]. Every wait also ends on shutdown, except a change that
//! has started: it runs to the end on a task of its own (tracked by the
//! `changes` tracker the daemon waits for), whether or not the client stays.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Control;
use super::proto::{Failure, Reply, Request, Response, WaitOutcome};
use crate::input::registry::MasterKey;

/// Mode of the socket: the owner (srvd's user) and its group may connect.
pub const SOCKET_MODE: u32 = 0o660;
/// Longest request line accepted (bytes, newline included); a longer one
/// is answered with an error and the connection closed.
pub const MAX_REQUEST: usize = 64 * 1024;
/// A connection with no request in progress for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A request line must be complete this long after its first byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A client must take its answer within this; otherwise the connection is closed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; a new one beyond closes the longest idle.
pub const MAX_CONNECTIONS: usize = 64;
/// Once shutdown has begun, how long the answer to a change that completed
/// may still take to be written (so that the client learns it was applied).
pub const FINAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

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
/// Connections run on `tracker` and end on shutdown (or within
/// [`FINAL_WRITE_TIMEOUT`]); changes run on `changes`, which the daemon
/// waits for so that a started change is persisted before it exits.
pub fn spawn(socket: ControlSocket, control: Arc<Control>, tracker: &TaskTracker, changes: &TaskTracker, shutdown: CancellationToken) {
    let conns = tracker.clone();
    let changes = changes.clone();
    tracker.spawn(async move {
        let ControlSocket { listener, path, ino } = socket;
        let slots = Slots::new(MAX_CONNECTIONS);
        tracing::info!(path = %path.display(), "control socket listening");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok((stream, _)) => match slots.admit(&shutdown) {
                        Some(slot) => {
                            conns.spawn(serve(stream, control.clone(), slot, changes.clone()));
                        }
                        None => refuse(&stream),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        }
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

/// Every connection is busy with a change: tell the newcomer (without
/// waiting on it) and close.
fn refuse(stream: &UnixStream) {
    tracing::warn!(limit = MAX_CONNECTIONS, "control socket: every connection is busy with a change; refusing a new one");
    let resp = Response::Error(Failure::new(format!("srvd is busy: {MAX_CONNECTIONS} control connections are running changes; try again")));
    let _ = stream.try_write(&encode(&resp));
}

/// What a connection is doing, for choosing whom to close at the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request.
    Idle,
    /// In the middle of a request line.
    Reading,
    /// Running a request (never closed to make room).
    Handling,
    /// Waiting for the client to take the answer.
    Writing,
}

impl Phase {
    /// Lower goes first when room is needed; None: never.
    fn eviction_rank(self) -> Option<u8> {
        match self {
            Phase::Idle => Some(0),
            Phase::Reading | Phase::Writing => Some(1),
            Phase::Handling => None,
        }
    }
}

struct Entry {
    phase: Phase,
    since: Instant,
    token: CancellationToken,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    conns: HashMap<u64, Entry>,
}

/// The live connections and what each is doing.
struct Slots {
    table: Mutex<Table>,
    cap: usize,
}

/// One admitted connection; leaves the table when dropped.
struct Slot {
    slots: Arc<Slots>,
    id: u64,
    token: CancellationToken,
}

impl Slots {
    fn new(cap: usize) -> Arc<Slots> {
        Arc::new(Slots { table: Mutex::new(Table::default()), cap })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes room for a new connection (closing the longest idle one, then
    /// the longest stuck in a request or a write) and admits it. None when
    /// every connection is running a request.
    fn admit(self: &Arc<Self>, shutdown: &CancellationToken) -> Option<Slot> {
        let mut t = self.table();
        while t.conns.len() >= self.cap {
            let victim =
                t.conns.iter().filter_map(|(id, e)| e.phase.eviction_rank().map(|rank| (rank, e.since, *id))).min().map(|(_, _, id)| id)?;
            if let Some(e) = t.conns.remove(&victim) {
                tracing::debug!(phase = ?e.phase, "control socket: connection limit reached, closing the longest idle connection");
                e.token.cancel();
            }
        }
        let id = t.next_id;
        t.next_id = t.next_id.wrapping_add(1);
        let token = shutdown.child_token();
        t.conns.insert(id, Entry { phase: Phase::Idle, since: Instant::now(), token: token.clone() });
        Some(Slot { slots: self.clone(), id, token })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table().conns.len()
    }
}

impl Slot {
    fn set(&self, phase: Phase) {
        if let Some(e) = self.slots.table().conns.get_mut(&self.id) {
            e.phase = phase;
            e.since = Instant::now();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.table().conns.remove(&self.id);
    }
}

/// How reading one request line ended.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A whole line (newline included) is in the buffer.
    Complete,
    /// Longer than [`MAX_REQUEST`]; at most that much was buffered.
    TooLong,
    /// The client closed (or half-closed) before a newline.
    Eof,
}

/// Reads one newline-terminated request into `buf`, never holding more than
/// [`MAX_REQUEST`] bytes. Cancel-safe: bytes move into `buf` only between awaits.
async fn read_line_limited<R: AsyncBufRead + Unpin>(reader: &mut R, buf: &mut Vec<u8>) -> io::Result<Line> {
    loop {
        let avail = reader.fill_buf().await?;
        if avail.is_empty() {
            return Ok(Line::Eof);
        }
        let (take, complete) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i.saturating_add(1), true),
            None => (avail.len(), false),
        };
        if buf.len().saturating_add(take) > MAX_REQUEST {
            return Ok(Line::TooLong);
        }
        buf.extend_from_slice(avail.get(..take).unwrap_or_default());
        reader.consume(take);
        if complete {
            return Ok(Line::Complete);
        }
    }
}

fn encode(resp: &Response) -> Vec<u8> {
    let mut out = serde_json::to_vec(resp).unwrap_or_else(|e| {
        serde_json::to_vec(&Response::Error(Failure::new(format!("cannot encode the answer: {e}")))).unwrap_or_default()
    });
    out.push(b'\n');
    out
}

/// One connection: any number of requests, answered in order.
async fn serve(stream: UnixStream, control: Arc<Control>, slot: Slot, changes: TaskTracker) {
    let token = slot.token.clone();
    let uid = stream.peer_cred().ok().map(|c| c.uid());
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        if reader.buffer().is_empty() {
            slot.set(Phase::Idle);
            let first = tokio::select! {
                _ = token.cancelled() => return,
                r = tokio::time::timeout(IDLE_TIMEOUT, reader.fill_buf()) => r.map(|r| r.map(|b| b.is_empty())),
            };
            if !matches!(first, Ok(Ok(false))) {
                return; // idle timeout, error or end of stream
            }
        }
        slot.set(Phase::Reading);
        buf.clear();
        let line = tokio::select! {
            _ = token.cancelled() => return,
            r = tokio::time::timeout(REQUEST_TIMEOUT, read_line_limited(&mut reader, &mut buf)) => r,
        };
        let (resp, last) = match line {
            Ok(Ok(Line::Eof)) | Ok(Err(_)) => return,
            Err(_) => (
                Response::Error(Failure::new(format!(
                    "request not completed within {}",
                    crate::input::names::fmt_duration(REQUEST_TIMEOUT)
                ))),
                true,
            ),
            Ok(Ok(Line::TooLong)) => (Response::Error(Failure::new(format!("request longer than {MAX_REQUEST} bytes"))), true),
            Ok(Ok(Line::Complete)) => match serde_json::from_slice::<Request>(&buf) {
                Ok(req) => {
                    slot.set(Phase::Handling);
                    match answer(&control, req, uid, &token, &changes).await {
                        Some(resp) => (resp, false),
                        None => return,
                    }
                }
                Err(e) => (Response::Error(Failure::new(format!("bad request: {e}"))), false),
            },
        };
        slot.set(Phase::Writing);
        let grace = matches!(&resp, Response::Ok(Reply::Change(_)));
        if !write_reply(&mut w, &encode(&resp), &token, grace).await || last {
            return;
        }
    }
}

/// Writes one answer within [`WRITE_TIMEOUT`], or until the connection is
/// closed (shutdown, or room needed). With `grace` (the answer to an applied
/// change), a closing connection still gets [`FINAL_WRITE_TIMEOUT`] for it.
async fn write_reply(w: &mut OwnedWriteHalf, out: &[u8], token: &CancellationToken, grace: bool) -> bool {
    let write = tokio::time::timeout(WRITE_TIMEOUT, w.write_all(out));
    tokio::pin!(write);
    tokio::select! {
        r = &mut write => matches!(r, Ok(Ok(()))),
        _ = token.cancelled() => {
            grace && matches!(tokio::time::timeout(FINAL_WRITE_TIMEOUT, &mut write).await, Ok(Ok(Ok(()))))
        }
    }
}

/// Answers one request; None when the connection is closing first. A
/// change (or reload) runs on its own tracked task: once started it is
/// completed and persisted even if the client leaves or shutdown begins.
/// Only the wait of `add-master --wait` that follows is cut short.
async fn answer(
    control: &Arc<Control>,
    req: Request,
    uid: Option<u32>,
    token: &CancellationToken,
    changes: &TaskTracker,
) -> Option<Response> {
    if !req.is_change() {
        return tokio::select! {
            _ = token.cancelled() => None,
            r = control.handle(req, uid) => Some(r),
        };
    }
    if token.is_cancelled() {
        return None; // not started: nothing to persist
    }
    let (req, wait) = match req {
        Request::AddMaster(mut a) if a.wait => {
            a.wait = false;
            let t = a.wait_timeout_ms.take().map_or(super::DEFAULT_WAIT, Duration::from_millis);
            (Request::AddMaster(a), Some(super::Wait::Checked(t)))
        }
        Request::Drain(mut d) if d.wait_idle => {
            d.wait_idle = false;
            let t = d.wait_timeout_ms.take().map_or(super::DEFAULT_IDLE_WAIT, Duration::from_millis);
            (Request::Drain(d), Some(super::Wait::Idle(t)))
        }
        other => (other, None),
    };
    let c = control.clone();
    let job = changes.spawn(async move { c.handle(req, uid).await });
    let resp = job.await.unwrap_or_else(|e| Response::Error(Failure::new(format!("change failed: {e}"))));
    match (resp, wait) {
        (Response::Ok(Reply::Change(mut rep)), Some(wait)) => {
            let Ok(host) = crate::input::names::parse_absolute(&rep.master.master.host) else {
                return Some(Response::Ok(Reply::Change(rep)));
            };
            let key = MasterKey { host, port: rep.master.master.port };
            let outcome = tokio::select! {
                _ = token.cancelled() => WaitOutcome { outcome: "timeout".into(), detail: "srvd is shutting down".into() },
                w = control.wait_for(&key, wait) => w,
            };
            rep.wait = Some(outcome);
            rep.master = control.master_status(&key).unwrap_or(rep.master);
            Some(Response::Ok(Reply::Change(rep)))
        }
        (resp, _) => Some(resp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room() {
        let shutdown = CancellationToken::new();
        let slots = Slots::new(3);
        let a = slots.admit(&shutdown).unwrap();
        let b = slots.admit(&shutdown).unwrap();
        let c = slots.admit(&shutdown).unwrap();
        a.set(Phase::Handling);
        c.set(Phase::Writing);
        b.set(Phase::Idle); // b idle since after c's write began
        let d = slots.admit(&shutdown).unwrap();
        assert!(b.token.is_cancelled(), "the idle connection goes first");
        assert!(!a.token.is_cancelled() && !c.token.is_cancelled() && !d.token.is_cancelled());
        assert_eq!(slots.len(), 3);
        drop(b);
        assert_eq!(slots.len(), 3, "an evicted slot has already left the table");
        // No idle one: the writer stuck longest goes; a running request never does.
        d.set(Phase::Handling);
        let e = slots.admit(&shutdown).unwrap();
        assert!(c.token.is_cancelled());
        e.set(Phase::Handling);
        assert!(slots.admit(&shutdown).is_none(), "every connection runs a request");
        assert!(!a.token.is_cancelled() && !d.token.is_cancelled() && !e.token.is_cancelled());
        drop(a);
        assert_eq!(slots.len(), 2);
        shutdown.cancel();
        assert!(d.token.is_cancelled() && e.token.is_cancelled(), "shutdown closes every connection");
    }

    #[tokio::test]
    async fn a_long_line_is_cut_at_the_limit() {
        let long = vec![b'x'; MAX_REQUEST * 3];
        let mut r = BufReader::new(&long[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line_limited(&mut r, &mut buf).await.unwrap(), Line::TooLong);
        assert!(buf.len() <= MAX_REQUEST);
        let two = b"{\"command\":\"list\"}\n{\"command\":\"status\"}\npartial";
        let mut r = BufReader::new(&two[..]);
        for want in [&b"{\"command\":\"list\"}\n"[..], b"{\"command\":\"status\"}\n"] {
            buf.clear();
            assert_eq!(read_line_limited(&mut r, &mut buf).await.unwrap(), Line::Complete);
            assert_eq!(buf, want);
        }
        buf.clear();
        assert_eq!(read_line_limited(&mut r, &mut buf).await.unwrap(), Line::Eof);
        // Exactly the limit, newline included, is accepted.
        let mut exact = vec![b' '; MAX_REQUEST - 1];
        exact.push(b'\n');
        let mut r = BufReader::new(&exact[..]);
        buf.clear();
        assert_eq!(read_line_limited(&mut r, &mut buf).await.unwrap(), Line::Complete);
    }
}
