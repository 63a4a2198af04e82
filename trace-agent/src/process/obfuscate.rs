//! Obfuscation by span type (spec section 4): SQL, Redis, memcached, HTTP URLs, credit cards,
//! and credentials in connection-string URLs. SQL, Redis and URL parsing reuse Datadog's
//! `libdd-trace-obfuscation` (tested against the Go agent's fixtures).

use libdd_trace_obfuscation::json::JsonObfuscator;
use libdd_trace_obfuscation::obfuscation_config::{DbmsKind, JsonObfuscatorConfig, SqlConfig};
use libdd_trace_obfuscation::{credit_cards, http, memcached, redis, sql};

use super::sql_cache::SqlCache;
use crate::span::{Span, Str, tag_remove};

/// Replacement resource for SQL that cannot be obfuscated.
pub const NON_PARSABLE_SQL: &str = "Non-parsable SQL query";

/// Obfuscation toggles (`apm_config.obfuscation.*`), with the Go agent's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObfuscationConfig {
    /// `http.remove_query_string`.
    pub http_remove_query_string: bool,
    /// `http.remove_paths_with_digits`.
    pub http_remove_paths_with_digits: bool,
    /// `redis.enabled`: redact `redis.raw_command` arguments.
    pub redis_enabled: bool,
    /// `redis.remove_all_args`.
    pub redis_remove_all_args: bool,
    /// `memcached.enabled`.
    pub memcached_enabled: bool,
    /// `memcached.keep_command`.
    pub memcached_keep_command: bool,
    /// `credit_cards.enabled`.
    pub credit_cards_enabled: bool,
    /// `credit_cards.luhn`.
    pub credit_cards_luhn: bool,
    /// `credit_cards.keep_values`: meta keys never checked.
    pub credit_cards_keep_values: Vec<String>,
    /// `remove_stack_traces`: `error.stack` → `?`.
    pub remove_stack_traces: bool,
    /// Strip `user:password@` from any URL-looking meta value (e.g. `mongodb://u:p@host`).
    pub url_credentials: bool,
    /// `mongodb.enabled`: JSON-obfuscate `mongodb.query`.
    pub mongodb_enabled: bool,
    /// `elasticsearch.enabled`: JSON-obfuscate `elasticsearch.body`.
    pub elasticsearch_enabled: bool,
    /// `opensearch.enabled`: JSON-obfuscate `opensearch.body`.
    pub opensearch_enabled: bool,
}

impl Default for ObfuscationConfig {
    fn default() -> Self {
        Self {
            http_remove_query_string: false,
            http_remove_paths_with_digits: false,
            redis_enabled: true,
            redis_remove_all_args: false,
            memcached_enabled: true,
            memcached_keep_command: false,
            credit_cards_enabled: true,
            credit_cards_luhn: false,
            credit_cards_keep_values: Vec::new(),
            remove_stack_traces: false,
            url_credentials: true,
            mongodb_enabled: true,
            elasticsearch_enabled: true,
            opensearch_enabled: true,
        }
    }
}

/// Meta keys whose values are never checked for credit-card numbers.
const CC_ALLOW_LIST: &[&str] = &[
    "_sample_rate",
    "_sampling_priority_v1",
    "account_id",
    "aws_account",
    "error",
    "error.msg",
    "error.type",
    "error.stack",
    "env",
    "graphql.field",
    "graphql.query",
    "graphql.type",
    "graphql.operation.name",
    "grpc.code",
    "grpc.method",
    "grpc.request",
    "http.status_code",
    "http.method",
    "runtime-id",
    "out.host",
    "out.port",
    "sampling.priority",
    "span.type",
    "span.name",
    "service.name",
    "service",
    "sql.query",
    "version",
    "databricks_job_id",
    "databricks_job_run_id",
    "databricks_task_run_id",
    "config.spark_app_startTime",
];

