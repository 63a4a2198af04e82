//! One descriptor per configuration key ([`Key`]): its `datadog.yaml` path, its `DD_*`
//! variables, the type of its value, how the value is applied to [`AgentConfig`], how
//! `trace-agent config` shows it, and whether it holds secrets. The table of them
//! ([`all`], built from `table.rs`, `upstream.rs` and `ingest.rs`) is the only place a key is
//! spelled: the file is read by walking it ([`read_file`]), the environment by its variable
//! names, unknown keys are whatever it does not name, and `describe` lists its `show`s.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{AgentConfig, RawReplaceTag};
use crate::env::parse_bool;
use crate::local::monitor::config::{RawDowntime, RawMonitor};

/// The type of a key's value in `datadog.yaml` (checked by serde, errors carry key path and
/// line) and the default parser of its environment variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `true`/`false` (env: also `1`/`0`).
    Bool,
    /// Integers of the given width.
    U16,
    U32,
    U64,
    Usize,
    /// Numbers.
    F32,
    F64,
    /// A string.
    Text,
    /// A YAML scalar read as text (`true`, `auto`, `3600`, `24h` all fit).
    Scalar,
    /// A Go duration string or a number of seconds (kept as text, parsed by the key).
    Duration,
    /// A list of strings (env: a JSON list or space-separated words).
    List,
    /// A map of strings (free-form: its children are data, not keys).
    StrMap,
    /// A map of string to list of strings (free-form).
    ListMap,
    /// `replace_tags` rules.
    ReplaceTags,
    /// Local-mode monitors.
    Monitors,
    /// Local-mode downtimes.
    Downtimes,
}

/// A value read for a key, from the file or from the environment.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Bool(bool),
    Int(u64),
    Float(f64),
    Text(String),
    List(Vec<String>),
    StrMap(BTreeMap<String, String>),
    ListMap(BTreeMap<String, Vec<String>>),
    ReplaceTags(Vec<RawReplaceTag>),
    Monitors(Vec<RawMonitor>),
    Downtimes(Vec<RawDowntime>),
}

fn wrong(v: &Value, want: &str) -> String {
    format!("internal: expected {want}, got {v:?}")
}

impl Value {
    pub(crate) fn bool(self) -> Result<bool, String> {
        match self {
            Self::Bool(b) => Ok(b),
            v => Err(wrong(&v, "a boolean")),
        }
    }

    pub(crate) fn int<T: TryFrom<u64>>(self) -> Result<T, String> {
        match self {
            Self::Int(n) => T::try_from(n).map_err(|_| format!("{n} is out of range")),
            v => Err(wrong(&v, "an integer")),
        }
    }

    pub(crate) fn float(self) -> Result<f64, String> {
        match self {
            Self::Float(f) => Ok(f),
            v => Err(wrong(&v, "a number")),
        }
    }

    pub(crate) fn text(self) -> Result<String, String> {
        match self {
            Self::Text(s) => Ok(s),
            v => Err(wrong(&v, "a string")),
        }
    }

    pub(crate) fn list(self) -> Result<Vec<String>, String> {
        match self {
            Self::List(l) => Ok(l),
            v => Err(wrong(&v, "a list")),
        }
    }

    pub(crate) fn str_map(self) -> Result<BTreeMap<String, String>, String> {
        match self {
            Self::StrMap(m) => Ok(m),
            v => Err(wrong(&v, "a map")),
        }
    }

    pub(crate) fn list_map(self) -> Result<BTreeMap<String, Vec<String>>, String> {
        match self {
            Self::ListMap(m) => Ok(m),
            v => Err(wrong(&v, "a map of lists")),
        }
    }
}

/// How a key's environment value is shown in an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secrecy {
    /// Shown as is.
    Plain,
    /// An API key: all but the last 5 characters masked.
    Masked,
    /// May hold API keys or credentials among other text (endpoint maps, header lists): not
    /// shown at all.
    Hidden,
}

/// Applies a parsed value to the configuration being loaded; an `Err` is reported as
/// [`super::ConfigError::Invalid`] for the key.
pub(crate) type Apply = fn(&mut super::load::Loading, Value) -> Result<(), String>;
/// The value as `trace-agent config` shows it (secrets masked).
pub(crate) type Show = fn(&AgentConfig) -> String;
/// Parses an environment variable's value.
pub(crate) type ParseEnv = fn(&str) -> Result<Value, String>;

