//! Where PostgreSQL, Kafka and the schema registry are, and as whom each part connects:
//! the flags, and the plain values they resolve to. Resolving starts nothing: when a URL is
//! not given, the command line starts the local stack and passes its addresses in.

use std::path::PathBuf;

use super::kafka::{read_properties, ClientSetting, ClientSettingParser};
use super::{kafka_client_settings, DbRole, KafkaSettings};
use crate::error::{Error, Result};
use crate::secret::redact_url;

/// Where the pipeline's dependencies live, and as whom each stage connects.
#[derive(clap::Args, Clone, Default)]
pub struct Connections {
    /// PostgreSQL connection string of the database owner, who applies the migrations; the
    /// stages use it too unless given their own below. Unset (with none of those either)
    /// means the local stack's. TLS: `sslmode` (disable, prefer, require, verify-ca,
    /// verify-full), `sslrootcert`, `sslcert`, `sslkey`, as in libpq.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Connection string of `cdc`: a login in group reviewflow_cdc with REPLICATION.
    #[arg(
        id = "cdc_database_url",
        long = "cdc-database-url",
        env = "CDC_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub cdc_database_url: Option<String>,

    /// Connection string of `api`, `import` and `demo`: a login in group reviewflow_api.
    #[arg(
        id = "api_database_url",
        long = "api-database-url",
        env = "API_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub api_database_url: Option<String>,

    /// Connection string of `fraud`, `verdicts` and `stats`: a login in group reviewflow_worker.
    #[arg(
        id = "worker_database_url",
        long = "worker-database-url",
        env = "WORKER_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub worker_database_url: Option<String>,

    /// Kafka bootstrap servers; unset means the local stack's. Other `KAFKA_*` variables are
    /// passed to the Kafka clients as settings (KAFKA_SECURITY_PROTOCOL -> security.protocol).
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", global = true)]
    pub kafka_bootstrap_servers: Option<String>,

    /// A librdkafka properties file (`key=value` lines, `#` comments) for every Kafka client:
    /// security.protocol, sasl.*, ssl.*. KAFKA_* variables and --kafka-option win over it.
    #[arg(
        id = "kafka_properties",
        long = "kafka-properties",
        value_name = "FILE",
        env = "REVIEWFLOW_KAFKA_PROPERTIES",
        global = true
    )]
    pub kafka_properties: Option<PathBuf>,

    /// One librdkafka setting for every Kafka client, as KEY=VALUE (repeatable); wins over
    /// the properties file and KAFKA_* variables. Secret values are never logged.
    #[arg(
        id = "kafka_option",
        long = "kafka-option",
        value_name = "KEY=VALUE",
        global = true,
        value_parser = ClientSettingParser
    )]
    pub kafka_options: Vec<ClientSetting>,

    /// A Confluent-compatible schema registry; unset means reviewflow's own.
    #[arg(long, env = "SCHEMA_REGISTRY_URL", global = true)]
    pub schema_registry_url: Option<String>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = |u: &Option<String>| u.as_deref().map(redact_url);
        f.debug_struct("Connections")
            .field("database_url", &url(&self.database_url))
            .field("cdc_database_url", &url(&self.cdc_database_url))
            .field("api_database_url", &url(&self.api_database_url))
            .field("worker_database_url", &url(&self.worker_database_url))
            .field("kafka_bootstrap_servers", &self.kafka_bootstrap_servers)
            .field("kafka_properties", &self.kafka_properties)
            .field("kafka_options", &self.kafka_options)
            .field("schema_registry_url", &url(&self.schema_registry_url))
            .finish()
    }
}

/// Where the local stack's PostgreSQL and Kafka are: what an unset URL resolves to.
#[derive(Clone, Debug)]
pub struct LocalStack {
    pub database_url: String,
    pub kafka_bootstrap_servers: String,
}

impl Connections {
    /// Whether `resolve` needs the local stack: PostgreSQL counts as configured when
    /// DATABASE_URL or any stage's own URL is set, Kafka when its bootstrap servers are.
    pub fn needs_local_stack(&self) -> bool {
        let roles_only = [
            &self.cdc_database_url,
            &self.api_database_url,
            &self.worker_database_url,
        ]
        .into_iter()
        .any(|u| non_empty(u).is_some());
        self.kafka_bootstrap_servers.is_none() || (self.database_url.is_none() && !roles_only)
    }

