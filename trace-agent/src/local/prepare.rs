//! Kept trace chunks into the rows the writer binds ([`Prepared`]), made on the thread that
//! hands the payload over (the pipeline's forwarding stage), not on the store's single writer
//! thread: each chunk's blob of spans ([`super::codec`]), its search filter, its `traces`
//! summary (time range, root, env, counts) and its `resource_spans` rows. The writer
//! ([`super::rows`]) then only binds these values and steps its statements.
//!
//! Made from the borrowed span model the pipeline decoded ([`crate::span`]: no owned
//! `pb::Span` with its two hash maps per span is built, copied or freed for local mode) or
//! from the protobuf types ([`pb`]: [`LocalStore::push_traces`](super::LocalStore::push_traces)
//! and the spool), through one generic path ([`StoreSpan`]). Tags keep their order, duplicate
//! keys included: in a blob, as in the span model, a later duplicate wins
//! ([`super::codec::SpanRef::meta_get`]).

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::span;
use crate::upstream::pb;

use super::codec::{self, StoreSpan};

/// A string of a prepared payload: a range of [`Prepared::text`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Text(u32, u32);

/// The root of a chunk as the `traces` row holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Root {
    /// 2: no parent; 1: a parent outside the chunk.
    pub(crate) rank: i64,
    pub(crate) service: Text,
    pub(crate) name: Text,
    pub(crate) resource: Text,
    pub(crate) duration: i64,
}

/// One chunk's rows: its `chunks` row (the blob), its `traces` summary, its listed spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkRows {
    pub(crate) trace_id: u64,
    pub(crate) trace_id_high: u64,
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) root: Option<Root>,
    pub(crate) env: Text,
    pub(crate) spans: u64,
    pub(crate) errors: i64,
    pub(crate) filter: codec::Filter,
    pub(crate) blob: Range<usize>,
    pub(crate) listed: Range<usize>,
}

/// A span the resource page lists (a `resource_spans` row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) service: Text,
    pub(crate) resource: Text,
    pub(crate) name: Text,
    pub(crate) start: i64,
    pub(crate) span_id: u64,
    pub(crate) duration: i64,
    pub(crate) error: i32,
    pub(crate) error_type: Option<Text>,
    pub(crate) error_message: Option<Text>,
}

/// The rows of one tracer payload's kept chunks, ready to bind.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Prepared {
    /// The non-empty chunks, in payload order.
    pub(crate) chunks: Vec<ChunkRows>,
    /// Chunks without spans (counted as written, nothing stored).
    pub(crate) empty_chunks: u64,
    pub(crate) listed: Vec<Listed>,
    /// Every chunk's blob, one after the other.
    pub(crate) blobs: Vec<u8>,
    /// Every string a row holds, one after the other.
    pub(crate) text: String,
    /// The payload's env (what a chunk without an `env` tag gets).
    pub(crate) env: Text,
    /// The span ledger's counts per service (when a ledger is attached).
    pub(crate) ledger: Vec<(String, u64)>,
}

/// Blob bytes per span of the last payload prepared: the next payload's blob buffer is
/// sized from it (grown by doubling from 64 KiB, a multi-MB buffer was copied about once
/// more in all: a tenth of the forwarding thread's time in local mode).
static BLOB_BYTES_PER_SPAN: AtomicUsize = AtomicUsize::new(256);

impl Prepared {
    /// From the borrowed model (the forwarding stage).
    pub(crate) fn from_borrowed(tp: &span::TracerPayload<'_>, ledger: bool) -> Self {
        let payload_tid = span::tag_get(&tp.tags, "_dd.p.tid").map(span::Str::as_str);
        let spans = tp.chunks.iter().map(|c| c.spans.len()).sum();
        let mut p = Self::start(tp.env.as_str(), spans);
        let mut scratch = Vec::new();
        let mut cache = codec::PairCache::for_spans(spans);
        for c in &tp.chunks {
            let tid = span::tag_get(&c.tags, "_dd.p.tid").map(span::Str::as_str);
            p.add_chunk(&c.spans, tid, payload_tid, &mut scratch, &mut cache);
        }
        if ledger {
            p.ledger = crate::ledger::count_payload(tp);
        }
        p.learn_size(spans);
        p
    }

