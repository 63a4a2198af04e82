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

mod admission;
mod stats;
use admission::*;
pub use admission::{DecoderSlot, decoder_slot, drain_body, truthy};
pub use stats::handle_stats;
use stats::payload_len;

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
    // A writer behind (upstream::Pressure): wait for it (bounded, the body left unread), then
    // 429 rather than accept what would be dropped.
    let real_status = truthy(h, "datadog-send-real-http-status") || state.config.features.iter().any(|f| f == "429");
    if !writers_take(state, real_status).await {
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
