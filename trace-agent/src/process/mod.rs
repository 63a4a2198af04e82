//! The per-chunk processing stages of the Go agent (spec section 0), as pure functions of the
//! payload, the request's facts and the configuration. [`process_payload`] runs them in order.

pub mod filter;
pub mod normalize;
pub mod obfuscate;
pub mod sql_cache;
pub mod toplevel;
pub mod truncate;

use std::collections::BTreeMap;

use crate::span::{PRIORITY_NONE, Str, TracerPayload, tag_get, tag_set};
use filter::{FilterDrop, Filters, ReplaceRule};
use normalize::{NormalizeConfig, NormalizeDrop};
use obfuscate::ObfuscationConfig;

/// Everything the stages need from the configuration, compiled once.
#[derive(Debug, Clone, Default)]
pub struct ProcessConfig {
    /// Normalizer settings.
    pub normalize: NormalizeConfig,
    /// Obfuscation toggles.
    pub obfuscation: ObfuscationConfig,
    /// `ignore_resources`, `filter_tags`, `filter_tags_regex`.
    pub filters: Filters,
    /// `replace_tags`.
    pub replace_rules: Vec<ReplaceRule>,
    /// Agent global tags added to every span.
    pub global_tags: Vec<(String, String)>,
    /// Env for payloads without one (`apm_config.env`, normalized).
    pub default_env: String,
    /// SQL obfuscation cache (`apm_config.obfuscation.cache`), shared by every request.
    pub sql_cache: Option<std::sync::Arc<sql_cache::SqlCache>>,
}

/// Facts about the request that change processing.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFacts<'a> {
    /// `Datadog-Meta-Lang` (service fallback name).
    pub lang: &'a str,
    /// `Datadog-Client-Computed-Top-Level` was truthy.
    pub client_computed_top_level: bool,
}

/// Why a chunk was dropped during processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Fatal normalization error.
    Normalize(NormalizeDrop),
    /// `ignore_resources` or tag filters.
    Filter(FilterDrop),
}

impl DropReason {
    /// Name used in counters and `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normalize(n) => n.as_str(),
            Self::Filter(FilterDrop::IgnoredResource) => "ignore_resources",
            Self::Filter(FilterDrop::FilteredByTags) => "filter_tags",
        }
    }
}

/// Traces and spans dropped per reason by one call of [`process_payload`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessReport {
    /// `reason → (traces, spans)`.
    pub dropped: BTreeMap<DropReason, (u64, u64)>,
    /// Span fields the normalizer corrected.
    pub fixed: normalize::Fixes,
}

/// Runs the stages of spec section 0 (steps 1–9) on every chunk of `payload`; dropped chunks
/// are removed from it and counted in the report.
pub fn process_payload(
    payload: &mut TracerPayload<'_>,
    facts: &RequestFacts<'_>,
    config: &ProcessConfig,
    now_ns: i64,
) -> ProcessReport {
    let mut report = ProcessReport::default();
    let lang = if facts.lang.is_empty() {
        &*payload.language_name
    } else {
        facts.lang
    };
    let lang = lang.to_owned();
    let mut drop = |reason: DropReason, spans: usize| {
        let e = report.dropped.entry(reason).or_insert((0, 0));
        e.0 += 1;
        e.1 += spans as u64;
    };
    if !payload.env.is_empty()
        && let std::borrow::Cow::Owned(env) = normalize::normalize_tag_value(&payload.env)
    {
        payload.env = Str::from(env);
    }
    let mut chunks = std::mem::take(&mut payload.chunks);
    let mut fixed = normalize::Fixes::default();
    let mut seen = normalize::Seen::default();
    chunks.retain_mut(|chunk| {
        let n = chunk.spans.len();
        if let Err(reason) =
            normalize::normalize_chunk_seen(chunk, &lang, now_ns, &config.normalize, &mut fixed, &mut seen)
        {
            drop(DropReason::Normalize(reason), n);
            return false;
        }
        let Some(root_i) = toplevel::root_index(&chunk.spans) else {
            drop(DropReason::Normalize(NormalizeDrop::EmptyTrace), n);
            return false;
        };
        let Some(root) = chunk.spans.get(root_i) else {
            return false;
        };
        if chunk.priority == PRIORITY_NONE
            && let Some(p) = chunk.spans.iter().find_map(|s| s.metric("_sampling_priority_v1"))
        {
            chunk.priority = p as i32;
        }
        if chunk.origin.is_empty()
            && let Some(o) = tag_get(&root.meta, "_dd.origin")
        {
            chunk.origin = o.clone();
        }
        if let Some(dm) = tag_get(&root.meta, "_dd.p.dm") {
            let dm = dm.clone();
            chunk.tags.retain(|(k, _)| k.as_str() != "_dd.p.dm");
            chunk.tags.push((Str::from_static("_dd.p.dm"), dm));
        }
        if let Err(reason) = config.filters.check(root) {
            drop(DropReason::Filter(reason), n);
            return false;
        }
        for span in &mut chunk.spans {
            for (k, v) in &config.global_tags {
                if k == "_dd.origin" {
                    // A global origin is a chunk property, not a span tag.
                    chunk.origin = Str::from(v.clone());
                } else {
                    tag_set(&mut span.meta, k, Str::from(v.clone()));
                }
            }
            obfuscate::obfuscate_span_cached(span, &config.obfuscation, config.sql_cache.as_deref());
            truncate::truncate_span(span);
            if facts.client_computed_top_level {
                toplevel::copy_client_top_level(span);
            }
            filter::apply_replace_rules(&config.replace_rules, span);
        }
        if !facts.client_computed_top_level {
            toplevel::compute_top_level(&mut chunk.spans);
        }
        true
    });
    if let Some(root) = chunks
        .first()
        .and_then(|c| toplevel::root_index(&c.spans).and_then(|i| c.spans.get(i)))
    {
        if payload.env.is_empty()
            && let Some(env) = tag_get(&root.meta, "env")
        {
            payload.env = env.clone();
        }
        if payload.hostname.is_empty()
            && let Some(h) = tag_get(&root.meta, "_dd.hostname")
        {
            payload.hostname = h.clone();
        }
        if payload.app_version.is_empty()
            && let Some(v) = tag_get(&root.meta, "version")
        {
            payload.app_version = v.clone();
        }
    }
    if payload.env.is_empty() {
        payload.env = Str::from(config.default_env.clone());
    }
    payload.chunks = chunks;
    report.fixed = fixed;
    report
}
