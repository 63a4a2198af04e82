//! Monitors, webhooks and downtimes as written in `datadog.yaml`
//! (`apm_config.local.monitors`, `.webhooks`, `.downtimes`), checked into typed settings. A
//! mistake is a start-up error naming the monitor (index and name) and the field.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// What a monitor measures over its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// `errors / hits` (0–1).
    ErrorRate,
    /// Hits in the window.
    Hits,
    /// Hits per second over the window.
    RequestsPerSecond,
    /// Median latency.
    P50,
    /// 95th percentile latency.
    P95,
    /// 99th percentile latency.
    P99,
}

impl Metric {
    /// Every metric, for messages.
    pub const NAMES: &'static str = "error_rate, hits, requests_per_second, p50, p95, p99";

    /// From its name.
    pub fn parse(v: &str) -> Option<Self> {
        Some(match v.trim() {
            "error_rate" => Self::ErrorRate,
            "hits" => Self::Hits,
            "requests_per_second" => Self::RequestsPerSecond,
            "p50" => Self::P50,
            "p95" => Self::P95,
            "p99" => Self::P99,
            _ => return None,
        })
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ErrorRate => "error_rate",
            Self::Hits => "hits",
            Self::RequestsPerSecond => "requests_per_second",
            Self::P50 => "p50",
            Self::P95 => "p95",
            Self::P99 => "p99",
        }
    }

    /// Whether values are latencies in ns.
    pub fn is_latency(self) -> bool {
        matches!(self, Self::P50 | Self::P95 | Self::P99)
    }
}

/// Which side of the thresholds alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparator {
    /// Values strictly above the thresholds (the default).
    #[default]
    Above,
    /// Values strictly below (e.g. hits dropping).
    Below,
}

/// One monitor, checked.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MonitorSpec {
    /// Unique name.
    pub name: String,
    /// Service whose stats are evaluated.
    pub service: String,
    /// Only this resource (default: all of the operation).
    pub resource: Option<String>,
    /// Only this operation (default: the service's primary operation, or every operation of
    /// `resource`).
    pub operation: Option<String>,
    /// What is measured.
    pub metric: Metric,
    /// Over how long (ending at each evaluation).
    #[serde(serialize_with = "secs")]
    pub window: Duration,
    /// Warning threshold (optional).
    pub warning: Option<f64>,
    /// Alert threshold.
    pub critical: f64,
    /// Above or below.
    pub comparator: Comparator,
    /// Go to NO_DATA when no hit was seen for `no_data_window`.
    pub notify_no_data: bool,
    /// How long without hits means no data (default: twice the window).
    #[serde(serialize_with = "secs")]
    pub no_data_window: Duration,
    /// Text sent with notifications; `@webhook-NAME` notifies that webhook.
    pub message: String,
    /// Webhooks named in `message`.
    pub webhooks: Vec<String>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// Which monitors a downtime mutes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum DowntimeScope {
    /// Every monitor (`*`).
    All,
    /// One monitor (`monitor:NAME`).
    Monitor(String),
    /// Every monitor of a service (`service:NAME`).
    Service(String),
}

impl DowntimeScope {
    /// `*`, `monitor:NAME` or `service:NAME`.
    ///
    /// # Errors
    /// What is expected.
    pub fn parse(v: &str) -> Result<Self, String> {
        let v = v.trim();
        if v == "*" {
            return Ok(Self::All);
        }
        match v.split_once(':') {
            Some(("monitor", n)) if !n.trim().is_empty() => Ok(Self::Monitor(n.trim().to_owned())),
            Some(("service", n)) if !n.trim().is_empty() => Ok(Self::Service(n.trim().to_owned())),
            _ => Err(format!("{v:?}: use *, monitor:NAME or service:NAME")),
        }
    }

    /// Whether it covers `spec`.
    pub fn covers(&self, spec: &MonitorSpec) -> bool {
        match self {
            Self::All => true,
            Self::Monitor(n) => *n == spec.name,
            Self::Service(s) => *s == spec.service,
        }
    }

    /// The written form.
    pub fn as_string(&self) -> String {
        match self {
            Self::All => "*".to_owned(),
            Self::Monitor(n) => format!("monitor:{n}"),
            Self::Service(s) => format!("service:{s}"),
        }
    }
}

