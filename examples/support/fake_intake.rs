//! The fake Datadog intake of the load programs (`agent_load intake`, `soak_load intake`):
//! serves `/api/v0.2/traces` (decompresses each zstd `AgentPayload` and counts its trace chunks
//! and spans by walking the protobuf, so the intake costs little CPU next to the agent) and
//! `/api/v0.2/stats`, answers `accepted` at once, and keeps `<counts file>` (JSON) up to date.
//! Loopback only; runs until killed. Included by both examples with `#[path]`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// When the counts file is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // each program uses one
pub(crate) enum Write {
    /// At most every 100 ms, while something changed (throughput runs).
    Every100ms,
    /// After every request (the file is read as soon as the run stops).
    EveryRequest,
}

/// What arrived.
#[derive(Default, Clone, serde::Serialize)]
struct Counts {
    trace_requests: u64,
    trace_chunks: u64,
    spans: u64,
    trace_bytes: u64,
    stats_requests: u64,
    bad_requests: u64,
}

/// Reads a varint at `*i`.
fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Calls `f(field, body)` for each length-delimited field of the message `b`; skips the others.
fn fields<'a>(b: &'a [u8], mut f: impl FnMut(u64, &'a [u8])) -> Option<()> {
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i)?;
        match key & 7 {
            0 => {
                varint(b, &mut i)?;
            }
            1 => i += 8,
            2 => {
                let len = usize::try_from(varint(b, &mut i)?).ok()?;
                let body = b.get(i..i.checked_add(len)?)?;
                i += len;
                f(key >> 3, body);
            }
            5 => i += 4,
            _ => return None,
        }
    }
    (i == b.len()).then_some(())
}

/// (trace chunks, spans) in an encoded `AgentPayload`.
fn count_agent_payload(raw: &[u8]) -> Option<(u64, u64)> {
    let (mut chunks, mut spans, mut ok) = (0, 0, true);
    fields(raw, |field, tracer_payload| {
        if field != 5 {
            return;
        }
        ok &= fields(tracer_payload, |field, chunk| {
            if field != 6 {
                return;
            }
            chunks += 1;
            ok &= fields(chunk, |field, _| spans += u64::from(field == 3)).is_some();
        })
        .is_some();
    })?;
    ok.then_some((chunks, spans))
}

fn write_counts(counts: &Mutex<Counts>, file: &str) {
    let c = counts.lock().expect("counts").clone();
    let tmp = format!("{file}.tmp");
    if std::fs::write(&tmp, serde_json::to_vec(&c).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(&tmp, file);
    }
}

/// Binds `127.0.0.1:0`, writes the port to `port_file`, and serves until killed.
pub(crate) fn serve(port_file: &str, counts_file: &str, accepted: u16, write: Write) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(match write {
            Write::Every100ms => 1,
            Write::EveryRequest => 2,
        })
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::fs::write(port_file, port.to_string()).expect("port file");
        let counts = Arc::new(Mutex::new(Counts::default()));
        let dirty = Arc::new(AtomicBool::new(false));
        let file = Arc::new(counts_file.to_owned());
        if write == Write::Every100ms {
            // The counts file, rewritten every 100 ms while something changed.
            let (counts, dirty, file) = (Arc::clone(&counts), Arc::clone(&dirty), Arc::clone(&file));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if dirty.swap(false, Ordering::Relaxed) {
                        write_counts(&counts, &file);
                    }
                }
            });
        }
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (counts, dirty, file) = (Arc::clone(&counts), Arc::clone(&dirty), Arc::clone(&file));
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (counts, dirty, file) = (Arc::clone(&counts), Arc::clone(&dirty), Arc::clone(&file));
                    async move {
                        let path = req.uri().path().to_owned();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        let status = match path.as_str() {
                            "/api/v0.2/traces" => {
                                let counted = zstd::decode_all(&body[..])
                                    .ok()
                                    .and_then(|raw| count_agent_payload(&raw));
                                let mut c = counts.lock().expect("counts");
                                match counted {
                                    Some((chunks, spans)) => {
                                        c.trace_requests += 1;
                                        c.trace_chunks += chunks;
                                        c.spans += spans;
                                        c.trace_bytes += body.len() as u64;
                                        accepted
                                    }
                                    None => {
                                        c.bad_requests += 1;
                                        400
                                    }
                                }
                            }
                            "/api/v0.2/stats" => {
                                counts.lock().expect("counts").stats_requests += 1;
                                accepted
                            }
                            _ => 404,
                        };
                        match write {
                            Write::Every100ms => dirty.store(true, Ordering::Relaxed),
                            Write::EveryRequest => write_counts(&counts, &file),
                        }
                        let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
                        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
