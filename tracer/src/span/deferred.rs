//! Recording an integration leaves to the export thread: it keeps what the application
//! gave it as it came (the OpenTelemetry bridge: the attribute list, the kind and the
//! status) and turns it into the span's Datadog fields just before the span is counted in
//! stats, sampled and encoded — off the application thread.
//!
//! The extension is boxed once and stays with the span's pooled box: the next spans of the
//! same integration in that box reuse it, so it costs no allocation per span.

use std::any::Any;

use super::SpanData;

/// The deferred part of one span's recording.
pub(crate) trait Deferred: Any + Send + Sync {
    /// Writes what was recorded into `data`, leaving `self` empty for the box's next span.
    fn apply(&mut self, data: &mut SpanData);
    /// Drops what was recorded without applying it (the span is discarded).
    fn clear(&mut self);
    /// A copy holding the same recording (`SpanData` is `Clone`).
    fn clone_box(&self) -> Box<dyn Deferred>;
}

/// A span's [`Deferred`] extension, kept across reuses of its box, and whether it holds
/// work for the current span.
#[derive(Default)]
pub(crate) struct DeferredSlot {
    ext: Option<Box<dyn Deferred>>,
    pending: bool,
}

impl DeferredSlot {
    /// The extension as a `T` (made on first use, or replacing one of another type),
    /// marked as holding work for this span.
    #[inline]
    pub(crate) fn get_or_default<T: Deferred + Default>(&mut self) -> Option<&mut T> {
        self.pending = true;
        let is_t = self.ext.as_deref().is_some_and(|e| (e as &dyn Any).is::<T>());
        if !is_t {
            self.ext = Some(Box::new(T::default()));
        }
        let ext: &mut dyn Any = self.ext.as_deref_mut()?;
        ext.downcast_mut::<T>()
    }

    /// The extension as a `T` when it holds work for this span.
    #[inline]
    pub(crate) fn get_mut<T: Deferred>(&mut self) -> Option<&mut T> {
        if !self.pending {
            return None;
        }
        let ext: &mut dyn Any = self.ext.as_deref_mut()?;
        ext.downcast_mut::<T>()
    }

    /// Whether it holds work for the current span.
    #[inline]
    pub(crate) fn is_pending(&self) -> bool {
        self.pending
    }

    /// Drops the waiting work, keeping the extension for reuse.
    pub(crate) fn clear(&mut self) {
        if std::mem::take(&mut self.pending) {
            if let Some(ext) = self.ext.as_deref_mut() {
                ext.clear();
            }
        }
    }
}

impl Clone for DeferredSlot {
    fn clone(&self) -> Self {
        match (&self.ext, self.pending) {
            (Some(ext), true) => Self {
                ext: Some(ext.clone_box()),
                pending: true,
            },
            _ => Self::default(),
        }
    }
}

impl std::fmt::Debug for DeferredSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredSlot").field("pending", &self.pending).finish()
    }
}

impl SpanData {
    /// Runs the deferred part of the span's recording, if any (the export thread, before
    /// stats, sampling and encoding).
    #[inline]
    pub(crate) fn apply_deferred(&mut self) {
        if self.deferred.pending {
            self.apply_deferred_now();
        }
    }

    fn apply_deferred_now(&mut self) {
        self.deferred.pending = false;
        if let Some(mut ext) = self.deferred.ext.take() {
            ext.apply(self);
            self.deferred.ext = Some(ext);
        }
    }
}
