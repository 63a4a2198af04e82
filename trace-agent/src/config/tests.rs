//! The key table against the loader, `trace-agent config` and the README: every key in it is
//! read from `datadog.yaml` and from each of its variables, and shown with its origin.

use std::collections::{BTreeSet, HashMap};

use super::key::{self, Key};
use super::{Origin, load};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// `a.b.c` with `value` as nested YAML.
fn nested_yaml(path: &str, value: &str) -> String {
    let mut out = String::new();
    let parts: Vec<&str> = path.split('.').collect();
    for (depth, part) in parts.iter().enumerate() {
        out.push_str(&"  ".repeat(depth));
        if depth + 1 == parts.len() {
            out.push_str(&format!("{part}: {value}\n"));
        } else {
            out.push_str(&format!("{part}:\n"));
        }
    }
    out
}

/// The value and origin columns of `key`'s line in `described`.
fn shown<'a>(described: &'a str, key: &Key) -> Option<(&'a str, &'a str)> {
    let line = described
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key.path))?;
    let (_, rest) = line.split_once(" = ")?;
    let (value, origin) = rest.rsplit_once(" (")?;
    Some((value.trim_end(), origin.trim_end_matches(')')))
}

#[test]
fn every_key_round_trips_yaml_and_env_and_is_shown_with_its_origin() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for key in key::all() {
        let path = dir.path().join("datadog.yaml");
        std::fs::write(&path, nested_yaml(key.path, key.example)).unwrap();
        let from_file = load(Some(&path), &env(&[])).unwrap_or_else(|e| panic!("{}: {e}", key.path));
        // The old spelling of a key with a newer one is read, with a warning.
        let deprecated = !key.aliases.is_empty();
        assert_eq!(
            from_file.warnings.len(),
            usize::from(deprecated),
            "{}: {:?}",
            key.path,
            from_file.warnings
        );
        for alias in key.aliases {
            std::fs::write(&path, nested_yaml(alias, key.example)).unwrap();
            let c = load(Some(&path), &env(&[])).unwrap();
            assert!(c.warnings.is_empty(), "{alias}: {:?}", c.warnings);
            assert_eq!(c.origins.get(key.path), Some(&Origin::File(path.clone())), "{alias}");
        }
        assert_eq!(
            from_file.origins.get(key.path),
            Some(&Origin::File(path.clone())),
            "{}",
            key.path
        );
        let file_line = from_file.describe();
        let file_shown = key.show.map(|_| {
            let (value, origin) = shown(&file_line, key).unwrap_or_else(|| panic!("{} not shown", key.path));
            assert!(origin.starts_with("file "), "{}: {origin}", key.path);
            value.to_owned()
        });
        for var in key.env {
            let value = key.env_example.unwrap_or(key.example);
            let from_env = load(None, &env(&[(var, value)])).unwrap_or_else(|e| panic!("{var}: {e}"));
            assert_eq!(
                from_env.origins.get(key.path),
                Some(&Origin::Env((*var).to_owned())),
                "{var}"
            );
            if let Some(file_value) = &file_shown {
                let described = from_env.describe();
                let (value, origin) = shown(&described, key).unwrap();
                assert_eq!(origin, format!("env {var}"), "{}", key.path);
                assert_eq!(value, file_value, "{var} and {} differ", key.path);
            }
        }
        checked += 1;
    }
    assert!(checked > 90, "{checked} keys");
}

#[test]
fn keys_are_spelled_once() {
    let mut paths = BTreeSet::new();
    let mut vars = BTreeSet::new();
    for key in key::all() {
        for p in std::iter::once(&key.path).chain(key.aliases) {
            assert!(paths.insert(*p), "{p} twice");
        }
        for v in key.env {
            assert!(vars.insert(*v), "{v} twice");
        }
    }
    // A key is never also a section of other keys.
    for p in &paths {
        assert!(
            !paths
                .iter()
                .any(|q| q.strip_prefix(p).is_some_and(|r| r.starts_with('.'))),
            "{p} is a key and a section"
        );
    }
    // Only the keys folded into another line are not shown.
    let hidden: Vec<&str> = key::all().filter(|k| k.show.is_none()).map(|k| k.path).collect();
    assert_eq!(
        hidden,
        [
            "env",
            "apm_config.apm_non_local_traffic",
            "apm_config.local.webhooks",
            "apm_config.local.downtimes",
            "apm_config.local.monitor_interval",
        ]
    );
}

/// The key list of `trace-agent/README.md`, generated from the table.
fn readme_table() -> String {
    let mut out = String::from("| key | environment |\n|---|---|\n");
    for key in key::all() {
        let mut names = vec![format!("`{}`", key.path)];
        names.extend(key.aliases.iter().map(|a| format!("`{a}`")));
        let vars: Vec<String> = key.env.iter().map(|v| format!("`{v}`")).collect();
        out.push_str(&format!("| {} | {} |\n", names.join(", "), vars.join(", ")));
    }
    out
}

#[test]
fn the_readme_lists_every_key_of_the_table() {
    let readme = include_str!("../../README.md");
    let begin = "<!-- config keys: begin (generated from src/config; a test checks it) -->\n";
    let end = "<!-- config keys: end -->";
    let block = readme
        .split_once(begin)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(block, _)| block);
    let want = readme_table();
    assert_eq!(block, Some(want.as_str()), "replace the README block with:\n{want}");
}

#[test]
fn a_key_written_twice_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("datadog.yaml");
    std::fs::write(&path, "apm_config:\n  receiver_port: 1\n  receiver_port: 2\n").unwrap();
    let e = load(Some(&path), &env(&[])).unwrap_err().to_string();
    assert!(e.contains("duplicate key \"receiver_port\""), "{e}");
}
