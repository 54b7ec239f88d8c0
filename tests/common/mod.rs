//! Shared by the integration tests: one local stack for all of them (started on first use
//! when DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS are not set), and a private database per
//! test so tests that check global invariants do not see each other's rows.
#![allow(dead_code)]

pub mod browser;
pub mod cluster;
pub mod hostile;
pub mod moves;
pub mod pipeline;
pub mod watch;

use reviewflow::config::{Connections, DbRole, LocalStack, Settings};
use reviewflow::stack::StackConfig;
use tokio::sync::OnceCell;

static SETTINGS: OnceCell<Settings> = OnceCell::const_new();

/// Connection settings of the shared stack, as its owner. The local stack is started only
/// when DATABASE_URL or KAFKA_BOOTSTRAP_SERVERS is not set.
pub async fn settings() -> Settings {
    SETTINGS
        .get_or_init(|| async {
            let connections = Connections {
                database_url: std::env::var("DATABASE_URL").ok(),
                kafka_bootstrap_servers: std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok(),
                schema_registry_url: std::env::var("SCHEMA_REGISTRY_URL").ok(),
                ..Connections::default()
            };
            let local = if connections.needs_local_stack() {
                let up = reviewflow::stack::up(&stack_config())
                    .await
                    .expect("the local stack starts (see reviewflow stack up)");
                Some(LocalStack {
                    database_url: up.database_url,
                    kafka_bootstrap_servers: up.kafka_bootstrap_servers,
                })
            } else {
                None
            };
            let settings = connections
                .resolve(local.as_ref())
                .and_then(|d| d.settings(DbRole::Owner))
                .expect("the shared stack's connections");
            drop_stale_test_slots(&settings.database_url).await;
            settings
        })
        .await
        .clone()
}

/// Inactive slots of earlier runs' test databases hold WAL and use up max_replication_slots.
/// A slot is also inactive while cdc takes its snapshot, and test binaries of other checkouts
/// may run at the same time: only a slot whose database nobody is connected to is stale.
async fn drop_stale_test_slots(database_url: &str) {
    let db = reviewflow::db::connect(database_url)
        .await
        .expect("connect");
    db.batch_execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots s
         WHERE NOT active AND database LIKE 'rf\\_test\\_%'
           AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = s.database)",
    )
    .await
    .expect("drop stale test slots");
}

pub fn stack_config() -> StackConfig {
    use clap::Parser;
    #[derive(Parser)]
    struct Only {
        #[command(flatten)]
        stack: StackConfig,
    }
    Only::parse_from(["test"]).stack
}

/// A freshly created, migrated database named `rf_test_<name>` on the shared cluster.
pub async fn fresh_database(name: &str) -> String {
    let url = settings().await.database_url;
    let (base, _) = url
        .rsplit_once('/')
        .expect("a database url ends in /dbname");
    let admin = reviewflow::db::connect(&format!("{base}/postgres"))
        .await
        .expect("connect to postgres");
    let db = format!("rf_test_{name}");
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .expect("drop");
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .expect("create");
    let url = format!("{base}/{db}");
    reviewflow::db::migrate(&url).await.expect("migrate");
    url
}

/// A number unlikely to repeat across runs, for ids and topic names.
pub fn unique() -> i64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    (nanos % 1_000_000_000_000) as i64 + i64::from(std::process::id())
}

/// Every committed record of `topic`, up to the high watermarks.
pub async fn consume_all(
    kafka: &reviewflow::config::KafkaSettings,
    topic: &str,
) -> Vec<rdkafka::message::OwnedMessage> {
    let (kafka, name) = (kafka.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        reviewflow::kafka::read_committed_to_end(&kafka, &name, std::time::Duration::from_secs(60))
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("reading {topic}: {e}"))
}

/// The ids of the Kafka nodes the cluster has.
pub async fn broker_ids(kafka: &reviewflow::config::KafkaSettings) -> Vec<i32> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = reviewflow::kafka::client_config(&kafka).create().unwrap();
        let metadata = consumer
            .fetch_metadata(None, std::time::Duration::from_secs(30))
            .unwrap();
        metadata.brokers().iter().map(|b| b.id()).collect()
    })
    .await
    .unwrap()
}

/// Every record of a changes topic but the snapshots' marks: the records of rows.
pub async fn consume_rows(
    settings: &reviewflow::config::Settings,
    topic: &str,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::Message;
    let registry = reviewflow::registry::Registry::connect(settings)
        .await
        .unwrap();
    let mut out = Vec::new();
    for m in consume_all(&settings.kafka, topic).await {
        let (id, body) = reviewflow::avro::wire::unframe(m.payload().unwrap()).unwrap();
        let schema = registry.schema(id).await.unwrap();
        if !reviewflow::avro::decode_change(&schema, body)
            .unwrap()
            .is_snapshot_mark()
        {
            out.push(m);
        }
    }
    out
}

/// Waits until a cdc streams from `slot` (the slot is active): one just started has then
/// set up its shutdown handling and its session, so a SIGTERM stops it cleanly.
pub async fn wait_until_slot_active(database_url: &str, slot: &str) {
    let db = reviewflow::db::connect(database_url).await.unwrap();
    eventually(&format!("slot {slot} is active"), 120, || async {
        db.query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active",
            &[&slot],
        )
        .await
        .unwrap()
        .is_some()
    })
    .await;
}

