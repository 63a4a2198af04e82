//! The Datadog operation name, resource and span type of an OpenTelemetry span, from its
//! kind and semantic-convention attributes: the rules are `apm_conventions::otel`'s (the
//! agent's "v2" rules, shared with the agent's OTLP receiver); this module gathers the span's
//! tags for them and turns their names into `Str`s.

use apm_conventions::otel::{self, Gathered, Kind, Name};
use opentelemetry::trace::SpanKind;

use crate::Str;
use crate::span::SpanData;

fn kind(kind: &SpanKind) -> Kind {
    match kind {
        SpanKind::Client => Kind::Client,
        SpanKind::Server => Kind::Server,
        SpanKind::Producer => Kind::Producer,
        SpanKind::Consumer => Kind::Consumer,
        SpanKind::Internal => Kind::Internal,
    }
}

pub(super) fn kind_str(k: &SpanKind) -> &'static str {
    kind(k).name()
}

/// The tags the name, resource and type rules read, gathered in one pass over the span's
/// tags (one `match` per tag, no hashing; the last value of a key wins, as for
/// [`SpanData::tag`]; empty is unset), and whether `span.kind` / `http.status_code` are set.
#[derive(Default)]
pub(super) struct Attrs<'a> {
    rules: Gathered<'a>,
    pub(super) span_kind: bool,
    pub(super) http_status_code: bool,
}

impl<'a> Attrs<'a> {
    pub(super) fn of(data: &'a SpanData) -> Self {
        let mut a = Self::default();
        for (k, v) in data.tags() {
            if a.rules.record(k, v) {
                continue;
            }
            match k {
                "span.kind" => a.span_kind = true,
                "http.status_code" => a.http_status_code = true,
                _ => {}
            }
        }
        a
    }
}

fn str(name: Name<'_>) -> Str {
    match name {
        Name::Static(s) => Str::from_static(s),
        other => Str::from(other.into_string()),
    }
}

/// The operation name from the span kind and attributes (agent `GetOTelOperationNameV2`).
pub(super) fn operation_name(k: &SpanKind, a: &Attrs<'_>) -> Str {
    str(otel::operation_name(kind(k), &a.rules))
}

/// The resource from the attributes (agent `GetOTelResourceV2`); `None`: the span name.
pub(super) fn resource(k: &SpanKind, a: &Attrs<'_>) -> Option<Str> {
    otel::resource(kind(k), &a.rules).map(str)
}

/// The span type from the kind (agent `GetOTelSpanType`).
pub(super) fn span_type(k: &SpanKind, a: &Attrs<'_>) -> Str {
    str(otel::span_type(kind(k), &a.rules))
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::SpanKind;

    use super::{Attrs, operation_name, resource, span_type};
    use crate::Str;
    use crate::span::{SpanData, SpanId, TraceId};

    fn span(tags: &[(&'static str, &'static str)]) -> SpanData {
        let mut s = SpanData::new(
            TraceId::from_u128(1),
            SpanId::from_u64(2),
            SpanId::from_u64(0),
            Str::from("otel-name"),
        );
        for (k, v) in tags {
            s.push_meta(Str::from(*k), Str::from(*v));
        }
        s
    }

    #[test]
    fn both_semantic_convention_generations_resolve_in_datadogs_order() {
        let client = SpanKind::Client;
        let db = span(&[
            ("db.system", "mysql"),
            ("db.system.name", "PostgreSQL"),
            ("db.statement", "old"),
            ("db.query.text", "new"),
        ]);
        let a = Attrs::of(&db);
        assert_eq!(operation_name(&client, &a).as_str(), "postgresql.query");
        assert_eq!(resource(&client, &a).as_deref(), Some("old"));
        assert_eq!(span_type(&client, &a).as_str(), "sql");
        let producer = SpanKind::Producer;
        let msg = span(&[
            ("messaging.system", "kafka"),
            ("messaging.operation.type", "send"),
            ("messaging.operation", "publish"),
            ("messaging.destination.name", "new"),
            ("messaging.destination", "old"),
            ("span.kind", "producer"),
        ]);
        let a = Attrs::of(&msg);
        assert_eq!(operation_name(&producer, &a).as_str(), "kafka.publish");
        assert_eq!(resource(&producer, &a).as_deref(), Some("publish old"));
        assert!(a.span_kind && !a.http_status_code);
    }
}
