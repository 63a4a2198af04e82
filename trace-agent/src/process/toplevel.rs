//! Root-span selection and top-level computation (`traceutil` in the Go agent).

use std::collections::{HashMap, HashSet};

use crate::span::{Span, Tags, tag_remove, tag_set};

/// Metric the agent writes on top-level spans.
pub const TOP_LEVEL_KEY: &str = "_top_level";
/// Metric a tracer writes when it computed top-level itself.
pub const CLIENT_TOP_LEVEL_KEY: &str = "_dd.top_level";

/// Index of the root span: the last span with `parent_id == 0`, else the last span whose parent
/// is not in the chunk, else the last span. `None` for an empty chunk.
pub fn root_index(spans: &[Span<'_>]) -> Option<usize> {
    if let Some(i) = spans.iter().rposition(|s| s.parent_id == 0) {
        return Some(i);
    }
    let ids: HashSet<u64> = spans.iter().map(|s| s.span_id).collect();
    spans
        .iter()
        .rposition(|s| !ids.contains(&s.parent_id))
        .or(spans.len().checked_sub(1))
}

fn set_flag(metrics: &mut Tags<'_, f64>, on: bool) {
    if on {
        tag_set(metrics, TOP_LEVEL_KEY, 1.0);
    } else {
        tag_remove(metrics, TOP_LEVEL_KEY);
    }
}

/// Marks top-level spans (`_top_level = 1`): roots, orphans, and spans whose parent has a
/// different service.
pub fn compute_top_level(spans: &mut [Span<'_>]) {
    let tops: Vec<bool> = {
        let services: HashMap<u64, &str> = spans.iter().map(|s| (s.span_id, s.service.as_str())).collect();
        spans
            .iter()
            .map(|s| s.parent_id == 0 || services.get(&s.parent_id).is_none_or(|p| *p != s.service.as_str()))
            .collect()
    };
    for (span, top) in spans.iter_mut().zip(tops) {
        set_flag(&mut span.metrics, top);
    }
}

/// Copies the tracer's `_dd.top_level` into `_top_level` (when `Datadog-Client-Computed-Top-Level`).
pub fn copy_client_top_level(span: &mut Span<'_>) {
    let top = span.metric(CLIENT_TOP_LEVEL_KEY).is_some_and(|v| v == 1.0);
    if top || span.metric(TOP_LEVEL_KEY).is_some() {
        set_flag(&mut span.metrics, top);
    }
}
