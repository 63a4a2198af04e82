//! Wiring: bind the listeners, start the pipeline and the accept loops, and shut down in order
//! (stop accepting → finish in-flight requests → drain the pipeline → flush).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::config::compile;
use crate::config::{AgentConfig, ConfigError};
use crate::forward::{ForwardParts, ForwardShared, ForwardSink, StatsFlush};
use crate::identity::AgentIdentity;
use crate::net::{BindError, bind_tcp, bind_unix};
use crate::pipeline::{ChunkSink, PipelineItem, SinkCounters};
use crate::receiver::server::{Listener, accept_loop};
use crate::receiver::{AppState, info::InfoDoc};
use crate::sample::Samplers;
use crate::sample::rates::RatesTable;
use crate::stats::{ClientStatsAggregator, Concentrator};
use crate::status::{AgentStats, StatusSnapshot};
use crate::upstream::{DatadogWriter, OtlpWriter, SpoolDir, Upstream, UpstreamError};

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be opened.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Local mode could not start (its web port is taken).
    #[error(transparent)]
    Local(#[from] crate::local::LocalStartError),
    /// An upstream writer could not start.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// An OTLP receiver could not start.
    #[error(transparent)]
    Otlp(#[from] crate::otlp_in::OtlpStartError),
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
    upstreams: Vec<Arc<dyn Upstream>>,
    local: Option<crate::local::LocalService>,
    otlp_grpc: Option<SocketAddr>,
    otlp_http: Option<SocketAddr>,
    /// The receiver's state while it serves (weak: shutdown drops the last strong reference
    /// to close the pipeline).
    state: std::sync::Weak<AppState>,
}

impl Agent {
    /// Serves one HTTP/1 connection over `io` with the receiver's service, as if from a
    /// loopback TCP client, until the client closes it (or the agent stops serving). For
    /// embedders and for the end-to-end fuzz target, which drives the whole request path
    /// in-process without sockets.
    pub async fn serve_io<S>(&self, io: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Some(state) = self.state.upgrade() else {
            return;
        };
        let peer = crate::receiver::server::Peer::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)));
        let svc = hyper::service::service_fn(move |req| {
            let st = Arc::clone(&state);
            async move { Ok::<_, std::convert::Infallible>(crate::receiver::routes::handle(st, peer, req).await) }
        });
        // Half-close allowed: a client may send its request, then shut its write side.
        let _ = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
            .await;
    }

    /// The local web view's URL, when local mode runs.
    pub fn web_url(&self) -> Option<String> {
        self.local.as_ref().map(crate::local::LocalService::web_url)
    }

    /// The bound TCP address (useful with port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The OTLP gRPC receiver's bound address, when it runs.
    pub fn otlp_grpc_addr(&self) -> Option<SocketAddr> {
        self.otlp_grpc
    }

    /// The OTLP HTTP receiver's bound address, when it runs.
    pub fn otlp_http_addr(&self) -> Option<SocketAddr> {
        self.otlp_http
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
        // The sink flushed every writer when the pipeline closed; now let them deliver.
        shutdown_all(&self.upstreams).await;
        if let Some(local) = self.local {
            local.shutdown(UPSTREAM_SHUTDOWN).await;
        }
        self.stats.snapshot(self.listening)
    }
}

/// How long shutdown waits for the writers to deliver what they hold (spec 7.1: 5 s).
const UPSTREAM_SHUTDOWN: Duration = Duration::from_secs(5);

/// The writers `config` asks for: Datadog when an API key is set, OTLP when an endpoint is set.
///
/// # Errors
/// A writer that cannot start (bad URL, unusable key).
pub fn upstreams_from_config(config: &AgentConfig) -> Result<Vec<Arc<dyn Upstream>>, UpstreamError> {
    upstreams_with_spool(config, open_spool(config).as_ref())
}

/// The spool of `config` (`apm_config.spool`), or `None` when it is off or cannot be created
/// (logged: undeliverable payloads are then dropped and counted).
pub(crate) fn open_spool(config: &AgentConfig) -> Option<Arc<SpoolDir>> {
    match SpoolDir::open(&config.upstream.spool) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}: payloads that cannot be delivered will be dropped (and counted) instead");
            None
        }
    }
}

