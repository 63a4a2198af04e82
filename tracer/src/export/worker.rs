//! The export thread's loop.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, channel};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;

use super::encode::{Format, Payload};
use super::info::AgentInfo;
use super::stages::{Drained, Encoder, unix_now};
use super::transport::{AgentResponse, Transport, TransportError};
use crate::config::TraceApi;
use crate::core::{Control, FlushError, TracerInner, WorkerHandle};
use crate::health::Problem;
use crate::sampling::AgentRates;
use crate::stats::{Concentrator, PayloadIdentity, StatsSettings, encode_payload};

thread_local! {
    static ON_EXPORT_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the caller runs on an export thread: the `tracing` Layer and the
/// OpenTelemetry bridge record nothing there, so the tracer never traces itself.
#[cfg_attr(not(any(feature = "tracing-layer", feature = "opentelemetry")), allow(dead_code))]
pub(crate) fn on_export_thread() -> bool {
    ON_EXPORT_THREAD.try_with(std::cell::Cell::get).unwrap_or(false)
}

/// How long to wait before asking `/info` again after it failed.
const INFO_RETRY: Duration = Duration::from_secs(30);

pub(crate) fn spawn(tracer: &'static TracerInner) -> std::io::Result<WorkerHandle> {
    let (control, rx) = channel();
    let transport = Transport::new(tracer.config.agent.clone())?;
    let ctx = super::EncodeContext::of(tracer);
    let thread = thread::Builder::new().name("dd-trace-export".into()).spawn(move || {
        let _ = ON_EXPORT_THREAD.try_with(|f| f.set(true));
        let runtime_id = ctx.runtime_id.to_string();
        // DD_TRACE_API_VERSION=v0.5 holds from the first payload on.
        let format = match tracer.config.trace_api {
            TraceApi::V05 => Format::V05,
            TraceApi::V04 | TraceApi::Auto => Format::V04,
        };
        let mut worker = Worker {
            tracer,
            transport,
            control: rx,
            enc: Encoder::new(tracer, format, ctx),
            last_send: Instant::now(),
            info: None,
            agent_state: None,
            next_info: Instant::now(),
            stats_sequence: 0,
            stats_id: PayloadIdentity {
                service: tracer.config.service.clone(),
                env: tracer.config.env.clone().unwrap_or_default(),
                version: tracer.config.version.clone().unwrap_or_default(),
                runtime_id: runtime_id.clone(),
                tracer_version: env!("CARGO_PKG_VERSION").to_owned(),
            },
        };
        // A bug here must not take tracing down for good: log it once and go on with
        // an empty payload (the spans of the payload being built are lost, and counted).
        while std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run())).is_err() {
            let lost = worker.enc.payload.spans();
            worker.tracer.ledger.lost();
            worker
                .tracer
                .counters
                .spans_dropped_send_failed
                .fetch_add(lost, Relaxed);
            worker.enc.payload = Payload::new(worker.enc.format);
            worker.tracer.problems.raise(Problem::WorkerPanic, || {
                "the trace export thread panicked; restarted it".to_owned()
            });
        }
    })?;
    Ok(WorkerHandle { control, thread })
}

struct Worker {
    tracer: &'static TracerInner,
    transport: Transport,
    control: Receiver<Control>,
    /// The drain → sample → tag and encode stages, filling the next payload.
    enc: Encoder,
    last_send: Instant,
    info: Option<AgentInfo>,
    agent_state: Option<String>,
    /// When to (re)fetch `/info`.
    next_info: Instant,
    /// `Sequence` of the next stats payload.
    stats_sequence: u64,
    stats_id: PayloadIdentity,
}

