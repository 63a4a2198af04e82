//! The general keys of the table (see [`super::key`]): identity, receiver and its limits,
//! samplers, filters, obfuscation, local mode and stats. Their order is the order of
//! `trace-agent config`. The writers' keys are in `upstream.rs`, the OTLP receivers' and
//! proxies' in `ingest.rs`.

use std::path::PathBuf;
use std::time::Duration;

use super::Secret;
use super::key::{Key, Kind, Secrecy, Value};
use super::load::duration;

fn list(v: &[String]) -> String {
    format!("{v:?}")
}

fn words(v: &str, separators: &[char]) -> Vec<String> {
    v.split(separators)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn at_least_one(n: usize) -> Result<usize, String> {
    if n == 0 {
        return Err("must be at least 1".to_owned());
    }
    Ok(n)
}

fn at_least_one_byte(n: u64) -> Result<u64, String> {
    if n == 0 {
        return Err("must be at least 1 (bytes)".to_owned());
    }
    Ok(n)
}

fn traces_per_second(v: f64) -> Result<f64, String> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("{v} is not a number of traces per second >= 0"));
    }
    Ok(v)
}

/// A boolean obfuscation key: `apm_config.obfuscation.<path>`, `DD_APM_OBFUSCATION_<PATH>`.
macro_rules! obfuscation_flag {
    ($path:literal, $var:literal, $field:ident) => {
        Key::new(concat!("apm_config.obfuscation.", $path), Kind::Bool, |l, v| {
            l.config.obfuscation.$field = v.bool()?;
            Ok(())
        })
        .env(&[concat!("DD_APM_OBFUSCATION_", $var)])
        .show(|c| c.obfuscation.$field.to_string())
    };
}

