//! The `/v0.6/stats` body: a msgpack `ClientStatsPayload` whose field names are the Go
//! struct's (`Hostname`, `Env`, `Stats`, …), sketches as protobuf bytes — what ddtrace sends.

use rmp::encode::{write_array_len, write_bin, write_bool, write_map_len, write_sint, write_str, write_uint};

use super::{BUCKET_NS, FlushedBucket};

/// Who the stats are from.
#[derive(Debug, Clone)]
pub(crate) struct PayloadIdentity {
    pub(crate) service: String,
    pub(crate) env: String,
    pub(crate) version: String,
    pub(crate) runtime_id: String,
    pub(crate) tracer_version: String,
}

/// Encodes `buckets` as one payload; `sequence` counts the payloads of this process.
pub(crate) fn encode_payload(id: &PayloadIdentity, buckets: &[FlushedBucket], sequence: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    let o = &mut out;
    let s = |o: &mut Vec<u8>, v: &str| {
        let _ = write_str(o, v);
    };
    let _ = write_map_len(o, 10);
    s(o, "Hostname");
    s(o, "");
    s(o, "Env");
    s(o, &id.env);
    s(o, "Version");
    s(o, &id.version);
    s(o, "Lang");
    s(o, "rust");
    s(o, "TracerVersion");
    s(o, &id.tracer_version);
    s(o, "RuntimeID");
    s(o, &id.runtime_id);
    s(o, "Sequence");
    let _ = write_uint(o, sequence);
    s(o, "Service");
    s(o, &id.service);
    s(o, "Tags");
    let _ = write_array_len(o, 0);
    s(o, "Stats");
    let _ = write_array_len(o, u32::try_from(buckets.len()).unwrap_or(u32::MAX));
    let mut sketch = Vec::new();
    for b in buckets {
        let _ = write_map_len(o, 4);
        s(o, "Start");
        let _ = write_uint(o, u64::try_from(b.start).unwrap_or(0));
        s(o, "Duration");
        let _ = write_uint(o, BUCKET_NS as u64);
        s(o, "AgentTimeShift");
        let _ = write_sint(o, 0);
        s(o, "Stats");
        let _ = write_array_len(o, u32::try_from(b.groups.len()).unwrap_or(u32::MAX));
        for (k, g) in &b.groups {
            let _ = write_map_len(o, 19);
            s(o, "Service");
            s(o, &k.service);
            s(o, "Name");
            s(o, &k.name);
            s(o, "Resource");
            s(o, &k.resource);
            s(o, "HTTPStatusCode");
            let _ = write_uint(o, u64::from(k.http_status_code));
            s(o, "Type");
            s(o, &k.span_type);
            s(o, "Hits");
            let _ = write_uint(o, g.hits);
            s(o, "Errors");
            let _ = write_uint(o, g.errors);
            s(o, "Duration");
            let _ = write_uint(o, g.duration);
            s(o, "OkSummary");
            sketch.clear();
            g.ok.encode(&mut sketch);
            let _ = write_bin(o, &sketch);
            s(o, "ErrorSummary");
            sketch.clear();
            g.error.encode(&mut sketch);
            let _ = write_bin(o, &sketch);
            s(o, "Synthetics");
            let _ = write_bool(o, k.synthetics);
            s(o, "TopLevelHits");
            let _ = write_uint(o, g.top_level_hits);
            s(o, "SpanKind");
            s(o, &k.span_kind);
            s(o, "PeerTags");
            let _ = write_array_len(o, u32::try_from(k.peer_tags.len()).unwrap_or(u32::MAX));
            for t in &k.peer_tags {
                s(o, t);
            }
            s(o, "IsTraceRoot");
            // pb.Trilean: 1 true, 2 false.
            let _ = write_uint(o, if k.is_trace_root { 1 } else { 2 });
            s(o, "GRPCStatusCode");
            s(o, &k.grpc_status_code);
            s(o, "HTTPMethod");
            s(o, &k.http_method);
            s(o, "HTTPEndpoint");
            s(o, &k.http_endpoint);
            s(o, "srv_src");
            s(o, &k.service_source);
        }
    }
    out
}
