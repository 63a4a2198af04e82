//! Decode + normalize + obfuscate (+ stats) throughput on Flask-like payloads built from the
//! real ddtrace captures (testdata/ddtrace-captures), in spans per second, next to Datadog's own
//! Rust chain (`libdd-trace-utils` zero-copy decoder + `libdd-trace-obfuscation` +
//! `libdd-trace-stats` concentrator) in the same run. The `stats_only` groups time the two
//! concentrators alone on already-processed spans.
//!
//! The `full` cases time the whole path a payload takes through the agent, as
//! `forward::ForwardSink` runs it, up to the bytes handed to the HTTP writer:
//! - ours: decode → process (normalize, obfuscate, top-level) → concentrator → samplers
//!   (`AgentConfig::default()`; the captured chunks have priority 1, so all are kept) →
//!   `EncodedPayload::from_borrowed_sized` (protobuf straight from the borrowed span model, its
//!   buffer sized from the last payload's bytes per span, as the forwarding stage does) →
//!   `AgentPayload` (`encode_agent_payload_parts`, into a reused buffer), as the Datadog
//!   writer gets it; `ours/full_via_pb` is the previous path (`convert::tracer_payload`, an
//!   owned `pb::TracerPayload`, then `encode_agent_payload`), which the OTLP and local writers
//!   still take;
//! - libdatadog: its protobuf path (the one its serverless mini agent uses):
//!   `get_traces_from_request_body` / `get_v05_traces_from_request_body` (msgpack →
//!   `pb::Span`) → `collect_pb_trace_chunks` (normalize trace and chunk, top-level, and
//!   `obfuscate_pb_span` as the chunk processor) → `libdd-trace-stats` concentrator →
//!   protobuf `AgentPayload`. libdatadog has no agent samplers, so that step is ours only.
//!
//! Compression is excluded from `full`; `full+zstd` adds the writer's zstd level 1.
//!
//! `cargo bench -p trace-agent --bench decode_process -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::io::Cursor;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group};
use libdd_trace_utils::tracer_payload::{TraceChunkProcessor, TracerPayloadCollection};
use prost::Message;
use trace_agent::config::AgentConfig;
use trace_agent::decode::{ApiVersion, Encoding, decode_payload};
use trace_agent::identity::AgentIdentity;
use trace_agent::process::{ProcessConfig, RequestFacts, process_payload};
use trace_agent::sample::Samplers;
use trace_agent::stats::{Concentrator, StatsConfig};
use trace_agent::upstream::datadog::encode_agent_payload;
use trace_agent::upstream::{EncodedPayload, Part, SizeHint, convert, encode_agent_payload_parts, pb};

/// Same allocator as the `trace-agent` binary, for both chains.
#[global_allocator]
static GLOBAL: trace_agent::alloc::Allocator = trace_agent::alloc::Allocator;

/// Copies of the captured traces per payload (≈ a busy Flask app's 1 s flush).
const COPIES: usize = 50;
const NOW: i64 = 1_800_000_000_000_000_000;

fn capture(rel: &str) -> Vec<u8> {
    let p = trace_agent::decode::captures::dir().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn array32(n: usize) -> Vec<u8> {
    let mut v = vec![0xdd];
    v.extend_from_slice(&u32::try_from(n).unwrap().to_be_bytes());
    v
}

/// v0.4: the captured traces repeated `COPIES` times.
fn v04_payload() -> (Bytes, u64) {
    let body = capture("C_recorder_v04/agent/0007_POST_v0.4_traces.body.bin");
    let traces = usize::from(body[0] & 0x0f);
    assert_eq!(body[0] & 0xf0, 0x90, "capture starts with a fixarray");
    let mut out = array32(traces * COPIES);
    for _ in 0..COPIES {
        out.extend_from_slice(&body[1..]);
    }
    let out = Bytes::from(out);
    let spans = decode_payload(ApiVersion::V04, Encoding::Msgpack, &out)
        .unwrap()
        .span_count() as u64;
    (out, spans)
}

/// v0.5: the captured string table once, the captured traces repeated `COPIES` times.
fn v05_payload() -> (Bytes, u64) {
    let body = capture("A_recorder_default/agent/0007_POST_v0.5_traces.body.bin");
    let mut cur = Cursor::new(&body[1..]);
    let _table: Vec<String> = rmp_serde::from_read(&mut cur).unwrap();
    let table_end = 1 + usize::try_from(cur.position()).unwrap();
    let header = body[table_end];
    assert_eq!(header & 0xf0, 0x90);
    let traces = usize::from(header & 0x0f);
    let mut out = body[..table_end].to_vec();
    out.extend(array32(traces * COPIES));
    for _ in 0..COPIES {
        out.extend_from_slice(&body[table_end + 1..]);
    }
    let out = Bytes::from(out);
    let spans = decode_payload(ApiVersion::V05, Encoding::Msgpack, &out)
        .unwrap()
        .span_count() as u64;
    (out, spans)
}

/// The `AgentPayload` header both chains send (field values as a configured agent has them).
fn agent_header() -> pb::AgentPayload {
    pb::AgentPayload {
        host_name: "bench-host".to_owned(),
        env: "none".to_owned(),
        agent_version: "7.99.0".to_owned(),
        target_tps: 10.0,
        error_tps: 10.0,
        ..Default::default()
    }
}

/// libdatadog's chunk processor as its mini agent uses it: obfuscate every span.
struct Obfuscate<'a>(&'a libdd_trace_obfuscation::obfuscation_config::ObfuscationConfig);

