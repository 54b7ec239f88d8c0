//! The topics the pipeline creates and relies on: created when missing, waited for until
//! their partitions show, and refused, naming the command that fixes them, when an existing
//! one lacks a setting its records need.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

use super::client_config;
use crate::config::KafkaSettings;
use crate::error::{Error, Result};

/// The replication factor that asks the brokers for theirs (`default.replication.factor`,
/// KIP-464): topics then get as many copies as the cluster is set up to keep, and
/// `min.insync.replicas` is the brokers' too.
pub const CLUSTER_REPLICATION: i32 = -1;

/// Creates the topic when it does not exist, with `settings`, and returns its partition count
/// once the broker's metadata shows its partitions: a topic just created, by this stage or by
/// another starting beside it, may not show them for a moment, and a stage that read "no
/// partitions" then stopped. An existing topic must already have `settings` (each is what the
/// topic's records need to survive, e.g. retention.ms=-1 for a history): one that differs is
/// refused with `Error::Config`, naming the command that fixes it. Its partition count is the
/// caller's to judge.
pub async fn ensure_topic(
    kafka: &KafkaSettings,
    name: &str,
    partitions: i32,
    replication_factor: i32,
    settings: &[(&str, &str)],
) -> Result<i32> {
    let admin: AdminClient<DefaultClientContext> = client_config(kafka).create()?;
    let mut topic = NewTopic::new(
        name,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    for (k, v) in settings {
        topic = topic.set(k, v);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&topic], &options).await? {
        match result {
            Ok(_) => tracing::info!(topic = name, partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(Error::Config(format!("cannot create topic {t}: {code}")));
            }
        }
    }
    let count = wait_for_partitions(kafka, name).await?;
    check_topic_settings(kafka, &admin, name, settings).await?;
    Ok(count)
}

/// How long a topic that exists may take to show up in the metadata before that is an error.
const TOPIC_APPEARS_WITHIN: Duration = Duration::from_secs(120);

/// The topic's partition count, as soon as the broker's metadata lists its partitions.
async fn wait_for_partitions(kafka: &KafkaSettings, name: &str) -> Result<i32> {
    let (kafka, name) = (kafka.clone(), name.to_string());
    tokio::task::spawn_blocking(move || {
        let probe: BaseConsumer = client_config(&kafka).create()?;
        let started = Instant::now();
        let mut logged = None::<Instant>;
        loop {
            let metadata = probe.fetch_metadata(Some(&name), Duration::from_secs(10));
            let count = metadata.as_ref().ok().map_or(0, |m| {
                m.topics()
                    .first()
                    .filter(|t| t.error().is_none())
                    .map_or(0, |t| t.partitions().len())
            });
            if count > 0 {
                if logged.is_some() {
                    tracing::info!(topic = %name, partitions = count, "topic is ready");
                }
                return Ok(count as i32);
            }
            if started.elapsed() > TOPIC_APPEARS_WITHIN {
                return Err(Error::Config(format!(
                    "topic {name} exists but the brokers' metadata has shown no partitions of it                      for {TOPIC_APPEARS_WITHIN:?}: check the brokers (their logs, and that they can                      reach the controller)"
                )));
            }
            if logged.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                tracing::info!(topic = %name, "waiting for the topic's partitions to appear in the brokers' metadata");
                logged = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await?
}

/// Refuses a topic whose configuration differs from `settings` (a pre-existing topic,
/// created by hand or by another tool).
async fn check_topic_settings(
    kafka: &KafkaSettings,
    admin: &AdminClient<DefaultClientContext>,
    name: &str,
    settings: &[(&str, &str)],
) -> Result<()> {
    if settings.is_empty() {
        return Ok(());
    }
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    // In a cluster the broker asked may not have applied a topic created a moment ago: it
    // answers that it does not know it, or without its settings. Asked again until it does.
    let started = Instant::now();
    let entries: std::collections::HashMap<String, Option<String>> = loop {
        let described = admin
            .describe_configs([&ResourceSpecifier::Topic(name)], &options)
            .await?;
        let lagging = started.elapsed() < Duration::from_secs(30);
        match described.into_iter().next() {
            Some(Ok(config)) => {
                let entries: std::collections::HashMap<_, _> = config
                    .entries
                    .iter()
                    .map(|e| (e.name.clone(), e.value.clone()))
                    .collect();
                let shown = settings
                    .iter()
                    .all(|(key, _)| entries.get(*key).is_some_and(Option::is_some));
                if shown || !lagging {
                    break entries;
                }
            }
            Some(Err(RDKafkaErrorCode::UnknownTopicOrPartition)) if lagging => {}
            Some(Err(
                code @ (RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed),
            )) => {
                tracing::warn!(topic = name, error = %code, "cannot read the topic's configuration to check it: grant this client DESCRIBE_CONFIGS on it");
                return Ok(());
            }
            Some(Err(code)) => {
                return Err(Error::Config(format!(
                    "cannot read the configuration of topic {name}: {code}"
                )))
            }
            None => return Ok(()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (key, wanted) in settings {
        let actual = entries.get(*key).and_then(|v| v.as_deref());
        if actual.is_some_and(|a| same_setting(a, wanted)) {
            continue;
        }
        let actual = actual.unwrap_or("(unset)");
        return Err(Error::Config(format!(
            "topic {name} has {key}={actual}, but it needs {key}={wanted}: {}. Fix it with \
             kafka-configs.sh --bootstrap-server {} --alter --entity-type topics --entity-name {name} \
             --add-config {key}={wanted}, then start again",
            why_setting(key, wanted),
            kafka.bootstrap_servers
        )));
    }
    Ok(())
}

/// Values compared as Kafka reads them: a list (cleanup.policy) in any order and spacing.
fn same_setting(actual: &str, wanted: &str) -> bool {
    let items = |v: &str| {
        let mut items: Vec<String> = v
            .split(',')
            .map(|i| i.trim().to_ascii_lowercase())
            .collect();
        items.sort();
        items
    };
    items(actual) == items(wanted)
}

/// What a setting the pipeline asks of a topic protects.
fn why_setting(key: &str, wanted: &str) -> &'static str {
    match (key, wanted) {
        ("cleanup.policy", "delete") => {
            "every record of this history must stay, and compaction would keep only the latest \
             per course (replay, and a consumer that starts late, need them all)"
        }
        ("cleanup.policy", "compact") => {
            "it holds current state, the latest record per key, which must never expire"
        }
        ("retention.ms" | "retention.bytes", "-1") => {
            "this history is kept forever (replay rebuilds the derived tables from it), and a \
             finite retention deletes records no stage may have read yet"
        }
        _ => "the pipeline relies on it",
    }
}

/// The settings of a topic of the pipeline's history: kept forever, never compacted.
pub const HISTORY_SETTINGS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("retention.ms", "-1"),
    ("retention.bytes", "-1"),
];

/// A topic of the pipeline's history (changes, the valid changelog, verdicts): kept forever,
/// because `replay` rebuilds derived state from it.
pub async fn ensure_history_topic(
    kafka: &KafkaSettings,
    name: &str,
    partitions: i32,
    replication_factor: i32,
) -> Result<i32> {
    ensure_topic(
        kafka,
        name,
        partitions,
        replication_factor,
        HISTORY_SETTINGS,
    )
    .await
}
