//! What the agent's `GET /info` says that the tracer uses.

use serde_json::Value;

/// The agent's capabilities.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct AgentInfo {
    pub(crate) version: Option<String>,
    pub(crate) endpoints: Vec<String>,
    pub(crate) client_drop_p0s: bool,
    /// `peer_tags`: keys of the peer tags stats aggregate on (absent or null: none).
    pub(crate) peer_tags: Vec<String>,
    /// `span_kinds_stats_computed`: span kinds whose spans always count in stats.
    pub(crate) span_kinds_stats_computed: Vec<String>,
    /// `span_events`: the agent takes native span events.
    pub(crate) span_events: bool,
}

impl AgentInfo {
    /// Reads an `/info` body leniently: missing or odd fields become defaults.
    pub(crate) fn parse(body: &[u8]) -> Option<Self> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let obj = v.as_object()?;
        let strings = |key: &str| -> Vec<String> {
            obj.get(key)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default()
        };
        Some(Self {
            peer_tags: strings("peer_tags"),
            span_kinds_stats_computed: strings("span_kinds_stats_computed"),
            span_events: obj.get("span_events").and_then(Value::as_bool).unwrap_or(false),
            version: obj.get("version").and_then(Value::as_str).map(str::to_owned),
            endpoints: obj
                .get("endpoints")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
            client_drop_p0s: obj.get("client_drop_p0s").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// Whether the agent lists `path` among its endpoints.
    pub(crate) fn has_endpoint(&self, path: &str) -> bool {
        self.endpoints.iter().any(|e| e == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fields_it_needs() {
        let body =
            br#"{"version":"7.60.0","endpoints":["/v0.4/traces","/v0.5/traces",3],"client_drop_p0s":true,"config":{}}"#;
        let info = AgentInfo::parse(body).unwrap_or_default();
        assert_eq!(info.version.as_deref(), Some("7.60.0"));
        assert!(info.has_endpoint("/v0.5/traces"));
        assert!(!info.has_endpoint("/v0.6/stats"));
        assert!(info.client_drop_p0s);
        let body = br#"{"peer_tags":["out.host","db.name"],"span_kinds_stats_computed":["server","client"],"span_events":true}"#;
        let info = AgentInfo::parse(body).unwrap_or_default();
        assert_eq!(info.peer_tags, ["out.host", "db.name"]);
        assert_eq!(info.span_kinds_stats_computed, ["server", "client"]);
        assert!(info.span_events);
        let info = AgentInfo::parse(br#"{"peer_tags":null}"#).unwrap_or_default();
        assert!(info.peer_tags.is_empty() && !info.span_events);
        assert_eq!(AgentInfo::parse(b"not json"), None);
        assert_eq!(AgentInfo::parse(b"{}"), Some(AgentInfo::default()));
    }
}
