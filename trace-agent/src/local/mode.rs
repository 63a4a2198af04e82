//! [`LocalService`]: the store and its web view started together, for the agent's start-up.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::monitor::Monitors;
use super::{LocalConfig, LocalStore, StoreError, StoreStatus, web};
use crate::net::BindError;

/// Why local mode could not start (a store problem alone never stops it: see [`LocalStore::open`]).
#[derive(Debug, thiserror::Error)]
pub enum LocalStartError {
    /// Even the in-memory store could not be created.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The web view's port is taken.
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// Local mode running: the store (hand it to the pipeline as an upstream) and the web view.
#[derive(Debug)]
pub struct LocalService {
    store: LocalStore,
    web_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    monitors: Monitors,
    monitor_task: JoinHandle<()>,
}

impl LocalService {
    /// Starts the store and serves the web view on `127.0.0.1:<config.web_port>`, on the
    /// current runtime. The store opens its file on its own thread (see
    /// [`LocalStore::open_in_background`]): a large or damaged file never delays the start.
    ///
    /// # Errors
    /// [`LocalStartError::Bind`] when the port is taken (the message names
    /// `apm_config.local.web_port`).
    pub async fn start(config: LocalConfig) -> Result<Self, LocalStartError> {
        Self::start_with_spool(config, None).await
    }

    /// [`Self::start`] with a spool: payloads not written by the shutdown deadline go there
    /// (lane `local`) and are written after the next start.
    ///
    /// # Errors
    /// As [`Self::start`].
    pub async fn start_with_spool(
        config: LocalConfig,
        spool: Option<std::sync::Arc<crate::upstream::SpoolDir>>,
    ) -> Result<Self, LocalStartError> {
        let port = config.web_port;
        let monitor_config = config.monitors.clone();
        let listener = web::bind(port).await?;
        let web_addr = listener.local_addr().map_err(|source| BindError::Other {
            addr: format!("127.0.0.1:{port}"),
            source,
        })?;
        let lane = spool.map(|s| s.lane("local"));
        let store = LocalStore::open_in_background(config, lane)?;
        let (stop, shutdown) = watch::channel(false);
        let monitors = Monitors::new(
            &monitor_config,
            std::time::SystemTime::now(),
            format!("http://{web_addr}/monitors"),
        );
        let monitor_task = monitors.start(store.clone(), shutdown.clone());
        let task = tokio::spawn(web::serve_with(listener, store.clone(), monitors.clone(), shutdown));
        tracing::info!(
            "local mode: traces are kept in {} and shown on http://{web_addr}",
            store.status().mode
        );
        Ok(Self {
            store,
            web_addr,
            stop,
            task,
            monitors,
            monitor_task,
        })
    }

    /// The store (an [`Upstream`](crate::upstream::Upstream)).
    pub fn store(&self) -> &LocalStore {
        &self.store
    }

    /// The monitors (states, events, downtimes).
    pub fn monitors(&self) -> &Monitors {
        &self.monitors
    }

    /// Where the web view listens.
    pub fn web_addr(&self) -> SocketAddr {
        self.web_addr
    }

    /// `http://127.0.0.1:<port>`, for logs and `status`.
    pub fn web_url(&self) -> String {
        format!("http://{}", self.web_addr)
    }

    /// Stops the web view, then writes what is queued (at most `timeout`) and stops the writer.
    /// Call it after the pipeline has drained.
    pub async fn shutdown(self, timeout: Duration) -> StoreStatus {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(timeout, self.task).await;
        let _ = tokio::time::timeout(timeout, self.monitor_task).await;
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.shutdown_blocking(timeout)).await;
        self.store.status()
    }
}
