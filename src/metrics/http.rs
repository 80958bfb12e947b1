//! A minimal HTTP/1.1 responder for the `server.metrics` listener: one
//! request per connection, then the connection closes. `GET` (or `HEAD`):
//!
//! - `/metrics`: the Prometheus text format
//! - `/`: the status page (one self-contained HTML file, `status.html`)
//! - `/api/v1/status`: the status page's data, JSON ([`super::status`])
//! - `/healthz`: 200 while srvd serves the zone, 503 otherwise
//!
//! Any other path is 404, another method on these paths 405, garbage 400.
//! Small on purpose: no keep-alive, no chunking, no request bodies.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Sources, render, status};
use crate::dns::server::conns::{ConnGuard, ConnTable, accept};
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

/// The `Content-Type` of the Prometheus text format served at `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=utf-8";

/// The status page: HTML, CSS and JS in one file, no external assets.
pub const STATUS_PAGE: &str = include_str!("status.html");
/// The page may run its own inline script and style and fetch from this
/// listener, nothing else (a second guard against external assets).
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The paths served; anything else is 404.
const PATHS: [&str; 4] = ["/", "/metrics", "/api/v1/status", "/healthz"];

/// One answer: status line, content type, extra headers, body.
struct Reply {
    status: &'static str,
    content_type: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
}

impl Reply {
    fn new(status: &'static str, content_type: &'static str, body: impl Into<String>) -> Reply {
        Reply { status, content_type, headers: Vec::new(), body: body.into() }
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Reply {
        self.headers.push((name, value));
        self
    }
}

/// Answers a GET (HEAD is answered the same, without the body).
fn route(method: &str, path: &str, sources: &Sources) -> Reply {
    if !PATHS.contains(&path) {
        return Reply::new("404 Not Found", TEXT, "not found; served here: / (status page), /api/v1/status, /healthz, /metrics\n");
    }
    if method != "GET" && method != "HEAD" {
        return Reply::new("405 Method Not Allowed", TEXT, "method not allowed; only GET and HEAD\n").header("Allow", "GET, HEAD");
    }
    match path {
        "/metrics" => Reply::new("200 OK", CONTENT_TYPE, render(sources)),
        "/api/v1/status" => Reply::new("200 OK", JSON, status::render_json(sources)).header("Cache-Control", "no-store"),
        "/healthz" => match status::healthz(sources) {
            Ok(serial) => Reply::new("200 OK", TEXT, format!("ok serial {serial}\n")),
            Err(e) => Reply::new("503 Service Unavailable", TEXT, format!("not serving: {e}\n")),
        }
        .header("Cache-Control", "no-store"),
        _ => Reply::new("200 OK", HTML, STATUS_PAGE)
            .header("Content-Security-Policy", PAGE_POLICY)
            .header("X-Content-Type-Options", "nosniff")
            .header("Referrer-Policy", "no-referrer")
            .header("Cache-Control", "no-cache"),
    }
}

/// Serves `listener` until `shutdown`; every connection is a tracked task.
pub fn spawn(listener: TcpListener, sources: Arc<Sources>, tracker: &TaskTracker, shutdown: CancellationToken) {
    let t = tracker.clone();
    let table = ConnTable::new(MAX_CONNECTIONS, Arc::new(ConnCounters::default()));
    tracker.spawn(async move {
        loop {
            let Some((stream, peer)) = accept(&listener, &table, &shutdown, "metrics", || {}).await else {
                return;
            };
            let guard = table.admit();
            let (sources, shutdown) = (sources.clone(), shutdown.clone());
            t.spawn(async move {
                let kill = guard.kill.clone();
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = kill.cancelled() => tracing::debug!(%peer, "metrics: connection closed to make room"),
                    r = serve(stream, sources, &guard) => {
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

async fn serve(mut stream: TcpStream, sources: Arc<Sources>, guard: &ConnGuard) -> std::io::Result<()> {
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
    let (reply, head_only) = match complete.then(|| parse_request_line(&head)).flatten() {
        None => (Reply::new("400 Bad Request", TEXT, "bad request\n"), false),
        Some((method, path)) => {
            let head_only = method == "HEAD";
            // Building the answer walks the registry and the answers (a
            // large estate makes a large status document): off the runtime.
            let (method, path) = (method.to_string(), path.to_string());
            let reply = tokio::task::spawn_blocking(move || route(&method, &path, &sources)).await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "metrics: building an answer failed");
                Reply::new("500 Internal Server Error", TEXT, "internal error\n")
            });
            (reply, head_only)
        }
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !head_only {
        out.extend_from_slice(reply.body.as_bytes());
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
