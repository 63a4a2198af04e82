//! Store tests: write then query, restart, retention by age and by size, corrupt and locked
//! files, a full queue.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::upstream::pb;

#[path = "../../tests/common/spans.rs"]
mod spans;

use super::query::{self, Window};
use super::{LocalConfig, LocalStore, StoreMode};
use crate::stats::sketch::Sketch;

const SEC: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;
const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn span(trace: u64, id: u64, parent: u64, names: (&str, &str, &str), start: i64, dur: i64) -> pb::Span {
    spans::span((trace, id, parent), names, start, dur, ("env", "test"))
}

fn payload(chunks: Vec<Vec<pb::Span>>) -> Arc<pb::TracerPayload> {
    Arc::new(pb::TracerPayload {
        language_name: "rust".to_owned(),
        env: "test".to_owned(),
        chunks: spans::kept_chunks(chunks),
        ..pb::TracerPayload::default()
    })
}

/// A trace `GET /r` of service `web` with two children; the second child errors when `error`.
fn request_trace(trace: u64, start: i64, error: bool) -> Vec<pb::Span> {
    let mut root = span(trace, trace * 10, 0, ("web", "http.request", "GET /r"), start, 30 * MS);
    let db = span(
        trace,
        trace * 10 + 1,
        trace * 10,
        ("db", "postgres.query", "SELECT 1"),
        start + MS,
        10 * MS,
    );
    let mut render = span(
        trace,
        trace * 10 + 2,
        trace * 10,
        ("web", "render", "page"),
        start + 15 * MS,
        10 * MS,
    );
    if error {
        root.error = 1;
        render.error = 1;
        render.meta.insert("error.type".to_owned(), "ValueError".to_owned());
        render.meta.insert("error.message".to_owned(), "bad <value>".to_owned());
        render
            .meta
            .insert("error.stack".to_owned(), "line 1\nline 2".to_owned());
    }
    vec![root, db, render]
}

fn sketch_of(values_ms: &[f64]) -> Vec<u8> {
    let mut s = Sketch::new();
    for v in values_ms {
        s.add(v * 1e6).unwrap();
    }
    s.encode()
}

/// One stats payload: bucket at `start` with `hits` of `resource` (`errors` of them errors),
/// latencies 1..=hits ms.
fn stats(
    start: i64,
    service: &str,
    name: &str,
    resource: &str,
    hits: u64,
    errors: u64,
    top: bool,
) -> Arc<pb::StatsPayload> {
    let ok: Vec<f64> = (1..=hits - errors).map(|v| v as f64).collect();
    let err: Vec<f64> = (hits - errors + 1..=hits).map(|v| v as f64).collect();
    Arc::new(pb::StatsPayload {
        agent_env: "test".to_owned(),
        stats: vec![pb::ClientStatsPayload {
            env: "test".to_owned(),
            stats: vec![pb::ClientStatsBucket {
                start: start as u64,
                duration: 10 * SEC as u64,
                stats: vec![pb::ClientGroupedStats {
                    service: service.to_owned(),
                    name: name.to_owned(),
                    resource: resource.to_owned(),
                    hits,
                    errors,
                    duration: (1..=hits).sum::<u64>() * MS as u64,
                    top_level_hits: if top { hits } else { 0 },
                    ok_summary: sketch_of(&ok),
                    error_summary: if errors > 0 { sketch_of(&err) } else { Vec::new() },
                    ..pb::ClientGroupedStats::default()
                }],
                ..pb::ClientStatsBucket::default()
            }],
            ..pb::ClientStatsPayload::default()
        }],
        ..pb::StatsPayload::default()
    })
}

fn now_ns() -> i64 {
    super::unix_nanos(SystemTime::now())
}

fn at(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns as u64)
}

fn config(dir: &Path) -> LocalConfig {
    LocalConfig {
        retention_interval: Duration::from_secs(3600),
        ..LocalConfig::in_dir(dir)
    }
}

