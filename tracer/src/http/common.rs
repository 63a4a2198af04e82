//! What the server and client layers share: tag values without allocations where possible,
//! `http.url` with its query string obfuscated, the id-free fallback path, the client IP.

use std::net::IpAddr;

use regex::Regex;

use crate::config::QueryStringMode;
use crate::span::Str;

/// Datadog's default `DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP` (as in dd-trace-dotnet
/// and dd-trace-go): passwords, secrets, keys, tokens, signatures, bearer tokens, GitHub
/// tokens, JWTs, private keys and SSH keys.
pub(crate) const DEFAULT_QUERY_REGEX: &str = concat!(
    r#"(?i)(?:(?:"|%22)?)(?:(?:old[-_]?|new[-_]?)?p(?:ass)?w(?:or)?d(?:1|2)?|pass(?:[-_]?phrase)?|secret|"#,
    r#"(?:api[-_]?|private[-_]?|public[-_]?|access[-_]?|secret[-_]?|app(?:lication)?[-_]?)key(?:[-_]?id)?|"#,
    r#"token|consumer[-_]?(?:id|key|secret)|sign(?:ed|ature)?|auth(?:entication|orization)?)"#,
    r#"(?:(?:\s|%20)*(?:=|%3D)[^&]+|(?:"|%22)(?:\s|%20)*(?::|%3A)(?:\s|%20)*(?:"|%22)(?:%2[^2]|%[^2]|[^"%])+(?:"|%22))|"#,
    r#"(?:bearer(?:\s|%20)+[a-z0-9._\-]+|token(?::|%3A)[a-z0-9]{13}|gh[opsu]_[0-9a-zA-Z]{36}|"#,
    r#"ey[I-L](?:[\w=-]|%3D)+\.ey[I-L](?:[\w=-]|%3D)+(?:\.(?:[\w.+/=-]|%3D|%2F|%2B)+)?|"#,
    r#"-{5}BEGIN(?:[a-z\s]|%20)+PRIVATE(?:\s|%20)KEY-{5}[^\-]+-{5}END(?:[a-z\s]|%20)+PRIVATE(?:\s|%20)KEY(?:-{5})?(?:\n|%0A)?|"#,
    r#"(?:ssh-(?:rsa|dss)|ecdsa-[a-z0-9]+-[a-z0-9]+)(?:\s|%20|%09)+(?:[a-z0-9/.+]|%2F|%5C|%2B){100,}(?:=|%3D)*(?:(?:\s|%20|%09)+[a-z0-9._-]+)?)"#
);

const REDACTED: &str = "<redacted>";

/// How `http.url` is written.
#[derive(Debug, Clone)]
pub(crate) enum QueryPolicy {
    Obfuscate(Regex),
    Keep,
    Drop,
    /// The configured regex did not compile: redact the whole query string.
    RedactAll,
}

impl QueryPolicy {
    pub(crate) fn new(mode: &QueryStringMode) -> Self {
        let pattern = match mode {
            QueryStringMode::Keep => return Self::Keep,
            QueryStringMode::Drop => return Self::Drop,
            QueryStringMode::DefaultObfuscation => DEFAULT_QUERY_REGEX,
            QueryStringMode::Obfuscate(p) => p.as_str(),
        };
        match Regex::new(pattern) {
            Ok(re) => Self::Obfuscate(re),
            Err(e) => {
                tracing::warn!(target: "tracer::http", error = %e, "the query-string obfuscation regex does not compile; query strings are fully redacted");
                Self::RedactAll
            }
        }
    }

    /// `scheme://host/path?query`, the query string obfuscated per the policy.
    pub(crate) fn url(&self, scheme: &str, host: &str, path: &str, query: Option<&str>) -> String {
        let mut url = String::with_capacity(scheme.len() + 3 + host.len() + path.len() + query.map_or(0, str::len) + 1);
        if !host.is_empty() {
            url.push_str(scheme);
            url.push_str("://");
            url.push_str(host);
        }
        url.push_str(path);
        match (self, query.filter(|q| !q.is_empty())) {
            (_, None) | (Self::Drop, _) => {}
            (Self::Keep, Some(q)) => {
                url.push('?');
                url.push_str(q);
            }
            (Self::RedactAll, Some(_)) => {
                url.push('?');
                url.push_str(REDACTED);
            }
            (Self::Obfuscate(re), Some(q)) => {
                url.push('?');
                // `is_match` is several times cheaper than a replace that finds nothing.
                if re.is_match(q) {
                    url.push_str(&re.replace_all(q, REDACTED));
                } else {
                    url.push_str(q);
                }
            }
        }
        url
    }
}

