//! Wiring: bind the listeners, start the pipeline and the accept loops, and shut down in order
//! (stop accepting → finish in-flight requests → drain the pipeline → flush).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::config::{AgentConfig, ConfigError};
use crate::pipeline::{ChunkSink, CountingSink, SinkCounters, spawn_pipeline};
use crate::receiver::server::{BindError, Listener, accept_loop, bind_tcp, bind_unix};
use crate::receiver::{AppState, compile_process_config, info::InfoDoc, rates::RatesTable};
use crate::status::{AgentStats, StatusSnapshot};

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be opened.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Neither TCP nor a Unix socket is configured.
    #[error("no listener configured: receiver_port is 0 and no receiver_socket is set")]
    NoListener,
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    tcp_addr: Option<SocketAddr>,
    listening: Vec<String>,
    stats: Arc<AgentStats>,
    rates: Arc<RatesTable>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Agent {
    /// The bound TCP address (useful with port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Human-readable listening addresses.
    pub fn listening(&self) -> &[String] {
        &self.listening
    }

    /// A copy of every counter.
    pub fn status(&self) -> StatusSnapshot {
        self.stats.snapshot(self.listening.clone())
    }

    /// The shared rates table (the sampler's output).
    pub fn rates(&self) -> &Arc<RatesTable> {
        &self.rates
    }

    /// Stops accepting, lets in-flight requests finish, drains the pipeline; returns the final
    /// counters when done.
    pub async fn shutdown(self) -> StatusSnapshot {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.stats.snapshot(self.listening)
    }
}

/// Binds the listeners of `config` and starts serving in the background of the current runtime,
/// handing processed payloads to a [`CountingSink`].
///
/// # Errors
/// Configuration or bind errors (a taken port is reported with how to pick another).
pub async fn start(config: AgentConfig) -> Result<Agent, RunError> {
    start_with_sink(config, CountingSink::new).await
}

/// Like [`start`], with the next stage built by `make_sink` (given the counters `status` shows
/// as "forwarded", which the sink may update).
///
/// # Errors
/// Configuration or bind errors.
pub async fn start_with_sink<S: ChunkSink>(
    config: AgentConfig,
    make_sink: impl FnOnce(Arc<SinkCounters>) -> S,
) -> Result<Agent, RunError> {
    let process = compile_process_config(&config)?;
    let mut listeners = Vec::new();
    let mut listening = Vec::new();
    let mut tcp_addr = None;
    if let Some(addr) = config.tcp_addr()? {
        let l = bind_tcp(addr).await?;
        let bound = l.local_addr().map_err(|e| BindError::Other {
            addr: addr.to_string(),
            source: e,
        })?;
        tcp_addr = Some(bound);
        listening.push(format!("http://{bound}"));
        listeners.push(Listener::Tcp(l));
    }
    if let Some(path) = &config.receiver_socket {
        listeners.push(Listener::Unix(bind_unix(path)?, path.clone()));
        listening.push(format!("unix://{}", path.display()));
    }
    if listeners.is_empty() {
        return Err(RunError::NoListener);
    }
    let stats = Arc::new(AgentStats::default());
    let (pipeline, pipeline_task) = spawn_pipeline(config.pipeline_capacity, make_sink(Arc::clone(&stats.sink)));
    let rates = Arc::new(RatesTable::new());
    let decoders = config.decoders.max(1);
    let state = Arc::new(AppState {
        info: InfoDoc::new(&config),
        process: Arc::new(process),
        rates: Arc::clone(&rates),
        stats: Arc::clone(&stats),
        decoders: Semaphore::new(decoders),
        pipeline,
        listening: listening.clone(),
        last_warn: AtomicU64::new(0),
        config: Arc::new(config),
    });
    let (stop, stop_rx) = watch::channel(false);
    let graceful = Arc::new(GracefulShutdown::new());
    let loops: Vec<JoinHandle<()>> = listeners
        .into_iter()
        .map(|l| {
            tokio::spawn(accept_loop(
                l,
                Arc::clone(&state),
                Arc::clone(&graceful),
                stop_rx.clone(),
            ))
        })
        .collect();
    let drain_timeout = state.config.receiver_timeout + Duration::from_secs(5);
    let task = tokio::spawn(async move {
        for l in loops {
            let _ = l.await;
        }
        if let Ok(g) = Arc::try_unwrap(graceful)
            && tokio::time::timeout(drain_timeout, g.shutdown()).await.is_err()
        {
            tracing::warn!("in-flight requests did not finish within {drain_timeout:?}; closing them");
        }
        // Dropping the last state drops the pipeline sender: the sink drains and flushes.
        drop(state);
        let _ = pipeline_task.await;
    });
    Ok(Agent {
        tcp_addr,
        listening,
        stats,
        rates,
        stop,
        task,
    })
}

/// Runs the agent until `shutdown` becomes true (or its sender is dropped), then shuts down
/// gracefully.
///
/// # Errors
/// Configuration or bind errors at start.
pub async fn run(config: AgentConfig, mut shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    let agent = start(config).await?;
    for l in agent.listening() {
        tracing::info!("trace-agent listening on {l}");
    }
    let _ = shutdown.wait_for(|s| *s).await;
    tracing::info!("shutting down: finishing in-flight requests and draining the pipeline");
    agent.shutdown().await;
    Ok(())
}
