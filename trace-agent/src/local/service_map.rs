//! The service map: which service calls which, from the stored spans of the window.
//!
//! * An **edge** `from → to` is a span of service `to` whose parent span (same trace) is of
//!   service `from` (client → server across a propagated call), or a span of `from` with a
//!   `peer.service` tag naming `to` (a call to something untraced: a database, a cache, a
//!   third-party API) and no child span of `to`. Its hits, errors and p99 are those of the
//!   callee's spans (resp. the client spans), so they count **kept** traces.
//! * A **node** is a service: its hits, errors and p99 come from the stats (every request,
//!   before sampling) when it has any, else from the edges into it (an untraced peer).
//!
//! Work is linear in the spans of the window's traces (read from their chunks' blobs, a trace
//! at a time), capped at [`MAX_SPANS`] (then `truncated` is set).

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::{Connection, params};
use serde::Serialize;

use super::codec;
use super::query::{self, Window};
use crate::stats::sketch::Sketch;

/// Most spans read (whole traces: the trace that passes it is the last one read).
pub const MAX_SPANS: i64 = 2_000_000;

/// A service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// Service name.
    pub service: String,
    /// Hits.
    pub hits: u64,
    /// Errors.
    pub errors: u64,
    /// p99 latency, ns.
    pub p99_ns: Option<f64>,
    /// Seen only as a `peer.service` (no spans of its own).
    pub untraced: bool,
}

/// Calls from one service to another.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    /// Caller.
    pub from: String,
    /// Callee.
    pub to: String,
    /// Calls (stored spans).
    pub hits: u64,
    /// Failed calls.
    pub errors: u64,
    /// p99 of the calls, ns.
    pub p99_ns: Option<f64>,
    /// Found through `peer.service` rather than a child span.
    pub peer: bool,
}

/// The map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceMap {
    /// Services, by name.
    pub nodes: Vec<Node>,
    /// Calls, by (from, to).
    pub edges: Vec<Edge>,
    /// A cap was reached: some spans were not read.
    pub truncated: bool,
}

#[derive(Default)]
struct Acc {
    hits: u64,
    errors: u64,
    sketch: Sketch,
    peer: bool,
}

impl Acc {
    fn add(&mut self, duration: i64, error: bool) {
        self.hits += 1;
        self.errors += u64::from(error);
        let _ = self.sketch.add(duration.max(0) as f64);
    }
}

/// The map of the window ending at `now_ns`.
///
/// # Errors
/// A SQLite error.
pub fn service_map(conn: &Connection, now_ns: i64, window: Window) -> rusqlite::Result<ServiceMap> {
    let from = now_ns.saturating_sub(i64::try_from(window.duration().as_nanos()).unwrap_or(i64::MAX));
    let to = now_ns.saturating_add(60_000_000_000);
    let mut edges: BTreeMap<(String, String), Acc> = BTreeMap::new();
    let mut read = 0i64;
    let mut truncated = false;
    {
        // The window's traces, in index order (start, then id): a trace's chunks come together.
        let mut stmt = conn.prepare_cached(
            "SELECT t.trace_id, c.spans FROM traces t JOIN chunks c ON c.trace_id = t.trace_id \
             WHERE t.start >= ?1 AND t.start < ?2 ORDER BY t.start, t.trace_id",
        )?;
        let mut rows = stmt.query(params![from, to])?;
        let mut trace: Option<i64> = None;
        let mut blobs: Vec<Vec<u8>> = Vec::new();
        loop {
            let row = rows.next()?;
            let id = row.map(|r| r.get::<_, i64>(0)).transpose()?;
            if id != trace && !blobs.is_empty() {
                read += trace_edges(&blobs, from, to, &mut edges);
                blobs.clear();
                if read >= MAX_SPANS {
                    truncated = true;
                    break;
                }
            }
            let Some(r) = row else { break };
            trace = id;
            blobs.push(r.get(1)?);
        }
    }
    let mut nodes: BTreeMap<String, Node> = query::services(conn, now_ns, window)?
        .into_iter()
        .map(|s| {
            (
                s.service.clone(),
                Node {
                    service: s.service,
                    hits: s.figures.hits,
                    errors: s.figures.errors,
                    p99_ns: s.figures.latency.p99,
                    untraced: false,
                },
            )
        })
        .collect();
    let mut into: BTreeMap<String, Acc> = BTreeMap::new();
    for ((caller, callee), acc) in &edges {
        nodes.entry(caller.clone()).or_insert_with(|| Node {
            service: caller.clone(),
            hits: 0,
            errors: 0,
            p99_ns: None,
            untraced: false,
        });
        if !nodes.contains_key(callee) {
            let i = into.entry(callee.clone()).or_default();
            i.hits += acc.hits;
            i.errors += acc.errors;
            let _ = i.sketch.merge(&acc.sketch);
            i.peer |= acc.peer;
        }
    }
    for (service, acc) in into {
        nodes.insert(
            service.clone(),
            Node {
                service,
                hits: acc.hits,
                errors: acc.errors,
                p99_ns: acc.sketch.quantile(0.99),
                untraced: acc.peer,
            },
        );
    }
    Ok(ServiceMap {
        nodes: nodes.into_values().collect(),
        edges: edges
            .into_iter()
            .map(|((from, to), acc)| Edge {
                from,
                to,
                hits: acc.hits,
                errors: acc.errors,
                p99_ns: acc.sketch.quantile(0.99),
                peer: acc.peer,
            })
            .collect(),
        truncated,
    })
}

