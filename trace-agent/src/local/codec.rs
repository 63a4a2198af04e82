//! The stored form of a trace chunk's spans (schema 5): one compact binary blob per chunk in
//! `chunks.spans`, made by [`super::prepare`], written by [`super::rows`] and read back by the trace page, the search and
//! the service map. Not JSON: no field names, integers as varints, no escaping.
//!
//! A blob is a sequence of span records (so two blobs of one trace concatenate into a valid
//! blob), each:
//!
//! ```text
//! span_id u64 LE, parent_id u64 LE, start zigzag varint, duration zigzag varint,
//! error zigzag varint, service str, name str, resource str, type str,
//! meta count varint, (key str, value str)*, metrics count varint, (key str, value f64 LE)*
//! str := varint t; t even: t / 2 UTF-8 bytes follow;
//!        t = 1: the same string as this field of the blob's previous span (service, name,
//!               resource and type only; never in a blob's first span);
//!        t odd > 1: the built-in string KNOWN[(t - 3) / 2] (common tag keys and values)
//! ```
//!
//! Schema 5 added the two references: tag keys were a quarter of a blob's bytes and most are
//! the same few dozen everywhere (`_dd.p.dm`, `component`, `http.method`, ...), and a chunk's
//! spans mostly share their service and type. A blob is ~30 % smaller, and the store's writer
//! (SQLite pages, WAL frames, checkpoints) costs in proportion to the bytes it writes.
//! [`KNOWN`] is stored on disk through its indexes: entries may be appended, never changed,
//! removed or reordered without a new schema version.
//!
//! Tags are in the span model's order, duplicate keys included (the decoders keep them; a
//! later one wins on lookup): readers take the last value of a key ([`SpanRef::meta_get`],
//! or a map filled in order).
//!
//! Stored on disk: a change of this layout needs a new schema version. Reading never panics:
//! a truncated or corrupt blob ends the iteration (counted by the caller as unreadable).

use crate::span;
use crate::upstream::pb;

/// What the store reads of a span, from either model.
pub(crate) trait StoreSpan {
    /// Trace, span and parent ids.
    fn ids(&self) -> (u64, u64, u64);
    /// Start, duration (ns) and error flag.
    fn times(&self) -> (i64, i64, i32);
    /// Service, operation name, resource, type.
    fn names(&self) -> [&str; 4];
    /// The string tags, in order (a later duplicate key wins).
    fn meta_pairs(&self) -> impl ExactSizeIterator<Item = (&str, &str)>;
    /// The numeric tags, in order.
    fn metric_pairs(&self) -> impl ExactSizeIterator<Item = (&str, f64)>;
}

