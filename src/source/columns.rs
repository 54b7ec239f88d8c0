//! The PostgreSQL type of each column, named as `format_type` names it, for the `pg_type`
//! attribute of the row schema. The snapshot (columns from pg_attribute) and the stream
//! (columns from the Relation message) ask the same question of the same session, so they
//! register the same schema for the same table, which a restart or a later Relation finds
//! already registered.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::avro::ColumnType;
use crate::db::quote_ident;
use crate::error::{Error, Result};

/// A session of its own whose search_path is only pg_catalog, so a type outside it is
/// always named with its schema ("public.mood", "public.mood[]"), whatever the role's
/// search_path; no other statement runs in it.
pub struct TypeCatalog {
    client: Client,
}

impl TypeCatalog {
    pub async fn connect(database_url: &str) -> Result<TypeCatalog> {
        let client = crate::db::connect(database_url).await?;
        client.batch_execute("SET search_path = pg_catalog").await?;
        Ok(TypeCatalog { client })
    }

    /// (name, type OID, type modifier) as the columns of a schema. A type the catalog no
    /// longer has (dropped since the change was written) is named by the stream's Type
    /// message, from `announced`, or by its OID.
    pub async fn describe(
        &self,
        columns: &[(String, u32, i32)],
        announced: &HashMap<u32, String>,
    ) -> Result<Vec<ColumnType>> {
        let oids: Vec<u32> = columns.iter().map(|c| c.1).collect();
        let modifiers: Vec<i32> = columns.iter().map(|c| c.2).collect();
        let rows = self
            .client
            .query(
                "SELECT format_type(c.oid, NULLIF(c.typmod, -1)), EXISTS (SELECT 1 FROM pg_type WHERE oid = c.oid)
                 FROM unnest($1::oid[], $2::int4[]) WITH ORDINALITY AS c(oid, typmod, n) ORDER BY n",
                &[&oids, &modifiers],
            )
            .await?;
        Ok(columns
            .iter()
            .zip(rows)
            .map(|((name, oid, typmod), row)| {
                let known: bool = row.get(1);
                let pg_type = match row.get::<_, Option<String>>(0) {
                    Some(t) if known => t,
                    _ => announced
                        .get(oid)
                        .cloned()
                        .unwrap_or_else(|| format!("oid {oid}")),
                };
                ColumnType {
                    name: name.clone(),
                    type_oid: *oid,
                    type_modifier: *typmod,
                    pg_type,
                }
            })
            .collect())
    }

    /// Refuses a table whose `id` column may be NULL: a row without an id could be carried,
    /// but never judged or counted, so a review would be lost downstream. A table without an
    /// `id` column (course_stats) is not concerned.
    pub async fn refuse_nullable_id(&self, namespace: &str, table: &str) -> Result<()> {
        let qualified = format!("{}.{}", quote_ident(namespace), quote_ident(table));
        let nullable: Option<bool> = self
            .client
            .query_opt(
                "SELECT NOT attnotnull FROM pg_attribute
                 WHERE attrelid = to_regclass($1) AND attname = 'id' AND attnum > 0 AND NOT attisdropped",
                &[&qualified],
            )
            .await?
            .map(|r| r.get(0));
        if nullable == Some(true) {
            return Err(Error::Config(format!(
                "column id of {namespace}.{table} may be NULL (its NOT NULL or primary key was \
                 dropped): a review without an id cannot be judged or counted. Restore it (fix or \
                 delete the rows WHERE id IS NULL, then ALTER TABLE {namespace}.{table} ALTER COLUMN \
                 id SET NOT NULL, or add the primary key back) and start cdc again"
            )));
        }
        Ok(())
    }
}
