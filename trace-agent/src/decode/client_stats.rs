//! `/v0.6/stats`: one msgpack `ClientStatsPayload` map with the Go msgp (PascalCase) field
//! names of spec 6.4, into the `libdd-trace-protobuf` types the stats stage and the intake use.
//! Lenient like the trace decoders (unknown keys skipped, `nil` = zero, any number width).

use libdd_trace_protobuf::pb;

use super::error::{DecodeError, ReadError};
use super::reader::Reader;

type R<T> = Result<T, Box<ReadError>>;

/// Longest string kept of any client-stats field (the longest a span resource may be): the
/// fields become aggregation keys, so their length is bounded before they are stored.
pub(crate) const MAX_STATS_STRING: usize = 5_000;

fn string(r: &mut Reader<'_>) -> R<String> {
    let s = r.str()?;
    let s = s.as_str();
    let mut end = s.len().min(MAX_STATS_STRING);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let s = s[..end].to_owned();
    r.charge(s.len(), 1)?;
    Ok(s)
}

fn strings(r: &mut Reader<'_>) -> R<Vec<String>> {
    let n = r.array_len()?;
    r.charge(n, std::mem::size_of::<String>())?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(string(r)?);
    }
    Ok(v)
}

fn bytes(r: &mut Reader<'_>) -> R<Vec<u8>> {
    if r.peek_marker()? == rmp::Marker::Null {
        r.skip()?;
        return Ok(Vec::new());
    }
    let b = r.bytes()?.into_owned();
    r.charge(b.len(), 1)?;
    Ok(b)
}

/// Decodes a `/v0.6/stats` body.
///
/// # Errors
/// A [`DecodeError`] naming the bucket, group and field that could not be read.
pub fn decode_client_stats(body: &[u8]) -> Result<pb::ClientStatsPayload, DecodeError> {
    decode_client_stats_with(body, super::DecodeLimits::for_body(body.len()))
}

/// [`decode_client_stats`] within `limits` (only the memory budget applies: no spans here).
///
/// # Errors
/// As [`decode_client_stats`]; [`DecodeError::is_limit`] when the budget would be exceeded.
pub fn decode_client_stats_with(
    body: &[u8],
    limits: super::DecodeLimits,
) -> Result<pb::ClientStatsPayload, DecodeError> {
    let mut r = Reader::with_limits(body, limits);
    let mut p = pb::ClientStatsPayload::default();
    let n = r.map_len().map_err(|e| e.at(|| "client stats payload".to_owned()))?;
    for _ in 0..n {
        let key = r
            .key()
            .map_err(|e| e.at(|| "client stats payload: field name".to_owned()))?;
        let field = |name: &'static str| move || format!("client stats payload: field '{name}'");
        let r = &mut r;
        match key {
            b"Hostname" => p.hostname = string(r).map_err(|e| e.at(field("Hostname")))?,
            b"Env" => p.env = string(r).map_err(|e| e.at(field("Env")))?,
            b"Version" => p.version = string(r).map_err(|e| e.at(field("Version")))?,
            b"Lang" => p.lang = string(r).map_err(|e| e.at(field("Lang")))?,
            b"TracerVersion" => p.tracer_version = string(r).map_err(|e| e.at(field("TracerVersion")))?,
            b"RuntimeID" => p.runtime_id = string(r).map_err(|e| e.at(field("RuntimeID")))?,
            b"Sequence" => p.sequence = r.u64().map_err(|e| e.at(field("Sequence")))?,
            b"AgentAggregation" => p.agent_aggregation = string(r).map_err(|e| e.at(field("AgentAggregation")))?,
            b"Service" => p.service = string(r).map_err(|e| e.at(field("Service")))?,
            b"ContainerID" => p.container_id = string(r).map_err(|e| e.at(field("ContainerID")))?,
            b"Tags" => p.tags = strings(r).map_err(|e| e.at(field("Tags")))?,
            b"GitCommitSha" => p.git_commit_sha = string(r).map_err(|e| e.at(field("GitCommitSha")))?,
            b"ImageTag" => p.image_tag = string(r).map_err(|e| e.at(field("ImageTag")))?,
            b"ProcessTagsHash" => p.process_tags_hash = r.u64().map_err(|e| e.at(field("ProcessTagsHash")))?,
            b"ProcessTags" => p.process_tags = string(r).map_err(|e| e.at(field("ProcessTags")))?,
            b"Stats" => {
                let n = r
                    .array_len()
                    .and_then(|n| r.charge(n, std::mem::size_of::<pb::ClientStatsBucket>()).map(|()| n))
                    .map_err(|e| e.at(field("Stats")))?;
                p.stats.reserve_exact(n);
                for b in 0..n {
                    p.stats.push(decode_bucket(r, b)?);
                }
            }
            _ => r
                .skip()
                .map_err(|e| e.at(|| "client stats payload: unknown field".to_owned()))?,
        }
    }
    Ok(p)
}

