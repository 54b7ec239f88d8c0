//! Kafka client settings shared by every producer and consumer: the bootstrap servers plus
//! the librdkafka settings of the configuration (TLS, SASL: a properties file, `KAFKA_*`
//! variables, `--kafka-option`s), logged without their secrets. Every client the pipeline
//! builds starts from `client_config`, the workers' consumers from `worker_consumer_config`;
//! every record is handed to its producer by `produce`'s one rule.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::{BatchLimits, KafkaSettings};
use crate::error::{Error, Result};
use crate::secret::shown_setting;

pub mod produce;
mod topics;

pub use topics::{ensure_history_topic, ensure_topic, CLUSTER_REPLICATION, HISTORY_SETTINGS};

pub fn client_config(kafka: &KafkaSettings) -> ClientConfig {
    configured(ClientConfig::new(), kafka)
}

/// The consumer of a worker (fraud, the sinks): a group member whose prefetch is bounded to a
/// few batches (the configured settings may change that bound, but not what exactly-once
/// needs: its group, read_committed, no automatic offset commits).
///
/// librdkafka prefetches up to 100,000 records or 64 MB per consumer, but counts only keys and
/// payloads: with records of about 200 bytes, the record's own bookkeeping (about 700 bytes)
/// and the decompressed batches it keeps alive made each worker 130-150 MB resident on a
/// backlog (heaptrack: rd_kafka_buf_new_shadow and rd_kafka_lz4_decompress were the peak).
/// Two batches ahead keeps a worker busy; smaller fetches keep the decompressed batches small;
/// and a consumer that reached the bound fetches again after 10 ms rather than librdkafka's
/// 1 s, which with a small bound starved the fraud worker (a third of its throughput).
pub fn worker_consumer_config(
    kafka: &KafkaSettings,
    group: &str,
    limits: &BatchLimits,
) -> ClientConfig {
    let mut bounded = ClientConfig::new();
    bounded
        .set(
            "queued.min.messages",
            (2 * limits.max_records).max(10_000).to_string(),
        )
        .set("queued.max.messages.kbytes", "4096")
        .set("max.partition.fetch.bytes", "262144")
        .set("fetch.queue.backoff.ms", "10")
        // Partitions added to a topic join the group's assignment at the next metadata
        // refresh: 10 s rather than librdkafka's 5 minutes, so changes cdc writes there after a
        // switch do not wait (see `source::switch`).
        .set("topic.metadata.refresh.interval.ms", "10000");
    let mut config = configured(bounded, kafka);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest");
    config
}

/// Refuses, at a worker's start, the consumer-group settings a user could pass (`KAFKA_*`,
/// `--kafka-option`) that exactly-once cannot follow. Both rebalancing protocols are followed
/// (any `partition.assignment.strategy`, `group.protocol` classic or consumer: see
/// docs/configuration.md); a static `group.instance.id` is not: one value reaches every
/// process given the same settings, and two members with one id fence each other.
pub fn check_group_settings(kafka: &KafkaSettings) -> Result<()> {
    if kafka.setting("group.instance.id").is_some() {
        return Err(Error::Config(
            "Kafka client setting group.instance.id is set, but the workers' consumers are \
             dynamic group members: one static id reaches every process given these settings, \
             and two members with one id fence each other. Remove group.instance.id \
             (KAFKA_GROUP_INSTANCE_ID or --kafka-option); name each process with --instance"
                .into(),
        ));
    }
    match kafka.setting("group.protocol") {
        None | Some("classic" | "consumer") => Ok(()),
        Some(other) => Err(Error::Config(format!(
            "Kafka client setting group.protocol={other}: the workers follow group.protocol=classic \
             (the default) or group.protocol=consumer (KIP-848, Kafka 4); set one of them"
        ))),
    }
}

