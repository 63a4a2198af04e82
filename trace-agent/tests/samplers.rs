//! The samplers against simulated tracers on a simulated clock: the priority feedback loop
//! converges on the target TPS (tracers applying the rates the agent publishes through the
//! receiver's `RatesTable`), errors are kept at the errors sampler's TPS whatever the service
//! rate, traffic without priority is held at the target by the agent alone; and the sampler
//! configuration keys.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use trace_agent::config::{AgentConfig, ConfigError, Origin, load};
use trace_agent::sample::rates::{DEFAULT_KEY, RatesTable};
use trace_agent::sample::{
    ChunkContext, KEY_AGENT_RATE, KEY_ERRORS_RATE, Reason, SamplerName, Samplers, sample_by_rate,
};
use trace_agent::span::{PRIORITY_NONE, Span, Str, TraceChunk, TracerPayload};

const T0: u64 = 1_800_000_000;
const TRACES_PER_SEC: u64 = 1000;

/// splitmix64: deterministic, well-spread trace ids.
struct Ids(u64);

impl Ids {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn now(sec: u64, i: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0 + sec) + Duration::from_micros(i * 1_000_000 / TRACES_PER_SEC)
}

fn trace(trace_id: u64, priority: i32, error: bool, agent_rate: Option<f64>) -> TraceChunk<'static> {
    let mut root = Span {
        service: Str::from("web"),
        name: Str::from("flask.request"),
        resource: Str::from("GET /api"),
        trace_id,
        span_id: 1,
        error: i32::from(error),
        metrics: vec![(Str::from("_top_level"), 1.0)],
        ..Span::default()
    };
    if error {
        root.meta.push((Str::from("error.type"), Str::from("TimeoutError")));
    }
    if let Some(r) = agent_rate {
        root.metrics.push((Str::from(KEY_AGENT_RATE), r));
    }
    let child = Span {
        service: Str::from("web"),
        name: Str::from("postgres.query"),
        resource: Str::from("SELECT ?"),
        trace_id,
        span_id: 2,
        parent_id: 1,
        ..Span::default()
    };
    let mut c = TraceChunk::from_spans(vec![root, child]);
    c.priority = priority;
    c
}

/// A tracer's view of the agent rates: its service's key, else the default.
fn tracer_rate(table: &RatesTable) -> f64 {
    table
        .get("service:web,env:prod")
        .or_else(|| table.get(DEFAULT_KEY))
        .unwrap_or(1.0)
}

fn agent() -> Samplers {
    Samplers::new(&trace_agent::config::compile::samplers(&AgentConfig {
        default_env: "prod".to_owned(),
        ..AgentConfig::default()
    }))
}

#[test]
fn the_feedback_loop_holds_a_1000_tps_service_at_10_tps() {
    let mut samplers = agent();
    let table = RatesTable::new();
    let mut ids = Ids(1);
    let ctx = ChunkContext::new("prod", 0, 1);
    let mut kept_last_minute = 0u64;
    let mut rate_after_10s = None;
    for sec in 0..180 {
        if sec == 10 {
            rate_after_10s = Some(tracer_rate(&table));
        }
        for i in 0..TRACES_PER_SEC {
            let id = ids.next();
            let rate = tracer_rate(&table);
            let priority = i32::from(sample_by_rate(id, rate));
            let mut chunk = trace(id, priority, false, Some(rate));
            let outcome = samplers.sample(&mut chunk, &ctx, now(sec, i));
            assert_eq!(
                outcome.keep,
                priority == 1,
                "the agent keeps exactly what the tracer kept"
            );
            if sec >= 120 && outcome.keep {
                kept_last_minute += 1;
            }
            if let Some(rates) = samplers.take_rates_update() {
                table.replace_all(rates);
            }
        }
    }
    let rate = tracer_rate(&table);
    assert!((0.008..=0.012).contains(&rate), "fed-back rate {rate}");
    assert!(
        rate_after_10s.is_some_and(|r| r <= 0.012),
        "converged within 10 s: {rate_after_10s:?}"
    );
    let per_sec = kept_last_minute as f64 / 60.0;
    assert!((8.0..=12.0).contains(&per_sec), "kept {per_sec}/s");
    assert_eq!(table.get("service:web,env:"), Some(rate), "agent-env alias");
    let stats = samplers.stats();
    assert_eq!(stats.chunks_seen, 180 * TRACES_PER_SEC);
    assert_eq!(stats.chunks_seen, stats.chunks_kept + stats.chunks_dropped);
    assert!(stats.rate_updates >= 35, "one per 5 s bucket: {}", stats.rate_updates);
}

