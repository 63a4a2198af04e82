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

/// The instrumentation scope's name and version (`otel.scope.*`).
pub(crate) type Scope = (Option<Str>, Option<Str>);

/// A bridge span's recording, converted on the export thread.
#[derive(Clone)]
pub(crate) struct Recorded {
    /// The builder's attribute list as the application made it, and the attributes of
    /// `set_attribute` while it has room (it is freed on the export thread).
    builder: Option<Vec<KeyValue>>,
    /// How many of `builder` were the builder's (they are appended; the later ones
    /// replace an earlier value of their key).
    from_builder: usize,
    /// The attributes of `set_attribute` that did not fit in `builder` (a list whose
    /// capacity the span box keeps: no allocation per span).
    set: Vec<KeyValue>,
    pub(super) kind: SpanKind,
    pub(super) status: Status,
    /// Exceptions (events, `record_error`).
    pub(super) pending: Pending,
    scope: Scope,
}

impl Default for Recorded {
    fn default() -> Self {
        Self {
            builder: None,
            from_builder: 0,
            set: Vec::new(),
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
    pub(super) fn start(&mut self, attributes: Option<Vec<KeyValue>>, kind: SpanKind, scope: &Scope) {
        self.from_builder = attributes.as_ref().map_or(0, Vec::len);
        // (The previous span's list was taken by `apply` or `clear`: nothing is freed here.)
        self.builder = attributes;
        self.kind = kind;
        // The same tracer's spans follow one another in a box: compared, not cloned.
        if !same_scope(&self.scope, scope) {
            self.scope.clone_from(scope);
        }
    }

    /// Records an attribute of `set_attribute`.
    #[inline]
    pub(super) fn push(&mut self, kv: KeyValue) {
        match &mut self.builder {
            Some(b) if b.len() < b.capacity() => b.push(kv),
            _ => self.set.push(kv),
        }
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

/// Whether two scopes are the same static strings (or both absent).
fn same_scope(a: &Scope, b: &Scope) -> bool {
    let same = |x: &Option<Str>, y: &Option<Str>| match (x, y) {
        (None, None) => true,
        (Some(x), Some(y)) => match (x.as_static(), y.as_static()) {
            (Some(x), Some(y)) => std::ptr::eq(x, y),
            _ => false,
        },
        _ => false,
    };
    same(&a.0, &b.0) && same(&a.1, &b.1)
}

impl Deferred for Recorded {
    fn apply(&mut self, data: &mut SpanData) {
        let from_builder = self.from_builder;
        let mut n = 0;
        if let Some(builder) = self.builder.take() {
            n = builder.len();
            for (i, kv) in builder.into_iter().enumerate() {
                if i == from_builder {
                    push_scope(data, &self.scope);
                }
                mapping::apply_attribute(data, &mut self.pending, kv, i >= from_builder);
            }
            // (Its allocation, the application's, is freed here on the export thread.)
        }
        if from_builder >= n {
            push_scope(data, &self.scope);
        }
        let any = n > 0 || !self.set.is_empty();
        if !self.set.is_empty() {
            for kv in self.set.drain(..) {
                mapping::apply_attribute(data, &mut self.pending, kv, true);
            }
            if self.set.capacity() > KEEP_CAPACITY {
                self.set = Vec::new();
            }
        }
        mapping::finish(data, &self.kind, &self.status, &mut self.pending, any);
        self.pending.reset();
        if !matches!(self.status, Status::Unset) {
            self.status = Status::Unset;
        }
    }

    fn clear(&mut self) {
        self.builder = None;
        self.set.clear();
        self.pending = Pending::default();
        self.status = Status::Unset;
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
        r.start(builder, SpanKind::Client, &scope);
        for kv in set {
            r.push(kv);
        }
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

    #[test]
    fn set_attributes_follow_the_builders_whether_or_not_its_list_has_room() {
        let mut data = SpanData::new(TraceId::default(), SpanId::default(), SpanId::default(), Str::EMPTY);
        let set = || {
            vec![
                KeyValue::new("k", "set"),
                KeyValue::new("late", 1),
                KeyValue::new("later", "x"),
            ]
        };
        let mut roomy = Vec::with_capacity(8);
        roomy.extend([KeyValue::new("k", "builder"), KeyValue::new("b", true)]);
        let exact = vec![KeyValue::new("k", "builder"), KeyValue::new("b", true)];
        let a = record(&mut data, Some(roomy), set(), Status::Unset);
        let b = record(&mut data, Some(exact), set(), Status::Unset);
        let tags = |s: &SpanData| s.tags().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
        assert_eq!(tags(&a), tags(&b));
        assert_eq!(
            tags(&a)[..4],
            ["k=set", "b=true", "otel.scope.name=scope", "later=x"],
            "builder attributes, the scope, then the later ones"
        );
        assert_eq!(a.metric("late"), Some(1.0));
    }
}
