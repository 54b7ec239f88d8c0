//! The workers alone on the backlog the CDC phase put in Kafka (the seeded courses' snapshot
//! and the N changes), each stage timed from its start (group join, registry look-ups
//! inside the figure):
//! - fraud: until its group's committed offsets reach the end of the changes topic; beside
//!   it Kafka's ProducerPerformance from the broker's own jars, writing as many records of
//!   the valid topic's mean size, transactional with the same transaction length (the
//!   broker's limit for this shape of work);
//! - stats: until it has consumed every record of the valid topic; beside it the Kafka
//!   Streams version of the original aggregation (91-day hopping windows advancing a day),
//!   a peer, on the same topic;
//! - then the verdict sink (untimed) and `verify`: the figures must equal the truth.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::peers::{self, PeerOutcome};
use super::{probe, spinner, wait_until, Run};
use crate::error::{Error, Result};

#[derive(Clone, Debug, serde::Serialize)]
pub struct FraudFigures {
    pub records: u64,
    pub secs: f64,
    pub cpu_secs: f64,
    pub valid: u64,
    pub flagged: u64,
    pub transactions: u64,
    pub record_bytes: u64,
    pub producer_perf: Option<f64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct StatsFigures {
    pub changes: u64,
    pub secs: f64,
    pub cpu_secs: f64,
    /// PostgreSQL's CPU over the same time (backends, WAL writer, checkpointer), when the
    /// stack is ours.
    pub postgres_cpu_secs: Option<f64>,
    pub verified_courses: i64,
    pub verified_reviews: i64,
    /// How long `verify` took on those tables.
    pub verify_secs: f64,
    pub streams: PeerOutcome,
}

const EVENTS_IN: &str = "reviewflow_events_in";
const EVENTS_OUT: &str = "reviewflow_events_out";

pub async fn run(
    run: &mut Run,
    shutdown: &CancellationToken,
) -> Result<(FraudFigures, StatsFigures)> {
    let fraud = fraud(run, shutdown).await?;
    let stats = stats(run, &fraud, shutdown).await?;
    Ok((fraud, stats))
}

async fn fraud(run: &mut Run, shutdown: &CancellationToken) -> Result<FraudFigures> {
    let kafka = run.settings.kafka.clone();
    let changes = run.topic("changes");
    let ends = {
        let (kafka, topic) = (kafka.clone(), changes.clone());
        tokio::task::spawn_blocking(move || probe::end_offsets(&kafka, &topic)).await??
    };
    // Every change of the run so far: the snapshot's rows and the backlog (the end offsets
    // also count the snapshot transaction's commit markers).
    let records = (run.sizes.courses + run.sizes.backlog) as i64;
    let bar = spinner(format!("workers: fraud judging {records} changes"));
    let started = Instant::now();
    run.start("fraud")?;
    let group = run.group("fraud");
    wait_until(
        run,
        "fraud judging the backlog",
        Duration::from_millis(100),
        Duration::from_secs(3600),
        shutdown,
        |_| {
            let (kafka, group, topic, ends) =
                (kafka.clone(), group.clone(), changes.clone(), ends.clone());
            Box::pin(async move {
                let parts = ends.len() as i32;
                let got = tokio::task::spawn_blocking(move || {
                    probe::committed(&kafka, &group, &topic, parts)
                })
                .await??;
                Ok(got.iter().zip(&ends).all(|(c, e)| c >= e))
            })
        },
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = run.stage("fraud")?.cpu_secs();
    let out = |o: &'static str| [("stage", "fraud"), ("output", o)];
    // The snapshot's marks (a TRUNCATE and an end on every partition) pass to the valid
    // changelog as they came, beside the changes judged.
    let marks = 2 * ends.len() as u64;
    // The offsets commit with the last transaction; its counters move once that commit has
    // returned to the worker, a moment later (read at once, they came up one batch short).
    let judged = records as u64 + marks;
    wait_until(
        run,
        "fraud's counters reaching the changes it committed",
        Duration::from_millis(50),
        Duration::from_secs(30),
        shutdown,
        move |r| {
            Box::pin(async move {
                let valid = r.counter("fraud", EVENTS_OUT, &out("valid")).await?;
                let flagged = r.counter("fraud", EVENTS_OUT, &out("fraud")).await?;
                Ok((valid + flagged) as u64 >= judged)
            })
        },
    )
    .await?;
    let valid = run.counter("fraud", EVENTS_OUT, &out("valid")).await? as u64;
    let flagged = run.counter("fraud", EVENTS_OUT, &out("fraud")).await? as u64;
    let transactions = run
        .counter("fraud", "reviewflow_transactions", &[("stage", "fraud")])
        .await? as u64;
    run.stop("fraud", "backlog").await?;
    bar.finish_and_clear();
    if valid + flagged != judged {
        return Err(Error::Command {
            what: "fraud".into(),
            detail: format!(
                "judged {valid} valid + {flagged} fraud of {records} changes and {marks} \
                 snapshot marks"
            ),
        });
    }
    let record_bytes = {
        let (kafka, topic) = (kafka.clone(), run.topic("valid"));
        tokio::task::spawn_blocking(move || probe::mean_record_bytes(&kafka, &topic, 2000))
            .await??
    };
    let txn_ms = ((secs * 1000.0) / transactions.max(1) as f64).max(1.0) as u64;
    let bar = spinner("workers: Kafka's ProducerPerformance (the broker's limit)".into());
    let producer_perf = producer_perf(run, records as u64, record_bytes, txn_ms, shutdown).await?;
    bar.finish_and_clear();
    Ok(FraudFigures {
        records: records as u64,
        secs,
        cpu_secs,
        valid,
        flagged,
        transactions,
        record_bytes,
        producer_perf: Some(producer_perf),
    })
}

async fn stats(
    run: &mut Run,
    fraud: &FraudFigures,
    shutdown: &CancellationToken,
) -> Result<StatsFigures> {
    let changes = fraud.valid;
    let bar = spinner(format!("workers: stats applying {changes} valid changes"));
    let pg_before = run.postgres_cpu();
    let started = Instant::now();
    run.start("stats")?;
    wait_until(
        run,
        "stats applying the backlog",
        Duration::from_millis(100),
        Duration::from_secs(3600),
        shutdown,
        move |r| {
            Box::pin(async move {
                let consumed = r.counter("stats", EVENTS_IN, &[("stage", "stats")]).await?;
                Ok(consumed as u64 >= changes)
            })
        },
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = run.stage("stats")?.cpu_secs();
    let postgres_cpu_secs = run.postgres_cpu().zip(pg_before).map(|(a, b)| a - b);
    run.stop("stats", "backlog").await?;
    bar.finish_and_clear();

    // The registry the peer reads schemas from is our API's.
    run.start("api")?;
    let streams = if run.config.skip_peers {
        PeerOutcome::Skipped("--skip-peers".into())
    } else {
        let bar = spinner("workers: Kafka Streams, 91-day hopping windows (peer)".into());
        let outcome = streams(run, changes.min(run.config.streams_records), shutdown).await?;
        bar.finish_and_clear();
        outcome
    };

    let bar = spinner("workers: verdict sink, then verify".into());
    let verdicts = fraud.records;
    run.start("verdicts")?;
    wait_until(
        run,
        "the verdict sink",
        Duration::from_millis(200),
        Duration::from_secs(3600),
        shutdown,
        move |r| {
            Box::pin(async move {
                let consumed = r
                    .counter("verdicts", EVENTS_IN, &[("stage", "verdicts")])
                    .await?;
                Ok(consumed as u64 >= verdicts)
            })
        },
    )
    .await?;
    run.stop("verdicts", "backlog").await?;
    let client = crate::db::connect(&run.settings.database_url).await?;
    let verify_started = Instant::now();
    let report = crate::tools::verify::verify(&client).await?;
    let verify_secs = verify_started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    if !report.differences.is_empty() {
        return Err(Error::Command {
            what: "verify after the workers".into(),
            detail: format!(
                "{} differences in {} courses; the first: {:?}",
                report.differences.len(),
                report.courses,
                report.differences.first()
            ),
        });
    }
    Ok(StatsFigures {
        changes,
        secs,
        cpu_secs,
        postgres_cpu_secs,
        verified_courses: report.courses,
        verified_reviews: report.reviews,
        verify_secs,
        streams,
    })
}

async fn producer_perf(
    run: &Run,
    records: u64,
    record_bytes: u64,
    txn_ms: u64,
    shutdown: &CancellationToken,
) -> Result<f64> {
    let topic = run.topic("producer-perf");
    crate::kafka::ensure_topic(
        &run.settings.kafka,
        &topic,
        run.partitions,
        crate::kafka::CLUSTER_REPLICATION,
        &[],
    )
    .await?;
    let libs = run
        .stack
        .cache()
        .join(format!("kafka-{}", run.stack.kafka_version))
        .join("libs");
    let log4j = run.dir.join("log4j2.properties");
    std::fs::write(
        &log4j,
        "status = warn\nappender.err.type = Console\nappender.err.name = err\n\
         appender.err.target = SYSTEM_ERR\nappender.err.layout.type = PatternLayout\n\
         appender.err.layout.pattern = %p %m%n\nrootLogger.level = warn\n\
         rootLogger.appenderRef.err.ref = err\n",
    )
    .map_err(|e| Error::io_path("write", &log4j, e))?;
    let child = tokio::process::Command::new("java")
        .arg("-Xmx512m")
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .arg("org.apache.kafka.tools.ProducerPerformance")
        .args(["--topic", &topic, "--num-records", &records.to_string()])
        .args([
            "--record-size",
            &record_bytes.to_string(),
            "--throughput",
            "-1",
        ])
        .args(["--transactional-id", &format!("{}-producer-perf", run.id)])
        .args(["--transaction-duration-ms", &txn_ms.to_string()])
        .arg("--producer-props")
        .arg(format!(
            "bootstrap.servers={}",
            run.settings.kafka.bootstrap_servers
        ))
        .args(["acks=all", "compression.type=lz4", "linger.ms=5"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::io("start java (Kafka's ProducerPerformance)", e))?;
    let output = tokio::select! {
        out = child.wait_with_output() => out.map_err(|e| Error::io("ProducerPerformance", e))?,
        _ = shutdown.cancelled() => return Err(Error::Config("interrupted".into())),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rate = stdout
        .lines()
        .rfind(|l| l.contains("records sent"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|r| r.parse::<f64>().ok());
    match (output.status.success(), rate) {
        (true, Some(rate)) => Ok(rate),
        _ => Err(Error::Command {
            what: "Kafka's ProducerPerformance".into(),
            detail: format!(
                "{}; {}",
                output.status,
                crate::stack::tail_lines(&String::from_utf8_lossy(&output.stderr), 5)
            ),
        }),
    }
}

async fn streams(run: &Run, expect: u64, shutdown: &CancellationToken) -> Result<PeerOutcome> {
    let args: Vec<String> = [
        "streams".to_string(),
        "--bootstrap".into(),
        run.settings.kafka.bootstrap_servers.clone(),
        "--registry".into(),
        format!("http://{}", run.api_address()),
        "--topic".into(),
        run.topic("valid"),
        "--expect".into(),
        expect.to_string(),
        "--application-id".into(),
        run.group("streams"),
        "--timeout-s".into(),
        run.config.peer_timeout_secs.to_string(),
    ]
    .into();
    let log = run.dir.join("peer-streams.log");
    let limit = Duration::from_secs(run.config.peer_timeout_secs + 60);
    Ok(peers::run(&run.config.peers_dir, &args, &log, limit, shutdown).await)
}
