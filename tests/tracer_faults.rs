//! The tracer against a misbehaving agent (absent, 500, 404, hanging, closing the
//! connection) and against an agent that feeds back sampling rates: the application path
//! never blocks or panics, memory stays bounded by the queue, every span is accounted
//! for, and the feedback is applied.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use tracer::{Health, Tracer, TracerConfig};

/// What the fake agent does with a trace request.
#[derive(Clone)]
enum Behaviour {
    /// Answer with this status and body.
    Reply(u16, &'static str),
    /// Tell the test the request arrived, then hold it until released, then close.
    Hang(Sender<()>, Arc<Mutex<Receiver<()>>>),
    /// Read the request and close the connection without answering.
    Close,
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A loopback HTTP/1.1 agent whose trace endpoint behaves as told; `/info` answers 200.
struct FakeAgent {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    /// `Datadog-Agent-State` sent on every reply, when set.
    state: Arc<Mutex<Option<String>>>,
    /// The `/info` body.
    info: Arc<Mutex<&'static str>>,
}

fn read_request(stream: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if stream.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        stream.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    stream.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

impl FakeAgent {
    fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(behaviour));
        let state: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let info: Arc<Mutex<&'static str>> = Arc::new(Mutex::new(r#"{"version":"fake","endpoints":["/v0.4/traces"]}"#));
        let (reqs, beh, st, inf) = (requests.clone(), behaviour.clone(), state.clone(), info.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (reqs, beh, st, inf) = (reqs.clone(), beh.clone(), st.clone(), inf.clone());
                thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    while let Some(req) = read_request(&mut reader) {
                        let is_info = req.path == "/info";
                        reqs.lock().expect("lock").push(req);
                        let behaviour = if is_info {
                            Behaviour::Reply(200, *inf.lock().expect("lock"))
                        } else {
                            beh.lock().expect("lock").clone()
                        };
                        let stream = reader.get_mut();
                        match behaviour {
                            Behaviour::Reply(status, body) => {
                                let state = match st.lock().expect("lock").as_deref() {
                                    Some(s) => format!("Datadog-Agent-State: {s}\r\n"),
                                    None => String::new(),
                                };
                                let resp = format!(
                                    "HTTP/1.1 {status} X\r\n{state}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                                    body.len()
                                );
                                if stream.write_all(resp.as_bytes()).is_err() {
                                    return;
                                }
                            }
                            Behaviour::Hang(arrived, release) => {
                                let _ = arrived.send(());
                                let _ = release.lock().expect("lock").recv();
                                return;
                            }
                            Behaviour::Close => return,
                        }
                    }
                });
            }
        });
        Self {
            addr,
            requests,
            behaviour,
            state,
            info,
        }
    }

    fn set_info(&self, body: &'static str) {
        *self.info.lock().expect("lock") = body;
    }

    fn paths(&self) -> Vec<String> {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .map(|r| r.path.clone())
            .collect()
    }

    fn set_state(&self, state: &str) {
        *self.state.lock().expect("lock") = Some(state.to_owned());
    }

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().expect("lock") = behaviour;
    }

    fn trace_requests(&self) -> Vec<(String, HashMap<String, String>, Vec<u8>)> {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.path == "/v0.4/traces")
            .map(|r| (r.method.clone(), r.headers.clone(), r.body.clone()))
            .collect()
    }

    fn info_requests(&self) -> usize {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.path == "/info")
            .count()
    }
}

fn tracer_for(addr: SocketAddr, queue: usize, retries: u32, timeout: Duration) -> Tracer {
    let config = TracerConfig::default()
        .with_service("svc")
        .with_env("test")
        .with_agent_url(&format!("http://{addr}"))
        .expect("url")
        .with_queue_capacity(queue)
        .with_send_retries(retries)
        .with_agent_timeout(timeout)
        .with_flush_interval(Duration::from_secs(3600));
    Tracer::new(config).expect("tracer")
}

fn spans(tracer: &Tracer, n: usize) {
    for i in 0..n {
        let root = tracer.span("op").resource(format!("res {}", i % 3)).start();
        let _child = root.child("child").start();
    }
}

