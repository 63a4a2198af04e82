//! The per-payload caches of the encoder (see the [parent module](super)): the tags the
//! worker adds, encoded once per combination ([`Standard`]), the encoded literal tags of
//! the last span of each shape ([`MetaMemo`]) and the v0.5 head of the last span of each
//! name and resource ([`HeadMemo`]).

use smallvec::SmallVec;

use super::table::{StringTable, Text};
use super::{EncodeContext, Out};
use crate::sampling::SamplingDecision;
use crate::span::{SpanData, Str};

/// The caches of one payload's encoder.
#[derive(Debug, Default)]
pub(super) struct Caches {
    pub(super) standard: Standard,
    pub(super) meta: [MetaMemo; MetaMemo::SLOTS],
    pub(super) head: [HeadMemo; HeadMemo::SLOTS],
}

/// The own meta of the last span encoded with a given list of literal tags (keys and
/// values all `&'static str`, whose addresses never hold other text): the next span with
/// the same literals, in the same order, copies its encoded bytes (string-table indices
/// in v0.5, which hold for the payload the memo lives in) instead of looking up each
/// string and checking for repeated and reserved keys again.
#[derive(Debug, Default)]
pub(super) struct MetaMemo {
    /// Address and length of each key and value.
    pub(super) literals: Vec<[usize; 4]>,
    /// The encoded entries.
    pub(super) bytes: Vec<u8>,
    /// Entries in `bytes` (a repeated key counts once).
    pub(super) own: usize,
    /// The reserved keys among them.
    pub(super) bits: u16,
}

impl MetaMemo {
    /// Memos per payload, a few shapes of spans interleaving (a tree's spans).
    pub(super) const SLOTS: usize = 4;

    /// Where the memo of `meta`'s shape lives: by its length and first key.
    #[inline]
    pub(super) fn slot(meta: &[(Str, Str)]) -> usize {
        let first = meta.first().map_or(0, |(k, _)| k.as_str().as_ptr() as usize);
        (first.wrapping_mul(0x9e37_79b9_7f4a_7c15_u64 as usize) >> 40).wrapping_add(meta.len()) % Self::SLOTS
    }

    pub(super) fn literal(s: &Str) -> Option<(usize, usize)> {
        s.as_static().map(|t| (t.as_ptr() as usize, t.len()))
    }

    /// Where `s`'s text is. Equal to a remembered literal's only if `s` is that literal:
    /// no other string can be at a `&'static str`'s address.
    #[inline]
    pub(super) fn at(s: &Str) -> (usize, usize) {
        (s.as_str().as_ptr() as usize, s.len())
    }

    /// Whether `meta` is the list this memo remembers (never an empty one).
    #[inline]
    pub(super) fn matches(&self, meta: &[(Str, Str)]) -> bool {
        !meta.is_empty()
            && self.literals.len() == meta.len()
            && meta
                .iter()
                .zip(&self.literals)
                .all(|((k, v), m)| Self::at(k) == (m[0], m[1]) && Self::at(v) == (m[2], m[3]))
    }

    /// Remembers `meta`, encoded as `bytes`, when it is all literals.
    pub(super) fn remember(&mut self, meta: &[(Str, Str)], bytes: &[u8], own: usize, bits: u16) {
        self.literals.clear();
        for (k, v) in meta {
            match (Self::literal(k), Self::literal(v)) {
                (Some(k), Some(v)) => self.literals.push([k.0, k.1, v.0, v.1]),
                _ => {
                    self.literals.clear();
                    return;
                }
            }
        }
        self.bytes.clear();
        self.bytes.extend_from_slice(bytes);
        self.own = own;
        self.bits = bits;
    }
}

/// Whether `t` is the text of `s` (by address first: the service is usually the
/// tracer's own string).
#[inline]
pub(super) fn same_text(t: Text<'_>, s: &Str) -> bool {
    let (a, b) = (t.as_str(), s.as_str());
    std::ptr::eq(a, b) || a == b
}

