//! The monitors page: states, thresholds, downtimes, mute forms, webhook deliveries.

use super::*;

pub(super) fn threshold(metric: Metric, v: Option<f64>) -> String {
    match v {
        None => "–".to_owned(),
        Some(v) if metric.is_latency() => duration(Some(v)),
        Some(v) if metric == Metric::ErrorRate => percent(v),
        Some(v) => format!("{v:.2}"),
    }
}

pub(super) fn schedule_text(s: &Schedule) -> String {
    match *s {
        Schedule::Once { start_ns, end_ns } => format!(
            "{} → {}",
            start_ns.map_or_else(|| "now".to_owned(), |s| format!("{} UTC", clock(s))),
            end_ns.map_or_else(|| "until removed".to_owned(), |e| format!("{} UTC", clock(e)))
        ),
        Schedule::Daily { start_s, end_s } => format!(
            "daily {:02}:{:02} → {:02}:{:02} UTC",
            start_s / 3600,
            start_s % 3600 / 60,
            end_s / 3600,
            end_s % 3600 / 60
        ),
    }
}

pub(super) const MUTE_CHOICES: [&str; 4] = ["15m", "1h", "4h", "1d"];

pub(super) fn mute_form(scope: &str, id: &str) -> String {
    let mut out = format!(
        "<form method=\"post\" action=\"/monitors/downtimes\" class=\"inline\" id=\"{id}\"><input type=\"hidden\" name=\"scope\" value=\"{}\">\
         <select name=\"duration\">",
        escape(scope)
    );
    for d in MUTE_CHOICES {
        let _ = write!(out, "<option value=\"{d}\">{d}</option>");
    }
    out.push_str("</select><button type=\"submit\">Mute</button></form>");
    out
}

