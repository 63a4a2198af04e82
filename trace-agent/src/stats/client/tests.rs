use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::config::compile;
use crate::config::{AgentConfig, RawReplaceTag};
use crate::stats::key::OVERFLOW_VALUE;

/// An even second: aggregation windows start one second later.
const T0: i64 = 1_700_000_000 * SEC;

fn at(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns as u64)
}

fn group(resource: &str, hits: u64) -> pb::ClientGroupedStats {
    pb::ClientGroupedStats {
        service: "web".into(),
        name: "flask.request".into(),
        resource: resource.into(),
        r#type: "web".into(),
        hits,
        errors: 1,
        duration: 100 * hits,
        top_level_hits: hits,
        ok_summary: vec![1, 2, 3],
        ..Default::default()
    }
}

fn client(start: i64, groups: Vec<pb::ClientGroupedStats>) -> pb::ClientStatsPayload {
    pb::ClientStatsPayload {
        hostname: "h".into(),
        env: "prod".into(),
        version: "1".into(),
        lang: "python".into(),
        runtime_id: "r1".into(),
        stats: vec![pb::ClientStatsBucket {
            start: start as u64,
            duration: 10 * SEC as u64,
            stats: groups,
            agent_time_shift: 0,
        }],
        ..Default::default()
    }
}

fn agent() -> AgentIdentity {
    AgentIdentity {
        hostname: "agent-host".into(),
        env: "none".into(),
        version: "7.70.0".into(),
    }
}

fn aggregator(now: i64) -> ClientStatsAggregator {
    ClientStatsAggregator::new(&StatsConfig::default(), agent(), at(now))
}

// === process_client_stats ===

fn process_config() -> ProcessConfig {
    compile::process(&AgentConfig {
        ignore_resources: vec!["^GET /health".into()],
        replace_tags: vec![
            RawReplaceTag {
                name: "resource.name".into(),
                pattern: "secret-[0-9]+".into(),
                repl: "secret-?".into(),
            },
            RawReplaceTag {
                name: "http.status_code".into(),
                pattern: "^404$".into(),
                repl: "400".into(),
            },
        ],
        default_env: "staging".into(),
        ..AgentConfig::default()
    })
    .unwrap()
}

#[test]
fn payload_fields_are_defaulted_and_normalized() {
    let config = process_config();
    let facts = ClientStatsFacts {
        lang: "python",
        tracer_version: "4.16.0",
        container_id: "cid-9",
        tracer_obfuscated: false,
    };
    let mut p = client(T0, vec![group("GET /", 1)]);
    p.env = String::new();
    p.lang = String::new();
    p.container_id = "from-payload".into();
    p.tags = vec!["kube:x".into()];
    process_client_stats(&mut p, &facts, &config, &StatsConfig::default());
    assert_eq!(
        (p.env.as_str(), p.lang.as_str(), p.tracer_version.as_str()),
        ("staging", "python", "4.16.0")
    );
    assert!(
        p.container_id.is_empty() && p.tags.is_empty(),
        "no container dimension by default"
    );
    let mut p = client(T0, vec![group("GET /", 1)]);
    p.env = "Prod Env".into();
    p.tracer_version = "own".into();
    let stats = StatsConfig {
        container_id_dimension: true,
        ..StatsConfig::default()
    };
    process_client_stats(&mut p, &facts, &config, &stats);
    assert_eq!(p.env, "prod_env");
    assert_eq!(p.tracer_version, "own");
    assert_eq!(p.container_id, "cid-9");
}