fn fill(store: &LocalStore, now: i64) {
    let bucket = now - now.rem_euclid(10 * SEC) - 10 * SEC;
    store.push_stats(stats(bucket, "web", "http.request", "GET /r", 10, 2, true));
    store.push_stats(stats(bucket - 10 * SEC, "web", "http.request", "GET /r", 5, 0, true));
    store.push_stats(stats(bucket, "web", "http.request", "POST /w", 4, 1, true));
    store.push_stats(stats(bucket, "web", "render", "page", 10, 2, false));
    store.push_stats(stats(bucket, "db", "postgres.query", "SELECT 1", 10, 0, true));
    store.push_traces(payload(vec![
        request_trace(1, now - 5 * SEC, false),
        request_trace(2, now - 4 * SEC, true),
    ]));
    assert!(store.sync(WAIT));
}

#[test]
fn writes_then_answers_every_query_from_stored_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(config(dir.path())).unwrap();
    let now = now_ns();
    fill(&store, now);
    let st = store.status();
    assert_eq!(
        st.mode,
        StoreMode::File {
            path: dir.path().join("local.sqlite3")
        }
    );
    assert_eq!(
        (st.trace_payloads_written, st.chunks_written, st.spans_written),
        (1, 2, 6)
    );
    assert_eq!((st.stats_payloads_written, st.stats_groups_written), (5, 5));

    let services = store.read(|c| query::services(c, now, Window::FiveMinutes)).unwrap();
    let names: Vec<&str> = services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(names, ["db", "web"]);
    let web = services.iter().find(|s| s.service == "web").unwrap();
    assert_eq!(web.operation, "http.request", "primary operation: most top-level hits");
    assert_eq!((web.figures.hits, web.figures.errors), (19, 3));
    assert!((web.figures.requests_per_second - 19.0 / 300.0).abs() < 1e-9);
    let l = web.figures.latency;
    let (p50, p95, p99) = (l.p50.unwrap(), l.p95.unwrap(), l.p99.unwrap());
    assert!(p50 <= p95 && p95 <= p99, "{l:?}");
    // 19 values: 1..=10, 1..=5, 1..=4 ms; the median is 4 ms (within the sketch's 1 %).
    assert!((p50 / 4e6 - 1.0).abs() < 0.02, "{p50}");
    assert!((9e6 * 0.99..=10e6 * 1.01).contains(&p99), "{p99}");
    assert_eq!(web.series.len(), query::SERIES_POINTS);
    assert_eq!(web.series.iter().map(|p| p.hits).sum::<u64>(), 19);

    let d = store
        .read(|c| query::service(c, "web", None, now, Window::FiveMinutes))
        .unwrap()
        .unwrap();
    let rows: Vec<(&str, u64, u64)> = d
        .resources
        .iter()
        .map(|r| (r.resource.as_str(), r.figures.hits, r.figures.errors))
        .collect();
    assert_eq!(rows, [("GET /r", 15, 2), ("POST /w", 4, 1)]);
    assert_eq!(d.operations.first().map(|o| o.name.as_str()), Some("http.request"));
    let render = store
        .read(|c| query::service(c, "web", Some("render"), now, Window::FiveMinutes))
        .unwrap()
        .unwrap();
    assert_eq!(render.resources.len(), 1);
    assert_eq!(render.summary.figures.hits, 10);

    let r = store
        .read(|c| query::resource(c, "web", None, "GET /r", now, Window::FiveMinutes))
        .unwrap()
        .unwrap();
    assert_eq!((r.figures.hits, r.figures.errors), (15, 2));
    let binned: f64 = r.distribution.iter().map(|b| b.count).sum();
    assert!((binned - 15.0).abs() < 1e-6, "{binned}");
    let ids: Vec<(&str, bool)> = r.traces.iter().map(|t| (t.trace_id.as_str(), t.error)).collect();
    assert_eq!(ids, [("2", true), ("1", false)], "errors first");
    assert_eq!(
        r.traces.first().and_then(|t| t.error_type.as_deref()),
        None,
        "the root has no error.type"
    );
    assert_eq!(r.traces.first().map(|t| t.span_count), Some(3));

    let t = store.read(|c| query::trace(c, 2)).unwrap().unwrap();
    let tree: Vec<(&str, usize)> = t.spans.iter().map(|s| (s.name.as_str(), s.depth)).collect();
    assert_eq!(tree, [("http.request", 0), ("postgres.query", 1), ("render", 1)]);
    assert_eq!(t.duration_ns, 30 * MS);
    assert_eq!(t.error_count, 2);
    assert_eq!(
        (t.root_service.as_deref(), t.root_resource.as_deref()),
        (Some("web"), Some("GET /r"))
    );
    let failing = t.spans.iter().find(|s| s.name == "render").unwrap();
    assert_eq!(
        failing.meta.get("error.message").map(String::as_str),
        Some("bad <value>")
    );
    assert_eq!(failing.offset_ns, 15 * MS);

    // Outside the window: nothing.
    let later = now + 3600 * SEC;
    assert!(
        store
            .read(|c| query::services(c, later, Window::FiveMinutes))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.read(|c| query::services(c, later, Window::OneDay)).unwrap().len(),
        2
    );
    assert!(store.read(|c| query::trace(c, 99)).unwrap().is_none());
    assert!(store.shutdown_blocking(WAIT));
}