/// The general keys.
pub(crate) static KEYS: &[Key] = &[
    Key::new("api_key", Kind::Text, |l, v| {
        l.config.api_key = Some(Secret::new(v.text()?));
        Ok(())
    })
    .env(&["DD_API_KEY"])
    .secret(Secrecy::Masked)
    .show(|c| {
        c.api_key
            .as_ref()
            .map_or_else(|| "(not set)".to_owned(), Secret::masked)
    }),
    Key::new("site", Kind::Text, |l, v| {
        l.config.site = v.text()?;
        Ok(())
    })
    .env(&["DD_SITE"])
    .example("datadoghq.eu")
    .show(|c| c.site.clone()),
    Key::new("hostname", Kind::Text, |l, v| {
        l.config.hostname = v.text()?;
        Ok(())
    })
    .env(&["DD_HOSTNAME"])
    .show(|c| c.hostname.clone()),
    Key::new("env", Kind::Text, |l, v| {
        l.scratch.top_env = Some(v.text()?);
        Ok(())
    })
    .env(&["DD_ENV"]),
    Key::new("apm_config.env", Kind::Text, |l, v| {
        l.scratch.apm_env = Some(v.text()?);
        Ok(())
    })
    .env(&["DD_APM_ENV"])
    .show(|c| c.default_env.clone()),
    Key::new("tags", Kind::List, |l, v| {
        l.config.tags = v.list()?;
        Ok(())
    })
    .env(&["DD_TAGS"])
    .parse_env(|v| Ok(Value::List(words(v, &[' ', ',']))))
    .example("[\"team:a\", \"tier:b\"]")
    .env_example("team:a tier:b")
    .show(|c| list(&c.tags)),
    Key::new("apm_config.enabled", Kind::Bool, |l, v| {
        l.config.enabled = v.bool()?;
        Ok(())
    })
    .env(&["DD_APM_ENABLED"])
    .example("false")
    .show(|c| c.enabled.to_string()),
    Key::new("apm_config.apm_non_local_traffic", Kind::Bool, |l, v| {
        l.scratch.non_local = Some(v.bool()?);
        Ok(())
    })
    .env(&["DD_APM_NON_LOCAL_TRAFFIC"]),
    Key::new("bind_host", Kind::Text, |l, v| {
        l.config.receiver_host = v.text()?;
        Ok(())
    })
    .env(&["DD_BIND_HOST"])
    .example("127.0.0.2")
    .show(|c| c.receiver_host.clone()),
    Key::new("apm_config.receiver_port", Kind::U16, |l, v| {
        l.config.receiver_port = v.int()?;
        Ok(())
    })
    .env(&["DD_APM_RECEIVER_PORT", "DD_RECEIVER_PORT"])
    .show(|c| c.receiver_port.to_string()),
    Key::new("apm_config.receiver_socket", Kind::Text, |l, v| {
        let v = v.text()?;
        if !v.is_empty() {
            l.config.receiver_socket = Some(PathBuf::from(v));
        }
        l.scratch.socket_set = true;
        Ok(())
    })
    .env(&["DD_APM_RECEIVER_SOCKET"])
    .example("/tmp/example-apm.socket")
    .show(|c| {
        c.receiver_socket
            .as_ref()
            .map_or_else(|| "(off)".to_owned(), |p| p.display().to_string())
    }),
    Key::new("apm_config.receiver_timeout", Kind::U64, |l, v| {
        let v = v.int()?;
        if v > 0 {
            l.config.receiver_timeout = Duration::from_secs(v);
        }
        Ok(())
    })
    .env(&["DD_APM_RECEIVER_TIMEOUT"])
    .show(|c| format!("{:?}", c.receiver_timeout)),
    Key::new("apm_config.max_payload_size", Kind::U64, |l, v| {
        let v = v.int()?;
        if v > 0 {
            l.config.max_payload_size = v;
        }
        Ok(())
    })
    .env(&["DD_APM_MAX_PAYLOAD_SIZE"])
    .show(|c| c.max_payload_size.to_string()),
    Key::new("apm_config.decoders", Kind::Usize, |l, v| {
        let v = v.int()?;
        if v > 0 {
            l.config.decoders = v;
        }
        Ok(())
    })
    .env(&["DD_APM_DECODERS"])
    .show(|c| c.decoders.to_string()),
    Key::new("apm_config.decoder_timeout", Kind::U64, |l, v| {
        let v = v.int()?;
        if v > 0 {
            l.config.decoder_timeout = Duration::from_millis(v);
        }
        Ok(())
    })
    .env(&["DD_APM_DECODER_TIMEOUT"])
    .show(|c| format!("{:?}", c.decoder_timeout)),
    Key::new("apm_config.max_connections", Kind::Usize, |l, v| {
        let v = v.int()?;
        if v > 0 {
            l.config.max_connections = v;
        }
        Ok(())
    })
    .env(&["DD_APM_MAX_CONNECTIONS"])
    .show(|c| c.max_connections.to_string()),
    Key::new("apm_config.connection_limit", Kind::Usize, |l, v| {
        l.config.connection_limit = v.int()?;
        Ok(())
    })
    .env(&["DD_APM_CONNECTION_LIMIT", "DD_CONNECTION_LIMIT"])
    .show(|c| c.connection_limit.to_string()),
    Key::new("apm_config.max_memory", Kind::F64, |l, v| {
        let v = v.float()?;
        if !(v.is_finite() && v >= 0.0) {
            return Err(format!("{v} is not a number of bytes >= 0"));
        }
        l.config.max_memory = v as u64;
        Ok(())
    })
    .env(&["DD_APM_MAX_MEMORY"])
    .show(|c| c.max_memory.to_string()),
    Key::new("apm_config.max_cpu_percent", Kind::F64, |l, v| {
        let v = v.float()?;
        if !(v.is_finite() && v >= 0.0) {
            return Err(format!("{v} is not a percentage >= 0"));
        }
        l.config.max_cpu_percent = v;
        Ok(())
    })
    .env(&["DD_APM_MAX_CPU_PERCENT"])
    .show(|c| c.max_cpu_percent.to_string()),
    Key::new("apm_config.max_spans_per_payload", Kind::Usize, |l, v| {
        l.config.max_spans_per_payload = at_least_one(v.int()?)?;
        Ok(())
    })
    .env(&["DD_APM_MAX_SPANS_PER_PAYLOAD"])
    .show(|c| c.max_spans_per_payload.to_string()),
    Key::new("apm_config.max_decoded_ratio", Kind::Usize, |l, v| {
        l.config.max_decoded_ratio = at_least_one(v.int()?)?;
        Ok(())
    })
    .env(&["DD_APM_MAX_DECODED_RATIO"])
    .show(|c| c.max_decoded_ratio.to_string()),
    Key::new("apm_config.receiver_max_buffered_bytes", Kind::U64, |l, v| {
        l.config.receiver_max_buffered_bytes = at_least_one_byte(v.int()?)?;
        Ok(())
    })
    .env(&["DD_APM_RECEIVER_MAX_BUFFERED_BYTES"])
    .show(|c| c.receiver_max_buffered_bytes.to_string()),
    Key::new("apm_config.pipeline_max_bytes", Kind::U64, |l, v| {
        l.config.pipeline_max_bytes = at_least_one_byte(v.int()?)?;
        Ok(())
    })
    .env(&["DD_APM_PIPELINE_MAX_BYTES"])
    .show(|c| c.pipeline_max_bytes.to_string()),
    Key::new("apm_config.extra_sample_rate", Kind::F64, |l, v| {
        l.config.extra_sample_rate = v.float()?;
        Ok(())
    })
    .example("0.5")
    .show(|c| c.extra_sample_rate.to_string()),
    Key::new("apm_config.max_traces_per_second", Kind::F64, |l, v| {
        l.config.max_traces_per_second = v.float()?;
        Ok(())
    })
    .aliases(&["apm_config.target_traces_per_second"])
    .env(&["DD_APM_TARGET_TPS", "DD_APM_MAX_TPS", "DD_MAX_TPS"])
    .show(|c| c.max_traces_per_second.to_string()),
    Key::new("apm_config.errors_per_second", Kind::F64, |l, v| {
        l.config.sampler.errors_per_second = traces_per_second(v.float()?)?;
        Ok(())
    })
    .env(&["DD_APM_ERROR_TPS"])
    .show(|c| c.sampler.errors_per_second.to_string()),
    Key::new("apm_config.enable_rare_sampler", Kind::Bool, |l, v| {
        l.config.sampler.rare.enabled = v.bool()?;
        Ok(())
    })
    .env(&["DD_APM_ENABLE_RARE_SAMPLER"])
    .show(|c| c.sampler.rare.enabled.to_string()),
    // The Go agent binds no environment variables for these three.
    Key::new("apm_config.rare_sampler.tps", Kind::F64, |l, v| {
        l.config.sampler.rare.tps = traces_per_second(v.float()?)?;
        Ok(())
    })
    .show(|c| c.sampler.rare.tps.to_string()),
    Key::new("apm_config.rare_sampler.cooldown", Kind::Duration, |l, v| {
        l.config.sampler.rare.cooldown = duration(&v.text()?)?;
        Ok(())
    })
    .show(|c| format!("{:?}", c.sampler.rare.cooldown)),
    Key::new("apm_config.rare_sampler.cardinality", Kind::Usize, |l, v| {
        l.config.sampler.rare.cardinality = at_least_one(v.int()?)?;
        Ok(())
    })
    .show(|c| c.sampler.rare.cardinality.to_string()),
    Key::new("apm_config.probabilistic_sampler.enabled", Kind::Bool, |l, v| {
        l.config.sampler.probabilistic.enabled = v.bool()?;
        Ok(())
    })
    .env(&["DD_APM_PROBABILISTIC_SAMPLER_ENABLED"])
    .show(|c| c.sampler.probabilistic.enabled.to_string()),
    Key::new(
        "apm_config.probabilistic_sampler.sampling_percentage",
        Kind::F32,
        |l, v| {
            let v = v.float()? as f32;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("{v} is not a percentage within 0..=100"));
            }
            l.config.sampler.probabilistic.sampling_percentage = v;
            Ok(())
        },
    )
    .env(&["DD_APM_PROBABILISTIC_SAMPLER_SAMPLING_PERCENTAGE"])
    .show(|c| c.sampler.probabilistic.sampling_percentage.to_string()),
    Key::new("apm_config.probabilistic_sampler.hash_seed", Kind::U32, |l, v| {
        l.config.sampler.probabilistic.hash_seed = v.int()?;
        Ok(())
    })
    .env(&["DD_APM_PROBABILISTIC_SAMPLER_HASH_SEED"])
    .show(|c| c.sampler.probabilistic.hash_seed.to_string()),
    Key::new("apm_config.max_catalog_entries", Kind::Usize, |l, v| {
        // 0 means the default, like the Go agent.
        let v: usize = v.int()?;
        l.config.sampler.max_catalog_entries = if v == 0 {
            crate::sample::DEFAULT_MAX_CATALOG_ENTRIES
        } else {
            v
        };
        Ok(())
    })
    .show(|c| c.sampler.max_catalog_entries.to_string()),
    Key::new("apm_config.error_tracking_standalone.enabled", Kind::Bool, |l, v| {
        l.config.sampler.error_tracking_standalone = v.bool()?;
        Ok(())
    })
    .env(&["DD_APM_ERROR_TRACKING_STANDALONE_ENABLED"])
    .show(|c| c.sampler.error_tracking_standalone.to_string()),
    Key::new("apm_config.ignore_resources", Kind::List, |l, v| {
        l.config.ignore_resources = v.list()?;
        Ok(())
    })
    .env(&["DD_APM_IGNORE_RESOURCES", "DD_IGNORE_RESOURCE"])
    .parse_env(|v| Ok(Value::List(crate::env::parse_csv(v))))
    .example("[\"GET /health\", \"b\"]")
    .env_example("GET /health,b")
    .show(|c| list(&c.ignore_resources)),
    Key::new("apm_config.filter_tags.require", Kind::List, |l, v| {
        l.config.filter_tags_require = v.list()?;
        Ok(())
    })
    .env(&["DD_APM_FILTER_TAGS_REQUIRE"])
    .empty_is_unset()
    .show(|c| list(&c.filter_tags_require)),
    Key::new("apm_config.filter_tags.reject", Kind::List, |l, v| {
        l.config.filter_tags_reject = v.list()?;
        Ok(())
    })
    .env(&["DD_APM_FILTER_TAGS_REJECT"])
    .empty_is_unset()
    .show(|c| list(&c.filter_tags_reject)),
    Key::new("apm_config.filter_tags_regex.require", Kind::List, |l, v| {
        l.config.filter_tags_regex_require = v.list()?;
        Ok(())
    })
    .env(&["DD_APM_FILTER_TAGS_REGEX_REQUIRE"])
    .empty_is_unset()
    .show(|c| list(&c.filter_tags_regex_require)),
    Key::new("apm_config.filter_tags_regex.reject", Kind::List, |l, v| {
        l.config.filter_tags_regex_reject = v.list()?;
        Ok(())
    })
    .env(&["DD_APM_FILTER_TAGS_REGEX_REJECT"])
    .empty_is_unset()
    .show(|c| list(&c.filter_tags_regex_reject)),
    Key::new("apm_config.replace_tags", Kind::ReplaceTags, |l, v| {
        let Value::ReplaceTags(rules) = v else {
            return Err(format!("internal: expected rules, got {v:?}"));
        };
        l.config.replace_tags = rules;
        Ok(())
    })
    .env(&["DD_APM_REPLACE_TAGS"])
    .parse_env(|v| {
        serde_json::from_str(v)
            .map(Value::ReplaceTags)
            .map_err(|e| format!("not a JSON list of {{name, pattern, repl}}: {e}"))
    })
    .example(r#"[{"name": "a", "pattern": "b", "repl": "c"}]"#)
    .show(|c| format!("{:?}", c.replace_tags)),
    Key::new("apm_config.global_tags", Kind::StrMap, |l, v| {
        l.config.global_tags = v.str_map()?;
        Ok(())
    })
    .show(|c| format!("{:?}", c.global_tags)),
    Key::new("apm_config.features", Kind::List, |l, v| {
        l.config.features = v.list()?;
        Ok(())
    })
    .env(&["DD_APM_FEATURES"])
    .parse_env(|v| Ok(Value::List(words(v, &[',', ' ']))))
    .example("[\"a\", \"b\"]")
    .env_example("a,b")
    .show(|c| list(&c.features)),
    obfuscation_flag!(
        "http.remove_query_string",
        "HTTP_REMOVE_QUERY_STRING",
        http_remove_query_string
    ),
    obfuscation_flag!(
        "http.remove_paths_with_digits",
        "HTTP_REMOVE_PATHS_WITH_DIGITS",
        http_remove_paths_with_digits
    ),
    obfuscation_flag!("redis.enabled", "REDIS_ENABLED", redis_enabled),
    obfuscation_flag!("redis.remove_all_args", "REDIS_REMOVE_ALL_ARGS", redis_remove_all_args),
    obfuscation_flag!("memcached.enabled", "MEMCACHED_ENABLED", memcached_enabled),
    obfuscation_flag!(
        "memcached.keep_command",
        "MEMCACHED_KEEP_COMMAND",
        memcached_keep_command
    ),
    obfuscation_flag!("credit_cards.enabled", "CREDIT_CARDS_ENABLED", credit_cards_enabled),
    obfuscation_flag!("credit_cards.luhn", "CREDIT_CARDS_LUHN", credit_cards_luhn),
    Key::new("apm_config.obfuscation.credit_cards.keep_values", Kind::List, |l, v| {
        l.config.obfuscation.credit_cards_keep_values = v.list()?;
        Ok(())
    })
    .env(&["DD_APM_OBFUSCATION_CREDIT_CARDS_KEEP_VALUES"])
    .show(|c| list(&c.obfuscation.credit_cards_keep_values)),
    obfuscation_flag!("remove_stack_traces", "REMOVE_STACK_TRACES", remove_stack_traces),
    obfuscation_flag!("mongodb.enabled", "MONGODB_ENABLED", mongodb_enabled),
    obfuscation_flag!("elasticsearch.enabled", "ELASTICSEARCH_ENABLED", elasticsearch_enabled),
    obfuscation_flag!("opensearch.enabled", "OPENSEARCH_ENABLED", opensearch_enabled),
    Key::new("apm_config.obfuscation.cache.enabled", Kind::Bool, |l, v| {
        l.config.obfuscation_cache_enabled = v.bool()?;
        Ok(())
    })
    .env(&["DD_APM_OBFUSCATION_CACHE_ENABLED"])
    .example("false")
    .show(|c| c.obfuscation_cache_enabled.to_string()),
    Key::new("apm_config.obfuscation.cache.max_size", Kind::Usize, |l, v| {
        l.config.obfuscation_cache_max_size = v.int()?;
        Ok(())
    })
    .env(&["DD_APM_OBFUSCATION_CACHE_MAX_SIZE"])
    .show(|c| c.obfuscation_cache_max_size.to_string()),
    Key::new("apm_config.local.enabled", Kind::Scalar, |l, v| {
        let v = v.text()?;
        l.config.local.mode = crate::local::LocalMode::parse(&v).map_err(|message| format!("{v:?}: {message}"))?;
        Ok(())
    })
    .env(&["DD_APM_LOCAL_ENABLED"])
    .example("false")
    .show(|c| c.local.mode.as_str().to_owned()),
    Key::new("apm_config.local.data_dir", Kind::Text, |l, v| {
        let v = v.text()?;
        if !v.is_empty() {
            l.config.local.data_dir = PathBuf::from(v);
        }
        Ok(())
    })
    .env(&["DD_APM_LOCAL_DATA_DIR"])
    .show(|c| c.local.data_dir.display().to_string()),
    Key::new("apm_config.local.retention", Kind::Scalar, |l, v| {
        l.config.local.retention = crate::local::parse_duration(&v.text()?)?;
        Ok(())
    })
    .env(&["DD_APM_LOCAL_RETENTION"])
    .example("24h")
    .show(|c| format!("{}s", c.local.retention.as_secs())),
    Key::new("apm_config.local.max_size_mb", Kind::U64, |l, v| {
        let v: u64 = v.int()?;
        if v == 0 {
            return Err("must be at least 1".to_owned());
        }
        l.config.local.max_size_bytes = v.saturating_mul(1_048_576);
        Ok(())
    })
    .env(&["DD_APM_LOCAL_MAX_SIZE_MB"])
    .show(|c| (c.local.max_size_bytes / 1_048_576).to_string()),
    Key::new("apm_config.local.web_port", Kind::U16, |l, v| {
        l.config.local.web_port = v.int()?;
        Ok(())
    })
    .env(&["DD_APM_LOCAL_WEB_PORT"])
    .show(|c| c.local.web_port.to_string()),
    Key::new("apm_config.local.monitors", Kind::Monitors, |l, v| {
        if let Value::Monitors(m) = v {
            l.scratch.monitors = m;
        }
        Ok(())
    })
    .show(|c| {
        let m = &c.local.monitors;
        format!(
            "{} monitors, {} webhooks, {} downtimes, every {}s",
            m.monitors.len(),
            m.webhooks.len(),
            m.downtimes.len(),
            m.interval.as_secs()
        )
    }),
    // Shown in the `apm_config.local.monitors` line.
    Key::new("apm_config.local.webhooks", Kind::StrMap, |l, v| {
        l.scratch.webhooks = v.str_map()?;
        Ok(())
    })
    .example("{a: \"http://127.0.0.1:9/hook\"}"),
    Key::new("apm_config.local.downtimes", Kind::Downtimes, |l, v| {
        if let Value::Downtimes(d) = v {
            l.scratch.downtimes = d;
        }
        Ok(())
    }),
    Key::new("apm_config.local.monitor_interval", Kind::Scalar, |l, v| {
        l.scratch.monitor_interval = Some(crate::local::parse_duration(&v.text()?)?);
        Ok(())
    })
    .example("5s"),
    Key::new("apm_config.compute_stats_by_span_kind", Kind::Bool, |l, v| {
        l.config.stats.compute_stats_by_span_kind = v.bool()?;
        Ok(())
    })
    .env(&["DD_APM_COMPUTE_STATS_BY_SPAN_KIND"])
    .show(|c| c.stats.compute_stats_by_span_kind.to_string()),
    Key::new("apm_config.peer_tags_aggregation", Kind::Bool, |l, v| {
        l.config.stats.peer_tags_aggregation = v.bool()?;
        Ok(())
    })
    .env(&["DD_APM_PEER_TAGS_AGGREGATION"])
    .show(|c| c.stats.peer_tags_aggregation.to_string()),
    Key::new("apm_config.peer_tags", Kind::List, |l, v| {
        l.config.stats.peer_tags = v.list()?;
        Ok(())
    })
    .env(&["DD_APM_PEER_TAGS"])
    .parse_env(|v| {
        serde_json::from_str(v)
            .map(Value::List)
            .map_err(|e| format!("not a JSON list of strings: {e}"))
    })
    .show(|c| list(&c.stats.peer_tags)),
    Key::new("apm_config.bucket_size_seconds", Kind::U64, |l, v| {
        let v: u64 = v.int()?;
        if v == 0 {
            return Err("must be at least 1".to_owned());
        }
        l.config.stats.bucket_size = Duration::from_secs(v);
        Ok(())
    })
    .show(|c| c.stats.bucket_size.as_secs().to_string()),
    Key::new("apm_config.stats_max_groups_per_bucket", Kind::Usize, |l, v| {
        let v = v.int()?;
        if v > 0 {
            l.config.stats.max_groups_per_bucket = v;
        }
        Ok(())
    })
    .env(&["DD_APM_STATS_MAX_GROUPS_PER_BUCKET"])
    .show(|c| c.stats.max_groups_per_bucket.to_string()),
];
