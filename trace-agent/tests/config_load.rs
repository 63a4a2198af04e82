//! Configuration: precedence (env over file over default), origins, unknown keys, type errors
//! with key and line, env list formats, and secret masking.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use trace_agent::config::{ConfigError, Origin, load, mask};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn yaml(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn runs_with_no_file_and_no_env() {
    let c = load(None, &env(&[])).unwrap();
    assert_eq!(c.receiver_port, 8126);
    assert_eq!(c.receiver_host, "127.0.0.1");
    assert_eq!(c.default_env, "none");
    assert_eq!(c.max_payload_size, 26_214_400);
    assert_eq!(c.receiver_timeout, Duration::from_secs(5));
    assert!(c.enabled);
    assert!(c.origins.is_empty(), "everything is a default");
}

#[test]
fn env_over_file_over_default_with_origins() {
    let f = yaml(
        "api_key: abcdefghijklmnop12345\nenv: staging\napm_config:\n  receiver_port: 9000\n  max_traces_per_second: 5\n  ignore_resources: [\"GET /health\"]\n",
    );
    let c = load(Some(f.path()), &env(&[("DD_APM_RECEIVER_PORT", "9100")])).unwrap();
    assert_eq!(c.receiver_port, 9100);
    assert_eq!(
        c.origins["apm_config.receiver_port"],
        Origin::Env("DD_APM_RECEIVER_PORT".into())
    );
    assert_eq!(c.max_traces_per_second, 5.0);
    assert_eq!(
        c.origins["apm_config.max_traces_per_second"],
        Origin::File(f.path().to_owned())
    );
    assert_eq!(c.default_env, "staging");
    assert_eq!(c.ignore_resources, ["GET /health"]);
    assert!(!c.origins.contains_key("apm_config.max_payload_size"));
    let described = c.describe();
    assert!(described.contains("***************12345"), "{described}");
    assert!(!described.contains("abcdefghijklmnop"), "api key leaked: {described}");
    assert!(described.contains("env DD_APM_RECEIVER_PORT"));
}

#[test]
fn apm_env_wins_over_env_and_tags() {
    let f = yaml("env: a\ntags: [\"env:b\"]\napm_config:\n  env: C\n");
    assert_eq!(load(Some(f.path()), &env(&[])).unwrap().default_env, "c");
    let f = yaml("tags: [\"env:from-tags\"]\n");
    assert_eq!(load(Some(f.path()), &env(&[])).unwrap().default_env, "from-tags");
}

#[test]
fn non_local_traffic_and_bind_host() {
    let f = yaml("apm_config:\n  apm_non_local_traffic: true\n");
    assert_eq!(load(Some(f.path()), &env(&[])).unwrap().receiver_host, "0.0.0.0");
    let c = load(None, &env(&[("DD_BIND_HOST", "127.0.0.2")])).unwrap();
    assert_eq!(c.tcp_addr().unwrap().unwrap().to_string(), "127.0.0.2:8126");
}

#[test]
fn wrong_type_names_the_key_and_line() {
    let f = yaml("site: datadoghq.eu\napm_config:\n  enabled: true\n  receiver_port: eighty\n");
    let e = load(Some(f.path()), &env(&[])).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ConfigError::Parse { .. }));
    assert!(msg.contains("apm_config.receiver_port"), "{msg}");
    assert!(msg.contains("line 4"), "{msg}");
}

#[test]
fn unknown_keys_warn_but_load() {
    let f = yaml("logs_enabled: true\napm_config:\n  recever_port: 1\n  receiver_port: 8200\n");
    let c = load(Some(f.path()), &env(&[])).unwrap();
    assert_eq!(c.receiver_port, 8200);
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(c.warnings.iter().any(|w| w.contains("apm_config.recever_port")));
}