impl TraceChunkProcessor for Obfuscate<'_> {
    fn process(&mut self, chunk: &mut pb::TraceChunk, _root: usize) {
        for s in &mut chunk.spans {
            libdd_trace_obfuscation::obfuscate::obfuscate_pb_span(s, self.0);
        }
    }
}

/// Runs a future that completes without waiting (libdatadog's body readers on a full body).
fn ready<T>(f: impl std::future::Future<Output = T>) -> T {
    match std::pin::pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the body is in memory"),
    }
}

/// libdatadog's stats concentrator as the bench configures it (peer tags as ours).
fn dd_concentrator(now: std::time::SystemTime) -> libdd_trace_stats::span_concentrator::SpanConcentrator {
    libdd_trace_stats::span_concentrator::SpanConcentrator::new(
        std::time::Duration::from_secs(10),
        now,
        vec!["server".into(), "client".into(), "producer".into(), "consumer".into()],
        StatsConfig::default().peer_tag_keys(),
        None,
        vec![],
        None, // no client-side resource obfuscation: as without `stats-obfuscation`
    )
}

/// The request facts libdatadog's chain gets (a Python tracer that computed top-level).
fn dd_header_tags() -> libdd_trace_utils::trace_utils::TracerHeaderTags<'static> {
    libdd_trace_utils::trace_utils::TracerHeaderTags {
        lang: "python",
        generic: libdd_trace_utils::trace_utils::TracerGenericTags {
            client_computed_top_level: true,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// libdatadog's full chain on one body: msgpack → `pb` → normalize, top-level, obfuscate →
/// concentrator → protobuf `AgentPayload`.
fn dd_full(
    version: ApiVersion,
    body: &Bytes,
    header: &pb::AgentPayload,
    header_tags: &libdd_trace_utils::trace_utils::TracerHeaderTags<'_>,
    dd_config: &libdd_trace_obfuscation::obfuscation_config::ObfuscationConfig,
    concentrator: &mut libdd_trace_stats::span_concentrator::SpanConcentrator,
) -> Vec<u8> {
    let req = http_body_util::Full::new(body.clone());
    let (_, traces) = match version {
        ApiVersion::V05 => ready(libdd_trace_utils::trace_utils::get_v05_traces_from_request_body(req)),
        _ => ready(libdd_trace_utils::trace_utils::get_traces_from_request_body(req)),
    }
    .unwrap();
    let collection =
        libdd_trace_utils::trace_utils::collect_pb_trace_chunks(traces, header_tags, &mut Obfuscate(dd_config), true)
            .unwrap();
    let TracerPayloadCollection::V07(payloads) = collection else {
        unreachable!("collect_pb_trace_chunks returns v0.7 payloads")
    };
    for tp in &payloads {
        for chunk in &tp.chunks {
            for s in &chunk.spans {
                concentrator.add_span(s);
            }
        }
    }
    prost::Message::encode_to_vec(&pb::AgentPayload {
        tracer_payloads: payloads,
        ..header.clone()
    })
}

fn ours(c: &mut Criterion, name: &str, version: ApiVersion, body: &Bytes, spans: u64) {
    let config = ProcessConfig::default();
    let facts = RequestFacts {
        lang: "python",
        client_computed_top_level: true,
    };
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(spans));
    g.bench_function("ours/decode", |b| {
        b.iter(|| black_box(decode_payload(version, Encoding::Msgpack, black_box(body)).unwrap()))
    });
    g.bench_function("ours/decode+normalize+obfuscate", |b| {
        b.iter(|| {
            let mut p = decode_payload(version, Encoding::Msgpack, black_box(body)).unwrap();
            black_box(process_payload(&mut p, &facts, &config, NOW));
            black_box(p)
        })
    });
    let now = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(NOW as u64);
    let our_concentrator = || Concentrator::new(&StatsConfig::default(), AgentIdentity::default(), now);
    g.bench_function("ours/decode+normalize+obfuscate+stats", |b| {
        let mut concentrator = our_concentrator();
        b.iter(|| {
            let mut p = decode_payload(version, Encoding::Msgpack, black_box(body)).unwrap();
            black_box(process_payload(&mut p, &facts, &config, NOW));
            concentrator.add_payload(&p, now);
            black_box(p)
        })
    });
    let header = agent_header();
    let agent_config = AgentConfig::default();
    let full_via_pb = |concentrator: &mut Concentrator, samplers: &mut Samplers| {
        let mut p = decode_payload(version, Encoding::Msgpack, black_box(body)).unwrap();
        process_payload(&mut p, &facts, &config, NOW);
        concentrator.add_payload(&p, now);
        let sampled = samplers.sample_payload(&mut p, 0, now);
        black_box(samplers.take_rates_update());
        black_box(sampled);
        let out = Arc::new(convert::tracer_payload(&p));
        encode_agent_payload(&header, &[out])
    };
    let mut hint = SizeHint::default();
    let mut full = |concentrator: &mut Concentrator, samplers: &mut Samplers, out: &mut Vec<u8>| {
        let mut p = decode_payload(version, Encoding::Msgpack, black_box(body)).unwrap();
        process_payload(&mut p, &facts, &config, NOW);
        concentrator.add_payload(&p, now);
        let sampled = samplers.sample_payload(&mut p, 0, now);
        black_box(samplers.take_rates_update());
        black_box(sampled);
        let e = Arc::new(EncodedPayload::from_borrowed_sized(&p, &mut hint));
        let parts = [Part {
            chunks: 0..e.chunks(),
            payload: e,
        }];
        encode_agent_payload_parts(&header, &parts, out);
    };
    {
        // Every chunk is kept: the full path converts and encodes all of them.
        let mut p = decode_payload(version, Encoding::Msgpack, body).unwrap();
        process_payload(&mut p, &facts, &config, NOW);
        let before = p.chunks.len();
        Samplers::new(&trace_agent::config::compile::samplers(&agent_config)).sample_payload(&mut p, 0, now);
        assert_eq!(p.chunks.len(), before, "the samplers keep every chunk");
    }
    g.bench_function("ours/full", |b| {
        let mut concentrator = our_concentrator();
        let mut samplers = Samplers::new(&trace_agent::config::compile::samplers(&agent_config));
        let mut out = Vec::new();
        b.iter(|| {
            full(&mut concentrator, &mut samplers, &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("ours/full+zstd", |b| {
        let mut concentrator = our_concentrator();
        let mut samplers = Samplers::new(&trace_agent::config::compile::samplers(&agent_config));
        let mut out = Vec::new();
        let mut zstd = zstd::bulk::Compressor::new(1).unwrap();
        b.iter(|| {
            full(&mut concentrator, &mut samplers, &mut out);
            black_box(zstd.compress(&out).unwrap())
        })
    });
    g.bench_function("ours/full_via_pb", |b| {
        let mut concentrator = our_concentrator();
        let mut samplers = Samplers::new(&trace_agent::config::compile::samplers(&agent_config));
        b.iter(|| black_box(full_via_pb(&mut concentrator, &mut samplers)))
    });
    // Ablation: the stages of the full path alone (sample, convert, encode on already-processed
    // payloads), and the protobuf encoding as prost's nested `message::encode` does it.
    let mut processed = decode_payload(version, Encoding::Msgpack, body).unwrap();
    process_payload(&mut processed, &facts, &config, NOW);
    g.bench_function("ours/stage/sample", |b| {
        let mut samplers = Samplers::new(&trace_agent::config::compile::samplers(&agent_config));
        b.iter_batched_ref(
            || processed.clone(),
            |p| black_box(samplers.sample_payload(p, 0, now)),
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("ours/stage/encode_borrowed", |b| {
        b.iter(|| black_box(EncodedPayload::from_borrowed(black_box(&processed))))
    });
    let encoded = Arc::new(EncodedPayload::from_borrowed(&processed));
    g.bench_function("ours/stage/assemble", |b| {
        let parts = [Part {
            chunks: 0..encoded.chunks(),
            payload: Arc::clone(&encoded),
        }];
        let mut out = Vec::new();
        b.iter(|| {
            encode_agent_payload_parts(&header, black_box(&parts), &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("ours/stage/convert", |b| {
        b.iter(|| black_box(convert::tracer_payload(black_box(&processed))))
    });
    let converted = Arc::new(convert::tracer_payload(&processed));
    g.bench_function("ours/stage/encode", |b| {
        b.iter(|| {
            black_box(encode_agent_payload(
                &header,
                std::slice::from_ref(black_box(&converted)),
            ))
        })
    });
    g.bench_function("ours/stage/encode_prost_nested", |b| {
        b.iter(|| {
            let mut buf = Vec::with_capacity(header.encoded_len() + converted.encoded_len() + 8);
            header.encode(&mut buf).unwrap();
            prost::encoding::message::encode(5, converted.as_ref(), &mut buf);
            black_box(buf)
        })
    });
    g.bench_function("ours/stage/decode+process", |b| {
        b.iter(|| {
            let mut p = decode_payload(version, Encoding::Msgpack, black_box(body)).unwrap();
            black_box(process_payload(&mut p, &facts, &config, NOW));
            black_box(p)
        })
    });
    let dd_config = libdd_trace_obfuscation::obfuscation_config::ObfuscationConfig::default();
    let new_dd_concentrator = || dd_concentrator(now);
    let header_tags = dd_header_tags();
    let dd_run = |concentrator: &mut libdd_trace_stats::span_concentrator::SpanConcentrator| {
        dd_full(
            version,
            black_box(body),
            &header,
            &header_tags,
            &dd_config,
            concentrator,
        )
    };
    g.bench_function("libdatadog/full", |b| {
        let mut concentrator = new_dd_concentrator();
        b.iter(|| black_box(dd_run(&mut concentrator)))
    });
    g.bench_function("libdatadog/full+zstd", |b| {
        let mut concentrator = new_dd_concentrator();
        b.iter(|| {
            let raw = dd_run(&mut concentrator);
            black_box(zstd::bulk::compress(&raw, 1).unwrap())
        })
    });
    let tiny = libdd_tinybytes::Bytes::from(body.to_vec());
    let decode_dd = |b: libdd_tinybytes::Bytes| match version {
        ApiVersion::V05 => libdd_trace_utils::msgpack_decoder::v05::from_bytes(b).unwrap().0,
        _ => libdd_trace_utils::msgpack_decoder::v04::from_bytes(b).unwrap().0,
    };
    g.bench_function("libdatadog/decode", |b| {
        b.iter(|| black_box(decode_dd(black_box(tiny.clone()))))
    });
    g.bench_function("libdatadog/decode+obfuscate", |b| {
        b.iter(|| {
            let mut traces = decode_dd(black_box(tiny.clone()));
            for t in &mut traces {
                for s in t.iter_mut() {
                    libdd_trace_obfuscation::obfuscate::obfuscate_v04_span(s, &dd_config);
                }
            }
            black_box(traces)
        })
    });
    g.bench_function("libdatadog/decode+obfuscate+stats", |b| {
        let mut concentrator = new_dd_concentrator();
        b.iter(|| {
            let mut traces = decode_dd(black_box(tiny.clone()));
            for t in &mut traces {
                for s in t.iter_mut() {
                    libdd_trace_obfuscation::obfuscate::obfuscate_v04_span(s, &dd_config);
                }
                for s in t.iter() {
                    concentrator.add_span(s);
                }
            }
            black_box(traces)
        })
    });
    g.finish();

    // The concentrators alone, on the same processed spans (peer-tag keys as each agent uses).
    let mut g = c.benchmark_group(format!("{name}/stats_only"));
    g.throughput(Throughput::Elements(spans));
    let mut processed = decode_payload(version, Encoding::Msgpack, body).unwrap();
    process_payload(&mut processed, &facts, &config, NOW);
    g.bench_function("ours/concentrator", |b| {
        let mut concentrator = our_concentrator();
        b.iter(|| concentrator.add_payload(black_box(&processed), now))
    });
    let mut dd_traces = decode_dd(tiny.clone());
    for t in &mut dd_traces {
        for s in t.iter_mut() {
            libdd_trace_obfuscation::obfuscate::obfuscate_v04_span(s, &dd_config);
        }
    }
    g.bench_function("libdatadog/concentrator", |b| {
        let mut concentrator = new_dd_concentrator();
        b.iter(|| {
            for t in black_box(&dd_traces) {
                for s in t.iter() {
                    concentrator.add_span(s);
                }
            }
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let (v04, spans04) = v04_payload();
    let (v05, spans05) = v05_payload();
    ours(c, "v0.4_flask", ApiVersion::V04, &v04, spans04);
    ours(c, "v0.5_flask", ApiVersion::V05, &v05, spans05);
}

/// Fixed-iteration mode for instruction counts (`valgrind --tool=callgrind`), instead of
/// criterion's timed loops: `DECODE_PROCESS_ITERS=N` runs the full path `N` times on one payload
/// (`DECODE_PROCESS_CASE`: `v0.4` (default) or `v0.5`, optionally `/libdatadog` for its chain)
/// and exits. Per-iteration counts are the difference of two runs (N and N + 10) divided by 10;
/// the stages are the inclusive costs of `decode_payload`, `process_payload`,
/// `Concentrator::add_payload`, `Samplers::sample_payload`, `EncodedPayload::from_borrowed_sized` and
/// `encode_agent_payload_parts` (`callgrind_annotate --inclusive=yes`).
#[allow(clippy::print_stdout)] // reports what it ran
fn fixed_iterations() -> Option<()> {
    let iters: usize = std::env::var("DECODE_PROCESS_ITERS").ok()?.parse().ok()?;
    let case = std::env::var("DECODE_PROCESS_CASE").unwrap_or_else(|_| "v0.4".to_owned());
    let (version, (body, spans)) = if case.starts_with("v0.5") {
        (ApiVersion::V05, v05_payload())
    } else {
        (ApiVersion::V04, v04_payload())
    };
    let config = ProcessConfig::default();
    let facts = RequestFacts {
        lang: "python",
        client_computed_top_level: true,
    };
    let now = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(NOW as u64);
    let header = agent_header();
    let mut out_len = 0;
    if case.ends_with("/libdatadog") {
        let dd_config = libdd_trace_obfuscation::obfuscation_config::ObfuscationConfig::default();
        let mut concentrator = dd_concentrator(now);
        let header_tags = dd_header_tags();
        for _ in 0..iters {
            out_len += black_box(dd_full(version, &body, &header, &header_tags, &dd_config, &mut concentrator).len());
        }
    } else {
        let agent_config = AgentConfig::default();
        let mut concentrator = Concentrator::new(&StatsConfig::default(), AgentIdentity::default(), now);
        let mut samplers = Samplers::new(&trace_agent::config::compile::samplers(&agent_config));
        let mut out = Vec::new();
        let mut hint = SizeHint::default();
        for _ in 0..iters {
            let mut p = decode_payload(version, Encoding::Msgpack, black_box(&body)).ok()?;
            process_payload(&mut p, &facts, &config, NOW);
            concentrator.add_payload(&p, now);
            black_box(samplers.sample_payload(&mut p, 0, now));
            black_box(samplers.take_rates_update());
            let e = Arc::new(EncodedPayload::from_borrowed_sized(&p, &mut hint));
            let parts = [Part {
                chunks: 0..e.chunks(),
                payload: e,
            }];
            encode_agent_payload_parts(&header, &parts, &mut out);
            out_len += black_box(out.len());
        }
    }
    println!("{case}: {iters} iterations of {spans} spans, {out_len} bytes out");
    Some(())
}

criterion_group!(group, benches);

fn main() {
    if fixed_iterations().is_some() {
        return;
    }
    group();
    Criterion::default().configure_from_args().final_summary();
}
