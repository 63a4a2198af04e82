//! The `tracing` Layer: field mapping, errors, parentage across `.await` and with the
//! native API, log correlation — observed at the queue the export worker drains.

use std::io;
use std::sync::{Arc, Mutex};

use tracing::Instrument as _;
use tracing_subscriber::prelude::*;

use super::fmt::insert_correlation;
use super::{DatadogLayer, DatadogSubscriber, WithLogCorrelation};
use crate::span::find;
use crate::{SpanData, Tracer, TracerConfig};

fn tracer() -> Tracer {
    Tracer::without_worker(
        TracerConfig::default()
            .with_service("web")
            .with_env("test")
            .with_version("1.2"),
    )
}

fn layer(t: Tracer) -> tracing::Dispatch {
    tracing::Dispatch::new(tracing_subscriber::registry().with(DatadogLayer::new(t)))
}

fn own_subscriber(t: Tracer) -> tracing::Dispatch {
    tracing::Dispatch::new(DatadogSubscriber::new(t))
}

type MakeDispatch = fn(Tracer) -> tracing::Dispatch;

/// The tests that do not need `tracing-subscriber`'s `fmt` run for both: the Layer on the
/// `Registry` and the subscriber of its own must record the same spans.
const KINDS: [(&str, MakeDispatch); 2] = [("layer", layer), ("subscriber", own_subscriber)];

#[test]
fn fields_map_to_span_fields_meta_and_metrics() {
    for (kind, make) in KINDS {
        let t = tracer();
        tracing::dispatcher::with_default(&make(t), || {
            let span = tracing::info_span!(
                "db.query",
                service.name = "users-db",
                resource.name = "SELECT 1",
                span.type = "sql",
                otel.kind = "Client",
                db.system = "postgresql",
                rows = 3u64,
                ratio = 0.5,
                cached = false,
                user = ?("ann", 7),
                late = tracing::field::Empty,
            );
            span.record("late", "set later");
            span.record("rows", 4u64);
        });
        let chunk = t.pop_chunk().unwrap_or_default();
        assert_eq!(chunk.len(), 1, "{kind}");
        let s = &chunk[0];
        assert_eq!(
            (s.name(), s.resource(), s.service(), s.span_type()),
            ("db.query", "SELECT 1", Some("users-db"), "sql")
        );
        assert_eq!(s.tag("span.kind"), Some("client"));
        assert_eq!(s.tag("db.system"), Some("postgresql"));
        assert_eq!(s.tag("cached"), Some("false"));
        assert_eq!(s.tag("user"), Some("(\"ann\", 7)"));
        assert_eq!(s.tag("late"), Some("set later"));
        assert_eq!((s.metric("rows"), s.metric("ratio")), (Some(4.0), Some(0.5)));
        assert_eq!(
            s.metrics().filter(|(k, _)| *k == "rows").count(),
            1,
            "recorded values replace"
        );
        assert!(s.tag("service.name").is_none() && s.tag("resource.name").is_none());
        assert!(!s.is_error());
        assert!(s.is_top_level(), "local root");
    }
}