impl StoreSpan for span::Span<'_> {
    fn ids(&self) -> (u64, u64, u64) {
        (self.trace_id, self.span_id, self.parent_id)
    }
    fn times(&self) -> (i64, i64, i32) {
        (self.start, self.duration, self.error)
    }
    fn names(&self) -> [&str; 4] {
        [
            self.service.as_str(),
            self.name.as_str(),
            self.resource.as_str(),
            self.r#type.as_str(),
        ]
    }
    fn meta_pairs(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.meta.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    fn metric_pairs(&self) -> impl ExactSizeIterator<Item = (&str, f64)> {
        self.metrics.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

impl StoreSpan for pb::Span {
    fn ids(&self) -> (u64, u64, u64) {
        (self.trace_id, self.span_id, self.parent_id)
    }
    fn times(&self) -> (i64, i64, i32) {
        (self.start, self.duration, self.error)
    }
    fn names(&self) -> [&str; 4] {
        [&self.service, &self.name, &self.resource, &self.r#type]
    }
    fn meta_pairs(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.meta.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    fn metric_pairs(&self) -> impl ExactSizeIterator<Item = (&str, f64)> {
        self.metrics.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

/// Strings a blob refers to by index (see the module doc): tag keys and values that most
/// tracers write on most spans. Appended to only (the index is stored).
const KNOWN: [&str; 98] = [
    // One byte in a blob (the first 63): on most spans of most tracers.
    "component",
    "env",
    "version",
    "_dd.svc_src",
    "_dd.base_service",
    "span.kind",
    "language",
    "runtime-id",
    "process_id",
    "_dd.top_level",
    "_dd.measured",
    "_top_level",
    "_sampling_priority_v1",
    "_dd.p.dm",
    "_dd.p.tid",
    "_dd.tracer_kr",
    "_dd.agent_psr",
    "_dd.rule_psr",
    "_dd.limit_psr",
    "_dd.tags.process",
    "_dd.code_origin.type",
    "_dd.code_origin.frames.0.file",
    "_dd.code_origin.frames.0.line",
    "_dd.code_origin.frames.0.type",
    "_dd.code_origin.frames.0.method",
    "_sampling_priority_rate_v1",
    "_dd.dm.service_hash",
    "error.type",
    "error.message",
    "error.msg",
    "error.stack",
    "http.method",
    "http.route",
    "http.url",
    "http.status_code",
    "http.useragent",
    "db.system",
    "out.host",
    "peer.service",
    "server",
    "client",
    "internal",
    "producer",
    "consumer",
    "GET",
    "POST",
    "200",
    "-0",
    "-1",
    "-3",
    "-4",
    "true",
    "false",
    "python",
    "web",
    "http",
    "sql",
    "thread.id",
    "thread.name",
    "db.name",
    "db.statement",
    "out.port",
    "_dd.origin",
    // Two bytes.
    "_dd.hostname",
    "_dd.git.commit.sha",
    "_dd.git.repository_url",
    "_dd.peer.service.source",
    "_dd.integration",
    "http.host",
    "http.request.method",
    "http.response.status_code",
    "http.client_ip",
    "network.client.ip",
    "url.full",
    "url.path",
    "url.scheme",
    "user_agent.original",
    "server.address",
    "server.port",
    "db.user",
    "db.row_count",
    "db.operation",
    "peer.hostname",
    "network.destination.name",
    "network.destination.port",
    "messaging.system",
    "rpc.system",
    "rpc.service",
    "rpc.method",
    "otel.library.name",
    "otel.status_code",
    "PUT",
    "DELETE",
    "201",
    "204",
    "404",
    "500",
    "db",
];

/// The hash slot of a candidate string: its length and four of its bytes, multiplied
/// (the constant was searched for: no two [`KNOWN`] strings share a slot; a test checks it,
/// and an appended entry may need another constant).
#[allow(clippy::indexing_slicing)] // every index is below `n`, which is not 0 there
const fn slot(b: &[u8]) -> usize {
    let n = b.len();
    if n == 0 {
        return 0;
    }
    let key = b[0] as u64
        | (b[n - 1] as u64) << 8
        | (b[n / 2] as u64) << 16
        | (b[n.saturating_sub(2)] as u64) << 24
        | (n as u64) << 32;
    (key.wrapping_mul(0xb8f5_0cda_d966_c2ed) >> 55) as usize
}

/// [`KNOWN`]'s indexes by [`slot`] (`u8::MAX`: none).
#[allow(clippy::indexing_slicing)] // evaluated at compile time; `slot` is below 512
const SLOTS: [u8; 512] = {
    let mut slots = [u8::MAX; 512];
    let mut i = 0;
    while i < KNOWN.len() {
        let at = slot(KNOWN[i].as_bytes());
        if slots[at] == u8::MAX {
            slots[at] = i as u8;
        }
        i += 1;
    }
    slots
};

/// `s`'s index in [`KNOWN`].
fn known(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.len() > 32 {
        return None;
    }
    let i = *SLOTS.get(slot(b))? as usize;
    KNOWN.get(i).filter(|k| **k == s).map(|_| i)
}

/// `s`'s index in [`KNOWN`], at compile time (a panic there: not a built-in string).
#[allow(clippy::indexing_slicing, clippy::panic)] // only evaluated at compile time (constants)
const fn known_index(s: &str) -> usize {
    let mut i = 0;
    while i < KNOWN.len() {
        let (a, b) = (KNOWN[i].as_bytes(), s.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("not a built-in string")
}

/// The tags the store reads of a span while [`encode_noting`] writes it (the last value of
/// each key, as in the span model): no second pass over the tags.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Noted<'a> {
    pub(crate) env: Option<&'a str>,
    pub(crate) tid: Option<&'a str>,
    pub(crate) span_kind: Option<&'a str>,
    pub(crate) error_type: Option<&'a str>,
    pub(crate) error_message: Option<&'a str>,
    pub(crate) error_msg: Option<&'a str>,
    pub(crate) top_level: Option<f64>,
    pub(crate) measured: Option<f64>,
}

impl<'a> Noted<'a> {
    const ENV: usize = known_index("env");
    const TID: usize = known_index("_dd.p.tid");
    const SPAN_KIND: usize = known_index("span.kind");
    const ERROR_TYPE: usize = known_index("error.type");
    const ERROR_MESSAGE: usize = known_index("error.message");
    const ERROR_MSG: usize = known_index("error.msg");
    const TOP_LEVEL: usize = known_index("_top_level");
    const MEASURED: usize = known_index("_dd.measured");

    fn meta(&mut self, key: usize, value: &'a str) {
        let slot = match key {
            Self::ENV => &mut self.env,
            Self::TID => &mut self.tid,
            Self::SPAN_KIND => &mut self.span_kind,
            Self::ERROR_TYPE => &mut self.error_type,
            Self::ERROR_MESSAGE => &mut self.error_message,
            Self::ERROR_MSG => &mut self.error_msg,
            _ => return,
        };
        *slot = Some(value);
    }

    fn metric(&mut self, key: usize, value: f64) {
        match key {
            Self::TOP_LEVEL => self.top_level = Some(value),
            Self::MEASURED => self.measured = Some(value),
            _ => {}
        }
    }
}

/// Appends `span`'s record to `out`. `prev` is the previous span's [`StoreSpan::names`] in
/// the same blob (`None` for a blob's first span).
#[cfg(test)]
pub(crate) fn encode<S: StoreSpan>(out: &mut Vec<u8>, span: &S, prev: Option<[&str; 4]>) {
    encode_noting(out, span, prev, &mut PairCache::default(), |_, _, _| {});
}

/// [`encode`], also returning the tags [`Noted`] keeps and handing every string tag to
/// `on_meta` (the search filter) with `cache`, the payload's (also for built-in string lookups).
pub(crate) fn encode_noting<'a, S: StoreSpan>(
    out: &mut Vec<u8>,
    span: &'a S,
    prev: Option<[&str; 4]>,
    cache: &mut PairCache,
    mut on_meta: impl FnMut(&mut PairCache, &'a str, &'a str),
) -> Noted<'a> {
    let mut noted = Noted::default();
    let (_, span_id, parent_id) = span.ids();
    let (start, duration, error) = span.times();
    out.extend_from_slice(&span_id.to_le_bytes());
    out.extend_from_slice(&parent_id.to_le_bytes());
    put_i64(out, start);
    put_i64(out, duration);
    put_i64(out, i64::from(error));
    let names = span.names();
    for (i, s) in names.iter().enumerate() {
        // The same view (the decoders hand out one per repeated string) or the same bytes.
        let same = |p: &&str| std::ptr::eq(*p, *s) || p == s;
        if prev.is_some_and(|p| p.get(i).is_some_and(same)) {
            out.push(1);
        } else {
            put_str(out, s, cache);
        }
    }
    let meta = span.meta_pairs();
    put_u64(out, meta.len() as u64);
    for (k, v) in meta {
        if let Some(i) = put_str(out, k, cache) {
            noted.meta(i, v);
        }
        put_str(out, v, cache);
        on_meta(cache, k, v);
    }
    let metrics = span.metric_pairs();
    put_u64(out, metrics.len() as u64);
    for (k, v) in metrics {
        if let Some(i) = put_str(out, k, cache) {
            noted.metric(i, v);
        }
        out.extend_from_slice(&v.to_le_bytes());
    }
    noted
}

fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Writes `s`; its index in [`KNOWN`] when it is a built-in string.
fn put_str(out: &mut Vec<u8>, s: &str, cache: &mut PairCache) -> Option<usize> {
    let i = cache.known(s);
    match i {
        Some(i) => put_u64(out, (i as u64) * 2 + 3),
        None => {
            put_u64(out, (s.len() as u64) * 2);
            out.extend_from_slice(s.as_bytes());
        }
    }
    i
}

/// A trace's filter (schema 4: the `traces` columns `f0`..`f3`, OR-ed over its chunks): for
/// each string tag (but `_dd.*` ones) and each span's service, resource and operation, two bits
/// of one of four 64-bit words, from a 64-bit hash of key and value. A search ANDs the
/// words in SQL before reading any blob: a trace without the bits cannot match; one with them
/// (a match, or about 3 % of the others for ~20 tags a trace) is checked on its spans. The
/// hash ([`hash`]) reads 8 bytes at a time: FNV-1a's byte at a time was the writer's largest
/// cost (10 % of the agent's CPU at saturation).
/// Stored on disk: a change of the hash needs a new schema version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Filter(pub(crate) [i64; 4]);

impl Filter {
    /// Keys of the span fields in the filter (never a tag key: they start with a 0x01 byte).
    pub(crate) const SERVICE: &'static str = "\u{1}service";
    /// See [`Self::SERVICE`].
    pub(crate) const RESOURCE: &'static str = "\u{1}resource";
    /// See [`Self::SERVICE`].
    pub(crate) const OPERATION: &'static str = "\u{1}name";

    /// Whether a tag key is left out of the filter (a tracer's internal tags: the same on
    /// most traces).
    pub(crate) fn skips(key: &str) -> bool {
        key.starts_with("_dd.")
    }

    /// Adds `key:value`.
    pub(crate) fn add(&mut self, key: &str, value: &str) {
        let (word, mask) = Self::bits(key, value);
        if let Some(w) = self.0.get_mut(word) {
            *w |= mask;
        }
    }

    /// [`Self::add`] through `cache`: a payload repeats the same few tags on most of its
    /// spans, and hashing them was the largest cost of preparing its rows.
    pub(crate) fn add_cached(&mut self, key: &str, value: &str, cache: &mut PairCache) {
        let (word, mask) = cache.bits(key, value);
        if let Some(w) = self.0.get_mut(word) {
            *w |= mask;
        }
    }

    /// Adds what a span puts in the filter.
    #[cfg(test)]
    pub(crate) fn add_fields<S: StoreSpan>(&mut self, span: &S) {
        let [service, name, resource, _] = span.names();
        self.add(Self::SERVICE, service);
        self.add(Self::RESOURCE, resource);
        self.add(Self::OPERATION, name);
        for (k, v) in span.meta_pairs() {
            if !Self::skips(k) {
                self.add(k, v);
            }
        }
    }

    /// The word and the bits of `key:value`.
    pub(crate) fn bits(key: &str, value: &str) -> (usize, i64) {
        let h = hash(key, value);
        let mask = (1u64 << ((h >> 2) & 63)) | (1u64 << ((h >> 8) & 63));
        ((h & 3) as usize, i64::from_ne_bytes(mask.to_ne_bytes()))
    }
}

/// [`Filter::bits`] of the `key:value` pairs seen and [`known`] of the strings seen, by the
/// strings' addresses and lengths (direct-mapped, at most 1024 and 256 entries). Live for the
/// preparation of one payload only: every string it saw is then still alive and unchanged
/// (borrowed from the payload), so one address and length is one content. The decoders hand
/// out one view per repeated string of a payload, so most are found.
pub(crate) struct PairCache {
    slots: Vec<[usize; 6]>,
    known: Vec<[usize; 3]>,
    /// 64 − log2 of the slots (pairs), of the known slots.
    shift: (u32, u32),
}

impl Default for PairCache {
    fn default() -> Self {
        Self::for_spans(usize::MAX)
    }
}

impl PairCache {
    /// Sized for a payload of `spans` spans: up to 1024 pairs and 256 strings (a small payload
    /// does not clear 54 KiB).
    pub(crate) fn for_spans(spans: usize) -> Self {
        let pairs = spans.saturating_mul(8).clamp(16, 1024).next_power_of_two();
        let known = (pairs / 4).max(16);
        Self {
            slots: vec![[0; 6]; pairs],
            known: vec![[0; 3]; known],
            shift: (64 - pairs.trailing_zeros(), 64 - known.trailing_zeros()),
        }
    }

    /// [`known`]`(s)`, remembered by address.
    fn known(&mut self, s: &str) -> Option<usize> {
        let id = [s.as_ptr() as usize, s.len()];
        let at = ((id[0] as u64 ^ (id[1] as u64).rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift.1)
            as usize;
        let Some(slot) = self.known.get_mut(at) else {
            return known(s);
        };
        // Slot: address, length, index + 1 (0: not built in).
        if slot[..2] == id {
            return slot[2].checked_sub(1);
        }
        let i = known(s);
        *slot = [id[0], id[1], i.map_or(0, |i| i + 1)];
        i
    }

    fn bits(&mut self, key: &str, value: &str) -> (usize, i64) {
        let id = [key.as_ptr() as usize, key.len(), value.as_ptr() as usize, value.len()];
        let mix = (id[0] as u64 ^ (id[2] as u64).rotate_left(21) ^ (id[3] as u64).rotate_left(42))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let at = (mix >> self.shift.0) as usize;
        // A null address never comes from a `&str`: an empty slot matches nothing.
        if let Some(slot) = self.slots.get_mut(at) {
            if slot[..4] == id {
                return (slot[4], slot[5] as i64);
            }
            let (word, mask) = Filter::bits(key, value);
            *slot = [id[0], id[1], id[2], id[3], word, mask as usize];
            return (word, mask);
        }
        Filter::bits(key, value)
    }
}

/// The filter's 64-bit hash of `key:value`: 8 bytes at a time (multiply, rotate), each
/// string's length mixed in after it (so `ab:c` and `a:bc` differ), then murmur3's final mix.
/// Stored on disk (through the filter words): never change it without a new schema version.
fn hash(key: &str, value: &str) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    for part in [key.as_bytes(), value.as_bytes()] {
        let mut words = part.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.iter_mut().zip(w).for_each(|(d, s)| *d = *s);
            h = (h ^ u64::from_le_bytes(b)).wrapping_mul(K).rotate_left(29);
        }
        let mut b = [0u8; 8];
        b.iter_mut().zip(words.remainder()).for_each(|(d, s)| *d = *s);
        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(K).rotate_left(29);
        h = (h ^ part.len() as u64).wrapping_mul(K).rotate_left(29);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// One span read from a blob, borrowing its strings.
#[derive(Debug, Clone)]
pub(crate) struct SpanRef<'a> {
    pub(crate) span_id: u64,
    pub(crate) parent_id: u64,
    pub(crate) start: i64,
    pub(crate) duration: i64,
    pub(crate) error: i64,
    pub(crate) service: &'a str,
    pub(crate) name: &'a str,
    pub(crate) resource: &'a str,
    pub(crate) r#type: &'a str,
    meta: &'a [u8],
    meta_len: u64,
    metrics: &'a [u8],
    metrics_len: u64,
}

impl<'a> SpanRef<'a> {
    /// The string tags, in stored order.
    pub(crate) fn meta(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        let mut r = Reader { buf: self.meta };
        (0..self.meta_len).map_while(move |_| Some((r.str()?, r.str()?)))
    }

    /// The value of string tag `key` (the last one: a blob keeps a span's duplicate keys
    /// in order, and the later one wins, as in the span model).
    pub(crate) fn meta_get(&self, key: &str) -> Option<&'a str> {
        self.meta().filter(|(k, _)| *k == key).last().map(|(_, v)| v)
    }

    /// The numeric tags, in stored order.
    pub(crate) fn metrics(&self) -> impl Iterator<Item = (&'a str, f64)> + use<'a> {
        let mut r = Reader { buf: self.metrics };
        (0..self.metrics_len).map_while(move |_| Some((r.str()?, r.f64()?)))
    }
}

/// The spans of a blob, in stored order; stops at the first malformed record.
pub(crate) fn spans(blob: &[u8]) -> impl Iterator<Item = SpanRef<'_>> {
    let mut r = Reader { buf: blob };
    let mut prev: Option<[&str; 4]> = None;
    std::iter::from_fn(move || {
        if r.buf.is_empty() {
            return None;
        }
        let span = r.span(prev);
        match &span {
            Some(s) => prev = Some([s.service, s.name, s.resource, s.r#type]),
            None => r.buf = &[],
        }
        span
    })
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn u64_le(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn f64(&mut self) -> Option<f64> {
        Some(f64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first()?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn i64(&mut self) -> Option<i64> {
        let v = self.varint()?;
        Some(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// A string; `prev` is what a repeat (`t = 1`) stands for (none: a repeat is malformed).
    fn str_or(&mut self, prev: Option<&'a str>) -> Option<&'a str> {
        let t = self.varint()?;
        match t {
            1 => prev,
            t if t & 1 == 1 => KNOWN.get(usize::try_from((t - 3) / 2).ok()?).copied(),
            t => {
                let n = usize::try_from(t / 2).ok()?;
                std::str::from_utf8(self.take(n)?).ok()
            }
        }
    }

    fn str(&mut self) -> Option<&'a str> {
        self.str_or(None)
    }

    /// Skips `n` pairs of a string key and a value read by `value`; the bytes they took.
    fn pairs(&mut self, n: u64, value: impl Fn(&mut Self) -> Option<()>) -> Option<&'a [u8]> {
        let from = self.buf;
        for _ in 0..n {
            self.str()?;
            value(self)?;
        }
        from.get(..from.len() - self.buf.len())
    }

    /// One span; `prev`: the previous span's names in the blob.
    fn span(&mut self, prev: Option<[&'a str; 4]>) -> Option<SpanRef<'a>> {
        let span_id = self.u64_le()?;
        let parent_id = self.u64_le()?;
        let start = self.i64()?;
        let duration = self.i64()?;
        let error = self.i64()?;
        let p = |i: usize| prev.and_then(|p| p.get(i).copied());
        let service = self.str_or(p(0))?;
        let name = self.str_or(p(1))?;
        let resource = self.str_or(p(2))?;
        let r#type = self.str_or(p(3))?;
        let meta_len = self.varint()?;
        let meta = self.pairs(meta_len, |r| r.str().map(drop))?;
        let metrics_len = self.varint()?;
        let metrics = self.pairs(metrics_len, |r| r.take(8).map(drop))?;
        Some(SpanRef {
            span_id,
            parent_id,
            start,
            duration,
            error,
            service,
            name,
            resource,
            r#type,
            meta,
            meta_len,
            metrics,
            metrics_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: u64, start: i64) -> pb::Span {
        pb::Span {
            service: "shop".into(),
            name: "flask.request".into(),
            resource: "GET /cart ✓".into(),
            r#type: "web".into(),
            trace_id: 7,
            span_id: id,
            parent_id: u64::MAX,
            start,
            duration: 1 << 40,
            error: -1,
            meta: [("user.id", "u1"), ("", ""), ("quote", "a\"b\\c\n")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            metrics: [("_top_level", 1.0), ("neg", -0.5), ("nan", f64::NAN)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            ..pb::Span::default()
        }
    }

    #[test]
    fn spans_read_back_as_written_and_blobs_concatenate() {
        let (a, b) = (span(1, -5), span(2, i64::MAX));
        let mut blob = Vec::new();
        encode(&mut blob, &a, None);
        let mut second = Vec::new();
        encode(&mut second, &b, None);
        blob.extend_from_slice(&second);
        let read: Vec<SpanRef<'_>> = spans(&blob).collect();
        assert_eq!(read.len(), 2);
        for (r, s) in read.iter().zip([&a, &b]) {
            assert_eq!(
                (r.span_id, r.parent_id, r.start, r.duration, r.error),
                (s.span_id, s.parent_id, s.start, s.duration, i64::from(s.error))
            );
            assert_eq!(
                (r.service, r.name, r.resource, r.r#type),
                (&*s.service, &*s.name, &*s.resource, &*s.r#type)
            );
            let meta: std::collections::HashMap<String, String> =
                r.meta().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            assert_eq!(meta, s.meta);
            assert_eq!(r.meta_get("quote"), Some("a\"b\\c\n"));
            assert_eq!(r.meta_get("missing"), None);
            let metrics: Vec<(&str, f64)> = r.metrics().collect();
            assert_eq!(metrics.len(), 3);
            for (k, v) in metrics {
                let want = s.metrics[k];
                assert!(v == want || (v.is_nan() && want.is_nan()), "{k}");
            }
        }
    }

    #[test]
    fn filter_bits_are_stable_and_tell_key_from_value() {
        // Stored on disk: a changed hash would make stored traces unsearchable.
        assert_eq!(Filter::bits("", ""), (1, (1 << 17) | (1 << 54)));
        assert_eq!(Filter::bits("user.id", "u1"), (2, (1 << 23) | (1 << 37)));
        assert_ne!(Filter::bits("ab", "c"), Filter::bits("a", "bc"));
        let mut f = Filter::default();
        f.add_fields(&span(1, 0));
        for (k, v) in [(Filter::SERVICE, "shop"), ("user.id", "u1"), ("quote", "a\"b\\c\n")] {
            let (w, m) = Filter::bits(k, v);
            assert_eq!(f.0[w] & m, m, "{k}");
        }
        // 3 span fields and 3 tags: at most 12 bits.
        assert!(f.0.iter().map(|w| w.count_ones()).sum::<u32>() <= 12);
    }

    #[test]
    fn a_truncated_or_corrupt_blob_ends_the_spans_without_panicking() {
        let mut blob = Vec::new();
        encode(&mut blob, &span(1, 10), None);
        let one = blob.len();
        let first = span(1, 10);
        encode(&mut blob, &span(2, 20), Some(first.names()));
        for cut in 0..blob.len() {
            let read = spans(&blob[..cut]).count();
            assert_eq!(read, usize::from(cut >= one), "cut at {cut}");
        }
        // A string that is not UTF-8, a length past the end, a varint of 11 bytes.
        let mut bad = blob[..one].to_vec();
        let at = bad.windows(4).position(|w| w == b"shop").unwrap();
        bad[at] = 0xff;
        assert_eq!(spans(&bad).count(), 0);
        let mut long = vec![0u8; 16];
        long.extend([0xff; 11]);
        assert_eq!(spans(&long).count(), 0);
    }

    #[test]
    fn known_strings_and_repeated_names_are_references_and_read_back() {
        // Every built-in string is found (no two share a hash slot), nothing else is.
        for (i, k) in KNOWN.iter().enumerate() {
            assert_eq!(known(k), Some(i), "{k}");
        }
        for s in ["", "x", "GET ", "component2", "_dd.p.dmx", "flask-demo"] {
            assert_eq!(known(s), None, "{s}");
        }
        let mut a = span(1, 10);
        a.meta.insert("component".to_owned(), "flask".to_owned());
        a.meta.insert("span.kind".to_owned(), "server".to_owned());
        a.metrics.insert("_dd.measured".to_owned(), 1.0);
        let mut b = a.clone();
        b.span_id = 2;
        b.resource = "other".to_owned();
        let mut blob = Vec::new();
        encode(&mut blob, &a, None);
        let one = blob.len();
        encode(&mut blob, &b, Some(a.names()));
        // b: service and name repeat (1 byte each instead of 5 and 14), its resource does
        // not, its type ("web") is a built-in string either way (1 byte).
        let mut alone = Vec::new();
        encode(&mut alone, &b, None);
        assert_eq!(blob.len() - one, alone.len() - 4 - 13);
        assert_eq!(alone.windows(3).position(|w| w == b"web"), None);
        let read: Vec<SpanRef<'_>> = spans(&blob).collect();
        assert_eq!(read.len(), 2);
        assert_eq!(
            (read[1].service, read[1].name, read[1].resource, read[1].r#type),
            ("shop", "flask.request", "other", "web")
        );
        for (r, s) in read.iter().zip([&a, &b]) {
            let meta: std::collections::HashMap<String, String> =
                r.meta().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            assert_eq!(meta, s.meta);
            assert_eq!(r.meta_get("span.kind"), Some("server"));
            assert_eq!(r.metrics().filter(|(k, _)| *k == "_dd.measured").count(), 1);
        }
        // A repeat in a blob's first span, or in a tag, is malformed: the blob ends there.
        let mut bad = blob[..16].to_vec();
        bad.extend([0, 0, 0, 1]);
        assert_eq!(spans(&bad).count(), 0);
        // The second blob alone: its repeats have nothing to refer to.
        assert_eq!(spans(&blob[one..]).count(), 0);
    }

    #[test]
    fn the_pair_cache_gives_the_filter_bits() {
        let mut cache = PairCache::for_spans(3);
        let pairs: Vec<(String, String)> = (0..5000).map(|i| (format!("k{}", i % 7), format!("v{i}"))).collect();
        // Twice: misses, then hits (or misses where another pair took the slot).
        for _ in 0..2 {
            for (k, v) in &pairs {
                assert_eq!(cache.bits(k, v), Filter::bits(k, v), "{k}:{v}");
            }
        }
        // The same contents at other addresses, and empty strings.
        let copies = pairs.clone();
        for (k, v) in copies.iter().chain([&(String::new(), String::new())]) {
            assert_eq!(cache.bits(k, v), Filter::bits(k, v), "{k}:{v}");
        }
        // Copies at other addresses, all alive while the cache is (its precondition).
        let strings: Vec<&str> = KNOWN.iter().copied().chain(["flask-demo", "GET /"]).collect();
        let copies: Vec<String> = strings.iter().map(|s| (*s).to_owned()).collect();
        for (k, copy) in strings.iter().zip(&copies) {
            for s in [*k, k, copy.as_str(), copy.as_str()] {
                assert_eq!(cache.known(s), known(s), "{s}");
            }
        }
        let mut f = Filter::default();
        f.add_cached("user.id", "u1", &mut cache);
        let mut g = Filter::default();
        g.add("user.id", "u1");
        assert_eq!(f, g);
    }
}
