//! What the stats writer sends to `/api/v0.2/stats` (spec 6.4, 7.3): a `pb::StatsPayload` as
//! msgpack with the Go msgp field names (`AgentHostname`, `Stats`, `HTTPStatusCode`, `srv_src`,
//! …, which the `libdd-trace-protobuf` serde renames produce), gzip-compressed, at most
//! [`MAX_GROUPS_PER_PAYLOAD`] grouped stats per request ([`split_stats`]).
//!
//! ```
//! use trace_agent::stats::payload::{encode_gzip, split_stats, MAX_GROUPS_PER_PAYLOAD};
//! # let payload = libdd_trace_protobuf::pb::StatsPayload::default();
//! for part in split_stats(payload, MAX_GROUPS_PER_PAYLOAD) {
//!     let body = encode_gzip(&part).unwrap(); // Content-Type: application/msgpack, Content-Encoding: gzip
//!     # let _ = body;
//! }
//! ```

use std::collections::HashMap;
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use libdd_trace_protobuf::pb;

/// Grouped stats per HTTP payload (≈ 375 B each compressed, ~1.5 MB).
pub const MAX_GROUPS_PER_PAYLOAD: usize = 4000;

/// Why a payload could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// msgpack serialization failed.
    #[error("cannot encode stats payload as msgpack: {0}")]
    Msgpack(#[from] rmp_serde::encode::Error),
    /// Compression failed.
    #[error("cannot gzip stats payload: {0}")]
    Gzip(#[from] std::io::Error),
}

/// msgpack encoding with field names (a map per struct), as the intake expects.
///
/// # Errors
/// Only if serialization fails (it does not for well-formed values).
pub fn encode_msgpack(payload: &pb::StatsPayload) -> Result<Vec<u8>, EncodeError> {
    Ok(rmp_serde::to_vec_named(payload)?)
}

/// [`encode_msgpack`], gzip-compressed at the fastest level (Go `gzip.BestSpeed`).
///
/// # Errors
/// See [`EncodeError`].
pub fn encode_gzip(payload: &pb::StatsPayload) -> Result<Vec<u8>, EncodeError> {
    let raw = encode_msgpack(payload)?;
    let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 4 + 64), Compression::fast());
    gz.write_all(&raw)?;
    Ok(gz.finish()?)
}

/// Number of grouped stats in a payload.
pub fn group_count(payload: &pb::StatsPayload) -> usize {
    payload.stats.iter().flat_map(|p| &p.stats).map(|b| b.stats.len()).sum()
}

/// Splits `payload` so that no part holds more than `max_groups` grouped stats (Go stats
/// writer `buildPayloads`): a client payload with more groups is dealt round-robin into
/// `ceil(n / max)` copies of itself (one bucket per time window in each), then client payloads
/// are packed into parts in order. Every part carries the agent fields; `SplitPayload` is true
/// on all of them when there is more than one. `max_groups == 0` means no limit.
pub fn split_stats(payload: pb::StatsPayload, max_groups: usize) -> Vec<pb::StatsPayload> {
    if max_groups == 0 || group_count(&payload) <= max_groups {
        return vec![payload];
    }
    let pb::StatsPayload {
        agent_hostname,
        agent_env,
        agent_version,
        client_computed,
        stats,
        ..
    } = payload;
    let empty = || pb::StatsPayload {
        agent_hostname: agent_hostname.clone(),
        agent_env: agent_env.clone(),
        agent_version: agent_version.clone(),
        client_computed,
        split_payload: false,
        stats: Vec::new(),
    };
    let mut parts = Vec::new();
    let mut current = empty();
    let mut in_current = 0;
    for client in stats.into_iter().flat_map(|p| split_client_payload(p, max_groups)) {
        let n: usize = client.stats.iter().map(|b| b.stats.len()).sum();
        if in_current > 0 && in_current + n > max_groups {
            parts.push(std::mem::replace(&mut current, empty()));
            in_current = 0;
        }
        in_current += n;
        current.stats.push(client);
    }
    if !current.stats.is_empty() {
        parts.push(current);
    }
    let split = parts.len() > 1;
    for p in &mut parts {
        p.split_payload = split;
    }
    parts
}

