//! reviewflow's own registry, kept in PostgreSQL (migrations/V2__schema_registry.sql).
//!
//! A registration runs in one transaction holding an advisory lock on its subject, so
//! processes registering at the same time cannot both add a version; the schema row itself is
//! unique by its text, so equal schemas share one id across subjects. Deleting a subject only
//! marks its versions deleted; schema ids are never removed, since Kafka may still hold data
//! written with them.

use std::sync::Arc;

use apache_avro::Schema;
use deadpool_postgres::{GenericClient, Pool};

use super::compat::{self, Existing, Level};
use super::{normalised, parse_stored, Memo};
use crate::error::{Error, Result};

/// First key of the two-key advisory locks taken per subject (the second is the subject's
/// hash). db.rs's migration lock uses the one-key form, which PostgreSQL keeps apart.
const SUBJECT_LOCK_SPACE: i32 = 7_271_101;

/// The registry kept in the pipeline's database; cheap to clone.
#[derive(Clone)]
pub struct LocalRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    memo: Memo,
}

/// One version of a subject.
#[derive(Clone, Debug)]
pub(crate) struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

/// A version as a request names it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum VersionRef {
    Latest,
    Number(u32),
}

/// What deleting a subject did.
pub(crate) enum Deletion {
    /// These versions are now deleted.
    Deleted(Vec<u32>),
    NoSubject,
    /// A soft delete of a subject whose versions are all deleted already.
    AlreadySoftDeleted,
    /// A permanent delete of a subject that still has live versions.
    NotSoftDeleted,
}

const VERSION_COLUMNS: &str = "SELECT v.subject, v.version, s.id, s.schema \
     FROM registry_subject_versions v JOIN registry_schemas s ON s.id = v.schema_id";

impl LocalRegistry {
    pub fn new(pool: Pool) -> Self {
        LocalRegistry {
            inner: Arc::new(Inner {
                pool,
                memo: Memo::default(),
            }),
        }
    }

    /// A registry over the database at `database_url`, which must already be migrated.
    pub async fn connect(database_url: &str) -> Result<Self> {
        let registry = LocalRegistry::new(crate::db::pool(database_url, 4)?);
        registry.level(None).await.map_err(|e| {
            Error::Registry(format!(
                "cannot read the registry's tables (is the database migrated? `reviewflow migrate`): {e}"
            ))
        })?;
        Ok(registry)
    }

    /// See [`super::Registry::register`].
    pub async fn register(&self, subject: &str, schema: &Schema) -> Result<u32> {
        let text = normalised(schema)?;
        if let Some(id) = self.inner.memo.registered(subject, &text) {
            return Ok(id);
        }
        let registered = self.register_normalised(subject, schema, &text).await?;
        self.inner
            .memo
            .remember_registered(subject, text, registered.id);
        Ok(registered.id)
    }

    /// See [`super::Registry::schema`].
    pub async fn schema(&self, id: u32) -> Result<Arc<Schema>> {
        if let Some(schema) = self.inner.memo.schema(id) {
            return Ok(schema);
        }
        let text = self
            .schema_text(id)
            .await?
            .ok_or_else(|| Error::UnknownSchema {
                id,
                registry: "reviewflow's own registry".into(),
            })?;
        Ok(self
            .inner
            .memo
            .remember_schema(id, parse_stored(id, &text)?))
    }

