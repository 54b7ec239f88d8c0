//! One PostgreSQL transaction of N reviews, then one changing all N of them (every rating,
//! some reviews' age, text and course, and some deleted), through every stage as its own
//! process (cdc, fraud, stats, verdicts): each stage stays under 100 MB resident throughout,
//! and the figures and verdicts are exact afterwards (`verify`, the table-based oracle).
//!
//! N is 150,000 by default, the form CI runs: three times the producer queue's 50,000-record
//! bound, so cdc waits for Kafka inside the transaction. `REVIEWFLOW_LARGE_ROWS=2000000` is
//! the long form whose result is in BENCHMARKS.md ("Large transaction"). Progress and the
//! figures (wall time, peak RSS per stage) are printed: run with `--nocapture` to see them.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pipeline::Pipeline;
use common::Running;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use reviewflow::config::KafkaSettings;

const STAGES: [&str; 4] = ["cdc", "fraud", "stats", "verdicts"];

/// What the issue asks of every stage, in the bench's units (MB of 10^6 bytes).
const RSS_LIMIT_BYTES: u64 = 100_000_000;

/// No stage may go this long without any of them making progress.
const STALL: Duration = Duration::from_secs(300);

fn rows() -> i64 {
    std::env::var("REVIEWFLOW_LARGE_ROWS")
        .ok()
        .map(|v| {
            v.replace(['_', ','], "")
                .parse()
                .expect("REVIEWFLOW_LARGE_ROWS is a number of rows")
        })
        .unwrap_or(150_000)
}

/// A field of /proc/<pid>/status in kB (VmRSS, VmHWM); None once the process is gone.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", (kb * 1024) as f64 / 1e6)
}

