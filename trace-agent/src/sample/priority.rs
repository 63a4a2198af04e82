//! The priority sampler (spec 5.3, `prioritysampler.go`): it keeps what the tracer decided
//! (priority > 0) and closes the feedback loop, counting P0/P1 chunks per `(service, env)`
//! to compute the rates tracers receive in `rate_by_service`.

use std::collections::BTreeMap;

use super::catalog::ServiceCatalog;
use super::engine::{RateEngine, root_weight};
use crate::span::{Span, tag_set};

/// Root metric the agent writes with the rate it would have applied (old tracers).
pub const KEY_PRIORITY_RATE: &str = "_sampling_priority_rate_v1";
/// Root metric: the tracer applied the agent's rate.
pub const KEY_AGENT_RATE: &str = "_dd.agent_psr";
/// Root metric: the tracer applied a sampling rule's rate.
pub const KEY_RULE_RATE: &str = "_dd.rule_psr";

/// Counts chunks per service and env and decides by the tracer's priority.
#[derive(Debug, Clone)]
pub struct PrioritySampler {
    agent_env: String,
    engine: RateEngine,
    catalog: ServiceCatalog,
}

impl PrioritySampler {
    /// A sampler targeting `target_tps`, for an agent whose default env is `agent_env`.
    pub fn new(target_tps: f64, extra_rate: f64, agent_env: &str, max_catalog_entries: usize) -> Self {
        Self {
            agent_env: agent_env.to_owned(),
            engine: RateEngine::new(target_tps, extra_rate),
            catalog: ServiceCatalog::new(max_catalog_entries),
        }
    }

    /// Decides a chunk of priority `priority` (keep iff > 0). P0 and P1 chunks are counted
    /// with weight `root_weight + client_dropped_p0s_weight`; a kept true root without a rate
    /// metric gets `_sampling_priority_rate_v1`. Returns `(keep, rates_changed)`.
    pub fn sample(
        &mut self,
        now_secs: i64,
        priority: i32,
        root: &mut Span<'_>,
        tracer_env: &str,
        client_dropped_p0s_weight: f64,
    ) -> (bool, bool) {
        let keep = priority > 0;
        if !(0..=1).contains(&priority) {
            // User decisions (-1, 2) are outside what the feedback loop can act on.
            return (keep, false);
        }
        let env = if tracer_env.is_empty() {
            self.agent_env.as_str()
        } else {
            tracer_env
        };
        let sig = self.catalog.register(&root.service, env);
        let weight = root_weight(root) + client_dropped_p0s_weight as f32;
        let rotated = self.engine.count(now_secs, sig, weight);
        if keep && root.parent_id == 0 {
            let has_rate = [KEY_AGENT_RATE, KEY_RULE_RATE, KEY_PRIORITY_RATE]
                .iter()
                .any(|k| root.metric(k).is_some());
            if !has_rate {
                tag_set(&mut root.metrics, KEY_PRIORITY_RATE, self.engine.rate(sig));
            }
        }
        (keep, rotated)
    }

    /// The `rate_by_service` table for tracers (see [`ServiceCatalog::rates_by_service`]).
    pub fn rates_by_service(&mut self) -> BTreeMap<String, f64> {
        let engine = &self.engine;
        self.catalog.rates_by_service(
            &self.agent_env,
            |sig| engine.has_rate(sig).then(|| engine.rate(sig)),
            engine.default_rate(),
        )
    }

    /// The rate engine (for introspection).
    pub fn engine(&self) -> &RateEngine {
        &self.engine
    }

    /// The catalog (for introspection).
    pub fn catalog(&self) -> &ServiceCatalog {
        &self.catalog
    }

    /// Changes the target TPS (remote configuration).
    pub fn set_target_tps(&mut self, target_tps: f64) {
        self.engine.set_target_tps(target_tps);
    }
}
