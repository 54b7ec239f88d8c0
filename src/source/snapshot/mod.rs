//! The initial snapshot: every row of `reviews` as it was at the slot's consistent point,
//! read through the snapshot the slot exported, emitted as op=r events. The reading itself
//! ([`SnapshotReader`]) is shared with `replay --from snapshot`, which judges the rows instead.
//!
//! TRUNCATE (and a rewriting ALTER) is not MVCC-safe: a snapshot reader would see the emptied
//! table. The snapshot holds ACCESS SHARE, so later ones wait and stream after it; one that
//! slipped in between the slot's creation and that lock changes the table's file node, which
//! is checked, and the attempt is abandoned and retried.
//!
//! Guarantee: a snapshot of any length completes, and readers can tell a whole one from a
//! part. A Kafka transaction may stay open only as long as the broker's
//! `transaction.max.timeout.ms` (15 minutes by default), so the rows commit in chunks, one
//! transaction every [`CHUNK`]:
//! - the first chunk opens with a TRUNCATE on every partition, so readers void everything the
//!   topic held before: an earlier snapshot's history (a restatement, `cdc --new-snapshot`),
//!   or the committed chunks of an attempt that died, which a retry takes again from a new
//!   slot;
//! - the last chunk closes with an [`Op::SnapshotEnd`] on every partition and, in the same
//!   transaction, the completion marker (topic `<changes>.snapshots`, key = slot name). A
//!   restart finds either the marker (stream from the slot) or none (drop the slot and take
//!   the snapshot again).
//!
//! The stats worker keeps showing the figures it had until every partition's end has arrived
//! (see `sink::stats::restating`), so no figure drops while a snapshot is in flight. A
//! compacted topic takes no keyless record: there the snapshot sends neither mark, and its
//! readers keep the latest row per key.
//!
//! Before a restatement's new slot is created, the old marker is withdrawn (a tombstone under
//! the slot's key), so a crash during it is retried as one, never resumed from a slot whose
//! snapshot is missing.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use rdkafka::message::{Header, OwnedHeaders};

use super::columns::TypeCatalog;
use super::epochs::{partition_of, Epoch};
use super::failover::Server;
use super::produce::wire_key;
use super::size::RecordLimits;
use crate::avro::{wire, Cell, RowSchema};
use crate::config::KafkaSettings;
use crate::contract::change::{Op, Source, PARTITIONS_HEADER};
use crate::contract::lsn::Lsn;
use crate::db::{quote_ident, quote_literal};
use crate::error::{Error, Result};
use crate::kafka::produce::send as send_record;
use crate::kafka::producer_config;
use crate::registry::{key_subject, value_subject, Registry};

mod markers;
use markers::marker_record;
pub use markers::{
    find_marker, marker_topic, record_marker, withdraw_marker, SnapshotHistory, SnapshotMarker,
};

pub const TABLE_SCHEMA: &str = "public";

/// How long a snapshot's chunk stays open: well inside any broker's transaction time limit
/// ([`TRANSACTION_TIMEOUT`]), and long enough that committing costs nothing next to the rows.
pub const CHUNK: Duration = Duration::from_secs(10);

/// The chunks' transaction timeout. It must not exceed the broker's
/// `transaction.max.timeout.ms`; Kafka's default allows 15 minutes, and one minute serves a
/// chunk of [`CHUNK`] with room for a slow commit.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Snapshot<'a> {
    pub database_url: &'a str,
    /// The table of the publication, in schema `public`.
    pub table: &'a str,
    pub snapshot_name: &'a str,
    pub consistent_point: Lsn,
    pub slot: &'a str,
    pub topic: &'a str,
    pub kafka: &'a KafkaSettings,
    pub registry: &'a Registry,
    /// Names the columns' types, as it does for the stream's Relation messages.
    pub types: &'a TypeCatalog,
    pub limits: RecordLimits,
    /// Counts the values carried as oversize markers.
    pub oversize: prometheus_client::metrics::counter::Counter,
    /// The table's file node read just before the slot was created.
    pub filenode_before: u32,
    /// Open with a TRUNCATE and close each partition with its end (every topic but a
    /// compacted one: see the module's doc).
    pub marked: bool,
    /// At most this many rows per second (0: no limit).
    pub rate: u32,
    /// The server the slot was created on, recorded in the marker.
    pub server: &'a Server,
}

/// A table as a slot's exported snapshot shows it, while this lives: the snapshot's
/// transaction open, the table locked in ACCESS SHARE mode so a later TRUNCATE waits (and
/// streams after it), and checked not to have been truncated or rewritten between the slot's
/// creation and the lock.
pub struct SnapshotReader {
    pg: tokio_postgres::Client,
    /// Quoted, with its schema.
    table: String,
    /// (name, type OID, type modifier) of the table's columns, in order.
    pub columns: Vec<(String, u32, i32)>,
    /// The rows the snapshot holds.
    pub total: i64,
}