    /// Sets the compatibility level of `subject`, or the global default when `None`.
    pub async fn set_compatibility(&self, subject: Option<&str>, level: Level) -> Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO registry_config (subject, compatibility) VALUES ($1, $2) \
                 ON CONFLICT (subject) DO UPDATE SET compatibility = EXCLUDED.compatibility",
                &[&subject.unwrap_or(""), &level.as_str()],
            )
            .await?;
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.inner.pool.get().await?)
    }

    /// Registers `schema` (whose normalised text is `text`) unless it is a live version of
    /// `subject` already; returns the version that holds it.
    pub(crate) async fn register_normalised(
        &self,
        subject: &str,
        schema: &Schema,
        text: &str,
    ) -> Result<SubjectVersion> {
        if subject.is_empty() {
            return Err(Error::Registry("a subject name cannot be empty".into()));
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_subject(&tx, subject).await?;
        if let Some(found) = find(&tx, subject, text, false).await? {
            return Ok(found);
        }
        let level = effective_level(&tx, subject).await?;
        let problems = problems_against_live(&tx, subject, level, schema).await?;
        if !problems.is_empty() {
            return Err(Error::IncompatibleSchema {
                subject: subject.to_owned(),
                detail: format!("{level}: {}", problems.join("; ")),
            });
        }
        let id = schema_id(&tx, text).await?;
        let row = tx
            .query_one(
                "INSERT INTO registry_subject_versions (subject, version, schema_id) \
                 SELECT $1::text, COALESCE(max(version), 0) + 1, $2 \
                 FROM registry_subject_versions WHERE subject = $1::text \
                 RETURNING version",
                &[&subject, &to_db(id)?],
            )
            .await?;
        tx.commit().await?;
        let version = from_db(row.get(0))?;
        tracing::info!(subject, version, id, "registered a schema");
        Ok(SubjectVersion {
            subject: subject.to_owned(),
            version,
            id,
            schema: text.to_owned(),
        })
    }

    /// The version of `subject` holding the schema with normalised text `text`.
    pub(crate) async fn find(
        &self,
        subject: &str,
        text: &str,
        include_deleted: bool,
    ) -> Result<Option<SubjectVersion>> {
        find(&self.client().await?, subject, text, include_deleted).await
    }

    pub(crate) async fn schema_text(&self, id: u32) -> Result<Option<String>> {
        let Some(id) = db_key(id) else {
            return Ok(None);
        };
        let row = self
            .client()
            .await?
            .query_opt("SELECT schema FROM registry_schemas WHERE id = $1", &[&id])
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The live (subject, version) pairs that hold schema `id`.
    pub(crate) async fn uses_of(&self, id: u32) -> Result<Vec<(String, u32)>> {
        let Some(id) = db_key(id) else {
            return Ok(Vec::new());
        };
        let rows = self
            .client()
            .await?
            .query(
                "SELECT subject, version FROM registry_subject_versions \
                 WHERE schema_id = $1 AND NOT deleted ORDER BY subject, version",
                &[&id],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.get(0), from_db(r.get(1))?)))
            .collect()
    }

    pub(crate) async fn subjects(&self, include_deleted: bool) -> Result<Vec<String>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT DISTINCT subject FROM registry_subject_versions \
                 WHERE $1 OR NOT deleted ORDER BY subject",
                &[&include_deleted],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The subject's versions, oldest first; empty when the subject does not exist.
    pub(crate) async fn versions(&self, subject: &str, include_deleted: bool) -> Result<Vec<u32>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT version FROM registry_subject_versions \
                 WHERE subject = $1 AND ($2 OR NOT deleted) ORDER BY version",
                &[&subject, &include_deleted],
            )
            .await?;
        rows.iter().map(|r| from_db(r.get(0))).collect()
    }

    pub(crate) async fn version(
        &self,
        subject: &str,
        which: VersionRef,
        include_deleted: bool,
    ) -> Result<Option<SubjectVersion>> {
        let client = self.client().await?;
        let row = match which {
            VersionRef::Latest => {
                let sql = format!(
                    "{VERSION_COLUMNS} WHERE v.subject = $1 AND ($2 OR NOT v.deleted) \
                     ORDER BY v.version DESC LIMIT 1"
                );
                client
                    .query_opt(&sql, &[&subject, &include_deleted])
                    .await?
            }
            VersionRef::Number(n) => {
                let Some(n) = db_key(n) else {
                    return Ok(None);
                };
                let sql = format!(
                    "{VERSION_COLUMNS} WHERE v.subject = $1 AND ($2 OR NOT v.deleted) \
                     AND v.version = $3"
                );
                client
                    .query_opt(&sql, &[&subject, &include_deleted, &n])
                    .await?
            }
        };
        row.map(|r| subject_version(&r)).transpose()
    }

    /// Why `schema` is not compatible with `which` version of `subject` under the subject's
    /// level (for `Latest`, exactly the check a registration makes); `None` when that version
    /// does not exist.
    pub(crate) async fn compatibility_problems(
        &self,
        subject: &str,
        which: VersionRef,
        schema: &Schema,
    ) -> Result<Option<Vec<String>>> {
        let client = self.client().await?;
        let level = effective_level(&client, subject).await?;
        match which {
            VersionRef::Latest => Ok(Some(
                problems_against_live(&client, subject, level, schema).await?,
            )),
            VersionRef::Number(_) => {
                let Some(old) = self.version(subject, which, false).await? else {
                    return Ok(None);
                };
                let old_schema = parse_stored(old.id, &old.schema)?;
                let existing = [Existing {
                    version: old.version,
                    schema: &old_schema,
                }];
                Ok(Some(compat::problems(level, schema, &existing)))
            }
        }
    }

    /// The level set for `subject` itself, or the global one when `None`.
    pub(crate) async fn level(&self, subject: Option<&str>) -> Result<Option<Level>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT compatibility FROM registry_config WHERE subject = $1",
                &[&subject.unwrap_or("")],
            )
            .await?;
        row.map(|r| parse_level(r.get(0))).transpose()
    }

    /// Removes the subject's own level; returns it, if it had one.
    pub(crate) async fn clear_level(&self, subject: &str) -> Result<Option<Level>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "DELETE FROM registry_config WHERE subject = $1 AND subject <> '' \
                 RETURNING compatibility",
                &[&subject],
            )
            .await?;
        row.map(|r| parse_level(r.get(0))).transpose()
    }

    /// Confluent's two-step delete: first a soft delete, then (`permanent`) removal of the
    /// soft-deleted versions and the subject's own level.
    pub(crate) async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Deletion> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_subject(&tx, subject).await?;
        let counts = tx
            .query_one(
                "SELECT count(*) FILTER (WHERE NOT deleted), count(*) \
                 FROM registry_subject_versions WHERE subject = $1",
                &[&subject],
            )
            .await?;
        let (live, all): (i64, i64) = (counts.get(0), counts.get(1));
        let outcome = if all == 0 {
            Deletion::NoSubject
        } else if !permanent && live == 0 {
            Deletion::AlreadySoftDeleted
        } else if permanent && live > 0 {
            Deletion::NotSoftDeleted
        } else {
            let sql = if permanent {
                "DELETE FROM registry_subject_versions WHERE subject = $1 RETURNING version"
            } else {
                "UPDATE registry_subject_versions SET deleted = true \
                 WHERE subject = $1 AND NOT deleted RETURNING version"
            };
            let rows = tx.query(sql, &[&subject]).await?;
            if permanent {
                tx.execute(
                    "DELETE FROM registry_config WHERE subject = $1 AND subject <> ''",
                    &[&subject],
                )
                .await?;
            }
            let mut versions = rows
                .iter()
                .map(|r| from_db(r.get(0)))
                .collect::<Result<Vec<_>>>()?;
            versions.sort_unstable();
            Deletion::Deleted(versions)
        };
        tx.commit().await?;
        if let Deletion::Deleted(versions) = &outcome {
            self.inner.memo.forget_subject(subject);
            tracing::info!(subject, ?versions, permanent, "deleted a subject");
        }
        Ok(outcome)
    }
}

