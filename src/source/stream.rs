//! cdc's stream: the slot's pgoutput messages turned into change events and produced to
//! `reviews.changes`, with the ack ledger that lets the slot's confirmed position move only
//! past transactions Kafka took whole (see `cdc` for the guarantees).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use tokio_util::sync::CancellationToken;

use super::acks::AckLedger;
use super::columns::TypeCatalog;
use super::epochs::partition_of;
use super::pgoutput::{self, PgOutput, Tuple, Value};
use super::produce::{changes_producer, wire_key, AckContext};
use super::refusals;
use super::replication::{pg_epoch_micros_to_unix_micros, ReplicationMessage, ReplicationStream};
use super::size::RecordLimits;
use super::switch::Partitioning;
use super::CdcConfig;
use crate::avro::{wire, Cell, RowSchema};
use crate::config::{Settings, TopicSettings};
use crate::contract::change::{Op, Source, NEW_KEY_HEADER, OLD_KEY_HEADER};
use crate::contract::lsn::Lsn;
use crate::error::{Error, Result};
use crate::kafka::produce::send as send_record;
use crate::metrics;
use crate::registry::{key_subject, value_subject, Registry};

/// The version of a table's columns that events are currently encoded with.
struct TableVersion {
    schema: RowSchema,
    schema_id: u32,
    course: usize,
    /// The review id's column: an UPDATE that changes it is no move of one review.
    id: Option<usize>,
    namespace: String,
    name: String,
}

struct OpenTransaction {
    seq: u64,
    lsn: Lsn,
    xid: i64,
    commit_time: chrono::DateTime<chrono::Utc>,
    position: i64,
    /// The partition count of the transaction's epoch.
    partitions: i32,
}

pub(super) struct Streamer<'a> {
    config: &'a CdcConfig,
    topics: &'a TopicSettings,
    registry: Registry,
    types: TypeCatalog,
    /// Non-builtin types as the stream's Type messages named them.
    announced: HashMap<u32, String>,
    limits: RecordLimits,
    producer: Arc<ThreadedProducer<AckContext>>,
    ledger: Arc<Mutex<AckLedger>>,
    tables: HashMap<u32, TableVersion>,
    txn: Option<OpenTransaction>,
    key_schema_id: u32,
    /// Where each transaction's changes go, and the switch to added partitions.
    partitioning: Partitioning,
    /// Changes read from the slot, and source transactions whose Commit was read.
    changes_read: Counter,
    transactions: Counter,
    /// A Relation message showed a replica identity that is refused.
    pub(super) identity_refused: bool,
    oversize: Counter,
}

impl<'a> Streamer<'a> {
    pub(super) fn new(
        (settings, config, topics): (&Settings, &'a CdcConfig, &'a TopicSettings),
        registry: Registry,
        types: TypeCatalog,
        limits: RecordLimits,
        partitioning: Partitioning,
    ) -> Result<Self> {
        let ledger = Arc::new(Mutex::new(AckLedger::new(Lsn::ZERO)));
        let producer = changes_producer(settings, config, &limits, ledger.clone())?;
        Ok(Streamer {
            config,
            topics,
            registry,
            types,
            announced: HashMap::new(),
            limits,
            producer: Arc::new(producer),
            ledger,
            tables: HashMap::new(),
            txn: None,
            key_schema_id: 0,
            partitioning,
            changes_read: metrics::events_in(&config.stage()),
            transactions: metrics::transactions(&config.stage()),
            identity_refused: false,
            oversize: metrics::oversize_values(&config.stage()),
        })
    }