fn upstreams_with_spool(
    config: &AgentConfig,
    spool: Option<&Arc<SpoolDir>>,
) -> Result<Vec<Arc<dyn Upstream>>, UpstreamError> {
    let mut out: Vec<Arc<dyn Upstream>> = Vec::new();
    if config.api_key.is_some() {
        let mut dd = compile::datadog_writer(config)?;
        dd.error_tps = config.sampler.errors_per_second;
        dd.rare_sampler_enabled = config.sampler.rare.enabled;
        dd.spool = spool.cloned();
        out.push(Arc::new(DatadogWriter::start(dd)?));
    }
    if let Some(mut otlp) = compile::otlp_writer(config) {
        otlp.spool = spool.cloned();
        out.push(Arc::new(OtlpWriter::start(otlp)?));
    }
    Ok(out)
}

/// Binds the listeners of `config` and starts serving in the background of the current runtime:
/// stats, samplers and the upstream writers of [`upstreams_from_config`].
///
/// # Errors
/// Configuration, bind or writer start-up errors (a taken port is reported with how to pick
/// another).
pub async fn start(config: AgentConfig) -> Result<Agent, RunError> {
    let spool = open_spool(&config);
    let upstreams = upstreams_with_spool(&config, spool.as_ref())?;
    let started = upstreams.clone();
    let result = if config.local_mode_active() {
        start_local(config, upstreams, spool).await
    } else {
        start_with_upstreams(config, upstreams, StatsFlush::Standard).await
    };
    if result.is_err() {
        // Do not leave the writers' tasks behind (embedders keep their runtime).
        shutdown_all(&started).await;
    }
    result
}

/// [`start`] in local mode: the store and its web view next to `upstreams`.
async fn start_local(
    config: AgentConfig,
    mut upstreams: Vec<Arc<dyn Upstream>>,
    spool: Option<Arc<SpoolDir>>,
) -> Result<Agent, RunError> {
    // A taken receiver port is the error to report, before the store and web view start.
    if let Some(addr) = config.tcp_addr()?
        && addr.port() != 0
    {
        drop(bind_tcp(addr).await?);
    }
    let local = crate::local::LocalService::start_with_spool(config.local.clone(), spool).await?;
    // Alone, the local store gets every open stats bucket each second (it sums partial rows),
    // so numbers show up at once; next to the intake, buckets leave as the Datadog agent's do.
    let flush = if upstreams.is_empty() {
        StatsFlush::Eager
    } else {
        StatsFlush::Standard
    };
    upstreams.push(Arc::new(local.store().clone()));
    let mut agent = match start_with_upstreams(config, upstreams, flush).await {
        Ok(a) => a,
        Err(e) => {
            local.shutdown(UPSTREAM_SHUTDOWN).await;
            return Err(e);
        }
    };
    let _ = agent.stats.local.set((local.web_url(), local.store().clone()));
    agent.local = Some(local);
    Ok(agent)
}

/// Shuts every writer down at once, under one deadline.
async fn shutdown_all(upstreams: &[Arc<dyn Upstream>]) {
    let mut writers = tokio::task::JoinSet::new();
    for u in upstreams {
        let u = Arc::clone(u);
        writers.spawn(async move { u.shutdown(UPSTREAM_SHUTDOWN).await });
    }
    while writers.join_next().await.is_some() {}
}

/// Like [`start`], with the given writers (tests pass loopback ones).
///
/// # Errors
/// Configuration or bind errors.
pub async fn start_with_upstreams(
    config: AgentConfig,
    upstreams: Vec<Arc<dyn Upstream>>,
    flush_mode: StatsFlush,
) -> Result<Agent, RunError> {
    let identity = AgentIdentity::new(&config.hostname, &config.default_env);
    let now = std::time::SystemTime::now();
    let samplers = Samplers::new(&crate::config::compile::samplers(&config));
    let concentrator = Concentrator::new(&config.stats, identity.clone(), now);
    let client_stats = ClientStatsAggregator::new(&config.stats, identity, now);
    let bucket = config.stats.bucket_size;
    let writers = upstreams.clone();
    start_inner(config, upstreams, move |parts| {
        ForwardSink::new(
            ForwardParts {
                samplers,
                concentrator,
                client_stats,
                upstreams: writers,
                rates: parts.rates,
                counters: parts.counters,
                shared: parts.forward,
                flush_mode,
                bucket,
            },
            Arc::new(std::time::SystemTime::now),
        )
    })
    .await
}