impl SnapshotReader {
    /// Opens `table` in the exported snapshot `snapshot_name`, on `pg`, which nothing else
    /// uses meanwhile. `filenode_before` is the table's file node read just before the slot
    /// was created. An `Error::Replication` says to create a slot and try again.
    pub async fn open(
        pg: tokio_postgres::Client,
        table: &str,
        snapshot_name: &str,
        filenode_before: u32,
    ) -> Result<SnapshotReader> {
        let quoted = format!("{TABLE_SCHEMA}.{}", quote_ident(table));
        pg.batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
             SET TRANSACTION SNAPSHOT {};
             LOCK TABLE {quoted} IN ACCESS SHARE MODE;",
            quote_literal(snapshot_name)
        ))
        .await?;
        if table_filenode(&pg, table).await? != filenode_before {
            return Err(Error::Replication(format!(
                "{TABLE_SCHEMA}.{table} was truncated or rewritten while the snapshot was \
                 starting; taking it again"
            )));
        }
        let columns = table_columns(&pg, table).await?;
        let total: i64 = pg
            .query_one(&format!("SELECT count(*) FROM {quoted}"), &[])
            .await?
            .get(0);
        Ok(SnapshotReader {
            pg,
            table: quoted,
            columns,
            total,
        })
    }

    /// Every row, each value as its type's output function writes it: what the replication
    /// stream carries for the same row.
    pub async fn rows(&self) -> Result<SnapshotRows> {
        let select = self
            .columns
            .iter()
            .map(|(name, oid, _)| output_text(&quote_ident(name), *oid))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = self
            .pg
            .query_raw(
                &format!("SELECT {select} FROM {}", self.table),
                std::iter::empty::<i32>(),
            )
            .await?;
        Ok(SnapshotRows(Box::pin(rows)))
    }

    /// A progress bar over the snapshot's rows, for a terminal.
    pub fn progress_bar(&self) -> ProgressBar {
        let bar = ProgressBar::new(self.total.max(0) as u64);
        bar.set_style(
            ProgressStyle::with_template("snapshot {bar:40} {pos}/{len} rows {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    }

    /// Ends the snapshot's transaction, once every row was read.
    pub async fn close(self) -> Result<()> {
        self.pg.batch_execute("COMMIT").await?;
        Ok(())
    }
}

/// The rows of a [`SnapshotReader`], in no particular order.
pub struct SnapshotRows(Pin<Box<tokio_postgres::RowStream>>);

impl SnapshotRows {
    pub async fn next(&mut self) -> Result<Option<SnapshotRow>> {
        Ok(self.0.try_next().await?.map(SnapshotRow))
    }
}

pub struct SnapshotRow(tokio_postgres::Row);

impl SnapshotRow {
    /// The row's values, in the order of the reader's columns.
    pub fn cells(&self) -> Result<Vec<Cell<'_>>> {
        (0..self.0.len())
            .map(|i| {
                let text = self.0.try_get::<_, Option<&[u8]>>(i)?;
                Ok(text.map_or(Cell::Null, Cell::Text))
            })
            .collect()
    }
}

/// The table's current file node: TRUNCATE and rewriting ALTERs give it a new one.
pub async fn table_filenode(pg: &tokio_postgres::Client, table: &str) -> Result<u32> {
    let row = pg
        .query_one(
            &format!(
                "SELECT pg_relation_filenode('{TABLE_SCHEMA}.{}')::oid",
                quote_ident(table)
            ),
            &[],
        )
        .await?;
    Ok(row.get(0))
}

impl Snapshot<'_> {
    /// Reads the table in the exported snapshot and commits it, with its marker, to Kafka.
    pub async fn run(self) -> Result<SnapshotMarker> {
        let pg = crate::db::connect(self.database_url).await?;
        let reader =
            SnapshotReader::open(pg, self.table, self.snapshot_name, self.filenode_before).await?;
        let schema = RowSchema::new(
            TABLE_SCHEMA,
            self.table,
            self.types
                .describe(&reader.columns, &Default::default())
                .await?,
        )?;
        let value_id = self
            .registry
            .register(&value_subject(self.topic), schema.envelope())
            .await?;
        let key_id = self
            .registry
            .register(&key_subject(self.topic), &crate::avro::envelope::KEY_SCHEMA)
            .await?;
        let course = schema
            .column_index("course_id")
            .ok_or_else(|| Error::Config("reviews has no course_id column".into()))?;
        let total = reader.total;
        tracing::info!(rows = total, lsn = %self.consistent_point, "snapshot started");
        let progress = reader.progress_bar();

        let producer: Arc<ThreadedProducer<_>> = Arc::new(
            producer_config(
                self.kafka,
                &[("linger.ms", "20"), ("compression.type", "lz4")],
            )
            .set(
                "transactional.id",
                format!("reviewflow-cdc-snapshot-{}", self.slot),
            )
            .set("enable.idempotence", "true")
            .set("message.max.bytes", self.limits.batch.to_string())
            .set(
                "transaction.timeout.ms",
                TRANSACTION_TIMEOUT.as_millis().to_string(),
            )
            .create()?,
        );
        let chunks = Chunks::begin(producer.clone()).await?;
        // Positions count up to -1 (the ends): a transaction streamed right after the
        // snapshot can commit at exactly the consistent point, with positions from 0, and the
        // pair (lsn, position) must stay unique and increasing. Rows take -total-1 ..= -2 and
        // the TRUNCATE the one before them.
        // The snapshot starts the slot's first partition epoch: every row, and the stream after
        // it, is placed across the count the topic has now (see `epochs`).
        let partitions = {
            let (kafka, topic) = (self.kafka.clone(), self.topic.to_string());
            tokio::task::spawn_blocking(move || crate::kafka::topic_partitions(&kafka, &topic))
                .await??
        };
        if self.marked {
            self.send_marks(
                &producer,
                &schema,
                value_id,
                Op::Truncate,
                -total - 2,
                partitions,
            )
            .await?;
            tracing::warn!(topic = self.topic, lsn = %self.consistent_point,
                "a TRUNCATE first: readers void what the topic held before this snapshot");
        }

        let mut rows = reader.rows().await?;
        let started = Utc::now();
        let mut chunks = chunks;
        let pace = Pace::new(self.rate);
        let mut position = 0i64;
        while let Some(row) = rows.next().await? {
            let cells = row.cells()?;
            let source = self.source(position - total - 1, started);
            let encoded =
                schema.encode_within(Op::Read, None, Some(&cells), &source, self.limits.body)?;
            if !encoded.oversize.is_empty() {
                self.oversize.inc_by(encoded.oversize.len() as u64);
                tracing::warn!(row = position, columns = ?encoded.oversize,
                    "a row larger than the topic allows carries these values as oversize markers");
            }
            let key = match cells[course] {
                Cell::Text(t) => std::str::from_utf8(t).ok().and_then(|t| t.parse().ok()),
                Cell::Null => None,
            }
            .map(|course_id| wire_key(key_id, course_id))
            .transpose()?;
            let value = wire::frame(value_id, &encoded.body);
            let record = BaseRecord::<[u8], [u8], ()>::to(self.topic).payload(&value);
            // As the stream does: no course id, no key, and always the same partition.
            let record = match &key {
                Some(key) => record.key(key).partition(partition_of(key, partitions)),
                None => record.partition(0),
            };
            send_record(&producer, record).await?;
            position += 1;
            progress.inc(1);
            if position % 100_000 == 0 {
                tracing::info!(rows = position, of = total, "snapshot progress");
            }
            pace.keep(position).await;
            chunks.next_if_due(position).await?;
        }
        progress.finish_and_clear();
        if self.marked {
            self.send_marks(
                &producer,
                &schema,
                value_id,
                Op::SnapshotEnd,
                -1,
                partitions,
            )
            .await?;
        }
        crate::failpoint::hit(crate::failpoint::CDC_SNAPSHOT_BEFORE_COMMIT)?;

        let marker = SnapshotMarker {
            slot: self.slot.into(),
            consistent_point: self.consistent_point,
            rows: position,
            server: Some(self.server.clone()),
            epochs: vec![Epoch {
                from: self.consistent_point,
                partitions,
            }],
            switch: None,
        };
        let (key, value) = marker_record(self.registry, self.topic, &marker).await?;
        send_record(
            &producer,
            BaseRecord::<[u8], [u8], ()>::to(&marker_topic(self.topic))
                .key(&key)
                .payload(&value),
        )
        .await?;
        chunks.commit().await?;
        reader.close().await?;
        tracing::info!(rows = position, lsn = %self.consistent_point, partitions, "snapshot committed");
        Ok(marker)
    }
}