/// The monitors page.
pub fn monitors(
    f: &Frame<'_>,
    statuses: &[MonitorStatus],
    events: &[Event],
    downtimes: &[Downtime],
    hooks: &WebhookStatus,
) -> String {
    if statuses.is_empty() {
        return page(
            f,
            "<div class=\"empty\" id=\"no-monitors\">No monitor is defined. Add some to <code>datadog.yaml</code> under \
             <code>apm_config.local.monitors</code> (see the trace-agent README, \"Monitors\"), e.g.<pre>apm_config:\n  local:\n    \
             webhooks:\n      ops: http://127.0.0.1:9000/hook\n    monitors:\n      - name: checkout errors\n        service: shop\n        \
             metric: error_rate\n        window: 5m\n        warning: 5%\n        critical: 10%\n        \
             message: 'Checkout errors at {{value}} @webhook-ops'</pre></div>",
        );
    }
    let mut body = String::from(
        "<table id=\"monitors\"><thead><tr><th>Monitor</th><th>State</th><th>Value</th><th>Warning</th><th>Critical</th>\
         <th>Scope</th><th>Window</th><th>Last change (UTC)</th><th>Mute</th></tr></thead><tbody>",
    );
    for m in statuses {
        let s = &m.spec;
        let scope = format!(
            "{}{}{}",
            s.service,
            s.operation.as_ref().map(|o| format!(" · {o}")).unwrap_or_default(),
            s.resource.as_ref().map(|r| format!(" · {r}")).unwrap_or_default()
        );
        let cmp = if s.comparator == Comparator::Below { "< " } else { "> " };
        let _ = write!(
            body,
            "<tr id=\"m-{enc}\" data-monitor=\"{name}\" data-state=\"{st}\" data-value=\"{val}\" data-muted=\"{muted}\">\
             <td><b>{name}</b><br><small>{metric}</small><br><small class=\"msg\">{msg}</small></td>\
             <td><span class=\"state {cls}\">{st}</span>{mutedtext}</td><td>{value}</td><td>{cmp}{warn}</td><td>{cmp}{crit}</td>\
             <td style=\"text-align:left\"><a href=\"/services/{senc}\">{scope}</a></td><td>{win} s</td><td>{changed}</td><td>{form}</td></tr>",
            enc = encode_segment(&m.name),
            name = escape(&m.name),
            st = m.state.as_str(),
            val = m.value.map_or_else(|| "NaN".to_owned(), |v| v.to_string()),
            muted = u8::from(m.muted),
            metric = s.metric.as_str(),
            msg = escape(&s.message),
            cls = state_class(m.state),
            mutedtext = if m.muted { " <small>(muted)</small>" } else { "" },
            value = threshold(s.metric, m.value),
            warn = threshold(s.metric, s.warning),
            crit = threshold(s.metric, Some(s.critical)),
            senc = encode_segment(&s.service),
            scope = escape(&scope),
            win = s.window.as_secs(),
            changed = clock(m.last_change_ns),
            form = mute_form(
                &format!("monitor:{}", m.name),
                &format!("mute-{}", encode_segment(&m.name))
            ),
        );
    }
    body.push_str("</tbody></table>");
    let _ = write!(
        body,
        "<p id=\"webhooks\" data-delivered=\"{}\" data-failed=\"{}\">Webhooks: {} delivered, {} failed, {} dropped, {} retries{}</p>",
        hooks.delivered,
        hooks.failed,
        hooks.delivered,
        hooks.failed,
        hooks.dropped,
        hooks.retries,
        hooks
            .last_error
            .as_ref()
            .map(|e| format!(" · last failure: {}", escape(e)))
            .unwrap_or_default()
    );
    body.push_str("<h2>Downtimes</h2>");
    if downtimes.is_empty() {
        body.push_str("<p id=\"no-downtimes\">None. Mute a monitor above, or a whole service:</p>");
    } else {
        body.push_str(
            "<table id=\"downtimes\"><thead><tr><th>Scope</th><th>When</th><th>Comment</th><th></th></tr></thead><tbody>",
        );
        for d in downtimes {
            let _ = write!(
                body,
                "<tr data-downtime=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                d.id,
                escape(&d.spec.scope.as_string()),
                escape(&schedule_text(&d.spec.schedule)),
                escape(&d.spec.comment),
                if d.from_config {
                    "datadog.yaml".to_owned()
                } else {
                    format!(
                        "<form method=\"post\" action=\"/monitors/downtimes/{}/delete\" class=\"inline\"><button type=\"submit\">Remove</button></form>",
                        d.id
                    )
                }
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str(
        "<form method=\"post\" action=\"/monitors/downtimes\" id=\"new-downtime\"><label>Scope <input name=\"scope\" \
         placeholder=\"service:NAME, monitor:NAME or *\"></label> <label>for <select name=\"duration\">",
    );
    for d in MUTE_CHOICES {
        let _ = write!(body, "<option value=\"{d}\">{d}</option>");
    }
    body.push_str("</select></label> <input name=\"comment\" placeholder=\"comment\"> <button type=\"submit\">Add downtime</button></form>");
    let _ = write!(body, "<h2>Events ({} kept in memory)</h2>", events.len());
    if events.is_empty() {
        body.push_str("<p>No change of state since the agent started.</p>");
    } else {
        body.push_str(
            "<table id=\"events\"><thead><tr><th>Monitor</th><th>Change</th><th>Value</th><th>At (UTC)</th><th>Notified</th></tr></thead><tbody>",
        );
        let metric_of = |name: &str| {
            statuses
                .iter()
                .find(|m| m.name == name)
                .map_or(Metric::Hits, |m| m.spec.metric)
        };
        for e in events.iter().take(200) {
            let _ = write!(
                body,
                "<tr data-event-monitor=\"{name}\" data-from=\"{from}\" data-to=\"{to}\"><td>{name}</td><td>{from} → <span class=\"state {cls}\">{to}</span></td>\
                 <td>{value}</td><td>{at}</td><td style=\"text-align:left\">{notified}</td></tr>",
                name = escape(&e.monitor),
                from = e.from.as_str(),
                to = e.to.as_str(),
                cls = state_class(e.to),
                value = threshold(metric_of(&e.monitor), e.value),
                at = clock(e.at_ns),
                notified = if e.muted {
                    "muted by a downtime".to_owned()
                } else {
                    escape(&e.notified.join(", "))
                },
            );
        }
        body.push_str("</tbody></table>");
    }
    page(f, &body)
}