/// When a downtime mutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// From `start_ns` (inclusive) to `end_ns` (exclusive); either may be open.
    Once {
        /// Start, ns since the epoch (`None`: already started).
        start_ns: Option<i64>,
        /// End, ns since the epoch (`None`: until removed).
        end_ns: Option<i64>,
    },
    /// Every day between two UTC times of day (seconds since midnight); `start > end` wraps
    /// over midnight.
    Daily {
        /// Start, seconds after 00:00 UTC.
        start_s: u32,
        /// End, seconds after 00:00 UTC.
        end_s: u32,
    },
}

impl Schedule {
    /// Whether `now_ns` is inside.
    pub fn active(&self, now_ns: i64) -> bool {
        match *self {
            Self::Once { start_ns, end_ns } => {
                start_ns.is_none_or(|s| now_ns >= s) && end_ns.is_none_or(|e| now_ns < e)
            }
            Self::Daily { start_s, end_s } => {
                let t = u32::try_from(now_ns.div_euclid(1_000_000_000).rem_euclid(86_400)).unwrap_or(0);
                if start_s <= end_s {
                    t >= start_s && t < end_s
                } else {
                    t >= start_s || t < end_s
                }
            }
        }
    }

    /// Whether it can never be active again after `now_ns`.
    pub fn expired(&self, now_ns: i64) -> bool {
        matches!(*self, Self::Once { end_ns: Some(e), .. } if now_ns >= e)
    }
}

/// A downtime, checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DowntimeSpec {
    /// What it mutes.
    pub scope: DowntimeScope,
    /// When.
    pub schedule: Schedule,
    /// Why (shown on the page).
    pub comment: String,
}

/// Local-mode monitoring settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorConfig {
    /// `apm_config.local.monitors`.
    pub monitors: Vec<MonitorSpec>,
    /// `apm_config.local.webhooks`: name → URL.
    pub webhooks: BTreeMap<String, String>,
    /// `apm_config.local.downtimes`.
    pub downtimes: Vec<DowntimeSpec>,
    /// `apm_config.local.monitor_interval`: time between evaluations.
    pub interval: Duration,
}

/// Default time between evaluations.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Most monitors.
pub const MAX_MONITORS: usize = 500;

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            monitors: Vec::new(),
            webhooks: BTreeMap::new(),
            downtimes: Vec::new(),
            interval: DEFAULT_INTERVAL,
        }
    }
}

/// A YAML scalar read as text or number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawNumber {
    Num(f64),
    Text(String),
}

/// One `apm_config.local.monitors` entry as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawMonitor {
    name: Option<String>,
    service: Option<String>,
    resource: Option<String>,
    operation: Option<String>,
    metric: Option<String>,
    window: Option<RawNumber>,
    warning: Option<RawNumber>,
    critical: Option<RawNumber>,
    comparator: Option<String>,
    notify_no_data: Option<bool>,
    no_data_window: Option<RawNumber>,
    message: Option<String>,
}

/// One `apm_config.local.downtimes` entry as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawDowntime {
    scope: Option<String>,
    schedule: Option<RawSchedule>,
    comment: Option<String>,
}

/// `schedule:` of a downtime.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawSchedule {
    start: Option<String>,
    end: Option<String>,
    daily: Option<String>,
}

/// A config mistake: the key path (naming the monitor) and the problem.
pub type KeyError = (String, String);

fn text(v: &RawNumber) -> String {
    match v {
        RawNumber::Num(n) => n.to_string(),
        RawNumber::Text(s) => s.clone(),
    }
}

/// A monitor threshold: a fraction or `5%` for error rates, a duration with a unit (`250ms`)
/// or a number of milliseconds for latencies, a number otherwise. Latencies come back in ns.
pub fn parse_threshold(metric: Metric, v: &str) -> Result<f64, String> {
    let v = v.trim();
    let n = if metric.is_latency() {
        match v.parse::<f64>() {
            Ok(ms) => ms * 1e6,
            Err(_) => crate::local::search::parse_span_duration(v)
                .map_err(|e| format!("{e} (a latency: 250ms, 1.5s, or a number of milliseconds)"))?
                as f64,
        }
    } else if let Some(p) = v.strip_suffix('%') {
        p.trim()
            .parse::<f64>()
            .map_err(|_| format!("{v:?} is not a percentage"))?
            / 100.0
    } else {
        v.parse::<f64>().map_err(|_| format!("{v:?} is not a number"))?
    };
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{v:?} must be a number ≥ 0"));
    }
    if metric == Metric::ErrorRate && n > 1.0 {
        return Err(format!("{v:?}: an error rate is between 0 and 1 (or 0% and 100%)"));
    }
    Ok(n)
}

