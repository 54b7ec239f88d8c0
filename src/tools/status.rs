//! `reviewflow status`: where every stage is. The slot (state, WAL held, time lag, pending
//! changes peeked from a copy), then each worker's position and lag per partition: the fraud
//! group's committed offsets on the changes topic, and the sinks' offsets kept in PostgreSQL.
//! Last, the state of each stage of a `reviewflow run`, as its API's GET /healthz tells: the
//! states live in that process (src/health.rs), which alone knows them as they are; a table
//! written by it would still say "running" after the process was killed.
//! Read-only: nothing is consumed, committed or claimed.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;

use crate::config::{KafkaSettings, Settings, TopicSettings};
use crate::error::Result;
use crate::sink::offsets::Stored;
use crate::source::status::{pending, slot_status};

/// What to report on.
pub struct Place<'a> {
    pub topics: &'a TopicSettings,
    pub slot: &'a str,
    pub publication: &'a str,
    pub fraud_group: &'a str,
    /// The API of the `run` whose stages are reported.
    pub api_url: &'a str,
}

pub async fn report(settings: &Settings, place: &Place<'_>, peek: i32) -> Result<()> {
    let (slot, publication) = (place.slot, place.publication);
    let client = crate::db::connect(&settings.database_url).await?;
    match slot_status(&client, slot).await? {
        None => println!("slot {slot}: not created yet (cdc creates it on first start)"),
        Some(s) => {
            let state = if s.active {
                "active (cdc connected)"
            } else {
                "inactive"
            };
            println!("slot {}: {state}", s.slot);
            println!(
                "  confirmed flush: {}",
                s.confirmed_flush.as_deref().unwrap_or("-")
            );
            println!("  restart:         {}", s.restart.as_deref().unwrap_or("-"));
            let held = s.lag_bytes.map_or("-".into(), |b| b.to_string());
            println!("  lag:             {held} bytes of WAL held");
            println!(
                "  wal status:      {}",
                s.wal_status.as_deref().unwrap_or("-")
            );
            match s.failover {
                None => println!(
                    "  failover:        no (PostgreSQL before 17: a promoted standby has no copy \
                     of the slot; cdc then stops and names --new-snapshot)"
                ),
                Some(f) => println!(
                    "  failover:        {} (synced from a primary: {}{})",
                    if f.failover { "yes" } else { "no" },
                    if f.synced { "yes" } else { "no" },
                    if f.conflicting {
                        "; conflicting: invalidated"
                    } else {
                        ""
                    }
                ),
            }
            let waiting = pending(&client, slot, publication, peek.max(1)).await?;
            match waiting.oldest_commit {
                None => println!("  time lag:        0 s (no change waiting)"),
                Some(t) => println!(
                    "  time lag:        {} s (oldest waiting change committed {t})",
                    (chrono::Utc::now() - t).num_seconds()
                ),
            }
            if peek > 0 {
                println!("pending changes (first {peek}, not consumed):");
                for line in &waiting.changes {
                    println!("  {line}");
                }
            }
        }
    }
    let sinks = crate::sink::offsets::stored(&client).await?;
    let kafka = settings.kafka.clone();
    let (changes, fraud_group) = (place.topics.changes.clone(), place.fraud_group.to_string());
    let lines =
        tokio::task::spawn_blocking(move || worker_lines(&kafka, &changes, &fraud_group, &sinks))
            .await??;
    for line in lines {
        println!("{line}");
    }
    if let Some(line) = crate::sink::stats::restating::status_line(&client).await? {
        println!("{line}");
    }
    for line in stage_lines(place.api_url).await {
        println!("{line}");
    }
    Ok(())
}

/// The stages of the `run` serving `api_url`, one line each, from its GET /healthz. A run
/// that does not answer is said so, not an error: stages run alone are not in any run.
pub async fn stage_lines(api_url: &str) -> Vec<String> {
    let url = format!("{}/healthz", api_url.trim_end_matches('/'));
    let asked = async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        http.get(&url).send().await?.json::<Health>().await
    };
    match asked.await {
        Ok(health) if health.stages.is_empty() => {
            vec![format!("stages ({url}): {}, runs no stage", health.status)]
        }
        Ok(health) => {
            let mut out = vec![format!("stages ({url}): {}", health.status)];
            out.extend(health.stages.iter().map(|(name, s)| s.line(name)));
            out
        }
        Err(e) => vec![format!(
            "stages: no `reviewflow run` answered at {url} ({}); name its API with --api-url \
             (REVIEWFLOW_API_URL)",
            crate::error::causes(&e)
        )],
    }
}

/// The part of GET /healthz that `status` shows.
#[derive(serde::Deserialize)]
struct Health {
    status: String,
    #[serde(default)]
    stages: std::collections::BTreeMap<String, crate::health::StageReport>,
}

/// One line per worker partition: position, end of the topic, records behind. Blocking.
fn worker_lines(
    kafka: &KafkaSettings,
    changes: &str,
    fraud_group: &str,
    sinks: &[Stored],
) -> Result<Vec<String>> {
    let probe: BaseConsumer = crate::kafka::client_config(kafka)
        .set("group.id", fraud_group)
        // Committed offsets of a group in the middle of a transaction are still readable.
        .set("isolation.level", "read_uncommitted")
        .create()?;
    let end = |topic: &str, partition: i32| {
        probe
            .fetch_watermarks(topic, partition, Duration::from_secs(5))
            .map(|(_, high)| high)
            .ok()
    };
    let line = |who: &str, topic: &str, partition: i32, at: i64, owner: &str| match end(
        topic, partition,
    ) {
        Some(high) => format!(
            "  {who:<9} {topic}/{partition}: at {at} of {high}, {} behind{owner}",
            (high - at).max(0)
        ),
        None => format!("  {who:<9} {topic}/{partition}: at {at} (topic end unknown){owner}"),
    };
    let mut out = vec!["workers (position, topic end, records behind; a transaction's commit marker takes an offset):".to_string()];
    if let Ok(count) = crate::kafka::partition_count(&probe, changes) {
        let mut tpl = TopicPartitionList::new();
        for p in 0..count {
            tpl.add_partition(changes, p);
        }
        if let Ok(committed) = probe.committed_offsets(tpl, Duration::from_secs(10)) {
            for e in committed.elements() {
                match e.offset().to_raw().filter(|o| *o >= 0) {
                    Some(at) => out.push(line("fraud", changes, e.partition(), at, "")),
                    None => out.push(format!(
                        "  fraud     {changes}/{}: nothing committed yet",
                        e.partition()
                    )),
                }
            }
        }
    }
    for s in sinks {
        let owner = s
            .owner
            .as_deref()
            .map(|o| format!(" (owner {o})"))
            .unwrap_or_default();
        out.push(line(
            &s.consumer,
            &s.topic,
            s.partition,
            s.next_offset,
            &owner,
        ));
    }
    if out.len() == 1 {
        out.push("  none has started yet".into());
    }
    Ok(out)
}
