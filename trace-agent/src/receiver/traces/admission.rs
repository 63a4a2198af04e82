//! Admission of a payload: headers, the body under the byte budget, the watchdog, decoder
//! slots, and the replies for what is refused.

use super::*;

pub(super) fn header_str<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Go-style truthiness of a header: set, non-empty and not a false value.
pub fn truthy(h: &HeaderMap, name: &str) -> bool {
    let v = header_str(h, name).trim();
    !v.is_empty() && parse_bool(v) != Some(false)
}

pub(super) fn count_header(h: &HeaderMap, name: &str) -> u64 {
    header_str(h, name).trim().parse().unwrap_or(0)
}

/// Reads the body under the receivers' shared byte budget (see [`budget`]), within
/// `max_payload_size` and the read timeout; no decoder slot is held meanwhile.
pub(super) async fn read_body(
    state: &AppState,
    h: &HeaderMap,
    body: &mut Incoming,
) -> Result<(Bytes, BytePermit), ReadRefusal> {
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
pub(super) fn overload_status(real_status: bool) -> StatusCode {
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
pub(super) async fn watchdog_refusal(state: &AppState, h: &HeaderMap, body: Incoming) -> Result<Incoming, StatusCode> {
    let Some(why) = state.watchdog.check() else {
        return Ok(body);
    };
    let (reason, msg) = match why {
        crate::receiver::watchdog::Refusal::Memory => (
            DROP_MEMORY,
            format!(
                "process memory over apm_config.max_memory ({} bytes): payload refused (429)",
                state.config.max_memory
            ),
        ),
        crate::receiver::watchdog::Refusal::Cpu => (
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

/// How often a request held back by a busy writer looks at its pressure again, when the
/// writer does not signal freed room ([`crate::upstream::Upstream::room_signal`]).
const WRITER_POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// The same when it does: only a safety net, the signal is the wake-up.
const WRITER_SIGNALLED_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Whether the writers take a payload now: at once when none refuses it
/// ([`crate::upstream::Pressure::refuse`]), else after waiting (at most `decoder_timeout`)
/// for the busiest one to catch up: woken when the only writer signals freed room (the local
/// store, after each batch), else checking every [`WRITER_POLL`]. The body stays unread
/// meanwhile: the client's own send blocks (TCP flow control) instead of the agent reading
/// bodies only to refuse them, which at saturation cost more CPU than the payloads it stored.
/// `false`: still refused at the deadline (the caller answers 429).
pub(super) async fn writers_take(state: &AppState, real_status: bool) -> bool {
    let upstreams = state.stats.upstreams.get();
    let refused = || upstreams.is_some_and(|u| crate::upstream::pressure_of(u).refuse(real_status));
    if !refused() {
        return true;
    }
    let signal = match upstreams.map(Vec::as_slice) {
        Some([only]) => only.room_signal(),
        _ => None,
    };
    let poll = if signal.is_some() {
        WRITER_SIGNALLED_POLL
    } else {
        WRITER_POLL
    };
    let deadline = tokio::time::Instant::now() + state.config.decoder_timeout;
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return !refused();
        }
        // Created before the check: a signal between the check and the wait is not missed.
        let woken = signal.as_ref().map(|n| n.notified());
        if !refused() {
            return true;
        }
        let sleep = tokio::time::sleep_until((now + poll).min(deadline));
        match woken {
            Some(woken) => {
                tokio::select! {
                    () = woken => {}
                    () = sleep => {}
                }
            }
            None => sleep.await,
        }
    }
}

/// Checks shared by traces and stats: cross-site, declared size. `Some` is the early reply.
pub(super) fn precheck(state: &AppState, h: &HeaderMap) -> Option<Reply> {
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

pub(super) use crate::receiver::warn_limited;

pub(super) fn body_error_reply(state: &AppState, h: &HeaderMap, e: ReadRefusal) -> Reply {
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
pub(super) fn count_no_budget(state: &AppState, h: &HeaderMap) {
    state
        .stats
        .record_drop(DROP_BODY_BUDGET, 1, count_header(h, "x-datadog-trace-count"), 0);
    warn_limited(
        state,
        "request bodies already fill apm_config.receiver_max_buffered_bytes: payload refused (overload)",
    );
}

/// The pipeline has no room (`Full`) or is gone (`Closed`): counted, and the reply to give.
pub(super) fn hand_off_refusal(
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
pub(super) async fn refuse_pipeline_full(state: &AppState, h: &HeaderMap, body: Incoming, reason: &str) {
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
pub(super) fn limit_reply(state: &AppState, h: &HeaderMap, e: &DecodeError, what: &str) -> Reply {
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

pub(super) fn rates_reply(state: &AppState, version: ApiVersion, h: &HeaderMap, status: StatusCode) -> Reply {
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
