//! Settings of trace propagation and of the HTTP instrumentation (`tracer::http`), read from
//! `DD_TRACE_PROPAGATION_*`, `DD_TRACE_HTTP_*`, `DD_TRACE_CLIENT_IP_*`,
//! `DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP` and `DD_TRACE_BAGGAGE_TAG_KEYS`.

use super::ConfigError;
use super::env::{ConfigSource, bool_var, get, invalid, vars};
use crate::propagation::{PropagationSettings, Style};

/// A set of HTTP status codes (`DD_TRACE_HTTP_SERVER_ERROR_STATUSES` syntax:
/// `500-599,404`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StatusRanges {
    bits: [u64; 10],
}

impl std::fmt::Debug for StatusRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries((100..600).filter(|c| self.contains(*c))).finish()
    }
}

impl StatusRanges {
    /// The codes `from..=to`.
    pub const fn range(from: u16, to: u16) -> Self {
        let mut bits = [0u64; 10];
        let mut c = from;
        while c <= to && c < 640 {
            bits[(c / 64) as usize] |= 1 << (c % 64);
            c += 1;
        }
        Self { bits }
    }

    /// Whether `code` is in the set.
    pub fn contains(&self, code: u16) -> bool {
        self.bits
            .get(usize::from(code / 64))
            .is_some_and(|w| w & (1 << (code % 64)) != 0)
    }

    /// Parses `a-b,c,...` of codes in 100..=599.
    ///
    /// # Errors
    /// A part that is not a code or a range of codes.
    pub fn parse(v: &str) -> Result<Self, String> {
        let mut set = Self { bits: [0; 10] };
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let code = |s: &str| {
                s.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .ok_or_else(|| format!("{part:?} is not a status code or range in 100..=599"))
            };
            let (a, b) = (code(a)?, code(b)?);
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let r = Self::range(lo, hi);
            for (w, r) in set.bits.iter_mut().zip(r.bits) {
                *w |= r;
            }
        }
        Ok(set)
    }
}

/// How query strings are treated in `http.url`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum QueryStringMode {
    /// Redact what Datadog's default regex matches (secrets, tokens, keys).
    #[default]
    DefaultObfuscation,
    /// Redact what this regex matches (`DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP`).
    Obfuscate(String),
    /// Keep as is (`DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP=""`).
    Keep,
    /// Leave the query string out (`DD_TRACE_HTTP_URL_QUERY_STRING_DISABLED=true`).
    Drop,
}

/// Settings of the HTTP server and client middleware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    pub(crate) server_error_statuses: StatusRanges,
    pub(crate) client_error_statuses: StatusRanges,
    pub(crate) client_ip_enabled: bool,
    pub(crate) client_ip_header: Option<String>,
    pub(crate) query_string: QueryStringMode,
    pub(crate) baggage_tag_keys: Vec<String>,
    pub(crate) header_tags: Vec<HeaderTag>,
}

/// One `DD_TRACE_HEADER_TAGS` item: a header copied to HTTP spans as a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderTag {
    /// The header, lower case.
    pub(crate) header: http::HeaderName,
    /// The tag for the request header: the mapped name, else
    /// `http.request.headers.<normalized header>`.
    pub(crate) request_tag: String,
    /// The tag for the response header: the mapped name, else
    /// `http.response.headers.<normalized header>`.
    pub(crate) response_tag: String,
}

impl HeaderTag {
    /// The header.
    pub fn header(&self) -> &str {
        self.header.as_str()
    }

    /// The tag of the request header.
    pub fn request_tag(&self) -> &str {
        &self.request_tag
    }

    /// The tag of the response header.
    pub fn response_tag(&self) -> &str {
        &self.response_tag
    }