    pub(super) async fn run(
        &mut self,
        mut stream: ReplicationStream,
        start: Lsn,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let topic = &self.topics.changes;
        self.key_schema_id = self
            .registry
            .register(&key_subject(topic), &crate::avro::envelope::KEY_SCHEMA)
            .await?;
        self.ledger().idle_at(start);
        self.partitioning.check().await?;
        let interval = Duration::from_secs(self.config.status_interval_secs.max(1));
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let (mut received, mut reported, mut last_report) = (start, Lsn::ZERO, Instant::now());
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return self.stop(&mut stream, received).await,
                _ = tick.tick() => {
                    let (confirmed, failure) = {
                        let l = self.ledger();
                        (l.confirmed(), l.failure().map(str::to_string))
                    };
                    if let Some(failure) = failure {
                        return Err(Error::Delivery(failure));
                    }
                    if let Err(e) = self.partitioning.check().await {
                        tracing::warn!(error = %e, "could not look for added partitions; looking again later");
                    }
                    if confirmed != reported || last_report.elapsed() >= interval {
                        // Asking for a reply on the regular update makes the server send its WAL
                        // end, which an idle reader confirms: the heartbeat that frees WAL.
                        let ask = last_report.elapsed() >= interval;
                        // Kafka has these events, the slot does not know yet: the worst crash.
                        crate::failpoint::hit(crate::failpoint::CDC_BEFORE_STATUS)?;
                        stream.send_status(received.max(confirmed), confirmed, confirmed, ask).await?;
                        tracing::debug!(%confirmed, %received, in_flight = self.ledger().in_flight(), "standby status sent");
                        (reported, last_report) = (confirmed, Instant::now());
                    }
                }
                message = stream.next() => match message? {
                    None => return Err(Error::Replication("the server ended the replication stream".into())),
                    Some(ReplicationMessage::Keepalive { wal_end, reply_requested, .. }) => {
                        received = received.max(wal_end);
                        if self.txn.is_none() {
                            self.ledger().idle_at(wal_end);
                        }
                        if reply_requested {
                            let confirmed = self.ledger().confirmed();
                            stream.send_status(received.max(confirmed), confirmed, confirmed, false).await?;
                            (reported, last_report) = (confirmed, Instant::now());
                        }
                    }
                    Some(ReplicationMessage::XLogData { wal_end, data, .. }) => {
                        received = received.max(wal_end);
                        let message = pgoutput::decode(data)?;
                        if let PgOutput::Begin(b) = &message {
                            if self.partitioning.due(b.final_lsn)
                                && !self.switch(&mut stream, b.final_lsn, received, shutdown).await?
                            {
                                return self.stop(&mut stream, received).await;
                            }
                        }
                        self.apply(message).await?;
                    }
                },
            }
        }
    }

    /// Everything handed to the producer delivered, and the slot told how far that is.
    async fn stop(&self, stream: &mut ReplicationStream, received: Lsn) -> Result<()> {
        self.flush().await?;
        let confirmed = self.ledger().confirmed();
        stream
            .send_status(received, confirmed, confirmed, false)
            .await?;
        tracing::info!(confirmed = %confirmed, "cdc stopped");
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(30))).await??;
        Ok(())
    }

    /// The planned switch to more partitions, before the transaction committed at `commit`
    /// is written (see `switch`): every change so far delivered and confirmed, the workers
    /// past the old partitions, the new epoch recorded. The slot keeps hearing from cdc
    /// meanwhile. False when shut down while waiting.
    async fn switch(
        &mut self,
        stream: &mut ReplicationStream,
        commit: Lsn,
        received: Lsn,
        shutdown: &CancellationToken,
    ) -> Result<bool> {
        self.flush().await?;
        if let Some(failure) = self.ledger().failure() {
            return Err(Error::Delivery(failure.to_string()));
        }
        let mut watch = self.partitioning.fence.open()?;
        let (mut said, mut reported) = (None::<(String, Instant)>, None::<Instant>);
        loop {
            if reported.is_none_or(|r| r.elapsed() >= Duration::from_secs(5)) {
                let confirmed = self.ledger().confirmed();
                stream
                    .send_status(received.max(confirmed), confirmed, confirmed, false)
                    .await?;
                reported = Some(Instant::now());
            }
            // The fence only reads: a broker or the database away for a moment is waited out
            // here, in the session that already holds the switch's place in the stream.
            let why = match self.partitioning.waiting(&mut watch, &self.registry).await {
                Ok(None) => break,
                Ok(Some(why)) => why,
                Err(e @ Error::Failpoint(_)) => return Err(e),
                Err(e) => format!("the workers' progress could not be read ({e})"),
            };
            if said
                .as_ref()
                .is_none_or(|(s, at)| *s != why || at.elapsed() >= Duration::from_secs(30))
            {
                tracing::info!(waiting = %why, "the switch to more partitions waits");
                said = Some((why, Instant::now()));
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        self.partitioning.begin(commit, &self.registry).await?;
        crate::failpoint::hit(crate::failpoint::CDC_AFTER_SWITCH)?;
        Ok(true)
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, AckLedger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn apply(&mut self, message: PgOutput) -> Result<()> {
        match message {
            PgOutput::Begin(b) => {
                let seq = self.ledger().begin();
                let commit_time = chrono::DateTime::from_timestamp_micros(
                    pg_epoch_micros_to_unix_micros(b.commit_time_micros),
                )
                .unwrap_or_default();
                self.txn = Some(OpenTransaction {
                    seq,
                    lsn: b.final_lsn,
                    xid: i64::from(b.xid),
                    commit_time,
                    position: 0,
                    partitions: self.partitioning.epochs.at(b.final_lsn),
                });
            }
            PgOutput::Commit(c) => {
                let txn = self
                    .txn
                    .take()
                    .ok_or_else(|| Error::Decode("Commit without Begin".into()))?;
                crate::failpoint::hit(crate::failpoint::CDC_BEFORE_COMMIT_READ)?;
                self.ledger().committed(txn.seq, c.end_lsn);
                self.transactions.inc();
            }
            PgOutput::Relation(r) => {
                if let Some(refusal) =
                    refusals::relation_refusal(&self.config.source(&self.topics.changes), &r)
                {
                    self.identity_refused = true;
                    return Err(refusal);
                }
                let columns: Vec<(String, u32, i32)> = r
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), c.type_oid, c.type_modifier))
                    .collect();
                let columns = self.types.describe(&columns, &self.announced).await?;
                let namespace = if r.namespace.is_empty() {
                    "pg_catalog".to_string()
                } else {
                    r.namespace.clone()
                };
                // The catalog as it is now: a change made before the constraint was dropped is
                // refused too, which holds the slot there until the fix.
                self.types.refuse_nullable_id(&namespace, &r.name).await?;
                let schema = RowSchema::new(&namespace, &r.name, columns)?;
                let course = schema.column_index("course_id").ok_or_else(|| {
                    Error::Config(format!(
                        "{namespace}.{} has no course_id column to key by",
                        r.name
                    ))
                })?;
                let id = schema.column_index("id");
                let subject = value_subject(&self.topics.changes);
                let schema_id = self.registry.register(&subject, schema.envelope()).await?;
                tracing::info!(table = %r.name, schema_id, columns = r.columns.len(), "table schema registered");
                self.tables.insert(
                    r.id,
                    TableVersion {
                        schema,
                        schema_id,
                        course,
                        id,
                        namespace,
                        name: r.name,
                    },
                );
            }
            PgOutput::Insert { relation_id, new } => {
                self.change(relation_id, Op::Create, None, Some(new))
                    .await?
            }
            PgOutput::Update {
                relation_id,
                old,
                new,
                ..
            } => self.change(relation_id, Op::Update, old, Some(new)).await?,
            PgOutput::Delete {
                relation_id, old, ..
            } => {
                self.change(relation_id, Op::Delete, Some(old), None)
                    .await?
            }
            PgOutput::Truncate { relation_ids, .. } => {
                if self.config.compacted {
                    return Err(Error::Config(format!(
                        "a TRUNCATE cannot be written to the compacted topic {} (its records need a key): \
                         publish only insert, update and delete for this table \
                         (CREATE PUBLICATION ... WITH (publish = 'insert, update, delete'))",
                        self.topics.changes
                    )));
                }
                for relation_id in relation_ids {
                    self.truncate(relation_id).await?;
                }
            }
            PgOutput::Type {
                id,
                namespace,
                name,
            } => {
                self.announced.insert(id, format!("{namespace}.{name}"));
            }
            PgOutput::Origin { .. } | PgOutput::Message { .. } => {}
        }
        Ok(())
    }

    /// The partition count of the open transaction's epoch.
    fn partitions(&self) -> i32 {
        self.txn.as_ref().map_or(1, |t| t.partitions)
    }

    fn next_source(&mut self, table: &TableVersion) -> Result<(u64, Source)> {
        let txn = self
            .txn
            .as_mut()
            .ok_or_else(|| Error::Decode("change outside a transaction".into()))?;
        let source = Source {
            schema: table.namespace.clone(),
            table: table.name.clone(),
            lsn: txn.lsn,
            position: txn.position,
            txid: Some(txn.xid),
            commit_time: txn.commit_time,
            snapshot: false,
        };
        txn.position += 1;
        Ok((txn.seq, source))
    }

    async fn change(
        &mut self,
        relation_id: u32,
        op: Op,
        old: Option<Tuple>,
        new: Option<Tuple>,
    ) -> Result<()> {
        self.changes_read.inc();
        let table = self
            .tables
            .remove(&relation_id)
            .ok_or_else(|| Error::Decode(format!("change of unknown relation {relation_id}")))?;
        let result = self.produce_change(&table, op, old, new).await;
        self.tables.insert(relation_id, table);
        result
    }

    /// A change as its records. An UPDATE that moves a review to another course is split,
    /// as Debezium splits a primary-key change: a delete keyed by the old course, then a
    /// create keyed by the new one, so each course's partition carries that course's
    /// changes in commit order and no worker meets a retraction before the addition it
    /// takes back. Each half takes the next position of the transaction: positions number
    /// the records a transaction became, so they stay strictly increasing, and the
    /// transaction, re-read whole after a crash, becomes the same records at the same
    /// positions.
    async fn produce_change(
        &mut self,
        table: &TableVersion,
        op: Op,
        old: Option<Tuple>,
        new: Option<Tuple>,
    ) -> Result<()> {
        let before = old.as_ref().map(|t| cells(t, None)).transpose()?;
        let after = new
            .as_ref()
            .map(|t| cells(t, before.as_deref()))
            .transpose()?;
        let course = |row: &Option<Vec<Cell<'_>>>| {
            row.as_ref().and_then(|row| match row.get(table.course) {
                Some(Cell::Text(t)) => std::str::from_utf8(t).ok()?.parse::<i64>().ok(),
                _ => None,
            })
        };
        let (old_course, new_course) = (course(&before), course(&after));
        // Without an old image (the compacted reader allows REPLICA IDENTITY DEFAULT, which
        // sends none when the key stays) there is no move to see.
        if op != Op::Update || before.is_none() || old_course == new_course {
            let key = self.key(new_course.or(old_course))?;
            let (before, after) = (before.as_deref(), after.as_deref());
            return self.emit(table, op, (before, after), &key, None).await;
        }
        let (old_key, new_key) = (self.key(old_course)?, self.key(new_course)?);
        // The headers say the review lives on under the other key. An UPDATE that changes
        // the id as well ends one review and begins another: a plain delete and create,
        // and the old id's delete is recorded as any other.
        let same_review = table
            .id
            .is_none_or(|i| before.as_ref().map(|r| r.get(i)) == after.as_ref().map(|r| r.get(i)));
        let header = |name: &str, key: &Option<Vec<u8>>| {
            same_review.then(|| {
                OwnedHeaders::new().insert(Header {
                    key: name,
                    value: key.as_deref(),
                })
            })
        };
        let (moved_to, moved_from) = (
            header(NEW_KEY_HEADER, &new_key),
            header(OLD_KEY_HEADER, &old_key),
        );
        self.emit(
            table,
            Op::Delete,
            (before.as_deref(), None),
            &old_key,
            moved_to,
        )
        .await?;
        self.emit(
            table,
            Op::Create,
            (None, after.as_deref()),
            &new_key,
            moved_from,
        )
        .await
    }

    /// The record key of a course: None for no course.
    fn key(&self, course: Option<i64>) -> Result<Option<Vec<u8>>> {
        course.map(|c| wire_key(self.key_schema_id, c)).transpose()
    }

    /// Produces one change record at the transaction's next position.
    async fn emit(
        &mut self,
        table: &TableVersion,
        op: Op,
        (before, after): (Option<&[Cell<'_>]>, Option<&[Cell<'_>]>),
        key: &Option<Vec<u8>>,
        headers: Option<OwnedHeaders>,
    ) -> Result<()> {
        let (seq, source) = self.next_source(table)?;
        let encoded = table
            .schema
            .encode_within(op, before, after, &source, self.limits.body)?;
        if !encoded.oversize.is_empty() {
            self.oversize.inc_by(encoded.oversize.len() as u64);
            tracing::warn!(lsn = %source.lsn, position = source.position, columns = ?encoded.oversize,
                "a change larger than the topic allows carries these values as oversize markers");
        }
        let value = wire::frame(table.schema_id, &encoded.body);
        self.ledger().produced(seq);
        let record =
            BaseRecord::with_opaque_to(&self.topics.changes, Box::new(seq)).payload(&value[..]);
        // A change without a course id has no key; its partition is fixed, so such changes
        // keep their order.
        let record = match key {
            Some(key) => record
                .key(&key[..])
                .partition(partition_of(key, self.partitions())),
            None => record.partition(0),
        };
        let record = match headers {
            Some(headers) => record.headers(headers),
            None => record,
        };
        self.send(record).await?;
        crate::failpoint::hit(crate::failpoint::CDC_AFTER_PRODUCE)?;
        Ok(())
    }

    /// Hands a record to the producer. After a refusal the producer stops (the gapless
    /// guarantee) and refuses every later record with a bare "fatal error", often before the
    /// refused record's own report arrives: the refusal, which says what to fix, is the error.
    async fn send(&self, record: BaseRecord<'_, [u8], [u8], Box<u64>>) -> Result<()> {
        let Err(e) = send_record(&self.producer, record).await else {
            return Ok(());
        };
        for _ in 0..100 {
            if let Some(refusal) = self.ledger().failure() {
                return Err(Error::Delivery(refusal.to_string()));
            }
            if self.producer.client().fatal_error().is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(e)
    }

    /// A truncate concerns every course, so every partition gets it, in order with the rest.
    async fn truncate(&mut self, relation_id: u32) -> Result<()> {
        self.changes_read.inc();
        let table = self
            .tables
            .remove(&relation_id)
            .ok_or_else(|| Error::Decode(format!("truncate of unknown relation {relation_id}")))?;
        let result = async {
            let (seq, source) = self.next_source(&table)?;
            let body = table.schema.encode(Op::Truncate, None, None, &source)?;
            let value = wire::frame(table.schema_id, &body);
            for partition in 0..self.partitions() {
                self.ledger().produced(seq);
                let record = BaseRecord::<[u8], [u8], _>::with_opaque_to(
                    &self.topics.changes,
                    Box::new(seq),
                )
                .partition(partition)
                .payload(&value[..]);
                self.send(record).await?;
            }
            Ok(())
        }
        .await;
        self.tables.insert(relation_id, table);
        result
    }
}

/// A tuple as Avro cells; an unchanged TOASTed value is taken from the old image, which
/// REPLICA IDENTITY FULL makes complete.
fn cells<'t>(tuple: &'t Tuple, old: Option<&[Cell<'t>]>) -> Result<Vec<Cell<'t>>> {
    tuple
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Null => Ok(Cell::Null),
            Value::Text(t) => Ok(Cell::Text(t)),
            Value::UnchangedToast => old.and_then(|o| o.get(i).copied()).ok_or_else(|| {
                Error::Decode(format!("column {i} is an unchanged TOASTed value and the old row is missing; is REPLICA IDENTITY FULL set?"))
            }),
        })
        .collect()
}
