//! A minimal HTTP/1.1 responder for the metrics endpoint: one request per
//! connection, `GET` (or `HEAD`) `/metrics` answers 200 with the text
//! format, any other request 404, garbage 400; then the connection closes.
//! Small on purpose: no keep-alive, no chunking, no request bodies.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Sources, render};

/// Largest request head read; a scrape sends a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client gets to send its request and read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 32;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `listener` until `shutdown`; every connection is a tracked task.
pub fn spawn(listener: TcpListener, sources: Arc<Sources>, tracker: &TaskTracker, shutdown: CancellationToken) {
    let t = tracker.clone();
    tracker.spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "metrics: accept failed");
                        // E.g. out of file descriptors: do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "metrics: too many connections; closing");
                continue;
            };
            let (sources, shutdown) = (sources.clone(), shutdown.clone());
            t.spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    r = tokio::time::timeout(IO_TIMEOUT, serve(stream, &sources)) => {
                        if let Ok(Err(e)) = r {
                            tracing::debug!(%peer, error = %e, "metrics: connection error");
                        }
                    }
                }
                drop(permit);
            });
        }
    });
}

async fn serve(mut stream: TcpStream, sources: &Sources) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break false;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() > MAX_HEAD {
            break false;
        }
    };
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
    stream.write_all(&out).await?;
    stream.shutdown().await
}

/// `METHOD TARGET HTTP/1.x` -> (method, path without the query string).
fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let end = head.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&head[..end]).ok()?.trim_end_matches('\r');
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
