//! A pipeline under test: a private database, private topics, and the stages as their own
//! processes (`reviewflow cdc|fraud|verdicts|stats`), so they can be killed like real ones.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::Message;
use reviewflow::avro::{decode_change, wire};
use reviewflow::config::Settings;
use reviewflow::contract::change::ChangeEvent;
use reviewflow::contract::lsn::SourcePosition;
use reviewflow::registry::Registry;

use super::Running;

pub struct Pipeline {
    pub name: String,
    pub url: String,
    /// The changes topic; the others are named after it.
    pub topic: String,
    pub settings: Settings,
    /// Where the stages' stderr goes, when a test reads it.
    pub log: Option<PathBuf>,
}

impl Pipeline {
    pub async fn new(name: &str) -> Pipeline {
        let mut settings = super::settings().await;
        let url = super::fresh_database(name).await;
        settings.database_url = url.clone();
        let topic = format!("test.{name}.{}.changes", super::unique());
        Pipeline {
            name: name.into(),
            url,
            topic,
            settings,
            log: None,
        }
    }

    pub fn slot(&self) -> String {
        format!("rf_{}", self.name)
    }

    /// The topic of another stage's output: `valid`, `fraud`, `verdicts`, `dead-letters`.
    pub fn output(&self, which: &str) -> String {
        format!("{}.{which}", self.topic.trim_end_matches(".changes"))
    }

    pub fn spawn_cdc(&self, failpoint: Option<&str>) -> Running {
        self.spawn("cdc", failpoint, &[])
    }

    /// `reviewflow <stage>` on this pipeline's database and topics, not started yet: the
    /// environment every stage of the pipeline runs with.
    pub fn command(&self, stage: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_reviewflow"));
        cmd.arg(stage)
            .env("DATABASE_URL", &self.url)
            .env(
                "KAFKA_BOOTSTRAP_SERVERS",
                &self.settings.kafka.bootstrap_servers,
            )
            .env("REVIEWFLOW_CHANGES_TOPIC", &self.topic)
            .env("REVIEWFLOW_VALID_TOPIC", self.output("valid"))
            .env("REVIEWFLOW_FRAUD_TOPIC", self.output("fraud"))
            .env("REVIEWFLOW_VERDICTS_TOPIC", self.output("verdicts"))
            .env("REVIEWFLOW_DEAD_LETTER_TOPIC", self.output("dead-letters"))
            .env("REVIEWFLOW_FRAUD_GROUP", format!("{}.fraud", self.topic))
            .env(
                "REVIEWFLOW_VERDICTS_GROUP",
                format!("{}.verdicts", self.topic),
            )
            .env("REVIEWFLOW_STATS_GROUP", format!("{}.stats", self.topic))
            .env("REVIEWFLOW_SLOT", self.slot())
            .env("REVIEWFLOW_STATUS_INTERVAL", "1")
            .env("REVIEWFLOW_BATCH_MS", "20")
            .env("RUST_LOG", "reviewflow=info")
            .env_remove("SCHEMA_REGISTRY_URL")
            .env_remove("REVIEWFLOW_FAILPOINT")
            .env_remove("REVIEWFLOW_INSTANCE");
        cmd
    }