/// Whether `value` is a credit-card number by the agent's rules (cheap pre-check first).
pub fn is_credit_card(value: &str, luhn: bool) -> bool {
    let b = value.as_bytes();
    if b.len() < 12 || b.len() > 40 || !b.first().is_some_and(u8::is_ascii_digit) {
        return false;
    }
    if !b.iter().all(|c| c.is_ascii_digit() || *c == b' ' || *c == b'-') {
        return false;
    }
    credit_cards::is_card_number(value, luhn)
}

/// Removes `user:password@` from `scheme://user:password@host/...`; `None` when there is none.
pub fn strip_url_credentials(value: &str) -> Option<String> {
    let scheme_end = value.find("://")? + 3;
    let rest = value.get(scheme_end..)?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest.get(..authority_end)?.rfind('@')?;
    Some(format!("{}{}", value.get(..scheme_end)?, rest.get(at + 1..)?))
}

/// Whether `v` has `://` right after its first `:` and an `@` after it (cheap pre-check for
/// URL credentials: [`strip_url_credentials`] finds none without both).
fn has_scheme_separator(v: &str) -> bool {
    let b = v.as_bytes();
    // `a://b@c` is the shortest URL with credentials, and schemes start with a letter.
    b.len() >= 7
        && b.first().is_some_and(u8::is_ascii_alphabetic)
        && b.iter().position(|&c| c == b':').is_some_and(|i| {
            b.get(i + 1..i + 3) == Some(b"//") && b.get(i + 3..).is_some_and(|rest| rest.contains(&b'@'))
        })
}

fn set(field: &mut Str<'_>, value: String) {
    if value.as_str() != field.as_str() {
        *field = Str::from(value);
    }
}

/// The SQL dialect named by meta `db.type` (generic when absent or unknown).
fn dbms_of(span: &Span<'_>) -> DbmsKind {
    span.meta("db.type")
        .and_then(|t| DbmsKind::try_from(t).ok())
        .unwrap_or_default()
}

fn obfuscate_sql(query: &str, dbms: DbmsKind, cache: Option<&SqlCache>) -> Option<String> {
    let compute = |q: &str| sql::obfuscate_sql(q, &SqlConfig::default(), dbms).ok();
    match (cache, dbms) {
        (Some(c), DbmsKind::Generic) => c.get_or_compute(query, compute),
        // Dialect-specific results are cached under a key that names the dialect.
        (Some(c), d) => {
            let key = format!("{d:?}\u{0}{query}");
            c.get_or_compute(&key, |_| compute(query))
        }
        (None, _) => compute(query),
    }
}

fn obfuscate_sql_span(span: &mut Span<'_>, cache: Option<&SqlCache>) {
    let dbms = dbms_of(span);
    match obfuscate_sql(&span.resource, dbms, cache) {
        Some(r) => set(&mut span.resource, r),
        None => span.resource = Str::from_static(NON_PARSABLE_SQL),
    }
    for key in ["sql.query", "db.statement", "db.query.text"] {
        let mut empty = false;
        for (k, v) in &mut span.meta {
            if k.as_str() == key {
                if v.is_empty() {
                    empty = true;
                } else {
                    match obfuscate_sql(v, dbms, cache) {
                        Some(o) => set(v, o),
                        None => *v = Str::from_static(NON_PARSABLE_SQL),
                    }
                }
            }
        }
        if empty && key == "sql.query" {
            tag_remove(&mut span.meta, key);
        }
    }
}

/// Every leaf value of the JSON in meta `key` becomes `?` (Mongo queries, Elasticsearch bodies).
fn obfuscate_json(span: &mut Span<'_>, key: &str) {
    let obfuscator = JsonObfuscator::new(JsonObfuscatorConfig::enabled());
    for (k, v) in &mut span.meta {
        if k.as_str() == key && !v.is_empty() {
            let (o, _scan_error) = obfuscator.obfuscate(v);
            set(v, o);
        }
    }
}

