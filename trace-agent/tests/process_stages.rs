//! Unit tests of the pure processing stages: normalization limits, obfuscators, filters,
//! replace rules, top-level computation and the whole `process_payload` order.

use trace_agent::process::filter::{FilterDrop, Filters, ReplaceRule, TagRule};
use trace_agent::process::normalize::{
    NormalizeConfig, NormalizeDrop, normalize_chunk, normalize_name, normalize_service, normalize_span, normalize_tag,
    normalize_tag_value,
};
use trace_agent::process::obfuscate::{ObfuscationConfig, is_credit_card, obfuscate_span, strip_url_credentials};
use trace_agent::process::toplevel::{compute_top_level, root_index};
use trace_agent::process::truncate::truncate_span;
use trace_agent::process::{DropReason, ProcessConfig, RequestFacts, process_payload};
use trace_agent::span::{Span, Str, TraceChunk, TracerPayload};

const NOW: i64 = 1_800_000_000_000_000_000;

fn span(service: &str, name: &str, resource: &str) -> Span<'static> {
    Span {
        service: Str::from(service.to_owned()),
        name: Str::from(name.to_owned()),
        resource: Str::from(resource.to_owned()),
        trace_id: 1,
        span_id: 1,
        start: 1_700_000_000_000_000_000,
        duration: 5,
        ..Span::default()
    }
}

