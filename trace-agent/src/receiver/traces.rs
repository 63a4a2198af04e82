//! Trace and client-stats payload handling: limits, decoding, processing, the hand-off to the
//! pipeline and the rates reply.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::AppState;
use super::budget::{self, ReadRefusal};
use super::routes::{Reply, reply, text};
use crate::config::parse_bool;
use crate::decode::{self, ApiVersion, DecodeError, DecodeLimits, Encoding, ReadErrorKind};
use crate::pipeline::{BytePermit, HandOffError, PipelineItem, ProcessedPayload};
use crate::process::{self, RequestFacts};
use crate::process::{ProcessConfig, toplevel};
use crate::span::{OwnedPayload, Str, tag_get};
use crate::stats::ClientStatsInput;
use crate::stats::client::{ClientStatsFacts, process_client_stats};
use crate::status::TracerKey;

/// Drop reason: the body could not be decoded.
pub const DROP_DECODE: &str = "decode_error";
/// Drop reason: the body exceeded `max_payload_size`.
pub const DROP_TOO_LARGE: &str = "payload_too_large";
/// Drop reason: no decoder slot in time.
pub const DROP_OVERLOAD: &str = "overload";
/// Drop reason: the body could not be read in time or at all.
pub const DROP_READ: &str = "read_error";
/// Drop reason: a `/v0.6/stats` body that is not a valid `ClientStatsPayload`.
pub const DROP_STATS_DECODE: &str = "stats_decode_error";
/// Drop reason: a `/v0.6/stats` payload the pipeline did not take in time.
pub const DROP_STATS_QUEUE: &str = "stats_queue_full";
/// Drop reason: `Sec-Fetch-Site: cross-site`.
pub const DROP_CROSS_SITE: &str = "cross_site";
/// Drop reason: more spans than `apm_config.max_spans_per_payload`.
pub const DROP_TOO_MANY_SPANS: &str = "too_many_spans";
/// Drop reason: decoding would exceed `apm_config.max_decoded_ratio` × the body size.
pub const DROP_DECODED_TOO_LARGE: &str = "decoded_too_large";
/// Drop reason: the process RSS is over `apm_config.max_memory`.
pub const DROP_MEMORY: &str = "max_memory";
/// Drop reason: the process CPU use is over `apm_config.max_cpu_percent`.
pub const DROP_CPU: &str = "max_cpu_percent";
/// Drop reason: request bodies already held fill `apm_config.receiver_max_buffered_bytes`
/// (no room within `decoder_timeout`); the body was drained, not read.
pub const DROP_BODY_BUDGET: &str = "body_budget";
/// Drop reason: the pipeline to the forwarding stage was full (`pipeline_capacity` payloads or
/// `apm_config.pipeline_max_bytes`) within `decoder_timeout`: answered 429, never accepted.
pub const DROP_PIPELINE_FULL: &str = "pipeline_full";

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Go-style truthiness of a header: set, non-empty and not a false value.
pub fn truthy(h: &HeaderMap, name: &str) -> bool {
    let v = header_str(h, name).trim();
    !v.is_empty() && parse_bool(v) != Some(false)
}

fn count_header(h: &HeaderMap, name: &str) -> u64 {
    header_str(h, name).trim().parse().unwrap_or(0)
}

/// Reads the body under the receivers' shared byte budget (see [`budget`]), within
/// `max_payload_size` and the read timeout; no decoder slot is held meanwhile.
async fn read_body(state: &AppState, h: &HeaderMap, body: &mut Incoming) -> Result<(Bytes, BytePermit), ReadRefusal> {
    budget::read_body(
        &state.body_budget,
        body,
        budget::declared_length(h),
        state.config.max_payload_size,
        state.config.receiver_timeout,
        state.config.decoder_timeout,
    )
    .await
}

/// What an overloaded agent answers a trace payload: 429 to tracers that ask for real statuses
/// (`Datadog-Send-Real-Http-Status` or feature `429`), else 200 like the Go agent.
fn overload_status(real_status: bool) -> StatusCode {
    if real_status {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::OK
    }
}