/// Obfuscates one span in place according to its type and `config`.
pub fn obfuscate_span(span: &mut Span<'_>, config: &ObfuscationConfig) {
    obfuscate_span_cached(span, config, None);
}

/// [`obfuscate_span`] with SQL results memoized in `cache`.
pub fn obfuscate_span_cached(span: &mut Span<'_>, config: &ObfuscationConfig, cache: Option<&SqlCache>) {
    match span.r#type.as_str() {
        "sql" | "cassandra" => obfuscate_sql_span(span, cache),
        t @ ("redis" | "valkey") => {
            if !span.resource.is_empty() {
                let q = redis::quantize_redis_string(&span.resource);
                set(&mut span.resource, q);
            }
            if config.redis_enabled {
                let key = if t == "redis" {
                    "redis.raw_command"
                } else {
                    "valkey.raw_command"
                };
                for (k, v) in &mut span.meta {
                    if k.as_str() == key && !v.is_empty() {
                        let o = if config.redis_remove_all_args {
                            redis::remove_all_redis_args(v)
                        } else {
                            redis::obfuscate_redis_string(v)
                        };
                        set(v, o);
                    }
                }
            }
        }
        "mongodb" if config.mongodb_enabled => obfuscate_json(span, "mongodb.query"),
        "elasticsearch" if config.elasticsearch_enabled => obfuscate_json(span, "elasticsearch.body"),
        "opensearch" if config.opensearch_enabled => obfuscate_json(span, "opensearch.body"),
        "memcached" if config.memcached_enabled => {
            for (k, v) in &mut span.meta {
                if k.as_str() == "memcached.command"
                    && let Some(o) = memcached::obfuscate_memcached(v, config.memcached_keep_command)
                {
                    set(v, o);
                }
            }
        }
        "web" | "http" => {
            let options = config.http_remove_query_string || config.http_remove_paths_with_digits;
            for (k, v) in &mut span.meta {
                if k.as_str() == "http.url" && (options || v.contains('@')) {
                    let o = http::obfuscate_url_string(
                        v,
                        config.http_remove_query_string,
                        config.http_remove_paths_with_digits,
                    );
                    set(v, o);
                }
            }
        }
        _ => {}
    }
    if config.credit_cards_enabled || config.url_credentials {
        for (k, v) in &mut span.meta {
            let key: &str = k;
            if key.starts_with('_') {
                continue;
            }
            if config.credit_cards_enabled
                && is_credit_card(v, config.credit_cards_luhn)
                && !CC_ALLOW_LIST.contains(&key)
                && !config.credit_cards_keep_values.iter().any(|kv| kv == key)
            {
                *v = Str::from_static("?");
                continue;
            }
            if config.url_credentials
                && has_scheme_separator(v)
                && let Some(stripped) = strip_url_credentials(v)
            {
                *v = Str::from(stripped);
            }
        }
    }
    if config.remove_stack_traces {
        for (k, v) in &mut span.meta {
            if k.as_str() == "error.stack" {
                *v = Str::from_static("?");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The pre-check before the `@` test was added.
    fn scheme_separator_only(v: &str) -> bool {
        let b = v.as_bytes();
        b.len() >= 7
            && b.first().is_some_and(u8::is_ascii_alphabetic)
            && b.iter()
                .position(|&c| c == b':')
                .is_some_and(|i| b.get(i + 1..i + 3) == Some(b"//"))
    }

    proptest! {
        /// Looking for an `@` first strips exactly the same values.
        #[test]
        fn the_at_pre_check_strips_the_same_values(v in "[a-z]{0,4}(:(//)?)?[a-z@:/?#]{0,14}") {
            let stripped = strip_url_credentials(&v);
            prop_assert_eq!(
                has_scheme_separator(&v) && stripped.is_some(),
                scheme_separator_only(&v) && stripped.is_some()
            );
        }
    }
}
