//! The whole ingest path (HTTP read, decode, normalize, obfuscate, per-service counts, rates
//! table, hand-off to the forwarding stage) for one v0.4 payload of N single-span traces, each
//! with its own service, against an in-process agent on loopback. Throughput is in spans: time
//! per span must stay flat from 1 k to 200 k traces per payload (issue 10: the agent before this
//! bench took 74 s for 200 k, 4.7 s for 50 k: quadratic).
//!
//! `cargo bench -p trace-agent --bench ingest_many_services -- --warm-up-time 1 --measurement-time 5`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use trace_agent::config::AgentConfig;

#[global_allocator]
static GLOBAL: trace_agent::alloc::Allocator = trace_agent::alloc::Allocator;

fn fixstr(b: &mut Vec<u8>, s: &[u8]) {
    b.push(0xa0 | u8::try_from(s.len()).unwrap());
    b.extend_from_slice(s);
}

/// `n` single-span traces, service `svc-<i>` each.
fn payload(n: usize) -> Vec<u8> {
    let mut b = vec![0xdd];
    b.extend_from_slice(&u32::try_from(n).unwrap().to_be_bytes());
    for i in 0..n {
        b.extend_from_slice(&[0x91, 0x86]);
        for (k, v) in [
            (&b"service"[..], format!("svc-{i}").into_bytes()),
            (b"name", b"op".to_vec()),
            (b"resource", b"GET /".to_vec()),
        ] {
            fixstr(&mut b, k);
            fixstr(&mut b, &v);
        }
        fixstr(&mut b, b"trace_id");
        b.push(0xce);
        b.extend_from_slice(&u32::try_from(i + 1).unwrap().to_be_bytes());
        fixstr(&mut b, b"span_id");
        b.push(0x01);
        fixstr(&mut b, b"duration");
        b.extend_from_slice(&[0xcd, 0x03, 0xe8]);
    }
    b
}

fn post(addr: SocketAddr, body: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(
        s,
        "POST /v0.4/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/msgpack\r\n\
         Datadog-Meta-Lang: rust\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut config = AgentConfig::local(port);
    // Let the bench wait for a decoder instead of measuring overload replies.
    config.decoder_timeout = Duration::from_secs(300);
    config.receiver_timeout = Duration::from_secs(300);
    let agent = rt.block_on(trace_agent::start(config)).unwrap();
    let addr = agent.tcp_addr().unwrap();
    let mut g = c.benchmark_group("ingest_many_services");
    g.sample_size(10);
    for n in [1_000usize, 10_000, 50_000, 200_000] {
        let body = payload(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{n}_traces_{n}_services"), |b| b.iter(|| post(addr, &body)));
    }
    g.finish();
    rt.block_on(agent.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