/// Reads a refused body into nothing (frame by frame, nothing kept), at most
/// `max_payload_size` bytes and within the receiver timeout, so the connection stays usable
/// without the body costing memory (the Go agent's `io.Copy(io.Discard, body)`).
pub async fn drain_body(state: &AppState, mut body: Incoming) {
    let limit = state.config.max_payload_size;
    let drain = async {
        let mut seen = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return };
            if let Some(data) = frame.data_ref() {
                seen += data.len() as u64;
                if seen > limit {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(state.config.receiver_timeout, drain).await;
}

/// A decoder slot within `decoder_timeout`, or `None` (overload). Routes that decode a body
/// (traces, `/v0.6/stats`, OTLP) take one after the body is read (under the byte budget) and
/// hold it for the CPU-bound decoding only; proxies never take one.
pub async fn decoder_slot(state: &AppState) -> Option<DecoderSlot<'_>> {
    match tokio::time::timeout(state.config.decoder_timeout, state.decoders.acquire()).await {
        Ok(Ok(p)) => Some(DecoderSlot::new(p, state)),
        _ => None,
    }
}

/// The watchdog's refusal (memory or CPU over its limit): counted, logged, the body drained,
/// and `Err` with the status to answer (429 whatever the tracer asked for: the agent cannot
/// take more right now). `Ok` gives the body back when nothing is over its limit.
async fn watchdog_refusal(state: &AppState, h: &HeaderMap, body: Incoming) -> Result<Incoming, StatusCode> {
    let Some(why) = state.watchdog.check() else {
        return Ok(body);
    };
    let (reason, msg) = match why {
        super::watchdog::Refusal::Memory => (
            DROP_MEMORY,
            format!(
                "process memory over apm_config.max_memory ({} bytes): payload refused (429)",
                state.config.max_memory
            ),
        ),
        super::watchdog::Refusal::Cpu => (
            DROP_CPU,
            format!(
                "process CPU over apm_config.max_cpu_percent ({} %): payload refused (429)",
                state.config.max_cpu_percent
            ),
        ),
    };
    state
        .stats
        .record_drop(reason, 1, count_header(h, "x-datadog-trace-count"), 0);
    warn_limited(state, &msg);
    drain_body(state, body).await;
    Err(StatusCode::TOO_MANY_REQUESTS)
}

/// Checks shared by traces and stats: cross-site, declared size. `Some` is the early reply.
fn precheck(state: &AppState, h: &HeaderMap) -> Option<Reply> {
    if header_str(h, "sec-fetch-site").eq_ignore_ascii_case("cross-site") {
        state
            .stats
            .record_drop(DROP_CROSS_SITE, 1, count_header(h, "x-datadog-trace-count"), 0);
        return Some(text(StatusCode::FORBIDDEN, "cross-site request rejected"));
    }
    let declared = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.config.max_payload_size) {
        state
            .stats
            .record_drop(DROP_TOO_LARGE, 1, count_header(h, "x-datadog-trace-count"), 0);
        warn_limited(
            state,
            &format!("payload of {} bytes exceeds max_payload_size", declared.unwrap_or(0)),
        );
        return Some(text(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large"));
    }
    None
}

/// Logs a warning at most once every 10 seconds and remembers it as the last error.
fn warn_limited(state: &AppState, msg: &str) {
    state.stats.record_error(msg.to_owned());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let last = state.last_warn.load(Ordering::Relaxed);
    if now >= last + 10
        && state
            .last_warn
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!("{msg}");
    }
}

fn body_error_reply(state: &AppState, h: &HeaderMap, e: ReadRefusal) -> Reply {
    let traces = count_header(h, "x-datadog-trace-count");
    match e {
        ReadRefusal::TooLarge => {
            state.stats.record_drop(DROP_TOO_LARGE, 1, traces, 0);
            warn_limited(state, "payload exceeds max_payload_size while reading");
            text(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large")
        }
        ReadRefusal::Timeout => {
            state.stats.record_drop(DROP_READ, 1, traces, 0);
            warn_limited(state, "timeout reading a payload");
            text(StatusCode::REQUEST_TIMEOUT, "timeout")
        }
        ReadRefusal::Io(msg) => {
            state.stats.record_drop(DROP_READ, 1, traces, 0);
            warn_limited(state, &format!("error reading a payload: {msg}"));
            text(StatusCode::BAD_REQUEST, &msg)
        }
        ReadRefusal::NoBudget => {
            count_no_budget(state, h);
            text(StatusCode::TOO_MANY_REQUESTS, "too many requests")
        }
    }
}

/// Counts a body refused because request bodies already fill the budget (the caller drains it
/// and answers as for an overload).
fn count_no_budget(state: &AppState, h: &HeaderMap) {
    state
        .stats
        .record_drop(DROP_BODY_BUDGET, 1, count_header(h, "x-datadog-trace-count"), 0);
    warn_limited(
        state,
        "request bodies already fill apm_config.receiver_max_buffered_bytes: payload refused (overload)",
    );
}

/// The pipeline has no room (`Full`) or is gone (`Closed`): counted, and the reply to give.
fn hand_off_refusal(
    state: &AppState,
    e: HandOffError,
    reason: &str,
    traces: u64,
    spans: u64,
) -> (StatusCode, &'static str) {
    match e {
        HandOffError::Full => {
            state.stats.record_drop(reason, 1, traces, spans);
            warn_limited(
                state,
                "the forwarding stage is behind (pipeline_capacity / apm_config.pipeline_max_bytes full): payload refused (429)",
            );
            (StatusCode::TOO_MANY_REQUESTS, "too many requests")
        }
        HandOffError::Closed => {
            state.stats.record_drop(reason, 1, traces, spans);
            state
                .stats
                .record_error("pipeline closed: payload refused during shutdown".to_owned());
            (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
        }
    }
}

/// Refuses a payload before reading its body because the pipeline is full: counted, the body
/// drained (429 for every tracer: what cannot be queued is not accepted).
async fn refuse_pipeline_full(state: &AppState, h: &HeaderMap, body: Incoming, reason: &str) {
    hand_off_refusal(
        state,
        HandOffError::Full,
        reason,
        count_header(h, "x-datadog-trace-count"),
        0,
    );
    drain_body(state, body).await;
}

/// 413 for a payload a configured decoding limit refused, naming the limit; counted.
fn limit_reply(state: &AppState, h: &HeaderMap, e: &DecodeError, what: &str) -> Reply {
    let reason = match e.kind {
        ReadErrorKind::TooManySpans { .. } => DROP_TOO_MANY_SPANS,
        _ => DROP_DECODED_TOO_LARGE,
    };
    state
        .stats
        .record_drop(reason, 1, count_header(h, "x-datadog-trace-count"), 0);
    warn_limited(state, &format!("{what} refused: {}", e.kind));
    text(StatusCode::PAYLOAD_TOO_LARGE, &e.kind.to_string())
}

fn rates_reply(state: &AppState, version: ApiVersion, h: &HeaderMap, status: StatusCode) -> Reply {
    if matches!(version, ApiVersion::V01 | ApiVersion::V02 | ApiVersion::V03) {
        return text(status, "OK");
    }
    let tracer_has = h.get("datadog-rates-payload-version").and_then(|v| v.to_str().ok());
    let (body, current) = state.rates.reply(tracer_has);
    let mut r = reply(status, "application/json", body);
    if tracer_has.is_some()
        && let Ok(v) = HeaderValue::from_str(&current)
    {
        r.headers_mut().insert("datadog-rates-payload-version", v);
    }
    r
}

/// A held decoder slot, counted in `status` while held.
#[derive(Debug)]
pub struct DecoderSlot<'s> {
    _permit: tokio::sync::SemaphorePermit<'s>,
    state: &'s AppState,
}

impl<'s> DecoderSlot<'s> {
    fn new(permit: tokio::sync::SemaphorePermit<'s>, state: &'s AppState) -> Self {
        state.stats.decoders_busy.fetch_add(1, Ordering::Relaxed);
        Self { _permit: permit, state }
    }
}

impl Drop for DecoderSlot<'_> {
    fn drop(&mut self) {
        self.state.stats.decoders_busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The outcome of decoding and processing one body off the async threads.
struct Decoded {
    payload: OwnedPayload,
    /// `(root service, traces, spans)` as received, before processing, in order of appearance.
    received: Vec<(String, u64, u64)>,
    report: process::ProcessReport,
    /// `(service, env)` of every chunk root, deduplicated, for the rates table.
    rate_keys: Vec<(String, String)>,
}

/// Tracer identity from the request headers.
struct Identity {
    lang: String,
    lang_version: String,
    tracer_version: String,
    /// `Datadog-Container-ID`, else a `cid-`/`ci-` `Datadog-Entity-ID`.
    container_id: String,
    /// `X-Datadog-Process-Tags`.
    process_tags: String,
}

/// The process tags key on the tracer payload.
const PROCESS_TAGS_KEY: &str = "_dd.tags.process";

/// Decodes and processes `body` (runs on a blocking thread: CPU-bound).
fn decode_and_process(
    version: ApiVersion,
    encoding: Encoding,
    body: Vec<u8>,
    id: &Identity,
    client_computed_top_level: bool,
    config: &ProcessConfig,
    limits: DecodeLimits,
) -> Result<Decoded, DecodeError> {
    let mut received: Vec<(String, u64, u64)> = Vec::new();
    let mut report = process::ProcessReport::default();
    let mut rate_keys: Vec<(String, String)> = Vec::new();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let payload = OwnedPayload::try_new(body, |b| {
        let mut p = decode::decode_payload_with(version, encoding, b, limits)?;
        // Hash maps, not scans: a payload of N traces with N services is O(N).
        let mut index: HashMap<&str, usize> = HashMap::new();
        for chunk in &p.chunks {
            let service = toplevel::root_index(&chunk.spans)
                .and_then(|i| chunk.spans.get(i))
                .map_or("", |s| s.service.as_str());
            let spans = chunk.spans.len() as u64;
            match index.get(service).and_then(|&i| received.get_mut(i)) {
                Some(entry) => {
                    entry.1 += 1;
                    entry.2 += spans;
                }
                None => {
                    index.insert(service, received.len());
                    received.push((service.to_owned(), 1, spans));
                }
            }
        }
        drop(index);
        let facts = RequestFacts {
            lang: &id.lang,
            client_computed_top_level,
        };
        report = process::process_payload(&mut p, &facts, config, now);
        if p.language_name.is_empty() {
            p.language_name = Str::from(id.lang.clone());
            p.language_version = Str::from(id.lang_version.clone());
            p.tracer_version = Str::from(id.tracer_version.clone());
        }
        if p.container_id.is_empty() && !id.container_id.is_empty() {
            p.container_id = Str::from(id.container_id.clone());
        }
        // Process tags: the payload's own, else the header, else the first span's meta.
        if tag_get(&p.tags, PROCESS_TAGS_KEY).is_none() {
            let from_span = || {
                p.chunks
                    .first()
                    .and_then(|c| c.spans.first())
                    .and_then(|s| s.meta(PROCESS_TAGS_KEY))
                    .map(str::to_owned)
            };
            let tags = Some(id.process_tags.clone())
                .filter(|t| !t.is_empty())
                .or_else(from_span);
            if let Some(tags) = tags {
                p.tags.push((Str::from_static(PROCESS_TAGS_KEY), Str::from(tags)));
            }
        }
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        for chunk in &p.chunks {
            if let Some(root) = toplevel::root_index(&chunk.spans).and_then(|i| chunk.spans.get(i)) {
                let env = tag_get(&root.meta, "env").map_or(p.env.as_str(), Str::as_str);
                if seen.insert((root.service.as_str(), env)) {
                    rate_keys.push((root.service.to_string(), env.to_owned()));
                }
            }
        }
        drop(seen);
        Ok(p)
    })?;
    Ok(Decoded {
        payload,
        received,
        report,
        rate_keys,
    })
}

/// The container id from `Datadog-Container-ID`, else from a `cid-<id>`/`ci-<id>`
/// `Datadog-Entity-ID` (an `in-<inode>` entity needs cgroup lookups this agent does not do).
fn container_id(h: &HeaderMap) -> String {
    let direct = header_str(h, "datadog-container-id").trim();
    if !direct.is_empty() {
        return direct.to_owned();
    }
    let entity = header_str(h, "datadog-entity-id").trim();
    entity
        .strip_prefix("cid-")
        .or_else(|| entity.strip_prefix("ci-"))
        .unwrap_or("")
        .to_owned()
}

/// Handles `/v0.x/traces`; the span ledger's report (`X-Span-Ledger`) is kept with the status
/// answered (see `crate::ledger`).
pub async fn handle(state: &Arc<AppState>, version: ApiVersion, req: Request<Incoming>) -> Reply {
    let report = req
        .headers()
        .get(crate::ledger::HEADER)
        .map(|v| crate::ledger::parse_header(v.as_bytes()));
    let lang = header_str(req.headers(), "datadog-meta-lang").to_owned();
    let reply = handle_payload(state, version, req, matches!(report, Some(Ok(_)))).await;
    let ledger = &state.stats.forward.ledger;
    match report {
        Some(Ok(r)) => ledger.report(r, &lang, reply.status().as_u16()),
        Some(Err(e)) => ledger.bad_header(&e),
        None => {}
    }
    reply
}

async fn handle_payload(state: &Arc<AppState>, version: ApiVersion, req: Request<Incoming>, reported: bool) -> Reply {
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    if let Some(early) = precheck(state, h) {
        return early;
    }
    let mut body = match watchdog_refusal(state, h, body).await {
        Ok(body) => body,
        Err(status) => return rates_reply(state, version, h, status),
    };
    // A writer behind (upstream::Pressure): 429 rather than accept what would be dropped.
    let real_status = truthy(h, "datadog-send-real-http-status") || state.config.features.iter().any(|f| f == "429");
    if (state.stats.upstreams.get()).is_some_and(|u| crate::upstream::pressure_of(u).refuse(real_status)) {
        state
            .stats
            .record_drop("writer_backpressure", 1, count_header(h, "x-datadog-trace-count"), 0);
        drain_body(state, body).await;
        return rates_reply(state, version, h, StatusCode::TOO_MANY_REQUESTS);
    }
    // The forwarding stage is behind: refuse before reading rather than accept and drop.
    if !state.pipeline.has_room(state.config.decoder_timeout).await {
        refuse_pipeline_full(state, h, body, DROP_PIPELINE_FULL).await;
        return rates_reply(state, version, h, StatusCode::TOO_MANY_REQUESTS);
    }
    // The body is read under the shared byte budget, without a decoder slot: a slow client
    // holds its own bytes, not the decoder.
    let (bytes, body_permit) = match read_body(state, h, &mut body).await {
        Ok(b) => b,
        Err(ReadRefusal::NoBudget) => {
            count_no_budget(state, h);
            // Like the Go agent, drain the body (bounded, into nothing) so the connection
            // stays usable.
            drain_body(state, body).await;
            return rates_reply(state, version, h, overload_status(real_status));
        }
        Err(e) => return body_error_reply(state, h, e),
    };
    let body_len = bytes.len() as u64;
    let encoding = Encoding::from_content_type(h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()));
    if matches!(version, ApiVersion::V01 | ApiVersion::V02) && encoding == Encoding::Msgpack {
        state
            .stats
            .record_drop(DROP_DECODE, 1, count_header(h, "x-datadog-trace-count"), 0);
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported media type: \"application/msgpack\"",
        );
    }
    let id = Identity {
        lang: header_str(h, "datadog-meta-lang").to_owned(),
        lang_version: header_str(h, "datadog-meta-lang-version").to_owned(),
        tracer_version: header_str(h, "datadog-meta-tracer-version").to_owned(),
        container_id: container_id(h),
        process_tags: header_str(h, "x-datadog-process-tags").trim().to_owned(),
    };
    let top_level = truthy(h, "datadog-client-computed-top-level");
    let config = Arc::clone(&state.process);
    let limits = state.config.decode_limits(bytes.len());
    let Some(slot) = decoder_slot(state).await else {
        state
            .stats
            .record_drop(DROP_OVERLOAD, 1, count_header(h, "x-datadog-trace-count"), 0);
        warn_limited(state, "no decoder slot available in time: payload refused (overload)");
        return rates_reply(state, version, h, overload_status(real_status));
    };
    let work = tokio::task::spawn_blocking(move || {
        let body = Vec::from(bytes);
        let out = decode_and_process(version, encoding, body, &id, top_level, &config, limits);
        (out, id)
    })
    .await;
    // The decoder slot covers the CPU-bound decoding only.
    drop(slot);
    let (decoded, id) = match work {
        Ok((Ok(d), id)) => (d, id),
        Ok((Err(e), _)) if e.is_limit() => {
            return limit_reply(state, h, &e, &format!("{} traces payload", version.as_str()));
        }
        Ok((Err(e), id)) => {
            let lang = id.lang;
            state
                .stats
                .record_drop(DROP_DECODE, 1, count_header(h, "x-datadog-trace-count"), 0);
            let who = crate::status::tracer_identity(
                &lang,
                header_str(h, "datadog-meta-lang-version"),
                header_str(h, "datadog-meta-tracer-version"),
            );
            warn_limited(
                state,
                &format!("cannot decode {} traces payload from {who}: {e}", version.as_str()),
            );
            return text(StatusCode::BAD_REQUEST, &e.to_string());
        }
        Err(e) => {
            state.stats.record_error(format!("payload processing task failed: {e}"));
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    let Decoded {
        payload,
        received,
        report,
        rate_keys,
    } = decoded;
    // Room in the pipeline (items and bytes) before anything counts as received: a payload
    // that cannot be queued is refused with 429, never accepted and then dropped.
    let reservation = if payload.get().chunks.is_empty() {
        None
    } else {
        let charge = crate::pipeline::estimated_bytes(payload.get(), payload_len(body_len));
        match state.pipeline.reserve(charge, state.config.decoder_timeout).await {
            Ok(r) => Some(r),
            Err(e) => {
                let (traces, spans) = (payload.get().chunks.len() as u64, payload.get().span_count() as u64);
                let (status, _) = hand_off_refusal(state, e, DROP_PIPELINE_FULL, traces, spans);
                return rates_reply(state, version, h, status);
            }
        }
    };
    let dropped_p0 = (
        count_header(h, "datadog-client-dropped-p0-traces"),
        count_header(h, "datadog-client-dropped-p0-spans"),
    );
    state
        .stats
        .client_dropped_p0_traces
        .fetch_add(dropped_p0.0, Ordering::Relaxed);
    state
        .stats
        .client_dropped_p0_spans
        .fetch_add(dropped_p0.1, Ordering::Relaxed);
    state.stats.record_payload(
        |service| TracerKey {
            service: service.to_owned(),
            lang: id.lang.clone(),
            lang_version: id.lang_version.clone(),
            tracer_version: id.tracer_version.clone(),
        },
        &received,
        body_len,
    );
    for (reason, (traces, spans)) in &report.dropped {
        state.stats.record_drop(reason.as_str(), 0, *traces, *spans);
        // Filtered traces are the user's choice; invalid ones are a tracer problem worth a line.
        if matches!(reason, process::DropReason::Normalize(_)) {
            warn_limited(
                state,
                &format!("dropped {traces} invalid trace(s) ({spans} spans): {}", reason.as_str()),
            );
        }
    }
    let reasons: Vec<&str> = report.dropped.keys().map(|r| r.as_str()).collect();
    let survived = crate::ledger::count_payload(payload.get());
    (state.stats.forward.ledger).received(&id.lang, &received, &survived, &reasons, reported);
    state.stats.record_fixes(&report.fixed);
    state.rates.observe_all(&rate_keys);
    if let Some(reservation) = reservation {
        let processed = ProcessedPayload {
            payload,
            client_computed_stats: truthy(h, "datadog-client-computed-stats"),
            client_dropped_p0_traces: dropped_p0.0,
            received_at: SystemTime::now(),
        };
        reservation.send(PipelineItem::Traces(processed));
    }
    // The body now lives in the pipeline, charged to its byte budget.
    drop(body_permit);
    rates_reply(state, version, h, StatusCode::OK)
}

/// Handles `/v0.6/stats`: reads the body under the shared byte budget, decodes the
/// `ClientStatsPayload`, normalizes and obfuscates its groups (on a blocking thread, with a
/// decoder slot) and hands it to the pipeline's client-stats aggregator. 400 on a decode error;
/// 429 (counted `stats_queue_full`) when the pipeline is full — checked before the body is
/// read, and again at the hand-off within `decoder_timeout`.
pub async fn handle_stats(state: &Arc<AppState>, req: Request<Incoming>) -> Reply {
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    if let Some(early) = precheck(state, h) {
        return early;
    }
    let mut body = match watchdog_refusal(state, h, body).await {
        Ok(body) => body,
        Err(status) => return text(status, "too many requests"),
    };
    // Push-back: the stats path is full, refuse before reading.
    if !state.pipeline.has_room(state.config.decoder_timeout).await {
        refuse_pipeline_full(state, h, body, DROP_STATS_QUEUE).await;
        return text(StatusCode::TOO_MANY_REQUESTS, "too many requests");
    }
    // The same byte budget as trace payloads, and a decoder slot for the decoding only.
    let (bytes, body_permit) = match read_body(state, h, &mut body).await {
        Ok(b) => b,
        Err(e @ ReadRefusal::NoBudget) => {
            let reply = body_error_reply(state, h, e);
            drain_body(state, body).await;
            return reply;
        }
        Err(e) => return body_error_reply(state, h, e),
    };
    let Some(slot) = decoder_slot(state).await else {
        state.stats.record_drop(DROP_OVERLOAD, 1, 0, 0);
        warn_limited(
            state,
            "no decoder slot available in time: stats payload refused (overload)",
        );
        return text(StatusCode::TOO_MANY_REQUESTS, "too many requests");
    };
    let body_len = bytes.len();
    let limits = state.config.decode_limits(bytes.len());
    let lang = header_str(h, "datadog-meta-lang").to_owned();
    let tracer_version = header_str(h, "datadog-meta-tracer-version").to_owned();
    let cid = container_id(h);
    let tracer_obfuscated = !header_str(h, "datadog-obfuscation-version").trim().is_empty();
    let (process, stats_config) = (Arc::clone(&state.process), Arc::clone(&state.config));
    let work = tokio::task::spawn_blocking(move || {
        let mut payload = decode::decode_client_stats_with(&bytes, limits)?;
        let facts = ClientStatsFacts {
            lang: &lang,
            tracer_version: &tracer_version,
            container_id: &cid,
            tracer_obfuscated,
        };
        let report = process_client_stats(&mut payload, &facts, &process, &stats_config.stats);
        Ok::<_, DecodeError>((payload, report))
    })
    .await;
    drop(slot);
    let (payload, report) = match work {
        Ok(Ok(done)) => done,
        Ok(Err(e)) if e.is_limit() => return limit_reply(state, h, &e, "/v0.6/stats payload"),
        Ok(Err(e)) => {
            state.stats.record_drop(DROP_STATS_DECODE, 1, 0, 0);
            warn_limited(state, &format!("cannot decode /v0.6/stats payload: {e}"));
            return text(StatusCode::BAD_REQUEST, &e.to_string());
        }
        Err(e) => {
            state.stats.record_error(format!("stats processing task failed: {e}"));
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    state.stats.client_stats_payloads.fetch_add(1, Ordering::Relaxed);
    if report.ignored_groups > 0 {
        tracing::debug!(
            groups = report.ignored_groups,
            "client stats groups dropped by ignore_resources"
        );
    }
    let charge = client_stats_bytes(&payload, body_len);
    match state.pipeline.reserve(charge, state.config.decoder_timeout).await {
        Ok(reservation) => {
            reservation.send(PipelineItem::ClientStats(ClientStatsInput {
                payload,
                received_at: SystemTime::now(),
            }));
            drop(body_permit);
            reply(StatusCode::OK, "text/plain; charset=utf-8", Bytes::new())
        }
        Err(e) => {
            let (status, msg) = hand_off_refusal(state, e, DROP_STATS_QUEUE, 0, 0);
            text(status, msg)
        }
    }
}

/// The memory a decoded client-stats payload is charged for in the pipeline: its buckets and
/// groups by their sizes, plus the body's length for the strings copied from it.
fn client_stats_bytes(payload: &libdd_trace_protobuf::pb::ClientStatsPayload, body_len: usize) -> u64 {
    let structs: usize = payload
        .stats
        .iter()
        .map(|b| std::mem::size_of_val(b) + b.stats.iter().map(std::mem::size_of_val).sum::<usize>())
        .sum();
    (body_len + structs) as u64
}

/// A body length as `usize` (bodies are bounded by `max_payload_size`).
fn payload_len(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
