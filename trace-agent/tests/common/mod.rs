//! Helpers shared by the integration tests that run the `trace-agent` binary (`cli.rs`,
//! `hostile.rs`, `otlp_cli.rs`): a free loopback port, `trace-agent run` with a clean
//! environment, waiting until something listens, and the raw HTTP and msgpack bytes of a hostile
//! client (`raw_http`, also included by `examples/hostile.rs`).
// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub(crate) mod raw_http;

/// This package's binary.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_trace-agent");

/// A loopback port nothing listens on (right now).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `bin run --port <port>` with an empty environment, no Unix socket and no local mode.
pub(crate) fn run_command(bin: &str, port: u16) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--port", &port.to_string()])
        .env_clear()
        .env("DD_APM_RECEIVER_SOCKET", "")
        .env("DD_APM_LOCAL_ENABLED", "false");
    cmd
}

/// Waits (at most 20 s) until a TCP connection to `127.0.0.1:port` succeeds.
pub(crate) fn wait_listening(port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM to `child` (the agent's graceful shutdown).
pub(crate) fn sigterm(child: &Child) {
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}
