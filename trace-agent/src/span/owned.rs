//! A decoded payload that owns the body its strings borrow from.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

use yoke::Yoke;

use super::TracerPayload;

/// A [`TracerPayload`] together with the request body it borrows from: what the receiver hands
/// to the next stage (samplers, stats, writers) without copying any string.
pub struct OwnedPayload(Yoke<TracerPayload<'static>, Vec<u8>>);

impl OwnedPayload {
    /// Decodes (or otherwise builds) a payload borrowing from `body`, keeping both together.
    /// `build` is where the processing stages run, while the payload is still mutable.
    ///
    /// # Errors
    /// Whatever `build` returns.
    pub fn try_new<E>(
        body: Vec<u8>,
        build: impl for<'a> FnOnce(&'a [u8]) -> Result<TracerPayload<'a>, E>,
    ) -> Result<Self, E> {
        Yoke::try_attach_to_cart(body, |b: &[u8]| build(b)).map(Self)
    }

    /// A payload that borrows nothing (e.g. built in a test).
    pub fn from_owned(payload: TracerPayload<'static>) -> Self {
        Self(Yoke::attach_to_cart(Vec::new(), move |_| payload))
    }

    /// The payload.
    pub fn get(&self) -> &TracerPayload<'_> {
        self.0.get()
    }

    /// Runs `f` on the payload mutably (the samplers rewrite priorities, tags and metrics, and
    /// remove chunks, in place). `f` must be `'static` (it may not smuggle borrowed strings
    /// out): share state with it through an `Arc`.
    pub fn with_mut<R: 'static>(&mut self, f: impl for<'a> FnOnce(&mut TracerPayload<'a>) -> R + 'static) -> R {
        let out = Rc::new(Cell::new(None));
        let slot = Rc::clone(&out);
        self.0.with_mut(move |p| slot.set(Some(f(p))));
        match out.take() {
            Some(r) => r,
            None => unreachable!("yoke::Yoke::with_mut runs its closure exactly once"),
        }
    }
}

impl fmt::Debug for OwnedPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.get(), f)
    }
}