/// A producer's settings: `tunable` first, the user's (`KAFKA_*`, `--kafka-option`, the
/// properties file) over them, so that a deployment can trade latency for batching
/// (`linger.ms`, `batch.num.messages`, `compression.type`, ...). What a guarantee needs is the
/// caller's to set afterwards, where no user setting reaches it.
pub fn producer_config(kafka: &KafkaSettings, tunable: &[(&str, &str)]) -> ClientConfig {
    let mut base = ClientConfig::new();
    for (key, value) in tunable {
        base.set(*key, *value);
    }
    configured(base, kafka)
}

/// The bootstrap servers and the configured librdkafka settings on top of `config`.
fn configured(mut config: ClientConfig, kafka: &KafkaSettings) -> ClientConfig {
    config.set("bootstrap.servers", &kafka.bootstrap_servers);
    for (key, value) in &kafka.client {
        let shown = shown_setting(key, value);
        tracing::debug!(%key, value = shown, "kafka client setting");
        config.set(key, value);
    }
    config
}

/// Headers of a dead-letter record: why it could not be read, and where it came from. The
/// record keeps its original key and value, so it can be inspected and re-sent as it was.
pub fn dead_letter_headers(
    stage: &str,
    reason: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> OwnedHeaders {
    let (partition, offset) = (partition.to_string(), offset.to_string());
    [
        ("reviewflow.dlq.reason", reason),
        ("reviewflow.dlq.stage", stage),
        ("reviewflow.dlq.topic", topic),
        ("reviewflow.dlq.partition", partition.as_str()),
        ("reviewflow.dlq.offset", offset.as_str()),
    ]
    .into_iter()
    .fold(OwnedHeaders::new(), |headers, (key, value)| {
        headers.insert(Header {
            key,
            value: Some(value),
        })
    })
}

/// The next batch: the first record (waiting up to half a second for it, so a shutdown is
/// noticed), then whatever else has already arrived, up to `max_records`. So a batch is what
/// came in while the previous one was processed: small and quick when the load is light, full
/// under a backlog, with no fixed window added to every record's latency. A `max_wait`
/// above 0 lingers that long for more once the first has arrived. Blocking.
///
/// Each record comes with what `tag` said of it the moment it was polled: a rebalance runs
/// inside `poll`, so only then can a record be told apart from one read under another
/// assignment of its partition.
pub fn poll_batch<C: ConsumerContext + 'static, T>(
    consumer: &BaseConsumer<C>,
    limits: &BatchLimits,
    stage: &str,
    tag: impl Fn(&C, i32) -> T,
) -> Vec<(T, OwnedMessage)> {
    let mut batch = Vec::new();
    let mut wait = Duration::from_millis(500);
    let mut deadline = None;
    while batch.len() < limits.max_records {
        match consumer.poll(wait) {
            None => break,
            Some(Ok(m)) => batch.push((tag(consumer.context(), m.partition()), m.detach())),
            // librdkafka retries broker failures itself; they are reported here for
            // information and the consumer carries on.
            Some(Err(e)) => report_consumer_error(stage, &e),
        }
        let until = *deadline.get_or_insert_with(|| Instant::now() + limits.max_wait);
        wait = until.saturating_duration_since(Instant::now());
    }
    batch
}

/// Logs a consumer error, but the same one at most every ten seconds per thread: while a
/// broker is down librdkafka reports it on every poll.
pub(crate) fn report_consumer_error(stage: &str, error: &rdkafka::error::KafkaError) {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(String, Instant)>> = const { std::cell::RefCell::new(None) };
    }
    let text = error.to_string();
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        let repeated = last
            .as_ref()
            .is_some_and(|(t, at)| *t == text && at.elapsed() < Duration::from_secs(10));
        if !repeated {
            tracing::warn!(stage, error = %text, "consumer error (the same one is logged at most every 10 s)");
            *last = Some((text, Instant::now()));
        }
    });
}