/// The tags and metrics the worker adds to most spans with the same key and value in many
/// spans (`env`, `version`, `language`, `runtime-id`, `_dd.p.dm`; `_dd.top_level`,
/// `process_id`, `_sampling_priority_v1`), encoded once per payload at their first use
/// (v0.5: as string-table indices, which hold for that payload only), and so is each
/// combination of them a span gets: a span copies one run of bytes for its meta and one
/// for its metrics instead of looking up two strings per entry.
#[derive(Debug)]
pub(super) struct Standard {
    pub(super) bytes: Vec<u8>,
    /// Where each entry's key and value are in `bytes`, once made.
    pub(super) at: [Option<(usize, usize)>; Standard::COUNT],
    /// Where each combination of entries (a bit each) is in `bytes`, once made: meta
    /// combinations first, then metrics ones (see [`Standard::combo`]).
    pub(super) combos: [Option<(usize, usize)>; Standard::COMBOS],
    /// The decision and trace id high bits whose `_dd.p.dm`, priority and `_dd.p.tid`
    /// the entries hold.
    pub(super) decision: (usize, i8, u64),
}

/// What the chunk-level entries of [`Standard`] say: the decision and `_dd.p.tid`.
#[derive(Clone, Copy)]
pub(super) struct Decided<'a> {
    pub(super) decision: SamplingDecision,
    pub(super) tid: Option<&'a (u64, std::sync::Arc<str>)>,
}

impl Default for Standard {
    fn default() -> Self {
        Self {
            bytes: Vec::new(),
            at: [None; Self::COUNT],
            combos: [None; Self::COMBOS],
            decision: (0, 0, 0),
        }
    }
}

impl Standard {
    // Meta entries (bits 0 to 5), then metrics entries.
    pub(super) const ENV: usize = 0;
    pub(super) const VERSION: usize = 1;
    pub(super) const LANGUAGE: usize = 2;
    pub(super) const RUNTIME_ID: usize = 3;
    pub(super) const DM: usize = 4;
    pub(super) const TID: usize = 5;
    pub(super) const TOP_LEVEL: usize = 6;
    pub(super) const PROCESS_ID: usize = 7;
    pub(super) const PRIORITY: usize = 8;
    pub(super) const COUNT: usize = 9;
    pub(super) const META: usize = 6;
    /// Meta combinations, then metrics ones.
    pub(super) const COMBOS: usize = (1 << Self::META) + (1 << (Self::COUNT - Self::META));
    /// The entries that depend on the chunk's decision and trace id.
    pub(super) const DECIDED: u16 = (1 << Self::DM) | (1 << Self::TID) | (1 << Self::PRIORITY);

    /// Where combination `mask` (of meta entries only, or of metrics entries only) is.
    pub(super) fn combo(mask: u16) -> usize {
        let mask = usize::from(mask);
        if mask < 1 << Self::META {
            mask
        } else {
            (1 << Self::META) + (mask >> Self::META)
        }
    }
    /// Bytes made before the entries are made afresh (a payload whose decisions keep
    /// changing).
    pub(super) const MAX_BYTES: usize = 4096;

    /// Appends the entries whose bits are set in `mask` to `out`; `decision` gives the
    /// values of `_dd.p.dm` and `_sampling_priority_v1`.
    #[inline]
    pub(super) fn write(&mut self, out: &mut Out<'_>, mask: u16, ctx: &EncodeContext, decided: Decided<'_>) {
        if mask == 0 {
            return;
        }
        if mask & Self::DECIDED != 0 {
            let d = decided.decision;
            let key = (
                d.mechanism.as_dm().as_ptr() as usize,
                d.priority,
                decided.tid.map_or(0, |t| t.0),
            );
            if key != self.decision {
                self.forget_decision(key);
            }
        }
        let range = match self.combos.get(Self::combo(mask)).copied().flatten() {
            Some(r) => r,
            None => self.make_combo(mask, out.table.as_deref_mut(), ctx, decided),
        };
        if let Some(bytes) = self.bytes.get(range.0..range.1) {
            out.buf.extend_from_slice(bytes);
        }
    }

    /// Forgets the entries (and combinations) that depend on the decision.
    #[cold]
    pub(super) fn forget_decision(&mut self, key: (usize, i8, u64)) {
        self.decision = key;
        if self.bytes.len() > Self::MAX_BYTES {
            *self = Self {
                decision: key,
                ..Self::default()
            };
            return;
        }
        let metrics = (1..1 << (Self::COUNT - Self::META)).map(|m| m << Self::META);
        for mask in (0..1 << Self::META).chain(metrics) {
            if mask & Self::DECIDED != 0 {
                if let Some(combo) = self.combos.get_mut(Self::combo(mask)) {
                    *combo = None;
                }
            }
        }
        for i in [Self::DM, Self::TID, Self::PRIORITY] {
            if let Some(at) = self.at.get_mut(i) {
                *at = None;
            }
        }
    }

