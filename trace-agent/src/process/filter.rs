//! Chunk filters on the root span: `ignore_resources`, `filter_tags`, `filter_tags_regex`, and
//! the `replace_tags` rewrite rules.

use regex::{Regex, RegexSet};

use crate::span::{Span, Str};

/// A `key` or `key:value` requirement on the root's meta (`filter_tags`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRule {
    /// Meta key.
    pub key: String,
    /// Exact value; `None` means "key present".
    pub value: Option<String>,
}

impl TagRule {
    /// Parses `key` or `key:value`.
    pub fn parse(s: &str) -> Self {
        match s.split_once(':') {
            Some((k, v)) => Self {
                key: k.trim().to_owned(),
                value: Some(v.trim().to_owned()),
            },
            None => Self {
                key: s.trim().to_owned(),
                value: None,
            },
        }
    }

    fn matches(&self, root: &Span<'_>) -> bool {
        match (root.meta(&self.key), &self.value) {
            (Some(_), None) => true,
            (Some(v), Some(want)) => v == want,
            (None, _) => false,
        }
    }
}

/// A `key:regex` requirement on the root's meta (`filter_tags_regex`).
#[derive(Debug, Clone)]
pub struct TagRegexRule {
    /// Meta key.
    pub key: String,
    /// Pattern the value must match; `None` means "key present".
    pub value: Option<Regex>,
}

impl TagRegexRule {
    /// Parses `key:regex`.
    ///
    /// # Errors
    /// When the regex is invalid.
    pub fn parse(s: &str) -> Result<Self, regex::Error> {
        Ok(match s.split_once(':') {
            Some((k, v)) => Self {
                key: k.trim().to_owned(),
                value: Some(Regex::new(v.trim())?),
            },
            None => Self {
                key: s.trim().to_owned(),
                value: None,
            },
        })
    }

    fn matches(&self, root: &Span<'_>) -> bool {
        match (root.meta(&self.key), &self.value) {
            (Some(_), None) => true,
            (Some(v), Some(re)) => re.is_match(v),
            (None, _) => false,
        }
    }
}

/// Why a chunk was filtered out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FilterDrop {
    /// The root's resource matched `ignore_resources`.
    IgnoredResource,
    /// `filter_tags`/`filter_tags_regex` rejected the root.
    FilteredByTags,
}

/// The compiled chunk filters.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// `ignore_resources` (unanchored).
    pub ignore_resources: Option<RegexSet>,
    /// `filter_tags.require`.
    pub require: Vec<TagRule>,
    /// `filter_tags.reject`.
    pub reject: Vec<TagRule>,
    /// `filter_tags_regex.require`.
    pub require_regex: Vec<TagRegexRule>,
    /// `filter_tags_regex.reject`.
    pub reject_regex: Vec<TagRegexRule>,
}

impl Filters {
    /// Checks the root span of a chunk.
    ///
    /// # Errors
    /// The reason when the chunk must be dropped.
    pub fn check(&self, root: &Span<'_>) -> Result<(), FilterDrop> {
        if self
            .ignore_resources
            .as_ref()
            .is_some_and(|set| set.is_match(&root.resource))
        {
            return Err(FilterDrop::IgnoredResource);
        }
        let rejected = self.reject.iter().any(|r| r.matches(root))
            || self.reject_regex.iter().any(|r| r.matches(root))
            || !self.require.iter().all(|r| r.matches(root))
            || !self.require_regex.iter().all(|r| r.matches(root));
        if rejected {
            Err(FilterDrop::FilteredByTags)
        } else {
            Ok(())
        }
    }
}

/// One `replace_tags` rule.
#[derive(Debug, Clone)]
pub struct ReplaceRule {
    /// `*`, `resource.name`, or a tag key.
    pub name: String,
    /// Pattern.
    pub pattern: Regex,
    /// Replacement (`$1` expansion).
    pub repl: String,
}

fn replace(re: &Regex, repl: &str, s: &Str<'_>) -> Option<Str<'static>> {
    match re.replace_all(s, repl) {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(v) => Some(Str::from(v)),
    }
}

/// Applies a rule to the metrics whose key passes `select`: the number is formatted, rewritten,
/// and parsed back; a result that is no longer a number moves to meta (Go agent behaviour).
fn replace_metrics(rule: &ReplaceRule, span: &mut Span<'_>, select: impl Fn(&str) -> bool) {
    let mut moved = Vec::new();
    span.metrics.retain_mut(|(k, v)| {
        if !select(k) {
            return true;
        }
        let text = v.to_string();
        match rule.pattern.replace_all(&text, rule.repl.as_str()) {
            std::borrow::Cow::Borrowed(_) => true,
            std::borrow::Cow::Owned(new) => match new.parse::<f64>() {
                Ok(n) => {
                    *v = n;
                    true
                }
                Err(_) => {
                    moved.push((k.clone(), Str::from(new)));
                    false
                }
            },
        }
    });
    span.meta.extend(moved);
}

/// Applies `rules` to a span (spec 4.4).
pub fn apply_replace_rules(rules: &[ReplaceRule], span: &mut Span<'_>) {
    for rule in rules {
        match rule.name.as_str() {
            "*" => {
                for (k, v) in &mut span.meta {
                    if !k.starts_with('_')
                        && let Some(n) = replace(&rule.pattern, &rule.repl, v)
                    {
                        *v = n;
                    }
                }
                if let Some(n) = replace(&rule.pattern, &rule.repl, &span.resource) {
                    span.resource = n;
                }
                replace_metrics(rule, span, |k| !k.starts_with('_'));
            }
            "resource.name" => {
                if let Some(n) = replace(&rule.pattern, &rule.repl, &span.resource) {
                    span.resource = n;
                }
            }
            key => {
                for (k, v) in &mut span.meta {
                    if k.as_str() == key
                        && let Some(n) = replace(&rule.pattern, &rule.repl, v)
                    {
                        *v = n;
                    }
                }
                replace_metrics(rule, span, |k| k == key);
            }
        }
    }
}