#[test]
fn env_formats() {
    let c = load(
        None,
        &env(&[
            ("DD_APM_IGNORE_RESOURCES", r#""GET /a,b",POST /c"#),
            ("DD_APM_FILTER_TAGS_REJECT", "http.useragent:bot env:dev"),
            ("DD_APM_FILTER_TAGS_REGEX_REQUIRE", r#"["service:^web"]"#),
            (
                "DD_APM_REPLACE_TAGS",
                r#"[{"name":"http.url","pattern":"token=.*","repl":"?"}]"#,
            ),
            ("DD_APM_OBFUSCATION_HTTP_REMOVE_QUERY_STRING", "true"),
            ("DD_APM_OBFUSCATION_CREDIT_CARDS_ENABLED", "false"),
            ("DD_APM_NON_LOCAL_TRAFFIC", "1"),
        ]),
    )
    .unwrap();
    assert_eq!(c.ignore_resources, ["GET /a,b", "POST /c"]);
    assert_eq!(c.filter_tags_reject, ["http.useragent:bot", "env:dev"]);
    assert_eq!(c.filter_tags_regex_require, ["service:^web"]);
    assert_eq!(c.replace_tags[0].name, "http.url");
    assert!(c.obfuscation.http_remove_query_string);
    assert!(!c.obfuscation.credit_cards_enabled);
    assert_eq!(c.receiver_host, "0.0.0.0");
}

#[test]
fn bad_env_values_and_regexes_are_startup_errors() {
    let e = load(None, &env(&[("DD_APM_RECEIVER_PORT", "http")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("DD_APM_RECEIVER_PORT=http"), "{e}");
    let e = load(None, &env(&[("DD_APM_IGNORE_RESOURCES", "(unclosed")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("apm_config.ignore_resources"), "{e}");
    let e = load(None, &env(&[("DD_APM_REPLACE_TAGS", "not json")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("DD_APM_REPLACE_TAGS"), "{e}");
}

#[test]
fn secrets_are_masked_to_the_last_five() {
    assert_eq!(mask("0123456789abcdef"), "***********bcdef");
    assert_eq!(mask("abc"), "***");
    let c = load(None, &env(&[("DD_API_KEY", "0123456789abcdef")])).unwrap();
    assert_eq!(format!("{:?}", c.api_key.as_ref().unwrap()), "Secret(***********bcdef)");
    assert!(
        !format!("{c:?}").contains("0123456789"),
        "Debug of the config leaks the key"
    );
}

#[test]
fn empty_socket_variable_disables_the_unix_socket() {
    let c = load(None, &env(&[("DD_APM_RECEIVER_SOCKET", "")])).unwrap();
    assert_eq!(c.receiver_socket, None);
    let c = load(None, &env(&[("DD_APM_RECEIVER_SOCKET", "/tmp/x.sock")])).unwrap();
    assert_eq!(c.receiver_socket.as_deref(), Some(std::path::Path::new("/tmp/x.sock")));
    let c = load(None, &env(&[("DD_APM_RECEIVER_PORT", "")])).unwrap();
    assert_eq!(c.receiver_port, 8126, "empty means unset");
}

#[test]
fn a_replace_rule_on_env_is_warned_about() {
    let c = load(
        None,
        &env(&[(
            "DD_APM_REPLACE_TAGS",
            r#"[{"name":"env","pattern":"prod","repl":"production"}]"#,
        )]),
    )
    .unwrap();
    assert!(c.warnings.iter().any(|w| w.contains("\"env\"")), "{:?}", c.warnings);
}

#[test]
fn the_env_line_names_where_the_env_came_from() {
    let env_line = |c: &trace_agent::config::AgentConfig| {
        c.describe()
            .lines()
            .find(|l| l.starts_with("apm_config.env "))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    let c = load(None, &env(&[("DD_ENV", "prod")])).unwrap();
    assert!(env_line(&c).ends_with("(env DD_ENV)"), "{}", env_line(&c));
    let f = yaml("tags: [\"env:from-tags\"]\n");
    let c = load(Some(f.path()), &env(&[])).unwrap();
    assert!(
        env_line(&c).contains("from-tags") && env_line(&c).contains("(file "),
        "{}",
        env_line(&c)
    );
    let c = load(None, &env(&[])).unwrap();
    assert!(env_line(&c).ends_with("(default)"), "{}", env_line(&c));
}

#[test]
fn stats_keys_from_file_and_env() {
    let c = load(None, &env(&[])).unwrap();
    assert!(c.stats.compute_stats_by_span_kind && c.stats.peer_tags_aggregation);
    assert_eq!(c.stats.bucket_size, Duration::from_secs(10));
    assert!(!c.stats.container_id_dimension);
    let f = yaml(
        "apm_config:\n  compute_stats_by_span_kind: false\n  peer_tags: [\"custom.peer\"]\n  bucket_size_seconds: 5\n  stats_max_groups_per_bucket: 100\n  features: [enable_cid_stats]\n",
    );
    let c = load(
        Some(f.path()),
        &env(&[
            ("DD_APM_PEER_TAGS_AGGREGATION", "false"),
            ("DD_APM_PEER_TAGS", r#"["from.env"]"#),
        ]),
    )
    .unwrap();
    assert!(!c.stats.compute_stats_by_span_kind);
    assert!(!c.stats.peer_tags_aggregation);
    assert_eq!(c.stats.peer_tags, ["from.env"]);
    assert_eq!(c.stats.bucket_size, Duration::from_secs(5));
    assert_eq!(c.stats.max_groups_per_bucket, 100);
    assert!(c.stats.container_id_dimension);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(c.describe().contains("apm_config.bucket_size_seconds"));
    let bad = yaml("apm_config:\n  bucket_size_seconds: 0\n");
    assert!(matches!(
        load(Some(bad.path()), &env(&[])),
        Err(ConfigError::Invalid { .. })
    ));
    let e = load(None, &env(&[("DD_APM_PEER_TAGS", "not json")])).unwrap_err();
    assert!(e.to_string().contains("DD_APM_PEER_TAGS"), "{e}");
    let c = load(None, &env(&[("DD_APM_FEATURES", "enable_cid_stats,disable_cid_stats")])).unwrap();
    assert!(!c.stats.container_id_dimension);
}

#[test]
fn local_mode_keys_from_file_and_env() {
    use trace_agent::local::{DEFAULT_WEB_PORT, LocalMode};
    let c = load(None, &env(&[("HOME", "/home/u")])).unwrap();
    assert_eq!(c.local.mode, LocalMode::Auto);
    assert!(
        c.local.mode.is_active(c.api_key.is_some(), false),
        "no api key: local mode on"
    );
    assert_eq!(
        c.local.data_dir,
        std::path::PathBuf::from("/home/u/.local/share/trace-agent")
    );
    assert_eq!(c.local.retention, Duration::from_secs(86_400));
    assert_eq!(c.local.max_size_bytes, 512 * 1_048_576);
    assert_eq!(c.local.web_port, DEFAULT_WEB_PORT);

    let f = yaml(
        "apm_config:\n  local:\n    enabled: true\n    data_dir: /var/lib/ta\n    retention: 2h\n    max_size_mb: 64\n    web_port: 9999\n",
    );
    let c = load(Some(f.path()), &env(&[("DD_APM_LOCAL_RETENTION", "3600")])).unwrap();
    assert_eq!(c.local.mode, LocalMode::On);
    assert_eq!(c.local.data_dir, std::path::PathBuf::from("/var/lib/ta"));
    assert_eq!(c.local.retention, Duration::from_secs(3600), "env wins");
    assert_eq!(c.local.max_size_bytes, 64 * 1_048_576);
    assert_eq!(c.local.web_port, 9999);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(c.describe().contains("apm_config.local.web_port"));

    let c = load(None, &env(&[("DD_APM_LOCAL_ENABLED", "auto"), ("XDG_DATA_HOME", "/x")])).unwrap();
    assert_eq!(c.local.mode, LocalMode::Auto);
    assert_eq!(c.local.data_dir, std::path::PathBuf::from("/x/trace-agent"));

    let f = yaml("apm_config:\n  local:\n    retention: 3 weeks\n");
    let e = load(Some(f.path()), &env(&[])).unwrap_err().to_string();
    assert!(e.contains("apm_config.local.retention"), "{e}");
    let e = load(None, &env(&[("DD_APM_LOCAL_ENABLED", "maybe")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("apm_config.local.enabled") && e.contains("auto"), "{e}");
    let e = load(None, &env(&[("DD_APM_LOCAL_MAX_SIZE_MB", "0")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_size_mb"), "{e}");
}
