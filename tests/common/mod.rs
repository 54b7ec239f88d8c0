//! Shared by the integration tests: one local stack for all of them (started on first use
//! when DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS are not set), and a private database per
//! test so tests that check global invariants do not see each other's rows.
#![allow(dead_code)]

use reviewflow::config::{Connections, Settings};
use reviewflow::stack::StackConfig;
use tokio::sync::OnceCell;

static SETTINGS: OnceCell<Settings> = OnceCell::const_new();

/// Connection settings of the shared stack.
pub async fn settings() -> Settings {
    SETTINGS
        .get_or_init(|| async {
            let connections = Connections {
                database_url: std::env::var("DATABASE_URL").ok(),
                kafka_bootstrap_servers: std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok(),
                schema_registry_url: std::env::var("SCHEMA_REGISTRY_URL").ok(),
            };
            connections
                .resolve(&stack_config())
                .await
                .expect("the local stack starts (see reviewflow stack up)")
        })
        .await
        .clone()
}

pub fn stack_config() -> StackConfig {
    use clap::Parser;
    #[derive(Parser)]
    struct Only {
        #[command(flatten)]
        stack: StackConfig,
    }
    Only::parse_from(["test"]).stack
}

/// A freshly created, migrated database named `rf_test_<name>` on the shared cluster.
pub async fn fresh_database(name: &str) -> String {
    let url = settings().await.database_url;
    let (base, _) = url
        .rsplit_once('/')
        .expect("a database url ends in /dbname");
    let admin = reviewflow::db::connect(&format!("{base}/postgres"))
        .await
        .expect("connect to postgres");
    let db = format!("rf_test_{name}");
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .expect("drop");
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .expect("create");
    let url = format!("{base}/{db}");
    reviewflow::db::migrate(&url).await.expect("migrate");
    url
}

/// A number unlikely to repeat across runs, for ids and topic names.
pub fn unique() -> i64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    (nanos % 1_000_000_000_000) as i64 + i64::from(std::process::id())
}