    /// The configured values, with what is missing taken from `local` (which must be given
    /// when `needs_local_stack`). Reads the Kafka properties file and the `KAFKA_*`
    /// variables; starts nothing.
    pub fn resolve(&self, local: Option<&LocalStack>) -> Result<Deployment> {
        let cdc = non_empty(&self.cdc_database_url);
        let api = non_empty(&self.api_database_url);
        let worker = non_empty(&self.worker_database_url);
        let roles_only = cdc.is_some() || api.is_some() || worker.is_some();
        let (owner, bootstrap_servers) = match (local, self.needs_local_stack()) {
            (_, false) => (
                self.database_url.clone(),
                self.kafka_bootstrap_servers.clone().unwrap_or_default(),
            ),
            (Some(local), true) => (
                match &self.database_url {
                    Some(db) => Some(db.clone()),
                    None if roles_only => None,
                    None => Some(local.database_url.clone()),
                },
                self.kafka_bootstrap_servers
                    .clone()
                    .unwrap_or_else(|| local.kafka_bootstrap_servers.clone()),
            ),
            (None, true) => {
                return Err(Error::Config(
                    "no PostgreSQL or Kafka configured: set DATABASE_URL and \
                     KAFKA_BOOTSTRAP_SERVERS, or let reviewflow start its local stack"
                        .into(),
                ))
            }
        };
        if owner.as_deref().is_some_and(|u| u.trim().is_empty()) {
            return Err(Error::Config("DATABASE_URL is empty".into()));
        }
        let mut client = match &self.kafka_properties {
            Some(path) => read_properties(path)?,
            None => Vec::new(),
        };
        client.extend(kafka_client_settings(std::env::vars()));
        client.extend(
            self.kafka_options
                .iter()
                .map(|o| (o.key.clone(), o.value.clone())),
        );
        Ok(Deployment {
            urls: DbUrls {
                owner,
                cdc,
                api,
                worker,
            },
            kafka: KafkaSettings {
                bootstrap_servers,
                client,
            },
            schema_registry_url: self.schema_registry_url.clone(),
        })
    }
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.trim().is_empty())
}

/// The resolved connections of every part: plain values. A part takes its own `Settings`
/// from it (`settings(role)`), whose one database URL is then always that part's.
#[derive(Clone)]
pub struct Deployment {
    pub urls: DbUrls,
    pub kafka: KafkaSettings,
    pub schema_registry_url: Option<String>,
}

/// Each role's PostgreSQL connection string; a stage role without its own uses the owner's.
#[derive(Clone, Default)]
pub struct DbUrls {
    /// The tables' owner (DATABASE_URL, or the local stack's): migrations run with it. None
    /// when only the stages' own roles are configured.
    pub owner: Option<String>,
    pub cdc: Option<String>,
    pub api: Option<String>,
    pub worker: Option<String>,
}

impl Deployment {
    /// The connection string `role` connects with: its own, else the owner's.
    pub fn url(&self, role: DbRole) -> Result<&str> {
        let own = match role {
            DbRole::Owner => None,
            DbRole::Cdc => self.urls.cdc.as_deref(),
            DbRole::Api => self.urls.api.as_deref(),
            DbRole::Worker => self.urls.worker.as_deref(),
        };
        own.or(self.urls.owner.as_deref()).ok_or_else(|| {
            Error::Config(match role {
                DbRole::Owner => "this command runs as the tables' owner: set DATABASE_URL".into(),
                _ => format!(
                    "no PostgreSQL connection for this part: set {} (or DATABASE_URL)",
                    role.variable()
                ),
            })
        })
    }

    /// The settings of a part that connects as `role`.
    pub fn settings(&self, role: DbRole) -> Result<Settings> {
        Ok(Settings {
            database_url: self.url(role)?.to_owned(),
            kafka: self.kafka.clone(),
            schema_registry_url: self.schema_registry_url.clone(),
        })
    }
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = |u: &Option<String>| u.as_deref().map(redact_url);
        f.debug_struct("Deployment")
            .field("owner_url", &url(&self.urls.owner))
            .field("cdc_url", &url(&self.urls.cdc))
            .field("api_url", &url(&self.urls.api))
            .field("worker_url", &url(&self.urls.worker))
            .field("kafka", &self.kafka)
            .field("schema_registry_url", &url(&self.schema_registry_url))
            .finish()
    }
}