/// Every finished span is sent, dropped for a counted reason, or (after a timed-out
/// shutdown) still queued.
fn assert_accounted(h: &Health, total: u64) {
    assert_eq!(h.spans_created, total, "{h:?}");
    assert_eq!(h.spans_finished, total, "{h:?}");
    assert_eq!(
        h.spans_sent + h.spans_dropped_queue_full + h.spans_dropped_send_failed + h.spans_dropped_shutdown,
        total,
        "{h:?}"
    );
}

fn decode(body: &[u8]) -> Vec<Vec<HashMap<String, Value>>> {
    rmp_serde::from_slice(body).expect("v0.4 payload")
}

#[test]
fn absent_agent_drops_and_counts_without_blocking() {
    let addr: SocketAddr = ([127, 0, 0, 1], apm::free_port()).into(); // nothing listens
    let tracer = tracer_for(addr, 1024, 1, Duration::from_secs(2));
    spans(&tracer, 100);
    let err = tracer.flush(Duration::from_secs(20)).expect_err("nothing listens");
    assert!(err.to_string().contains("cannot connect to the agent"), "{err}");
    tracer.shutdown(Duration::from_secs(20)).expect("nothing left to send");
    let h = tracer.health();
    assert_accounted(&h, 200);
    assert_eq!((h.spans_sent, h.spans_dropped_send_failed), (0, 200), "{h:?}");
    assert_eq!(h.send_retries, 1);
    assert!(
        h.last_error
            .as_deref()
            .is_some_and(|e| e.contains("is the trace agent running?")),
        "{h:?}"
    );
}

