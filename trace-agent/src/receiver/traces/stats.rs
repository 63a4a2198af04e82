//! `/v0.6/stats`: client-computed stats payloads.

use super::*;

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
pub(super) fn client_stats_bytes(payload: &libdd_trace_protobuf::pb::ClientStatsPayload, body_len: usize) -> u64 {
    let structs: usize = payload
        .stats
        .iter()
        .map(|b| std::mem::size_of_val(b) + b.stats.iter().map(std::mem::size_of_val).sum::<usize>())
        .sum();
    (body_len + structs) as u64
}

/// A body length as `usize` (bodies are bounded by `max_payload_size`).
pub(super) fn payload_len(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
