//! Helpers shared by the upstream and agent end-to-end tests.

#[allow(dead_code)] // used by the backpressure tests only
pub(crate) mod gated_sink;
pub(crate) mod intake;

/// A two-thread runtime for an in-process agent and its peers.
#[allow(dead_code)] // not every test binary that includes this module starts a runtime
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