/// The `@webhook-NAME` mentions of a message, in order, without repeats.
pub fn mentions(message: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, _) in message.match_indices("@webhook-") {
        let rest = message.get(i + "@webhook-".len()..).unwrap_or("");
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            .collect();
        let name = name.trim_end_matches('.').to_owned();
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// `2026-12-05T10:00:00Z` (UTC, seconds optional) → ns since the epoch.
pub fn parse_utc(v: &str) -> Result<i64, String> {
    let bad = || format!("{v:?}: write a UTC time like 2026-12-05T22:00:00Z");
    let s = v.trim().strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = s.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let t: Vec<i64> = time
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let ([y, m, day], [hh, mm, rest @ ..]) = (d.as_slice(), t.as_slice()) else {
        return Err(bad());
    };
    let ss = rest.first().copied().unwrap_or(0);
    if !(1..=12).contains(m) || !(1..=31).contains(day) || *hh > 23 || *mm > 59 || ss > 60 || rest.len() > 1 {
        return Err(bad());
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if *m <= 2 { y - 1 } else { *y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok((days * 86_400 + hh * 3600 + mm * 60 + ss).saturating_mul(1_000_000_000))
}

fn parse_time_of_day(v: &str) -> Result<u32, String> {
    let (h, m) = v.trim().split_once(':').ok_or_else(|| format!("{v:?}: write HH:MM"))?;
    let (h, m): (u32, u32) = (
        h.parse().map_err(|_| format!("{v:?}: write HH:MM"))?,
        m.parse().map_err(|_| format!("{v:?}: write HH:MM"))?,
    );
    if h > 24 || m > 59 || (h == 24 && m > 0) {
        return Err(format!("{v:?} is not a time of day"));
    }
    Ok(h * 3600 + m * 60)
}

/// A schedule from its fields.
///
/// # Errors
/// The field and the problem.
pub fn schedule(
    start: Option<&str>,
    end: Option<&str>,
    daily: Option<&str>,
) -> Result<Schedule, (&'static str, String)> {
    if let Some(d) = daily {
        if start.is_some() || end.is_some() {
            return Err(("daily", "use either daily or start/end".to_owned()));
        }
        let (a, b) = d
            .split_once('-')
            .ok_or_else(|| ("daily", format!("{d:?}: write HH:MM-HH:MM (UTC)")))?;
        return Ok(Schedule::Daily {
            start_s: parse_time_of_day(a).map_err(|e| ("daily", e))?,
            end_s: parse_time_of_day(b).map_err(|e| ("daily", e))?,
        });
    }
    let start_ns = start.map(parse_utc).transpose().map_err(|e| ("start", e))?;
    let end_ns = end.map(parse_utc).transpose().map_err(|e| ("end", e))?;
    if let (Some(s), Some(e)) = (start_ns, end_ns)
        && e <= s
    {
        return Err(("end", "must be after start".to_owned()));
    }
    Ok(Schedule::Once { start_ns, end_ns })
}

impl MonitorConfig {
    /// Checks what the file says.
    ///
    /// # Errors
    /// The first mistake: key path naming the monitor (`apm_config.local.monitors[1] ("checkout
    /// errors").critical`) and the problem.
    pub(crate) fn from_raw(
        monitors: Vec<RawMonitor>,
        webhooks: BTreeMap<String, String>,
        downtimes: Vec<RawDowntime>,
        interval: Option<Duration>,
    ) -> Result<Self, KeyError> {
        for (name, url) in &webhooks {
            let key = format!("apm_config.local.webhooks.{name}");
            let uri: http::Uri = url
                .parse()
                .map_err(|e| (key.clone(), format!("{url:?} is not a URL: {e}")))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err((key, format!("{url:?}: use an http:// or https:// URL")));
            }
        }
        if monitors.len() > MAX_MONITORS {
            return Err((
                "apm_config.local.monitors".to_owned(),
                format!("{} monitors; at most {MAX_MONITORS}", monitors.len()),
            ));
        }
        let mut out = Vec::with_capacity(monitors.len());
        for (i, m) in monitors.into_iter().enumerate() {
            let label = match &m.name {
                Some(n) => format!("apm_config.local.monitors[{i}] ({n:?})"),
                None => format!("apm_config.local.monitors[{i}]"),
            };
            let err = |field: &str, message: String| (format!("{label}.{field}"), message);
            let required = |field: &str, v: Option<String>| {
                v.filter(|s| !s.trim().is_empty())
                    .map(|s| s.trim().to_owned())
                    .ok_or_else(|| err(field, "is required".to_owned()))
            };
            let name = required("name", m.name.clone())?;
            if out.iter().any(|o: &MonitorSpec| o.name == name) {
                return Err(err("name", format!("{name:?} is used by another monitor")));
            }
            let service = required("service", m.service.clone())?;
            let metric_name = required("metric", m.metric.clone())?;
            let metric = Metric::parse(&metric_name)
                .ok_or_else(|| err("metric", format!("{metric_name:?}: use one of {}", Metric::NAMES)))?;
            let window = match &m.window {
                None => Duration::from_secs(300),
                Some(w) => crate::local::parse_duration(&text(w)).map_err(|e| err("window", e))?,
            };
            let critical = m
                .critical
                .as_ref()
                .ok_or_else(|| err("critical", "is required".to_owned()))
                .and_then(|c| parse_threshold(metric, &text(c)).map_err(|e| err("critical", e)))?;
            let warning = m
                .warning
                .as_ref()
                .map(|w| parse_threshold(metric, &text(w)).map_err(|e| err("warning", e)))
                .transpose()?;
            let comparator = match m.comparator.as_deref().map(str::trim) {
                None | Some("above") => Comparator::Above,
                Some("below") => Comparator::Below,
                Some(other) => return Err(err("comparator", format!("{other:?}: use above or below"))),
            };
            if let Some(w) = warning {
                let ordered = match comparator {
                    Comparator::Above => w <= critical,
                    Comparator::Below => w >= critical,
                };
                if !ordered {
                    return Err(err(
                        "warning",
                        format!(
                            "must be {} critical (warning {w}, critical {critical})",
                            if comparator == Comparator::Above {
                                "at most"
                            } else {
                                "at least"
                            }
                        ),
                    ));
                }
            }
            let no_data_window = match &m.no_data_window {
                None => window.saturating_mul(2),
                Some(w) => crate::local::parse_duration(&text(w)).map_err(|e| err("no_data_window", e))?,
            };
            let message = m.message.clone().unwrap_or_default();
            let hooks = mentions(&message);
            for h in &hooks {
                if !webhooks.contains_key(h) {
                    return Err(err(
                        "message",
                        format!(
                            "@webhook-{h}: no such webhook in apm_config.local.webhooks (known: {})",
                            if webhooks.is_empty() {
                                "none".to_owned()
                            } else {
                                webhooks.keys().cloned().collect::<Vec<_>>().join(", ")
                            }
                        ),
                    ));
                }
            }
            out.push(MonitorSpec {
                name,
                service,
                resource: m.resource.filter(|s| !s.trim().is_empty()),
                operation: m.operation.filter(|s| !s.trim().is_empty()),
                metric,
                window,
                warning,
                critical,
                comparator,
                notify_no_data: m.notify_no_data.unwrap_or(false),
                no_data_window,
                message,
                webhooks: hooks,
            });
        }
        let mut downs = Vec::with_capacity(downtimes.len());
        for (i, d) in downtimes.into_iter().enumerate() {
            let key = |f: &str| format!("apm_config.local.downtimes[{i}].{f}");
            let scope = DowntimeScope::parse(d.scope.as_deref().unwrap_or("")).map_err(|e| (key("scope"), e))?;
            let s = d.schedule.unwrap_or_default();
            let schedule = schedule(s.start.as_deref(), s.end.as_deref(), s.daily.as_deref())
                .map_err(|(f, e)| (key(&format!("schedule.{f}")), e))?;
            downs.push(DowntimeSpec {
                scope,
                schedule,
                comment: d.comment.unwrap_or_default(),
            });
        }
        Ok(Self {
            monitors: out,
            webhooks,
            downtimes: downs,
            interval: interval.unwrap_or(DEFAULT_INTERVAL),
        })
    }

    /// From YAML text of the `apm_config.local` section's three lists (tests, embedding).
    ///
    /// # Errors
    /// A YAML error or a [`KeyError`], as a message.
    pub fn from_yaml(yaml: &str) -> Result<Self, String> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Doc {
            monitors: Vec<RawMonitor>,
            webhooks: BTreeMap<String, String>,
            downtimes: Vec<RawDowntime>,
        }
        let doc: Doc = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
        Self::from_raw(doc.monitors, doc.webhooks, doc.downtimes, None).map_err(|(k, m)| format!("{k}: {m}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
webhooks:
  ops: http://127.0.0.1:9/hook
monitors:
  - name: checkout errors
    service: shop
    resource: POST /checkout
    metric: error_rate
    window: 5m
    warning: 5%
    critical: 0.1
    notify_no_data: true
    message: 'Checkout failing: {{value}} @webhook-ops'
  - name: slow
    service: shop
    metric: p99
    warning: 200ms
    critical: 500
downtimes:
  - scope: monitor:slow
    schedule: {daily: '22:00-06:00'}
  - scope: service:shop
    schedule: {start: '2026-12-05T10:00:00Z', end: '2026-12-05T11:00:00Z'}
";

    #[test]
    fn a_good_config() {
        let c = MonitorConfig::from_yaml(GOOD).unwrap();
        let m = &c.monitors[0];
        assert_eq!((m.metric, m.warning, m.critical), (Metric::ErrorRate, Some(0.05), 0.1));
        assert_eq!(
            (m.window, m.no_data_window),
            (Duration::from_secs(300), Duration::from_secs(600))
        );
        assert_eq!(m.webhooks, vec!["ops"]);
        let s = &c.monitors[1];
        assert_eq!((s.warning, s.critical), (Some(200e6), 500e6));
        assert_eq!(c.downtimes[0].scope, DowntimeScope::Monitor("slow".to_owned()));
        let day = |h: i64| h * 3_600_000_000_000;
        assert!(c.downtimes[0].schedule.active(day(23)));
        assert!(c.downtimes[0].schedule.active(day(24 + 5)));
        assert!(!c.downtimes[0].schedule.active(day(12)));
        let ten = parse_utc("2026-12-05T10:00:00Z").unwrap();
        assert_eq!(ten, 1_796_464_800 * 1_000_000_000);
        assert!(c.downtimes[1].schedule.active(ten));
        assert!(!c.downtimes[1].schedule.active(ten + day(1)));
    }

    #[test]
    fn mistakes_name_the_monitor_and_the_field() {
        let cases = [
            ("metric: p42", "monitors[0] (\"m\").metric"),
            ("metric: p99\n    critical: fast", "monitors[0] (\"m\").critical"),
            ("metric: error_rate\n    critical: 2", "monitors[0] (\"m\").critical"),
            ("metric: hits", "monitors[0] (\"m\").critical: is required"),
            (
                "metric: hits\n    critical: 5\n    warning: 9",
                "monitors[0] (\"m\").warning",
            ),
            (
                "metric: hits\n    critical: 5\n    window: 3w",
                "monitors[0] (\"m\").window",
            ),
            (
                "metric: hits\n    critical: 5\n    message: '@webhook-nope'",
                "monitors[0] (\"m\").message: @webhook-nope",
            ),
            (
                "metric: hits\n    critical: 5\n    comparator: sideways",
                "monitors[0] (\"m\").comparator",
            ),
        ];
        for (fields, want) in cases {
            let yaml = format!("monitors:\n  - name: m\n    service: s\n    {fields}\n");
            let e = MonitorConfig::from_yaml(&yaml).unwrap_err();
            assert!(e.contains(want), "{fields}: {e}");
        }
        let e = MonitorConfig::from_yaml("monitors:\n  - service: s\n    metric: hits\n    critical: 1\n").unwrap_err();
        assert!(e.contains("monitors[0].name: is required"), "{e}");
        let e = MonitorConfig::from_yaml("monitors:\n  - name: a\n    service: s\n    metrc: hits\n").unwrap_err();
        assert!(e.contains("metrc"), "{e}");
        let e = MonitorConfig::from_yaml("webhooks:\n  x: ftp://h/\n").unwrap_err();
        assert!(e.contains("webhooks.x"), "{e}");
        let e = MonitorConfig::from_yaml("downtimes:\n  - scope: team:x\n").unwrap_err();
        assert!(e.contains("downtimes[0].scope"), "{e}");
        let e =
            MonitorConfig::from_yaml("downtimes:\n  - scope: '*'\n    schedule: {daily: '25:00-01:00'}\n").unwrap_err();
        assert!(e.contains("downtimes[0].schedule.daily"), "{e}");
    }

    #[test]
    fn webhook_mentions() {
        assert_eq!(mentions("x @webhook-a, @webhook-b_2. @webhook-a"), vec!["a", "b_2"]);
        assert!(mentions("no hooks @webhook-").is_empty());
    }
}
