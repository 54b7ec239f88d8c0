//! Incremental rebalancing: two instances of each worker (fraud, `verdicts`, `stats`) in
//! their groups under `partition.assignment.strategy=cooperative-sticky`, and again under
//! Kafka 4's `group.protocol=consumer` (KIP-848), both passed as a user would, through
//! `KAFKA_*`. A rebalance there moves only some partitions and leaves the rest where they
//! are, un-sought: records read before it must neither be lost (fraud's transaction committing
//! offsets past them) nor applied twice. With a join, a leave and a SIGKILL in the middle of a
//! stream of inserts, edits and deletes, the table-based oracle finds no difference at the end.

mod common;

use std::path::{Path, PathBuf};

use common::pipeline::Pipeline;
use common::Running;

const STAGES: [&str; 3] = ["fraud", "verdicts", "stats"];

/// Lines of a log that report partitions given to (or taken from) `stage`.
fn lines<'a>(text: &'a str, stage: &str, what: &str) -> Vec<&'a str> {
    let sink = format!("sink={stage}");
    text.lines()
        .filter(|l| {
            if stage == "fraud" {
                l.contains(&format!("fraud: partitions {what}"))
            } else {
                l.contains(&sink) && l.contains("partitions assigned and claimed")
            }
        })
        .collect()
}

/// How many partitions each assignment of `stage` in the log gave it.
fn assigned(log: &Path, stage: &str) -> Vec<usize> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    lines(&text, stage, "assigned")
        .iter()
        .map(|l| {
            if stage == "fraud" {
                let list = l
                    .split("partitions=[")
                    .nth(1)
                    .and_then(|r| r.split(']').next());
                list.map_or(0, |list| {
                    list.split(',').filter(|n| !n.trim().is_empty()).count()
                })
            } else {
                l.matches("Claim {").count()
            }
        })
        .collect()
}

struct Instance {
    name: &'static str,
    log: PathBuf,
    running: Vec<Running>,
}

fn start(
    p: &mut Pipeline,
    name: &'static str,
    protocol: &[(&'static str, &'static str)],
) -> Instance {
    let log = std::env::temp_dir().join(format!("rf-coop-{name}-{}.log", common::unique()));
    p.log = Some(log.clone());
    let mut env = vec![
        ("REVIEWFLOW_INSTANCE", name),
        // Batches that linger, so a rebalance often lands while one is being collected, with
        // records of partitions that move and of partitions that stay.
        ("REVIEWFLOW_BATCH_RECORDS", "500"),
        ("REVIEWFLOW_BATCH_MS", "300"),
    ];
    env.extend_from_slice(protocol);
    let running = STAGES.iter().map(|s| p.spawn(s, None, &env)).collect();
    Instance { name, log, running }
}

/// Writes until every stage of `i` holds `partitions` partitions in all (or at least one,
/// for `None`): the rebalance lands in the middle of a stream, while batches are collected.
async fn write_until(
    db: &tokio_postgres::Client,
    rng: &mut common::Rng,
    i: &Instance,
    partitions: Option<usize>,
) {
    let done = || {
        STAGES.iter().all(|s| {
            let got = assigned(&i.log, s);
            match partitions {
                None => got.iter().any(|n| *n > 0),
                Some(n) => got.iter().sum::<usize>() >= n,
            }
        })
    };
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "instance {} was not assigned its partitions within 120 s",
            i.name
        );
        common::write_random(db, rng, 5).await;
    }
}

/// Join, leave, join, SIGKILL, under `protocol`; then the oracle.
async fn joins_leaves_and_a_kill(name: &str, protocol: &[(&'static str, &'static str)]) {
    let mut p = Pipeline::new(name).await;
    let _cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    let db = p.db().await;
    let mut rng = common::Rng(0x5eed_c009);

    let a = start(&mut p, "a", protocol);
    write_until(&db, &mut rng, &a, None).await;
    // b joins mid-stream: a gives up some partitions and keeps the others un-sought.
    let b = start(&mut p, "b", protocol);
    write_until(&db, &mut rng, &b, None).await;
    common::write_random(&db, &mut rng, 50).await;
    // a leaves cleanly mid-stream: b takes its partitions over, keeping its own.
    for stage in a.running {
        p.stop(stage).await;
    }
    common::write_random(&db, &mut rng, 50).await;
    // c joins, then b is killed with SIGKILL mid-stream: c claims b's partitions once b's
    // membership lapses (fencing what b left open).
    let c = start(&mut p, "c", protocol);
    write_until(&db, &mut rng, &c, None).await;
    drop(b.running);
    write_until(&db, &mut rng, &c, Some(3)).await;
    common::write_random(&db, &mut rng, 50).await;

    p.wait_until_caught_up().await;
    p.assert_exact().await;
    // The rebalances were incremental: when b joined, a's fraud worker gave up only part of
    // its partitions (an eager rebalance revokes all three).
    let text = std::fs::read_to_string(&a.log).unwrap_or_default();
    let revoked: Vec<usize> = lines(&text, "fraud", "revoked")
        .iter()
        .map(|l| l.matches(',').count() + 1)
        .collect();
    assert!(
        revoked.iter().any(|n| *n < 3),
        "{name}: a kept some partitions when b joined: revocations {revoked:?}"
    );
    for stage in STAGES {
        let of_c = assigned(&c.log, stage);
        assert_eq!(
            of_c.iter().sum::<usize>(),
            3,
            "{stage}: c holds every partition in the end, added incrementally: {of_c:?}"
        );
    }
    for i in c.running {
        p.stop(i).await;
    }
    for log in [&a.log, &b.log, &c.log] {
        let _ = std::fs::remove_file(log);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_loses_and_doubles_nothing_across_joins_leaves_and_a_kill() {
    joins_leaves_and_a_kill(
        "coop_sticky",
        &[
            ("KAFKA_PARTITION_ASSIGNMENT_STRATEGY", "cooperative-sticky"),
            // A killed member's partitions move after 6 s (the broker's least), not 45.
            ("KAFKA_SESSION_TIMEOUT_MS", "6000"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_group_protocol_loses_and_doubles_nothing_across_joins_leaves_and_a_kill() {
    joins_leaves_and_a_kill("coop_kip848", &[("KAFKA_GROUP_PROTOCOL", "consumer")]).await;
}
