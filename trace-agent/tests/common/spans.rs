//! Span and chunk builders shared by the local store's unit tests (`src/local/tests.rs`),
//! `tests/local_web.rs` and `benches/local_search.rs` (each includes this file with `#[path]`).
// Each includer uses a part of it.
#![allow(dead_code)]

use std::collections::HashMap;

use libdd_trace_protobuf::pb;

/// A `web` span of `service`/`name`/`resource` with one meta tag.
pub(crate) fn span(
    (trace, id, parent): (u64, u64, u64),
    (service, name, resource): (&str, &str, &str),
    start: i64,
    dur: i64,
    (tag, value): (&str, &str),
) -> pb::Span {
    pb::Span {
        service: service.to_owned(),
        name: name.to_owned(),
        resource: resource.to_owned(),
        trace_id: trace,
        span_id: id,
        parent_id: parent,
        start,
        duration: dur,
        r#type: "web".to_owned(),
        meta: HashMap::from([(tag.to_owned(), value.to_owned())]),
        ..pb::Span::default()
    }
}

/// One kept (priority 1) chunk per list of spans.
pub(crate) fn kept_chunks(chunks: Vec<Vec<pb::Span>>) -> Vec<pb::TraceChunk> {
    chunks
        .into_iter()
        .map(|spans| pb::TraceChunk {
            priority: 1,
            spans,
            ..pb::TraceChunk::default()
        })
        .collect()
}
