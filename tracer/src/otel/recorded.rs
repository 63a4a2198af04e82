//! What a bridge span records on the application thread, as the application gave it —
//! the builder's attribute `Vec` moved in whole, `set_attribute`'s attributes pushed onto
//! it, the kind, the status, the instrumentation scope — and its conversion into the
//! Datadog span on the export thread ([`Deferred::apply`], called just before the span is
//! counted in stats, sampled and encoded): tags, metrics, the `datadog.*` overrides, the
//! operation name, resource and type rules, status and error.
//!
//! Only the service is resolved at once (children inherit it, and whether a span enters a
//! service is decided when it starts); everything else the application thread does with
//! an attribute is one push.

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanKind, Status};

use super::mapping::{self, Pending};
use crate::Str;
use crate::span::SpanData;
use crate::span::deferred::Deferred;

/// Attribute capacity a span box keeps for its next span (beyond it, freed).
const KEEP_CAPACITY: usize = 16;

/// A bridge span's recording, converted on the export thread.
#[derive(Clone)]
pub(crate) struct Recorded {
    /// The builder's attributes, then those of `set_attribute`.
    pub(super) attrs: Vec<KeyValue>,
    /// How many of `attrs` came from the builder (they are appended; the later ones
    /// replace an earlier value of their key).
    pub(super) from_builder: usize,
    /// A previous span's emptied attribute list, swapped out for the builder's: freed on
    /// the export thread.
    spare: Vec<KeyValue>,
    pub(super) kind: SpanKind,
    pub(super) status: Status,
    /// Exceptions (events, `record_error`).
    pub(super) pending: Pending,
    /// The instrumentation scope's name and version (`otel.scope.*`).
    pub(super) scope: (Option<Str>, Option<Str>),
}

impl Default for Recorded {
    fn default() -> Self {
        Self {
            attrs: Vec::new(),
            from_builder: 0,
            spare: Vec::new(),
            kind: SpanKind::Internal,
            status: Status::Unset,
            pending: Pending::default(),
            scope: (None, None),
        }
    }
}

impl Recorded {
    /// Starts the recording of a new span with the builder's attributes (moved in as they
    /// are).
    #[inline]
    pub(super) fn start(
        &mut self,
        attributes: Option<Vec<KeyValue>>,
        kind: SpanKind,
        scope: (Option<Str>, Option<Str>),
    ) {
        if let Some(attributes) = attributes {
            self.from_builder = attributes.len();
            // The emptied list of an earlier span keeps its capacity for spans without
            // builder attributes; set aside here, it is freed on the export thread.
            if self.attrs.capacity() == 0 {
                self.attrs = attributes;
            } else {
                self.spare = std::mem::replace(&mut self.attrs, attributes);
            }
        } else {
            self.from_builder = 0;
        }
        self.kind = kind;
        self.scope = scope;
    }

    /// OpenTelemetry: Ok is final; Error replaces Unset or an earlier Error; Unset is
    /// ignored.
    pub(super) fn set_status(&mut self, status: Status) {
        match (&self.status, &status) {
            (Status::Ok, _) | (_, Status::Unset) => {}
            _ => self.status = status,
        }
    }
}

impl Deferred for Recorded {
    fn apply(&mut self, data: &mut SpanData) {
        let from_builder = self.from_builder;
        let mut attrs = std::mem::take(&mut self.attrs);
        let n = attrs.len();
        for (i, kv) in attrs.drain(..).enumerate() {
            if i == from_builder {
                push_scope(data, &self.scope);
            }
            mapping::apply_attribute(data, &mut self.pending, kv, i >= from_builder);
        }
        if from_builder >= n {
            push_scope(data, &self.scope);
        }
        if attrs.capacity() <= KEEP_CAPACITY {
            self.attrs = attrs;
        }
        if self.spare.capacity() != 0 {
            self.spare = Vec::new();
        }
        mapping::finish(data, &self.kind, &self.status, &mut self.pending, n > 0);
        self.pending.reset();
        if !matches!(self.status, Status::Unset) {
            self.status = Status::Unset;
        }
    }

    fn clear(&mut self) {
        self.attrs.clear();
        self.spare = Vec::new();
        self.pending = Pending::default();
        self.status = Status::Unset;
        self.scope = (None, None);
    }

    fn clone_box(&self) -> Box<dyn Deferred> {
        Box::new(self.clone())
    }
}

/// The scope tags, pushed after the builder's attributes.
#[inline]
fn push_scope(data: &mut SpanData, scope: &(Option<Str>, Option<Str>)) {
    if let Some(n) = &scope.0 {
        data.push_meta(Str::from_static("otel.scope.name"), n.clone());
    }
    if let Some(v) = &scope.1 {
        data.push_meta(Str::from_static("otel.scope.version"), v.clone());
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{SpanKind, Status};

    use super::Recorded;
    use crate::Str;
    use crate::span::{SpanData, SpanId, TraceId};

    /// One span's life in a pooled box: recorded, applied (export thread), reset (back to
    /// the pool).
    fn record(data: &mut SpanData, builder: Option<Vec<KeyValue>>, set: Vec<KeyValue>, status: Status) -> SpanData {
        data.reset(Str::from_static("name"));
        data.trace_id = TraceId::from_u128(1);
        data.span_id = SpanId::from_u64(2);
        let scope = (Some(Str::from_static("scope")), None);
        let r = data.deferred.get_or_default::<Recorded>();
        let r = r.unwrap_or_else(|| panic!("a recording"));
        r.start(builder, SpanKind::Client, scope);
        r.attrs.extend(set);
        r.set_status(status);
        let pending_copy = data.clone();
        data.apply_deferred();
        let mut copy = pending_copy;
        copy.apply_deferred();
        assert_eq!(
            format!("{copy:?}"),
            format!("{data:?}"),
            "a clone carries the recording"
        );
        data.clone()
    }

    #[test]
    fn a_reused_box_keeps_nothing_of_its_previous_span() {
        let mut data = SpanData::new(TraceId::default(), SpanId::default(), SpanId::default(), Str::EMPTY);
        for round in 0..3_i64 {
            let s = record(
                &mut data,
                Some(vec![KeyValue::new("only.a", round), KeyValue::new("k", "a")]),
                vec![],
                Status::error("bad"),
            );
            assert!(s.is_error());
            assert_eq!((s.metric("only.a"), s.tag("k")), (Some(round as f64), Some("a")));
            assert_eq!(s.tag("otel.scope.name"), Some("scope"));
            // No builder attributes: the kept list takes `set_attribute`'s.
            let s = record(&mut data, None, vec![KeyValue::new("k", "b")], Status::Unset);
            assert!(!s.is_error());
            assert_eq!((s.metric("only.a"), s.tag("k")), (None, Some("b")));
            assert_eq!(s.tag("otel.status_code"), Some("Unset"));
            let s = record(&mut data, None, vec![], Status::Ok);
            assert_eq!(s.tag("k"), None, "{s:?}");
            assert_eq!(s.tag("otel.status_code"), Some("Ok"));
        }
        // Applied once: a second call does nothing.
        let before = format!("{data:?}");
        data.apply_deferred();
        assert_eq!(format!("{data:?}"), before);
    }
}
