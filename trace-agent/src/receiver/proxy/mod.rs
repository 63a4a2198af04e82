//! The proxy routes, as the Datadog agent serves them: `/evp_proxy/v1..v4/<path>` (Event
//! Platform: CI Visibility, LLM Observability, …) to `https://<X-Datadog-EVP-Subdomain>.<site>`
//! and `/telemetry/proxy/<path>` (instrumentation telemetry) to
//! `https://instrumentation-telemetry-intake.<site>`, with the API key added, bodies bounded,
//! and the intake's answer (or the network error) relayed to the client.
//!
//! Without an API key (local mode) nothing can be delivered: the routes answer as the Datadog
//! agent does when they are off (EVP: 405 `EVPProxy is disabled: …`; telemetry: 404), are
//! counted, and `/info` does not list them. `/v0.7/config` (Remote Configuration) needs the
//! Datadog agent's Remote Config client, which this agent does not have: 404, not listed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::routes::{Reply, reply, text};
use crate::config::{AgentConfig, ProxyConfig, Secret, TELEMETRY_MAX_BODY};

mod wire;
use wire::*;
pub use wire::{check_evp, evp_rest};

/// Path prefix of the EVP proxy (followed by `v1/` … `v4/`).
pub const EVP_PREFIX: &str = "/evp_proxy/";
/// Path prefix of the telemetry proxy.
pub const TELEMETRY_PREFIX: &str = "/telemetry/proxy/";
/// Timeout of one telemetry exchange.
pub const TELEMETRY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of an intake reply relayed back (the rest is cut).
pub const MAX_REPLY: usize = 1 << 20;
/// Headers of an EVP request forwarded to the intake (every other header is dropped).
pub const EVP_ALLOWED_HEADERS: &[&str] = &[
    "Content-Type",
    "Accept-Encoding",
    "Content-Encoding",
    "User-Agent",
    "DD-CI-PROVIDER-NAME",
];

/// Which proxy a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/evp_proxy/v1..v4/`.
    Evp,
    /// `/telemetry/proxy/`.
    Telemetry,
    /// `/v0.7/config`.
    RemoteConfig,
}

impl Route {
    fn key(self) -> &'static str {
        match self {
            Self::Evp => "evp_proxy",
            Self::Telemetry => "telemetry_proxy",
            Self::RemoteConfig => "remote_config",
        }
    }
}

pub use crate::status::proxy::{ProxyStatus, RouteStatus};

/// The proxy routes' counters.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    routes: Mutex<BTreeMap<&'static str, RouteStatus>>,
    requests: AtomicU64,
}

impl ProxyCounters {
    fn with(&self, route: Route, f: impl FnOnce(&mut RouteStatus)) {
        let mut m = self.routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(m.entry(route.key()).or_default());
    }

    /// Counts a refusal; the first of each (route, reason) is logged with its message.
    fn refused(&self, route: Route, reason: &str, msg: &str) {
        let mut first = false;
        self.with(route, |r| {
            let n = r.refused.entry(reason.to_owned()).or_default();
            *n += 1;
            first = *n == 1;
        });
        if first {
            tracing::warn!("{}: {msg} (logged once; counted in `trace-agent status`)", route.key());
        }
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> ProxyStatus {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    /// Requests seen on the proxy routes.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Forwards proxy requests; one per agent.
#[derive(Clone)]
pub struct Proxy {
    client: Option<HttpsClient>,
    api_key: Option<Secret>,
    site: String,
    hostname: String,
    default_env: String,
    config: ProxyConfig,
    /// Counters.
    pub counters: Arc<ProxyCounters>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("api_key", &self.api_key.as_ref().map(Secret::masked))
            .field("site", &self.site)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn https_client() -> Result<HttpsClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https))
}

/// The hostname the proxies report (`hostname`, else the system's).
fn agent_hostname(config: &AgentConfig) -> String {
    crate::identity::hostname(&config.hostname)
}

impl Proxy {
    /// The proxy of `config`. Without an API key no client is built: every route refuses.
    pub fn new(config: &AgentConfig) -> Self {
        let client = match config.api_key.is_some().then(https_client) {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                tracing::warn!("proxy routes off: TLS setup failed: {e}");
                None
            }
            None => None,
        };
        Self {
            client,
            api_key: config.api_key.clone(),
            site: config.site.clone(),
            hostname: agent_hostname(config),
            default_env: config.default_env.clone(),
            config: config.proxy.clone(),
            counters: Arc::default(),
        }
    }