    /// `reviewflow <stage>` on this pipeline's database and topics.
    pub fn spawn(&self, stage: &str, failpoint: Option<&str>, env: &[(&str, &str)]) -> Running {
        let mut cmd = self.command(stage);
        cmd.stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(fp) = failpoint {
            cmd.env("REVIEWFLOW_FAILPOINT", fp);
        }
        if let Some(log) = &self.log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap();
            cmd.stderr(file);
        }
        Running(Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("reviewflow {stage} starts: {e}")),
        ))
    }

    /// Runs cdc with `env` until it exits by itself (within 90 s) and returns its stderr. It
    /// must fail, and not by a session retried: what it refused needs a person.
    pub async fn cdc_refuses(&self, env: &[(&str, &str)]) -> String {
        let log = std::env::temp_dir().join(format!("rf-refused-{}.log", super::unique()));
        let mut cmd = self.command("cdc");
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = Running(Some(cmd.spawn().unwrap())).take();
        let Some(status) = exit_within(&mut child, Duration::from_secs(90)).await else {
            panic!(
                "cdc kept running instead of refusing: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let logged = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_file(&log);
        assert!(!status.success(), "cdc refuses with a failure: {logged}");
        assert!(
            !logged.contains("session failed; starting a new one"),
            "a refusal is not retried: {logged}"
        );
        logged
    }

    /// Until the reader's snapshot is committed (its marker is on the markers topic).
    pub async fn wait_for_snapshot(&self) {
        let markers = reviewflow::source::snapshot::marker_topic(&self.topic);
        for _ in 0..600 {
            if super::topic_exists(&self.settings.kafka, &markers).await
                && !super::consume_all(&self.settings.kafka, &markers)
                    .await
                    .is_empty()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no snapshot within a minute");
    }

    /// Until every stage has processed everything written so far: the slot confirmed the
    /// WAL, the fraud group committed past the last change, and each sink stored offsets past
    /// the last record of its topic. After that the invariant must hold exactly.
    ///
    /// It fails when no stage moved for 180 s, not after a fixed time: a long chaos run
    /// leaves a backlog that small batches on a loaded machine drain for minutes, while a
    /// stuck stage still shows within 3 minutes. Half an hour bounds it all.
    pub async fn wait_until_caught_up(&self) {
        super::wait_until_slot_confirms_all(&self.url, &self.slot()).await;
        // A new slot confirms its consistent point at once, before its snapshot is in Kafka;
        // with no topic yet, every offset check below would pass for want of partitions.
        self.wait_for_snapshot().await;
        let fraud_group = format!("{}.fraud", self.topic);
        let started = std::time::Instant::now();
        let mut moved = started;
        let mut position = None;
        let mut reported = 0;
        loop {
            let changes = next_offsets(&self.settings, &self.topic).await;
            let fraud = committed(&self.settings, &fraud_group, &self.topic, &changes).await;
            let mut now_at: i64 = fraud.values().sum();
            for (consumer, topic) in [("verdicts", "verdicts"), ("stats", "valid")] {
                now_at += self
                    .sink_offsets(consumer, &self.output(topic))
                    .await
                    .values()
                    .sum::<i64>();
            }
            if position.is_none_or(|p| now_at > p) {
                position = Some(now_at);
                moved = std::time::Instant::now();
            }
            let mut behind = Vec::new();
            if fraud != changes {
                behind.push(format!("fraud at {fraud:?} of {changes:?}"));
            } else {
                for (consumer, topic) in [
                    ("verdicts", self.output("verdicts")),
                    ("stats", self.output("valid")),
                ] {
                    // A fraud instance killed for good leaves its transaction open until the
                    // broker times it out: read_committed readers see nothing past its first
                    // record, so the last record they can see is not yet the end (fraud's
                    // committed offsets already passed what its successor re-produced).
                    let open = open_transactions(&self.settings, &topic).await;
                    if !open.is_empty() {
                        behind.push(format!("{topic}: open transactions in {open:?}"));
                        continue;
                    }
                    let end = next_offsets(&self.settings, &topic).await;
                    let stored = self.sink_offsets(consumer, &topic).await;
                    if end.iter().any(|(p, o)| stored.get(p) != Some(o)) {
                        behind.push(format!("{consumer} at {stored:?} of {end:?}"));
                    }
                }
            }
            if behind.is_empty() {
                return;
            }
            if started.elapsed().as_secs() / 30 > reported {
                reported = started.elapsed().as_secs() / 30;
                println!("catching up after {:?}: {behind:?}", started.elapsed());
            }
            assert!(
                moved.elapsed() < Duration::from_secs(180),
                "no stage of the pipeline moved for 180 s: {behind:?}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(1800),
                "the pipeline did not catch up within 30 min: {behind:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn sink_offsets(&self, consumer: &str, topic: &str) -> BTreeMap<i32, i64> {
        reviewflow::sink::offsets::stored(&self.db().await)
            .await
            .unwrap()
            .into_iter()
            .filter(|s| s.consumer == consumer && s.topic == topic)
            .map(|s| (s.partition, s.next_offset))
            .collect()
    }

    /// The slot's completed snapshot marker: its partition epochs and a pending switch.
    pub async fn snapshot_marker(&self) -> reviewflow::source::snapshot::SnapshotMarker {
        use reviewflow::source::snapshot::{find_marker, SnapshotHistory};
        let registry = Registry::connect(&self.settings).await.unwrap();
        match find_marker(&self.settings.kafka, &self.topic, &self.slot(), &registry)
            .await
            .unwrap()
        {
            SnapshotHistory::Completed(m) => m,
            other => panic!("the slot's snapshot completed: {other:?}"),
        }
    }

    /// The rows of `reviews` as the pipeline's stages see them, in id order.
    pub async fn reviews(&self) -> Vec<reviewflow::contract::image::ReviewRow> {
        self.db()
            .await
            .query(
                "SELECT id, course_id, user_id, rating::float8, title, content, created_at, updated_at
                 FROM reviews ORDER BY id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| reviewflow::contract::image::ReviewRow {
                id: r.get(0),
                course_id: r.get(1),
                user_id: r.get(2),
                rating: reviewflow::contract::review::Rating::from_stars(r.get(3)).unwrap(),
                title: r.get(4),
                content: r.get(5),
                created_at: r.get(6),
                updated_at: r.get(7),
            })
            .collect()
    }

    /// Partitions added to the changes topic and the valid changelog, up to `count` each,
    /// as an operator would (`kafka-topics --alter --partitions`).
    pub async fn add_partitions(&self, count: usize) -> Result<(), String> {
        let topics = [self.topic.clone(), self.output("valid")];
        super::add_partitions(&self.settings.kafka, &topics, count).await
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        reviewflow::db::connect(&self.url).await.unwrap()
    }

    /// Every change event on the changes topic, in partition order, without the snapshots'
    /// marks.
    pub async fn events(&self) -> Vec<(i32, Option<i64>, ChangeEvent)> {
        self.events_of(&self.topic).await
    }

    /// Every change event on `topic` (changes or valid), without the snapshots' marks (a
    /// TRUNCATE and an end on every partition, around each snapshot): partition, key, event.
    pub async fn events_of(&self, topic: &str) -> Vec<(i32, Option<i64>, ChangeEvent)> {
        let mut events = self.marked_events_of(topic).await;
        events.retain(|(_, _, e)| !e.is_snapshot_mark());
        events
    }

    /// Every record of the changes topic, the snapshots' marks included.
    pub async fn marked_events(&self) -> Vec<(i32, Option<i64>, ChangeEvent)> {
        self.marked_events_of(&self.topic).await
    }

    /// Every record of `topic` (changes or valid), the snapshots' marks included.
    pub async fn marked_events_of(&self, topic: &str) -> Vec<(i32, Option<i64>, ChangeEvent)> {
        let registry = Registry::connect(&self.settings).await.unwrap();
        let mut out = Vec::new();
        for m in super::consume_all(&self.settings.kafka, topic).await {
            let (id, body) = wire::unframe(m.payload().unwrap()).unwrap();
            let schema = registry.schema(id).await.unwrap();
            let key = match m.key() {
                Some(k) => {
                    let (kid, kbody) = wire::unframe(k).unwrap();
                    assert_eq!(
                        registry.schema(kid).await.unwrap().canonical_form(),
                        "\"long\""
                    );
                    Some(decode_long(kbody))
                }
                None => None,
            };
            out.push((m.partition(), key, decode_change(&schema, body).unwrap()));
        }
        out
    }

    /// Every current row of `reviews` whose newest verdict is not of its current image (no
    /// verdict, or another digest): (review id, course id, newest verdict's version). Read
    /// from the table, never a topic, with the digest computed by SQL ([`digest_sql`]), a
    /// check of verify's own. Also returns how many rows `reviews` has.
    pub async fn current_versions_without_one_verdict(
        &self,
    ) -> (usize, Vec<(i64, Option<i64>, Option<String>)>) {
        let db = self.db().await;
        db.batch_execute(&reviewflow::db::text_output_sql(false))
            .await
            .unwrap();
        let rows: i64 = db
            .query_one("SELECT count(*) FROM reviews", &[])
            .await
            .unwrap()
            .get(0);
        let wrong = db
            .query(
                &format!(
                    "WITH newest AS (
                         SELECT DISTINCT ON (review_id) review_id, version, digest
                         FROM review_verdicts ORDER BY review_id, version DESC, position DESC)
                     SELECT r.id, r.course_id, n.version::text
                     FROM reviews r LEFT JOIN newest n ON n.review_id = r.id
                     WHERE n.digest IS DISTINCT FROM {}
                     ORDER BY r.id",
                    digest_sql()
                ),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        (rows as usize, wrong)
    }

    /// Each partition of the changes topic is what the sinks rely on: a prefix of the
    /// source's order, then re-sends. A change seen there for the first time behind a newer
    /// one is a gap filled late, which the sinks skip as a duplicate: that change is lost.
    pub async fn assert_no_change_filled_in_late(&self) {
        let mut seen: HashMap<i32, (BTreeSet<SourcePosition>, SourcePosition)> = HashMap::new();
        let mut late = Vec::new();
        for (partition, _, event) in self.events().await {
            let id = event.source.id();
            let (ids, newest) = seen.entry(partition).or_default();
            if ids.insert(id) && id < *newest {
                late.push((partition, id, *newest));
            }
            *newest = (*newest).max(id);
        }
        assert!(
            late.is_empty(),
            "changes first written behind newer ones (partition, change, newest): {late:?}"
        );
    }

    /// `verify` finds no difference (the figures, and every current row of `reviews` with
    /// one verdict of its current image, the model's), and the table agrees by SQL too.
    pub async fn assert_exact(&self) {
        let report = reviewflow::tools::verify::verify(&self.db().await)
            .await
            .unwrap();
        assert!(
            report.differences.is_empty(),
            "verify: {} differences, first {:?}",
            report.differences.len(),
            &report.differences[..report.differences.len().min(10)]
        );
        let (reviews, wrong) = self.current_versions_without_one_verdict().await;
        assert_eq!(report.reviews as usize, reviews, "verify read every row");
        assert!(
            wrong.is_empty(),
            "of {reviews} reviews, {} without a verdict of their current image: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        );
    }

    /// SIGTERM, and the stage must exit cleanly.
    pub async fn stop(&self, stage: Running) {
        let mut child = stage.take();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let Some(status) = exit_within(&mut child, Duration::from_secs(60)).await else {
            panic!("the stage did not exit within 60 s of SIGTERM");
        };
        assert!(
            status.success(),
            "the stage exits cleanly on SIGTERM: {status}"
        );
    }
}

/// Per partition with data, the offset just past its last committed record.
async fn next_offsets(settings: &Settings, topic: &str) -> BTreeMap<i32, i64> {
    let mut out = BTreeMap::new();
    if !super::topic_exists(&settings.kafka, topic).await {
        return out;
    }
    for m in super::consume_all(&settings.kafka, topic).await {
        let next = out.entry(m.partition()).or_insert(0);
        *next = (*next).max(m.offset() + 1);
    }
    out
}

/// The partitions of `topic` whose last stable offset is short of the high watermark: a
/// transaction there is still open (a read_committed consumer's watermark is the former).
async fn open_transactions(settings: &Settings, topic: &str) -> Vec<i32> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let (kafka, topic) = (settings.kafka.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let client = |isolation: &str| -> BaseConsumer {
            reviewflow::kafka::client_config(&kafka)
                .set("isolation.level", isolation)
                .create()
                .unwrap()
        };
        let (stable, all) = (client("read_committed"), client("read_uncommitted"));
        let timeout = Duration::from_secs(30);
        let metadata = all.fetch_metadata(Some(&topic), timeout).unwrap();
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        partitions
            .into_iter()
            .filter(|p| {
                let high = |c: &BaseConsumer| c.fetch_watermarks(&topic, *p, timeout).unwrap().1;
                high(&stable) < high(&all)
            })
            .collect()
    })
    .await
    .unwrap()
}

/// The offsets `group` committed for the partitions of `like`.
pub async fn committed(
    settings: &Settings,
    group: &str,
    topic: &str,
    like: &BTreeMap<i32, i64>,
) -> BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let (kafka, group, topic) = (settings.kafka.clone(), group.to_string(), topic.to_string());
    let partitions: Vec<i32> = like.keys().copied().collect();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = reviewflow::kafka::client_config(&kafka)
            .set("group.id", &group)
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition(&topic, *p);
        }
        let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(10)) else {
            return BTreeMap::new();
        };
        committed
            .elements()
            .iter()
            .filter_map(|e| Some((e.partition(), e.offset().to_raw().filter(|o| *o >= 0)?)))
            .collect()
    })
    .await
    .unwrap()
}

/// How `child` exited, if it did within `limit`; otherwise it is killed (and reaped) and the
/// answer is None.
async fn exit_within(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn decode_long(body: &[u8]) -> i64 {
    let schema = apache_avro::Schema::Long;
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .build()
        .unwrap();
    match reader.read_value(&mut &body[..]).unwrap() {
        apache_avro::types::Value::Long(v) => v,
        other => panic!("key is not a long: {other:?}"),
    }
}

/// `avro::digest::image_digest` of a row `r` of `reviews` in SQL, for a session under
/// `db::TEXT_OUTPUT_SETTINGS`: per contract column a 0 byte for NULL, else a 1 byte, the
/// text's length as a big-endian int4 and the text.
pub fn digest_sql() -> String {
    let cells: Vec<String> = reviewflow::avro::digest::COLUMNS
        .iter()
        .map(|c| {
            format!(
                "CASE WHEN r.{c} IS NULL THEN '\\x00'::bytea ELSE '\\x01'::bytea
                 || int4send(octet_length(r.{c}::text)) || convert_to(r.{c}::text, 'UTF8') END"
            )
        })
        .collect();
    format!("encode(sha256({}), 'hex')", cells.join(" || "))
}