/// The URL of a request: scheme and authority from the URI (client requests, proxies) or
/// the `Host` header (server requests).
pub(crate) fn request_url(policy: &QueryPolicy, uri: &http::Uri, headers: &http::HeaderMap) -> String {
    url_with_host(
        policy,
        uri,
        headers.get(http::header::HOST).and_then(|h| h.to_str().ok()),
    )
}

/// [`request_url`] with the `Host` header's value already found (`host_header`).
pub(crate) fn url_with_host(policy: &QueryPolicy, uri: &http::Uri, host_header: Option<&str>) -> String {
    let host = uri
        .authority()
        .map(http::uri::Authority::as_str)
        .or(host_header)
        .unwrap_or("");
    policy.url(uri.scheme_str().unwrap_or("http"), host, uri.path(), uri.query())
}

/// Most propagation headers kept from one request.
const MAX_PROPAGATION_HEADERS: usize = 16;

/// The propagation headers of a request, found in one pass over its headers (with the
/// `Host` and `User-Agent` the server span needs): cheaper than looking each style's headers
/// up by name (each lookup hashes), and empty for the common request that carries none.
pub(crate) struct PropagationHeaders<'a> {
    /// Inline, not initialised until used: most requests carry none.
    found: smallvec::SmallVec<[(&'a str, &'a str); MAX_PROPAGATION_HEADERS]>,
    /// The first `Host` header, when it is visible ASCII.
    pub(crate) host: Option<&'a str>,
    /// The first `User-Agent` header, when it is visible ASCII.
    pub(crate) user_agent: Option<&'a str>,
}

impl<'a> PropagationHeaders<'a> {
    pub(crate) fn collect(headers: &'a http::HeaderMap) -> Self {
        let mut out = Self {
            found: smallvec::SmallVec::new(),
            host: None,
            user_agent: None,
        };
        // The first value of a repeated `Host` or `User-Agent` counts, as with `HeaderMap::get`.
        let (mut seen_host, mut seen_user_agent) = (false, false);
        for (name, value) in headers {
            let n = name.as_str();
            let wanted = match n.as_bytes().first() {
                Some(b'x') => n.starts_with("x-datadog-") || n.starts_with("x-b3-"),
                Some(b't') => n == "traceparent" || n == "tracestate",
                Some(b'b') => n == "b3" || n == "baggage",
                Some(b'h') if n == "host" && !seen_host => {
                    seen_host = true;
                    out.host = value.to_str().ok();
                    false
                }
                Some(b'u') if n == "user-agent" && !seen_user_agent => {
                    seen_user_agent = true;
                    out.user_agent = value.to_str().ok();
                    false
                }
                _ => false,
            };
            if !wanted || out.found.len() >= MAX_PROPAGATION_HEADERS || out.found.iter().any(|(k, _)| *k == n) {
                continue;
            }
            if let Ok(v) = value.to_str() {
                out.found.push((n, v));
            }
        }
        out
    }

    /// Whether no propagation header was found.
    pub(crate) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }
}

impl crate::propagation::Extractor for PropagationHeaders<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.found.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }
}

/// `"<method> <rest>"` (a resource), without the formatting machinery.
pub(crate) fn join(method: &str, rest: &str) -> String {
    let mut s = String::with_capacity(method.len() + 1 + rest.len());
    s.push_str(method);
    s.push(' ');
    s.push_str(rest);
    s
}

/// The method as a tag value, without allocating for the standard ones.
pub(crate) fn method_str(m: &http::Method) -> Str {
    let s: &'static str = match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => return Str::from(m.as_str().to_owned()),
    };
    Str::from(s)
}