impl Snapshot<'_> {
    fn source(&self, position: i64, commit_time: chrono::DateTime<Utc>) -> Source {
        Source {
            schema: TABLE_SCHEMA.into(),
            table: self.table.into(),
            lsn: self.consistent_point,
            position,
            txid: None,
            commit_time,
            snapshot: true,
        }
    }

    /// `op` (a TRUNCATE, or a snapshot's end) on every partition, at `position`.
    async fn send_marks(
        &self,
        producer: &ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
        schema: &RowSchema,
        value_id: u32,
        op: Op,
        position: i64,
        partitions: i32,
    ) -> Result<()> {
        let source = self.source(position, Utc::now());
        let value = wire::frame(value_id, &schema.encode(op, None, None, &source)?);
        let count = partitions.to_string();
        for partition in 0..partitions {
            let record = BaseRecord::<[u8], [u8], ()>::to(self.topic)
                .partition(partition)
                .payload(&value);
            // An end says across how many partitions its snapshot was written.
            let record = match op {
                Op::SnapshotEnd => record.headers(OwnedHeaders::new().insert(Header {
                    key: PARTITIONS_HEADER,
                    value: Some(count.as_bytes()),
                })),
                _ => record,
            };
            send_record(producer, record).await?;
        }
        Ok(())
    }
}