    /// Whether the EVP proxy forwards (an API key and not disabled): `/info` lists it then.
    pub fn evp_served(&self) -> bool {
        self.config.evp_enabled && self.api_key.is_some()
    }

    /// Whether the telemetry proxy forwards: `/info` lists it then.
    pub fn telemetry_served(&self) -> bool {
        self.config.telemetry_enabled && self.api_key.is_some()
    }

    /// Handles a request for `route`. Bodies are read under the receivers' shared byte budget
    /// (`state.body_budget`; no decoder slot is taken, also while forwarding); a body that
    /// finds no room within `decoder_timeout` is drained and refused with 503.
    pub async fn handle(&self, state: &super::AppState, route: Route, req: Request<Incoming>) -> Reply {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        match route {
            Route::Evp => self.evp(state, req).await,
            Route::Telemetry => self.telemetry(state, req).await,
            Route::RemoteConfig => {
                let msg = "remote configuration is not available: this agent has no Remote Config client \
                           (it is not listed in /info)";
                self.counters.refused(route, "not_available", msg);
                text(StatusCode::NOT_FOUND, msg)
            }
        }
    }

    fn refuse(&self, route: Route, status: StatusCode, reason: &str, msg: &str) -> Reply {
        self.counters.refused(route, reason, msg);
        text(status, msg)
    }