    /// From the protobuf types ([`LocalStore::push_traces`](super::LocalStore::push_traces),
    /// the spool).
    pub(crate) fn from_pb(tp: &pb::TracerPayload, ledger: bool) -> Self {
        let payload_tid = tp.tags.get("_dd.p.tid").map(String::as_str);
        let spans = tp.chunks.iter().map(|c| c.spans.len()).sum();
        let mut p = Self::start(&tp.env, spans);
        let mut scratch = Vec::new();
        let mut cache = codec::PairCache::for_spans(spans);
        for c in &tp.chunks {
            let tid = c.tags.get("_dd.p.tid").map(String::as_str);
            p.add_chunk(&c.spans, tid, payload_tid, &mut scratch, &mut cache);
        }
        if ledger {
            p.ledger = crate::ledger::count_pb(tp);
        }
        p.learn_size(spans);
        p
    }

    /// An empty one for a payload of `spans` spans, its blob buffer sized from the last one's.
    fn start(env: &str, spans: usize) -> Self {
        let per_span = BLOB_BYTES_PER_SPAN.load(Ordering::Relaxed);
        let blob = spans
            .saturating_mul(per_span)
            .saturating_add(spans.saturating_mul(per_span) / 8);
        let mut p = Self {
            blobs: Vec::with_capacity(blob.clamp(4 << 10, 64 << 20)),
            text: String::with_capacity(8 << 10),
            ..Self::default()
        };
        p.env = p.put(env);
        p
    }

    /// Records this payload's blob bytes per span for the next one's buffer.
    fn learn_size(&self, spans: usize) {
        if spans > 0 {
            BLOB_BYTES_PER_SPAN.store(self.blobs.len().div_ceil(spans).clamp(16, 64 << 10), Ordering::Relaxed);
        }
    }

    /// Chunks, empty ones included.
    pub(crate) fn chunk_count(&self) -> u64 {
        self.chunks.len() as u64 + self.empty_chunks
    }

    /// Bytes in memory (what the queue's byte bound counts).
    pub(crate) fn bytes(&self) -> usize {
        self.blobs.capacity()
            + self.text.capacity()
            + self.chunks.capacity() * std::mem::size_of::<ChunkRows>()
            + self.listed.capacity() * std::mem::size_of::<Listed>()
            + self.ledger.iter().map(|(s, _)| s.len() + 32).sum::<usize>()
            + 256
    }

    /// Bytes of database pages its rows take, about: the blobs, the strings of its summary
    /// and listed rows, each row's other columns and index entries, and a quarter more for
    /// pages not full. An overestimate (the load payloads: ~370 bytes per span against 316 in
    /// the file), so that a batch bounded by it stays within its bytes in the WAL, which the
    /// size cap counts on (buffers sized closely in memory no longer over-count, as the blob
    /// buffer's doublings did).
    pub(crate) fn disk_bytes(&self) -> usize {
        let rows = self.blobs.len() + self.text.len() + self.chunks.len() * 160 + self.listed.len() * 80;
        rows + rows / 4 + 256
    }

    /// The string `t` stands for.
    pub(crate) fn text(&self, t: Text) -> &str {
        self.text.get(t.0 as usize..t.1 as usize).unwrap_or("")
    }

    fn put(&mut self, s: &str) -> Text {
        let from = self.text.len();
        self.text.push_str(s);
        let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Text(at(from), at(self.text.len()))
    }