#[test]
fn partial_chunks_of_one_trace_merge_into_one_summary() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(config(dir.path())).unwrap();
    let now = now_ns();
    let spans = request_trace(7, now, true);
    // Children first (partial flush), root later.
    store.push_traces(payload(vec![spans[1..].to_vec()]));
    store.push_traces(payload(vec![spans[..1].to_vec()]));
    assert!(store.sync(WAIT));
    let t = store.read(|c| query::trace(c, 7)).unwrap().unwrap();
    assert_eq!(t.spans.len(), 3);
    assert_eq!(
        t.root_resource.as_deref(),
        Some("GET /r"),
        "the real root wins over a partial chunk's top"
    );
    assert_eq!(t.error_count, 2);
    assert_eq!(t.spans.first().map(|s| s.depth), Some(0));
}

#[test]
fn a_restart_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ns();
    {
        let store = LocalStore::open(config(dir.path())).unwrap();
        fill(&store, now);
        assert!(store.shutdown_blocking(WAIT));
        store.push_traces(payload(vec![request_trace(3, now, false)]));
        assert_eq!(store.status().dropped_after_shutdown, 1);
    }
    let store = LocalStore::open(config(dir.path())).unwrap();
    assert!(matches!(store.status().mode, StoreMode::File { .. }));
    let services = store.read(|c| query::services(c, now, Window::FiveMinutes)).unwrap();
    assert_eq!(services.len(), 2);
    assert!(store.read(|c| query::trace(c, 2)).unwrap().is_some());
    assert!(store.read(|c| query::trace(c, 3)).unwrap().is_none());
}

#[test]
fn retention_deletes_data_older_than_the_age() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LocalConfig {
        retention: Duration::from_secs(3600),
        ..config(dir.path())
    };
    let store = LocalStore::open(cfg).unwrap();
    let t0 = 1_700_000_000 * SEC;
    let t1 = t0 + 2 * 3600 * SEC;
    store.push_stats(stats(t0, "old", "op", "r", 3, 0, true));
    store.push_traces(payload(vec![request_trace(1, t0, false)]));
    store.push_stats(stats(t1, "new", "op", "r", 3, 0, true));
    store.push_traces(payload(vec![request_trace(2, t1, false)]));
    assert!(store.sync(WAIT));
    let report = store.run_retention(at(t1 + 60 * SEC)).unwrap();
    assert_eq!((report.spans, report.traces, report.stats_rows), (3, 1, 1));
    assert_eq!(report.size_passes, 0, "under the size cap");
    assert!(store.read(|c| query::trace(c, 1)).unwrap().is_none());
    assert!(store.read(|c| query::trace(c, 2)).unwrap().is_some());
    let day = store
        .read(|c| query::services(c, t1 + 60 * SEC, Window::OneDay))
        .unwrap();
    assert_eq!(day.iter().map(|s| s.service.as_str()).collect::<Vec<_>>(), ["new"]);
    assert_eq!(store.status().retention_deleted.spans, 3);
}