/// One configuration key.
#[derive(Clone, Copy)]
pub(crate) struct Key {
    /// Path in `datadog.yaml` (`apm_config.receiver_port`); also the key of its origin.
    pub(crate) path: &'static str,
    /// Other file paths read for this key, preferred over `path` (a newer name).
    pub(crate) aliases: &'static [&'static str],
    /// Environment variables, first set wins (env over file).
    pub(crate) env: &'static [&'static str],
    /// Type of the value.
    pub(crate) kind: Kind,
    /// Parser of the environment value when not the kind's default.
    pub(crate) parse_env: Option<ParseEnv>,
    /// Sets the value into the configuration being loaded.
    pub(crate) apply: Apply,
    /// The line of `trace-agent config` (`None`: shown under another key).
    pub(crate) show: Option<Show>,
    /// How its environment values appear in errors, and whether its values are scrubbed.
    pub(crate) secret: Secrecy,
    /// An empty list in the file counts as not set.
    pub(crate) empty_is_unset: bool,
    /// A valid, non-default value as written in `datadog.yaml` (tests and docs).
    pub(crate) example: &'static str,
    /// The same value as written in the environment, when it is spelled differently.
    pub(crate) env_example: Option<&'static str>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("path", &self.path)
            .field("env", &self.env)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// A key read from the file only, applied by `apply`, not shown.
    pub(crate) const fn new(path: &'static str, kind: Kind, apply: Apply) -> Self {
        Self {
            path,
            aliases: &[],
            env: &[],
            kind,
            parse_env: None,
            apply,
            show: None,
            secret: Secrecy::Plain,
            empty_is_unset: false,
            example: match kind {
                Kind::Bool => "true",
                Kind::U16 | Kind::U32 | Kind::U64 | Kind::Usize | Kind::F32 | Kind::F64 => "7",
                Kind::Text | Kind::Scalar => "example",
                Kind::Duration => "90s",
                Kind::List => "[\"a:b\"]",
                Kind::StrMap => "{a: b}",
                Kind::ListMap => "{\"https://x.example\": [\"k1\"]}",
                Kind::ReplaceTags => "[{name: a, pattern: b, repl: c}]",
                Kind::Monitors | Kind::Downtimes => "[]",
            },
            env_example: None,
        }
    }

    /// Read from these environment variables too (first set wins).
    pub(crate) const fn env(mut self, vars: &'static [&'static str]) -> Self {
        self.env = vars;
        self
    }

    /// Shown by `trace-agent config`.
    pub(crate) const fn show(mut self, show: Show) -> Self {
        self.show = Some(show);
        self
    }

    /// Environment values parsed by `parse` instead of the kind's parser.
    pub(crate) const fn parse_env(mut self, parse: ParseEnv) -> Self {
        self.parse_env = Some(parse);
        self
    }

    /// Newer file paths of the same key, preferred over `path`.
    pub(crate) const fn aliases(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    /// Holds secrets.
    pub(crate) const fn secret(mut self, secret: Secrecy) -> Self {
        self.secret = secret;
        self
    }

    /// An empty list in the file counts as not set.
    pub(crate) const fn empty_is_unset(mut self) -> Self {
        self.empty_is_unset = true;
        self
    }

    /// A valid example value (YAML, and env unless [`Key::env_example`]).
    pub(crate) const fn example(mut self, example: &'static str) -> Self {
        self.example = example;
        self
    }

    /// The example as spelled in the environment.
    pub(crate) const fn env_example(mut self, example: &'static str) -> Self {
        self.env_example = Some(example);
        self
    }

    /// Parses an environment value.
    pub(crate) fn parse_env_value(&self, v: &str) -> Result<Value, String> {
        if let Some(parse) = self.parse_env {
            return parse(v);
        }
        match self.kind {
            Kind::Bool => boolean(v).map(Value::Bool),
            Kind::U16 => num::<u16>(v).map(|n| Value::Int(n.into())),
            Kind::U32 => num::<u32>(v).map(|n| Value::Int(n.into())),
            Kind::U64 => num::<u64>(v).map(Value::Int),
            Kind::Usize => num::<usize>(v).map(|n| Value::Int(n as u64)),
            Kind::F32 => num::<f32>(v).map(|n| Value::Float(n.into())),
            Kind::F64 => num::<f64>(v).map(Value::Float),
            Kind::Text | Kind::Scalar | Kind::Duration => Ok(Value::Text(v.trim().to_owned())),
            Kind::List => crate::env::parse_list(v).map(Value::List),
            _ => Err("not settable from the environment".to_owned()),
        }
    }
}

/// Every key: the general, receiver, sampler, filter, obfuscation, local-mode and stats keys,
/// then the upstream writers' and the OTLP receivers' and proxies'.
pub(crate) fn all() -> impl Iterator<Item = &'static Key> {
    super::table::KEYS
        .iter()
        .chain(super::upstream::KEYS)
        .chain(super::ingest::KEYS)
}

/// The key read at file path `path` (its own path or an alias).
pub(crate) fn find(path: &str) -> Option<&'static Key> {
    all().find(|k| k.path == path || k.aliases.contains(&path))
}

/// Whether `path` is a section holding keys (`apm_config`, `apm_config.rare_sampler`).
fn is_section(path: &str) -> bool {
    all().any(|k| {
        std::iter::once(k.path)
            .chain(k.aliases.iter().copied())
            .any(|p| p.strip_prefix(path).is_some_and(|rest| rest.starts_with('.')))
    })
}