/// Waits until the slot has confirmed everything written so far (the reader caught up).
pub async fn wait_until_slot_confirms_all(database_url: &str, slot: &str) {
    let db = reviewflow::db::connect(database_url).await.unwrap();
    let target: tokio_postgres::types::PgLsn = db
        .query_one("SELECT pg_current_wal_insert_lsn()", &[])
        .await
        .unwrap()
        .get(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let row = db
            .query_opt(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap();
        if let Some(Some::<tokio_postgres::types::PgLsn>(confirmed)) = row.map(|r| r.get(0)) {
            if confirmed >= target {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slot {slot} did not confirm {target} within two minutes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub async fn wait_until_slot_exists(database_url: &str, slot: &str) {
    let db = reviewflow::db::connect(database_url).await.unwrap();
    for _ in 0..600 {
        let found = db
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap();
        if found.is_some() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("slot {slot} was not created within a minute");
}

/// A child process that is killed when the test lets go of it, even by panicking, so a
/// failed test leaves no stage running against the next one.
pub struct Running(pub Option<std::process::Child>);

impl Running {
    pub fn take(mut self) -> std::process::Child {
        self.0.take().expect("still running")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub async fn topic_exists(kafka: &reviewflow::config::KafkaSettings, topic: &str) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let kafka = kafka.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = reviewflow::kafka::client_config(&kafka).create().unwrap();
        consumer
            .fetch_metadata(Some(&topic), std::time::Duration::from_secs(5))
            .is_ok_and(|m| {
                m.topics()
                    .first()
                    .is_some_and(|t| t.error().is_none() && !t.partitions().is_empty())
            })
    })
    .await
    .unwrap()
}

/// Waits until the HTTP server at `base` (e.g. `http://127.0.0.1:8080`) answers /healthz.
pub async fn wait_healthy(base: &str, secs: u64) {
    let client = reqwest::Client::new();
    eventually(&format!("{base} answers /healthz"), secs, || async {
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
}

/// No stage of the process serving `base` had a session fail, nor sent a record to the dead
/// letters (its /metrics): what a value must never cause.
pub async fn assert_no_session_failed(base: &str) {
    let metrics = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            (l.starts_with("reviewflow_session_failures_total")
                || l.starts_with("reviewflow_dead_letters_total"))
                && !l.trim_end().ends_with(" 0")
        })
        .collect();
    assert!(
        failures.is_empty(),
        "a stage's session failed or a record became a dead letter: {failures:?}"
    );
}

/// Polls `check` until it holds, failing the test with `what` after `secs` seconds.
pub async fn eventually<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "not within {secs} s: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// A small deterministic generator (xorshift), so a failing workload can be repeated from
/// its seed.
pub struct Rng(pub u64);

impl Rng {
    /// The next number below `n`.
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One random insert, edit or delete of reviews 1..400 across courses 1..20 (some edits
/// make a review fraud, some move it between courses or out of the 90-day window).
pub fn statement(rng: &mut Rng) -> String {
    let id = 1 + rng.next(400);
    let course = 1 + rng.next(20);
    let rating = (1 + rng.next(10)) as f64 / 2.0;
    let days = [0, 3, 60, 89, 90, 120][rng.next(6) as usize];
    match rng.next(8) {
        0..=3 => format!(
            "INSERT INTO reviews (id, course_id, user_id, rating, content, created_at)
             VALUES ({id}, {course}, {id}, {rating}, 'review {id}', now() - interval '{days} days')
             ON CONFLICT (id) DO UPDATE SET rating = EXCLUDED.rating"
        ),
        4 => format!("UPDATE reviews SET rating = {rating}, course_id = {course} WHERE id = {id}"),
        5 => format!("UPDATE reviews SET content = 'see http://spam.example.com/{id}' WHERE id = {id}"),
        6 => format!("UPDATE reviews SET content = 'fine {id}', created_at = now() - interval '{days} days' WHERE id = {id}"),
        _ => format!("DELETE FROM reviews WHERE id = {id}"),
    }
}

/// Writes `transactions` transactions of one to three random statements.
pub async fn write_random(db: &tokio_postgres::Client, rng: &mut Rng, transactions: usize) {
    for _ in 0..transactions {
        let n = 1 + rng.next(3);
        let sql: Vec<String> = (0..n).map(|_| statement(rng)).collect();
        db.batch_execute(&format!("BEGIN; {}; COMMIT", sql.join("; ")))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The partition count of `topic`; why not, when the cluster did not answer (a node down).
pub async fn partition_count(
    kafka: &reviewflow::config::KafkaSettings,
    topic: &str,
) -> Result<usize, String> {
    let (kafka, topic) = (kafka.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || reviewflow::kafka::topic_partitions(&kafka, &topic))
        .await
        .unwrap()
        .map(|count| count as usize)
        .map_err(|e| e.to_string())
}

/// `kafka-topics --alter --partitions count` on each of `topics`; why not, when the cluster
/// refused (a node down that the new replicas need).
pub async fn add_partitions(
    kafka: &reviewflow::config::KafkaSettings,
    topics: &[String],
    count: usize,
) -> Result<(), String> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        reviewflow::kafka::client_config(kafka).create().unwrap();
    let new: Vec<NewPartitions> = topics
        .iter()
        .map(|t| NewPartitions::new(t, count))
        .collect();
    let done = admin
        .create_partitions(&new, &AdminOptions::new())
        .await
        .map_err(|e| e.to_string())?;
    // A topic that already has the count (a retry after a partial success) is fine.
    match done.iter().find(|r| {
        r.as_ref()
            .is_err_and(|(_, e)| *e != rdkafka::types::RDKafkaErrorCode::InvalidPartitions)
    }) {
        Some(refused) => Err(format!("{refused:?}")),
        None => Ok(()),
    }
}
