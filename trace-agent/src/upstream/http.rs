//! The HTTP client of the writers (hyper + rustls, HTTP/1.1, keep-alive) and the
//! classification of one request's outcome into success / retriable / rejected (spec 7.1).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Most bytes of an error response kept for the log / status.
const BODY_EXCERPT: usize = 256;
/// Most bytes of a response body read (the rest is discarded with the connection).
const MAX_RESPONSE_READ: usize = 64 * 1024;

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TLS configuration could not be built.
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// A cheap-to-clone HTTP(S) client.
#[derive(Clone, Debug)]
pub(crate) struct HttpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// 2xx.
    Success,
    /// Network error, timeout, 408 or 5xx: try again later. `cause` is the status code,
    /// `"timeout"` or `"network"`; `message` a description.
    Retriable {
        /// Failure key for the counters.
        cause: String,
        /// What happened.
        message: String,
    },
    /// Any other status: the destination refuses this payload; do not retry.
    Rejected {
        /// The status.
        status: StatusCode,
        /// Beginning of the response body (lossy UTF-8).
        body: String,
    },
}

/// Whether `status` is worth retrying (spec 7.1: 408 and 5xx).
pub(crate) fn retriable_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT || status.is_server_error()
}

impl HttpClient {
    /// A client with `timeout` per request (connect + send + response).
    ///
    /// # Errors
    /// When the TLS configuration cannot be built.
    pub(crate) fn new(timeout: Duration) -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A certificate the store cannot parse is skipped, like every TLS client does.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            tracing::warn!(
                "no system CA certificates found: https:// upstreams will fail certificate verification \
                 (install ca-certificates)"
            );
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_keepalive(Some(Duration::from_secs(30)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Self { client, timeout })
    }

    /// POSTs `body` to `uri` with `headers`, within the timeout.
    pub(crate) async fn post(&self, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Outcome {
        let mut req = Request::post(uri.clone());
        if let Some(h) = req.headers_mut() {
            h.extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let req = match req.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Rejected {
                    status: StatusCode::BAD_REQUEST,
                    body: format!("request could not be built: {e}"),
                };
            }
        };
        let exchange = async {
            let resp = self.client.request(req).await?;
            let status = resp.status();
            let mut body = resp.into_body();
            let mut kept = Vec::new();
            // Read (a bounded part of) the body so the connection can be reused.
            while kept.len() < MAX_RESPONSE_READ {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            kept.extend_from_slice(&data);
                        }
                    }
                    Some(Err(_)) | None => break,
                }
            }
            Ok::<_, hyper_util::client::legacy::Error>((status, kept))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Outcome::Retriable {
                cause: "timeout".to_owned(),
                message: format!("no response within {:?}", self.timeout),
            },
            Ok(Err(e)) => Outcome::Retriable {
                cause: "network".to_owned(),
                message: error_chain(&e),
            },
            Ok(Ok((status, body))) if status.is_success() => {
                let _ = body;
                Outcome::Success
            }
            Ok(Ok((status, body))) => {
                let excerpt = excerpt(&body);
                if retriable_status(status) {
                    Outcome::Retriable {
                        cause: status.as_u16().to_string(),
                        message: format!("HTTP {status}: {excerpt}"),
                    }
                } else {
                    Outcome::Rejected { status, body: excerpt }
                }
            }
        }
    }
}

fn excerpt(body: &[u8]) -> String {
    let cut = body.get(..BODY_EXCERPT).unwrap_or(body);
    let mut s = String::from_utf8_lossy(cut).trim().to_owned();
    if body.len() > BODY_EXCERPT {
        s.push('…');
    }
    s
}

/// `error: cause: cause` (hyper's errors hide the useful part in their sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_statuses_are_408_and_5xx() {
        for s in [408u16, 500, 502, 503, 504] {
            assert!(retriable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400u16, 401, 403, 404, 413, 429] {
            assert!(!retriable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn excerpt_is_bounded() {
        let long = vec![b'x'; 1000];
        assert_eq!(excerpt(&long).chars().count(), BODY_EXCERPT + 1);
        assert_eq!(excerpt(b" forbidden \n"), "forbidden");
    }
}
