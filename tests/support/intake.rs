//! A loopback stand-in for the Datadog intake and an OTLP collector: records every request,
//! decompresses (zstd, gzip; bounded) and decodes the bodies (`AgentPayload` protobuf,
//! `StatsPayload` msgpack, OTLP `ExportTraceServiceRequest`), and answers with scripted
//! statuses (`fail_next(n, 500)`, `fail_always(403)`).

use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use libdd_trace_protobuf::pb;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// Largest decompressed body accepted.
const MAX_DECOMPRESSED: u64 = 64 << 20;

/// One request as received.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// Request path.
    pub(crate) path: String,
    /// Request headers.
    pub(crate) headers: HeaderMap,
    /// Body as sent (compressed).
    pub(crate) raw: Vec<u8>,
    /// Body after `Content-Encoding` was undone.
    pub(crate) body: Vec<u8>,
    /// Status we answered.
    pub(crate) status: u16,
}

impl Recorded {
    /// A header as text ("" when absent).
    pub(crate) fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    /// Whether we answered 2xx.
    pub(crate) fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug, Default)]
struct Script {
    next: VecDeque<u16>,
    always: Option<u16>,
    stall: VecDeque<Duration>,
}

#[derive(Debug, Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<Script>,
}

/// The fake intake; stops when dropped.
#[derive(Debug)]
pub(crate) struct Intake {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Intake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn decompress(encoding: &str, raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match encoding {
        "" | "identity" => out.extend_from_slice(raw),
        "gzip" => {
            flate2::read::GzDecoder::new(raw)
                .take(MAX_DECOMPRESSED)
                .read_to_end(&mut out)
                .map_err(|e| format!("gzip: {e}"))?;
        }
        "zstd" => {
            zstd::stream::read::Decoder::new(raw)
                .map_err(|e| format!("zstd: {e}"))?
                .take(MAX_DECOMPRESSED)
                .read_to_end(&mut out)
                .map_err(|e| format!("zstd: {e}"))?;
        }
        other => return Err(format!("unknown Content-Encoding {other:?}")),
    }
    Ok(out)
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let raw = req.into_body().collect().await?.to_bytes().to_vec();
    let stall = state.script.lock().unwrap().stall.pop_front();
    if let Some(d) = stall {
        tokio::time::sleep(d).await;
    }
    let encoding = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (status, body) = match decompress(&encoding, &raw) {
        Ok(body) => {
            let mut script = state.script.lock().unwrap();
            let status = script.next.pop_front().or(script.always).unwrap_or(200);
            (status, body)
        }
        Err(e) => (400, e.into_bytes()),
    };
    let reply = match status {
        200..=299 => "{}".to_owned(),
        403 => "{\"errors\":[\"Forbidden\"]}".to_owned(),
        s => format!("{{\"errors\":[\"scripted {s}\"]}}"),
    };
    state.requests.lock().unwrap().push(Recorded {
        path,
        headers,
        raw,
        body,
        status,
    });
    Ok(Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .body(Full::new(Bytes::from(reply)))
        .unwrap())
}

impl Intake {
    /// Listens on a free loopback port (on the current runtime).
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(Arc::clone(&st), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers `status` to the next `n` requests (then 200 again).
    pub(crate) fn fail_next(&self, n: usize, status: u16) {
        self.state
            .script
            .lock()
            .unwrap()
            .next
            .extend(std::iter::repeat_n(status, n));
    }

    /// Holds the answer to the next `n` requests for `delay` (to make clients time out).
    pub(crate) fn stall_next(&self, n: usize, delay: Duration) {
        self.state
            .script
            .lock()
            .unwrap()
            .stall
            .extend(std::iter::repeat_n(delay, n));
    }

    /// Forgets the stalls not used yet: requests from now on are answered at once.
    #[allow(dead_code)] // the durability tests only
    pub(crate) fn unstall(&self) {
        self.state.script.lock().unwrap().stall.clear();
    }

    /// Answers `status` to every request from now on.
    pub(crate) fn fail_always(&self, status: u16) {
        self.state.script.lock().unwrap().always = Some(status);
    }

    /// Every request so far.
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Requests on `path`.
    pub(crate) fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }

    /// Accepted `AgentPayload`s (`/api/v0.2/traces`).
    pub(crate) fn agent_payloads(&self) -> Vec<pb::AgentPayload> {
        self.requests_to("/api/v0.2/traces")
            .iter()
            .filter(|r| r.accepted())
            .map(|r| pb::AgentPayload::decode(r.body.as_slice()).expect("AgentPayload protobuf"))
            .collect()
    }

    /// The trace chunks of every accepted `AgentPayload`, in arrival order.
    #[allow(dead_code)] // the end-to-end tests only
    pub(crate) fn chunks(&self) -> Vec<pb::TraceChunk> {
        self.agent_payloads()
            .into_iter()
            .flat_map(|a| a.tracer_payloads)
            .flat_map(|t| t.chunks)
            .collect()
    }

    /// Accepted `StatsPayload`s (`/api/v0.2/stats`, msgpack).
    pub(crate) fn stats_payloads(&self) -> Vec<pb::StatsPayload> {
        self.requests_to("/api/v0.2/stats")
            .iter()
            .filter(|r| r.accepted())
            .map(|r| rmp_serde::from_slice(&r.body).expect("StatsPayload msgpack"))
            .collect()
    }

    /// Accepted OTLP export requests (`/v1/traces`).
    pub(crate) fn otlp_requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.requests_to("/v1/traces")
            .iter()
            .filter(|r| r.accepted())
            .map(|r| ExportTraceServiceRequest::decode(r.body.as_slice()).expect("OTLP protobuf"))
            .collect()
    }

    /// Polls `cond` on the requests until it holds or `timeout` passes; returns whether it held.
    pub(crate) async fn wait_until(&self, timeout: Duration, cond: impl Fn(&[Recorded]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if cond(&self.requests()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
