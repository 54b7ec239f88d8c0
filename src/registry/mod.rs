//! The schema registry: where every Avro schema written to Kafka is registered, so that any
//! Confluent-compatible consumer can read our topics (the wire format carries only the id).
//!
//! Two implementations behind one [`Registry`]: [`RemoteRegistry`] talks to any registry that
//! speaks Confluent's REST API (SCHEMA_REGISTRY_URL), and [`LocalRegistry`] is reviewflow's own,
//! kept in PostgreSQL, whose REST face ([`router`]) standard clients (Java
//! KafkaAvroSerializer, Python confluent-kafka) can use as they would Confluent's.
//!
//! Guarantees: an id always names the same schema (ids are global and immutable, so lookups
//! by id are cached for the life of the process); a schema is registered under a subject only
//! after passing the subject's compatibility check (BACKWARD unless configured otherwise);
//! registering an already registered schema returns its id and adds no version, even when
//! several processes register at once.

mod client;
mod compat;
mod http;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use apache_avro::Schema;

pub use client::RemoteRegistry;
pub use compat::Level;
pub use http::router;
pub(crate) use http::MEDIA_TYPE;
pub use store::LocalRegistry;

use crate::config::Settings;
use crate::error::{Error, Result};

/// Where schemas are registered; cheap to clone, shareable between tasks.
#[derive(Clone)]
pub enum Registry {
    Remote(RemoteRegistry),
    Local(LocalRegistry),
}

impl Registry {
    /// Remote when `settings.schema_registry_url` is set (and not blank), else reviewflow's
    /// own registry in the pipeline's PostgreSQL database (which must be migrated).
    pub async fn connect(settings: &Settings) -> Result<Registry> {
        match settings
            .schema_registry_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
        {
            Some(url) => {
                let remote = RemoteRegistry::new(url)?;
                tracing::info!(url = %remote.url(), "using the schema registry at SCHEMA_REGISTRY_URL");
                Ok(Registry::Remote(remote))
            }
            None => {
                let local = LocalRegistry::connect(&settings.database_url).await?;
                tracing::info!("using reviewflow's own schema registry (in PostgreSQL)");
                Ok(Registry::Local(local))
            }
        }
    }

    /// Registers (or finds) `schema` under `subject` after the subject's compatibility
    /// check; returns the global id. An incompatible schema is `Error::IncompatibleSchema`.
    pub async fn register(&self, subject: &str, schema: &Schema) -> Result<u32> {
        match self {
            Registry::Remote(r) => r.register(subject, schema).await,
            Registry::Local(r) => r.register(subject, schema).await,
        }
    }

    /// The schema with this id.
    pub async fn schema(&self, id: u32) -> Result<Arc<Schema>> {
        match self {
            Registry::Remote(r) => r.schema(id).await,
            Registry::Local(r) => r.schema(id).await,
        }
    }

    /// The writer schema, its id and the Avro body of a wire-format record value; or why
    /// the record cannot be read, which makes it a dead letter. An `Err` is only registry
    /// trouble that trying again may cure.
    pub async fn resolve<'a>(&self, value: Option<&'a [u8]>) -> Result<Result<Framed<'a>, String>> {
        let Some(value) = value else {
            return Ok(Err("no value (a tombstone)".into()));
        };
        let (id, body) = match crate::avro::wire::unframe(value) {
            Ok(framed) => framed,
            Err(e) => return Ok(Err(e.to_string())),
        };
        match self.schema(id).await {
            Ok(schema) => Ok(Ok(Framed { schema, id, body })),
            Err(e @ Error::UnknownSchema { .. }) => Ok(Err(e.to_string())),
            Err(e) => Err(e),
        }
    }
}

/// The subject a topic's record values are registered under: Confluent's default
/// TopicNameStrategy, which DESIGN.md fixes so that standard consumers find our schemas.
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// The subject a topic's record keys are registered under (TopicNameStrategy, as
/// [`value_subject`]).
pub fn key_subject(topic: &str) -> String {
    format!("{topic}-key")
}

/// A record value in the wire format, with the schema it was written with.
pub struct Framed<'a> {
    pub schema: Arc<Schema>,
    pub id: u32,
    pub body: &'a [u8],
}

/// The text a schema is registered and identified by: apache-avro's JSON serialisation of the
/// parsed schema. It keeps everything a reader needs (defaults, logical types, docs, custom
/// attributes), unlike Avro's Parsing Canonical Form, and it is the same however the JSON the
/// client sent was spaced or ordered, so equal schemas get equal ids.
pub fn normalised(schema: &Schema) -> Result<String> {
    serde_json::to_string(schema)
        .map_err(|e| Error::Registry(format!("cannot serialise schema: {e}")))
}

/// What a registry client remembers: ids never change meaning, so neither entry goes stale
/// (a registration is remembered like Confluent's clients do, until its subject is deleted
/// through this process).
#[derive(Default)]
struct Memo {
    schemas: Mutex<HashMap<u32, Arc<Schema>>>,
    /// (subject, normalised schema) -> id.
    registered: Mutex<HashMap<(String, String), u32>>,
}

impl Memo {
    fn schema(&self, id: u32) -> Option<Arc<Schema>> {
        // A panic elsewhere while holding the lock cannot leave a map half-written.
        let map = self.schemas.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&id).cloned()
    }

    fn remember_schema(&self, id: u32, schema: Schema) -> Arc<Schema> {
        let mut map = self.schemas.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(id).or_insert_with(|| Arc::new(schema)).clone()
    }

    fn registered(&self, subject: &str, normalised: &str) -> Option<u32> {
        let map = self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(&(subject.to_owned(), normalised.to_owned()))
            .copied()
    }

    fn remember_registered(&self, subject: &str, normalised: String, id: u32) {
        let mut map = self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.insert((subject.to_owned(), normalised), id);
    }

    fn forget_subject(&self, subject: &str) {
        let mut map = self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.retain(|(s, _), _| s != subject);
    }
}

/// Parses a schema as stored by a registry, naming the id when it does not parse.
fn parse_stored(id: u32, text: &str) -> Result<Schema> {
    Schema::parse_str(text)
        .map_err(|e| Error::Registry(format!("schema id {id} is not a valid Avro schema: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_text_ignores_spacing_and_key_order() {
        let a = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long","default":1}]}"#,
        )
        .unwrap();
        let b = Schema::parse_str(
            r#"{ "fields": [ {"default": 1, "type": "long", "name": "a"} ],
                 "name": "R", "type": "record" }"#,
        )
        .unwrap();
        assert_eq!(normalised(&a).unwrap(), normalised(&b).unwrap());
    }

    #[test]
    fn normalised_text_keeps_defaults_and_logical_types() {
        let s = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[
                {"name":"t","type":["null",{"type":"long","logicalType":"timestamp-micros"}],
                 "default":null,"doc":"when"}]}"#,
        )
        .unwrap();
        let text = normalised(&s).unwrap();
        assert!(text.contains(r#""default":null"#), "{text}");
        assert!(text.contains("timestamp-micros"), "{text}");
        let again = Schema::parse_str(&text).unwrap();
        assert_eq!(normalised(&again).unwrap(), text);
    }

    #[test]
    fn subjects_follow_the_topic_name_strategy() {
        assert_eq!(value_subject("reviews.changes"), "reviews.changes-value");
        assert_eq!(key_subject("reviews.changes"), "reviews.changes-key");
    }

    fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}

    #[test]
    fn registry_is_shareable() {
        assert_send_sync_clone::<Registry>();
    }
}