/// The status code as a tag value (a string in `meta`, as Datadog's tracers send it).
pub(crate) fn status_str(code: u16) -> Str {
    let s: &'static str = match code {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        301 => "301",
        302 => "302",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => return Str::from(code.to_string()),
    };
    Str::from(s)
}

/// `"<code>: <reason>"`, the message Datadog's tracers put on a span failed by its status.
pub(crate) fn status_message(status: http::StatusCode) -> String {
    format!(
        "{}: {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Unknown")
    )
}

/// Most path segments kept in a fallback resource.
const MAX_SEGMENTS: usize = 8;

/// Whether a path segment looks like an identifier or other high-cardinality value: it
/// holds a digit, is long, or holds characters that ids, emails and encoded data use.
fn id_like(segment: &str) -> bool {
    segment.len() >= 20
        || segment
            .bytes()
            .any(|b| b.is_ascii_digit() || b"%&'()*+,:=@".contains(&b) || !b.is_ascii())
}

/// The path with id-like segments replaced by `?` and at most [`MAX_SEGMENTS`] segments, for
/// a resource when no route template is known: `/users/42/orders` → `/users/?/orders`.
pub(crate) fn collapse_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len().min(128));
    for (n, segment) in path.split('/').skip(1).enumerate() {
        if n >= MAX_SEGMENTS {
            out.push_str("/…");
            break;
        }
        out.push('/');
        out.push_str(if id_like(segment) { "?" } else { segment });
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Headers that carry the client IP behind proxies, in Datadog's order.
const CLIENT_IP_HEADERS: [&str; 10] = [
    "x-forwarded-for",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-forwarded",
    "forwarded-for",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
];

fn is_public(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback() || v6.is_unspecified() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Parses one address of a forwarding header: `1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `::1`,
/// or a `Forwarded`-style `for="…"`.
fn parse_ip(raw: &str) -> Option<IpAddr> {
    let s = raw.trim().trim_start_matches("for=").trim_matches('"');
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    s.rsplit_once(':').and_then(|(host, _)| host.parse().ok())
}

/// The client IP from the request headers: the configured header only, or else the first
/// public address in the usual forwarding headers (the first private one if none is
/// public).
pub(crate) fn client_ip(headers: &http::HeaderMap, only: Option<&str>) -> Option<IpAddr> {
    let mut private = None;
    let mut scan = |value: &str| -> Option<IpAddr> {
        for part in value.split(',') {
            if let Some(ip) = parse_ip(part) {
                if is_public(&ip) {
                    return Some(ip);
                }
                private.get_or_insert(ip);
            }
        }
        None
    };
    if let Some(name) = only {
        let value = headers.get(name)?.to_str().ok()?;
        return scan(value).or(private);
    }
    for name in CLIENT_IP_HEADERS {
        if let Some(ip) = headers.get(name).and_then(|v| v.to_str().ok()).and_then(&mut scan) {
            return Some(ip);
        }
    }
    private
}

/// `error.stack` for an error: its type and message, then its chain of sources.
pub(crate) fn error_chain<E: std::error::Error + ?Sized>(kind: &str, err: &E) -> String {
    use crate::span::error::{CAUSED_BY, with_causes};
    with_causes(format!("{kind}: {err}"), err, CAUSED_BY)
}

/// The `DD_TRACE_HEADER_TAGS` tags of `headers`: `(tag, value)` for each configured header
/// present (several values joined with `,`), with the request or the response tag name.
#[inline]
pub(crate) fn header_tags(
    headers: &http::HeaderMap,
    tags: &[crate::config::HeaderTag],
    response: bool,
) -> Vec<(String, String)> {
    if tags.is_empty() {
        // The common case (no `DD_TRACE_HEADER_TAGS`): nothing to look at.
        return Vec::new();
    }
    configured_header_tags(headers, tags, response)
}

fn configured_header_tags(
    headers: &http::HeaderMap,
    tags: &[crate::config::HeaderTag],
    response: bool,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in tags {
        let mut values = headers.get_all(&t.header).iter().peekable();
        if values.peek().is_none() {
            continue;
        }
        let joined = values
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
            .collect::<Vec<_>>()
            .join(",");
        let tag = if response { &t.response_tag } else { &t.request_tag };
        out.push((tag.clone(), joined));
    }
    out
}
