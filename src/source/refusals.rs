//! Settings of the source that would corrupt what cdc writes, refused before anything of them
//! reaches Kafka: at the start of every session (the table's replica identity, the
//! publication), and again whenever a Relation message shows the table. Each refusal is an
//! `Error::Config` (a person must act, so the stage stops instead of retrying) that names the
//! statement fixing it.
//!
//! Why each matters:
//! - REPLICA IDENTITY other than FULL: updates and deletes reach the slot without the whole
//!   old row, so the stats worker could not retract what the review counted before, and an
//!   unchanged TOASTed value could not be filled in. The topic of current state
//!   (`--compacted`, e.g. course_stats's) needs only the key, so there any identity but
//!   NOTHING will do.
//! - A publication without the table, or one that does not publish every operation, a row
//!   filter or a column list: those changes would never reach the slot, silently.
//!   `--compacted` takes no TRUNCATE (its records need a key), so there truncate must not
//!   be published.

use tokio_postgres::Client;

use super::pgoutput::Relation;
use super::snapshot::TABLE_SCHEMA;
use crate::db::readable_ident;
use crate::error::{Error, Result};

/// What cdc reads and how: enough to judge the source's settings.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub table: &'a str,
    pub publication: &'a str,
    pub compacted: bool,
    /// The changes topic, named in the recovery advice.
    pub topic: &'a str,
}

/// Checks the table's replica identity and the publication, as the catalog says now.
pub async fn check(pg: &Client, source: &Source<'_>) -> Result<()> {
    let table = format!("{TABLE_SCHEMA}.{}", source.table);
    let identity = pg
        .query_opt(
            "SELECT c.relreplident::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&TABLE_SCHEMA, &source.table],
        )
        .await?
        .map(|r| r.get::<_, String>(0))
        .ok_or_else(|| {
            Error::Config(format!(
                "table {table} does not exist in this database: check the database URL and \
                 --table (REVIEWFLOW_TABLE), or run `reviewflow migrate`"
            ))
        })?;
    identity_refusal(source, identity.bytes().next().unwrap_or(b'd')).map_or(Ok(()), Err)?;
    check_publication(pg, source, &table).await
}

/// The refusal of a Relation message (or the catalog) showing `identity`, if it is one.
pub fn identity_refusal(source: &Source<'_>, identity: u8) -> Option<Error> {
    let acceptable = identity == b'f' || (source.compacted && identity != b'n');
    if acceptable {
        return None;
    }
    let shown = match identity {
        b'd' => "DEFAULT",
        b'n' => "NOTHING",
        b'i' => "USING INDEX",
        _ => "not FULL",
    };
    let table = format!("{TABLE_SCHEMA}.{}", source.table);
    Some(Error::Config(if source.compacted {
        format!(
            "table {table} has REPLICA IDENTITY NOTHING: its deletes carry no key, so the \
             compacted topic {} could not drop the row. Fix: ALTER TABLE {table} REPLICA IDENTITY FULL \
             (or DEFAULT with a primary key), then start cdc again",
            source.topic
        )
    } else {
        format!(
            "table {table} has REPLICA IDENTITY {shown}: its updates and deletes reach the slot \
             without the whole old row, so the stats worker could not retract what a review \
             counted before. Fix: ALTER TABLE {table} REPLICA IDENTITY FULL. The changes \
             already in the slot were written without before images: then start cdc once with \
             --new-snapshot (`reviewflow cdc --new-snapshot`, with the same settings), which \
             replaces the slot and restates the table on {}, from which the derived tables \
             rebuild themselves",
            source.topic
        )
    }))
}

/// The refusal of a Relation message, if its replica identity is one: what the stream shows,
/// which for changes written before an ALTER TABLE is the identity they were written with.
pub fn relation_refusal(source: &Source<'_>, relation: &Relation) -> Option<Error> {
    let schema = if relation.namespace.is_empty() {
        "pg_catalog"
    } else {
        &relation.namespace
    };
    // Another table of the publication is not the one whose before images the figures need.
    if schema != TABLE_SCHEMA || relation.name != source.table {
        return None;
    }
    identity_refusal(source, relation.replica_identity)
}

