//! Spooling: writing what a lane could not deliver, and replaying it oldest first.

use super::*;

/// Writes `jobs` to `lane`'s spool (blocking: encodes bodies not yet encoded, writes files);
/// what cannot be spooled is counted as dropped with `reason`.
pub(super) fn spool_jobs(
    settings: &ChannelSettings,
    lane: &Lane,
    counters: &Counters,
    jobs: Vec<Arc<Job>>,
    reason: DropReason,
) {
    let kind = if settings.signal == "stats" {
        RecordKind::Stats
    } else {
        RecordKind::Traces
    };
    for job in jobs {
        let items = job.payload.items();
        let Some(spool) = &lane.spool else {
            counters.dropped(reason, 1, items);
            continue;
        };
        let body = match job.body_blocking() {
            Ok(b) => b,
            Err(_) => {
                counters.dropped(DropReason::Encode, 1, items);
                continue;
            }
        };
        let record = Record {
            kind,
            items,
            headers: body
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect(),
            body: body.bytes.to_vec(),
        };
        match spool.put(&record) {
            Ok(()) => {
                counters.spooled(1, items);
                job.payload.on_spooled();
            }
            Err(e) => {
                counters.dropped(reason, 1, items);
                log_once(lane, LOG_SPOOL_FAILED, || {
                    format!(
                        "{} {}: payloads to {} cannot be spooled, they are dropped ({reason}): {e}",
                        settings.writer, settings.signal, lane.endpoint.uri
                    )
                });
            }
        }
    }
}

/// Feeds `lane`'s spool back into its queue, oldest first, while the queue is less than half
/// full and the endpoint's last request succeeded.
pub(super) async fn replay(settings: ChannelSettings, lane: Arc<Lane>, counters: Arc<Counters>) {
    let Some(spool) = lane.spool.clone() else { return };
    let mut logged = false;
    loop {
        let (n, b) = lane.queue.depth();
        let (cn, cb) = lane.queue.capacity();
        let room = n * 2 < cn && b * 2 < cb;
        if !(room && lane.healthy.load(Ordering::Relaxed)) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let sp = spool.clone();
        let taken = tokio::task::spawn_blocking(move || sp.take_oldest()).await;
        match taken {
            Ok(Ok(Some(record))) => {
                if !logged {
                    logged = true;
                    tracing::info!(
                        "{} {}: sending payloads spooled earlier to {} ({} files left in {})",
                        settings.writer,
                        settings.signal,
                        lane.endpoint.uri,
                        spool.files().len() + 1,
                        spool.path().display()
                    );
                }
                let mut headers = HeaderMap::new();
                for (k, v) in &record.headers {
                    if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                        headers.insert(k, v);
                    }
                }
                let items = record.items;
                let job = Job::encoded(
                    items,
                    Body {
                        bytes: Bytes::from(record.body),
                        headers,
                    },
                );
                let bytes = job.payload.estimated_bytes();
                match lane.queue.push(Arc::clone(&job), bytes) {
                    Push::Accepted { evicted } => {
                        {
                            let mut s = counters.lock();
                            s.replayed_payloads += 1;
                            s.replayed_items += items;
                        }
                        if !evicted.is_empty() {
                            let (st, l, c) = (settings.clone(), Arc::clone(&lane), Arc::clone(&counters));
                            let _ = tokio::task::spawn_blocking(move || {
                                spool_jobs(&st, &l, &c, evicted, DropReason::QueueFull);
                            })
                            .await;
                        }
                    }
                    Push::TooLarge(j) | Push::Closed(j) => {
                        let (st, l, c) = (settings.clone(), Arc::clone(&lane), Arc::clone(&counters));
                        let _ = tokio::task::spawn_blocking(move || {
                            spool_jobs(&st, &l, &c, vec![j], DropReason::Shutdown);
                            // Not a new spooling: it was there already.
                            let mut s = c.lock();
                            s.spooled_payloads = s.spooled_payloads.saturating_sub(1);
                            s.spooled_items = s.spooled_items.saturating_sub(items);
                        })
                        .await;
                        return;
                    }
                }
            }
            Ok(Ok(None)) => {
                logged = false;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(Err(path)) => {
                counters.dropped(DropReason::Encode, 1, 0);
                tracing::warn!("spool file {} is not a valid record: removed", path.display());
            }
            Err(_) => return,
        }
    }
}
