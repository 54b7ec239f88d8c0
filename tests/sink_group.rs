//! Two instances of each PostgreSQL sink (`reviewflow verdicts`, `reviewflow stats`) in one
//! consumer group, with rebalances in the middle of a stream of inserts, edits and deletes:
//! an instance joins, one leaves cleanly, another joins, and one is killed with SIGKILL. The
//! partitions are claimed in PostgreSQL under an epoch (src/sink/offsets.rs), so whatever the
//! moment of the rebalance, nothing is lost or applied twice: at the end `verify` finds no
//! difference and every current review version has exactly one verdict.

mod common;

use std::path::{Path, PathBuf};

use common::pipeline::Pipeline;
use common::Running;

const SINKS: [&str; 2] = ["verdicts", "stats"];

/// Per assignment of a sink instance, how many partitions it claimed, from its log.
fn claims(log: &Path, sink: &str) -> Vec<usize> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.contains("partitions assigned and claimed") && l.contains(&format!("sink={sink}"))
        })
        .map(|l| l.matches("Claim {").count())
        .collect()
}

struct Instance {
    name: &'static str,
    log: PathBuf,
    running: Vec<Running>,
}

fn start(p: &mut Pipeline, name: &'static str) -> Instance {
    let log = std::env::temp_dir().join(format!("rf-sink-group-{name}-{}.log", common::unique()));
    p.log = Some(log.clone());
    let env = [
        ("REVIEWFLOW_INSTANCE", name),
        ("REVIEWFLOW_BATCH_RECORDS", "20"),
    ];
    let running = SINKS.iter().map(|s| p.spawn(s, None, &env)).collect();
    Instance { name, log, running }
}

async fn wait_assigned(i: &Instance) {
    for sink in SINKS {
        common::eventually(
            &format!("{sink} instance {} is assigned partitions", i.name),
            120,
            || async { claims(&i.log, sink).last().is_some_and(|n| *n > 0) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_in_one_group_lose_and_double_nothing_across_joins_leaves_and_a_kill() {
    let mut p = Pipeline::new("sink_group").await;
    let _cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    let _fraud = p.spawn("fraud", None, &[("REVIEWFLOW_BATCH_RECORDS", "20")]);
    let db = p.db().await;
    let mut rng = common::Rng(0x5eed_0001);

    let a = start(&mut p, "a");
    common::write_random(&db, &mut rng, 150).await;
    // b joins mid-stream: the partitions are split between a and b.
    let b = start(&mut p, "b");
    common::write_random(&db, &mut rng, 100).await;
    wait_assigned(&b).await;
    common::write_random(&db, &mut rng, 150).await;
    // a leaves cleanly mid-stream: b takes everything over.
    for stage in a.running {
        p.stop(stage).await;
    }
    common::write_random(&db, &mut rng, 150).await;
    // c joins, then b is killed with SIGKILL: its group membership lapses after the session
    // timeout, and c claims b's partitions (fencing any batch b left open).
    let c = start(&mut p, "c");
    common::write_random(&db, &mut rng, 100).await;
    wait_assigned(&c).await;
    common::write_random(&db, &mut rng, 100).await;
    drop(b.running);
    common::write_random(&db, &mut rng, 150).await;

    p.wait_until_caught_up().await;
    p.assert_exact().await;
    for sink in SINKS {
        let (of_a, of_b, of_c) = (
            claims(&a.log, sink),
            claims(&b.log, sink),
            claims(&c.log, sink),
        );
        assert!(
            of_a.iter().any(|n| (1..3).contains(n)),
            "{sink}: a shared the partitions with b: a {of_a:?}, b {of_b:?}"
        );
        assert_eq!(
            of_c.last(),
            Some(&3),
            "{sink}: c holds every partition in the end: a {of_a:?}, b {of_b:?}, c {of_c:?}"
        );
    }
    for i in c.running {
        p.stop(i).await;
    }
}

/// Two stats instances commit side by side: one held up inside its transaction (here by a
/// row lock the test takes on one course's figures) does not hold up the other, which goes
/// on writing the courses of its own partitions; once released, the figures are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stats_instance_held_up_in_its_transaction_does_not_stop_the_other() {
    let p = Pipeline::new("stats_side_by_side").await;
    let _cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    let _fraud = p.spawn("fraud", None, &[]);
    let _verdicts = p.spawn("verdicts", None, &[]);
    let _a = p.spawn("stats", None, &[("REVIEWFLOW_INSTANCE", "a")]);
    let _b = p.spawn("stats", None, &[("REVIEWFLOW_INSTANCE", "b")]);
    let db = p.db().await;
    common::eventually(
        "the two stats instances share the partitions",
        120,
        || async {
            let owners: i64 = db
                .query_one(
                    "SELECT count(DISTINCT owner) FROM sink_offsets WHERE consumer = 'stats'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            owners == 2
        },
    )
    .await;
    let review = |id: i64, course: i64| {
        format!(
            "INSERT INTO reviews (id, course_id, user_id, rating, content, created_at)
             VALUES ({id}, {course}, {id}, 4.5, 'clear and well paced', now())"
        )
    };
    db.batch_execute(&review(1, 1)).await.unwrap();
    p.wait_until_caught_up().await;

    // The test holds course 1's figures; the next review of course 1 stalls its writer there.
    let mut holder = p.db().await;
    let hold = holder.transaction().await.unwrap();
    hold.query_one(
        "SELECT 1 FROM course_stats WHERE course_id = 1 FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    let holder_pid: i32 = hold
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    db.batch_execute(&review(2, 1)).await.unwrap();
    let stalled = || async {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                &[&holder_pid],
            )
            .await
            .unwrap()
            .get(0);
        n > 0
    };
    common::eventually("a stats writer waits for course 1", 60, stalled).await;

    // One review on each of 30 new courses: those of the other instance's partitions appear.
    for course in 100..130 {
        db.batch_execute(&review(course, course)).await.unwrap();
    }
    common::eventually(
        "the other instance writes its courses meanwhile",
        60,
        || async {
            let written: i64 = db
                .query_one(
                    "SELECT count(*) FROM course_stats WHERE course_id BETWEEN 100 AND 129",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            written > 0
        },
    )
    .await;
    assert!(stalled().await, "the first writer was still held up");

    hold.rollback().await.unwrap();
    p.wait_until_caught_up().await;
    p.assert_exact().await;
}
