//! Kafka's release jars and its own tools run from them: the jars fetched once per version
//! from Maven Central into the cache, and the storage tool that formats a node's log folder.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::super::{process, write_file, StackConfig};
use crate::error::{Error, Result};

/// The log4j release Kafka's own jars are built against; its slf4j binding makes the broker log.
const LOG4J_VERSION: &str = "2.24.3";

/// Once per Kafka version: a throwaway pom whose runtime dependencies are the broker.
pub(super) async fn fetch(cfg: &StackConfig) -> Result<PathBuf> {
    let dir = cfg.cache().join(format!("kafka-{}", cfg.kafka_version));
    let libs = dir.join("libs");
    if libs.join(".complete").exists() {
        return Ok(libs);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io_path("create", &dir, e))?;
    let dependency = |group: &str, artifact: &str, version: &str| {
        format!("<dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId><version>{version}</version></dependency>")
    };
    let v = &cfg.kafka_version;
    let pom = format!(
        "<project xmlns=\"http://maven.apache.org/POM/4.0.0\"><modelVersion>4.0.0</modelVersion>\
         <groupId>local.reviewflow</groupId><artifactId>kafka-runtime</artifactId><version>1</version>\
         <dependencies>{}{}{}</dependencies></project>\n",
        dependency("org.apache.kafka", "kafka_2.13", v),
        dependency("org.apache.kafka", "kafka-tools", v),
        dependency("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
    );
    write_file(&dir.join("pom.xml"), pom.as_bytes(), 0o644)?;
    tracing::info!(version = %v, into = %libs.display(), "fetching Apache Kafka jars from Maven Central (once)");
    let mut mvn = Command::new("mvn");
    mvn.current_dir(&dir)
        .args([
            "-B",
            "-q",
            "-f",
            "pom.xml",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
        ])
        .arg(format!("-DoutputDirectory={}", libs.display()));
    process::run(
        "mvn dependency:copy-dependencies (is Maven installed? apt-get install maven)",
        &mut mvn,
    )
    .await?;
    write_file(&libs.join(".complete"), b"", 0o644)?;
    Ok(libs)
}

/// A new cluster id, as Kafka writes them.
pub(super) async fn random_cluster_id(libs: &Path) -> Result<String> {
    let mut uuid = java();
    uuid.arg("-cp")
        .arg(classpath(libs))
        .args(["kafka.tools.StorageTool", "random-uuid"]);
    let out = process::run("kafka-storage random-uuid", &mut uuid).await?;
    Ok(out.lines().last().unwrap_or_default().trim().to_string())
}

/// How a node's storage is formatted.
pub(super) enum Quorum<'a> {
    /// The single node is the one voter of a quorum it starts alone (a new cluster id).
    Standalone,
    /// A node of a cluster whose voters its configuration lists (`controller.quorum.voters`),
    /// with the cluster's id.
    Voters { cluster_id: &'a str },
}

pub(super) async fn format_storage(
    libs: &Path,
    properties: &Path,
    quorum: Quorum<'_>,
) -> Result<()> {
    let (cluster_id, standalone) = match quorum {
        Quorum::Standalone => (random_cluster_id(libs).await?, true),
        Quorum::Voters { cluster_id } => (cluster_id.to_owned(), false),
    };
    let mut format = java();
    format
        .arg("-cp")
        .arg(classpath(libs))
        .args(["kafka.tools.StorageTool", "format"]);
    if standalone {
        format.arg("--standalone");
    }
    format.args(["-t", &cluster_id, "-c"]).arg(properties);
    process::run("kafka-storage format", &mut format).await?;
    Ok(())
}

pub(super) fn java() -> Command {
    let java = std::env::var_os("JAVA_HOME")
        .map(|h| PathBuf::from(h).join("bin/java"))
        .unwrap_or_else(|| PathBuf::from("java"));
    Command::new(java)
}

pub(super) fn classpath(libs: &Path) -> String {
    format!("{}/*", libs.display())
}