#[test]
fn server_errors_are_retried_then_dropped_and_recovery_sends() {
    let agent = FakeAgent::start(Behaviour::Reply(500, "oops"));
    let tracer = tracer_for(agent.addr, 1024, 2, Duration::from_secs(5));
    spans(&tracer, 10);
    let err = tracer.flush(Duration::from_secs(20)).expect_err("500");
    assert!(err.to_string().contains("answered 500"), "{err}");
    let h = tracer.health();
    assert_eq!(
        (h.send_retries, h.payloads_failed, h.spans_dropped_send_failed),
        (2, 1, 20),
        "{h:?}"
    );
    assert_eq!(agent.trace_requests().len(), 3, "1 try + 2 retries, same body");

    agent.set(Behaviour::Reply(200, r#"{"rate_by_service":{}}"#));
    spans(&tracer, 5);
    tracer.flush(Duration::from_secs(20)).expect("agent recovered");
    let h = tracer.health();
    assert_eq!((h.spans_sent, h.traces_sent, h.payloads_sent), (10, 5, 1), "{h:?}");
    tracer.shutdown(Duration::from_secs(20)).expect("shutdown");
    assert_accounted(&tracer.health(), 30);
}

#[test]
fn client_errors_are_not_retried() {
    let agent = FakeAgent::start(Behaviour::Reply(404, "404 page not found"));
    let tracer = tracer_for(agent.addr, 1024, 3, Duration::from_secs(5));
    spans(&tracer, 3);
    let err = tracer.flush(Duration::from_secs(20)).expect_err("404");
    assert!(err.to_string().contains("answered 404"), "{err}");
    let h = tracer.health();
    assert_eq!((h.send_retries, h.payloads_failed), (0, 1), "{h:?}");
    assert_eq!(agent.trace_requests().len(), 1);
    tracer.shutdown(Duration::from_secs(20)).expect("nothing left to send");
    assert_accounted(&tracer.health(), 6);
}

#[test]
fn connection_closed_without_reply_is_a_counted_failure() {
    let agent = FakeAgent::start(Behaviour::Close);
    let tracer = tracer_for(agent.addr, 1024, 1, Duration::from_secs(5));
    spans(&tracer, 4);
    let err = tracer.flush(Duration::from_secs(20)).expect_err("closed");
    assert!(matches!(err, tracer::FlushError::Send(_)), "{err}");
    let h = tracer.health();
    assert_eq!((h.send_retries, h.spans_dropped_send_failed), (1, 8), "{h:?}");
    assert_accounted(&tracer.health(), 8);
    tracer.shutdown(Duration::from_secs(20)).expect("nothing left");
}

#[test]
fn hanging_agent_bounds_memory_and_never_blocks_the_app() {
    let (arrived_tx, arrived) = channel();
    let (release, release_rx) = channel::<()>();
    let agent = FakeAgent::start(Behaviour::Hang(arrived_tx, Arc::new(Mutex::new(release_rx))));
    let tracer = tracer_for(agent.addr, 4, 0, Duration::from_secs(60));

    // One trace, flushed from another thread: the worker sends it and hangs on the reply.
    spans(&tracer, 1);
    let flusher = thread::spawn(move || tracer.flush(Duration::from_secs(60)));
    arrived
        .recv_timeout(Duration::from_secs(30))
        .expect("the worker's request reached the agent");

    // The worker is stuck: 100 more traces overflow the 4-chunk queue at once, and the
    // application thread goes on.
    spans(&tracer, 100);
    let h = tracer.health();
    assert_eq!(h.traces_dropped_queue_full, 96, "{h:?}");
    assert_eq!(h.spans_dropped_queue_full, 192, "{h:?}");

    // A flush with a short deadline gives up instead of waiting for the agent.
    assert_eq!(
        tracer.flush(Duration::from_millis(200)),
        Err(tracer::FlushError::Timeout(Duration::from_millis(200)))
    );

    // The agent recovers for new requests, and closes the hung connection.
    agent.set(Behaviour::Reply(200, "{}"));
    drop(release);
    assert!(flusher.join().expect("flusher").is_err());
    tracer
        .shutdown(Duration::from_secs(30))
        .expect("the 4 queued traces go out");
    let h = tracer.health();
    assert_eq!(h.spans_sent, 8, "{h:?}");
    assert_accounted(&h, 202);
}

#[test]
fn agent_rates_feed_back_into_sampling_and_headers_are_complete() {
    let agent = FakeAgent::start(Behaviour::Reply(
        200,
        r#"{"rate_by_service":{"service:svc,env:test":0}}"#,
    ));
    let tracer = tracer_for(agent.addr, 1024, 0, Duration::from_secs(5));
    spans(&tracer, 2);
    tracer.flush(Duration::from_secs(20)).expect("first flush");
    spans(&tracer, 3);
    tracer.flush(Duration::from_secs(20)).expect("second flush");
    assert_eq!(tracer.health().agent_rate_updates, 2);

    let reqs = agent.trace_requests();
    assert_eq!(reqs.len(), 2);
    let (method, headers, body) = &reqs[0];
    assert_eq!(method, "POST");
    for (k, v) in [
        ("content-type", "application/msgpack"),
        ("datadog-meta-lang", "rust"),
        ("x-datadog-trace-count", "2"),
        ("datadog-client-computed-top-level", "yes"),
        ("datadog-meta-tracer-version", env!("CARGO_PKG_VERSION")),
    ] {
        assert_eq!(headers.get(k).map(String::as_str), Some(v), "{k}: {headers:?}");
    }
    assert!(headers.contains_key("datadog-meta-lang-version"));
    assert_eq!(headers["content-length"], body.len().to_string());
    let first = decode(body);
    assert_eq!(first.len(), 2);
    assert_eq!(
        first[0][0]["metrics"]["_sampling_priority_v1"], 1.0,
        "before feedback: default rate 1"
    );
    assert_eq!(first[0][0]["meta"]["_dd.p.dm"], "-0");

    let second = decode(&reqs[1].2);
    assert_eq!(second.len(), 3);
    for trace in &second {
        let root = &trace[0];
        assert_eq!(
            root["metrics"]["_sampling_priority_v1"], 0.0,
            "rate 0 from the agent drops"
        );
        assert_eq!(root["metrics"]["_dd.agent_psr"], 0.0);
        assert!(root["meta"].get("_dd.p.dm").is_none(), "no decision maker on a drop");
        assert_eq!(trace.len(), 2, "dropped traces are still sent, for the agent's stats");
    }
    assert_eq!(
        agent.info_requests(),
        1,
        "no /info re-fetch without an agent state change"
    );
    assert_accounted(&tracer.health(), 10);
    tracer.shutdown(Duration::from_secs(20)).expect("shutdown");
}

#[test]
fn agent_state_change_refetches_info_once() {
    let agent = FakeAgent::start(Behaviour::Reply(200, "{}"));
    agent.set_state("a");
    let tracer = tracer_for(agent.addr, 1024, 0, Duration::from_secs(5));
    let flush = |n| {
        spans(&tracer, n);
        tracer.flush(Duration::from_secs(20)).expect("flush");
    };
    flush(1);
    flush(1);
    assert_eq!(agent.info_requests(), 1, "state unchanged: /info read once, at start");
    agent.set_state("b");
    flush(1); // the reply carries the new state
    flush(1); // so /info is read again before this send
    flush(1);
    assert_eq!(agent.info_requests(), 2, "one re-fetch per state change, not per flush");
    assert_eq!(tracer.health().info_fetches, 2);
    assert_accounted(&tracer.health(), 10);
    tracer.shutdown(Duration::from_secs(20)).expect("shutdown");
}

#[cfg(unix)]
#[test]
fn unix_socket_agent_url_is_honoured() {
    use std::os::unix::net::UnixListener;
    let dir = apm::run_dir("tracer-uds");
    let path = dir.join("apm.socket");
    let listener = UnixListener::bind(&path).expect("bind unix socket");
    let (tx, rx) = channel();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                while let Some(req) = read_request(&mut reader) {
                    let body = "{}";
                    let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    let _ = tx.send((req.path.clone(), req.headers.get("x-datadog-trace-count").cloned()));
                    if reader.get_mut().write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let config = TracerConfig::from_source(&[("DD_TRACE_AGENT_URL", format!("unix://{}", path.display()).as_str())])
        .expect("config")
        .with_service("uds");
    let tracer = Tracer::new(config).expect("tracer");
    spans(&tracer, 3);
    tracer
        .flush(Duration::from_secs(20))
        .expect("flush over the unix socket");
    let seen: Vec<_> = rx.try_iter().collect();
    assert!(
        seen.contains(&("/v0.4/traces".to_owned(), Some("3".to_owned()))),
        "{seen:?}"
    );
    assert_eq!(tracer.health().spans_sent, 6);
    assert_accounted(&tracer.health(), 6);
    tracer.shutdown(Duration::from_secs(20)).expect("shutdown");
}

#[test]
fn works_inside_the_applications_tokio_runtime() {
    let agent = FakeAgent::start(Behaviour::Reply(200, "{}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Built, used, flushed and shut down from async code: the exporter's own runtime lives
    // on its own thread, so nothing nests or panics.
    let health = rt.block_on(async move {
        let tracer = tracer_for(agent.addr, 1024, 0, Duration::from_secs(5));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(async move {
                    for _ in 0..10 {
                        let root = tracer.span("task").start();
                        tokio::task::yield_now().await;
                        drop(root.child("step").start());
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        tracer
            .flush(Duration::from_secs(20))
            .expect("flush from a runtime thread");
        tracer
            .shutdown(Duration::from_secs(20))
            .expect("shutdown from a runtime thread");
        tracer.health()
    });
    assert_eq!((health.spans_sent, health.traces_sent), (160, 80), "{health:?}");
    assert_accounted(&health, 160);
}

#[test]
fn v05_listed_but_refused_falls_back_to_v04() {
    let agent = FakeAgent::start(Behaviour::Reply(404, "404 page not found"));
    agent.set_info(r#"{"endpoints":["/v0.4/traces","/v0.5/traces"]}"#);
    let tracer = tracer_for(agent.addr, 1024, 0, Duration::from_secs(5));
    spans(&tracer, 2);
    tracer.flush(Duration::from_secs(20)).expect_err("404 on v0.5");
    agent.set(Behaviour::Reply(200, "{}"));
    spans(&tracer, 2);
    tracer.flush(Duration::from_secs(20)).expect("v0.4 accepted");
    let paths: Vec<String> = agent.paths().into_iter().filter(|p| p != "/info").collect();
    assert_eq!(paths, ["/v0.5/traces", "/v0.4/traces"]);
    let h = tracer.health();
    assert_eq!((h.spans_dropped_send_failed, h.spans_sent), (4, 4), "{h:?}");
    assert_accounted(&tracer.health(), 8);
    tracer.shutdown(Duration::from_secs(20)).expect("shutdown");
}
