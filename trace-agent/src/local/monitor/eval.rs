//! Evaluating monitors: pure. [`Engine::apply`] takes the time and what the store read for
//! each monitor, and returns the notifications to send; states, transitions (events) and
//! downtimes live here, no I/O.
//!
//! A monitor's state from its value over its window:
//! * `ALERT` when the value is beyond `critical`, else `WARN` when beyond `warning`, else `OK`
//!   ("beyond": strictly above, or strictly below with `comparator: below`);
//! * `NO_DATA` (only with `notify_no_data`) when no hit was seen over `no_data_window` — not
//!   before the monitor has existed that long;
//! * without hits, `error_rate` and the latencies have no value: the state is `OK`.
//!
//! Every change of state is an event (kept in memory, the last [`MAX_EVENTS`]). It notifies
//! the message's webhooks unless a downtime covers the monitor at that moment (the event then
//! says `muted`); evaluation goes on during downtimes.

use std::collections::VecDeque;

use serde::Serialize;

use super::config::{Comparator, DowntimeScope, DowntimeSpec, Metric, MonitorConfig, MonitorSpec, Schedule};

/// Events kept.
pub const MAX_EVENTS: usize = 1000;
/// Downtimes kept (config + created).
pub const MAX_DOWNTIMES: usize = 200;

/// A monitor's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum State {
    /// Within thresholds.
    #[serde(rename = "OK")]
    Ok,
    /// Beyond `warning`.
    #[serde(rename = "WARN")]
    Warn,
    /// Beyond `critical`.
    #[serde(rename = "ALERT")]
    Alert,
    /// No hits over `no_data_window`.
    #[serde(rename = "NO_DATA")]
    NoData,
}

impl State {
    /// `OK`, `WARN`, `ALERT`, `NO_DATA`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warn => "WARN",
            Self::Alert => "ALERT",
            Self::NoData => "NO_DATA",
        }
    }
}

/// What the store holds for one monitor at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Reading {
    /// Hits over the monitor's window.
    pub hits: u64,
    /// Errors over the window.
    pub errors: u64,
    /// Latency percentiles over the window, ns.
    pub p50: Option<f64>,
    /// 95th.
    pub p95: Option<f64>,
    /// 99th.
    pub p99: Option<f64>,
    /// Hits over `no_data_window`.
    pub recent_hits: u64,
}

/// The metric's value (`None`: nothing to measure).
pub fn value(spec: &MonitorSpec, r: &Reading) -> Option<f64> {
    match spec.metric {
        Metric::Hits => Some(r.hits as f64),
        Metric::RequestsPerSecond => Some(r.hits as f64 / spec.window.as_secs_f64().max(1e-9)),
        Metric::ErrorRate => (r.hits > 0).then(|| r.errors as f64 / r.hits as f64),
        Metric::P50 => r.p50,
        Metric::P95 => r.p95,
        Metric::P99 => r.p99,
    }
}

/// The state of `spec` given its reading; `age_ns` is how long the monitor has existed.
pub fn decide(spec: &MonitorSpec, r: &Reading, age_ns: i64) -> (State, Option<f64>) {
    let no_data_ns = i64::try_from(spec.no_data_window.as_nanos()).unwrap_or(i64::MAX);
    if spec.notify_no_data && r.recent_hits == 0 && age_ns >= no_data_ns {
        return (State::NoData, None);
    }
    let v = value(spec, r);
    let beyond = |t: f64, v: f64| match spec.comparator {
        Comparator::Above => v > t,
        Comparator::Below => v < t,
    };
    let state = match v {
        None => State::Ok,
        Some(v) if beyond(spec.critical, v) => State::Alert,
        Some(v) if spec.warning.is_some_and(|w| beyond(w, v)) => State::Warn,
        Some(_) => State::Ok,
    };
    (state, v)
}

/// A change of state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Monitor.
    pub monitor: String,
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// Value that caused it.
    pub value: Option<f64>,
    /// When, ns since the epoch.
    pub at_ns: i64,
    /// A downtime muted it (no notification).
    pub muted: bool,
    /// Webhooks notified.
    pub notified: Vec<String>,
}

