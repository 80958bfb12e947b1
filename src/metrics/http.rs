//! A minimal HTTP/1.1 responder for the metrics endpoint: one request per
//! connection, `GET` (or `HEAD`) `/metrics` answers 200 with the text
//! format, any other request 404, garbage 400; then the connection closes.
//! Small on purpose: no keep-alive, no chunking, no request bodies.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Sources, render};
use crate::dns::server::conns::{ConnGuard, ConnTable};
use crate::dns::stats::ConnCounters;

/// Largest request head read; a scrape sends a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client gets to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the answer may take to be written.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once; at the cap a new connection closes the one
/// that has waited longest for its request head (else the oldest), so idle
/// connections can never lock a scrape out.
pub const MAX_CONNECTIONS: usize = 64;
/// Pause after an accept error (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The `Content-Type` of the Prometheus text format served at `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `listener` until `shutdown`; every connection is a tracked task.
pub fn spawn(listener: TcpListener, sources: Arc<Sources>, tracker: &TaskTracker, shutdown: CancellationToken) {
    let t = tracker.clone();
    let table = ConnTable::new(MAX_CONNECTIONS, Arc::new(ConnCounters::default()));
    tracker.spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "metrics: accept failed");
                        // E.g. out of file descriptors: free one of ours
                        // and do not spin.
                        table.evict_one();
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                        }
                        continue;
                    }
                },
            };
            let guard = table.admit();
            let (sources, shutdown) = (sources.clone(), shutdown.clone());
            t.spawn(async move {
                let kill = guard.kill.clone();
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = kill.cancelled() => tracing::debug!(%peer, "metrics: connection closed to make room"),
                    r = serve(stream, &sources, &guard) => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "metrics: connection error");
                        }
                    }
                }
                drop(guard);
            });
        }
    });
}

async fn serve(mut stream: TcpStream, sources: &Sources, guard: &ConnGuard) -> std::io::Result<()> {
    let mut head = Vec::new();
    let read_head = async {
        let mut buf = [0u8; 1024];
        loop {
            let n = stream.read(&mut buf).await?;
            let Some(got) = buf.get(..n).filter(|g| !g.is_empty()) else {
                return Ok::<bool, std::io::Error>(false);
            };
            head.extend_from_slice(got);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                return Ok(true);
            }
            if head.len() > MAX_HEAD {
                return Ok(false);
            }
        }
    };
    let complete = match tokio::time::timeout(HEAD_TIMEOUT, read_head).await {
        Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
        Ok(r) => r?,
    };
    // From here on the connection is busy: not the first to be evicted.
    guard.set_idle(false);
    let (status, body, head_only) = match complete.then(|| parse_request_line(&head)).flatten() {
        None => ("400 Bad Request", "bad request\n".to_string(), false),
        Some((method, path)) => match (method, path) {
            ("GET", "/metrics") => ("200 OK", render(sources), false),
            ("HEAD", "/metrics") => ("200 OK", render(sources), true),
            _ => ("404 Not Found", "not found; metrics are at /metrics\n".to_string(), method == "HEAD"),
        },
    };
    let content_type = if status.starts_with("200") { CONTENT_TYPE } else { "text/plain; charset=utf-8" };
    let mut out =
        format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
            .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// `METHOD TARGET HTTP/1.x` -> (method, path without the query string).
fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let end = head.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(head.get(..end)?).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
        return None;
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Some((method, path))
}

#[cfg(test)]
mod tests {
    use super::parse_request_line;

    #[test]
    fn request_lines() {
        assert_eq!(parse_request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Some(("GET", "/metrics")));
        assert_eq!(parse_request_line(b"GET /metrics?x=1 HTTP/1.0\n\n"), Some(("GET", "/metrics")));
        assert_eq!(parse_request_line(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"GET / metrics HTTP/1.1\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"\xff\xfe / HTTP/1.1\r\n\r\n"), None);
    }
}