    /// Adds one chunk's rows. `scratch` is reused from chunk to chunk (span ids, sorted),
    /// `cache` from chunk to chunk of one payload.
    fn add_chunk<S: StoreSpan>(
        &mut self,
        spans: &[S],
        chunk_tid: Option<&str>,
        payload_tid: Option<&str>,
        scratch: &mut Vec<(u64, usize)>,
        cache: &mut codec::PairCache,
    ) {
        let Some(first) = spans.first() else {
            self.empty_chunks += 1;
            return;
        };
        scratch.clear();
        scratch.extend(spans.iter().enumerate().map(|(i, s)| (s.ids().1, i)));
        scratch.sort_unstable();
        let find = |id: u64| {
            scratch
                .binary_search_by_key(&id, |(k, _)| *k)
                .ok()
                .and_then(|i| scratch.get(i))
                .and_then(|(_, i)| spans.get(*i))
        };
        let blob_from = self.blobs.len();
        let listed_from = self.listed.len();
        let mut start = i64::MAX;
        let mut end = i64::MIN;
        let mut errors = 0i64;
        let mut filter = codec::Filter::default();
        let mut root: Option<(&S, i64)> = None;
        let mut env: Option<&str> = None;
        let mut tid_meta: Option<&str> = None;
        let mut prev: Option<[&str; 4]> = None;
        for s in spans {
            let [service, name, resource, _] = s.names();
            filter.add_cached(codec::Filter::SERVICE, service, cache);
            filter.add_cached(codec::Filter::RESOURCE, resource, cache);
            filter.add_cached(codec::Filter::OPERATION, name, cache);
            // One pass over the tags: encoded, added to the filter, the few read here noted.
            let noted = codec::encode_noting(&mut self.blobs, s, prev, cache, |cache, k, v| {
                if !codec::Filter::skips(k) {
                    filter.add_cached(k, v, cache);
                }
            });
            prev = Some(s.names());
            let (_, span_id, parent_id) = s.ids();
            let (s_start, s_duration, s_error) = s.times();
            start = start.min(s_start);
            end = end.max(s_start.saturating_add(s_duration));
            errors += i64::from(s_error != 0);
            let parent = (parent_id != 0).then(|| find(parent_id)).flatten();
            // The root: the first span without a parent (rank 2), else the first one whose
            // parent is not in this chunk (rank 1: a partial flush, or a service called by
            // another one).
            if parent_id == 0 {
                if root.is_none_or(|(_, r)| r < 2) {
                    root = Some((s, 2));
                }
            } else if parent.is_none() && root.is_none() {
                root = Some((s, 1));
            }
            if env.is_none() {
                env = noted.env;
            }
            if tid_meta.is_none() && chunk_tid.is_none() {
                tid_meta = noted.tid;
            }
            if listed(service, &noted, parent.map(|p| p.names()[0])) {
                let message = noted.error_message.or(noted.error_msg);
                let row = Listed {
                    service: self.put(service),
                    resource: self.put(resource),
                    name: self.put(name),
                    start: s_start,
                    span_id,
                    duration: s_duration,
                    error: s_error,
                    error_type: noted.error_type.map(|t| self.put(t)),
                    error_message: message.map(|m| self.put(m)),
                };
                self.listed.push(row);
            }
        }
        let trace_id_high = chunk_tid
            .or(tid_meta)
            .or(payload_tid)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        let root = root.map(|(s, rank)| {
            let [service, name, resource, _] = s.names();
            Root {
                rank,
                service: self.put(service),
                name: self.put(name),
                resource: self.put(resource),
                duration: s.times().1,
            }
        });
        let env = match env {
            Some(e) => self.put(e),
            None => self.env,
        };
        self.chunks.push(ChunkRows {
            trace_id: first.ids().0,
            trace_id_high,
            start,
            end,
            root,
            env,
            spans: spans.len() as u64,
            errors,
            filter,
            blob: blob_from..self.blobs.len(),
            listed: listed_from..self.listed.len(),
        });
    }

