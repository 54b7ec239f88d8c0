//! Looking at a run from outside: a stage's counters from its GET /metrics, and Kafka's view
//! (end offsets, a group's committed offsets, the run's topics) through the Rust client, so
//! no extra process competes for the cores being measured.

use std::net::SocketAddr;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaSettings;
use crate::error::{Error, Result};
use crate::kafka::{client_config, partition_count};

/// One counter of a stage: the sum of the samples of `name` whose labels include `labels`.
pub async fn counter(
    http: &reqwest::Client,
    at: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
) -> Result<f64> {
    let text = http
        .get(format!("http://{at}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| Error::Command {
            what: format!("GET http://{at}/metrics"),
            detail: crate::error::causes(&e),
        })?
        .text()
        .await
        .map_err(|e| Error::Command {
            what: format!("read http://{at}/metrics"),
            detail: e.to_string(),
        })?;
    Ok(sample(&text, name, labels))
}

/// The sum of the samples of `name` (a counter's `_total` included) carrying every label.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            let named = metric == name || metric == format!("{name}_total");
            let labelled = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            (named && labelled).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

fn consumer(kafka: &KafkaSettings, group: &str) -> Result<BaseConsumer> {
    Ok(client_config(kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?)
}

/// Per partition, the high watermark. Blocking.
pub fn end_offsets(kafka: &KafkaSettings, topic: &str) -> Result<Vec<i64>> {
    let c = consumer(kafka, "reviewflow-bench-probe")?;
    (0..partition_count(&c, topic)?)
        .map(|p| Ok(c.fetch_watermarks(topic, p, Duration::from_secs(30))?.1))
        .collect()
}

/// Per partition, the group's committed offset (0 when none). Blocking; never joins the group.
pub fn committed(kafka: &KafkaSettings, group: &str, topic: &str, parts: i32) -> Result<Vec<i64>> {
    let c = consumer(kafka, group)?;
    let mut list = TopicPartitionList::new();
    for p in 0..parts {
        list.add_partition(topic, p);
    }
    let got = c.committed_offsets(list, Duration::from_secs(10))?;
    Ok((0..parts)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => 0,
        })
        .collect())
}

/// Mean key + value bytes of up to `n` records from the start of `topic`. Blocking.
pub fn mean_record_bytes(kafka: &KafkaSettings, topic: &str, n: usize) -> Result<u64> {
    use rdkafka::Message;
    let c = consumer(kafka, "reviewflow-bench-probe")?;
    let mut list = TopicPartitionList::new();
    for p in 0..partition_count(&c, topic)? {
        list.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&list)?;
    let (mut count, mut bytes) = (0u64, 0u64);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (count as usize) < n && std::time::Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m?;
            count += 1;
            bytes += (m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len)) as u64;
        }
    }
    if count == 0 {
        return Err(Error::Command {
            what: format!("read {topic}"),
            detail: "no record within 30 s".into(),
        });
    }
    Ok((bytes + count / 2) / count)
}

/// Deletes every topic whose name starts with one of `prefixes` (the run's own).
pub async fn delete_topics(kafka: &KafkaSettings, prefixes: &[String]) -> Result<usize> {
    let names: Vec<String> = {
        let kafka = kafka.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
            let c = consumer(&kafka, "reviewflow-bench-probe")?;
            let metadata = c.fetch_metadata(None, Duration::from_secs(30))?;
            Ok(metadata
                .topics()
                .iter()
                .map(|t| t.name().to_string())
                .collect())
        })
        .await??
    };
    let ours: Vec<&str> = names
        .iter()
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p.as_str())))
        .map(String::as_str)
        .collect();
    if ours.is_empty() {
        return Ok(0);
    }
    let admin: AdminClient<DefaultClientContext> = client_config(kafka).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    admin.delete_topics(&ours, &options).await?;
    Ok(ours.len())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_counters_by_name_and_labels() {
        let text = "# TYPE reviewflow_events_out counter\n\
            reviewflow_events_out_total{stage=\"stats\",output=\"applied\"} 42\n\
            reviewflow_events_out_total{stage=\"fraud\",output=\"valid\"} 7\n\
            reviewflow_events_out_total{stage=\"fraud\",output=\"fraud\"} 2\n";
        let f = |labels: &[(&str, &str)]| super::sample(text, "reviewflow_events_out", labels);
        assert_eq!(f(&[("stage", "stats"), ("output", "applied")]), 42.0);
        assert_eq!(f(&[("stage", "fraud")]), 9.0);
        assert_eq!(f(&[("stage", "cdc")]), 0.0);
    }
}
