//! A lane's worker tasks: one job at a time, sent with retries and recorded.

use super::*;

pub(super) async fn worker(settings: ChannelSettings, lane: Arc<Lane>, counters: Arc<Counters>, client: HttpClient) {
    while let Some(job) = lane.queue.pop().await {
        let items = job.payload.items();
        let id = lane.next_id.fetch_add(1, Ordering::Relaxed);
        lane.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, Arc::clone(&job));
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        counters.in_flight_items.fetch_add(items, Ordering::Relaxed);
        let undelivered = send(&settings, &lane, &counters, &client, &job).await;
        // Out of the in-flight set only once spooled: an abort meanwhile leaves it to shutdown.
        let taken = lane
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        counters.in_flight_items.fetch_sub(items, Ordering::Relaxed);
        if undelivered && let Some(job) = taken {
            let (st, l, c) = (settings.clone(), Arc::clone(&lane), Arc::clone(&counters));
            // Spooling runs to its end even if this task is aborted (a blocking task is not).
            let _ = tokio::task::spawn_blocking(move || {
                spool_jobs(&st, &l, &c, vec![job], DropReason::RetriesExhausted);
            })
            .await;
        }
    }
}

/// Sends one job to one endpoint, with retries; records the result. Returns true when the
/// retries ran out and a spool can take the job (the caller spools it; without a spool it was
/// counted as dropped here).
pub(super) async fn send(
    settings: &ChannelSettings,
    lane: &Lane,
    counters: &Counters,
    client: &HttpClient,
    job: &Arc<Job>,
) -> bool {
    let items = job.payload.items();
    let body = match job.body().await {
        Ok(b) => b,
        Err(e) => {
            counters.dropped(DropReason::Encode, 1, items);
            tracing::warn!(
                "{} {}: payload could not be encoded, dropped: {e}",
                settings.writer,
                settings.signal
            );
            return false;
        }
    };
    let mut headers = lane.endpoint.headers.clone();
    headers.extend(body.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    let masked = |s: &str| match &lane.endpoint.api_key {
        Some(k) if !k.is_empty() => s.replace(k.as_str(), &mask(k)),
        _ => s.to_owned(),
    };
    let mut retries = 0u32;
    loop {
        let outcome = client.post(&lane.endpoint.uri, &headers, body.bytes.clone()).await;
        let now = SystemTime::now();
        match outcome {
            Outcome::Success => {
                lane.attempts.success();
                lane.healthy.store(true, Ordering::Relaxed);
                let mut s = counters.lock();
                s.payloads_sent += 1;
                s.items_sent += items;
                s.bytes_sent += body.bytes.len() as u64;
                s.last_success = Some(now);
                job.payload.on_delivered();
                return false;
            }
            Outcome::Retriable { cause, message } => {
                lane.healthy.store(false, Ordering::Relaxed);
                let message = masked(&message);
                {
                    let mut s = counters.lock();
                    *s.failures.entry(cause).or_default() += 1;
                    s.last_error = Some((now, format!("{}: {message}", lane.endpoint.uri)));
                }
                if retries >= settings.max_retries {
                    let spooled = lane.spool.is_some();
                    if !spooled {
                        counters.dropped(DropReason::RetriesExhausted, 1, items);
                    }
                    tracing::warn!(
                        "{} {}: failed to send to {} after {} retries, {} {items} items: {message}",
                        settings.writer,
                        settings.signal,
                        lane.endpoint.uri,
                        settings.max_retries,
                        if spooled { "spooling" } else { "dropping" }
                    );
                    return spooled;
                }
                retries += 1;
                counters.lock().retries += 1;
                let attempt = lane.attempts.retry();
                let delay = settings.backoff.delay(attempt, fastrand::f64());
                tracing::debug!(
                    "{} {}: {} failed ({message}); retry {retries} in {delay:?}",
                    settings.writer,
                    settings.signal,
                    lane.endpoint.uri
                );
                tokio::time::sleep(delay).await;
            }
            Outcome::Rejected { status, body: text } => {
                let text = masked(&text);
                {
                    let mut s = counters.lock();
                    *s.failures.entry(status.as_u16().to_string()).or_default() += 1;
                    s.last_error = Some((now, format!("{}: HTTP {status}: {text}", lane.endpoint.uri)));
                }
                counters.dropped(DropReason::Rejected, 1, items);
                let first = lane
                    .logged
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(status.as_u16());
                if first {
                    if status == StatusCode::FORBIDDEN {
                        let key = lane
                            .endpoint
                            .api_key
                            .as_deref()
                            .map_or_else(|| "(none)".to_owned(), mask);
                        tracing::error!(
                            "{} {}: {} answered 403 Forbidden: the API key {key} is invalid or not allowed; \
                             payloads to it are dropped (logged once): {text}",
                            settings.writer,
                            settings.signal,
                            lane.endpoint.uri
                        );
                    } else {
                        tracing::warn!(
                            "{} {}: {} rejected a payload with HTTP {status}, dropped without retry (logged once \
                             per status): {text}",
                            settings.writer,
                            settings.signal,
                            lane.endpoint.uri
                        );
                    }
                }
                return false;
            }
        }
    }
}