/// A webhook call to make.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// Webhook name.
    pub webhook: String,
    /// Its URL.
    pub url: String,
    /// The JSON body.
    pub body: serde_json::Value,
}

/// A downtime with its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Downtime {
    /// Id (for removal).
    pub id: u64,
    /// What and when.
    #[serde(flatten)]
    pub spec: DowntimeSpec,
    /// From the config file (`false`: created on the page or the API).
    pub from_config: bool,
}

/// One monitor's status, for the page and `GET /api/v1/monitors`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonitorStatus {
    /// Name.
    pub name: String,
    /// State.
    pub state: State,
    /// Last value (`null`: none).
    pub value: Option<f64>,
    /// Last change of state, ns since the epoch.
    pub last_change_ns: i64,
    /// Last evaluation, ns (0: not yet).
    pub last_eval_ns: i64,
    /// A downtime covers it now.
    pub muted: bool,
    /// The definition.
    #[serde(flatten)]
    pub spec: MonitorSpec,
}

#[derive(Debug, Clone)]
struct Slot {
    state: State,
    value: Option<f64>,
    last_change_ns: i64,
    last_eval_ns: i64,
}

/// Monitors' states, events and downtimes.
#[derive(Debug)]
pub struct Engine {
    specs: Vec<MonitorSpec>,
    slots: Vec<Slot>,
    webhooks: std::collections::BTreeMap<String, String>,
    events: VecDeque<Event>,
    downtimes: Vec<Downtime>,
    next_id: u64,
    started_ns: i64,
    /// Where the monitors page is, for the notifications' `url`.
    pub page_url: String,
}

fn fmt_value(metric: Metric, v: Option<f64>) -> String {
    match v {
        None => "no data".to_owned(),
        Some(v) if metric.is_latency() => format!("{:.1} ms", v / 1e6),
        Some(v) if metric == Metric::ErrorRate => format!("{:.1} %", v * 100.0),
        Some(v) => format!("{v:.2}"),
    }
}

impl Engine {
    /// Every monitor OK as of `now_ns`, with the configured downtimes.
    pub fn new(config: &MonitorConfig, now_ns: i64) -> Self {
        let mut e = Self {
            specs: config.monitors.clone(),
            slots: config
                .monitors
                .iter()
                .map(|_| Slot {
                    state: State::Ok,
                    value: None,
                    last_change_ns: now_ns,
                    last_eval_ns: 0,
                })
                .collect(),
            webhooks: config.webhooks.clone(),
            events: VecDeque::new(),
            downtimes: Vec::new(),
            next_id: 1,
            started_ns: now_ns,
            page_url: String::new(),
        };
        for d in &config.downtimes {
            e.add_downtime(d.clone(), true);
        }
        e
    }

    /// The monitors' definitions.
    pub fn specs(&self) -> &[MonitorSpec] {
        &self.specs
    }

    /// Whether a downtime covers `spec` at `now_ns`.
    fn muted(&self, spec: &MonitorSpec, now_ns: i64) -> bool {
        self.downtimes
            .iter()
            .any(|d| d.spec.scope.covers(spec) && d.spec.schedule.active(now_ns))
    }

    /// One evaluation: `readings[i]` is monitor `i`'s (missing ones are skipped). Returns the
    /// webhook calls to make.
    pub fn apply(&mut self, now_ns: i64, readings: &[Option<Reading>]) -> Vec<Notification> {
        let mut out = Vec::new();
        self.downtimes
            .retain(|d| d.from_config || !d.spec.schedule.expired(now_ns));
        for (i, reading) in readings.iter().enumerate() {
            let (Some(spec), Some(r)) = (self.specs.get(i), reading) else {
                continue;
            };
            let (state, value) = decide(spec, r, now_ns.saturating_sub(self.started_ns));
            let muted = self.muted(spec, now_ns);
            let Some(slot) = self.slots.get_mut(i) else {
                continue;
            };
            let from = slot.state;
            slot.value = value;
            slot.last_eval_ns = now_ns;
            if state == from {
                continue;
            }
            slot.state = state;
            slot.last_change_ns = now_ns;
            let mut notified = Vec::new();
            if !muted {
                for hook in &spec.webhooks {
                    if let Some(url) = self.webhooks.get(hook) {
                        out.push(Notification {
                            webhook: hook.clone(),
                            url: url.clone(),
                            body: notification_body(spec, from, state, value, now_ns, &self.page_url),
                        });
                        notified.push(hook.clone());
                    }
                }
            }
            if self.events.len() == MAX_EVENTS {
                self.events.pop_front();
            }
            self.events.push_back(Event {
                monitor: spec.name.clone(),
                from,
                to: state,
                value,
                at_ns: now_ns,
                muted,
                notified,
            });
        }
        out
    }