impl Worker {
    fn run(&mut self) {
        let cfg = &self.tracer.config;
        let tick = (cfg.flush_interval / 4).clamp(Duration::from_millis(5), Duration::from_millis(250));
        loop {
            let until_flush = (self.last_send + cfg.flush_interval).saturating_duration_since(Instant::now());
            thread::park_timeout(tick.min(until_flush));

            let mut flushes = Vec::new();
            let mut shutdown = None;
            while let Ok(msg) = self.control.try_recv() {
                match msg {
                    Control::Flush { reply } => flushes.push(reply),
                    Control::Shutdown { reply } => shutdown = Some(reply),
                }
            }
            let forced = !flushes.is_empty() || shutdown.is_some();
            let deadline = Instant::now() + cfg.agent_timeout * (cfg.send_retries + 1);

            // /info first: it decides the format of the payload about to be built.
            if Instant::now() >= self.next_info {
                self.fetch_info(deadline);
            }
            self.tracer.queue.rearm();
            let mut result = self.drain(deadline);
            let due = self.last_send.elapsed() >= cfg.flush_interval || self.enc.payload.size() >= cfg.flush_size;
            if forced || due {
                let sent = self.send(deadline);
                if result.is_ok() {
                    result = sent;
                }
            }
            // Chunks drained while that payload was on its way: at shutdown they are sent
            // too (no new ones come: spans finished after shutdown are dropped and counted).
            while shutdown.is_some() && !self.enc.payload.is_empty() {
                let sent = self.send(deadline);
                if sent.is_err() {
                    if result.is_ok() {
                        result = sent;
                    }
                    // The agent is failing: what is left is dropped, and counted.
                    let left = self.enc.take_payload();
                    let counters = &self.tracer.counters;
                    counters.spans_dropped_send_failed.fetch_add(left.spans(), Relaxed);
                    counters
                        .traces_dropped_send_failed
                        .fetch_add(u64::from(left.traces()), Relaxed);
                    break;
                }
            }
            // Buckets that are over (every bucket when asked to flush or stop).
            self.send_stats(forced, deadline);
            for reply in flushes {
                let _ = reply.send(result.clone());
            }
            if let Some(reply) = shutdown {
                let _ = reply.send(result);
                return;
            }
        }
    }

    /// Pops and encodes every waiting chunk, sending whenever the payload is full.
    fn drain(&mut self, deadline: Instant) -> Result<(), FlushError> {
        let mut result = Ok(());
        while self.enc.drain_some(usize::MAX) == Drained::Full {
            if let Err(e) = self.send(deadline) {
                result = Err(e);
            }
        }
        result
    }

    fn fetch_info(&mut self, deadline: Instant) {
        let counters = &self.tracer.counters;
        counters.info_fetches.fetch_add(1, Relaxed);
        let timeout = self
            .tracer
            .config
            .agent_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        match self.transport.request(Method::GET, "/info", &[], Bytes::new(), timeout) {
            Ok(resp) if resp.status == 200 => {
                self.info = Some(AgentInfo::parse(&resp.body).unwrap_or_default());
                self.agent_state = resp.agent_state;
                self.next_info = Instant::now() + Duration::from_secs(3600);
                self.enc.ctx.native_span_events = self.info.as_ref().is_some_and(|i| i.span_events);
                self.configure_stats(deadline);
                if let Some(info) = &self.info {
                    tracing::debug!(target: "tracer::export", version = ?info.version, endpoints = ?info.endpoints, "agent info");
                    if self.tracer.config.trace_api == TraceApi::Auto {
                        self.use_format(if info.has_endpoint(Format::V05.path()) {
                            Format::V05
                        } else {
                            Format::V04
                        });
                    }
                }
            }
            Ok(resp) => {
                // An old agent without /info still takes v0.4 traces.
                self.info = Some(AgentInfo::default());
                self.next_info = Instant::now() + INFO_RETRY;
                tracing::debug!(target: "tracer::export", status = resp.status, "agent /info unavailable");
            }
            Err(_) => {
                // Unreachable: the send path reports it; ask again later.
                self.next_info = Instant::now() + INFO_RETRY;
            }
        }
    }

    /// Turns client-side stats and P0 dropping on or off after `/info`.
    fn configure_stats(&mut self, deadline: Instant) {
        let info = self.info.clone().unwrap_or_default();
        let on = self.tracer.config.stats_computation && info.has_endpoint(STATS_PATH);
        if on {
            let mut peer_tag_keys = info.peer_tags.clone();
            peer_tag_keys.sort();
            peer_tag_keys.dedup();
            let settings = StatsSettings {
                peer_tag_keys,
                span_kinds: info.span_kinds_stats_computed.clone(),
            };
            match self.enc.stats.as_mut() {
                Some(s) => s.set_settings(settings),
                None => self.enc.stats = Some(Concentrator::new(settings)),
            }
        } else if self.enc.stats.is_some() {
            // The agent stopped taking stats: send what is aggregated, then stop.
            self.send_stats(true, deadline);
            self.enc.stats = None;
        }
        self.enc.drop_p0s = on && info.client_drop_p0s;
    }