    /// Parses `DD_TRACE_HEADER_TAGS`: items separated by commas (or by spaces when there is
    /// no comma), each `header` or `header:tag` (split at the last colon). As Datadog's
    /// tracers do: header names are case-insensitive; a mapped tag is used as given; a bare
    /// header becomes `http.request.headers.<h>` / `http.response.headers.<h>` with `<h>`
    /// the lower-cased name in which every character other than `a-z 0-9 _ - /` is `_`
    /// (so `X-Request.Id` → `x-request_id`). `x-datadog-*` headers are ignored.
    ///
    /// # Errors
    /// An item whose header is not a valid HTTP header name.
    pub fn parse_list(v: &str) -> Result<Vec<Self>, String> {
        let items: Vec<&str> = if v.contains(',') {
            v.split(',').collect()
        } else {
            v.split_whitespace().collect()
        };
        let mut out: Vec<Self> = Vec::new();
        for item in items.into_iter().map(str::trim).filter(|i| !i.is_empty()) {
            let (header, tag) = match item.rsplit_once(':') {
                Some((h, t)) if !t.trim().is_empty() => (h.trim(), Some(t.trim())),
                Some((h, _)) => (h.trim(), None),
                None => (item, None),
            };
            let lower = header.to_ascii_lowercase();
            let name = http::HeaderName::from_bytes(lower.as_bytes())
                .map_err(|_| format!("{header:?} is not an HTTP header name"))?;
            if lower.starts_with("x-datadog-") {
                continue;
            }
            let (request_tag, response_tag) = match tag {
                Some(t) => (t.to_owned(), t.to_owned()),
                None => {
                    let n: String = lower
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/') {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect();
                    (
                        format!("http.request.headers.{n}"),
                        format!("http.response.headers.{n}"),
                    )
                }
            };
            // A header named twice: the last item wins.
            out.retain(|h| h.header != name);
            out.push(Self {
                header: name,
                request_tag,
                response_tag,
            });
        }
        Ok(out)
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            server_error_statuses: StatusRanges::range(500, 599),
            client_error_statuses: StatusRanges::range(400, 499),
            client_ip_enabled: false,
            client_ip_header: None,
            query_string: QueryStringMode::DefaultObfuscation,
            baggage_tag_keys: DEFAULT_BAGGAGE_TAG_KEYS.iter().map(|k| (*k).to_owned()).collect(),
            header_tags: Vec::new(),
        }
    }
}

/// `DD_TRACE_BAGGAGE_TAG_KEYS`'s default.
const DEFAULT_BAGGAGE_TAG_KEYS: [&str; 3] = ["user.id", "session.id", "account.id"];

impl HttpSettings {
    /// Statuses that mark a server span as an error (default 500-599).
    pub fn server_error_statuses(&self) -> &StatusRanges {
        &self.server_error_statuses
    }

    /// Statuses that mark a client span as an error (default 400-499).
    pub fn client_error_statuses(&self) -> &StatusRanges {
        &self.client_error_statuses
    }

    /// Whether server spans get `http.client_ip` (default off: it is personal data).
    pub fn client_ip_enabled(&self) -> bool {
        self.client_ip_enabled
    }

    /// The one header to read the client IP from, instead of the usual list.
    pub fn client_ip_header(&self) -> Option<&str> {
        self.client_ip_header.as_deref()
    }

    /// How `http.url` treats query strings.
    pub fn query_string(&self) -> &QueryStringMode {
        &self.query_string
    }

    /// Baggage keys copied to server spans as `baggage.<key>` (`*`: all).
    pub fn baggage_tag_keys(&self) -> &[String] {
        &self.baggage_tag_keys
    }

    /// Headers copied to server and client spans as tags (`DD_TRACE_HEADER_TAGS`).
    pub fn header_tags(&self) -> &[HeaderTag] {
        &self.header_tags
    }

    /// Sets the headers copied to HTTP spans, in `DD_TRACE_HEADER_TAGS` syntax
    /// (see [`HeaderTag::parse_list`]).
    ///
    /// # Errors
    /// An item that names no valid HTTP header.
    pub fn with_header_tags(mut self, spec: &str) -> Result<Self, ConfigError> {
        self.header_tags = HeaderTag::parse_list(spec).map_err(|r| invalid(vars::HEADER_TAGS, spec, r))?;
        Ok(self)
    }
}

fn styles<S: ConfigSource + ?Sized>(src: &S, key: &'static str) -> Result<Option<Vec<Style>>, ConfigError> {
    match get(src, key) {
        Some(v) => Style::parse_list(&v).map(Some).map_err(|r| invalid(key, &v, r)),
        None => Ok(None),
    }
}

pub(super) fn read_propagation<S: ConfigSource + ?Sized>(src: &S) -> Result<PropagationSettings, ConfigError> {
    let both = match styles(src, vars::PROPAGATION_STYLE)? {
        Some(s) => s,
        None => get(src, vars::OTEL_PROPAGATORS)
            .map(|v| Style::parse_otel_list(&v))
            .unwrap_or_else(Style::defaults),
    };
    Ok(PropagationSettings {
        extract: styles(src, vars::PROPAGATION_STYLE_EXTRACT)?.unwrap_or_else(|| both.clone()),
        inject: styles(src, vars::PROPAGATION_STYLE_INJECT)?.unwrap_or(both),
        extract_first: bool_var(src, vars::PROPAGATION_EXTRACT_FIRST)?.unwrap_or(false),
    })
}

