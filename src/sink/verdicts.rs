//! The verdict sink: reviews.verdicts into review_verdicts.
//!
//! Guarantee: exactly-once. Each batch's rows and its input offsets commit in one PostgreSQL
//! transaction, under the partition epochs it was read with (see `Destination`). Rows are
//! upserted by (review id, version), and within a version the change with the highest
//! position wins, so the table holds the final verdict of every version whatever the
//! delivery order.
//! Deletions go to review_deletions (the newest per review) and truncates to verdicts_state
//! (the newest), in the same transaction; both keep a maximum, so order and copies do not
//! matter either.
//! Records it cannot read go to the dead-letter topic; they never stop it.

use std::collections::HashMap;

use rdkafka::message::{Message, OwnedMessage};
use tokio_postgres::types::Type;
use tokio_postgres::Transaction;
use tokio_util::sync::CancellationToken;

use super::offsets::Applied;
use super::VerdictsConfig;
use super::{Destination, Written};
use crate::avro::verdict;
use crate::config::{Settings, TopicSettings, WorkerSettings};
use crate::contract::lsn::SourcePosition;
use crate::contract::verdict::{Deletion, Record, Verdict};
use crate::error::Result;
use crate::failpoint::Point;
use crate::registry::Registry;

/// Its rows in sink_offsets.
pub const CONSUMER: &str = "verdicts";

pub struct VerdictSink {
    pub settings: Settings,
    pub topics: TopicSettings,
    pub worker: WorkerSettings,
    pub config: VerdictsConfig,
}

impl VerdictSink {
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        super::run(&self, &self.settings, &self.topics, &self.worker, shutdown).await
    }
}

impl Destination for VerdictSink {
    const CONSUMER: &'static str = CONSUMER;
    const BEFORE_COMMIT: Point = crate::failpoint::VERDICTS_BEFORE_COMMIT;
    type Record = Record;
    type Decoder = ();
    type Receipt = ();

    fn topic(&self) -> &str {
        &self.topics.verdicts
    }

    fn group(&self) -> &str {
        &self.config.group
    }

    async fn decode(
        &self,
        registry: &Registry,
        _: &mut (),
        m: &OwnedMessage,
    ) -> Result<Result<Record, String>> {
        Ok(match registry.resolve(m.payload()).await? {
            Err(reason) => Err(reason),
            Ok(framed) => verdict::decode(&framed.schema, framed.body)
                .map_err(|e| format!("not a verdict: {e}")),
        })
    }

    async fn write(
        &self,
        tx: &Transaction<'_>,
        _: HashMap<i32, Applied>,
        records: Vec<(&OwnedMessage, Record)>,
    ) -> Result<Written<()>> {
        let mut verdicts = Vec::with_capacity(records.len());
        let mut deletions = Vec::new();
        let (mut truncated, mut truncates): (Option<SourcePosition>, u64) = (None, 0);
        for (_, record) in records {
            match record {
                Record::Judged(v) => verdicts.push(v),
                Record::Deleted(d) => deletions.push(d),
                Record::Truncated { version, position } => {
                    truncated = truncated.max(Some(SourcePosition::new(version, position)));
                    truncates += 1;
                }
            }
        }
        // Typed statements, pipelined: one round trip for both.
        tokio::try_join!(upsert(tx, &verdicts), record_deletions(tx, &deletions))?;
        if let Some(at) = truncated {
            deleted_before(tx, at).await?;
        }
        Ok(Written {
            // Writes keep the newest by (version, position): no position to track.
            positions: HashMap::new(),
            // Every truncate record counts, though the newest alone does the work: a truncate
            // comes on every changes partition, and the count is of records taken.
            applied: (verdicts.len() + deletions.len()) as u64 + truncates,
            receipt: (),
        })
    }
}