#[derive(Debug, thiserror::Error)]
#[error("template missing")]
struct Missing(#[source] io::Error);

#[test]
fn error_events_and_fields_mark_the_enclosing_span() {
    for (kind, make) in KINDS {
        let t = tracer();
        tracing::dispatcher::with_default(&make(t), || {
            let root = tracing::info_span!("request");
            let _r = root.enter();
            {
                let render = tracing::info_span!("render");
                let _g = render.enter();
                let err = Missing(io::Error::other("no such file"));
                tracing::error!(error = &err as &(dyn std::error::Error + 'static), "render failed");
            }
            {
                let _g = tracing::info_span!("warned").entered();
                tracing::warn!("not an error");
                tracing::info!(error = "quota exceeded", error.type = "Quota", "soft failure");
            }
            {
                let _g =
                    tracing::info_span!("status", otel.status_code = "ERROR", otel.status_message = "boom").entered();
            }
            let _g = tracing::info_span!("quiet").entered();
            tracing::error!(error = false, "an error-level log that says it is not an error");
        });
        let chunk = t.pop_chunk().unwrap_or_default();
        assert_eq!(chunk.len(), 5, "{kind}");
        let render = find(&chunk, "render");
        assert!(render.is_error());
        assert_eq!(render.tag("error.message"), Some("template missing"));
        assert_eq!(
            render.tag("error.stack"),
            Some("template missing\ncaused by: no such file")
        );
        let warned = find(&chunk, "warned");
        assert!(warned.is_error());
        assert_eq!(
            (warned.tag("error.message"), warned.tag("error.type")),
            (Some("quota exceeded"), Some("Quota"))
        );
        let status = find(&chunk, "status");
        assert!(status.is_error());
        assert_eq!(status.tag("error.message"), Some("boom"));
        assert!(!find(&chunk, "quiet").is_error());
        assert!(
            !find(&chunk, "request").is_error(),
            "errors stay on the span they happened in"
        );
    }
}

#[test]
fn parentage_follows_the_tracing_tree_explicit_parents_and_roots() {
    for (kind, make) in KINDS {
        let t = tracer();
        tracing::dispatcher::with_default(&make(t), || {
            let root = tracing::info_span!("root");
            let other = tracing::info_span!("other_root");
            let _r = root.enter();
            let child = tracing::info_span!("child");
            let adopted = tracing::info_span!(parent: &other, "adopted");
            let detached = tracing::info_span!(parent: None, "detached");
            drop((child, adopted, detached, other));
        });
        let mut chunks = Vec::new();
        while let Some(c) = t.pop_chunk() {
            chunks.push(c);
        }
        assert_eq!(chunks.len(), 3, "{kind}: three traces: {chunks:?}");
        let all: Vec<&SpanData> = chunks.iter().flatten().collect();
        let by = |n: &str| all.iter().find(|s| s.name() == n).copied();
        let (Some(root), Some(other), Some(child), Some(adopted), Some(detached)) =
            (by("root"), by("other_root"), by("child"), by("adopted"), by("detached"))
        else {
            panic!("missing spans: {all:?}");
        };
        assert_eq!((child.parent_id(), child.trace_id()), (root.span_id(), root.trace_id()));
        assert_eq!(
            (adopted.parent_id(), adopted.trace_id()),
            (other.span_id(), other.trace_id())
        );
        assert!(!detached.parent_id().is_valid() && detached.is_top_level());
        assert_ne!(detached.trace_id(), root.trace_id());
    }
}

#[test]
fn native_and_tracing_spans_nest_in_both_directions() {
    for (kind, make) in KINDS {
        let t = tracer();
        tracing::dispatcher::with_default(&make(t), || {
            let native = t.span("native.outer").start();
            native.in_scope(|| {
                let span = tracing::info_span!("tracing.middle");
                let _g = span.enter();
                let inner = t.span("native.inner").start();
                inner.in_scope(|| {
                    let _leaf = tracing::info_span!("tracing.leaf").entered();
                });
            });
        });
        let chunk = t.pop_chunk().unwrap_or_default();
        assert_eq!(chunk.len(), 4, "{kind}: {chunk:?}");
        let outer = find(&chunk, "native.outer");
        let middle = find(&chunk, "tracing.middle");
        let inner = find(&chunk, "native.inner");
        let leaf = find(&chunk, "tracing.leaf");
        assert_eq!(middle.parent_id(), outer.span_id());
        assert_eq!(inner.parent_id(), middle.span_id());
        assert_eq!(leaf.parent_id(), inner.span_id());
        assert!(t.current_context().is_none(), "every enter was undone");
    }
}

async fn request(t: Tracer, name: &'static str) {
    async {
        for i in 0..3 {
            async {
                tokio::task::yield_now().await;
                drop(t.span("native.step").tag("task", name).start());
            }
            .instrument(tracing::info_span!("step", task = name, i))
            .await;
        }
    }
    .instrument(tracing::info_span!("request", task = name))
    .await;
}

#[test]
fn parentage_follows_tasks_across_await() {
    let rt = tokio::runtime::Builder::new_current_thread().build();
    let Ok(rt) = rt else {
        panic!("runtime");
    };
    for (kind, make) in KINDS {
        let t = tracer();
        tracing::dispatcher::with_default(&make(t), || {
            // Two requests interleaved on one thread: every yield switches task.
            rt.block_on(async {
                tokio::join!(request(t, "a"), request(t, "b"));
            });
        });
        let mut chunks = Vec::new();
        while let Some(c) = t.pop_chunk() {
            chunks.push(c);
        }
        assert_eq!(chunks.len(), 2, "{kind}");
        for chunk in &chunks {
            assert_eq!(
                chunk.len(),
                7,
                "{kind}: 1 request + 3 steps + 3 native spans: {chunk:?}"
            );
            let root = &chunk[0];
            assert_eq!(root.name(), "request");
            let task = root.tag("task");
            for s in &chunk[1..] {
                assert_eq!(s.tag("task"), task, "no span of the other task");
                assert_eq!(s.trace_id(), root.trace_id());
            }
            let steps: Vec<&SpanData> = chunk.iter().filter(|s| s.name() == "step").collect();
            assert_eq!(steps.len(), 3);
            assert!(steps.iter().all(|s| s.parent_id() == root.span_id()));
            for native in chunk.iter().filter(|s| s.name() == "native.step") {
                assert!(steps.iter().any(|s| s.span_id() == native.parent_id()));
            }
        }
    }
}

#[test]
fn own_targets_are_not_traced() {
    for (kind, make) in KINDS {
        let t = tracer();
        tracing::dispatcher::with_default(&make(t), || {
            let span = tracing::info_span!(target: "tracer::export", "send");
            let _g = span.enter();
            tracing::error!(target: "tracer::health", "queue full");
            drop(t.span("native").start());
            let _user = tracing::info_span!(target: "tracer_app", "user.span").entered();
            let _also_user = tracing::info_span!(target: "tracer::healthy", "user.span2").entered();
        });
        let mut names = Vec::new();
        while let Some(c) = t.pop_chunk() {
            names.extend(c.iter().map(|s| s.name().to_owned()));
        }
        names.sort();
        assert_eq!(names, ["native", "user.span", "user.span2"], "{kind}");
    }
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

#[test]
fn log_lines_carry_the_current_span_ids() {
    let t = tracer();
    let out = Buffer::default();
    let writer = out.clone();
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .event_format(WithLogCorrelation::new(tracing_subscriber::fmt::format().without_time()).with_tracer(t));
    let subscriber = tracing_subscriber::registry().with(DatadogLayer::new(t)).with(fmt);
    let (trace_id, span_id, corr) = tracing::subscriber::with_default(subscriber, || {
        tracing::info!("outside");
        let span = tracing::info_span!("handler");
        let _g = span.enter();
        tracing::info!(user = 7, "inside");
        let ctx = t.current_context();
        let corr = t.log_correlation().to_string();
        (
            ctx.as_ref().map(|c| c.trace_id()),
            ctx.as_ref().map(|c| c.span_id()),
            corr,
        )
    });
    let (Some(trace_id), Some(span_id)) = (trace_id, span_id) else {
        panic!("no current span");
    };
    let expected = format!(
        "dd.trace_id={:032x} dd.span_id={} dd.service=web dd.env=test dd.version=1.2",
        trace_id.to_u128(),
        span_id.to_u64()
    );
    assert_eq!(corr, expected);
    let text = out.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].ends_with("outside dd.service=web dd.env=test dd.version=1.2"),
        "{}",
        lines[0]
    );
    assert!(lines[1].ends_with(&format!("inside user=7 {expected}")), "{}", lines[1]);
}

#[test]
fn correlation_fields_go_into_json_objects_and_64_bit_ids_when_asked() {
    let t = Tracer::without_worker(
        TracerConfig::default()
            .with_service("web")
            .with_128bit_trace_id_logging(false),
    );
    let span = t.span("s").start();
    let ctx = span.context();
    let corr = t.log_correlation_for(ctx.as_ref());
    let low = span.trace_id().low();
    assert_eq!(corr.trace_id(), Some(low.to_string()));
    let mut line = String::from("{\"level\":\"INFO\",\"fields\":{\"message\":\"hi\"}}\n");
    insert_correlation(&mut line, &corr);
    assert_eq!(
        line,
        format!(
            "{{\"level\":\"INFO\",\"fields\":{{\"message\":\"hi\"}},\"dd.trace_id\":\"{low}\",\"dd.span_id\":\"{}\",\"dd.service\":\"web\"}}\n",
            span.span_id().to_u64()
        )
    );
    let mut text = String::from("INFO hi\n");
    insert_correlation(&mut text, &corr);
    assert_eq!(
        text,
        format!(
            "INFO hi dd.trace_id={low} dd.span_id={} dd.service=web\n",
            span.span_id().to_u64()
        )
    );
}

#[test]
fn the_subscriber_answers_current_span_and_closes_on_the_last_handle_on_any_thread() {
    let t = tracer();
    let (inner_span_id, outer) = tracing::dispatcher::with_default(&own_subscriber(t), || {
        assert!(tracing::Span::current().is_none());
        let outer = tracing::info_span!("outer", late = tracing::field::Empty);
        let guard = outer.enter();
        let current = tracing::Span::current();
        assert_eq!(current.id(), outer.id());
        assert_eq!(current.metadata().map(|m| m.name()), Some("outer"));
        current.record("late", "via Span::current");
        let inner_span_id = {
            let _i = tracing::info_span!("inner").entered();
            assert_eq!(tracing::Span::current().metadata().map(|m| m.name()), Some("inner"));
            t.log_correlation().span_id()
        };
        assert_eq!(tracing::Span::current().id(), outer.id(), "inner exited");
        drop(guard);
        assert!(tracing::Span::current().is_none());
        assert!(t.current_context().is_none(), "every enter was undone");
        let handle = outer.clone();
        drop((outer, current));
        (inner_span_id, handle)
    });
    assert!(t.pop_chunk().is_none(), "a handle is still open");
    let closer = std::thread::spawn(move || drop(outer));
    assert!(closer.join().is_ok());
    let chunk = t.pop_chunk().unwrap_or_default();
    assert_eq!(chunk.len(), 2, "{chunk:?}");
    let outer = find(&chunk, "outer");
    let inner = find(&chunk, "inner");
    assert_eq!(inner.parent_id(), outer.span_id());
    assert_eq!(
        Some(inner.span_id().to_u64()),
        inner_span_id,
        "log correlation saw the entered span"
    );
    assert_eq!(outer.tag("late"), Some("via Span::current"));
}

#[test]
fn the_subscriber_reuses_closed_slots_without_mixing_spans() {
    let t = tracer();
    let ids = tracing::dispatcher::with_default(&own_subscriber(t), || {
        let mut ids = Vec::new();
        for i in 0..300u64 {
            let span = tracing::info_span!("op", i);
            let _g = span.enter();
            ids.push(span.id().map(|id| id.into_u64()));
        }
        let kept: Vec<tracing::Span> = (0..3).map(|_| tracing::info_span!("open")).collect();
        let distinct: std::collections::HashSet<_> = kept.iter().map(tracing::Span::id).collect();
        assert_eq!(distinct.len(), 3, "open spans have distinct ids");
        ids
    });
    assert!(
        ids.iter().all(|id| *id == ids[0] && id.is_some()),
        "a closed span's slot is reused"
    );
    let mut seen = Vec::new();
    while let Some(c) = t.pop_chunk() {
        seen.extend(c.iter().filter(|s| s.name() == "op").map(|s| s.metric("i")));
    }
    seen.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let expected: Vec<Option<f64>> = (0..300).map(|i| Some(f64::from(i))).collect();
    assert_eq!(seen, expected, "each span with its own field");
}

#[test]
fn span_events_are_recorded_by_both() {
    for kind in ["layer", "subscriber"] {
        let t = tracer();
        let dispatch = match kind {
            "layer" => {
                tracing::Dispatch::new(tracing_subscriber::registry().with(DatadogLayer::new(t).with_span_events(true)))
            }
            _ => tracing::Dispatch::new(DatadogSubscriber::new(t).with_span_events(true)),
        };
        tracing::dispatcher::with_default(&dispatch, || {
            let _s = tracing::info_span!("op").entered();
            tracing::info!(user = "u1", count = 3, "user logged in");
        });
        let chunk = t.pop_chunk().unwrap_or_default();
        assert_eq!(chunk.len(), 1, "{kind}");
        let events = chunk[0].events();
        assert_eq!(events.len(), 1, "{kind}");
        assert_eq!(events[0].name(), "user logged in", "{kind}");
        let keys: Vec<&str> = events[0].attributes().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["user", "count", "level", "target"], "{kind}");
        assert!(!chunk[0].is_error(), "{kind}");
    }
}