/// (topic, partition, lag) of each assigned partition the consumer has fetched from: the lag
/// a stage reports. One watermark request per partition, so call it every few seconds, not
/// per record.
pub fn partition_lags<C: ConsumerContext + 'static>(
    consumer: &BaseConsumer<C>,
) -> Vec<(String, i32, i64)> {
    let Ok(positions) = consumer.position() else {
        return Vec::new();
    };
    positions
        .elements()
        .iter()
        .filter_map(|p| {
            // Before the first fetch of a partition its position is a negative sentinel.
            let position = p.offset().to_raw().filter(|o| *o >= 0)?;
            let (_, high) = consumer
                .fetch_watermarks(p.topic(), p.partition(), Duration::from_secs(1))
                .ok()?;
            Some((
                p.topic().to_string(),
                p.partition(),
                (high - position).max(0),
            ))
        })
        .collect()
}

/// How many partitions a topic has, asked through a consumer made for the question (for a
/// caller that holds no consumer of its own). Blocking.
pub fn topic_partitions(kafka: &KafkaSettings, topic: &str) -> Result<i32> {
    let probe: BaseConsumer = client_config(kafka).create()?;
    settled_partition_count(&probe, topic)
}

/// [`partition_count`], where "no partitions" is asked again for a few seconds before it is
/// the answer: in a cluster the broker asked may not know yet a topic created a moment ago
/// through another.
fn settled_partition_count(consumer: &impl Consumer, topic: &str) -> Result<i32> {
    let started = Instant::now();
    loop {
        match partition_count(consumer, topic) {
            Err(Error::Config(_)) if started.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// How many partitions a topic has, from the broker's metadata.
pub fn partition_count(consumer: &impl Consumer, topic: &str) -> Result<i32> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let count = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if count == 0 {
        return Err(Error::Config(format!(
            "topic {topic} has no partitions (does it exist?)"
        )));
    }
    Ok(count as i32)
}

/// Where a consumer assigned to `topic/partition` from offset `low` stands. With transactions
/// the last offsets may be control records, never delivered, so a reader is at the end when
/// this reaches the high watermark, not when the last record arrives. Before the first fetch
/// the position is "invalid" (negative): that counts as `low`, not at the end yet.
pub fn read_position<C: ConsumerContext + 'static>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    low: i64,
) -> Result<i64> {
    Ok(consumer
        .position()?
        .find_partition(topic, partition)
        .and_then(|p| p.offset().to_raw())
        .unwrap_or(low)
        .max(low))
}

/// Every committed record of `topic`, partition by partition, up to the high watermarks as
/// they were when it started. Blocking: call it from `spawn_blocking`.
///
/// With transactions the last offsets may be control records, which are never delivered, so
/// a partition is done when the read position reaches the high watermark, not when the last
/// record arrives.
pub fn read_committed_to_end(
    kafka: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<OwnedMessage>> {
    read_committed_tail(kafka, topic, None, timeout)
}

/// As [`read_committed_to_end`], from at most `last` offsets before each partition's end
/// (None: from its start). Blocking.
pub fn read_committed_tail(
    kafka: &KafkaSettings,
    topic: &str,
    last: Option<i64>,
    timeout: Duration,
) -> Result<Vec<OwnedMessage>> {
    let consumer: BaseConsumer = client_config(kafka)
        .set("group.id", "reviewflow-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    for partition in 0..settled_partition_count(&consumer, topic)? {
        let (low, high) = loop {
            match consumer.fetch_watermarks(topic, partition, Duration::from_secs(30)) {
                Ok(watermarks) => break watermarks,
                // A partition created a moment ago, or whose leader's broker just died, has
                // no leader to answer for a moment.
                Err(e) if leaderless(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let low = last.map_or(low, |n| low.max(high - n));
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
        consumer.assign(&assignment)?;
        // librdkafka reports a broker it lost (one of a cluster that died, say) and carries on
        // with the others: such an error is kept for the message, should the deadline pass.
        let mut last_error = None;
        loop {
            let position = read_position(&consumer, topic, partition, low)?;
            if position >= high {
                break;
            }
            if Instant::now() > deadline {
                let error = last_error.map_or(String::new(), |e| format!("; last error: {e}"));
                return Err(Error::Config(format!(
                    "reading {topic}/{partition} to offset {high} took over {timeout:?} (stuck at {position}{error})"
                )));
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(record)) => out.push(record.detach()),
                Some(Err(e)) => last_error = Some(e),
                None => {}
            }
        }
    }
    Ok(out)
}

/// The error of a partition that has no leader at the moment, which a cluster elects soon.
fn leaderless(error: &rdkafka::error::KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::UnknownTopicOrPartition
        )
    )
}

/// Before a part starts on a broker reached over SASL or TLS: the credentials and
/// certificates must work. librdkafka retries a refused login for ever, which would look
/// like a hang; this turns it into an error that says what to check. A broker that does
/// not answer at all is left to the stages, which wait for it.
pub async fn check_access(kafka: &KafkaSettings) -> Result<()> {
    let secured = kafka
        .setting("security.protocol")
        .is_some_and(|p| !p.eq_ignore_ascii_case("plaintext"));
    if !secured {
        return Ok(());
    }
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer<AccessWatch> =
            client_config(&kafka).create_with_context(AccessWatch::default())?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if consumer
                .fetch_metadata(None, Duration::from_secs(1))
                .is_ok()
            {
                return Ok(());
            }
            // librdkafka hands its errors to the context from the poll loop only.
            let _ = consumer.poll(Duration::from_millis(100));
            let refused = consumer
                .context()
                .refused
                .lock()
                .ok()
                .and_then(|r| r.clone());
            if let Some(reason) = refused {
                return Err(Error::Config(format!(
                    "Kafka at {} refused the connection: {reason}. Check security.protocol, \
                     sasl.mechanism, sasl.username and sasl.password (or the ssl.* settings)",
                    kafka.bootstrap_servers
                )));
            }
        }
        tracing::warn!(
            servers = %kafka.bootstrap_servers,
            "Kafka does not answer yet; starting anyway (the stages wait for it)"
        );
        Ok(())
    })
    .await?
}