#[test]
fn groups_are_normalized_filtered_obfuscated_rewritten_and_merged() {
    let config = process_config();
    let facts = ClientStatsFacts {
        lang: "python",
        ..ClientStatsFacts::default()
    };
    let mut sql = group("SELECT * FROM users WHERE id = 42", 2);
    sql.r#type = "sql".into();
    let mut unnamed = group("", 1);
    unnamed.name = String::new();
    unnamed.service = "Bad Service!".into();
    let mut status = group("GET /user", 1);
    status.http_status_code = 404;
    let mut p = client(
        T0,
        vec![
            group("GET /health", 5),
            sql,
            unnamed,
            group("GET /secret-123", 1),
            group("GET /secret-456", 2),
            status,
        ],
    );
    let report = process_client_stats(&mut p, &facts, &config, &StatsConfig::default());
    assert_eq!(
        report,
        ClientStatsReport {
            ignored_groups: 1,
            merged_groups: 1
        }
    );
    let g = &p.stats[0].stats;
    assert_eq!(g.len(), 5);
    assert!(g.iter().all(|g| g.resource != "GET /health"));
    assert_eq!(g[0].resource, "SELECT * FROM users WHERE id = ?");
    assert_eq!(
        (g[1].name.as_str(), g[1].resource.as_str()),
        ("unnamed_operation", "unnamed_operation")
    );
    assert_eq!(g[1].service, "bad_service");
    // Both secret groups became one key: counts summed into the first, zeroed in the second.
    assert_eq!(
        (g[2].resource.as_str(), g[2].hits, g[2].errors, g[2].duration),
        ("GET /secret-?", 3, 2, 300)
    );
    assert_eq!(
        (g[3].resource.as_str(), g[3].hits, g[3].errors, g[3].duration),
        ("GET /secret-?", 0, 0, 0)
    );
    assert_eq!(
        g[3].top_level_hits, 2,
        "sketch and top-level hits stay on the duplicate"
    );
    assert_eq!(g[4].http_status_code, 400);
}

#[test]
fn tracer_obfuscated_resources_are_kept() {
    let mut sql = group("SELECT * FROM users WHERE id = 42", 2);
    sql.r#type = "sql".into();
    let mut p = client(T0, vec![sql]);
    let facts = ClientStatsFacts {
        tracer_obfuscated: true,
        ..ClientStatsFacts::default()
    };
    process_client_stats(&mut p, &facts, &ProcessConfig::default(), &StatsConfig::default());
    assert_eq!(p.stats[0].stats[0].resource, "SELECT * FROM users WHERE id = 42");
}

// === ClientStatsAggregator ===

#[test]
fn a_single_payload_passes_through_when_its_window_closes() {
    let now = T0 + 10 * SEC;
    let mut a = aggregator(now);
    let p = client(T0, vec![group("GET /", 3)]);
    assert!(a.add(p.clone(), at(now)).is_none());
    // Window of T0 is [T0+1 s, T0+3 s): due once T0+1 s < align_agg(now + 2 s − 20 s).
    assert!(a.flush(at(T0 + 19 * SEC), false).is_none());
    let out = a.flush(at(T0 + 20 * SEC), false).unwrap();
    assert!(out.client_computed);
    assert_eq!(out.agent_hostname, "agent-host");
    assert_eq!(out.stats, vec![p], "passed through unchanged");
    assert_eq!(a.open_buckets(), 0);
}

