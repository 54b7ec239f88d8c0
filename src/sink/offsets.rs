//! Input offsets of the PostgreSQL sinks, kept in `sink_offsets` beside the tables they feed,
//! and the fencing that keeps a worker that lost a partition from committing over its new
//! owner.
//!
//! A claim (on assignment) bumps the partition's epoch; every batch transaction first locks
//! its partitions' rows and checks the epoch it claimed is still current. The lock makes a
//! new owner's claim wait for an old owner's batch in flight, so the claim reads the offset
//! that batch committed; after the claim, the old owner's check fails and its batch rolls back.
//!
//! Every statement on `sink_offsets` is here, the operator's and the tests' reads too, so
//! the table's meaning is written once.

use std::collections::HashMap;

use rdkafka::message::{Message, OwnedMessage};

use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Transaction};

use crate::contract::lsn::{Lsn, SourcePosition};
use crate::error::{Error, Result};

/// A partition taken over: where to resume, and the epoch this owner holds it under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub next_offset: i64,
    pub epoch: i64,
}

/// The source position of the last change applied from a partition; `None` for a sink that
/// does not track one, or a partition nothing was applied from yet.
pub type Applied = Option<SourcePosition>;

/// Takes `partitions` of `topic` over for `owner`, fencing whoever held them.
pub async fn claim(
    client: &impl GenericClient,
    consumer: &str,
    topic: &str,
    partitions: &[i32],
    owner: &str,
) -> Result<HashMap<i32, Claim>> {
    let rows = client
        .query(
            "INSERT INTO sink_offsets (consumer, topic, partition, next_offset, owner_epoch, owner)
             SELECT $1, $2, p, 0, 1, $4 FROM unnest($3::int[]) AS p
             ON CONFLICT (consumer, topic, partition) DO UPDATE
                SET owner_epoch = sink_offsets.owner_epoch + 1,
                    owner = EXCLUDED.owner, updated_at = now()
             RETURNING partition, next_offset, owner_epoch",
            &[&consumer, &topic, &partitions, &owner],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                Claim {
                    next_offset: r.get(1),
                    epoch: r.get(2),
                },
            )
        })
        .collect())
}

/// Locks the partitions of a batch for the rest of `tx` and checks they are still held
/// under `epochs`; returns the last applied source position of each.
pub async fn hold(
    tx: &Transaction<'_>,
    consumer: &str,
    topic: &str,
    epochs: &HashMap<i32, i64>,
) -> Result<HashMap<i32, Applied>> {
    let partitions: Vec<i32> = epochs.keys().copied().collect();
    // Typed rather than prepared, here and in `advance`: one round trip on every batch.
    let rows = tx
        .query_typed(
            "SELECT partition, owner_epoch, owner, last_lsn, last_position FROM sink_offsets
             WHERE consumer = $1 AND topic = $2 AND partition = ANY($3)
             ORDER BY partition FOR UPDATE",
            &[
                (&consumer, Type::TEXT),
                (&topic, Type::TEXT),
                (&partitions, Type::INT4_ARRAY),
            ],
        )
        .await?;
    let mut applied = HashMap::new();
    for r in &rows {
        let (partition, epoch): (i32, i64) = (r.get(0), r.get(1));
        if epochs.get(&partition) != Some(&epoch) {
            return Err(Error::Fenced {
                consumer: consumer.into(),
                topic: topic.into(),
                partition,
                owner: r.get::<_, Option<String>>(2).unwrap_or_default(),
            });
        }
        let position = match (r.get::<_, Option<i64>>(3), r.get::<_, Option<i64>>(4)) {
            (Some(lsn), Some(pos)) => Some(SourcePosition::new(Lsn(lsn as u64), pos)),
            _ => None,
        };
        applied.insert(partition, position);
    }
    if let Some(missing) = partitions.iter().find(|p| !applied.contains_key(p)) {
        return Err(Error::Fenced {
            consumer: consumer.into(),
            topic: topic.into(),
            partition: *missing,
            owner: "nobody (the row is gone)".into(),
        });
    }
    Ok(applied)
}

