//! Latency sketches received by an intake or a test agent, checked against the exact durations
//! that were sent (the 1 % relative accuracy DDSketch promises).

use std::time::{Duration, Instant};

use trace_agent::stats::sketch::Sketch;

/// The stats tests' workload, one server span a request: requests alternate between `GET /cart`
/// and `POST /pay`; every 10th `POST /pay` fails; the durations (1 to 100 ms) are distinct.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckoutRequest {
    pub(crate) resource: &'static str,
    pub(crate) fails: bool,
    pub(crate) duration: Duration,
}

impl CheckoutRequest {
    /// Request number `i`.
    pub(crate) fn nth(i: u64) -> Self {
        let resource = if i % 2 == 0 { "GET /cart" } else { "POST /pay" };
        Self {
            resource,
            fails: resource == "POST /pay" && i % 10 == 1,
            duration: Duration::from_micros(1000 + 997 * (i % 100) + i),
        }
    }

    /// Ends its server `span` (an error when the request fails) `duration` after `start`, and
    /// adds the duration, as sketches record it, to the (ok, error) lists of `sent`.
    pub(crate) fn finish(&self, mut span: tracer::Span, start: Instant, sent: &mut (Vec<f64>, Vec<f64>)) {
        if self.fails {
            span.set_error_tags("PaymentDeclined", "card declined", "");
        }
        span.finish_at(start + self.duration);
        let (ok, err) = sent;
        if self.fails { err } else { ok }.push(recorded(self.duration.as_nanos() as i64));
    }

    /// Its server span, `http.request` of type `web`, not started yet.
    pub(crate) fn span(&self, tracer: &tracer::Tracer) -> tracer::SpanBuilder {
        tracer
            .span("http.request")
            .resource(self.resource)
            .span_type("web")
            .tag("span.kind", "server")
    }
}

/// Stats summed over payloads for one key: hits, errors, top-level hits, and the ok / error
/// sketches merged.
#[derive(Default, Debug)]
pub(crate) struct Sums {
    pub(crate) hits: u64,
    pub(crate) errors: u64,
    pub(crate) top_level_hits: u64,
    pub(crate) ok: Option<Sketch>,
    pub(crate) err: Option<Sketch>,
}

impl Sums {
    /// Checks the summed stats of `resource` against what was `sent` (ok, error durations):
    /// every request counted once as a hit and as top level, the failures as errors, and the
    /// sketches ([`check_sketches`]).
    pub(crate) fn check(&self, resource: &str, sent: &(Vec<f64>, Vec<f64>)) {
        let n = (sent.0.len() + sent.1.len()) as u64;
        assert_eq!(
            (self.hits, self.errors, self.top_level_hits),
            (n, sent.1.len() as u64, n),
            "{resource}"
        );
        check_sketches(resource, self.ok.as_ref(), self.err.as_ref(), sent);
    }
}

/// Merges the encoded sketch `bytes` into `into` (nothing for an absent or empty sketch).
pub(crate) fn merge(into: &mut Option<Sketch>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let s = Sketch::decode(bytes).expect("the sketch decodes with the agent's decoder");
    if s.is_empty() {
        return;
    }
    match into {
        Some(m) => m.merge(&s).expect("same mapping"),
        None => *into = Some(s),
    }
}

/// A duration as every Datadog agent and tracer puts it into a latency sketch: truncated to a
/// 10-bit mantissa (at most 0.2 % lower). The 1 % guarantee of the sketch is relative to this.
pub(crate) fn recorded(ns: i64) -> f64 {
    trace_agent::stats::truncate_duration(ns)
}

/// The sample at rank `q × (n − 1)` of `sorted` (the DDSketch rank convention).
pub(crate) fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
}

pub(crate) fn assert_within_1pct(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= want * 0.01,
        "{what}: sketch says {got}, exact is {want} ({:.3}% off)",
        (got - want).abs() / want * 100.0
    );
}

/// Checks merged sketches against the exact durations `sent` (ok, error) of `resource`: the
/// ok count and its quantiles 0, 0.5, 0.9, 0.99 and 1; the error count and median when there
/// are errors.
pub(crate) fn check_sketches(resource: &str, ok: Option<&Sketch>, err: Option<&Sketch>, sent: &(Vec<f64>, Vec<f64>)) {
    let (mut want_ok, mut want_err) = sent.clone();
    want_ok.sort_by(f64::total_cmp);
    want_err.sort_by(f64::total_cmp);
    let ok = ok.unwrap_or_else(|| panic!("{resource}: no ok sketch"));
    assert_eq!(ok.count() as usize, want_ok.len(), "{resource}");
    for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
        assert_within_1pct(
            &format!("{resource} ok q{q}"),
            ok.quantile(q).unwrap(),
            exact_quantile(&want_ok, q),
        );
    }
    if !want_err.is_empty() {
        let err = err.unwrap_or_else(|| panic!("{resource}: no error sketch"));
        assert_eq!(err.count() as usize, want_err.len(), "{resource}");
        assert_within_1pct(
            &format!("{resource} error p50"),
            err.quantile(0.5).unwrap(),
            exact_quantile(&want_err, 0.5),
        );
    }
}