async fn find(
    client: &impl GenericClient,
    subject: &str,
    text: &str,
    include_deleted: bool,
) -> Result<Option<SubjectVersion>> {
    let sql = format!(
        "{VERSION_COLUMNS} WHERE v.subject = $1 AND s.schema = $2 AND ($3 OR NOT v.deleted) \
         ORDER BY v.deleted, v.version DESC LIMIT 1"
    );
    let row = client
        .query_opt(&sql, &[&subject, &text, &include_deleted])
        .await?;
    row.map(|r| subject_version(&r)).transpose()
}

/// The subject's own level, else the global one, else BACKWARD.
async fn effective_level(client: &impl GenericClient, subject: &str) -> Result<Level> {
    let row = client
        .query_opt(
            "SELECT compatibility FROM registry_config WHERE subject IN ($1, '') \
             ORDER BY subject = '' LIMIT 1",
            &[&subject],
        )
        .await?;
    row.map_or(Ok(Level::default()), |r| parse_level(r.get(0)))
}

/// Why `schema` may not become the next version of `subject` under `level`.
async fn problems_against_live(
    client: &impl GenericClient,
    subject: &str,
    level: Level,
    schema: &Schema,
) -> Result<Vec<String>> {
    if level == Level::None {
        return Ok(Vec::new());
    }
    // Non-transitive levels look only at the latest version; parse no more than needed.
    let limit: Option<i64> = (!level.transitive()).then_some(1);
    let rows = client
        .query(
            "SELECT * FROM ( \
                 SELECT v.version, s.id, s.schema FROM registry_subject_versions v \
                 JOIN registry_schemas s ON s.id = v.schema_id \
                 WHERE v.subject = $1 AND NOT v.deleted ORDER BY v.version DESC LIMIT $2 \
             ) latest ORDER BY version",
            &[&subject, &limit],
        )
        .await?;
    let mut parsed = Vec::with_capacity(rows.len());
    for row in &rows {
        let id = from_db(row.get(1))?;
        parsed.push((from_db(row.get(0))?, parse_stored(id, row.get(2))?));
    }
    let existing: Vec<Existing<'_>> = parsed
        .iter()
        .map(|(version, schema)| Existing {
            version: *version,
            schema,
        })
        .collect();
    Ok(compat::problems(level, schema, &existing))
}