async fn check_publication(pg: &Client, source: &Source<'_>, table: &str) -> Result<()> {
    let publication = source.publication;
    let quoted = readable_ident(publication);
    let Some(row) = pg
        .query_opt(
            "SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await?
    else {
        return Err(Error::Config(format!(
            "publication {publication:?} does not exist in this database: create it with \
             CREATE PUBLICATION {quoted} FOR TABLE {table}{}, or name an existing one with \
             --publication (REVIEWFLOW_PUBLICATION)",
            if source.compacted {
                " WITH (publish = 'insert, update, delete')"
            } else {
                ""
            }
        )));
    };
    let publishes: Vec<(&str, bool)> = ["insert", "update", "delete", "truncate"]
        .into_iter()
        .zip((0..4).map(|i| row.get::<_, bool>(i)))
        .collect();
    let needed: &[&str] = if source.compacted {
        &["insert", "update", "delete"]
    } else {
        &["insert", "update", "delete", "truncate"]
    };
    let missing: Vec<&str> = publishes
        .iter()
        .filter(|(op, on)| !on && needed.contains(op))
        .map(|(op, _)| *op)
        .collect();
    let publish = needed.join(", ");
    if !missing.is_empty() {
        return Err(Error::Config(format!(
            "publication {publication:?} does not publish {} of its tables: those changes of \
             {table} would never reach the slot, and the derived tables would silently differ \
             from it. Fix: ALTER PUBLICATION {quoted} SET (publish = '{publish}'), then start \
             cdc again",
            missing.join(", ")
        )));
    }
    if source.compacted && publishes[3].1 {
        return Err(Error::Config(format!(
            "publication {publication:?} publishes truncate, which cannot be written to the \
             compacted topic {} (its records need a key). Fix: ALTER PUBLICATION {quoted} SET \
             (publish = '{publish}'), then start cdc again",
            source.topic
        )));
    }
    // pg_publication_tables resolves FOR ALL TABLES and FOR TABLES IN SCHEMA. Row filters and
    // column lists (PostgreSQL 15) are read through jsonb, so older servers answer NULL.
    // Generated columns do not count: pgoutput never sends them by default, and PostgreSQL 18
    // leaves them out of `attnames` where 15 lists them.
    let listed = pg
        .query_opt(
            "WITH own AS ( \
               SELECT t.*, array(SELECT a.attname::text FROM pg_attribute a \
                  WHERE a.attrelid = format('%I.%I', t.schemaname, t.tablename)::regclass \
                    AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') AS plain \
               FROM pg_publication_tables t \
              WHERE t.pubname = $1 AND t.schemaname = $2 AND t.tablename = $3) \
             SELECT to_jsonb(t) ->> 'rowfilter', \
                    cardinality(plain) - (SELECT count(*)::int FROM unnest(plain) c \
                      WHERE NOT (to_jsonb(t) -> 'attnames') ? c), \
                    cardinality(plain) \
               FROM own t",
            &[&publication, &TABLE_SCHEMA, &source.table],
        )
        .await?;
    let Some(listed) = listed else {
        return Err(Error::Config(format!(
            "publication {publication:?} does not include table {table}: none of its changes \
             would reach the slot. Fix: ALTER PUBLICATION {quoted} ADD TABLE {table}, then start \
             cdc again"
        )));
    };
    if let Some(filter) = listed.get::<_, Option<String>>(0) {
        return Err(Error::Config(format!(
            "publication {publication:?} publishes only the rows of {table} where {filter}: the \
             changes of the others would never reach the slot. Fix: ALTER PUBLICATION {quoted} \
             SET TABLE {table} (without WHERE), then start cdc again"
        )));
    }
    let (published, columns) = (
        listed.get::<_, Option<i32>>(1),
        listed.get::<_, Option<i32>>(2),
    );
    if let (Some(published), Some(columns)) = (published, columns) {
        if published < columns {
            return Err(Error::Config(format!(
                "publication {publication:?} publishes {published} of the {columns} columns of \
                 {table} (a column list): the others would be missing from every change. Fix: \
                 ALTER PUBLICATION {quoted} SET TABLE {table} (without a column list), then start \
                 cdc again"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(compacted: bool) -> Source<'static> {
        Source {
            table: "reviews",
            publication: "reviewflow",
            compacted,
            topic: "reviews.changes",
        }
    }

    #[test]
    fn only_full_serves_the_history_and_anything_with_a_key_the_current_state() {
        assert!(identity_refusal(&source(false), b'f').is_none());
        for identity in [b'd', b'n', b'i'] {
            let e = identity_refusal(&source(false), identity)
                .unwrap()
                .to_string();
            assert!(
                e.contains("ALTER TABLE public.reviews REPLICA IDENTITY FULL")
                    && e.contains("--new-snapshot"),
                "{e}"
            );
        }
        for identity in [b'f', b'd', b'i'] {
            assert!(identity_refusal(&source(true), identity).is_none());
        }
        assert!(identity_refusal(&source(true), b'n').is_some());
    }
}
