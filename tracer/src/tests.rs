//! Span API behaviour: nesting, the current span across threads and `.await`, chunking,
//! caps, errors and remote parents — observed at the queue the export worker drains.

use std::time::Duration;

use crate::sampling::{Mechanism, SamplingDecision, USER_KEEP};
use crate::{Instrument, Span, SpanContext, SpanId, Str, TraceId, Tracer, TracerConfig};

fn tracer() -> Tracer {
    Tracer::without_worker(TracerConfig::default().with_service("web"))
}

fn names(chunk: &[crate::SpanData]) -> Vec<&str> {
    chunk.iter().map(|s| s.name()).collect()
}

#[test]
fn root_only_trace_is_one_chunk() {
    let t = tracer();
    let span = t
        .span("http.request")
        .resource("GET /")
        .tag("k", "v")
        .metric("m", 1.5)
        .start();
    let (trace_id, span_id) = (span.trace_id(), span.span_id());
    drop(span);
    let chunk = t.pop_chunk().unwrap_or_default();
    assert_eq!(chunk.len(), 1);
    let s = &chunk[0];
    assert_eq!(
        (s.trace_id(), s.span_id(), s.parent_id()),
        (trace_id, span_id, SpanId::default())
    );
    assert!(s.is_top_level() && s.local_root);
    assert_eq!(
        (s.resource(), s.tag("k"), s.metric("m")),
        ("GET /", Some("v"), Some(1.5))
    );
    assert!(s.start() > 1_600_000_000_000_000_000, "ns since epoch: {}", s.start());
    assert_ne!(trace_id.high(), 0, "128-bit ids");
    assert!(t.pop_chunk().is_none());
    let h = t.health();
    assert_eq!((h.spans_created, h.spans_finished, h.traces_enqueued), (1, 1, 1));
}

#[test]
fn chunk_waits_for_every_span_and_puts_the_root_first() {
    let t = tracer();
    let root = t.span("root").start();
    let child = root.child("child").start();
    let grandchild = child.child("grandchild").service("db").start();
    drop(root);
    assert!(t.pop_chunk().is_none(), "children still open");
    drop(child);
    assert!(t.pop_chunk().is_none());
    let gc_id = grandchild.span_id();
    drop(grandchild);
    let chunk = t.pop_chunk().unwrap_or_default();
    assert_eq!(names(&chunk), ["root", "child", "grandchild"]);
    let (root, child, gc) = (&chunk[0], &chunk[1], &chunk[2]);
    assert_eq!(child.parent_id(), root.span_id());
    assert_eq!(gc.parent_id(), child.span_id());
    assert_eq!(gc.span_id(), gc_id);
    assert!(chunk.iter().all(|s| s.trace_id() == root.trace_id()));
    assert!(!child.is_top_level(), "same service as its parent");
    assert!(gc.is_top_level(), "service change");
    assert_eq!(gc.service(), Some("db"));
    assert_eq!(child.service(), None, "inherits the tracer's service");
}

#[test]
fn current_span_is_the_default_parent() {
    let t = tracer();
    let root = t.span("root").start();
    root.in_scope(|| {
        let inner = t.span("inner").start();
        let _g = inner.enter();
        drop(t.span("innermost").start());
    });
    drop(t.span("after").start()); // not current any more: its own trace
    drop(root);
    let after = t.pop_chunk().unwrap_or_default();
    assert_eq!(names(&after), ["after"]);
    let chunk = t.pop_chunk().unwrap_or_default();
    assert_eq!(names(&chunk), ["root", "inner", "innermost"]);
    assert_eq!(chunk[2].parent_id(), chunk[1].span_id());
    assert_eq!(chunk[1].parent_id(), chunk[0].span_id());
    assert!(
        t.span("explicit-root")
            .root()
            .start()
            .data()
            .is_some_and(|d| d.parent_id() == SpanId::default())
    );
}

#[test]
fn context_crosses_threads() {
    let t = tracer();
    let root = t.span("root").start();
    let ctx = root.context().unwrap_or_else(|| unreachable!());
    let worker = std::thread::spawn(move || drop(t.span("on-thread").child_of(&ctx).start()));
    let _ = worker.join();
    drop(root);
    let chunk = t.pop_chunk().unwrap_or_default();
    assert_eq!(names(&chunk), ["root", "on-thread"]);
    assert_eq!(chunk[1].parent_id(), chunk[0].span_id());
}