#[test]
fn colliding_payloads_are_split_into_distributions_and_counts() {
    let now = T0 + 10 * SEC;
    let mut a = aggregator(now);
    let first = client(T0, vec![group("GET /", 3), group("GET /b", 1)]);
    let mut second = client(T0, vec![group("GET /", 4)]);
    second.runtime_id = "r2".into();
    let mut third = client(T0 + SEC, vec![group("GET /", 5)]);
    third.runtime_id = "r3".into();
    assert!(a.add(first.clone(), at(now)).is_none());
    let out = a.add(second, at(now)).unwrap();
    assert_eq!(out.stats.len(), 2, "both originals go out at once");
    for p in &out.stats {
        assert_eq!(p.agent_aggregation, KEY_DISTRIBUTIONS);
        assert!(
            p.stats[0]
                .stats
                .iter()
                .all(|g| g.hits == 0 && g.errors == 0 && g.duration == 0)
        );
        assert!(
            p.stats[0]
                .stats
                .iter()
                .all(|g| g.ok_summary == vec![1, 2, 3] && g.top_level_hits > 0)
        );
    }
    assert_eq!(out.stats[0].runtime_id, "r1");
    // Same aggregation window (T0+1 s … T0+3 s): collides too.
    let out = a.add(third, at(now)).unwrap();
    assert_eq!(out.stats.len(), 1);
    assert_eq!(a.counters().collisions, 2);
    let out = a.flush(at(now), true).unwrap();
    assert_eq!(out.stats.len(), 1);
    let counts = &out.stats[0];
    assert_eq!(counts.agent_aggregation, KEY_COUNTS);
    assert_eq!((counts.env.as_str(), counts.hostname.as_str()), ("prod", "h"));
    let bucket = &counts.stats[0];
    assert_eq!(bucket.start, (T0 + SEC) as u64, "odd-second aligned");
    assert_eq!(bucket.duration, 10 * SEC as u64);
    let by_resource: HashMap<&str, &pb::ClientGroupedStats> =
        bucket.stats.iter().map(|g| (g.resource.as_str(), g)).collect();
    assert_eq!(by_resource["GET /"].hits, 12);
    assert_eq!(by_resource["GET /"].errors, 3);
    assert_eq!(by_resource["GET /"].duration, 1200);
    assert_eq!(by_resource["GET /b"].hits, 1);
    assert!(
        by_resource["GET /"].ok_summary.is_empty(),
        "counts carry no distributions"
    );
}

#[test]
fn old_and_future_buckets_are_time_shifted() {
    let now = T0 + 100 * SEC;
    let mut a = aggregator(now);
    let oldest = align_agg(now + AGG_BUCKET_NS - OLDEST_BUCKET_NS);
    a.add(client(T0, vec![group("old", 1)]), at(now));
    a.add(client(now + 50 * SEC, vec![group("future", 1)]), at(now));
    assert_eq!(a.counters().shifted_buckets, 2);
    let out = a.flush(at(now), true).unwrap();
    let find = |r: &str| {
        out.stats
            .iter()
            .map(|p| &p.stats[0])
            .find(|b| b.stats[0].resource == r)
            .unwrap()
            .clone()
    };
    let old = find("old");
    assert_eq!(old.start, oldest as u64);
    assert_eq!(old.agent_time_shift, oldest - T0);
    let future = find("future");
    assert_eq!(future.start, align_agg(now) as u64);
    assert_eq!(future.agent_time_shift, align_agg(now) - (now + 50 * SEC));
}

#[test]
fn multi_bucket_payloads_are_handled_per_bucket() {
    let now = T0 + 30 * SEC;
    let mut a = aggregator(now);
    let mut p = client(T0 + 10 * SEC, vec![group("a", 1)]);
    p.stats.push(pb::ClientStatsBucket {
        start: (T0 + 20 * SEC) as u64,
        duration: 10 * SEC as u64,
        stats: vec![group("b", 2)],
        agent_time_shift: 0,
    });
    assert!(a.add(p, at(now)).is_none());
    assert_eq!(a.open_buckets(), 2);
    let out = a.flush(at(now), true).unwrap();
    assert_eq!(out.stats.len(), 2);
    assert!(out.stats.iter().all(|p| p.stats.len() == 1));
}

#[test]
fn aggregated_counts_are_capped() {
    let now = T0 + 10 * SEC;
    let mut a = ClientStatsAggregator::new(
        &StatsConfig {
            max_groups_per_bucket: 2,
            ..StatsConfig::default()
        },
        agent(),
        at(now),
    );
    for i in 0..5 {
        let groups = (0..4).map(|j| group(&format!("r{i}-{j}"), 1)).collect();
        a.add(client(T0, groups), at(now));
    }
    assert!(a.counters().overflow_groups > 0);
    let out = a.flush(at(now), true).unwrap();
    let groups: Vec<_> = out.stats.iter().flat_map(|p| &p.stats[0].stats).collect();
    assert!(groups.len() <= 2 + 2, "{}", groups.len());
    assert_eq!(groups.iter().map(|g| g.hits).sum::<u64>(), 20, "no count is lost");
    assert!(groups.iter().any(|g| g.resource == OVERFLOW_VALUE));
}