    async fn evp(&self, state: &super::AppState, req: Request<Incoming>) -> Reply {
        let route = Route::Evp;
        if !self.config.evp_enabled {
            return self.refuse(
                route,
                StatusCode::METHOD_NOT_ALLOWED,
                "disabled",
                "EVPProxy is disabled: Has been disabled in config",
            );
        }
        let key = self.config.evp_api_key.as_ref().or(self.api_key.as_ref());
        let (Some(client), Some(key)) = (&self.client, key) else {
            return self.refuse(
                route,
                StatusCode::METHOD_NOT_ALLOWED,
                "no_api_key",
                "EVPProxy is disabled: no API key is configured (local mode), nothing was forwarded",
            );
        };
        let path = req.uri().path();
        let Some(rest) = evp_rest(path) else {
            return self.refuse(
                route,
                StatusCode::NOT_FOUND,
                "bad_path",
                "EVPProxy: expected /evp_proxy/v1/ to /evp_proxy/v4/",
            );
        };
        let h = req.headers();
        let subdomain = h
            .get("x-datadog-evp-subdomain")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Err(msg) = check_evp(subdomain, rest, req.uri().query().unwrap_or("")) {
            return self.refuse(route, StatusCode::BAD_REQUEST, "bad_request", &msg);
        }
        if h.get("x-datadog-needsappkey")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return self.refuse(
                route,
                StatusCode::FORBIDDEN,
                "needs_app_key",
                "EVPProxy: this request needs an application key, which this agent does not have",
            );
        }
        let base_of = |host: &str| {
            if host.starts_with("http://") || host.starts_with("https://") {
                host.to_owned()
            } else {
                format!("https://{subdomain}.{host}")
            }
        };
        let url_of = |base: String| match req.uri().query() {
            Some(q) => format!("{base}{rest}?{q}"),
            None => format!("{base}{rest}"),
        };
        let target = url_of(base_of(self.config.evp_dd_url.as_deref().unwrap_or(&self.site)));
        let copies: Vec<(String, Secret)> = self
            .config
            .evp_additional_endpoints
            .iter()
            .flat_map(|(host, keys)| {
                let url = url_of(base_of(host));
                keys.iter().map(move |k| (url.clone(), k.clone()))
            })
            .collect();
        let mut out = HeaderMap::new();
        for name in EVP_ALLOWED_HEADERS {
            if let Some(v) = h.get(*name) {
                out.insert(HeaderName::from_static(lower_static(name)), v.clone());
            }
        }
        self.common_headers(&mut out, key);
        if let Some(v) = h.get("datadog-container-id") {
            out.insert("datadog-container-id", v.clone());
        }
        out.insert("x-datadog-hostname", header_value(&self.hostname));
        out.insert("x-datadog-agentdefaultenv", header_value(&self.default_env));
        let method = req.method().clone();
        let limit = self.config.evp_max_payload_size;
        let timeout = self.config.evp_timeout;
        let declared = super::budget::declared_length(h);
        let (body, _permit) = match read_bounded(state, req.into_body(), declared, limit, timeout).await {
            Ok(b) => b,
            Err((status, reason, msg)) => return self.refuse(route, status, reason, &msg),
        };
        // Copies to the additional endpoints go at the same time; only the main answer is
        // relayed (the Datadog agent's behaviour), the others are counted.
        let mut extra = tokio::task::JoinSet::new();
        for (url, k) in copies {
            let mut headers = out.clone();
            if let Ok(v) = HeaderValue::from_str(k.expose()) {
                headers.insert("dd-api-key", v);
            }
            let (client, method, body) = (client.clone(), method.clone(), body.clone());
            extra.spawn(async move { send_once(&client, method, &url, headers, body, timeout).await });
        }
        let reply = self.forward(route, client, method, &target, out, body, timeout).await;
        while let Some(done) = extra.join_next().await {
            let ok = matches!(done, Ok(Ok(status)) if status.is_success());
            self.counters.with(route, |r| {
                if ok {
                    r.additional_delivered += 1;
                } else {
                    r.additional_failed += 1;
                }
            });
        }
        reply
    }

    async fn telemetry(&self, state: &super::AppState, req: Request<Incoming>) -> Reply {
        let route = Route::Telemetry;
        if !self.config.telemetry_enabled {
            return self.refuse(
                route,
                StatusCode::NOT_FOUND,
                "disabled",
                "telemetry forwarding is disabled (apm_config.telemetry.enabled: false)",
            );
        }
        let (Some(client), Some(key)) = (&self.client, &self.api_key) else {
            return self.refuse(
                route,
                StatusCode::NOT_FOUND,
                "no_api_key",
                "telemetry forwarding is off: no API key is configured (local mode), nothing was forwarded",
            );
        };
        let path = req.uri().path();
        let rest = path.strip_prefix("/telemetry/proxy").unwrap_or("/");
        let base = self
            .config
            .telemetry_dd_url
            .clone()
            .unwrap_or_else(|| format!("https://instrumentation-telemetry-intake.{}", self.site));
        let target = match req.uri().query() {
            Some(q) => format!("{base}{rest}?{q}"),
            None => format!("{base}{rest}"),
        };
        let mut out = HeaderMap::new();
        for (name, value) in req.headers() {
            if !is_hop_by_hop(name) && !name.as_str().eq_ignore_ascii_case("dd-api-key") {
                out.append(name.clone(), value.clone());
            }
        }
        self.common_headers(&mut out, key);
        out.insert("dd-agent-hostname", header_value(&self.hostname));
        out.insert("dd-agent-env", header_value(&self.default_env));
        let method = req.method().clone();
        let declared = super::budget::declared_length(req.headers());
        let read = read_bounded(state, req.into_body(), declared, TELEMETRY_MAX_BODY, TELEMETRY_TIMEOUT).await;
        let (body, _permit) = match read {
            Ok(b) => b,
            Err((status, reason, msg)) => return self.refuse(route, status, reason, &msg),
        };
        self.forward(route, client, method, &target, out, body, TELEMETRY_TIMEOUT)
            .await
    }

    fn common_headers(&self, out: &mut HeaderMap, key: &Secret) {
        if let Ok(v) = HeaderValue::from_str(key.expose()) {
            out.insert("dd-api-key", v);
        }
        out.insert(
            "via",
            header_value(&format!("trace-agent {}", crate::identity::AGENT_VERSION)),
        );
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        route: Route,
        client: &HttpsClient,
        method: http::Method,
        target: &str,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Reply {
        let uri: Uri = match target.parse() {
            Ok(u) => u,
            Err(e) => {
                return self.refuse(
                    route,
                    StatusCode::BAD_REQUEST,
                    "bad_target",
                    &format!("cannot build the intake URL {target:?}: {e}"),
                );
            }
        };
        let len = body.len() as u64;
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(h) = builder.headers_mut() {
            *h = headers;
        }
        let request = match builder.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => {
                return self.refuse(route, StatusCode::BAD_REQUEST, "bad_request", &e.to_string());
            }
        };
        let exchange = async {
            let resp = client.request(request).await?;
            let (parts, body) = resp.into_parts();
            let collected = Limited::new(body, MAX_REPLY).collect().await;
            Ok::<_, hyper_util::client::legacy::Error>((parts, collected.map(|c| c.to_bytes())))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => self.refuse(
                route,
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                &format!("the intake did not answer within {timeout:?}: not delivered"),
            ),
            Ok(Err(e)) => {
                let msg = format!("cannot reach the intake: {}", error_chain(&e));
                tracing::debug!("{}: {msg}", route.key());
                self.refuse(route, StatusCode::BAD_GATEWAY, "network", &msg)
            }
            Ok(Ok((parts, body))) => {
                let body = body.unwrap_or_else(|_| Bytes::from_static(b"(reply body cut)"));
                if parts.status.is_success() {
                    self.counters.with(route, |r| {
                        r.delivered += 1;
                        r.bytes += len;
                    });
                } else {
                    self.counters.with(route, |r| {
                        *r.intake_errors.entry(parts.status.as_u16()).or_default() += 1;
                    });
                }
                let mut r = reply(parts.status, "application/json", body);
                if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
                    r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
                } else {
                    r.headers_mut().remove(header::CONTENT_TYPE);
                }
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evp_paths_and_inputs_are_checked_like_the_datadog_agent() {
        assert_eq!(
            evp_rest("/evp_proxy/v2/api/v2/citestcycle"),
            Some("/api/v2/citestcycle")
        );
        assert_eq!(evp_rest("/evp_proxy/v4/x"), Some("/x"));
        assert_eq!(evp_rest("/evp_proxy/v5/x"), None);
        assert_eq!(evp_rest("/evp_proxy/v2"), None);
        assert!(check_evp("citestcycle-intake", "/api/v2/citestcycle", "a=b&c=d").is_ok());
        assert!(check_evp("", "/x", "").unwrap_err().contains("no subdomain"));
        assert!(
            check_evp("evil.com/", "/x", "")
                .unwrap_err()
                .contains("invalid subdomain")
        );
        assert!(
            check_evp("a", "/x/../y%2f", "")
                .unwrap_err()
                .contains("invalid target path")
        );
        assert!(
            check_evp("a", "/x", "q=<script>")
                .unwrap_err()
                .contains("invalid query")
        );
    }
}

#[cfg(test)]
mod counter_tests {
    use super::*;

    #[test]
    fn refusals_and_deliveries_are_counted_per_route() {
        let c = ProxyCounters::default();
        c.refused(Route::Evp, "no_api_key", "EVPProxy is disabled");
        c.refused(Route::Evp, "no_api_key", "EVPProxy is disabled");
        c.refused(Route::Telemetry, "too_large", "body too large");
        c.with(Route::Telemetry, |r| {
            r.delivered += 1;
            r.bytes += 10;
        });
        let s = c.snapshot();
        assert_eq!(s["evp_proxy"].refused["no_api_key"], 2);
        assert_eq!(s["telemetry_proxy"].refused["too_large"], 1);
        assert_eq!((s["telemetry_proxy"].delivered, s["telemetry_proxy"].bytes), (1, 10));
        let text = crate::status::proxy::render(&s);
        assert!(text.contains("Proxy evp_proxy: 0 delivered"), "{text}");
    }
}