#[test]
fn the_size_cap_holds_after_every_batch_wal_included_and_keeps_stats_rows() {
    let dir = tempfile::tempdir().unwrap();
    let max = 512 * 1024;
    let batch_bytes = 64 * 1024;
    let cfg = LocalConfig {
        max_size_bytes: max,
        batch_max_bytes: batch_bytes,
        ..config(dir.path())
    };
    let store = LocalStore::open(cfg).unwrap();
    let t0 = now_ns() - 3600 * SEC;
    let files = || {
        std::fs::metadata(dir.path().join("local.sqlite3")).unwrap().len()
            + std::fs::metadata(dir.path().join("local.sqlite3-wal")).map_or(0, |m| m.len())
    };
    // Stats rows from the start of the hour: the size cap must not take them.
    store.push_stats(stats(t0, "web", "http.request", "GET /r", 10, 2, true));
    // ~3 MB of spans over an hour (6× the cap): 300 traces with a 10 kB tag each.
    let mut peak = 0;
    for i in 0..300u64 {
        let mut spans = request_trace(i + 1, t0 + i as i64 * 12 * SEC, false);
        if let Some(s) = spans.first_mut() {
            s.meta.insert("payload".to_owned(), format!("{i:0>10000}"));
        }
        store.push_traces(payload(vec![spans]));
        if i % 10 == 9 {
            assert!(store.sync(WAIT));
            peak = peak.max(files());
        }
    }
    assert!(store.sync(WAIT));
    // Never more than the cap plus one batch (the batch's pages in the WAL, some slack for
    // the pages SQLite writes per transaction), checked continuously, not once a minute.
    let bound = max + 2 * batch_bytes as u64 + 64 * 1024;
    assert!(peak <= bound, "peak {peak} > {bound}");
    let st = store.status();
    assert!(st.retention_deleted.spans > 0, "{st:?}");
    assert_eq!(st.retention_deleted.stats_rows, 0, "stats rows are kept");
    assert!(
        st.size_bytes > 0 && st.size_bytes <= bound,
        "status shows the size: {}",
        st.size_bytes
    );
    // The oldest went first, the newest stayed, the stats row too.
    assert!(store.read(|c| query::trace(c, 1)).unwrap().is_none());
    assert!(store.read(|c| query::trace(c, 300)).unwrap().is_some());
    let day = store
        .read(|c| query::services(c, t0 + 60 * SEC, Window::OneDay))
        .unwrap();
    assert_eq!(day.iter().map(|s| s.service.as_str()).collect::<Vec<_>>(), ["web"]);
    // The age pass still deletes everything old, stats included.
    let report = store.run_retention(at(t0 + 48 * 3600 * SEC)).unwrap();
    assert!(report.stats_rows >= 1, "{report:?}");
}

#[test]
fn a_corrupt_file_falls_back_to_memory_and_keeps_receiving() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.sqlite3");
    let garbage = b"this is not a database, just some bytes that happen to be here.....".repeat(100);
    std::fs::write(&path, &garbage).unwrap();
    let store = LocalStore::open(config(dir.path())).unwrap();
    let st = store.status();
    assert_eq!(st.fallbacks, 1);
    let StoreMode::Memory { reason, .. } = &st.mode else {
        panic!("expected the memory fallback, got {:?}", st.mode);
    };
    assert!(
        reason.contains("not a usable database") && reason.contains("local.sqlite3"),
        "{reason}"
    );
    assert!(st.last_error.is_some());
    let now = now_ns();
    fill(&store, now);
    assert_eq!(
        store
            .read(|c| query::services(c, now, Window::FiveMinutes))
            .unwrap()
            .len(),
        2
    );
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "the file is left untouched");
}

#[test]
fn a_locked_file_falls_back_to_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.sqlite3");
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE; CREATE TABLE x (a);").unwrap();
    let started = Instant::now();
    let store = LocalStore::open(config(dir.path())).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "gives up after the busy timeout"
    );
    let st = store.status();
    assert_eq!(st.fallbacks, 1);
    let StoreMode::Memory { reason, .. } = &st.mode else {
        panic!("expected the memory fallback, got {:?}", st.mode);
    };
    assert!(reason.contains("locked by another process"), "{reason}");
    let now = now_ns();
    fill(&store, now);
    assert_eq!(
        store
            .read(|c| query::services(c, now, Window::FiveMinutes))
            .unwrap()
            .len(),
        2
    );
    other.execute_batch("ROLLBACK;").unwrap();
}

#[test]
fn an_unusable_data_dir_falls_back_to_memory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let store = LocalStore::open(config(&file.join("sub"))).unwrap();
    let st = store.status();
    assert_eq!(st.fallbacks, 1);
    assert!(
        matches!(&st.mode, StoreMode::Memory { reason, .. } if reason.contains("data directory")),
        "{:?}",
        st.mode
    );
}

