//! Shared by the `http_*` tests: serving an axum app on a free loopback port, and our agent
//! in-process with a sink that keeps every span it receives.
#![allow(dead_code, unreachable_pub)] // each test file uses part of it

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trace_agent::config::AgentConfig;

/// A multi-threaded runtime for the servers under test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// An axum app serving on a free loopback port until dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn serve(rt: &tokio::runtime::Runtime, app: axum::Router) -> Server {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    rt.spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    apm::wait_for_tcp(addr, Duration::from_secs(10));
    Server { addr, stop: Some(stop) }
}

/// One span as our agent received it (after its normalization and obfuscation).
#[derive(Debug, Clone)]
pub struct Got {
    pub service: String,
    pub name: String,
    pub resource: String,
    pub trace_id: u64,
    pub span_id: u64,
    pub parent_id: u64,
    pub error: i32,
    pub meta: HashMap<String, String>,
    pub metrics: HashMap<String, f64>,
}

impl Got {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.meta.get(key).map(String::as_str)
    }
}

type Seen = Arc<Mutex<Vec<Got>>>;

struct CapturingSink(Seen);

impl trace_agent::pipeline::ChunkSink for CapturingSink {
    fn consume(&mut self, p: trace_agent::pipeline::ProcessedPayload) {
        let payload = p.payload.get();
        let mut seen = self.0.lock().unwrap();
        for chunk in &payload.chunks {
            for s in &chunk.spans {
                seen.push(Got {
                    service: s.service.as_str().to_owned(),
                    name: s.name.as_str().to_owned(),
                    resource: s.resource.as_str().to_owned(),
                    trace_id: s.trace_id,
                    span_id: s.span_id,
                    parent_id: s.parent_id,
                    error: s.error,
                    meta: s
                        .meta
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
                        .collect(),
                    metrics: s.metrics.iter().map(|(k, v)| (k.as_str().to_owned(), *v)).collect(),
                });
            }
        }
    }
}

/// Our trace agent, in-process, keeping what it forwards.
pub struct OurAgent {
    pub agent: trace_agent::Agent,
    seen: Seen,
}

impl OurAgent {
    pub fn start(rt: &tokio::runtime::Runtime) -> Self {
        let seen = Seen::default();
        let sink_seen = Arc::clone(&seen);
        let agent = rt
            .block_on(trace_agent::start_with_sink(
                AgentConfig::local(apm::free_port()),
                move |_| CapturingSink(sink_seen),
            ))
            .expect("start our agent");
        Self { agent, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.agent.tcp_addr().expect("tcp addr"))
    }

    /// Waits until at least `n` spans arrived (the pipeline hands them over on its thread).
    pub fn spans(&self, n: usize) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.seen.lock().unwrap().clone();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