/// One client payload as `ceil(n / max)` copies sharing its groups round-robin.
fn split_client_payload(p: pb::ClientStatsPayload, max_groups: usize) -> Vec<pb::ClientStatsPayload> {
    let n: usize = p.stats.iter().map(|b| b.stats.len()).sum();
    if n <= max_groups {
        return vec![p];
    }
    let parts = n.div_ceil(max_groups);
    let pb::ClientStatsPayload { stats, .. } = &p;
    let header = pb::ClientStatsPayload {
        stats: Vec::new(),
        ..p.clone()
    };
    let mut out: Vec<(pb::ClientStatsPayload, HashMap<u64, usize>)> =
        (0..parts).map(|_| (header.clone(), HashMap::new())).collect();
    let mut i = 0usize;
    for bucket in stats {
        for g in &bucket.stats {
            if let Some((part, index)) = out.get_mut(i % parts) {
                let bi = *index.entry(bucket.start).or_insert_with(|| {
                    part.stats.push(pb::ClientStatsBucket {
                        start: bucket.start,
                        duration: bucket.duration,
                        stats: Vec::new(),
                        agent_time_shift: bucket.agent_time_shift,
                    });
                    part.stats.len() - 1
                });
                if let Some(b) = part.stats.get_mut(bi) {
                    b.stats.push(g.clone());
                }
            }
            i += 1;
        }
    }
    out.into_iter().map(|(p, _)| p).collect()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::stats::sketch::Sketch;

    fn group(i: usize) -> pb::ClientGroupedStats {
        let mut ok = Sketch::new();
        ok.add(1e6 + i as f64).unwrap();
        pb::ClientGroupedStats {
            service: "web".into(),
            name: "http.request".into(),
            resource: format!("GET /{i}"),
            http_status_code: 200,
            r#type: "web".into(),
            hits: 3,
            errors: 1,
            duration: 42,
            ok_summary: ok.encode(),
            error_summary: Sketch::new().encode(),
            top_level_hits: 3,
            span_kind: "server".into(),
            peer_tags: vec!["peer.service:db".into()],
            is_trace_root: 1,
            grpc_status_code: "0".into(),
            http_method: "GET".into(),
            http_endpoint: "/x".into(),
            service_source: "m".into(),
            ..Default::default()
        }
    }

    fn payload(clients: &[(&str, &[(u64, usize)])]) -> pb::StatsPayload {
        let mut next = 0;
        pb::StatsPayload {
            agent_hostname: "agent".into(),
            agent_env: "none".into(),
            agent_version: "7.70.0".into(),
            client_computed: false,
            split_payload: false,
            stats: clients
                .iter()
                .map(|(env, buckets)| pb::ClientStatsPayload {
                    env: (*env).into(),
                    hostname: "h".into(),
                    stats: buckets
                        .iter()
                        .map(|(start, n)| pb::ClientStatsBucket {
                            start: *start,
                            duration: 10,
                            stats: (0..*n)
                                .map(|_| {
                                    next += 1;
                                    group(next)
                                })
                                .collect(),
                            agent_time_shift: 0,
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn msgpack_uses_go_names_and_round_trips_into_libdd_types() {
        let p = payload(&[("prod", &[(10, 2)])]);
        let bytes = encode_msgpack(&p).unwrap();
        for name in [
            "AgentHostname",
            "AgentEnv",
            "AgentVersion",
            "ClientComputed",
            "SplitPayload",
            "Hostname",
            "ContainerID",
            "RuntimeID",
            "GitCommitSha",
            "AgentTimeShift",
            "HTTPStatusCode",
            "OkSummary",
            "TopLevelHits",
            "PeerTags",
            "IsTraceRoot",
            "GRPCStatusCode",
            "HTTPMethod",
            "HTTPEndpoint",
            "srv_src",
        ] {
            assert!(bytes.windows(name.len()).any(|w| w == name.as_bytes()), "{name}");
        }
        let back: pb::StatsPayload = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, p);
        // Our /v0.6/stats decoder (written from the Go names) reads the client part too.
        let client = rmp_serde::to_vec_named(&p.stats[0]).unwrap();
        assert_eq!(crate::decode::decode_client_stats(&client).unwrap(), p.stats[0]);
        // Summaries travel as msgpack bin and decode as sketches.
        let sk = Sketch::decode(&back.stats[0].stats[0].stats[0].ok_summary).unwrap();
        assert_eq!(sk.count(), 1.0);
    }

    #[test]
    fn gzip_round_trip() {
        let p = payload(&[("prod", &[(10, 50)])]);
        let gz = encode_gzip(&p).unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut raw).unwrap();
        assert_eq!(raw, encode_msgpack(&p).unwrap());
        assert!(gz.len() < raw.len());
    }

    #[test]
    fn small_payloads_are_not_split() {
        let p = payload(&[("a", &[(10, 3)]), ("b", &[(10, 1)])]);
        let parts = split_stats(p.clone(), 4);
        assert_eq!(parts, vec![p]);
    }

    #[test]
    fn split_bounds_groups_keeps_everything_and_one_bucket_per_window() {
        let p = payload(&[("a", &[(10, 7), (20, 5)]), ("b", &[(10, 2)]), ("c", &[(30, 4)])]);
        let total = group_count(&p);
        let parts = split_stats(p.clone(), 4);
        assert!(parts.len() > 1);
        for part in &parts {
            assert!(group_count(part) <= 4, "{}", group_count(part));
            assert!(part.split_payload);
            assert_eq!(
                (
                    part.agent_hostname.as_str(),
                    part.agent_env.as_str(),
                    part.agent_version.as_str()
                ),
                ("agent", "none", "7.70.0")
            );
            for client in &part.stats {
                let mut starts: Vec<u64> = client.stats.iter().map(|b| b.start).collect();
                let n = starts.len();
                starts.dedup();
                assert_eq!(starts.len(), n, "one bucket per window per client payload");
            }
        }
        assert_eq!(parts.iter().map(group_count).sum::<usize>(), total);
        // Every group appears exactly once, under its own env and window.
        let mut seen: Vec<(String, u64, String)> = parts
            .iter()
            .flat_map(|part| &part.stats)
            .flat_map(|c| {
                c.stats.iter().flat_map(move |b| {
                    b.stats
                        .iter()
                        .map(move |g| (c.env.clone(), b.start, g.resource.clone()))
                })
            })
            .collect();
        let mut want: Vec<(String, u64, String)> = p
            .stats
            .iter()
            .flat_map(|c| {
                c.stats.iter().flat_map(move |b| {
                    b.stats
                        .iter()
                        .map(move |g| (c.env.clone(), b.start, g.resource.clone()))
                })
            })
            .collect();
        seen.sort();
        want.sort();
        assert_eq!(seen, want);
        // Client "a" (12 groups) was dealt into 3 copies of 4.
        assert_eq!(parts.iter().flat_map(|p| &p.stats).filter(|c| c.env == "a").count(), 3);
    }

    #[test]
    fn unlimited_when_zero() {
        let p = payload(&[("a", &[(10, 9)])]);
        assert_eq!(split_stats(p.clone(), 0), vec![p]);
    }
}