#[test]
fn current_span_follows_tasks_across_await() {
    let t = tracer();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|_| unreachable!());
    rt.block_on(async {
        let task = |name: &'static str| {
            async move {
                tokio::task::yield_now().await;
                drop(t.span("step-1").start());
                tokio::task::yield_now().await;
                let step = t.span("step-2").start();
                async { drop(t.span("nested").start()) }.in_current_span().await;
                let _ = step; // finished at the end of the task
            }
            .in_span(t.span(name).root().start())
        };
        // Two interleaved tasks on one thread: each keeps its own current span.
        let (a, b) = (tokio::spawn(task("a")), tokio::spawn(task("b")));
        let _ = a.await;
        let _ = b.await;
    });
    let mut chunks: Vec<_> = std::iter::from_fn(|| t.pop_chunk()).collect();
    chunks.sort_by_key(|c| c[0].name().to_owned());
    assert_eq!(chunks.len(), 2);
    for (chunk, root) in chunks.iter().zip(["a", "b"]) {
        assert_eq!(chunk[0].name(), root);
        assert_eq!(chunk.len(), 4, "{:?}", names(chunk));
        for s in &chunk[1..] {
            assert_eq!(s.trace_id(), chunk[0].trace_id());
            assert_eq!(s.parent_id(), chunk[0].span_id(), "{} under {root}", s.name());
        }
    }
}

#[test]
fn partial_flush_and_span_cap_bound_memory() {
    let t = Tracer::without_worker(
        TracerConfig::default()
            .with_partial_flush(Some(2))
            .with_max_spans_per_trace(5),
    );
    let root = t.span("root").start();
    let children: Vec<Span> = (0..6).map(|_| root.child("c").start()).collect();
    assert_eq!(
        children.iter().filter(|c| c.is_recording()).count(),
        4,
        "root + 4 children = cap 5"
    );
    assert_eq!(t.health().spans_dropped_trace_too_large, 2);
    drop(children);
    drop(root);
    let sizes: Vec<usize> = std::iter::from_fn(|| t.pop_chunk()).map(|c| c.len()).collect();
    assert_eq!(sizes, [2, 2, 1]);
}

#[test]
fn disabled_tracer_records_nothing() {
    let t = Tracer::new(TracerConfig::default().with_enabled(false)).unwrap_or_else(|_| unreachable!());
    let mut span = t.span("x").start();
    span.set_tag("a", "b");
    assert!(!span.is_recording());
    assert!(span.context().is_none());
    drop(span.child("y").start());
    drop(span);
    assert_eq!(t.health().spans_created, 0);
    assert_eq!(t.flush(Duration::from_millis(10)), Ok(()));
}

#[derive(Debug)]
struct Outer(std::io::Error);
impl std::fmt::Display for Outer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request failed")
    }
}
impl std::error::Error for Outer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[test]
fn errors_fill_the_three_error_tags() {
    let t = tracer();
    let mut span = t.span("op").start();
    span.set_error(&Outer(std::io::Error::other("disk full")));
    drop(span);
    let chunk = t.pop_chunk().unwrap_or_default();
    let s = &chunk[0];
    assert!(s.is_error());
    assert_eq!(s.tag("error.message"), Some("request failed"));
    assert!(
        s.tag("error.type").is_some_and(|t| t.ends_with("tests::Outer")),
        "{:?}",
        s.tag("error.type")
    );
    assert!(
        s.tag("error.stack")
            .is_some_and(|st| st.contains("caused by: disk full"))
    );
}

#[test]
fn remote_parent_makes_a_local_root_that_keeps_the_upstream_decision() {
    let t = tracer();
    let decision = SamplingDecision::new(USER_KEEP, Mechanism::Propagated(4));
    let remote = SpanContext::remote(
        TraceId::from_parts(7, 42),
        SpanId::from_u64(99),
        Some(decision),
        Some(Str::from("synthetics")),
        vec![(Str::from("_dd.p.usr.id"), Str::from("u1"))],
    );
    let span = t.span("http.request").child_of(&remote).start();
    assert_eq!(
        t.sampling_decision(&span.context().unwrap_or_else(|| unreachable!())),
        decision
    );
    drop(span);
    let chunk = t.pop_chunk().unwrap_or_default();
    let s = &chunk[0];
    assert_eq!(
        (s.trace_id(), s.parent_id()),
        (TraceId::from_parts(7, 42), SpanId::from_u64(99))
    );
    assert!(s.local_root && s.is_top_level());
    assert_eq!(remote.origin(), Some("synthetics"));
}

#[test]
fn full_queue_drops_and_counts() {
    // 4 chunks in all (one per shard), whichever thread fills them.
    let t = Tracer::without_worker(TracerConfig::default().with_queue_capacity(4));
    for _ in 0..7 {
        drop(t.span("x").start());
    }
    let h = t.health();
    assert_eq!(
        (
            h.traces_enqueued,
            h.traces_dropped_queue_full,
            h.spans_dropped_queue_full
        ),
        (4, 3, 3)
    );
}
