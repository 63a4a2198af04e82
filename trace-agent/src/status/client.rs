//! The CLI side of `trace-agent status`: fetching the snapshot from a running agent.

use super::*;

/// Why `trace-agent status` could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connection or I/O failure.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not an HTTP 200 with JSON.
    #[error("unexpected reply: {0}")]
    Reply(String),
}

/// Asks the agent on `127.0.0.1:port` for its status (blocking, 5 s timeouts).
///
/// # Errors
/// When the agent cannot be reached or answers something else.
pub fn fetch_status(port: u16) -> Result<StatusSnapshot, FetchError> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = std::time::Duration::from_secs(5);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
        STATUS_PATH
    )?;
    let mut raw = Vec::new();
    s.take(64 * 1024 * 1024).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| FetchError::Reply("no HTTP header".to_owned()))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(FetchError::Reply(head.lines().next().unwrap_or("").to_owned()));
    }
    serde_json::from_str(body).map_err(|e| FetchError::Reply(e.to_string()))
}