/// One part's settings, ready for its stage: plain values, built from a `Deployment` or by
/// hand (tests point one at a private database).
#[derive(Clone)]
pub struct Settings {
    /// The connection string of the part holding these settings, as its role.
    pub database_url: String,
    pub kafka: KafkaSettings,
    pub schema_registry_url: Option<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = |u: &Option<String>| u.as_deref().map(redact_url);
        f.debug_struct("Settings")
            .field("database_url", &redact_url(&self.database_url))
            .field("kafka", &self.kafka)
            .field("schema_registry_url", &url(&self.schema_registry_url))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_every_secret() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct Only {
            #[command(flatten)]
            c: Connections,
        }
        let only = Only::parse_from([
            "t",
            "--database-url",
            "postgres://o:owner-s3cret@h/db",
            "--api-database-url",
            "postgres://a:api-s3cret@h/db",
            "--kafka-option",
            "sasl.password=kafka-s3cret",
            "--kafka-option",
            "sasl.username=alice",
        ]);
        let shown = format!("{only:?}");
        for secret in ["owner-s3cret", "api-s3cret", "kafka-s3cret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("sasl.username=alice"), "{shown}");
        let deployment = Deployment {
            urls: DbUrls {
                owner: Some("postgres://o:owner-s3cret@h/db".into()),
                cdc: Some("host=h password=cdc-s3cret".into()),
                ..DbUrls::default()
            },
            kafka: KafkaSettings {
                bootstrap_servers: "b:9092".into(),
                client: vec![("ssl.key.password".into(), "key-s3cret".into())],
            },
            schema_registry_url: None,
        };
        let shown = format!("{deployment:?}");
        for secret in ["owner-s3cret", "cdc-s3cret", "key-s3cret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let shown = format!("{:?}", deployment.settings(DbRole::Owner).unwrap());
        for secret in ["owner-s3cret", "key-s3cret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn a_bad_kafka_option_is_refused_without_being_echoed() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct Only {
            #[command(flatten)]
            c: Connections,
        }
        let e = Only::try_parse_from(["t", "--kafka-option", "sasl.password:hunter2"]).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn each_role_falls_back_to_the_owner() {
        let deployment = Deployment {
            urls: DbUrls {
                cdc: Some("postgres://cdc@h/db".into()),
                ..DbUrls::default()
            },
            kafka: KafkaSettings {
                bootstrap_servers: "b".into(),
                client: vec![],
            },
            schema_registry_url: None,
        };
        assert_eq!(
            deployment.settings(DbRole::Cdc).unwrap().database_url,
            "postgres://cdc@h/db"
        );
        let e = deployment.url(DbRole::Api).unwrap_err().to_string();
        assert!(e.contains("API_DATABASE_URL"), "{e}");
        let owned = Deployment {
            urls: DbUrls {
                owner: Some("postgres://o@h/db".into()),
                ..deployment.urls
            },
            ..deployment
        };
        assert_eq!(owned.url(DbRole::Worker).unwrap(), "postgres://o@h/db");
        assert_eq!(owned.url(DbRole::Cdc).unwrap(), "postgres://cdc@h/db");
    }

    /// Configured URLs resolve without the local stack; only a missing one needs it.
    #[test]
    fn configured_connections_need_no_local_stack() {
        let given = Connections {
            database_url: Some("postgres://o@h/db".into()),
            kafka_bootstrap_servers: Some("b:9092".into()),
            ..Connections::default()
        };
        assert!(!given.needs_local_stack());
        let deployment = given.resolve(None).unwrap();
        assert_eq!(deployment.url(DbRole::Api).unwrap(), "postgres://o@h/db");
        assert_eq!(deployment.kafka.bootstrap_servers, "b:9092");
        let roles_only = Connections {
            cdc_database_url: Some("postgres://c@h/db".into()),
            kafka_bootstrap_servers: Some("b:9092".into()),
            ..Connections::default()
        };
        assert!(!roles_only.needs_local_stack());
        let kafka_missing = Connections {
            kafka_bootstrap_servers: None,
            ..given
        };
        assert!(kafka_missing.needs_local_stack());
        let local = LocalStack {
            database_url: "postgres://local/db".into(),
            kafka_bootstrap_servers: "local:19092".into(),
        };
        let filled = kafka_missing.resolve(Some(&local)).unwrap();
        assert_eq!(filled.url(DbRole::Owner).unwrap(), "postgres://o@h/db");
        assert_eq!(filled.kafka.bootstrap_servers, "local:19092");
    }
}