    /// Every monitor's status at `now_ns`.
    pub fn statuses(&self, now_ns: i64) -> Vec<MonitorStatus> {
        self.specs
            .iter()
            .zip(&self.slots)
            .map(|(spec, s)| MonitorStatus {
                name: spec.name.clone(),
                state: s.state,
                value: s.value,
                last_change_ns: s.last_change_ns,
                last_eval_ns: s.last_eval_ns,
                muted: self.muted(spec, now_ns),
                spec: spec.clone(),
            })
            .collect()
    }

    /// Events, newest first.
    pub fn events(&self) -> Vec<Event> {
        self.events.iter().rev().cloned().collect()
    }

    /// Downtimes (configured, then created).
    pub fn downtimes(&self) -> &[Downtime] {
        &self.downtimes
    }

    /// Adds a downtime; returns its id, `None` when [`MAX_DOWNTIMES`] are already set.
    pub fn add_downtime(&mut self, spec: DowntimeSpec, from_config: bool) -> Option<u64> {
        if self.downtimes.len() >= MAX_DOWNTIMES {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.downtimes.push(Downtime { id, spec, from_config });
        Some(id)
    }

    /// Removes a downtime created on the page or the API; `false` when unknown or from the
    /// config file (edit the file for those).
    pub fn remove_downtime(&mut self, id: u64) -> bool {
        let before = self.downtimes.len();
        self.downtimes.retain(|d| d.id != id || d.from_config);
        self.downtimes.len() < before
    }

    /// A downtime muting `scope` from `now_ns` for `duration_ns` (the page's "mute" button).
    pub fn mute_for(&mut self, scope: DowntimeScope, now_ns: i64, duration_ns: i64, comment: String) -> Option<u64> {
        self.add_downtime(
            DowntimeSpec {
                scope,
                schedule: Schedule::Once {
                    start_ns: Some(now_ns),
                    end_ns: Some(now_ns.saturating_add(duration_ns)),
                },
                comment,
            },
            false,
        )
    }
}

/// `{{value}}`, `{{state}}`, `{{name}}`, `{{service}}`, `{{resource}}`, `{{warning}}`,
/// `{{critical}}` in the message, replaced.
pub fn render_message(spec: &MonitorSpec, state: State, value: Option<f64>) -> String {
    let threshold = |t: Option<f64>| t.map_or_else(|| "–".to_owned(), |t| fmt_value(spec.metric, Some(t)));
    spec.message
        .replace("{{value}}", &fmt_value(spec.metric, value))
        .replace("{{state}}", state.as_str())
        .replace("{{name}}", &spec.name)
        .replace("{{service}}", &spec.service)
        .replace("{{resource}}", spec.resource.as_deref().unwrap_or("*"))
        .replace("{{warning}}", &threshold(spec.warning))
        .replace("{{critical}}", &threshold(Some(spec.critical)))
}

fn notification_body(
    spec: &MonitorSpec,
    from: State,
    to: State,
    value: Option<f64>,
    now_ns: i64,
    page: &str,
) -> serde_json::Value {
    serde_json::json!({
        "monitor": spec.name,
        "state": to,
        "previous_state": from,
        "value": value,
        "metric": spec.metric,
        "warning": spec.warning,
        "critical": spec.critical,
        "service": spec.service,
        "resource": spec.resource,
        "operation": spec.operation,
        "message": render_message(spec, to, value),
        "at_ns": now_ns,
        "url": page,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn config() -> MonitorConfig {
        MonitorConfig::from_yaml(
            "
webhooks: {ops: 'http://127.0.0.1:9/h', pager: 'http://127.0.0.1:9/p'}
monitors:
  - name: errors
    service: shop
    metric: error_rate
    window: 60
    warning: 0.1
    critical: 0.25
    notify_no_data: true
    no_data_window: 120
    message: 'errors at {{value}} ({{state}}) @webhook-ops @webhook-pager'
  - name: traffic
    service: shop
    metric: hits
    comparator: below
    critical: 10
    message: '@webhook-ops'
",
        )
        .unwrap()
    }

    fn r(hits: u64, errors: u64) -> Option<Reading> {
        Some(Reading {
            hits,
            errors,
            recent_hits: hits,
            ..Reading::default()
        })
    }

    #[test]
    fn transitions_are_events_and_notify() {
        let mut e = Engine::new(&config(), 0);
        assert!(e.apply(10 * S, &[r(100, 5), r(100, 0)]).is_empty(), "OK stays OK");
        let n = e.apply(20 * S, &[r(100, 15), r(100, 0)]);
        assert_eq!(n.len(), 2, "WARN notifies both webhooks");
        assert_eq!(n[0].body["state"], "WARN");
        assert_eq!(
            n[0].body["message"],
            "errors at 15.0 % (WARN) @webhook-ops @webhook-pager"
        );
        let n = e.apply(30 * S, &[r(100, 30), r(5, 0)]);
        assert_eq!(n.len(), 3, "errors → ALERT (2 hooks), traffic below 10 → ALERT (1)");
        assert_eq!(
            (n[0].body["previous_state"].as_str(), n[0].body["state"].as_str()),
            (Some("WARN"), Some("ALERT"))
        );
        let st = e.statuses(30 * S);
        assert_eq!(
            (st[0].state, st[0].value, st[0].last_change_ns),
            (State::Alert, Some(0.3), 30 * S)
        );
        // Exactly at the threshold is not beyond it.
        e.apply(40 * S, &[r(100, 25), r(10, 0)]);
        let st = e.statuses(40 * S);
        assert_eq!((st[0].state, st[1].state), (State::Warn, State::Ok));
        let events = e.events();
        assert_eq!(events.len(), 5);
        assert_eq!(
            (events[0].from, events[0].to, events[0].at_ns),
            (State::Alert, State::Ok, 40 * S)
        );
    }

    #[test]
    fn no_data_waits_for_the_no_data_window() {
        let mut e = Engine::new(&config(), 0);
        e.apply(60 * S, &[r(0, 0), None]);
        assert_eq!(e.statuses(60 * S)[0].state, State::Ok, "younger than no_data_window");
        let n = e.apply(120 * S, &[r(0, 0), None]);
        assert_eq!(e.statuses(120 * S)[0].state, State::NoData);
        assert_eq!(n[0].body["value"], serde_json::Value::Null);
        e.apply(130 * S, &[r(3, 0), None]);
        assert_eq!(e.statuses(130 * S)[0].state, State::Ok);
    }

    #[test]
    fn downtimes_mute_but_evaluation_goes_on() {
        let mut e = Engine::new(&config(), 0);
        let id = e
            .mute_for(
                DowntimeScope::Service("shop".to_owned()),
                10 * S,
                60 * S,
                "deploy".to_owned(),
            )
            .unwrap();
        assert!(e.statuses(10 * S).iter().all(|s| s.muted));
        let n = e.apply(20 * S, &[r(100, 50), r(100, 0)]);
        assert!(n.is_empty(), "muted");
        assert_eq!(e.statuses(20 * S)[0].state, State::Alert, "still evaluated");
        assert!(e.events()[0].muted && e.events()[0].notified.is_empty());
        // After the downtime: the recovery notifies.
        let n = e.apply(80 * S, &[r(100, 0), r(100, 0)]);
        assert_eq!(n.len(), 2);
        assert!(e.downtimes().is_empty(), "an expired created downtime is dropped");
        assert!(!e.remove_downtime(id));
        let id = e
            .mute_for(
                DowntimeScope::Monitor("errors".to_owned()),
                90 * S,
                60 * S,
                String::new(),
            )
            .unwrap();
        assert!(e.remove_downtime(id));
        assert!(!e.statuses(90 * S)[0].muted);
    }
}