    /// Encodes the entries of `mask` one after the other.
    #[cold]
    pub(super) fn make_combo(
        &mut self,
        mask: u16,
        mut table: Option<&mut StringTable>,
        ctx: &EncodeContext,
        decided: Decided<'_>,
    ) -> (usize, usize) {
        let entries = || (0..Self::COUNT).filter(move |i| mask & (1 << i) != 0);
        let ranges: SmallVec<[(usize, usize); Self::COUNT]> = entries()
            .map(|i| match self.at.get(i).copied().flatten() {
                Some(r) => r,
                None => self.make(i, table.as_deref_mut(), ctx, decided),
            })
            .collect();
        let from = self.bytes.len();
        for (a, b) in ranges {
            self.bytes.extend_from_within(a..b);
        }
        let range = (from, self.bytes.len());
        if let Some(combo) = self.combos.get_mut(Self::combo(mask)) {
            *combo = Some(range);
        }
        range
    }

    /// Encodes entry `i` (nothing if the context lacks its value, which callers do not
    /// ask for).
    pub(super) fn make(
        &mut self,
        i: usize,
        table: Option<&mut StringTable>,
        ctx: &EncodeContext,
        decided: Decided<'_>,
    ) -> (usize, usize) {
        let decision = decided.decision;
        let from = self.bytes.len();
        let mut out = Out {
            buf: &mut self.bytes,
            table,
        };
        let mut pair = |key: &'static str, value: Option<Text<'_>>| {
            if let Some(value) = value {
                out.string(Text::Static(key));
                out.string(value);
            }
        };
        match i {
            Self::ENV => pair("env", ctx.env.as_ref().map(Text::from)),
            Self::VERSION => pair("version", ctx.version.as_ref().map(Text::from)),
            Self::LANGUAGE => pair("language", Some(Text::Static("rust"))),
            Self::RUNTIME_ID => pair("runtime-id", Some(Text::from(&ctx.runtime_id))),
            Self::DM => pair("_dd.p.dm", Some(Text::Static(decision.mechanism.as_dm()))),
            Self::TID => pair("_dd.p.tid", decided.tid.map(|t| Text::Shared(&t.1))),
            Self::TOP_LEVEL => out.metric(Text::Static("_dd.top_level"), 1.0),
            Self::PROCESS_ID => out.metric(Text::Static("process_id"), ctx.process_id),
            Self::PRIORITY => out.metric(Text::Static("_sampling_priority_v1"), f64::from(decision.priority)),
            _ => {}
        }
        let range = (from, self.bytes.len());
        if let Some(slot) = self.at.get_mut(i) {
            *slot = Some(range);
        }
        range
    }
}

/// The v0.5 head of the last span encoded with a given operation name and resource: its service, name
/// and resource, when each is a literal (or the tracer's service, or the name as the
/// resource), and their string-table indices.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct HeadMemo {
    /// Address and length of the service (zero: the tracer's), name and resource (zero:
    /// the name).
    pub(super) literals: [(usize, usize); 3],
    pub(super) bytes: [u8; 16],
    pub(super) len: usize,
}

impl HeadMemo {
    /// (Direct-mapped by name: room for a few names without collisions.)
    pub(super) const SLOTS: usize = 16;

    /// The literals of `span`'s head, if they all are.
    #[inline]
    pub(super) fn literals(span: &SpanData) -> Option<[(usize, usize); 3]> {
        let lit = |s: &Str| s.as_static().map(|t| (t.as_ptr() as usize, t.len()));
        let service = match &span.service {
            None => (0, 0),
            Some(s) => lit(s)?,
        };
        let resource = match &span.resource {
            None => (0, 0),
            Some(s) => lit(s)?,
        };
        Some([service, lit(&span.name)?, resource])
    }

    #[inline]
    /// By name and resource: spans of one operation name with several resources (the
    /// OpenTelemetry bridge names every internal span `internal`) each keep theirs.
    pub(super) fn slot(literals: &[(usize, usize); 3]) -> usize {
        let [_, name, resource] = literals;
        let key = name.0 ^ resource.0.rotate_left(29);
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15_u64 as usize) >> 40) % Self::SLOTS
    }
}