#[test]
fn a_full_queue_drops_and_counts_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LocalConfig {
        queue_capacity: 4,
        batch_max: 1,
        offer_wait: Duration::ZERO,
        ..config(dir.path())
    };
    let store = LocalStore::open(cfg).unwrap();
    let now = now_ns();
    // The writer is past its start-up work (first retention pass).
    assert!(store.sync(WAIT));
    // A slow disk: the writer's connection is busy elsewhere.
    let conn = store.writer_connection();
    let guard = conn.lock().unwrap();
    store.push_traces(payload(vec![request_trace(1, now, false)]));
    let deadline = Instant::now() + WAIT;
    while store.status().queue_depth > 0 {
        assert!(Instant::now() < deadline, "the writer never took the first payload");
        std::thread::yield_now();
    }
    let started = Instant::now();
    for i in 0..10 {
        store.push_traces(payload(vec![request_trace(10 + i, now, false)]));
    }
    store.push_stats(stats(now, "web", "op", "r", 1, 0, true));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "pushing never waits for the writer"
    );
    let st = store.status();
    assert_eq!((st.queue_depth, st.queue_capacity), (4, 4));
    assert_eq!(st.dropped_trace_payloads_queue_full, 6);
    assert_eq!(st.dropped_stats_payloads_queue_full, 1);
    drop(guard);
    assert!(store.sync(WAIT));
    assert_eq!(store.status().trace_payloads_written, 5);
}

#[test]
fn status_shows_the_web_view_and_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(config(dir.path())).unwrap();
    fill(&store, now_ns());
    let stats = crate::status::AgentStats::default();
    assert!(stats.snapshot(Vec::new()).local.is_none());
    stats
        .local
        .set(("http://127.0.0.1:8128".to_owned(), store.clone()))
        .unwrap();
    let snap = stats.snapshot(Vec::new());
    let text = crate::status::render(&snap);
    assert!(text.contains("Local mode: web view on http://127.0.0.1:8128"), "{text}");
    assert!(
        text.contains("Written: 2 trace chunks (6 spans), 5 stats groups"),
        "{text}"
    );
    // `trace-agent status --json` round-trips it.
    let json = serde_json::to_string(&snap).unwrap();
    let back: crate::status::StatusSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back.local, snap.local);
    let upstream = crate::upstream::Upstream::status(&store);
    assert_eq!(
        (
            upstream.name.as_str(),
            upstream.traces.items_sent,
            upstream.stats.items_sent
        ),
        ("local", 2, 5)
    );
}

fn spool_lane(dir: &Path) -> crate::upstream::spool::SpoolLane {
    crate::upstream::SpoolDir::open(&crate::upstream::SpoolConfig {
        dir: Some(dir.to_owned()),
        max_bytes: 1 << 30,
    })
    .unwrap()
    .unwrap()
    .lane("local")
}

fn count(store: &LocalStore, table: &str) -> i64 {
    store
        .read(|c| c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)))
        .unwrap()
}

/// Issue 10: 100 000 traces accepted, then SIGTERM: the store held 40 000 and said nothing.
/// Now what the writer did not write by the deadline is spooled, and written after a start.
#[test]
fn shutdown_writes_or_spools_everything_accepted_and_the_next_start_writes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let cfg = LocalConfig {
        batch_max: 4,
        ..config(dir.path())
    };
    let store = LocalStore::open_in_background(cfg.clone(), Some(spool_lane(&spool_dir))).unwrap();
    let now = now_ns();
    // 100 payloads of 1000 single-span traces.
    let traces_per_payload = 1000u64;
    for p in 0..100u64 {
        let chunks = (0..traces_per_payload)
            .map(|i| {
                let t = p * traces_per_payload + i + 1;
                vec![span(t, t * 10, 0, ("web", "http.request", "GET /"), now, MS)]
            })
            .collect();
        store.push_traces(payload(chunks));
    }
    let accepted = store.status();
    assert_eq!(accepted.dropped_trace_payloads_queue_full, 0);
    assert_eq!(
        accepted.pending_payloads + accepted.trace_payloads_written,
        100,
        "status shows what is accepted but not yet written: {accepted:?}"
    );
    // A deadline far too short to write 100 000 traces.
    let all_kept = store.shutdown_blocking(Duration::from_millis(1));
    let st = store.status();
    assert!(all_kept, "{st:?}");
    assert_eq!(st.pending_payloads, 0);
    assert_eq!(st.dropped_after_shutdown, 0);
    assert!(
        st.spooled_payloads > 0,
        "the deadline passed with payloads queued: {st:?}"
    );
    assert_eq!(st.trace_payloads_written + st.spooled_payloads, 100, "{st:?}");
    let written_before = count(&store, "traces");
    drop(store);

    // The next start writes the spooled payloads back (on the writer thread).
    let again = LocalStore::open_in_background(cfg, Some(spool_lane(&spool_dir))).unwrap();
    // A bound, not a wait: 100 000 rows take seconds, far more on a loaded debug build.
    assert!(again.sync(Duration::from_secs(300)));
    assert_eq!(again.status().replayed_payloads, st.spooled_payloads);
    assert_eq!(
        count(&again, "traces"),
        100_000,
        "wrote {written_before} before the restart"
    );
    assert_eq!(count(&again, "chunks"), 100_000);
    assert!(spool_lane(&spool_dir).files().is_empty(), "the spool is emptied");
    assert!(again.shutdown_blocking(WAIT));
}

