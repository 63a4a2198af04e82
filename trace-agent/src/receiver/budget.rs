//! Reading request bodies under the receivers' shared byte budget
//! (`apm_config.receiver_max_buffered_bytes`).
//!
//! Every route that keeps a body in memory — `/v0.x/traces`, `/v0.6/stats`, OTLP/HTTP, the
//! proxy routes — reads it through [`read_body`], which charges what it buffers to the one
//! budget of the agent (the declared `Content-Length` up front; chunked bodies as they grow,
//! doubling). A slow client then holds only its own bytes, not a decoder slot: decoder slots
//! are taken after the body is in, for the CPU-bound decoding alone. When the budget has no
//! room within `decoder_timeout`, the body is refused ([`ReadRefusal::NoBudget`]) and the
//! caller drains it into nothing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::config::AgentConfig;
use crate::pipeline::{ByteBudget, BytePermit, PipelineSender};
use crate::status::AgentStats;

/// Smallest step a chunked body's charge grows by.
pub const CHUNKED_STEP: u64 = 64 * 1024;

/// Why a body was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRefusal {
    /// More than the route's limit (declared or while reading).
    TooLarge,
    /// Not received within the read timeout.
    Timeout,
    /// A transport error.
    Io(String),
    /// The byte budget had no room within the wait: refuse (overload) and drain the rest.
    NoBudget,
}

/// The body budget of `config`, registered in `stats` (with the pipeline's byte budget) so
/// that `status` shows both.
pub fn shared(config: &AgentConfig, stats: &AgentStats, pipeline: &PipelineSender) -> Arc<ByteBudget> {
    let budget = Arc::new(ByteBudget::new(config.body_budget_bytes()));
    let _ = stats.budgets.set((Arc::clone(&budget), pipeline.byte_budget()));
    budget
}

/// Reads `body` (at most `limit` bytes, within `timeout`), charging its bytes to `budget`,
/// each charge waiting at most `wait`. On success the bytes come with the permit that pays for
/// them: keep it as long as the body (or what borrows from it) is in memory. On
/// [`ReadRefusal::NoBudget`] the caller still owns the unread rest of `body` (to drain it).
///
/// # Errors
/// See [`ReadRefusal`].
pub async fn read_body<B>(
    budget: &ByteBudget,
    body: &mut B,
    declared: Option<u64>,
    limit: u64,
    timeout: Duration,
    wait: Duration,
) -> Result<(Bytes, BytePermit), ReadRefusal>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    if declared.is_some_and(|n| n > limit) {
        return Err(ReadRefusal::TooLarge);
    }
    let first = declared.unwrap_or(CHUNKED_STEP.min(limit));
    let mut permit = budget.acquire(first, wait).await.ok_or(ReadRefusal::NoBudget)?;
    let mut buf: Vec<u8> = Vec::with_capacity(usize::try_from(permit.bytes()).unwrap_or(0));
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ReadRefusal::Io(e.to_string()))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            let need = (buf.len() + data.len()) as u64;
            if need > limit {
                return Err(ReadRefusal::TooLarge);
            }
            if need > permit.bytes() {
                // Chunked (or a client sending more than it declared; hyper refuses that):
                // at least double the charge, at most the limit.
                let grow_to = need.max(permit.bytes().saturating_mul(2)).min(limit);
                let more = budget
                    .acquire(grow_to - permit.bytes(), wait)
                    .await
                    .ok_or(ReadRefusal::NoBudget)?;
                permit.merge(more);
                buf.reserve_exact(usize::try_from(permit.bytes()).unwrap_or(0).saturating_sub(buf.len()));
            }
            buf.extend_from_slice(data);
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(ReadRefusal::Timeout),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => Ok((Bytes::from(buf), permit)),
    }
}

/// The `Content-Length` a request declares, when it is a number.
pub fn declared_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body_util::Full;
    use hyper::body::Frame;

    use super::*;

    /// A chunked body: its frames, then the end.
    struct Frames(VecDeque<Bytes>);

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    const LONG: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_declared_body_is_charged_up_front_and_released_with_its_permit() {
        let budget = ByteBudget::new(1000);
        let mut body = Full::new(Bytes::from_static(&[7u8; 600]));
        let (bytes, permit) = read_body(&budget, &mut body, Some(600), 800, LONG, LONG).await.unwrap();
        assert_eq!((bytes.len(), permit.bytes(), budget.held()), (600, 600, 600));
        // A second body of 600 does not fit while the first is held.
        let mut second = Full::new(Bytes::from_static(&[7u8; 600]));
        let refused = read_body(&budget, &mut second, Some(600), 800, LONG, Duration::ZERO).await;
        assert_eq!(refused.unwrap_err(), ReadRefusal::NoBudget);
        drop((bytes, permit));
        assert_eq!(budget.held(), 0);
        let mut third = Full::new(Bytes::from_static(&[7u8; 600]));
        assert!(
            read_body(&budget, &mut third, Some(600), 800, LONG, Duration::ZERO)
                .await
                .is_ok()
        );
        assert_eq!(
            read_body(&budget, &mut Full::new(Bytes::new()), Some(900), 800, LONG, LONG)
                .await
                .unwrap_err(),
            ReadRefusal::TooLarge,
            "declared over the limit: refused before any charge"
        );
    }

    #[tokio::test]
    async fn a_chunked_body_is_charged_as_it_grows_and_cut_at_the_limit() {
        let budget = ByteBudget::new(1 << 20);
        let frame = Bytes::from(vec![1u8; 50_000]);
        let mut body = Frames(std::iter::repeat_n(frame.clone(), 4).collect());
        let (bytes, permit) = read_body(&budget, &mut body, None, 300_000, LONG, LONG).await.unwrap();
        assert_eq!(bytes.len(), 200_000);
        assert!(
            permit.bytes() >= 200_000 && permit.bytes() <= 300_000,
            "{}",
            permit.bytes()
        );
        drop(permit);
        let mut body = Frames(std::iter::repeat_n(frame.clone(), 7).collect());
        let cut = read_body(&budget, &mut body, None, 300_000, LONG, LONG).await;
        assert_eq!(cut.unwrap_err(), ReadRefusal::TooLarge);
        assert_eq!(budget.held(), 0, "a refused body gives its bytes back");
        // Growing past what the budget has left is a refusal, not a wait forever.
        let small = ByteBudget::new(100_000);
        let mut body = Frames(std::iter::repeat_n(frame, 3).collect());
        let refused = read_body(&small, &mut body, None, 300_000, LONG, Duration::from_millis(1)).await;
        assert_eq!(refused.unwrap_err(), ReadRefusal::NoBudget);
        assert_eq!(body.0.len(), 1, "the unread rest stays with the caller (to drain)");
    }
}