    /// Back to the protobuf types (the spool at a shutdown past its deadline): what the
    /// store keeps of each span, the high trace id bits as the chunk's `_dd.p.tid`; preparing
    /// the result gives the same rows.
    pub(crate) fn to_pb(&self) -> pb::TracerPayload {
        let chunks = self
            .chunks
            .iter()
            .map(|c| pb::TraceChunk {
                priority: 1,
                spans: codec::spans(self.blobs.get(c.blob.clone()).unwrap_or_default())
                    .map(|s| pb::Span {
                        service: s.service.to_owned(),
                        name: s.name.to_owned(),
                        resource: s.resource.to_owned(),
                        r#type: s.r#type.to_owned(),
                        trace_id: c.trace_id,
                        span_id: s.span_id,
                        parent_id: s.parent_id,
                        start: s.start,
                        duration: s.duration,
                        error: i32::try_from(s.error).unwrap_or(1),
                        meta: s.meta().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
                        metrics: s.metrics().map(|(k, v)| (k.to_owned(), v)).collect(),
                        ..pb::Span::default()
                    })
                    .collect(),
                tags: (c.trace_id_high != 0)
                    .then(|| ("_dd.p.tid".to_owned(), format!("{:016x}", c.trace_id_high)))
                    .into_iter()
                    .collect(),
                ..pb::TraceChunk::default()
            })
            .collect();
        pb::TracerPayload {
            chunks,
            env: self.text(self.env).to_owned(),
            ..pb::TracerPayload::default()
        }
    }
}

