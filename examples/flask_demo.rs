//! The Flask demo from the original write-ups, in axum, traced by `tracer::http`.
//!
//! ```text
//! DD_SERVICE=flask-demo DD_ENV=demo cargo run --example flask_demo
//! curl localhost:5050/api/apm
//! ```
//!
//! Routes: `/` → `Entrypoint to the Application`, `/api/apm` → `Getting APM Started`,
//! `/api/trace` → `Posting Traces`, `/api/error` → 500 (through the app's error type, shown
//! on the request span). Each request is a `web` span with the route as its resource and
//! `sqlite.query` / `template.render` children.
//!
//! - `PORT` (default 5050) and `HOST` (default 127.0.0.1) choose where it listens.
//! - `DD_SERVICE` names the service (default `flask-demo`); the other `DD_*` variables
//!   configure the tracer (agent at `DD_TRACE_AGENT_URL`, default `http://127.0.0.1:8126`).
//! - Ctrl-C or SIGTERM: stops accepting, finishes the requests in flight, sends every
//!   span to the agent, prints what was sent, and exits.
//! - `RUST_LOG` sets the log filter (default `warn`: the tracer's problems only).
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program reports on stdout

#[path = "flask_demo/app.rs"]
mod app;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tracer::{Tracer, TracerConfig};

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flask_demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p
            .trim()
            .parse()
            .map_err(|_| format!("PORT={p:?} is not a port number (1-65535)"))?,
        Err(_) => 5050,
    };
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .or_else(|_| format!("[{host}]:{port}").parse())
        .map_err(|_| format!("HOST={host:?} is not an IP address"))?;

    let mut config = TracerConfig::from_env().map_err(|e| e.to_string())?;
    if std::env::var("DD_SERVICE").map_or(true, |s| s.trim().is_empty()) {
        config = config.with_service("flask-demo");
    }
    let tracer = Tracer::new(config).map_err(|e| e.to_string())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                format!("cannot listen on {addr}: the port is already in use ({e}); stop the other program or set PORT to a free port")
            } else {
                format!("cannot listen on {addr}: {e}")
            }
        })?;
        println!(
            "flask_demo: listening on http://{addr} (service {}, agent {})",
            tracer.config().service(),
            tracer.config().agent().url()
        );
        axum::serve(listener, app::router(tracer))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|e| format!("server error: {e}"))
    });
    let flushed = tracer.shutdown(Duration::from_secs(5));
    let health = tracer.health();
    println!(
        "flask_demo: stopped; sent {} traces / {} spans to {}{}",
        health.traces_sent,
        health.spans_sent,
        tracer.config().agent().url(),
        match &flushed {
            Ok(()) => String::new(),
            Err(e) => format!(" (last flush: {e})"),
        }
    );
    served
}
