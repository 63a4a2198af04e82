//! No configuration error prints a secret (issue 10, item 4): every path a value can come
//! through (a YAML key, an environment variable, `additional_endpoints` in YAML and in the
//! environment), each with the API key inside a bad value; and `trace-agent config` prints
//! control characters escaped.

use std::collections::HashMap;
use std::io::Write;
use std::process::Command;

use trace_agent::config::load;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const KEY_TAIL: &str = "bcdef";

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn yaml(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

/// The error for `file` + `vars`, which must not contain the key (only its masked tail).
fn error_of(file: Option<&str>, vars: &[(&str, &str)]) -> String {
    let f = file.map(yaml);
    let e = load(f.as_ref().map(|f| f.path()), &env(vars))
        .err()
        .unwrap_or_else(|| panic!("expected an error for {file:?} {vars:?}"))
        .to_string();
    assert!(!e.contains(&KEY[..10]), "the API key leaked: {e}");
    e
}

#[test]
fn a_yaml_value_holding_the_api_key_is_masked() {
    // The key pasted into a numeric field.
    let e = error_of(
        Some(&format!("api_key: {KEY}\napm_config:\n  receiver_port: \"{KEY}\"\n")),
        &[],
    );
    assert!(e.contains("receiver_port"), "{e}");
    assert!(e.contains(KEY_TAIL), "the masked tail helps find it: {e}");
}

#[test]
fn an_env_value_holding_the_api_key_is_masked() {
    let e = error_of(None, &[("DD_API_KEY", KEY), ("DD_APM_RECEIVER_PORT", KEY)]);
    assert!(e.contains("DD_APM_RECEIVER_PORT"), "{e}");
    // A key-named variable with a bad value: masked even without DD_API_KEY.
    let e = error_of(None, &[("DD_APM_TRACE_WRITER_QUEUE_SIZE", "0"), ("DD_API_KEY", KEY)]);
    assert!(e.contains("queue_size"), "{e}");
}

#[test]
fn mistyped_additional_endpoints_in_yaml_do_not_print_the_key() {
    // A string where the list of keys belongs.
    let e = error_of(
        Some(&format!(
            "apm_config:\n  additional_endpoints:\n    \"https://trace.agent.datadoghq.eu\": {KEY}\n"
        )),
        &[],
    );
    assert!(e.contains("expected a sequence") && e.contains(KEY_TAIL), "{e}");
    // URL and key swapped.
    let e = error_of(
        Some(&format!(
            "apm_config:\n  additional_endpoints:\n    \"{KEY}\": [\"https://trace.agent.datadoghq.eu\"]\n"
        )),
        &[],
    );
    assert!(e.contains("additional_endpoints"), "{e}");
    // A number where the list belongs (the key is all digits here).
    let e = error_of(
        Some("apm_config:\n  additional_endpoints:\n    \"https://x.example\": 012345678901234567890123\n"),
        &[],
    );
    assert!(!e.contains("01234567890123"), "{e}");
}

#[test]
fn mistyped_additional_endpoints_in_env_do_not_print_the_key() {
    // Not JSON at all.
    let e = error_of(
        None,
        &[("DD_APM_ADDITIONAL_ENDPOINTS", &format!("https://x.example={KEY}"))],
    );
    assert!(e.contains("DD_APM_ADDITIONAL_ENDPOINTS"), "{e}");
    // JSON with a string where the list belongs.
    let e = error_of(
        None,
        &[(
            "DD_APM_ADDITIONAL_ENDPOINTS",
            &format!("{{\"https://x.example\": \"{KEY}\"}}"),
        )],
    );
    assert!(e.contains("DD_APM_ADDITIONAL_ENDPOINTS"), "{e}");
    // URL and key swapped: valid JSON, invalid URL.
    let e = error_of(
        None,
        &[(
            "DD_APM_ADDITIONAL_ENDPOINTS",
            &format!("{{\"{KEY}\": [\"https://x.example\"]}}"),
        )],
    );
    assert!(e.contains("additional_endpoints"), "{e}");
    // OTLP export headers without '='.
    let e = error_of(
        None,
        &[
            ("DD_APM_OTLP_EXPORT_ENDPOINT", "http://127.0.0.1:4318"),
            ("DD_APM_OTLP_EXPORT_HEADERS", &format!("authorization {KEY}")),
        ],
    );
    assert!(e.contains("HEADERS"), "{e}");
}

#[test]
fn config_command_escapes_control_characters() {
    let f = yaml("hostname: \"host\\e]0;pwned\\a\\e[2J\"\napm_config:\n  env: \"prod\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_trace-agent"))
        .args(["config", "--config"])
        .arg(f.path())
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let host = text.lines().find(|l| l.starts_with("hostname ")).unwrap();
    assert!(host.contains("pwned"), "{host}");
    assert!(
        !out.stdout.iter().any(|&b| b == 0x1b || b == 0x07),
        "raw control characters in: {text}"
    );
    // And in the error path.
    let bad = yaml("apm_config:\n  receiver_port: \"\\e[2Jx\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_trace-agent"))
        .args(["config", "--config"])
        .arg(bad.path())
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!out.stderr.contains(&0x1b), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Local data: the directory is 0700 and the database files 0600 (before: 0755 / 0644).
#[test]
fn the_local_store_is_private_to_its_user() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("nested").join("trace-agent");
    let config = trace_agent::local::LocalConfig {
        data_dir: dir.clone(),
        ..trace_agent::local::LocalConfig::default()
    };
    let store = trace_agent::local::LocalStore::open(config.clone()).unwrap();
    assert!(
        matches!(store.status().mode, trace_agent::local::StoreMode::File { .. }),
        "{:?}",
        store.status()
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&config.db_path()), 0o600);
    let wal = dir.join(format!(
        "{}-wal",
        config.db_path().file_name().unwrap().to_string_lossy()
    ));
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600);
    }
    drop(store);
    // An existing directory open to others is closed.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(config.db_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = trace_agent::local::LocalStore::open(config.clone()).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&config.db_path()), 0o600);
    drop(store);
}