/// Issue 10: at saturation the queue (1024 payloads) held 3.6 GB. Now it is bounded in bytes:
/// with the writer stuck, accepted-and-unwritten bytes stay under the bound plus one payload,
/// the pressure signal turns `Full` (the receiver answers 429), and what did not fit after
/// the bounded wait is counted.
#[test]
fn the_queue_is_bounded_in_bytes_and_signals_pressure() {
    use crate::upstream::Pressure;
    let dir = tempfile::tempdir().unwrap();
    let max = 4 << 20;
    let cfg = LocalConfig {
        queue_max_bytes: max,
        offer_wait: Duration::from_millis(20),
        ..config(dir.path())
    };
    let store = LocalStore::open(cfg).unwrap();
    assert!(store.sync(WAIT));
    assert_eq!(store.pressure(), Pressure::Normal);
    let conn = store.writer_connection();
    let guard = conn.lock().unwrap();
    let now = now_ns();
    let big = |p: u64| {
        payload(
            (0..1000u64)
                .map(|i| {
                    let t = p * 1000 + i + 1;
                    vec![span(t, t, 0, ("web", "http.request", "GET /"), now, MS)]
                })
                .collect(),
        )
    };
    let one = super::prepare::Prepared::from_pb(&big(0), false).bytes();
    let mut peak = 0;
    let mut saw_high = false;
    for p in 0..200 {
        store.push_traces(big(p));
        let st = store.status();
        peak = peak.max(st.pending_bytes);
        saw_high |= store.pressure() == Pressure::High;
    }
    assert!(peak <= (max + one) as u64, "peak {peak} > {max} + {one}");
    assert!(saw_high, "half full is High (429 for tracers asking for real statuses)");
    assert_eq!(store.pressure(), Pressure::Full);
    let st = store.status();
    assert!(st.dropped_trace_payloads_queue_full > 0, "{st:?}");
    drop(guard);
    assert!(store.sync(WAIT));
    let st = store.status();
    assert_eq!(st.trace_payloads_written + st.dropped_trace_payloads_queue_full, 200);
    assert_eq!(store.pressure(), Pressure::Normal);
}

/// Issue 10: restarting on a 5.7 GB store kept the port closed 243 s. The file is now opened
/// (integrity check, first retention pass) on the writer thread: with the file locked by
/// another process for longer than the open takes, `LocalService::start` still returns at
/// once, `status` says the store is opening, and accepted payloads wait in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_never_delays_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LocalConfig {
        web_port: 0,
        ..config(dir.path())
    };
    // Create the file, then hold an exclusive lock on it (as a long integrity check would).
    drop(LocalStore::open(cfg.clone()).unwrap());
    let locker = rusqlite::Connection::open(cfg.db_path()).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let service = super::LocalService::start(cfg).await.unwrap();
    let st = service.store().status();
    assert!(st.opening, "{st:?}");
    service
        .store()
        .push_traces(payload(vec![request_trace(1, now_ns(), false)]));
    locker.execute_batch("COMMIT").unwrap();
    drop(locker);
    let store = service.store().clone();
    let synced = tokio::task::spawn_blocking(move || store.sync(WAIT)).await.unwrap();
    assert!(synced);
    let st = service.store().status();
    assert!(!st.opening);
    assert_eq!(st.trace_payloads_written, 1, "{st:?}");
    service.shutdown(WAIT).await;
}