/// Adds the edges of one trace (its chunks' blobs) to `edges`: each span started in
/// `[from, to)` whose parent is of another service, and each span with a `peer.service` naming
/// another service that has no child span of that service. Returns the spans read.
fn trace_edges(blobs: &[Vec<u8>], from: i64, to: i64, edges: &mut BTreeMap<(String, String), Acc>) -> i64 {
    let spans: Vec<codec::SpanRef<'_>> = blobs.iter().flat_map(|b| codec::spans(b)).collect();
    let by_id: HashMap<u64, usize> = spans.iter().enumerate().map(|(i, s)| (s.span_id, i)).collect();
    let children: HashSet<(u64, &str)> = spans.iter().map(|k| (k.parent_id, k.service)).collect();
    for s in spans.iter().filter(|s| s.start >= from && s.start < to) {
        if s.parent_id != 0
            && let Some(p) = by_id.get(&s.parent_id).and_then(|&i| spans.get(i))
            && p.service != s.service
        {
            let acc = edges.entry((p.service.to_owned(), s.service.to_owned())).or_default();
            acc.add(s.duration, s.error != 0);
        }
        if let Some(peer) = s.meta_get("peer.service")
            && !peer.is_empty()
            && peer != s.service
            && !children.contains(&(s.span_id, peer))
        {
            let acc = edges.entry((s.service.to_owned(), peer.to_owned())).or_default();
            acc.add(s.duration, s.error != 0);
            acc.peer = true;
        }
    }
    spans.len() as i64
}

/// Columns of a left-to-right layout: callers left of callees (longest path from a node
/// nobody calls; cycles are cut), services of a column by name. Pure.
pub fn layout(map: &ServiceMap) -> Vec<Vec<String>> {
    let names: Vec<&str> = map.nodes.iter().map(|n| n.service.as_str()).collect();
    let mut depth: BTreeMap<&str, usize> = names.iter().map(|n| (*n, 0)).collect();
    // Bellman-Ford style relaxation, at most |nodes| rounds: cycles stop growing there.
    for _ in 0..names.len() {
        let mut changed = false;
        for e in &map.edges {
            let d = depth.get(e.from.as_str()).copied().unwrap_or(0) + 1;
            if let Some(t) = depth.get_mut(e.to.as_str())
                && *t < d
                && d < names.len()
            {
                *t = d;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let cols = depth.values().copied().max().map_or(0, |m| m + 1);
    let mut out = vec![Vec::new(); cols];
    for (name, d) in depth {
        if let Some(c) = out.get_mut(d) {
            c.push(name.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(from: &str, to: &str) -> Edge {
        Edge {
            from: from.to_owned(),
            to: to.to_owned(),
            hits: 1,
            errors: 0,
            p99_ns: None,
            peer: false,
        }
    }

    fn node(s: &str) -> Node {
        Node {
            service: s.to_owned(),
            hits: 0,
            errors: 0,
            p99_ns: None,
            untraced: false,
        }
    }

    #[test]
    fn layout_puts_callers_left_and_survives_cycles() {
        let map = ServiceMap {
            nodes: ["api", "db", "web", "cache", "lonely"].into_iter().map(node).collect(),
            edges: vec![
                edge("web", "api"),
                edge("api", "db"),
                edge("web", "cache"),
                edge("api", "cache"),
            ],
            truncated: false,
        };
        assert_eq!(
            layout(&map),
            vec![vec!["lonely", "web"], vec!["api"], vec!["cache", "db"]]
        );
        let cyclic = ServiceMap {
            nodes: ["a", "b"].into_iter().map(node).collect(),
            edges: vec![edge("a", "b"), edge("b", "a")],
            truncated: false,
        };
        let cols = layout(&cyclic);
        assert_eq!(cols.iter().map(Vec::len).sum::<usize>(), 2, "{cols:?}");
    }
}