    /// Sends the stats buckets that are over at `now` (all of them with `force`).
    fn send_stats(&mut self, force: bool, deadline: Instant) {
        let Some(stats) = self.enc.stats.as_mut() else {
            return;
        };
        if stats.is_empty() {
            return;
        }
        let buckets = stats.flush(unix_now(), force);
        if buckets.is_empty() {
            return;
        }
        let body = Bytes::from(encode_payload(&self.stats_id, &buckets, self.stats_sequence));
        self.stats_sequence += 1;
        let headers = self.base_headers();
        let counters = &self.tracer.counters;
        let cfg = &self.tracer.config;
        let mut attempt = 0u32;
        loop {
            let now = Instant::now();
            let failure = if now >= deadline {
                Some("the send deadline passed".to_owned())
            } else {
                let timeout = cfg.agent_timeout.min(deadline - now);
                match self
                    .transport
                    .request(Method::POST, STATS_PATH, &headers, body.clone(), timeout)
                {
                    Ok(resp) if (200..300).contains(&resp.status) => {
                        counters.stats_payloads_sent.fetch_add(1, Relaxed);
                        return;
                    }
                    Ok(resp) if !(matches!(resp.status, 408 | 429) || resp.status >= 500) => {
                        attempt = cfg.send_retries;
                        format!("the agent answered {} to {STATS_PATH}", resp.status).into()
                    }
                    Ok(resp) => Some(format!("the agent answered {} to {STATS_PATH}", resp.status)),
                    Err(e) => Some(describe(&e)),
                }
            };
            let reason = failure.unwrap_or_default();
            if attempt >= cfg.send_retries || Instant::now() >= deadline {
                counters.stats_payloads_failed.fetch_add(1, Relaxed);
                self.tracer.problems.raise(Problem::AgentRejected, || {
                    format!("trace stats were not delivered: {reason} (counted in Health)")
                });
                return;
            }
            attempt += 1;
            let backoff =
                Duration::from_millis(50u64 << attempt.min(6)).min(deadline.saturating_duration_since(Instant::now()));
            thread::sleep(backoff);
        }
    }

    /// Uses `format` for the next payloads (the current one, if it holds traces, is sent
    /// as it is).
    fn use_format(&mut self, format: Format) {
        self.enc.use_format(format);
    }

