//! What the proxy routes do on the wire: one exchange, header filtering, path checks, and the
//! bounded read of a request body.

use super::*;

/// One exchange whose answer is only classified (copies to additional endpoints).
pub(super) async fn send_once(
    client: &HttpsClient,
    method: http::Method,
    target: &str,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<StatusCode, String> {
    let uri: Uri = target.parse().map_err(|e| format!("{target:?}: {e}"))?;
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(h) = builder.headers_mut() {
        *h = headers;
    }
    let request = builder.body(Full::new(body)).map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = client.request(request).await.map_err(|e| error_chain(&e))?;
        let status = resp.status();
        let _ = Limited::new(resp.into_body(), MAX_REPLY).collect().await;
        Ok::<_, String>(status)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Err(format!("no answer within {timeout:?}")),
        Ok(r) => r,
    }
}

pub(super) fn lower_static(name: &'static str) -> &'static str {
    match name {
        "Content-Type" => "content-type",
        "Accept-Encoding" => "accept-encoding",
        "Content-Encoding" => "content-encoding",
        "User-Agent" => "user-agent",
        _ => "dd-ci-provider-name",
    }
}

pub(super) fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub(super) fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// `/evp_proxy/vN/<rest>` → `/<rest>` for N in 1..=4.
pub fn evp_rest(path: &str) -> Option<&str> {
    let after = path.strip_prefix(EVP_PREFIX)?;
    let (version, rest) = after.split_at_checked(2)?;
    matches!(version, "v1" | "v2" | "v3" | "v4").then_some(())?;
    rest.starts_with('/').then_some(rest)
}

/// The Datadog agent's input checks: a subdomain of letters, digits and `_-.`, a path of
/// letters, digits and `/_-+`, a query of letters, digits and `/_-+@?&=.:"`.
pub fn check_evp(subdomain: &str, path: &str, query: &str) -> Result<(), String> {
    let ok = |s: &str, extra: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
    if subdomain.is_empty() {
        return Err("EVPProxy: no subdomain specified (X-Datadog-EVP-Subdomain)".to_owned());
    }
    if !ok(subdomain, "_-.") {
        return Err(format!("EVPProxy: invalid subdomain: {subdomain}"));
    }
    if !ok(path, "/_-+") {
        return Err(format!("EVPProxy: invalid target path: {path}"));
    }
    if !ok(query, "/_-+@?&=.:\"") {
        return Err(format!("EVPProxy: invalid query string: {query}"));
    }
    Ok(())
}

pub(super) type Refusal = (StatusCode, &'static str, String);

/// Reads a body of at most `limit` bytes within `timeout`, under the receivers' byte budget
/// (the permit pays for the bytes until the exchange is over). No room within
/// `decoder_timeout`: the body is drained into nothing and the request refused (503).
pub(super) async fn read_bounded(
    state: &crate::receiver::AppState,
    mut body: Incoming,
    declared: Option<u64>,
    limit: u64,
    timeout: Duration,
) -> Result<(Bytes, crate::pipeline::BytePermit), Refusal> {
    use crate::receiver::budget::ReadRefusal;
    let read = crate::receiver::budget::read_body(
        &state.body_budget,
        &mut body,
        declared,
        limit,
        timeout,
        state.config.decoder_timeout,
    )
    .await;
    match read {
        Ok(done) => Ok(done),
        Err(ReadRefusal::Timeout) => Err((
            StatusCode::REQUEST_TIMEOUT,
            "read_timeout",
            "the body was not received in time: not forwarded".to_owned(),
        )),
        Err(ReadRefusal::TooLarge) => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body exceeds {limit} bytes: not forwarded"),
        )),
        Err(ReadRefusal::Io(e)) => Err((
            StatusCode::BAD_REQUEST,
            "read_error",
            format!("cannot read the body: {e}"),
        )),
        Err(ReadRefusal::NoBudget) => {
            crate::receiver::traces::drain_body(state, body).await;
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "overload",
                "the agent is overloaded: request bodies already fill apm_config.receiver_max_buffered_bytes; \
                 not forwarded, retry later"
                    .to_owned(),
            ))
        }
    }
}
