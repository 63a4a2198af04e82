//! `trace-agent`: run the agent, print its status, or print the effective configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use trace_agent::config::{self, AgentConfig, ProcessEnv};

/// mimalloc (see `trace_agent::alloc`).
#[global_allocator]
static GLOBAL: trace_agent::alloc::Allocator = trace_agent::alloc::Allocator;

#[derive(Debug, Parser)]
#[command(name = "trace-agent", version, about = "Datadog-compatible trace agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (default port 8126 on loopback).
    Run {
        /// Path to datadog.yaml (optional: the agent runs without one).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Receiver port (overrides apm_config.receiver_port and DD_APM_RECEIVER_PORT).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Ask the running agent what it received, dropped and forwarded.
    Status {
        /// Path to datadog.yaml (to find the agent's port).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Receiver port of the agent to ask.
        #[arg(long)]
        port: Option<u16>,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration and where each value came from (secrets masked).
    Config {
        /// Path to datadog.yaml.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn load(path: Option<&std::path::Path>, port: Option<u16>) -> Result<AgentConfig, String> {
    let mut c = config::load(path, &ProcessEnv).map_err(|e| e.to_string())?;
    if let Some(p) = port {
        c.receiver_port = p;
        c.origins.insert(
            "apm_config.receiver_port".to_owned(),
            config::Origin::Env("--port".to_owned()),
        );
    }
    Ok(c)
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    trace_agent::alloc::limit_retention();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DD_LOG_LEVEL")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Run { config, port } => run(config.as_deref(), port),
        Command::Status { config, port, json } => trace_agent_cli::status(config.as_deref(), port, json),
        Command::Config { config } => load(config.as_deref(), None).map(|c| {
            for w in &c.warnings {
                eprintln!("warning: {}", config::escape_control(w));
            }
            print!("{}", c.describe());
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            // Messages quote config values and agent replies: no control character reaches
            // the terminal.
            eprintln!("trace-agent: {}", config::escape_control(&msg));
            ExitCode::FAILURE
        }
    }
}

fn run(path: Option<&std::path::Path>, port: Option<u16>) -> Result<(), String> {
    let config = load(path, port)?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if !config.enabled {
        tracing::info!("apm_config.enabled is false: not starting the trace agent");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = tx.send(true);
        });
        Box::pin(trace_agent::run(config, rx)).await.map_err(|e| e.to_string())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

mod trace_agent_cli {
    //! `trace-agent status`.
    use super::load;

    #[allow(clippy::print_stdout)]
    pub(super) fn status(path: Option<&std::path::Path>, port: Option<u16>, json: bool) -> Result<(), String> {
        let config = load(path, port)?;
        let port = config.receiver_port;
        let snapshot = trace_agent::status::fetch_status(port).map_err(|e| {
            format!(
                "cannot reach the trace agent on 127.0.0.1:{port} ({e}); is it running? start it with `trace-agent run`"
            )
        })?;
        if json {
            println!("{}", serde_json::to_string_pretty(&snapshot).unwrap_or_default());
        } else {
            print!("{}", trace_agent::status::render(&snapshot));
        }
        Ok(())
    }
}
