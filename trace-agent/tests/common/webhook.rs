//! A loopback webhook receiver for the monitor tests: `trace-agent/tests/local_web.rs` and the
//! root `tests/local_web_chromium.rs` (which includes this file by `#[path]`).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc::Receiver;

/// Answers `503` to the first `fail_first` requests, then `200`, and sends the JSON body of each
/// request it answered `200` to the channel (a body that is not JSON ends the receiver, so the
/// test waiting on the channel fails).
pub(crate) fn webhook_receiver(fail_first: usize) -> (SocketAddr, Receiver<serde_json::Value>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the webhook receiver");
    let addr = listener.local_addr().expect("its address");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let body = loop {
                let Ok(k) = stream.read(&mut chunk) else { return };
                if k == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..k]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .and_then(|v| v.trim().parse().ok())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break body.to_owned();
                    }
                }
            };
            let status = if n < fail_first {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if n >= fail_first
                && tx
                    .send(serde_json::from_str(&body).expect("a JSON notification"))
                    .is_err()
            {
                return;
            }
        }
    });
    (addr, rx)
}
