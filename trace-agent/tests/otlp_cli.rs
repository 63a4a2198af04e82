//! The `trace-agent` binary with the OTLP receivers turned on by the Datadog agent's variables:
//! an OTLP/JSON export is accepted and shows in `trace-agent status`; a taken OTLP port stops
//! the agent with the key to change.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, free_port, run_command, sigterm, wait_listening};

fn command(port: u16, otlp_port: u16) -> Command {
    let mut cmd = run_command(BIN, port);
    cmd.env(
        "DD_OTLP_CONFIG_RECEIVER_PROTOCOLS_HTTP_ENDPOINT",
        format!("127.0.0.1:{otlp_port}"),
    );
    cmd
}

const EXPORT: &str = r#"{"resourceSpans":[{"resource":{"attributes":[
  {"key":"service.name","value":{"stringValue":"cli-otel"}},
  {"key":"telemetry.sdk.language","value":{"stringValue":"nodejs"}},
  {"key":"telemetry.sdk.version","value":{"stringValue":"2.0.0"}}]},
  "scopeSpans":[{"spans":[
   {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /x","kind":2,
    "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000002000000",
    "attributes":[{"key":"http.request.method","value":{"stringValue":"GET"}}]},
   {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","parentSpanId":"eee19b7ec3c1b174",
    "name":"q","kind":3,"startTimeUnixNano":"1700000000000100000","endTimeUnixNano":"1700000000000200000"}]}]}]}"#;

fn post_export(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{EXPORT}",
        EXPORT.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn stop(child: Child) -> std::process::Output {
    sigterm(&child);
    child.wait_with_output().unwrap()
}

#[test]
fn env_turns_on_the_otlp_http_receiver_and_status_counts_it() {
    let (port, otlp_port) = (free_port(), free_port());
    let child = command(port, otlp_port)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(port);
    wait_listening(otlp_port);
    let reply = post_export(otlp_port);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("{}"), "{reply}");
    // The next stage consumes asynchronously: poll `status` until it has (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let out = Command::new(BIN)
            .args(["status", "--json", "--port", &port.to_string()])
            .env_clear()
            .output()
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if status["forwarded"]["spans"] == 2 || Instant::now() > deadline {
            break status;
        }
    };
    let http = &status["otlp"]["http"];
    assert_eq!(http["spans_received"], 2, "{status:#}");
    assert_eq!(http["spans_accepted"], 2, "{status:#}");
    assert_eq!(http["listening"], format!("http://127.0.0.1:{otlp_port}/v1/traces"));
    assert!(status["otlp"]["grpc"]["listening"].is_null(), "gRPC stays off");
    let received = status["received"].to_string();
    assert!(
        received.contains("cli-otel") && received.contains("nodejs") && received.contains("otlp-2.0.0"),
        "{received}"
    );
    let text = Command::new(BIN)
        .args(["status", "--port", &port.to_string()])
        .env_clear()
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("OTLP HTTP receiver"), "{text}");
    let out = stop(child);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_taken_otlp_port_names_the_key() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let otlp_port = taken.local_addr().unwrap().port();
    let out = command(free_port(), otlp_port).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("otlp_config.receiver.protocols.http.endpoint") && stderr.contains(&otlp_port.to_string()),
        "{stderr}"
    );
}