/// What a sink factory gets from the agent.
#[derive(Debug)]
struct SinkParts {
    counters: Arc<SinkCounters>,
    rates: Arc<RatesTable>,
    forward: Arc<ForwardShared>,
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
    start_inner(config, Vec::new(), |parts| make_sink(parts.counters)).await
}

async fn start_inner<S: ChunkSink>(
    config: AgentConfig,
    upstreams: Vec<Arc<dyn Upstream>>,
    make_sink: impl FnOnce(SinkParts) -> S,
) -> Result<Agent, RunError> {
    let process = compile::process(&config)?;
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
    let otlp = crate::otlp_in::bind(&config.otlp_receiver).await?;
    let (otlp_grpc, otlp_http) = (otlp.grpc_addr(), otlp.http_addr());
    if let Some(a) = otlp_grpc {
        listening.push(format!("otlp+grpc://{a}"));
    }
    if let Some(a) = otlp_http {
        listening.push(format!("otlp+http://{a}/v1/traces"));
    }
    let proxy = crate::receiver::proxy::Proxy::new(&config);
    let stats = Arc::new(AgentStats::default());
    let proxy_counters = Arc::clone(&proxy.counters);
    let _ = stats
        .proxy
        .set(crate::status::Source::new(move || proxy_counters.snapshot()));
    let rates = Arc::new(RatesTable::new());
    let _ = stats.upstreams.set(upstreams.clone());
    for u in &upstreams {
        u.attach_ledger(Arc::clone(&stats.forward.ledger));
    }
    let sink = make_sink(SinkParts {
        counters: Arc::clone(&stats.sink),
        rates: Arc::clone(&rates),
        forward: Arc::clone(&stats.forward),
    });
    let (pipeline, pipeline_task) = crate::pipeline::spawn_pipeline_bounded(
        config.pipeline_capacity,
        config.pipeline_max_bytes,
        sink,
        Arc::clone(&stats.sink),
    );
    let (stop, stop_rx) = watch::channel(false);
    let ticker = tokio::spawn(tick(pipeline.clone(), stop_rx.clone()));
    let decoders = config.decoders.max(1);
    let state = Arc::new(AppState {
        info: InfoDoc::new(&config),
        process: Arc::new(process),
        rates: Arc::clone(&rates),
        stats: Arc::clone(&stats),
        decoders: Semaphore::new(decoders),
        body_budget: crate::receiver::budget::shared(&config, &stats, &pipeline),
        pipeline,
        proxy,
        listening: listening.clone(),
        last_warn: AtomicU64::new(0),
        watchdog: crate::receiver::watchdog::Watchdog::shared(&config, &stats),
        config: Arc::new(config),
    });
    let graceful = Arc::new(GracefulShutdown::new());
    let mut loops: Vec<JoinHandle<()>> = listeners
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
    loops.extend(crate::otlp_in::spawn(otlp, &state, &stop_rx));
    let drain_timeout = state.config.receiver_timeout + Duration::from_secs(5);
    let weak_state = Arc::downgrade(&state);
    let task = tokio::spawn(async move {
        for l in loops {
            let _ = l.await;
        }
        if let Ok(g) = Arc::try_unwrap(graceful)
            && tokio::time::timeout(drain_timeout, g.shutdown()).await.is_err()
        {
            tracing::warn!("in-flight requests did not finish within {drain_timeout:?}; closing them");
        }
        // Dropping the last state (and the ticker's sender) closes the pipeline: the sink
        // drains and flushes.
        drop(state);
        let _ = ticker.await;
        let _ = pipeline_task.await;
    });
    Ok(Agent {
        tcp_addr,
        listening,
        stats,
        rates,
        stop,
        task,
        upstreams,
        local: None,
        otlp_grpc,
        otlp_http,
        state: weak_state,
    })
}

/// Sends [`PipelineItem::Tick`] every second until `stop` (skipped while the pipeline is full:
/// the sink is busy and ticks again when it catches up).
async fn tick(pipeline: crate::pipeline::PipelineSender, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {
                if let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) = pipeline.try_send(PipelineItem::Tick) {
                    return;
                }
            }
            r = stop.wait_for(|s| *s) => {
                let _ = r;
                return;
            }
        }
    }
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
    if let Some(url) = agent.web_url() {
        tracing::info!("local mode: traces and stats are kept on this machine; web view at {url}");
    }
    let _ = shutdown.wait_for(|s| *s).await;
    tracing::info!("shutting down: finishing in-flight requests and draining the pipeline");
    agent.shutdown().await;
    Ok(())
}
