//! Trace sampling rules (`DD_TRACE_SAMPLING_RULES`): globs on service, name, resource and
//! tags, first match wins.

use serde::Deserialize;

/// A case-insensitive glob with `*` (any run) and `?` (one character).
#[derive(Debug, Clone, PartialEq)]
pub struct Glob {
    pattern: Vec<char>,
    match_all: bool,
}

impl Glob {
    /// Compiles a pattern.
    pub fn new(pattern: &str) -> Self {
        let pattern: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
        let match_all = !pattern.is_empty() && pattern.iter().all(|c| *c == '*');
        Self { pattern, match_all }
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        if self.match_all {
            return true;
        }
        // Iterative wildcard matching with single-star backtracking: O(n·m) worst case,
        // no recursion, no allocation.
        let p = &self.pattern;
        let t: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
        let (mut pi, mut ti) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            match (p.get(pi), t.get(ti)) {
                (Some('?'), Some(_)) => {
                    pi += 1;
                    ti += 1;
                }
                (Some('*'), _) => {
                    star = Some((pi, ti));
                    pi += 1;
                }
                (Some(pc), Some(tc)) if pc == tc => {
                    pi += 1;
                    ti += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        pi = sp + 1;
                        ti = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        p.get(pi..).is_some_and(|rest| rest.iter().all(|c| *c == '*'))
    }
}

/// One trace sampling rule.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingRule {
    pub(crate) service: Option<Glob>,
    pub(crate) name: Option<Glob>,
    pub(crate) resource: Option<Glob>,
    pub(crate) tags: Vec<(String, Glob)>,
    pub(crate) sample_rate: f64,
}

/// What a rule looks at.
#[derive(Debug, Clone, Copy)]
pub struct RuleInput<'a> {
    /// Span service.
    pub service: &'a str,
    /// Operation name.
    pub name: &'a str,
    /// Resource.
    pub resource: &'a str,
    /// String tags.
    pub meta: &'a [(crate::Str, crate::Str)],
    /// Numeric tags (matched as their decimal text when integral).
    pub metrics: &'a [(crate::Str, f64)],
}

impl SamplingRule {
    /// A rule matching everything at `rate` (what `DD_TRACE_SAMPLE_RATE` becomes).
    pub fn catch_all(rate: f64) -> Self {
        Self {
            service: None,
            name: None,
            resource: None,
            tags: Vec::new(),
            sample_rate: rate,
        }
    }

    /// A rule on service and name globs (either may be `None`), at `rate`.
    pub fn new(service: Option<&str>, name: Option<&str>, rate: f64) -> Self {
        Self {
            service: service.map(Glob::new),
            name: name.map(Glob::new),
            resource: None,
            tags: Vec::new(),
            sample_rate: rate,
        }
    }

    /// The rule's sample rate.
    pub fn sample_rate(&self) -> f64 {
        self.sample_rate
    }

    /// Whether the rule applies.
    pub fn matches(&self, input: &RuleInput<'_>) -> bool {
        let field = |g: &Option<Glob>, v: &str| g.as_ref().is_none_or(|g| g.matches(v));
        field(&self.service, input.service)
            && field(&self.name, input.name)
            && field(&self.resource, input.resource)
            && self.tags.iter().all(|(key, glob)| {
                if let Some((_, v)) = input.meta.iter().find(|(k, _)| k.as_str() == key) {
                    return glob.matches(v);
                }
                if let Some((_, v)) = input.metrics.iter().find(|(k, _)| k.as_str() == key) {
                    // Datadog matches numeric tags only when integral; other values match only `*`.
                    return if v.fract() == 0.0 && v.is_finite() {
                        glob.matches(&format!("{}", *v as i64))
                    } else {
                        glob.match_all
                    };
                }
                false
            })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    service: Option<String>,
    name: Option<String>,
    resource: Option<String>,
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
    sample_rate: Option<f64>,
    #[serde(default)]
    #[allow(dead_code)]
    provenance: Option<String>,
    /// Accepted for compatibility with tracers that document it; unused.
    #[serde(default)]
    #[allow(dead_code)]
    max_per_second: Option<f64>,
}

/// Parses the JSON array of `DD_TRACE_SAMPLING_RULES`.
///
/// # Errors
/// A message naming the rule and what is wrong with it.
pub fn parse_rules(json: &str) -> Result<Vec<SamplingRule>, String> {
    let raw: Vec<RawRule> = serde_json::from_str(json).map_err(|e| format!("not a JSON array of rules: {e}"))?;
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let rate = r.sample_rate.unwrap_or(1.0);
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("rule {i}: sample_rate {rate} is not within 0..=1"));
            }
            Ok(SamplingRule {
                service: r.service.as_deref().map(Glob::new),
                name: r.name.as_deref().map(Glob::new),
                resource: r.resource.as_deref().map(Glob::new),
                tags: r.tags.into_iter().map(|(k, v)| (k, Glob::new(&v))).collect(),
                sample_rate: rate,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Str;

    #[test]
    fn globs() {
        let cases = [
            ("*", "anything", true),
            ("web*", "WEB-store", true),
            ("web?", "webs", true),
            ("web?", "web", false),
            ("*.request", "flask.request", true),
            ("*.request", "flask.requests", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("", "", true),
            ("", "x", false),
            ("GET /api/*", "get /api/apm", true),
        ];
        for (p, t, want) in cases {
            assert_eq!(Glob::new(p).matches(t), want, "{p:?} vs {t:?}");
        }
    }

    fn input<'a>(meta: &'a [(Str, Str)], metrics: &'a [(Str, f64)]) -> RuleInput<'a> {
        RuleInput {
            service: "web",
            name: "http.request",
            resource: "GET /api/apm",
            meta,
            metrics,
        }
    }

    #[test]
    fn rules_parse_and_match_first_wins() {
        let rules = parse_rules(
            r#"[{"service":"db*","sample_rate":0.1},
                {"resource":"GET /api/*","tags":{"http.status_code":"5??","tier":"gold"},"sample_rate":1},
                {"name":"http.*","sample_rate":0.5}]"#,
        )
        .unwrap_or_default();
        assert_eq!(rules.len(), 3);
        let meta = [
            (Str::from("http.status_code"), Str::from("503")),
            (Str::from("tier"), Str::from("GOLD")),
        ];
        let first = rules.iter().find(|r| r.matches(&input(&meta, &[])));
        assert_eq!(first.map(SamplingRule::sample_rate), Some(1.0));
        let first = rules.iter().find(|r| r.matches(&input(&meta[..1], &[])));
        assert_eq!(
            first.map(SamplingRule::sample_rate),
            Some(0.5),
            "missing tag: rule 2 does not match"
        );
        let metrics = [(Str::from("http.status_code"), 503.0), (Str::from("tier"), 1.5)];
        assert!(!rules[1].matches(&input(&[], &metrics)), "tier=1.5 is not integral");
    }

    #[test]
    fn bad_rules_are_errors() {
        assert!(parse_rules("{}").is_err());
        assert!(parse_rules(r#"[{"sample_rate":2}]"#).unwrap_err().contains("rule 0"));
        assert!(parse_rules(r#"[{"servce":"x"}]"#).is_err(), "unknown keys are typos");
        assert_eq!(parse_rules("[]"), Ok(vec![]));
    }
}