fn with_meta(mut s: Span<'static>, k: &str, v: &str) -> Span<'static> {
    s.meta.push((Str::from(k.to_owned()), Str::from(v.to_owned())));
    s
}

/// `s` as a span of type `kind` carrying the tag `key: value`, after obfuscation under `config`.
fn obfuscated(s: Span<'static>, kind: &str, (key, value): (&str, &str), config: &ObfuscationConfig) -> Span<'static> {
    let mut s = with_meta(s, key, value);
    s.r#type = Str::from(kind.to_owned());
    obfuscate_span(&mut s, config);
    s
}

#[test]
fn tag_normalization_follows_the_go_table() {
    for (input, tag, value) in [
        ("#test_starting_hash", "test_starting_hash", "_test_starting_hash"),
        ("TestCAPSandSuch", "testcapsandsuch", "testcapsandsuch"),
        (
            "Test Conversion Of Weird !@#$%^&**() Characters",
            "test_conversion_of_weird_characters",
            "test_conversion_of_weird_characters",
        ),
        ("1love", "love", "1love"),
        ("ünicöde:metäl", "ünicöde:metäl", "ünicöde:metäl"),
        (
            "Data🐨dog🐶 繋がっ⛰てて",
            "data_dog_繋がっ_てて",
            "data_dog_繋がっ_てて",
        ),
        ("a__b", "a_b", "a_b"),
        ("trailing___", "trailing", "trailing"),
        ("already-ok/1.2", "already-ok/1.2", "already-ok/1.2"),
    ] {
        assert_eq!(normalize_tag(input), tag, "tag mode: {input}");
        assert_eq!(normalize_tag_value(input), value, "value mode: {input}");
    }
    let long = "a".repeat(300);
    assert_eq!(normalize_tag_value(&long).len(), 200);
}

#[test]
fn span_names_follow_the_metric_name_rules() {
    assert_eq!(normalize_name("bad-name").as_deref(), Some("bad_name"));
    assert_eq!(normalize_name("&&&&&&&_test-name-").as_deref(), Some("test_name"));
    assert_eq!(
        normalize_name(&"Too-Long-.".repeat(10)).as_deref(),
        Some(&*"Too_Long.".repeat(10))
    );
    assert_eq!(normalize_name("flask.request").as_deref(), Some("flask.request"));
    assert_eq!(normalize_name("a_.b").as_deref(), Some("a.b"));
    assert_eq!(normalize_name("1234"), None);
}

#[test]
fn service_fallbacks_and_limits() {
    assert_eq!(
        normalize_service("", "python").as_deref(),
        Some("unnamed-python-service")
    );
    assert_eq!(normalize_service("", "").as_deref(), Some("unnamed-service"));
    assert_eq!(normalize_service("!!!", "go").as_deref(), Some("unnamed-go-service"));
    assert_eq!(
        normalize_service("flask-demo", "python"),
        None,
        "already normal: untouched"
    );
    assert_eq!(normalize_service(&"s".repeat(150), "").map(|s| s.len()), Some(100));
}

#[test]
fn span_normalization_limits_and_sanity() {
    let cfg = NormalizeConfig::default();
    let mut s = span("", "", "");
    s.start = 5;
    s.duration = -3;
    s.r#type = Str::from("t".repeat(150));
    s = with_meta(s, "http.status_code", "999");
    s = with_meta(s, "env", "Prod Env");
    normalize_span(&mut s, "ruby", NOW, &cfg);
    assert_eq!(&*s.service, "unnamed-ruby-service");
    assert_eq!(&*s.name, "unnamed_operation");
    assert_eq!(&*s.resource, "unnamed_operation", "empty resource := name");
    assert_eq!(s.duration, 0);
    assert_eq!(s.start, NOW, "start before 2000 replaced by now - duration");
    assert_eq!(s.r#type.len(), 100);
    assert_eq!(s.meta("http.status_code"), None);
    assert_eq!(s.meta("env"), Some("prod_env"));
    let mut s = span("svc", "op", &"r".repeat(6000));
    s.trace_id = 7;
    s.span_id = 7;
    s.parent_id = 7;
    normalize_span(&mut s, "", NOW, &cfg);
    assert_eq!(s.resource.len(), 5000);
    assert_eq!(s.parent_id, 0);
    let mut s = span("svc", "op", "r");
    s.start = i64::MAX - 1;
    s.duration = 10;
    normalize_span(&mut s, "", NOW, &cfg);
    assert_eq!(s.duration, 0, "start + duration overflow");
}

#[test]
fn fatal_chunk_errors_drop_the_chunk_with_a_reason() {
    let cfg = NormalizeConfig::default();
    let mut empty = TraceChunk::from_spans(vec![]);
    assert_eq!(
        normalize_chunk(&mut empty, "", NOW, &cfg),
        Err(NormalizeDrop::EmptyTrace)
    );
    let mut zero = TraceChunk::from_spans(vec![Span {
        trace_id: 0,
        ..span("a", "b", "c")
    }]);
    assert_eq!(
        normalize_chunk(&mut zero, "", NOW, &cfg),
        Err(NormalizeDrop::TraceIdZero)
    );
    let mut zero = TraceChunk::from_spans(vec![Span {
        span_id: 0,
        ..span("a", "b", "c")
    }]);
    assert_eq!(
        normalize_chunk(&mut zero, "", NOW, &cfg),
        Err(NormalizeDrop::SpanIdZero)
    );
    let mut foreign = TraceChunk::from_spans(vec![
        span("a", "b", "c"),
        Span {
            trace_id: 2,
            span_id: 2,
            ..span("a", "b", "c")
        },
    ]);
    assert_eq!(
        normalize_chunk(&mut foreign, "", NOW, &cfg),
        Err(NormalizeDrop::ForeignSpan)
    );
}

#[test]
fn truncation_of_tags() {
    let mut s = with_meta(span("a", "b", "c"), &"k".repeat(250), &"v".repeat(26_000));
    s = with_meta(s, "_dd.payload.json", &"j".repeat(26_000));
    s.metrics.push((Str::from("m".repeat(250)), 1.0));
    truncate_span(&mut s);
    assert_eq!(s.meta[0].0.len(), 203);
    assert!(s.meta[0].0.ends_with("..."));
    assert_eq!(s.meta[0].1.len(), 25_003);
    assert_eq!(s.meta[1].1.len(), 26_000, "_dd.*.json exempt");
    assert_eq!(s.metrics[0].0.len(), 203);
}

#[test]
fn sql_obfuscation() {
    let s = obfuscated(
        span("db", "q", "SELECT * FROM users WHERE id = 42 AND name = 'bob'"),
        "sql",
        ("sql.query", "SELECT 1 FROM t WHERE a IN (1, 2, 3)"),
        &ObfuscationConfig::default(),
    );
    assert_eq!(&*s.resource, "SELECT * FROM users WHERE id = ? AND name = ?");
    assert_eq!(s.meta("sql.query"), Some("SELECT ? FROM t WHERE a IN ( ? )"));
}

#[test]
fn redis_quantize_and_redact() {
    let s = obfuscated(
        span("cache", "redis.command", "SET k v\nGET k"),
        "redis",
        ("redis.raw_command", "SET key secret"),
        &ObfuscationConfig::default(),
    );
    assert_eq!(&*s.resource, "SET GET");
    assert_eq!(s.meta("redis.raw_command"), Some("SET key ?"));
    let s = obfuscated(
        span("cache", "redis.command", "SET k v"),
        "redis",
        ("redis.raw_command", "SET key secret"),
        &ObfuscationConfig {
            redis_enabled: false,
            ..ObfuscationConfig::default()
        },
    );
    assert_eq!(s.meta("redis.raw_command"), Some("SET key secret"), "toggle off");
}

#[test]
fn memcached_command_is_emptied_unless_kept() {
    let mk = |config: &ObfuscationConfig| {
        obfuscated(
            span("mc", "memcached.cmd", "set"),
            "memcached",
            ("memcached.command", "set key 0 0 5\r\nvalue"),
            config,
        )
    };
    let s = mk(&ObfuscationConfig::default());
    assert_eq!(s.meta("memcached.command"), Some(""));
    let s = mk(&ObfuscationConfig {
        memcached_keep_command: true,
        ..ObfuscationConfig::default()
    });
    assert_eq!(s.meta("memcached.command"), Some("set key 0 0 5"));
}

#[test]
fn http_url_userinfo_always_and_query_on_request() {
    let mk = |config: &ObfuscationConfig| {
        obfuscated(
            span("web", "req", "GET /"),
            "web",
            ("http.url", "http://user:pass@host/path/123?token=abc"),
            config,
        )
    };
    let s = mk(&ObfuscationConfig::default());
    assert_eq!(s.meta("http.url"), Some("http://host/path/123?token=abc"));
    let s = mk(&ObfuscationConfig {
        http_remove_query_string: true,
        http_remove_paths_with_digits: true,
        ..ObfuscationConfig::default()
    });
    assert_eq!(s.meta("http.url"), Some("http://host/path/??"));
}

#[test]
fn credit_cards_and_connection_string_credentials() {
    assert!(is_credit_card("4111 1111 1111 1111", true));
    assert!(!is_credit_card("4111 1111 1111 1112", true));
    assert!(!is_credit_card("12345", false));
    let mut s = with_meta(span("a", "b", "c"), "card", "4111-1111-1111-1111");
    s = with_meta(s, "http.status_code", "4111111111111111");
    s = with_meta(s, "db.url", "mongodb://admin:hunter2@db:27017/app");
    obfuscate_span(&mut s, &ObfuscationConfig::default());
    assert_eq!(s.meta("card"), Some("?"));
    assert_eq!(s.meta("http.status_code"), Some("4111111111111111"), "allow-listed key");
    assert_eq!(s.meta("db.url"), Some("mongodb://db:27017/app"));
    assert_eq!(
        strip_url_credentials("https://host/a@b"),
        None,
        "@ after the authority is not userinfo"
    );
    let mut s = with_meta(span("a", "b", "c"), "card", "4111-1111-1111-1111");
    obfuscate_span(
        &mut s,
        &ObfuscationConfig {
            credit_cards_enabled: false,
            ..ObfuscationConfig::default()
        },
    );
    assert_eq!(s.meta("card"), Some("4111-1111-1111-1111"));
}

#[test]
fn stack_traces_removed_on_request() {
    let mut s = with_meta(span("a", "b", "c"), "error.stack", "Traceback ...");
    obfuscate_span(
        &mut s,
        &ObfuscationConfig {
            remove_stack_traces: true,
            ..ObfuscationConfig::default()
        },
    );
    assert_eq!(s.meta("error.stack"), Some("?"));
}

#[test]
fn filters_on_the_root() {
    let f = Filters {
        ignore_resources: Some(regex::RegexSet::new(["(GET|POST) /healthcheck"]).unwrap()),
        reject: vec![TagRule::parse("http.useragent:bot")],
        require: vec![TagRule::parse("env")],
        ..Filters::default()
    };
    let ok = with_meta(span("a", "b", "GET /api"), "env", "prod");
    assert_eq!(f.check(&ok), Ok(()));
    assert_eq!(
        f.check(&with_meta(span("a", "b", "GET /healthcheck"), "env", "p")),
        Err(FilterDrop::IgnoredResource)
    );
    assert_eq!(
        f.check(&span("a", "b", "GET /api")),
        Err(FilterDrop::FilteredByTags),
        "required env missing"
    );
    let bot = with_meta(
        with_meta(span("a", "b", "GET /api"), "env", "p"),
        "http.useragent",
        "bot",
    );
    assert_eq!(f.check(&bot), Err(FilterDrop::FilteredByTags));
}

#[test]
fn replace_rules() {
    let rules = vec![
        ReplaceRule {
            name: "http.url".into(),
            pattern: regex::Regex::new("token=[^&]*").unwrap(),
            repl: "token=?".into(),
        },
        ReplaceRule {
            name: "resource.name".into(),
            pattern: regex::Regex::new("[0-9]+").unwrap(),
            repl: "N".into(),
        },
        ReplaceRule {
            name: "*".into(),
            pattern: regex::Regex::new("secret").unwrap(),
            repl: "xxx".into(),
        },
    ];
    let mut s = with_meta(span("a", "b", "GET /users/42"), "http.url", "/x?token=abc&b=1");
    s = with_meta(s, "note", "my secret");
    s = with_meta(s, "_internal", "secret");
    trace_agent::process::filter::apply_replace_rules(&rules, &mut s);
    assert_eq!(s.meta("http.url"), Some("/x?token=?&b=1"));
    assert_eq!(&*s.resource, "GET /users/N");
    assert_eq!(s.meta("note"), Some("my xxx"));
    assert_eq!(s.meta("_internal"), Some("secret"), "* skips keys starting with _");
}

#[test]
fn top_level_and_root() {
    let mut spans = vec![
        Span {
            span_id: 1,
            parent_id: 0,
            ..span("web", "a", "r")
        },
        Span {
            span_id: 2,
            parent_id: 1,
            ..span("web", "b", "r")
        },
        Span {
            span_id: 3,
            parent_id: 2,
            ..span("db", "c", "r")
        },
        Span {
            span_id: 4,
            parent_id: 99,
            ..span("web", "d", "r")
        },
    ];
    assert_eq!(root_index(&spans), Some(0));
    compute_top_level(&mut spans);
    let top: Vec<bool> = spans.iter().map(|s| s.metric("_top_level") == Some(1.0)).collect();
    assert_eq!(top, [true, false, true, true]);
    let no_root = vec![
        Span {
            span_id: 2,
            parent_id: 1,
            ..span("a", "b", "c")
        },
        Span {
            span_id: 3,
            parent_id: 2,
            ..span("a", "b", "c")
        },
    ];
    assert_eq!(root_index(&no_root), Some(0), "orphan is the root");
}

#[test]
fn process_payload_runs_the_stages_and_counts_drops() {
    let config = ProcessConfig {
        filters: Filters {
            ignore_resources: Some(regex::RegexSet::new(["/health"]).unwrap()),
            ..Filters::default()
        },
        global_tags: vec![("team".into(), "apm".into()), ("_dd.origin".into(), "lambda".into())],
        default_env: "none".into(),
        ..ProcessConfig::default()
    };
    let mut kept = with_meta(span("Web App", "req", "GET /users"), "env", "prod");
    kept.metrics.push((Str::from("_sampling_priority_v1"), 2.0));
    let child = Span {
        span_id: 2,
        parent_id: 1,
        ..span("db", "q", "SELECT 1 WHERE a = 'x'")
    };
    let child = Span {
        r#type: Str::from("sql"),
        ..child
    };
    let health = Span {
        trace_id: 5,
        span_id: 5,
        ..span("web", "req", "GET /health")
    };
    let mut payload = TracerPayload {
        chunks: vec![
            TraceChunk::from_spans(vec![kept, child]),
            TraceChunk::from_spans(vec![health]),
            TraceChunk::from_spans(vec![]),
        ],
        ..TracerPayload::default()
    };
    let report = process_payload(
        &mut payload,
        &RequestFacts {
            lang: "python",
            client_computed_top_level: false,
        },
        &config,
        NOW,
    );
    assert_eq!(payload.chunks.len(), 1);
    assert_eq!(
        report.dropped.get(&DropReason::Filter(FilterDrop::IgnoredResource)),
        Some(&(1, 1))
    );
    assert_eq!(
        report.dropped.get(&DropReason::Normalize(NormalizeDrop::EmptyTrace)),
        Some(&(1, 0))
    );
    let chunk = &payload.chunks[0];
    assert_eq!(chunk.priority, 2, "priority from the root's metric");
    assert_eq!(&*chunk.spans[0].service, "web_app");
    assert_eq!(chunk.spans[0].meta("team"), Some("apm"));
    assert_eq!(chunk.origin, "lambda", "a global _dd.origin goes to the chunk");
    assert_eq!(chunk.spans[0].meta("_dd.origin"), None);
    assert_eq!(&*chunk.spans[1].resource, "SELECT ? WHERE a = ?");
    assert_eq!(
        chunk.spans[1].metric("_top_level"),
        Some(1.0),
        "service change => top-level"
    );
    assert_eq!(&*payload.env, "prod", "payload env from the root");
}

#[test]
fn client_computed_top_level_is_trusted() {
    let mut root = span("web", "req", "r");
    root.metrics.push((Str::from("_dd.top_level"), 1.0));
    let child = Span {
        span_id: 2,
        parent_id: 1,
        ..span("other", "q", "r")
    };
    let mut payload = TracerPayload {
        chunks: vec![TraceChunk::from_spans(vec![root, child])],
        ..TracerPayload::default()
    };
    process_payload(
        &mut payload,
        &RequestFacts {
            lang: "",
            client_computed_top_level: true,
        },
        &ProcessConfig::default(),
        NOW,
    );
    assert_eq!(payload.chunks[0].spans[0].metric("_top_level"), Some(1.0));
    assert_eq!(
        payload.chunks[0].spans[1].metric("_top_level"),
        None,
        "not computed by the agent"
    );
}

#[test]
fn json_obfuscation_for_mongodb_and_elasticsearch() {
    let s = obfuscated(
        span("mongo", "q", "find"),
        "mongodb",
        ("mongodb.query", r#"{"find":"users","filter":{"name":"bob","age":42}}"#),
        &ObfuscationConfig::default(),
    );
    let q = s.meta("mongodb.query").unwrap();
    assert!(!q.contains("bob") && !q.contains("42"), "{q}");
    assert!(q.contains("\"name\""), "keys kept: {q}");
    let s = obfuscated(
        span("es", "q", "search"),
        "elasticsearch",
        ("elasticsearch.body", r#"{"query":{"match":{"user":"kimchy"}}}"#),
        &ObfuscationConfig {
            elasticsearch_enabled: false,
            ..ObfuscationConfig::default()
        },
    );
    assert!(s.meta("elasticsearch.body").unwrap().contains("kimchy"), "toggle off");
}

#[test]
fn replace_rules_rewrite_metrics_and_move_non_numbers_to_meta() {
    let mut s = span("a", "b", "c");
    s.metrics.push((Str::from_static("account.id"), 12345.0));
    s.metrics.push((Str::from_static("retries"), 3.0));
    s.metrics.push((Str::from_static("_sampling_priority_v1"), 1.0));
    let rules = vec![
        ReplaceRule {
            name: "account.id".into(),
            pattern: regex::Regex::new(".*").unwrap(),
            repl: "?".into(),
        },
        ReplaceRule {
            name: "*".into(),
            pattern: regex::Regex::new("^3$").unwrap(),
            repl: "4".into(),
        },
    ];
    trace_agent::process::filter::apply_replace_rules(&rules, &mut s);
    assert_eq!(s.metric("account.id"), None);
    assert_eq!(s.meta("account.id"), Some("?"), "no longer a number: moved to meta");
    assert_eq!(s.metric("retries"), Some(4.0));
    assert_eq!(s.metric("_sampling_priority_v1"), Some(1.0), "* skips _ keys");
}

#[test]
fn sql_cache_memoizes_and_stays_bounded() {
    use trace_agent::process::obfuscate::obfuscate_span_cached;
    use trace_agent::process::sql_cache::SqlCache;
    let cache = SqlCache::new(200);
    let mk = |q: &str| {
        let mut s = span("db", "q", q);
        s.r#type = Str::from_static("sql");
        s
    };
    for _ in 0..3 {
        let mut s = mk("SELECT * FROM t WHERE id = 1");
        obfuscate_span_cached(&mut s, &ObfuscationConfig::default(), Some(&cache));
        assert_eq!(&*s.resource, "SELECT * FROM t WHERE id = ?");
    }
    assert_eq!(cache.len(), 1);
    for i in 0..20 {
        let mut s = mk(&format!("SELECT a{i} FROM table_{i} WHERE x = {i}"));
        obfuscate_span_cached(&mut s, &ObfuscationConfig::default(), Some(&cache));
    }
    assert!(cache.len() < 10, "bounded by bytes: {}", cache.len());
}

#[test]
fn normalization_corrections_are_counted() {
    use trace_agent::process::normalize::{Fix, Fixes, normalize_span_counted};
    let mut fixes = Fixes::default();
    let mut s = with_meta(span("", "bad name!", ""), "http.status_code", "abc");
    s.duration = -1;
    let mut invalid = span("!!!", "1234", "r");
    normalize_span_counted(&mut invalid, "go", NOW, &NormalizeConfig::default(), &mut fixes);
    normalize_span_counted(&mut s, "go", NOW, &NormalizeConfig::default(), &mut fixes);
    let mut ok = span("web", "flask.request", "GET /");
    normalize_span_counted(&mut ok, "go", NOW, &NormalizeConfig::default(), &mut fixes);
    let got: Vec<(Fix, u64)> = fixes.iter().collect();
    assert_eq!(
        got,
        [
            (Fix::ServiceEmpty, 1),
            (Fix::ServiceInvalid, 1),
            (Fix::NameInvalid, 1),
            (Fix::ResourceEmpty, 1),
            (Fix::InvalidDuration, 1),
            (Fix::InvalidHttpStatusCode, 1)
        ],
        "rewrites (\"bad name!\" -> \"bad_name\") and clean spans are not counted, like the Go agent"
    );
    assert_eq!(&*s.name, "bad_name");
}

#[test]
fn service_rewrites_are_not_counted_but_truncation_is() {
    use trace_agent::process::normalize::{Fix, Fixes, normalize_span_counted};
    let mut fixes = Fixes::default();
    let mut s = span("Web App", "op", "r");
    normalize_span_counted(&mut s, "", NOW, &NormalizeConfig::default(), &mut fixes);
    assert_eq!(&*s.service, "web_app");
    let mut long = span(&"s".repeat(120), &"n".repeat(120), "r");
    normalize_span_counted(&mut long, "", NOW, &NormalizeConfig::default(), &mut fixes);
    let got: Vec<(Fix, u64)> = fixes.iter().collect();
    assert_eq!(got, [(Fix::ServiceTruncate, 1), (Fix::NameTruncate, 1)]);
}

#[test]
fn sql_dialect_comes_from_db_type() {
    let mk = |db_type: Option<&str>| {
        let mut s = span("db", "q", "SELECT [a b] FROM t WHERE x = 1");
        s.r#type = Str::from_static("sql");
        if let Some(t) = db_type {
            s = with_meta(s, "db.type", t);
        }
        obfuscate_span(&mut s, &ObfuscationConfig::default());
        s.resource.to_string()
    };
    assert_eq!(mk(None), "SELECT [ a b ] FROM t WHERE x = ?");
    assert_eq!(
        mk(Some("mssql")),
        "SELECT a b FROM t WHERE x = ?",
        "MSSQL brackets quote identifiers"
    );
    assert_eq!(mk(Some("unknown-db")), mk(None), "unknown dialects are generic");
}
