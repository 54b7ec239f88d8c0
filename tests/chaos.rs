//! Fault injection: a workload of inserts, edits and deletes runs while, at random instants,
//! a stage (cdc, fraud, verdicts, stats) is killed with SIGKILL and restarted, the Kafka
//! broker is killed and restarted, or PostgreSQL is. At the end the pipeline must catch up,
//! `verify` must find no difference, every review's current version must have its verdict,
//! and a reader of course_stats must never have seen a negative figure. The short
//! form runs in CI; the long form by hand:
//!   REVIEWFLOW_CHAOS_SECONDS=900 cargo test --release --test chaos -- --nocapture

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pipeline::Pipeline;
use common::Running;
use reviewflow::stack::{self, Part};

/// Writes transactions of one to three statements until `stop`, riding out PostgreSQL
/// restarts; returns how many transactions committed.
async fn workload(url: String, seed: u64, stop: Arc<AtomicBool>, committed: Arc<AtomicU64>) {
    let mut rng = common::Rng(seed);
    let mut db = None;
    while !stop.load(Ordering::Relaxed) {
        if db.is_none() {
            db = reviewflow::db::connect(&url).await.ok();
            if db.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        let n = 1 + rng.next(3);
        let sql: Vec<String> = (0..n).map(|_| common::statement(&mut rng)).collect();
        let client = db.as_ref().unwrap();
        match client
            .batch_execute(&format!("BEGIN; {}; COMMIT", sql.join("; ")))
            .await
        {
            Ok(()) => {
                committed.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => db = None,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_kafka_and_postgres_killed_at_random_and_nothing_lost_or_doubled() {
    let seconds: u64 = std::env::var("REVIEWFLOW_CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("REVIEWFLOW_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xc4a0_5eed);
    let p = Pipeline::new("chaos").await;
    let stages = ["cdc", "fraud", "verdicts", "stats"];
    let small = [("REVIEWFLOW_BATCH_RECORDS", "200")];
    let mut running: HashMap<&str, Running> = stages
        .iter()
        .map(|s| (*s, p.spawn(s, None, &small)))
        .collect();

    // A website's view: course_stats read every few milliseconds must never show a negative
    // figure, whatever is killed (the workload moves reviews between courses).
    let watch = common::watch::NegativeWatch::start(&p.url, Duration::from_millis(5));
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(workload(
        p.url.clone(),
        seed,
        stop.clone(),
        committed.clone(),
    ));

    let mut rng = common::Rng(seed ^ 0x9e37_79b9);
    let mut faults: BTreeMap<String, u32> = BTreeMap::new();
    let (started, mut trials) = (Instant::now(), 0);
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(1500 + rng.next(3000))).await;
        trials += 1;
        for (name, stage) in running.iter_mut() {
            let exited = stage.0.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(exited.is_none(), "{name} exited on its own: {exited:?}");
        }
        let fault = match rng.next(8) {
            n @ 0..=5 => {
                let victim = stages[(n % 4) as usize];
                // Running's drop kills with SIGKILL and reaps; then a fresh process.
                drop(running.remove(victim));
                running.insert(victim, p.spawn(victim, None, &small));
                format!("kill -9 {victim}")
            }
            6 => {
                stack::crash(&common::stack_config(), Part::Kafka)
                    .await
                    .unwrap();
                "kill -9 kafka".to_string()
            }
            _ => {
                stack::crash(&common::stack_config(), Part::Postgres)
                    .await
                    .unwrap();
                "kill -9 postgres".to_string()
            }
        };
        *faults.entry(fault).or_default() += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    p.wait_until_caught_up().await;
    let seen = watch.finish().await;
    let db = p.db().await;
    let report = reviewflow::tools::verify::verify(&db).await.unwrap();
    // Every current row of the table has a verdict of its current image (by SQL; verify's
    // own check of the rows is in its differences).
    let (reviews, unjudged) = p.current_versions_without_one_verdict().await;
    println!(
        "chaos: {trials} trials over {seconds} s, faults {faults:?}, {} transactions committed, \
         {} reviews, {} differences, {} current rows without a verdict of their image, \
         {} negative figures in {} reads of course_stats",
        committed.load(Ordering::Relaxed),
        reviews,
        report.differences.len(),
        unjudged.len(),
        seen.negatives.len(),
        seen.reads
    );
    assert!(committed.load(Ordering::Relaxed) > 100, "the workload ran");
    assert!(
        faults.len() >= 3,
        "several kinds of fault were injected: {faults:?}"
    );
    assert!(
        seen.reads > 100,
        "the watcher read course_stats ({} reads)",
        seen.reads
    );
    assert!(
        seen.negatives.is_empty(),
        "negative figures seen: {:?}",
        &seen.negatives[..seen.negatives.len().min(10)]
    );
    assert!(
        report.differences.is_empty(),
        "{:?}",
        &report.differences[..report.differences.len().min(10)]
    );
    assert!(
        unjudged.is_empty(),
        "{:?}",
        &unjudged[..unjudged.len().min(10)]
    );
}