/// Whether the resource page lists `span` (a `resource_spans` row): the spans stats are
/// computed for — top-level in its chunk (no parent there, or a parent of another service),
/// marked top-level or measured by the tracer, or of a client/server/producer/consumer kind.
fn listed(service: &str, tags: &codec::Noted<'_>, parent_service: Option<&str>) -> bool {
    let flag = |v: Option<f64>| v.is_some_and(|v| v == 1.0);
    parent_service.is_none_or(|p| p != service)
        || flag(tags.top_level)
        || flag(tags.measured)
        || tags
            .span_kind
            .is_some_and(|k| matches!(k, "server" | "client" | "producer" | "consumer"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::tests::span as pb_span;
    use crate::span::Str;

    /// The borrowed form of `s`, its tags in `meta` order (duplicates allowed).
    fn borrowed(s: &pb::Span, meta: &[(&str, &str)]) -> span::Span<'static> {
        let owned = |v: &str| Str::from(v.to_owned());
        span::Span {
            service: owned(&s.service),
            name: owned(&s.name),
            resource: owned(&s.resource),
            r#type: owned(&s.r#type),
            trace_id: s.trace_id,
            span_id: s.span_id,
            parent_id: s.parent_id,
            start: s.start,
            duration: s.duration,
            error: s.error,
            meta: meta.iter().map(|(k, v)| (owned(k), owned(v))).collect(),
            metrics: s.metrics.iter().map(|(k, v)| (owned(k), *v)).collect(),
            ..span::Span::default()
        }
    }

    /// A trace of three spans: a server root, a client child of another service with an
    /// error, and an internal child (not listed); the root carries the high trace id bits.
    fn spans() -> Vec<pb::Span> {
        let mut root = pb_span(7, 70, 0, ("web", "http.request", "GET /r"), 1_000, 500);
        root.meta.insert("span.kind".to_owned(), "server".to_owned());
        root.meta.insert("_dd.p.tid".to_owned(), "00000000000000ab".to_owned());
        let mut db = pb_span(7, 71, 70, ("db", "pg.query", "SELECT 1"), 1_100, 100);
        db.error = 1;
        db.meta.insert("error.type".to_owned(), "Timeout".to_owned());
        db.meta.insert("error.msg".to_owned(), "slow".to_owned());
        let inner = pb_span(7, 72, 70, ("web", "render", "page"), 1_200, 700);
        vec![root, db, inner]
    }

    fn rows_without_blobs(p: &Prepared) -> (Vec<ChunkRows>, Vec<Listed>, String, u64) {
        let chunks = p
            .chunks
            .iter()
            .map(|c| ChunkRows {
                blob: 0..0,
                ..c.clone()
            })
            .collect();
        (chunks, p.listed.clone(), p.text.clone(), p.empty_chunks)
    }

    #[test]
    fn borrowed_and_protobuf_payloads_give_the_same_rows_and_the_spool_form_gives_them_back() {
        let pb_spans = spans();
        let tp = pb::TracerPayload {
            env: "prod".to_owned(),
            chunks: vec![
                pb::TraceChunk {
                    spans: pb_spans.clone(),
                    ..pb::TraceChunk::default()
                },
                pb::TraceChunk::default(),
            ],
            ..pb::TracerPayload::default()
        };
        let sorted = |s: &pb::Span| {
            let mut m: Vec<(String, String)> = s.meta.clone().into_iter().collect();
            m.sort();
            m
        };
        let metas: Vec<Vec<(String, String)>> = pb_spans.iter().map(sorted).collect();
        fn as_refs(m: &[(String, String)]) -> Vec<(&str, &str)> {
            m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
        }
        let borrowed_payload = span::TracerPayload {
            env: Str::from("prod".to_owned()),
            chunks: vec![
                span::TraceChunk::from_spans(
                    pb_spans
                        .iter()
                        .zip(&metas)
                        .map(|(s, m)| borrowed(s, &as_refs(m)))
                        .collect(),
                ),
                span::TraceChunk::from_spans(Vec::new()),
            ],
            ..span::TracerPayload::default()
        };
        let a = Prepared::from_pb(&tp, true);
        let b = Prepared::from_borrowed(&borrowed_payload, true);
        assert_eq!(rows_without_blobs(&a), rows_without_blobs(&b));
        assert_eq!(a.ledger, b.ledger);
        assert_eq!((a.chunk_count(), a.chunks[0].spans), (2, 3));
        let c = &a.chunks[0];
        assert_eq!(
            (c.trace_id, c.trace_id_high, c.start, c.end, c.errors),
            (7, 0xab, 1_000, 1_900, 1)
        );
        assert_eq!(a.text(c.env), "test", "the spans' env tag, not the payload's");
        let root = c.root.unwrap();
        assert_eq!(
            (root.rank, a.text(root.service), a.text(root.resource)),
            (2, "web", "GET /r")
        );
        // Listed: the root (no parent) and the db span (another service); not `render`.
        let listed: Vec<(&str, Option<&str>, Option<&str>)> = a
            .listed
            .iter()
            .map(|l| {
                (
                    a.text(l.name),
                    l.error_type.map(|t| a.text(t)),
                    l.error_message.map(|t| a.text(t)),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                ("http.request", None, None),
                ("pg.query", Some("Timeout"), Some("slow"))
            ]
        );
        // The spool's form: the same spans, and the same rows once prepared again.
        let back = a.to_pb();
        assert_eq!(back.chunks[0].spans, pb_spans);
        assert_eq!(back.env, "prod");
        assert_eq!(back, b.to_pb());
        let again = Prepared::from_pb(&back, true);
        assert_eq!(rows_without_blobs(&again).0, rows_without_blobs(&a).0);
        assert_eq!(again.listed, a.listed);
    }

    #[test]
    fn a_later_duplicate_tag_wins_as_in_the_span_model() {
        let s = pb_span(9, 90, 0, ("web", "op", "res"), 10, 10);
        let dup = borrowed(
            &s,
            &[
                ("env", "staging"),
                ("peer.service", "a"),
                ("env", "prod"),
                ("peer.service", "b"),
            ],
        );
        assert_eq!(dup.meta("env"), Some("prod"));
        let p = Prepared::from_borrowed(
            &span::TracerPayload {
                chunks: vec![span::TraceChunk::from_spans(vec![dup])],
                ..span::TracerPayload::default()
            },
            false,
        );
        let c = &p.chunks[0];
        assert_eq!(p.text(c.env), "prod");
        let stored: Vec<codec::SpanRef<'_>> = codec::spans(&p.blobs[c.blob.clone()]).collect();
        assert_eq!(stored[0].meta_get("peer.service"), Some("b"));
        assert_eq!(p.to_pb().chunks[0].spans[0].meta["env"], "prod");
        let (word, mask) = codec::Filter::bits("peer.service", "b");
        assert_eq!(c.filter.0[word] & mask, mask);
    }
}
