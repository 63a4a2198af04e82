//! A small blocking HTTP/1.1 client for the agent, over TCP or a Unix socket: hyper on a
//! private current-thread tokio runtime owned by the export thread, so it never touches
//! (or panics inside) the application's runtime. One kept-alive connection, re-opened
//! after any error.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::config::AgentEndpoint;

/// Largest agent response body read (the agent's replies are small JSON documents).
const MAX_RESPONSE_BODY: usize = 1024 * 1024;

/// An agent reply.
#[derive(Debug, Clone)]
pub(crate) struct AgentResponse {
    pub(crate) status: u16,
    pub(crate) agent_state: Option<String>,
    pub(crate) body: Bytes,
}

/// Why a request did not get a reply.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    #[error("cannot connect to the agent at {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("no reply from the agent at {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("HTTP exchange with the agent at {url} failed: {source}")]
    Http { url: String, source: hyper::Error },
    #[error("the agent at {url} sent an unreadable reply: {reason}")]
    BadReply { url: String, reason: String },
}

pub(crate) struct Transport {
    rt: tokio::runtime::Runtime,
    endpoint: AgentEndpoint,
    url: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub(crate) fn new(endpoint: AgentEndpoint) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let url = endpoint.url();
        Ok(Self {
            rt,
            endpoint,
            url,
            sender: None,
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// One request with a deadline; drops the connection on any failure.
    pub(crate) fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<AgentResponse, TransportError> {
        self.request_while(method, path, headers, body, timeout, &mut || false)
    }

    /// [`Transport::request`], calling `meanwhile` whenever the exchange waits for the
    /// agent: `true` means it did some work and wants to be called again at once, `false`
    /// that it has nothing to do (it is asked again a millisecond later).
    pub(crate) fn request_while(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
        timeout: Duration,
        meanwhile: &mut dyn FnMut() -> bool,
    ) -> Result<AgentResponse, TransportError> {
        let Self {
            rt,
            endpoint,
            url,
            sender,
        } = self;
        let exchange = async {
            let mut conn = match sender.take() {
                Some(s) if !s.is_closed() => s,
                _ => connect(endpoint, url).await?,
            };
            conn.ready().await.map_err(|source| TransportError::Http {
                url: url.clone(),
                source,
            })?;
            let host = match endpoint {
                AgentEndpoint::Http { authority } => authority.as_str(),
                AgentEndpoint::Unix { .. } => "localhost",
            };
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, host);
            for (k, v) in headers {
                req = req.header(*k, v.as_str());
            }
            let req = req
                .header(http::header::CONTENT_LENGTH, body.len())
                .body(Full::new(body))
                .map_err(|e| TransportError::BadReply {
                    url: url.clone(),
                    reason: format!("bad request: {e}"),
                })?;
            let resp = conn.send_request(req).await.map_err(|source| TransportError::Http {
                url: url.clone(),
                source,
            })?;
            let status = resp.status().as_u16();
            let agent_state = resp
                .headers()
                .get("datadog-agent-state")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BODY)
                .collect()
                .await
                .map_err(|e| TransportError::BadReply {
                    url: url.clone(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok::<_, TransportError>((
                conn,
                AgentResponse {
                    status,
                    agent_state,
                    body,
                },
            ))
        };
        // The timer must be created inside the runtime, hence the extra async block.
        let outcome = rt.block_on(async {
            let exchange = tokio::time::timeout(timeout, exchange);
            tokio::pin!(exchange);
            loop {
                tokio::select! {
                    biased;
                    r = &mut exchange => break r,
                    () = pause(meanwhile()) => {}
                }
            }
        });
        match outcome {
            Ok(Ok((conn, resp))) => {
                *sender = Some(conn);
                Ok(resp)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TransportError::Timeout {
                url: url.clone(),
                timeout,
            }),
        }
    }
}

/// Lets the exchange progress: a yield after useful work, else a short sleep.
async fn pause(busy: bool) {
    if busy {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn connect(endpoint: &AgentEndpoint, url: &str) -> Result<SendRequest<Full<Bytes>>, TransportError> {
    let connect_err = |source| TransportError::Connect {
        url: url.to_owned(),
        source,
    };
    let http_err = |source| TransportError::Http {
        url: url.to_owned(),
        source,
    };
    match endpoint {
        AgentEndpoint::Http { authority } => {
            let stream = tokio::net::TcpStream::connect(authority.as_str())
                .await
                .map_err(connect_err)?;
            let _ = stream.set_nodelay(true);
            handshake(stream).await.map_err(http_err)
        }
        #[cfg(unix)]
        AgentEndpoint::Unix { path } => {
            let stream = tokio::net::UnixStream::connect(path).await.map_err(connect_err)?;
            handshake(stream).await.map_err(http_err)
        }
        #[cfg(not(unix))]
        AgentEndpoint::Unix { .. } => Err(connect_err(std::io::Error::other("unix sockets need a unix platform"))),
    }
}

/// HTTP/1.1 over any stream; the connection task runs on the exporter's runtime.
async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