pub(crate) fn num<T: FromStr>(v: &str) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    v.trim().parse::<T>().map_err(|e| format!("not a valid number: {e}"))
}

pub(crate) fn boolean(v: &str) -> Result<bool, String> {
    parse_bool(v).ok_or_else(|| "not a boolean (true/false/1/0)".to_owned())
}

/// A YAML scalar read as text.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawScalar {
    Bool(bool),
    Int(u64),
    Text(String),
}

/// A duration: a Go duration string (`5m`, `90s`, `1h30m`) or a number of seconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(f64),
    Text(String),
}

/// What the file sets: values by the path they were read at, the sections present (as
/// mappings), and the paths this agent does not know, in file order.
#[derive(Debug, Default)]
pub(crate) struct FileValues {
    pub(crate) values: BTreeMap<&'static str, Value>,
    pub(crate) sections: BTreeSet<String>,
    pub(crate) unknown: Vec<String>,
}

/// Reads `datadog.yaml`'s text: every key the table names, typed (errors carry the key path,
/// line and column); sections walked; anything else listed as unknown.
pub(crate) fn read_file(text: &str) -> Result<FileValues, serde_norway::Error> {
    let mut out = FileValues::default();
    Section {
        prefix: String::new(),
        out: &mut out,
    }
    .deserialize(serde_norway::Deserializer::from_str(text))?;
    Ok(out)
}

struct Section<'a> {
    prefix: String,
    out: &'a mut FileValues,
}

impl<'de> DeserializeSeed<'de> for Section<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Section<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            f.write_str("a map of configuration keys")
        } else {
            write!(f, "a map (the keys of {})", self.prefix)
        }
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if !self.prefix.is_empty() {
            self.out.sections.insert(self.prefix.clone());
        }
        let mut seen = BTreeSet::new();
        while let Some(name) = map.next_key::<serde_norway::Value>()? {
            let name = match name {
                serde_norway::Value::String(s) => s,
                other => format!("{other:?}"),
            };
            if !seen.insert(name.clone()) {
                return Err(serde::de::Error::custom(format!("duplicate key {name:?}")));
            }
            let path = if self.prefix.is_empty() {
                name
            } else {
                format!("{}.{name}", self.prefix)
            };
            if let Some(key) = find(&path) {
                let at = std::iter::once(key.path)
                    .chain(key.aliases.iter().copied())
                    .find(|p| *p == path)
                    .unwrap_or(key.path);
                if let Some(v) = map.next_value_seed(Typed(key.kind))? {
                    self.out.values.insert(at, v);
                }
            } else if is_section(&path) {
                map.next_value_seed(Section {
                    prefix: path,
                    out: &mut *self.out,
                })?;
            } else {
                self.out.unknown.push(path);
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A value of the given kind; `None` for YAML null (not set).
struct Typed(Kind);

impl<'de> DeserializeSeed<'de> for Typed {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        Ok(match self.0 {
            Kind::Bool => Option::<bool>::deserialize(d)?.map(Value::Bool),
            Kind::U16 => Option::<u16>::deserialize(d)?.map(|n| Value::Int(n.into())),
            Kind::U32 => Option::<u32>::deserialize(d)?.map(|n| Value::Int(n.into())),
            Kind::U64 => Option::<u64>::deserialize(d)?.map(Value::Int),
            Kind::Usize => Option::<usize>::deserialize(d)?.map(|n| Value::Int(n as u64)),
            Kind::F32 => Option::<f32>::deserialize(d)?.map(|n| Value::Float(n.into())),
            Kind::F64 => Option::<f64>::deserialize(d)?.map(Value::Float),
            Kind::Text => Option::<String>::deserialize(d)?.map(Value::Text),
            Kind::Scalar => Option::<RawScalar>::deserialize(d)?.map(|s| {
                Value::Text(match s {
                    RawScalar::Bool(b) => b.to_string(),
                    RawScalar::Int(n) => n.to_string(),
                    RawScalar::Text(s) => s,
                })
            }),
            Kind::Duration => Option::<RawDuration>::deserialize(d)?.map(|s| {
                Value::Text(match s {
                    RawDuration::Seconds(n) => n.to_string(),
                    RawDuration::Text(t) => t,
                })
            }),
            Kind::List => Option::<Vec<String>>::deserialize(d)?.map(Value::List),
            Kind::StrMap => Option::<BTreeMap<String, String>>::deserialize(d)?.map(Value::StrMap),
            Kind::ListMap => Option::<BTreeMap<String, Vec<String>>>::deserialize(d)?.map(Value::ListMap),
            Kind::ReplaceTags => Option::<Vec<RawReplaceTag>>::deserialize(d)?.map(Value::ReplaceTags),
            Kind::Monitors => Option::<Vec<RawMonitor>>::deserialize(d)?.map(Value::Monitors),
            Kind::Downtimes => Option::<Vec<RawDowntime>>::deserialize(d)?.map(Value::Downtimes),
        })
    }
}
