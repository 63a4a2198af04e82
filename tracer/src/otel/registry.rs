//! Open bridge spans by span id, so a child started from an OpenTelemetry `Context` (which
//! only carries ids) joins its parent's trace state.
//!
//! A span registers the first time its OpenTelemetry span context is asked for (that is
//! how a span enters a `Context`) and leaves when it ends, so leaf spans never touch the
//! registry. Sharded by the high bits of the (random) span id; each shard is a small
//! uncontended mutex around a map with an identity hash.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{LazyLock, Mutex};

use crossbeam_utils::CachePadded;

use crate::span::{SpanContext, SpanId};

/// Open spans a shard holds at most; past it, spans are not registered (their children
/// then start a new local chunk of the same trace, as for a span of another process).
const SHARD_CAPACITY: usize = 64 * 1024;
const SHARDS: usize = 32;

#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A registered span: its context and its parent's id (to tell which of two current spans
/// is the inner one).
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) ctx: SpanContext,
    pub(crate) parent: SpanId,
}

type Shard = Mutex<HashMap<u64, Entry, BuildHasherDefault<IdHasher>>>;

struct Registry {
    shards: Vec<CachePadded<Shard>>,
}

static OPEN: LazyLock<Registry> = LazyLock::new(|| Registry {
    shards: (0..SHARDS).map(|_| CachePadded::new(Shard::default())).collect(),
});

fn shard(id: SpanId) -> Option<&'static Shard> {
    // High bits pick the shard, so the map's buckets (low bits) stay spread.
    let i = (id.to_u64() >> 59) as usize % SHARDS;
    OPEN.shards.get(i).map(|s| &**s)
}

/// Registers an open span; `false` when its shard is full.
pub(crate) fn insert(ctx: SpanContext, parent: SpanId) -> bool {
    let Some(shard) = shard(ctx.span_id) else {
        return false;
    };
    let mut map = match shard.lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    if map.len() >= SHARD_CAPACITY {
        return false;
    }
    map.insert(ctx.span_id.to_u64(), Entry { ctx, parent });
    true
}

/// Unregisters a span that ended.
pub(crate) fn remove(id: SpanId) {
    if let Some(shard) = shard(id) {
        let mut map = match shard.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.remove(&id.to_u64());
    }
}

/// The registered span `id`, if open.
pub(crate) fn get(id: SpanId) -> Option<Entry> {
    let shard = shard(id)?;
    let map = match shard.lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    map.get(&id.to_u64()).cloned()
}

/// Whether the registered span `id` descends from `ancestor` (through registered spans,
/// at most 32 levels up).
pub(crate) fn descends_from(id: SpanId, ancestor: SpanId) -> bool {
    let mut parent = match get(id) {
        Some(e) => e.parent,
        None => return false,
    };
    for _ in 0..32 {
        if parent == ancestor {
            return true;
        }
        match get(parent) {
            Some(e) => parent = e.parent,
            None => return false,
        }
    }
    false
}