/// The id of the schema with this text, adding it when new.
async fn schema_id(client: &impl GenericClient, text: &str) -> Result<u32> {
    const SELECT: &str = "SELECT id FROM registry_schemas WHERE schema = $1";
    // Look first so an existing schema does not use up a sequence value.
    if let Some(row) = client.query_opt(SELECT, &[&text]).await? {
        return from_db(row.get(0));
    }
    let inserted = client
        .query_opt(
            "INSERT INTO registry_schemas (schema) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id",
            &[&text],
        )
        .await?;
    // No row: another subject's registration added it after our look; it is committed now
    // (the insert waited for it), and this new statement sees it.
    let row = match inserted {
        Some(row) => row,
        None => client.query_one(SELECT, &[&text]).await?,
    };
    from_db(row.get(0))
}

fn subject_version(row: &tokio_postgres::Row) -> Result<SubjectVersion> {
    Ok(SubjectVersion {
        subject: row.get(0),
        version: from_db(row.get(1))?,
        id: from_db(row.get(2))?,
        schema: row.get(3),
    })
}

fn parse_level(text: String) -> Result<Level> {
    text.parse()
        .map_err(|e| Error::Registry(format!("registry_config holds {e}")))
}

/// Ids and versions are positive `integer`s in the tables (CHECK constraints).
fn from_db(n: i32) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Registry(format!("negative id or version {n} stored")))
}

fn to_db(n: u32) -> Result<i32> {
    db_key(n).ok_or_else(|| Error::Registry(format!("id or version {n} is out of range")))
}

/// The column value for an id or version a request names; `None` when no row can have it.
fn db_key(n: u32) -> Option<i32> {
    i32::try_from(n).ok()
}

/// Serialises changes to one subject across processes, until the transaction ends.
async fn lock_subject(tx: &tokio_postgres::Transaction<'_>, subject: &str) -> Result<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&SUBJECT_LOCK_SPACE, &subject],
    )
    .await?;
    Ok(())
}
