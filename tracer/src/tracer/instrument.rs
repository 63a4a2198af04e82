//! Futures that carry a span: the current span follows them across `.await`, tasks and
//! threads.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::Span;
use crate::span::{Entered, SpanContext, current_context};

pin_project_lite::pin_project! {
    /// A future that runs with its span current on every poll and finishes the span when
    /// the future completes or is dropped. Made by [`Instrument::in_span`].
    pub struct Instrumented<F> {
        #[pin]
        inner: F,
        span: Option<Span>,
        ctx: Option<SpanContext>,
    }
}

impl<F> std::fmt::Debug for Instrumented<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instrumented")
            .field("span", &self.span)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Instrumented<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = {
            let _entered = Entered::new(this.ctx.clone());
            this.inner.poll(cx)
        };
        if out.is_ready() {
            // Finish the span as soon as the work is done, not whenever the future is dropped.
            drop(this.span.take());
        }
        out
    }
}

pin_project_lite::pin_project! {
    /// A future that runs with a span context current on every poll. Made by
    /// [`Instrument::with_context`].
    pub struct WithContext<F> {
        #[pin]
        inner: F,
        ctx: Option<SpanContext>,
    }
}

impl<F> std::fmt::Debug for WithContext<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithContext")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for WithContext<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = Entered::new(this.ctx.clone());
        this.inner.poll(cx)
    }
}

/// Attaches spans to futures so the current span follows them across `.await`, tasks
/// and threads.
pub trait Instrument: Future + Sized {
    /// Runs the future with `span` current; the span finishes when the future completes.
    fn in_span(self, span: Span) -> Instrumented<Self> {
        let ctx = span.context();
        Instrumented {
            inner: self,
            span: Some(span),
            ctx,
        }
    }

    /// Runs the future with `ctx` current (e.g. inside `tokio::spawn`).
    fn with_context(self, ctx: Option<SpanContext>) -> WithContext<Self> {
        WithContext { inner: self, ctx }
    }

    /// Runs the future with the caller's current span current, e.g.
    /// `tokio::spawn(work().in_current_span())`.
    fn in_current_span(self) -> WithContext<Self> {
        WithContext {
            inner: self,
            ctx: current_context(),
        }
    }
}

impl<F: Future> Instrument for F {}