fn decode_bucket(r: &mut Reader<'_>, b: usize) -> Result<pb::ClientStatsBucket, DecodeError> {
    let mut bucket = pb::ClientStatsBucket::default();
    let n = r.map_len().map_err(|e| e.at(|| format!("bucket {b}")))?;
    for _ in 0..n {
        let key = r.key().map_err(|e| e.at(|| format!("bucket {b}: field name")))?;
        let field = |name: &'static str| move || format!("bucket {b}: field '{name}'");
        match key {
            b"Start" => bucket.start = r.u64().map_err(|e| e.at(field("Start")))?,
            b"Duration" => bucket.duration = r.u64().map_err(|e| e.at(field("Duration")))?,
            b"AgentTimeShift" => bucket.agent_time_shift = r.i64().map_err(|e| e.at(field("AgentTimeShift")))?,
            b"Stats" => {
                let n = r
                    .array_len()
                    .and_then(|n| r.charge(n, std::mem::size_of::<pb::ClientGroupedStats>()).map(|()| n))
                    .map_err(|e| e.at(field("Stats")))?;
                bucket.stats.reserve_exact(n);
                for g in 0..n {
                    bucket.stats.push(decode_group(r, b, g)?);
                }
            }
            _ => r.skip().map_err(|e| e.at(|| format!("bucket {b}: unknown field")))?,
        }
    }
    Ok(bucket)
}