/// The snapshot's Kafka transactions: one open at a time, committed and replaced every
/// [`CHUNK`]. Their calls block until the broker answers, so they run off the runtime.
struct Chunks {
    producer: Arc<ThreadedProducer<rdkafka::producer::DefaultProducerContext>>,
    opened: Instant,
    count: u64,
}

impl Chunks {
    async fn begin(
        producer: Arc<ThreadedProducer<rdkafka::producer::DefaultProducerContext>>,
    ) -> Result<Chunks> {
        let p = producer.clone();
        tokio::task::spawn_blocking(move || p.init_transactions(Duration::from_secs(60)))
            .await?
            .map_err(|e| {
                Error::Config(format!(
                    "the snapshot's transactional producer could not start ({e}): a broker \
                     whose transaction.max.timeout.ms is below {} ms refuses it; raise that \
                     broker setting",
                    TRANSACTION_TIMEOUT.as_millis()
                ))
            })?;
        producer.begin_transaction()?;
        Ok(Chunks {
            producer,
            opened: Instant::now(),
            count: 1,
        })
    }

    /// Commits the open chunk and opens the next when the chunk is [`CHUNK`] old.
    async fn next_if_due(&mut self, rows: i64) -> Result<()> {
        if self.opened.elapsed() < CHUNK {
            return Ok(());
        }
        self.commit_open().await?;
        self.producer.begin_transaction()?;
        self.opened = Instant::now();
        self.count += 1;
        tracing::debug!(chunk = self.count, rows, "snapshot chunk committed");
        Ok(())
    }

    async fn commit_open(&self) -> Result<()> {
        let p = self.producer.clone();
        tokio::task::spawn_blocking(move || p.commit_transaction(Duration::from_secs(300)))
            .await??;
        Ok(())
    }

    /// Commits the last chunk.
    async fn commit(self) -> Result<()> {
        self.commit_open().await
    }
}

/// Holds a snapshot to at most `rate` rows per second.
struct Pace {
    rate: u32,
    started: Instant,
}

impl Pace {
    fn new(rate: u32) -> Pace {
        Pace {
            rate,
            started: Instant::now(),
        }
    }

    /// Waits until `rows` rows are due.
    async fn keep(&self, rows: i64) {
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(rows as f64 / f64::from(self.rate));
        if let Some(early) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(early).await;
        }
    }
}

/// (name, type OID, type modifier) of the table's live columns, in order: the same list the
/// replication stream's Relation message carries.
pub async fn table_columns(
    pg: &tokio_postgres::Client,
    table: &str,
) -> Result<Vec<(String, u32, i32)>> {
    let rows = pg
        .query(
            "SELECT attname::text, atttypid::oid, atttypmod FROM pg_attribute
             WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&format!("{TABLE_SCHEMA}.{}", quote_ident(table))],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// SQL for a column's value as its type's output function writes it, which is what the stream
/// carries. A cast to text is that for most types, but not all: boolean's gives true/false,
/// char(n)'s drops the padding, inet's adds the netmask, and a domain takes its base type's.
/// format's %s always calls the output function, at about half again the cost of a cast, so
/// it is kept for the types not known to cast alike (the contract columns all do). The text
/// arrives as bytea (textsend), its bytes as the stream has them, so a value that is not
/// UTF-8 (a SQL_ASCII database) is carried like any other instead of failing the read.
fn output_text(column: &str, type_oid: u32) -> String {
    const CAST_IS_OUTPUT: [u32; 17] = [
        20, 21, 23, 26, 700, 701, 1700, 25, 1043, 17, 1082, 1114, 1184, 1186, 114, 3802, 2950,
    ];
    if CAST_IS_OUTPUT.contains(&type_oid) {
        format!("textsend({column}::text)")
    } else {
        format!("textsend(CASE WHEN {column} IS NULL THEN NULL ELSE format('%s', {column}) END)")
    }
}
