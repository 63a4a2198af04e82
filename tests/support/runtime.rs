//! The runtime of the in-process agent tests. Included by `support/mod.rs` and, on its own, by
//! tests that need nothing else of `support`.

/// A two-thread runtime for an in-process agent and its peers.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