pub(super) fn read_http<S: ConfigSource + ?Sized>(src: &S) -> Result<HttpSettings, ConfigError> {
    let mut h = HttpSettings::default();
    if let Some(v) = get(src, vars::HTTP_SERVER_ERROR_STATUSES) {
        h.server_error_statuses =
            StatusRanges::parse(&v).map_err(|r| invalid(vars::HTTP_SERVER_ERROR_STATUSES, &v, r))?;
    }
    if let Some(v) = get(src, vars::HTTP_CLIENT_ERROR_STATUSES) {
        h.client_error_statuses =
            StatusRanges::parse(&v).map_err(|r| invalid(vars::HTTP_CLIENT_ERROR_STATUSES, &v, r))?;
    }
    h.client_ip_enabled = bool_var(src, vars::CLIENT_IP_ENABLED)?.unwrap_or(false);
    h.client_ip_header = get(src, vars::CLIENT_IP_HEADER).map(|v| v.to_ascii_lowercase());
    if let Some(header) = &h.client_ip_header {
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(invalid(vars::CLIENT_IP_HEADER, header, "expected an HTTP header name"));
        }
    }
    // Set but empty means "do not obfuscate", so read it raw.
    match src.get(vars::QUERY_STRING_REGEXP).map(|v| v.trim().to_owned()) {
        Some(v) if v.is_empty() => h.query_string = QueryStringMode::Keep,
        Some(v) => {
            #[cfg(feature = "tower")]
            if let Err(e) = regex::Regex::new(&v) {
                return Err(invalid(
                    vars::QUERY_STRING_REGEXP,
                    &v,
                    format!("not a valid regex: {e}"),
                ));
            }
            h.query_string = QueryStringMode::Obfuscate(v);
        }
        None => {}
    }
    if bool_var(src, vars::HTTP_URL_QUERY_STRING_DISABLED)?.unwrap_or(false) {
        h.query_string = QueryStringMode::Drop;
    }
    if let Some(v) = get(src, vars::HEADER_TAGS) {
        h.header_tags = HeaderTag::parse_list(&v).map_err(|r| invalid(vars::HEADER_TAGS, &v, r))?;
    }
    if let Some(v) = src.get(vars::BAGGAGE_TAG_KEYS) {
        h.baggage_tag_keys = v
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TracerConfig;

    fn cfg(vars: &[(&str, &str)]) -> Result<TracerConfig, ConfigError> {
        TracerConfig::from_source(vars)
    }

    #[test]
    fn propagation_defaults_and_overrides() {
        let c = cfg(&[]).unwrap_or_default();
        assert_eq!(c.propagation().extract(), Style::defaults());
        assert_eq!(c.propagation().inject(), Style::defaults());
        assert!(!c.propagation().extract_first());

        let c = cfg(&[
            ("DD_TRACE_PROPAGATION_STYLE", "tracecontext, B3MULTI"),
            ("DD_TRACE_PROPAGATION_STYLE_INJECT", "b3 single header,baggage"),
            ("DD_TRACE_PROPAGATION_EXTRACT_FIRST", "true"),
        ])
        .unwrap_or_default();
        assert_eq!(c.propagation().extract(), [Style::TraceContext, Style::B3Multi]);
        assert_eq!(c.propagation().inject(), [Style::B3Single, Style::Baggage]);
        assert!(c.propagation().extract_first());

        let c = cfg(&[("DD_TRACE_PROPAGATION_STYLE_EXTRACT", "none")]).unwrap_or_default();
        assert!(c.propagation().extract().is_empty());
        assert_eq!(c.propagation().inject(), Style::defaults());

        // OTEL_PROPAGATORS only when no DD variable says otherwise; unknown entries skipped.
        let c = cfg(&[("OTEL_PROPAGATORS", "b3,xray,baggage")]).unwrap_or_default();
        assert_eq!(c.propagation().extract(), [Style::B3Single, Style::Baggage]);
        let c = cfg(&[("OTEL_PROPAGATORS", "b3"), ("DD_TRACE_PROPAGATION_STYLE", "datadog")]).unwrap_or_default();
        assert_eq!(c.propagation().extract(), [Style::Datadog]);
    }

    #[test]
    fn http_settings() {
        let c = cfg(&[]).unwrap_or_default();
        let h = c.http();
        assert!(h.server_error_statuses().contains(500) && h.server_error_statuses().contains(599));
        assert!(!h.server_error_statuses().contains(404));
        assert!(h.client_error_statuses().contains(404) && !h.client_error_statuses().contains(500));
        assert!(!h.client_ip_enabled());
        assert_eq!(h.query_string(), &QueryStringMode::DefaultObfuscation);
        assert_eq!(h.baggage_tag_keys(), ["user.id", "session.id", "account.id"]);

        let c = cfg(&[
            ("DD_TRACE_HTTP_SERVER_ERROR_STATUSES", "500-502, 404,599-598"),
            ("DD_TRACE_CLIENT_IP_ENABLED", "true"),
            ("DD_TRACE_CLIENT_IP_HEADER", "X-Real-IP"),
            ("DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP", ""),
            ("DD_TRACE_BAGGAGE_TAG_KEYS", "*"),
        ])
        .unwrap_or_default();
        let h = c.http();
        let server: Vec<u16> = (100..600).filter(|s| h.server_error_statuses().contains(*s)).collect();
        assert_eq!(server, [404, 500, 501, 502, 598, 599]);
        assert!(h.client_ip_enabled());
        assert_eq!(h.client_ip_header(), Some("x-real-ip"));
        assert_eq!(h.query_string(), &QueryStringMode::Keep);
        assert_eq!(h.baggage_tag_keys(), ["*"]);

        let c = cfg(&[
            ("DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP", "ssn=\\d+"),
            ("DD_TRACE_HTTP_URL_QUERY_STRING_DISABLED", "false"),
        ])
        .unwrap_or_default();
        assert_eq!(c.http().query_string(), &QueryStringMode::Obfuscate("ssn=\\d+".into()));
        let c = cfg(&[("DD_TRACE_HTTP_URL_QUERY_STRING_DISABLED", "true")]).unwrap_or_default();
        assert_eq!(c.http().query_string(), &QueryStringMode::Drop);
    }

    #[test]
    fn header_tags_as_the_datadog_tracers_parse_them() {
        assert!(cfg(&[]).is_ok_and(|c| c.http().header_tags().is_empty()));
        let tags = |spec: &str| -> Vec<(String, String, String)> {
            cfg(&[("DD_TRACE_HEADER_TAGS", spec)])
                .unwrap_or_default()
                .http()
                .header_tags()
                .iter()
                .map(|h| {
                    (
                        h.header().to_owned(),
                        h.request_tag().to_owned(),
                        h.response_tag().to_owned(),
                    )
                })
                .collect()
        };
        let want = |items: &[(&str, &str, &str)]| -> Vec<(String, String, String)> {
            items
                .iter()
                .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
                .collect()
        };
        let expected = want(&[
            (
                "x-request.id",
                "http.request.headers.x-request_id",
                "http.response.headers.x-request_id",
            ),
            ("user-agent", "ua.copy", "ua.copy"),
            ("accept", "http.request.headers.accept", "http.response.headers.accept"),
        ]);
        assert_eq!(
            tags(" X-Request.ID , User-Agent:ua.copy,x-datadog-trace-id,Accept:"),
            expected
        );
        assert_eq!(
            tags("X-Request.ID User-Agent:ua.copy Accept: x-datadog-origin"),
            expected
        );
        assert_eq!(
            tags("accept,Accept:mine"),
            want(&[("accept", "mine", "mine")]),
            "the last item for a header wins"
        );
        assert!(
            cfg(&[("DD_TRACE_HEADER_TAGS", "x-b3:a:b")]).is_err(),
            "x-b3:a is no header name"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases: &[(&str, &str)] = &[
            ("DD_TRACE_PROPAGATION_STYLE", "datadog,jaeger"),
            ("DD_TRACE_PROPAGATION_STYLE_EXTRACT", "x"),
            ("DD_TRACE_PROPAGATION_STYLE_INJECT", "b3single"),
            ("DD_TRACE_PROPAGATION_EXTRACT_FIRST", "sometimes"),
            ("DD_TRACE_HTTP_SERVER_ERROR_STATUSES", "5xx"),
            ("DD_TRACE_HTTP_SERVER_ERROR_STATUSES", "500-700"),
            ("DD_TRACE_HTTP_CLIENT_ERROR_STATUSES", "-"),
            ("DD_TRACE_CLIENT_IP_ENABLED", "2"),
            ("DD_TRACE_CLIENT_IP_HEADER", "bad header"),
            ("DD_TRACE_HEADER_TAGS", "x-ok,bad header:tag"),
            #[cfg(feature = "tower")]
            ("DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP", "(unclosed"),
        ];
        for (key, value) in cases {
            match cfg(&[(key, value)]) {
                Err(ConfigError::Invalid { key: k, value: v, .. }) => assert_eq!((k, v.as_str()), (*key, *value)),
                Ok(_) => panic!("{key}={value:?} was accepted"),
            }
        }
    }
}