    /// The headers of every request to the agent.
    fn base_headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("content-type", "application/msgpack".to_owned()),
            ("datadog-meta-lang", "rust".to_owned()),
            ("datadog-meta-lang-version", env!("TRACER_RUSTC_VERSION").to_owned()),
            (
                "datadog-meta-lang-interpreter",
                format!("rustc-{}-{}", std::env::consts::ARCH, std::env::consts::OS),
            ),
            ("datadog-meta-tracer-version", env!("CARGO_PKG_VERSION").to_owned()),
        ]
    }

    /// The headers of a trace payload; `p0` the rejected chunks and spans dropped since the
    /// last payload.
    fn headers(&self, traces: u32, p0: (u64, u64)) -> Vec<(&'static str, String)> {
        let mut h = self.base_headers();
        h.push(("x-datadog-trace-count", traces.to_string()));
        h.push(("datadog-client-computed-top-level", "yes".to_owned()));
        h.push(("datadog-send-real-http-status", "1".to_owned()));
        if self.enc.stats.is_some() {
            h.push(("datadog-client-computed-stats", "yes".to_owned()));
        }
        if self.enc.drop_p0s || p0 != (0, 0) {
            h.push(("datadog-client-dropped-p0-traces", p0.0.to_string()));
            h.push(("datadog-client-dropped-p0-spans", p0.1.to_string()));
        }
        h
    }

    /// Sends the current payload (if any) with bounded retries before `deadline`.
    fn send(&mut self, deadline: Instant) -> Result<(), FlushError> {
        self.last_send = Instant::now();
        // An empty payload still goes out when it is the only way to tell the agent about
        // dropped P0 traces (as ddtrace does).
        if self.enc.payload.is_empty()
            && self.enc.p0_pending == (0, 0)
            && !self.tracer.ledger.report_due(Instant::now())
        {
            return Ok(());
        }
        let payload = self.enc.take_payload();
        let path = payload.format().path();
        let (traces, spans) = (payload.traces(), payload.spans());
        let (body, spare) = payload.finish_recycling();
        self.enc.recycle(spare);
        let body = Bytes::from(body);
        let p0 = std::mem::take(&mut self.enc.p0_pending);
        let mut headers = self.headers(traces, p0);
        // The span ledger's report (ledger.rs): the one place it joins the headers.
        headers.push((crate::ledger::HEADER, self.ledger_header()));
        let cfg = &self.tracer.config;
        let counters = &self.tracer.counters;
        let problems = &self.tracer.problems;
        let mut attempt = 0u32;
        let mut last_status = None;
        let failure = loop {
            let now = Instant::now();
            if now >= deadline {
                break format!("gave up after {attempt} retries: the send deadline passed");
            }
            let timeout = cfg.agent_timeout.min(deadline - now);
            // While the agent reads the payload, the next one is built (bounded by
            // `flush_size`): the queue keeps draining during the send.
            let enc = &mut self.enc;
            let outcome =
                self.transport
                    .request_while(Method::POST, path, &headers, body.clone(), timeout, &mut || {
                        enc.drain_some(DRAIN_STEP) == Drained::More
                    });
            let (retryable, reason) = match outcome {
                Ok(resp) if (200..300).contains(&resp.status) => {
                    counters.payloads_sent.fetch_add(1, Relaxed);
                    counters.traces_sent.fetch_add(u64::from(traces), Relaxed);
                    counters.spans_sent.fetch_add(spans, Relaxed);
                    counters.bytes_sent.fetch_add(body.len() as u64, Relaxed);
                    self.tracer.ledger.acked();
                    problems.clear(Problem::AgentUnreachable, "the agent is reachable again");
                    problems.clear(Problem::AgentRejected, "the agent accepts traces again");
                    self.on_reply(&resp);
                    return Ok(());
                }
                Ok(resp) => {
                    last_status = Some(resp.status);
                    if matches!(resp.status, 404 | 415) && path == Format::V05.path() {
                        // The agent does not take v0.5 after all: v0.4 from now on.
                        self.use_format(Format::V04);
                    }
                    let retryable = matches!(resp.status, 408 | 429) || resp.status >= 500;
                    let text = String::from_utf8_lossy(resp.body.get(..200).unwrap_or(&resp.body))
                        .trim()
                        .to_owned();
                    (
                        retryable,
                        (
                            Problem::AgentRejected,
                            format!(
                                "the agent at {} answered {} to {path}: {text}",
                                self.transport.url(),
                                resp.status
                            ),
                        ),
                    )
                }
                Err(e) => {
                    last_status = None;
                    (true, (Problem::AgentUnreachable, describe(&e)))
                }
            };
            if !retryable || attempt >= cfg.send_retries {
                let (problem, msg) = reason;
                problems.raise(problem, || {
                    format!("{msg}; dropping traces until it recovers (counted in Health)")
                });
                break msg;
            }
            attempt += 1;
            counters.send_retries.fetch_add(1, Relaxed);
            let backoff =
                Duration::from_millis(50u64 << attempt.min(6)).min(deadline.saturating_duration_since(Instant::now()));
            thread::sleep(backoff);
        };
        self.tracer.ledger.failed(last_status, Instant::now());
        // The next payload tells the agent about these P0 drops instead.
        self.enc.p0_pending.0 += p0.0;
        self.enc.p0_pending.1 += p0.1;
        counters.payloads_failed.fetch_add(1, Relaxed);
        counters
            .traces_dropped_send_failed
            .fetch_add(u64::from(traces), Relaxed);
        counters.spans_dropped_send_failed.fetch_add(spans, Relaxed);
        counters.set_last_error(&failure);
        Err(FlushError::Send(failure))
    }

    /// Seals the ledger's in-flight payload and renders its report.
    fn ledger_header(&self) -> String {
        let c = &self.tracer.counters;
        let totals = crate::ledger::Totals {
            created: c.app.created(),
            finished: c.app.finished(),
            too_large: c.spans_dropped_trace_too_large.load(Relaxed),
        };
        self.tracer.ledger.seal(&self.enc.ctx.runtime_id, totals)
    }

    fn on_reply(&mut self, resp: &AgentResponse) {
        match AgentRates::from_response(&resp.body) {
            Ok(Some(rates)) => {
                self.tracer.sampler.set_agent_rates(rates);
                self.tracer.counters.agent_rate_updates.fetch_add(1, Relaxed);
            }
            Ok(None) => {}
            Err(reason) => {
                self.tracer.problems.raise(Problem::BadAgentResponse, || {
                    format!("ignoring the agent's sampling rates: {reason}")
                });
            }
        }
        if resp.agent_state.is_some() && resp.agent_state != self.agent_state {
            // The agent's configuration changed: read /info again at the next opportunity.
            self.agent_state.clone_from(&resp.agent_state);
            self.next_info = Instant::now();
        }
    }
}

/// Chunks encoded between two looks at a send in flight.
const DRAIN_STEP: usize = 64;

/// Where client-computed stats go.
const STATS_PATH: &str = "/v0.6/stats";

fn describe(e: &TransportError) -> String {
    match e {
        TransportError::Connect { .. } => {
            format!("{e} (is the trace agent running? set DD_TRACE_AGENT_URL or DD_AGENT_HOST/DD_TRACE_AGENT_PORT)")
        }
        _ => e.to_string(),
    }
}