#[test]
fn client_dropped_p0s_count_in_the_feedback_loop() {
    // A tracer with client-side drop: it sends only its P1 chunks and the number of P0 traces
    // it dropped, one payload per second.
    let mut samplers = agent();
    let table = RatesTable::new();
    let mut ids = Ids(2);
    let mut kept_last_minute = 0usize;
    for sec in 0..180 {
        let rate = tracer_rate(&table);
        let mut chunks = Vec::new();
        let mut dropped = 0u64;
        for _ in 0..TRACES_PER_SEC {
            let id = ids.next();
            if sample_by_rate(id, rate) {
                chunks.push(trace(id, 1, false, Some(rate)));
            } else {
                dropped += 1;
            }
        }
        let mut payload = TracerPayload {
            env: Str::from("prod"),
            chunks,
            ..TracerPayload::default()
        };
        let result = samplers.sample_payload(&mut payload, dropped, now(sec, 0));
        assert_eq!(result.removed, 0, "P1 chunks are all forwarded");
        if sec >= 120 {
            kept_last_minute += result.kept;
        }
        if let Some(rates) = samplers.take_rates_update() {
            table.replace_all(rates);
        }
    }
    let rate = tracer_rate(&table);
    assert!((0.008..=0.012).contains(&rate), "fed-back rate {rate}");
    let per_sec = kept_last_minute as f64 / 60.0;
    assert!((8.0..=12.0).contains(&per_sec), "kept {per_sec}/s");
}

#[test]
fn errors_are_kept_at_the_error_tps_while_the_service_rate_is_near_zero() {
    let mut samplers = agent();
    let table = RatesTable::new();
    let mut ids = Ids(3);
    let ctx = ChunkContext::new("prod", 0, 1);
    let mut by_reason: HashMap<Reason, u64> = HashMap::new();
    let mut error_chunks_last_minute = 0u64;
    for sec in 0..180 {
        for i in 0..TRACES_PER_SEC {
            let id = ids.next();
            let rate = tracer_rate(&table);
            let priority = i32::from(sample_by_rate(id, rate));
            let error = i % 10 == 0; // 100 errors per second
            let mut chunk = trace(id, priority, error, Some(rate));
            let outcome = samplers.sample(&mut chunk, &ctx, now(sec, i));
            if outcome.reason == Reason::ErrorsKeep {
                assert_eq!(outcome.sampler, SamplerName::Error);
                let written = chunk.spans[0].metric(KEY_ERRORS_RATE);
                assert!(written.is_some_and(|r| sec < 120 || r < 0.2), "{written:?}");
            }
            if sec >= 120 {
                *by_reason.entry(outcome.reason).or_default() += 1;
                error_chunks_last_minute += u64::from(error);
            }
            if let Some(rates) = samplers.take_rates_update() {
                table.replace_all(rates);
            }
        }
    }
    let service_rate = tracer_rate(&table);
    assert!(service_rate < 0.015, "service rate {service_rate}");
    let errors_per_sec = by_reason.get(&Reason::ErrorsKeep).copied().unwrap_or(0) as f64 / 60.0;
    assert!(
        (8.0..=12.0).contains(&errors_per_sec),
        "errors kept {errors_per_sec}/s; {by_reason:?}"
    );
    let tracer_keeps = by_reason.get(&Reason::TracerKeep).copied().unwrap_or(0) as f64 / 60.0;
    assert!((8.0..=12.0).contains(&tracer_keeps), "tracer keeps {tracer_keeps}/s");
    let errors_dropped = by_reason.get(&Reason::ErrorsDrop).copied().unwrap_or(0);
    let errors_kept_by_priority =
        error_chunks_last_minute - errors_dropped - by_reason.get(&Reason::ErrorsKeep).copied().unwrap_or(0);
    assert!(errors_kept_by_priority < 120, "{errors_kept_by_priority}");
}

#[test]
fn traffic_without_priority_is_held_at_the_target_by_the_agent() {
    let mut samplers = agent();
    let mut ids = Ids(4);
    let ctx = ChunkContext::new("prod", 0, 1);
    let mut kept_last_minute = 0u64;
    for sec in 0..120 {
        for i in 0..TRACES_PER_SEC {
            let mut chunk = trace(ids.next(), PRIORITY_NONE, false, None);
            let outcome = samplers.sample(&mut chunk, &ctx, now(sec, i));
            if sec >= 60 && outcome.keep {
                assert_eq!(outcome.reason, Reason::NoPriorityKeep);
                kept_last_minute += 1;
            }
        }
    }
    let per_sec = kept_last_minute as f64 / 60.0;
    assert!((8.0..=12.0).contains(&per_sec), "kept {per_sec}/s");
}