fn decode_group(r: &mut Reader<'_>, b: usize, g: usize) -> Result<pb::ClientGroupedStats, DecodeError> {
    let mut s = pb::ClientGroupedStats::default();
    let n = r.map_len().map_err(|e| e.at(|| format!("bucket {b} group {g}")))?;
    for _ in 0..n {
        let key = r
            .key()
            .map_err(|e| e.at(|| format!("bucket {b} group {g}: field name")))?;
        let field = |name: &'static str| move || format!("bucket {b} group {g}: field '{name}'");
        match key {
            b"Service" => s.service = string(r).map_err(|e| e.at(field("Service")))?,
            b"Name" => s.name = string(r).map_err(|e| e.at(field("Name")))?,
            b"Resource" => s.resource = string(r).map_err(|e| e.at(field("Resource")))?,
            b"HTTPStatusCode" => {
                let v = r.u64().map_err(|e| e.at(field("HTTPStatusCode")))?;
                s.http_status_code = u32::try_from(v).unwrap_or(0);
            }
            b"Type" => s.r#type = string(r).map_err(|e| e.at(field("Type")))?,
            b"DBType" => s.db_type = string(r).map_err(|e| e.at(field("DBType")))?,
            b"Hits" => s.hits = r.u64().map_err(|e| e.at(field("Hits")))?,
            b"Errors" => s.errors = r.u64().map_err(|e| e.at(field("Errors")))?,
            b"Duration" => s.duration = r.u64().map_err(|e| e.at(field("Duration")))?,
            b"OkSummary" => s.ok_summary = bytes(r).map_err(|e| e.at(field("OkSummary")))?,
            b"ErrorSummary" => s.error_summary = bytes(r).map_err(|e| e.at(field("ErrorSummary")))?,
            b"Synthetics" => s.synthetics = r.bool().map_err(|e| e.at(field("Synthetics")))?,
            b"TopLevelHits" => s.top_level_hits = r.u64().map_err(|e| e.at(field("TopLevelHits")))?,
            b"SpanKind" => s.span_kind = string(r).map_err(|e| e.at(field("SpanKind")))?,
            b"PeerTags" => s.peer_tags = strings(r).map_err(|e| e.at(field("PeerTags")))?,
            b"IsTraceRoot" => s.is_trace_root = r.i32().map_err(|e| e.at(field("IsTraceRoot")))?,
            b"GRPCStatusCode" => s.grpc_status_code = string(r).map_err(|e| e.at(field("GRPCStatusCode")))?,
            b"HTTPMethod" => s.http_method = string(r).map_err(|e| e.at(field("HTTPMethod")))?,
            b"HTTPEndpoint" => s.http_endpoint = string(r).map_err(|e| e.at(field("HTTPEndpoint")))?,
            b"srv_src" => s.service_source = string(r).map_err(|e| e.at(field("srv_src")))?,
            b"SpanDerivedPrimaryTags" => {
                s.span_derived_primary_tags = strings(r).map_err(|e| e.at(field("SpanDerivedPrimaryTags")))?;
            }
            b"AdditionalMetricTags" => {
                s.additional_metric_tags = strings(r).map_err(|e| e.at(field("AdditionalMetricTags")))?;
            }
            _ => r
                .skip()
                .map_err(|e| e.at(|| format!("bucket {b} group {g}: unknown field")))?,
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> pb::ClientStatsPayload {
        pb::ClientStatsPayload {
            hostname: "h".into(),
            env: "prod".into(),
            version: "1.0".into(),
            lang: "python".into(),
            tracer_version: "4.16.0".into(),
            runtime_id: "rid".into(),
            sequence: 7,
            service: "web".into(),
            tags: vec!["a:b".into()],
            process_tags: "entrypoint.name:app".into(),
            stats: vec![pb::ClientStatsBucket {
                start: 1_700_000_000_000_000_000,
                duration: 10_000_000_000,
                agent_time_shift: -5,
                stats: vec![pb::ClientGroupedStats {
                    service: "web".into(),
                    name: "flask.request".into(),
                    resource: "GET /".into(),
                    http_status_code: 200,
                    r#type: "web".into(),
                    hits: 10,
                    errors: 1,
                    duration: 12345,
                    ok_summary: vec![1, 2, 3],
                    error_summary: vec![4],
                    synthetics: true,
                    top_level_hits: 10,
                    span_kind: "server".into(),
                    peer_tags: vec!["peer.service:db".into()],
                    is_trace_root: 1,
                    grpc_status_code: "2".into(),
                    http_method: "GET".into(),
                    http_endpoint: "/".into(),
                    service_source: "m".into(),
                    ..Default::default()
                }],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn decodes_what_rmp_serde_encodes_with_the_go_names() {
        let p = sample();
        let body = rmp_serde::to_vec_named(&p).unwrap();
        assert_eq!(decode_client_stats(&body).unwrap(), p);
    }

    #[test]
    fn lenient_on_unknown_fields_nil_and_number_widths() {
        // {"Env": nil, "Unknown": [1, {"x": 2}], "Stats": [{"Start": 1.0 (f64), "Stats": [{"Hits": u8 3, "OkSummary": "str"}]}]}
        let mut b = Vec::new();
        rmp::encode::write_map_len(&mut b, 3).unwrap();
        rmp::encode::write_str(&mut b, "Env").unwrap();
        rmp::encode::write_nil(&mut b).unwrap();
        rmp::encode::write_str(&mut b, "Unknown").unwrap();
        rmp::encode::write_array_len(&mut b, 2).unwrap();
        rmp::encode::write_uint(&mut b, 1).unwrap();
        rmp::encode::write_map_len(&mut b, 1).unwrap();
        rmp::encode::write_str(&mut b, "x").unwrap();
        rmp::encode::write_uint(&mut b, 2).unwrap();
        rmp::encode::write_str(&mut b, "Stats").unwrap();
        rmp::encode::write_array_len(&mut b, 1).unwrap();
        rmp::encode::write_map_len(&mut b, 2).unwrap();
        rmp::encode::write_str(&mut b, "Start").unwrap();
        rmp::encode::write_f64(&mut b, 1.0).unwrap();
        rmp::encode::write_str(&mut b, "Stats").unwrap();
        rmp::encode::write_array_len(&mut b, 1).unwrap();
        rmp::encode::write_map_len(&mut b, 2).unwrap();
        rmp::encode::write_str(&mut b, "Hits").unwrap();
        rmp::encode::write_u8(&mut b, 3).unwrap();
        rmp::encode::write_str(&mut b, "OkSummary").unwrap();
        rmp::encode::write_str(&mut b, "ab").unwrap();
        let p = decode_client_stats(&b).unwrap();
        assert_eq!(p.env, "");
        assert_eq!(p.stats[0].start, 1);
        assert_eq!(p.stats[0].stats[0].hits, 3);
        assert_eq!(p.stats[0].stats[0].ok_summary, b"ab");
    }

    #[test]
    fn strings_are_cut_before_they_become_keys() {
        let mut p = sample();
        p.stats[0].stats[0].http_endpoint = "é".repeat(MAX_STATS_STRING);
        p.stats[0].stats[0].peer_tags = vec![format!("peer.hostname:{}", "h".repeat(3 * MAX_STATS_STRING))];
        let body = rmp_serde::to_vec_named(&p).unwrap();
        let d = decode_client_stats(&body).unwrap();
        let g = &d.stats[0].stats[0];
        assert!(g.http_endpoint.len() <= MAX_STATS_STRING && g.http_endpoint.len() >= MAX_STATS_STRING - 1);
        assert_eq!(g.peer_tags[0].len(), MAX_STATS_STRING);
    }

    #[test]
    fn errors_name_the_place() {
        let p = sample();
        let body = rmp_serde::to_vec_named(&p).unwrap();
        let cut = body.windows(7).position(|w| w == b"srv_src").unwrap() + 3;
        let e = decode_client_stats(&body[..cut]).unwrap_err();
        assert!(e.is_eof(), "{e}");
        assert!(e.to_string().contains("bucket 0 group 0"), "{e}");
        assert!(decode_client_stats(&[0x93, 1, 2, 3]).is_err());
        // A declared length beyond the body is refused before allocating.
        let e =
            decode_client_stats(&[0x81, 0xa5, b'S', b't', b'a', b't', b's', 0xdd, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(e.to_string().contains("Stats"), "{e}");
    }
}