/// Samples each stage's VmRSS every 100 ms on its own thread, keeping the largest seen since
/// the last `take_peaks`: the per-phase figure (VmHWM is the whole life's).
struct Sampler {
    pids: Vec<u32>,
    peaks: Arc<Vec<AtomicU64>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pids: Vec<u32>) -> Sampler {
        let peaks: Arc<Vec<AtomicU64>> = Arc::new(pids.iter().map(|_| AtomicU64::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s, watched) = (peaks.clone(), stop.clone(), pids.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for (i, pid) in watched.iter().enumerate() {
                    if let Some(kb) = status_kb(*pid, "VmRSS") {
                        p[i].fetch_max(kb, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Sampler {
            pids,
            peaks,
            stop,
            thread: Some(thread),
        }
    }

    fn take_peaks(&self) -> Vec<u64> {
        self.peaks
            .iter()
            .map(|p| p.swap(0, Ordering::Relaxed))
            .collect()
    }

    fn now(&self) -> String {
        let now: Vec<String> = STAGES
            .iter()
            .zip(&self.pids)
            .map(|(s, pid)| format!("{s} {}", status_kb(*pid, "VmRSS").map_or("gone".into(), mb)))
            .collect();
        now.join(", ")
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Per partition, the offset just past its last record a read_committed reader gets. Read
/// from the tail only (a window before the high watermark, widened until it holds a record):
/// reading the whole topic would hold millions of records in this process. An error is the
/// broker's (another checkout may restart the shared stack): the caller asks again.
fn ends(kafka: &KafkaSettings, topic: &str) -> reviewflow::error::Result<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = reviewflow::kafka::client_config(kafka)
        .set("group.id", "reviewflow-large-transaction-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let partitions = reviewflow::kafka::partition_count(&consumer, topic)?;
    let mut out = BTreeMap::new();
    for partition in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
        let mut window = 1_000;
        loop {
            let start = (high - window).max(low);
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Offset(start))?;
            consumer.assign(&tpl)?;
            let mut last = None;
            let deadline = Instant::now() + Duration::from_secs(60);
            while reviewflow::kafka::read_position(&consumer, topic, partition, start)? < high {
                assert!(
                    Instant::now() < deadline,
                    "reading the tail of {topic}/{partition}"
                );
                if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                    last = Some(m?.offset());
                }
            }
            if let Some(last) = last {
                out.insert(partition, last + 1);
                break;
            }
            if start == low {
                break;
            }
            window *= 8;
        }
    }
    Ok(out)
}

fn total(offsets: &BTreeMap<i32, i64>) -> i64 {
    offsets.values().sum()
}

/// What the slot confirmed (0 before it confirmed any), the server's WAL insert position,
/// and the offsets the sinks stored per (consumer, topic), in one query's time. An error is
/// PostgreSQL's (another checkout may restart the shared server): the caller asks again.
async fn positions(
    db: &tokio_postgres::Client,
    slot: &str,
) -> Result<(u64, u64, BTreeMap<(String, String), BTreeMap<i32, i64>>), String> {
    use tokio_postgres::types::PgLsn;
    let r = db
        .query_one(
            "SELECT pg_current_wal_insert_lsn(),
                    (SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1)",
            &[&slot],
        )
        .await
        .map_err(|e| e.to_string())?;
    let (wal, confirmed): (PgLsn, Option<PgLsn>) = (r.get(0), r.get(1));
    let mut stored: BTreeMap<_, BTreeMap<i32, i64>> = BTreeMap::new();
    for s in reviewflow::sink::offsets::stored(db)
        .await
        .map_err(|e| e.to_string())?
    {
        stored
            .entry((s.consumer, s.topic))
            .or_default()
            .insert(s.partition, s.next_offset);
    }
    Ok((confirmed.map_or(0, u64::from), u64::from(wal), stored))
}

/// Until every stage has processed everything written so far (the slot confirmed the WAL,
/// fraud committed past the last change, each sink stored offsets past the last record of
/// its input), printing progress every 10 s. Fails when nothing moves for `STALL`, or a
/// stage exits.
async fn catch_up(p: &Pipeline, stages: &mut [Running], sampler: &Sampler) {
    let kafka = p.settings.kafka.clone();
    let mut db = Some(p.db().await);
    let (_, target, _) = positions(db.as_ref().unwrap(), &p.slot()).await.unwrap();
    let started = Instant::now();
    let (mut last_seen, mut moved_at, mut printed) = (Vec::new(), Instant::now(), Instant::now());
    let ends_of = |topic: String| {
        let kafka = kafka.clone();
        tokio::task::spawn_blocking(move || ends(&kafka, &topic))
    };
    loop {
        for (stage, running) in STAGES.iter().zip(stages.iter_mut()) {
            let child = running.0.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                panic!("reviewflow {stage} exited during the run: {status}");
            }
        }
        if db.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
            db = reviewflow::db::connect(&p.url).await.ok();
        }
        let read = match &db {
            Some(db) => positions(db, &p.slot()).await,
            None => Err("cannot connect".into()),
        };
        let (confirmed, _, mut stored) = match read {
            Ok(read) => read,
            Err(e) => {
                println!("  reading PostgreSQL: {e}; again in 2 s");
                db = None;
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let mut sink = |consumer: &str, topic: String| {
            stored
                .remove(&(consumer.to_string(), topic))
                .unwrap_or_default()
        };
        let stats = sink("stats", p.output("valid"));
        let verdicts = sink("verdicts", p.output("verdicts"));
        let changes = match ends_of(p.topic.clone()).await.unwrap() {
            Ok(changes) => changes,
            Err(e) => {
                println!("  reading {}: {e}; again in 2 s", p.topic);
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let fraud = common::pipeline::committed(
            &p.settings,
            &format!("{}.fraud", p.topic),
            &p.topic,
            &changes,
        )
        .await;
        let seen = vec![
            confirmed as i64,
            total(&fraud),
            total(&stats),
            total(&verdicts),
        ];
        if confirmed >= target && fraud == changes {
            // Fraud is done, so its outputs are final: the sinks' ends can be read once.
            let valid_end = ends_of(p.output("valid")).await.unwrap();
            let verdicts_end = ends_of(p.output("verdicts")).await.unwrap();
            let done = |stored: &BTreeMap<i32, i64>, end: &Result<BTreeMap<i32, i64>, _>| {
                end.as_ref()
                    .is_ok_and(|end| end.iter().all(|(part, o)| stored.get(part) == Some(o)))
            };
            if let (true, true, Ok(valid_end), Ok(verdicts_end)) = (
                done(&stats, &valid_end),
                done(&verdicts, &verdicts_end),
                &valid_end,
                &verdicts_end,
            ) {
                println!(
                    "  caught up in {:.1} s: {} changes, fraud committed {}, stats at {} of {}, verdicts at {} of {}",
                    started.elapsed().as_secs_f64(),
                    total(&changes),
                    total(&fraud),
                    total(&stats),
                    total(valid_end),
                    total(&verdicts),
                    total(verdicts_end)
                );
                return;
            }
        }
        if seen != last_seen {
            (last_seen, moved_at) = (seen, Instant::now());
        }
        assert!(
            moved_at.elapsed() < STALL,
            "no stage made progress for {STALL:?}: slot at {confirmed:X} of {target:X}, \
             fraud {fraud:?} of {changes:?}, stats {stats:?}, verdicts {verdicts:?}"
        );
        if printed.elapsed() >= Duration::from_secs(10) {
            printed = Instant::now();
            println!(
                "  {:>6.1} s: slot {} MB behind; changes {}, fraud committed {}, stats stored {}, verdicts stored {}; rss {}",
                started.elapsed().as_secs_f64(),
                target.saturating_sub(confirmed) / 1_000_000,
                total(&changes),
                total(&fraud),
                total(&stats),
                total(&verdicts),
                sampler.now()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The figures the update must move: courses, reviews counted, their rating sum, the recent
/// ones counted.
async fn figures(db: &tokio_postgres::Client) -> (i64, i64, f64, i64) {
    let r = db
        .query_one(
            "SELECT count(*), coalesce(sum(review_count), 0)::int8,
                    coalesce(sum(rating_sum), 0)::float8,
                    coalesce(sum(recent_review_count), 0)::int8
             FROM course_stats",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

/// The run is large: its database, slot and topics go once it passed (a failed run leaves
/// them to look at; the next run's `fresh_database` and stale-slot sweep replace them).
async fn clean_up(p: &Pipeline) {
    let db = p.db().await;
    db.execute("SELECT pg_drop_replication_slot($1)", &[&p.slot()])
        .await
        .unwrap();
    drop(db);
    let (base, name) = p.url.rsplit_once('/').unwrap();
    let admin = reviewflow::db::connect(&format!("{base}/postgres"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
    let prefix = p.topic.trim_end_matches(".changes").to_string();
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        reviewflow::kafka::client_config(&p.settings.kafka)
            .create()
            .unwrap();
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(30))
        .unwrap();
    let ours: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|t| t.starts_with(&prefix))
        .collect();
    let ours: Vec<&str> = ours.iter().map(String::as_str).collect();
    admin
        .delete_topics(&ours, &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_transaction_of_every_row_flows_through_every_stage_in_bounded_memory_and_exactly() {
    let n = rows();
    // About 100 reviews a course, as on a real site, so a batch touches many courses.
    let courses = (n / 100).max(1);
    // Named by N, so the long form and the CI form can run side by side.
    let p = Pipeline::new(&format!("large_tx_{n}")).await;
    let db = p.db().await;
    let run_started = Instant::now();
    println!("large transaction: {n} rows over {courses} courses");

    // Their warnings only: the progress lines are this test's.
    let quiet = [("RUST_LOG", "reviewflow=warn")];
    let cdc = p.spawn("cdc", None, &quiet);
    p.wait_for_snapshot().await;
    let mut stages = vec![cdc];
    for stage in &STAGES[1..] {
        stages.push(p.spawn(stage, None, &quiet));
    }
    let pids: Vec<u32> = stages.iter().map(|s| s.0.as_ref().unwrap().id()).collect();
    let sampler = Sampler::start(pids.clone());

    // Phase 1: all N reviews in one transaction. Ages of 0..119 days, so some are outside
    // the 90-day window; ratings over every half star; no digits in the text, which the
    // model could take for a phone number.
    let started = Instant::now();
    db.batch_execute(&format!(
        "INSERT INTO reviews (id, course_id, user_id, rating, title, content, created_at)
         SELECT g, 1 + g % {courses}, g, (1 + g % 10) / 2.0, 'a course review',
                'the teacher was ' || (ARRAY['clear', 'patient', 'thorough', 'lively', 'kind'])[1 + g % 5]
                    || ' and the exercises helped me',
                now() - make_interval(days => (g % 120)::int, secs => (g % 86400)::float8)
         FROM generate_series(1, {n}) g"
    ))
    .await
    .unwrap();
    println!(
        "inserted {n} rows in one transaction in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    catch_up(&p, &mut stages, &sampler).await;
    let inserted = started.elapsed();
    let insert_peaks = sampler.take_peaks();
    let before = figures(&db).await;
    assert_eq!(before.1, n, "every inserted review counts once");

    // Phase 2: one transaction that changes every row: every rating; a fifth of the reviews
    // 60 days older (some leave the 90-day window); every 97th gets a link (fraud, so it
    // leaves the figures); every 50th moves to the next course; and every 31st is deleted
    // after its update.
    let started = Instant::now();
    db.batch_execute(&format!(
        "BEGIN;
         UPDATE reviews SET
             rating = (1 + (id * 7 + 3) % 10) / 2.0,
             created_at = CASE WHEN id % 5 = 0 THEN created_at - interval '60 days' ELSE created_at END,
             content = CASE WHEN id % 97 = 0 THEN 'see http://spam.example.com/' || id ELSE content END,
             course_id = CASE WHEN id % 50 = 0 THEN 1 + course_id % {courses} ELSE course_id END,
             updated_at = now();
         DELETE FROM reviews WHERE id % 31 = 0;
         COMMIT"
    ))
    .await
    .unwrap();
    println!(
        "updated {n} rows (and deleted {}) in one transaction in {:.1} s",
        n / 31,
        started.elapsed().as_secs_f64()
    );
    catch_up(&p, &mut stages, &sampler).await;
    let updated = started.elapsed();
    let update_peaks = sampler.take_peaks();
    let after = figures(&db).await;
    assert_ne!(before, after, "the update moved the figures");

    // Read before any stage stops: the peak of each process's whole life. The kernel folds
    // its RSS counters into VmHWM lazily, so a sample can be a little above it.
    let lifetime: Vec<u64> = pids
        .iter()
        .zip(insert_peaks.iter().zip(&update_peaks))
        .map(|(pid, (a, b))| {
            let hwm = status_kb(*pid, "VmHWM").expect("the stage is still running");
            hwm.max(*a).max(*b)
        })
        .collect();
    println!(
        "caught up: insert {:.1} s, update {:.1} s, whole run {:.1} s",
        inserted.as_secs_f64(),
        updated.as_secs_f64(),
        run_started.elapsed().as_secs_f64()
    );
    println!("stage     insert phase  update phase  peak (VmHWM)");
    for (i, stage) in STAGES.iter().enumerate() {
        println!(
            "{stage:<9} {:>12}  {:>12}  {:>12}",
            mb(insert_peaks[i]),
            mb(update_peaks[i]),
            mb(lifetime[i])
        );
    }
    let over: Vec<String> = STAGES
        .iter()
        .zip(&lifetime)
        .filter(|(_, kb)| **kb * 1024 >= RSS_LIMIT_BYTES)
        .map(|(s, kb)| format!("{s} {}", mb(*kb)))
        .collect();
    assert!(over.is_empty(), "stages over 100 MB resident: {over:?}");

    let started = Instant::now();
    p.assert_exact().await;
    println!(
        "verify: exact, in {:.1} s; figures before {before:?}, after {after:?}",
        started.elapsed().as_secs_f64()
    );
    for stage in stages {
        p.stop(stage).await;
    }
    drop(sampler);
    drop(db);
    clean_up(&p).await;
}