/// Keeps the first authentication or TLS failure librdkafka reports.
#[derive(Default)]
struct AccessWatch {
    refused: std::sync::Mutex<Option<String>>,
}

impl rdkafka::ClientContext for AccessWatch {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let refused = matches!(
            code,
            Some(
                RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::SSL
            )
        ) || reason.contains("SASL authentication")
            || reason.contains("SSL handshake");
        if refused {
            if let Ok(mut slot) = self.refused.lock() {
                slot.get_or_insert_with(|| reason.to_owned());
            }
        } else {
            tracing::debug!(error = %error, reason, "kafka client error while checking access");
        }
    }
}

impl ConsumerContext for AccessWatch {}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(settings: &[(&str, &str)]) -> KafkaSettings {
        KafkaSettings {
            bootstrap_servers: "b:9092".into(),
            client: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_users_producer_tuning_wins_over_the_stages_defaults() {
        let tunable = [("linger.ms", "5"), ("compression.type", "lz4")];
        let tuned = producer_config(&with(&[("linger.ms", "0")]), &tunable);
        assert_eq!(tuned.get("linger.ms"), Some("0"));
        assert_eq!(tuned.get("compression.type"), Some("lz4"));
        assert_eq!(tuned.get("bootstrap.servers"), Some("b:9092"));
    }

    #[test]
    fn both_group_protocols_and_any_assignor_are_followed_and_a_static_member_is_refused() {
        for ok in [
            vec![],
            vec![("partition.assignment.strategy", "cooperative-sticky")],
            vec![("group.protocol", "classic")],
            vec![("group.protocol", "consumer")],
        ] {
            assert!(check_group_settings(&with(&ok)).is_ok(), "{ok:?}");
        }
        let refused = check_group_settings(&with(&[("group.instance.id", "one")]));
        assert!(
            matches!(&refused, Err(Error::Config(m)) if m.contains("Remove group.instance.id")),
            "{refused:?}"
        );
        let unknown = check_group_settings(&with(&[("group.protocol", "eager")]));
        assert!(
            matches!(&unknown, Err(Error::Config(m)) if m.contains("group.protocol=consumer")),
            "{unknown:?}"
        );
    }
}
