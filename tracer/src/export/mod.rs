//! The export worker: drains finished chunks, samples them, encodes v0.5/v0.4 msgpack and
//! sends it to the agent, all on its own thread.

mod encode;
mod info;
mod ledger;
mod stages;
mod transport;
mod worker;

pub(crate) use encode::EncodeContext;
pub(crate) use ledger::{Ledger, LedgerDrop};
#[cfg(any(feature = "tracing-layer", feature = "opentelemetry"))]
pub(crate) use worker::on_export_thread;
pub(crate) use worker::{Control, WorkerHandle, spawn};

/// Why a flush or shutdown did not deliver everything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlushError {
    /// The worker did not answer in time (the agent may be hanging).
    #[error("the flush did not finish within {0:?}")]
    Timeout(std::time::Duration),
    /// The agent refused or never received the payload; its spans are counted as dropped.
    #[error("the agent did not accept the payload: {0}")]
    Send(String),
    /// The tracer was already shut down.
    #[error("the tracer is shut down")]
    ShutDown,
}