/// Where each partition of a batch resumes, and the last source position applied from it.
pub struct Advance {
    pub partition: i32,
    pub next_offset: i64,
    pub applied: Applied,
}

/// Records the batch's progress, in the transaction that applied it.
pub async fn advance(
    tx: &Transaction<'_>,
    consumer: &str,
    topic: &str,
    progress: &[Advance],
) -> Result<()> {
    let partitions: Vec<i32> = progress.iter().map(|a| a.partition).collect();
    let next: Vec<i64> = progress.iter().map(|a| a.next_offset).collect();
    let lsns: Vec<Option<i64>> = progress
        .iter()
        .map(|a| a.applied.map(|p| p.lsn.0 as i64))
        .collect();
    let positions: Vec<Option<i64>> = progress
        .iter()
        .map(|a| a.applied.map(|p| p.position))
        .collect();
    tx.query_typed(
        "UPDATE sink_offsets s
         SET next_offset = u.next, last_lsn = coalesce(u.lsn, s.last_lsn),
             last_position = coalesce(u.pos, s.last_position), updated_at = now()
         FROM unnest($3::int[], $4::bigint[], $5::bigint[], $6::bigint[]) AS u(partition, next, lsn, pos)
         WHERE s.consumer = $1 AND s.topic = $2 AND s.partition = u.partition",
        &[
            (&consumer, Type::TEXT),
            (&topic, Type::TEXT),
            (&partitions, Type::INT4_ARRAY),
            (&next, Type::INT8_ARRAY),
            (&lsns, Type::INT8_ARRAY),
            (&positions, Type::INT8_ARRAY),
        ],
    )
    .await?;
    Ok(())
}

/// Where each partition of the records resumes.
pub fn progress(records: &[OwnedMessage]) -> Vec<Advance> {
    let mut next: HashMap<i32, i64> = HashMap::new();
    for m in records {
        let n = next.entry(m.partition()).or_default();
        *n = (*n).max(m.offset() + 1);
    }
    next.into_iter()
        .map(|(partition, next_offset)| Advance {
            partition,
            next_offset,
            applied: None,
        })
        .collect()
}

/// A partition's row as `status` and the tests read it, with no lock: where its sink
/// resumes, and who claimed it last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub consumer: String,
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    pub owner: Option<String>,
}

/// Every partition of every sink, ordered by consumer, topic and partition.
pub async fn stored(client: &impl GenericClient) -> Result<Vec<Stored>> {
    let rows = client
        .query(
            "SELECT consumer, topic, partition, next_offset, owner FROM sink_offsets
             ORDER BY consumer, topic, partition",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Stored {
            consumer: r.get(0),
            topic: r.get(1),
            partition: r.get(2),
            next_offset: r.get(3),
            owner: r.get(4),
        })
        .collect())
}

/// The partitions of `topic` that `consumer` has a row for (claimed at some time).
pub async fn partitions(
    client: &impl GenericClient,
    consumer: &str,
    topic: &str,
) -> Result<Vec<i32>> {
    Ok(stored(client)
        .await?
        .into_iter()
        .filter(|s| s.consumer == consumer && s.topic == topic)
        .map(|s| s.partition)
        .collect())
}

/// Clears the last applied source position of `partitions`, so that one where a rebuild
/// read nothing keeps none (`advance` leaves a position it is not given as it was).
pub async fn forget_applied(
    tx: &Transaction<'_>,
    consumer: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<()> {
    tx.execute(
        "UPDATE sink_offsets SET last_lsn = NULL, last_position = NULL
         WHERE consumer = $1 AND topic = $2 AND partition = ANY($3)",
        &[&consumer, &topic, &partitions],
    )
    .await?;
    Ok(())
}
