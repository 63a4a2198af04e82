//! The only place that reads the process environment, behind [`EnvSource`] so tests pass a map,
//! and the parsers of `DD_*` values (Go-style booleans, lists). A leaf: config and the components
//! that read their own settings both use it.

use std::collections::HashMap;

/// Where `DD_*` variables come from.
pub trait EnvSource {
    /// The value of `name`, if set (possibly empty: callers decide what empty means).
    fn get(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl EnvSource for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, v)| *k == name && !v.trim().is_empty())
            .map(|(_, v)| (*v).to_owned())
    }
}

/// Parses a Go-style boolean (`1,t,T,TRUE,true,True,0,f,F,FALSE,false,False`).
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `DD_APM_IGNORE_RESOURCES`: comma-separated, double quotes allowed around items (so an item
/// may contain a comma).
pub fn parse_csv(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `DD_APM_FILTER_TAGS_*`: a JSON array when it starts with `[`, else space-separated.
///
/// # Errors
/// The JSON error text when it starts with `[` but is not a JSON string array.
pub fn parse_list(v: &str) -> Result<Vec<String>, String> {
    let t = v.trim();
    if t.starts_with('[') {
        serde_json::from_str(t).map_err(|e| e.to_string())
    } else {
        Ok(t.split_whitespace().map(str::to_owned).collect())
    }
}
