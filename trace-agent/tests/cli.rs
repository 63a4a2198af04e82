//! The `trace-agent` binary: run + SIGTERM (graceful, exit 0), a taken port, `status`, `config`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, free_port, run_command, sigterm, wait_listening};

/// Starts `trace-agent run` on a free port with a clean environment; waits until it listens.
fn start_agent(extra_env: &[(&str, &str)]) -> (Child, u16) {
    let port = free_port();
    let mut cmd = run_command(BIN, port);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    wait_listening(port);
    (child, port)
}

fn post_trace(port: u16) -> String {
    // [[{service: "cli-svc", name: "op", trace_id: 1, span_id: 1}]]
    let mut body = vec![0x91, 0x91, 0x84];
    for (k, v) in [("service", "cli-svc"), ("name", "op")] {
        body.push(0xa0 | k.len() as u8);
        body.extend_from_slice(k.as_bytes());
        body.push(0xa0 | v.len() as u8);
        body.extend_from_slice(v.as_bytes());
    }
    for k in ["trace_id", "span_id"] {
        body.push(0xa0 | k.len() as u8);
        body.extend_from_slice(k.as_bytes());
        body.push(0x01);
    }
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /v0.4/traces HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/msgpack\r\n\
         Datadog-Meta-Lang: rust\r\nDatadog-Meta-Tracer-Version: 0.1.0\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn wait(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

#[test]
fn sigterm_is_a_graceful_exit_zero() {
    let (child, port) = start_agent(&[]);
    assert!(post_trace(port).starts_with("HTTP/1.1 200"));
    sigterm(&child);
    let out = wait(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("listening on http://127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(stderr.contains("shutting down"), "{stderr}");
}

#[test]
fn taken_port_is_one_line_without_backtrace() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(BIN)
        .args(["run", "--port", &port.to_string()])
        .env_clear()
        .env("RUST_BACKTRACE", "1")
        .env("DD_APM_RECEIVER_SOCKET", "")
        .env("DD_APM_LOCAL_ENABLED", "false")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(&format!("127.0.0.1:{port}")) && lines[0].contains("already in use"),
        "{stderr}"
    );
    assert!(lines[0].contains("DD_APM_RECEIVER_PORT"), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn status_reports_what_the_running_agent_received() {
    let (child, port) = start_agent(&[]);
    post_trace(port);
    // The next stage consumes asynchronously: poll `status` until it has (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (out, text) = loop {
        let out = Command::new(BIN)
            .args(["status", "--port", &port.to_string()])
            .env_clear()
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("Forwarded to the next stage: 1 payloads") || Instant::now() > deadline {
            break (out, text);
        }
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("http://127.0.0.1:{port}")), "{text}");
    assert!(text.contains("service \"cli-svc\" from rust"), "{text}");
    assert!(text.contains("1 payloads, 1 traces, 1 spans"), "{text}");
    assert!(
        text.contains("Forwarded to the next stage: 1 payloads, 1 traces, 1 spans"),
        "{text}"
    );
    sigterm(&child);
    assert_eq!(wait(child).status.code(), Some(0));
}

#[test]
fn status_without_agent_says_how_to_start_it() {
    let out = Command::new(BIN)
        .args(["status", "--port", &free_port().to_string()])
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is it running?"));
}

#[test]
fn config_prints_values_with_origins_and_masks_the_api_key() {
    let out = Command::new(BIN)
        .args(["config"])
        .env_clear()
        .env("DD_API_KEY", "supersecretkey12345")
        .env("DD_APM_RECEIVER_PORT", "9999")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(!text.contains("supersecret"), "{text}");
    assert!(text.contains("12345"));
    let port_line = text
        .lines()
        .find(|l| l.starts_with("apm_config.receiver_port "))
        .unwrap();
    assert!(
        port_line.contains("9999") && port_line.contains("(env DD_APM_RECEIVER_PORT)"),
        "{port_line}"
    );
    assert!(text.lines().any(|l| l.starts_with("site ") && l.contains("(default)")));
}
