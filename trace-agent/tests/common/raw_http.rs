//! What a hostile client sends, written by hand: raw HTTP/1.1 requests over a `TcpStream` and
//! msgpack payloads built byte by byte. Shared by `trace-agent/tests/hostile.rs` (through
//! `common`) and the root `examples/hostile.rs` (through `#[path]`), which measure the same cases.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An HTTP/1.1 request with `Connection: close`, a `Content-Length` and (unless `headers` name
/// one) `Host: 127.0.0.1`.
pub(crate) fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        r.push_str("Host: 127.0.0.1\r\n");
    }
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    let mut out = r.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Sends `raw` and reads the whole reply: status (0: no parsable status line), head, body.
/// `None` when no connection is made within 5 s.
pub(crate) fn try_exchange(addr: SocketAddr, raw: &[u8]) -> Option<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(120)));
    // The agent may answer (413, 429) before reading everything: a failed write is fine.
    let _ = s.write_all(raw);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let body = buf.get(split + 4..).unwrap_or_default().to_vec();
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Some((code, head, body))
}

/// A msgpack string: fixstr under 32 bytes, str32 otherwise.
pub(crate) fn str_or_str32(buf: &mut Vec<u8>, s: &[u8]) {
    if s.len() < 32 {
        buf.push(0xa0 | u8::try_from(s.len()).unwrap_or(0));
    } else {
        buf.push(0xdb);
        buf.extend_from_slice(&u32::try_from(s.len()).unwrap_or(0).to_be_bytes());
    }
    buf.extend_from_slice(s);
}

/// A msgpack array32 header of `n` items.
pub(crate) fn array32(buf: &mut Vec<u8>, n: usize) {
    buf.push(0xdd);
    buf.extend_from_slice(&u32::try_from(n).unwrap_or(0).to_be_bytes());
}

/// One small span map `{service, name: "op", resource: "res", trace_id, span_id: 1}`.
pub(crate) fn small_span(buf: &mut Vec<u8>, service: &[u8], trace_id: u32) {
    buf.push(0x85);
    for (k, v) in [(&b"service"[..], service), (b"name", b"op"), (b"resource", b"res")] {
        str_or_str32(buf, k);
        str_or_str32(buf, v);
    }
    str_or_str32(buf, b"trace_id");
    buf.push(0xce);
    buf.extend_from_slice(&trace_id.to_be_bytes());
    str_or_str32(buf, b"span_id");
    buf.push(0x01);
}

/// `n` single-span traces, each with its own service `svc-<i>` (200 000 of them: 9 MB).
pub(crate) fn distinct_services(n: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(n * 48);
    array32(&mut b, n);
    for i in 0..n {
        b.push(0x91);
        small_span(&mut b, format!("svc-{i}").as_bytes(), u32::try_from(i + 1).unwrap_or(0));
    }
    b
}