/// Upserts verdicts by (review id, version); within a version the higher position wins.
pub async fn upsert(tx: &Transaction<'_>, verdicts: &[Verdict]) -> Result<()> {
    // One row per (review, version) in a statement: the change with the highest position.
    let mut last: HashMap<(i64, crate::contract::lsn::Lsn), &Verdict> = HashMap::new();
    for v in verdicts {
        let slot = last.entry((v.review_id, v.version)).or_insert(v);
        if v.position >= slot.position {
            *slot = v;
        }
    }
    let rows: Vec<&Verdict> = last.into_values().collect();
    let ids: Vec<i64> = rows.iter().map(|v| v.review_id).collect();
    let versions: Vec<String> = rows.iter().map(|v| v.version.to_string()).collect();
    let positions: Vec<i64> = rows.iter().map(|v| v.position).collect();
    let courses: Vec<Option<i64>> = rows.iter().map(|v| v.course_id).collect();
    let kinds: Vec<&str> = rows
        .iter()
        .map(|v| if v.fraud { "fraud" } else { "valid" })
        .collect();
    let scores: Vec<f64> = rows.iter().map(|v| v.score).collect();
    let reasons: Vec<serde_json::Value> =
        rows.iter().map(|v| serde_json::json!(v.reasons)).collect();
    let models: Vec<&str> = rows.iter().map(|v| v.model.as_str()).collect();
    let digests: Vec<Option<&str>> = rows.iter().map(|v| v.digest.as_deref()).collect();
    let oversize: Vec<serde_json::Value> =
        rows.iter().map(|v| serde_json::json!(v.oversize)).collect();
    tx.query_typed(
        "INSERT INTO review_verdicts
             (review_id, version, position, verdict, score, reasons, model, digest, oversize,
              course_id)
         SELECT id, version::pg_lsn, position, verdict, score,
                ARRAY(SELECT jsonb_array_elements_text(reasons)), model, digest,
                ARRAY(SELECT jsonb_array_elements_text(oversize)), course_id
         FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::float8[], $6::jsonb[],
                     $7::text[], $8::text[], $9::jsonb[], $10::bigint[])
              AS u(id, version, position, verdict, score, reasons, model, digest, oversize,
                   course_id)
         ON CONFLICT (review_id, version) DO UPDATE
            SET position = EXCLUDED.position, verdict = EXCLUDED.verdict, score = EXCLUDED.score,
                course_id = EXCLUDED.course_id,
                reasons = EXCLUDED.reasons, model = EXCLUDED.model, digest = EXCLUDED.digest,
                oversize = EXCLUDED.oversize, judged_at = now()
            WHERE review_verdicts.position <= EXCLUDED.position",
        &[
            (&ids, Type::INT8_ARRAY),
            (&versions, Type::TEXT_ARRAY),
            (&positions, Type::INT8_ARRAY),
            (&kinds, Type::TEXT_ARRAY),
            (&scores, Type::FLOAT8_ARRAY),
            (&reasons, Type::JSONB_ARRAY),
            (&models, Type::TEXT_ARRAY),
            (&digests, Type::TEXT_ARRAY),
            (&oversize, Type::JSONB_ARRAY),
            (&courses, Type::INT8_ARRAY),
        ],
    )
    .await?;
    Ok(())
}

/// Records deletes: the newest (version, position) per review id wins.
pub async fn record_deletions(tx: &Transaction<'_>, deletions: &[Deletion]) -> Result<()> {
    // One row per review in a statement (ON CONFLICT cannot touch a row twice).
    let mut newest: HashMap<i64, &Deletion> = HashMap::new();
    for d in deletions {
        let slot = newest.entry(d.review_id).or_insert(d);
        if (d.version, d.position) > (slot.version, slot.position) {
            *slot = d;
        }
    }
    if newest.is_empty() {
        return Ok(());
    }
    let rows: Vec<&Deletion> = newest.into_values().collect();
    let ids: Vec<i64> = rows.iter().map(|d| d.review_id).collect();
    let courses: Vec<Option<i64>> = rows.iter().map(|d| d.course_id).collect();
    let versions: Vec<String> = rows.iter().map(|d| d.version.to_string()).collect();
    let positions: Vec<i64> = rows.iter().map(|d| d.position).collect();
    tx.query_typed(
        "INSERT INTO review_deletions (review_id, course_id, version, position)
         SELECT id, course_id, version::pg_lsn, position
         FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[])
              AS u(id, course_id, version, position)
         ON CONFLICT (review_id) DO UPDATE
            SET course_id = EXCLUDED.course_id, version = EXCLUDED.version,
                position = EXCLUDED.position, deleted_at = now()
            WHERE (review_deletions.version, review_deletions.position)
                < (EXCLUDED.version, EXCLUDED.position)",
        &[
            (&ids, Type::INT8_ARRAY),
            (&courses, Type::INT8_ARRAY),
            (&versions, Type::TEXT_ARRAY),
            (&positions, Type::INT8_ARRAY),
        ],
    )
    .await?;
    Ok(())
}

/// Records that every review without a row whose newest verdict is older than `at` was
/// deleted as the pipeline saw it (a TRUNCATE, or a snapshot replay); the newest point wins.
pub async fn deleted_before(tx: &Transaction<'_>, at: SourcePosition) -> Result<()> {
    tx.execute(
        "UPDATE verdicts_state
            SET deleted_before_lsn = $1::text::pg_lsn, deleted_before_position = $2
          WHERE (deleted_before_lsn, deleted_before_position) < ($1::text::pg_lsn, $2)",
        &[&at.lsn.to_string(), &at.position],
    )
    .await?;
    Ok(())
}