fn yaml(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn sampler_keys_load_from_file_and_env_with_origins() {
    let defaults = load(None, &vars(&[])).unwrap().sampler;
    assert_eq!(defaults.errors_per_second, 10.0);
    assert!(!defaults.rare.enabled && !defaults.probabilistic.enabled);
    assert_eq!(defaults.rare.cooldown, Duration::from_secs(300));
    assert_eq!((defaults.rare.tps, defaults.rare.cardinality), (5.0, 200));
    assert_eq!(defaults.max_catalog_entries, 5000);

    let f = yaml(
        "apm_config:\n  target_traces_per_second: 20\n  errors_per_second: 3\n  enable_rare_sampler: true\n  rare_sampler:\n    tps: 7\n    cooldown: 1m30s\n    cardinality: 50\n  probabilistic_sampler:\n    enabled: true\n    sampling_percentage: 12.5\n    hash_seed: 42\n  max_catalog_entries: 100\n  error_tracking_standalone:\n    enabled: true\n",
    );
    let c = load(
        Some(f.path()),
        &vars(&[
            ("DD_APM_ERROR_TPS", "0"),
            ("DD_APM_PROBABILISTIC_SAMPLER_HASH_SEED", "7"),
        ]),
    )
    .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.max_traces_per_second, 20.0);
    let s = &c.sampler;
    assert_eq!(s.errors_per_second, 0.0);
    assert_eq!(
        c.origins["apm_config.errors_per_second"],
        Origin::Env("DD_APM_ERROR_TPS".into())
    );
    assert!(s.rare.enabled);
    assert_eq!(s.rare.tps, 7.0);
    assert_eq!(s.rare.cooldown, Duration::from_secs(90));
    assert_eq!(s.rare.cardinality, 50);
    assert!(s.probabilistic.enabled);
    assert_eq!(s.probabilistic.sampling_percentage, 12.5);
    assert_eq!(s.probabilistic.hash_seed, 7);
    assert_eq!(s.max_catalog_entries, 100);
    assert!(s.error_tracking_standalone);
    assert_eq!(
        c.origins["apm_config.rare_sampler.cooldown"],
        Origin::File(f.path().to_owned())
    );
    let described = c.describe();
    assert!(described.contains("apm_config.rare_sampler.cooldown"), "{described}");
    assert!(described.contains("env DD_APM_ERROR_TPS"), "{described}");

    let e = load(
        None,
        &vars(&[
            ("DD_APM_ENABLE_RARE_SAMPLER", "true"),
            ("DD_APM_PROBABILISTIC_SAMPLER_ENABLED", "1"),
            ("DD_APM_PROBABILISTIC_SAMPLER_SAMPLING_PERCENTAGE", "50"),
            ("DD_APM_ERROR_TRACKING_STANDALONE_ENABLED", "true"),
        ]),
    )
    .unwrap();
    assert!(e.sampler.rare.enabled && e.sampler.probabilistic.enabled && e.sampler.error_tracking_standalone);
    assert_eq!(e.sampler.probabilistic.sampling_percentage, 50.0);

    let old = load(
        Some(yaml("apm_config:\n  max_traces_per_second: 3\n").path()),
        &vars(&[]),
    )
    .unwrap();
    assert_eq!(old.max_traces_per_second, 3.0);
    assert!(
        old.warnings.iter().any(|w| w.contains("deprecated")),
        "{:?}",
        old.warnings
    );
}

#[test]
fn bad_sampler_values_are_errors_naming_the_key() {
    let cases = [
        (
            "apm_config:\n  probabilistic_sampler:\n    sampling_percentage: 150\n",
            "sampling_percentage",
        ),
        (
            "apm_config:\n  rare_sampler:\n    cooldown: 5 minutes\n",
            "rare_sampler.cooldown",
        ),
        (
            "apm_config:\n  rare_sampler:\n    cardinality: 0\n",
            "rare_sampler.cardinality",
        ),
        ("apm_config:\n  errors_per_second: -1\n", "errors_per_second"),
    ];
    for (text, key) in cases {
        let f = yaml(text);
        match load(Some(f.path()), &vars(&[])) {
            Err(ConfigError::Invalid { key: k, message }) => assert!(k.contains(key), "{k}: {message}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    match load(None, &vars(&[("DD_APM_ERROR_TPS", "ten")])) {
        Err(ConfigError::Env { var, .. }) => assert_eq!(var, "DD_APM_ERROR_TPS"),
        other => panic!("{other:?}"),
    }
}
