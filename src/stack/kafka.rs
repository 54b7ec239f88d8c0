//! The local single-node Apache Kafka in KRaft mode (broker and controller in one JVM), run
//! from the official jars. Maven fetches org.apache.kafka:kafka_2.13 and its dependencies
//! from Maven Central once into the cache; the broker's data lives in the stack folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::process::Command;

use super::{process, write_file, StackConfig};
use crate::error::{Error, Result};

pub const KAFKA_VERSION: &str = "4.1.1";
/// The log4j release Kafka's own jars are built against; its slf4j binding makes the broker log.
const LOG4J_VERSION: &str = "2.24.3";

pub async fn up(cfg: &StackConfig) -> Result<String> {
    if let Ok(address) = running_address(cfg) {
        return Ok(address);
    }
    for port in (0..4).map(|i| cfg.kafka_port + i) {
        if !process::port_free(port) {
            return Err(Error::Stack(format!(
                "port {port} is taken by another program; choose other Kafka ports with REVIEWFLOW_KAFKA_PORT \
                 (the controller uses the next port, the SASL_PLAINTEXT and SASL_SSL listeners the two after)"
            )));
        }
    }
    let libs = fetch_jars(cfg).await?;
    let dir = cfg.home().join("kafka");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| Error::io_path("create", &logs, e))?;
    let properties = dir.join("server.properties");
    // It holds the SASL users' passwords.
    let password = sasl_password(&dir)?;
    let keystore = broker_certificate(&dir).await;
    write_file(
        &properties,
        server_properties(cfg, &logs, &password, keystore.as_deref()).as_bytes(),
        0o600,
    )?;
    write_file(&dir.join("log4j2.properties"), LOG4J.as_bytes(), 0o644)?;
    if !logs.join("meta.properties").exists() {
        format_storage(&libs, &properties).await?;
    }

    tracing::info!(port = cfg.kafka_port, version = %cfg.kafka_version, "starting Kafka");
    let log_path = dir.join("kafka.log");
    let log =
        std::fs::File::create(&log_path).map_err(|e| Error::io_path("create", &log_path, e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| Error::io_path("open", &log_path, e))?;
    let child = java()
        .args([
            "-Xms256m",
            "-Xmx768m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
        ])
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            dir.join("log4j2.properties").display()
        ))
        .arg("-cp")
        .arg(classpath(&libs))
        .arg("kafka.Kafka")
        .arg(&properties)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        // Its own process group: a Ctrl-C meant for the caller must not stop the broker.
        .process_group(0)
        .spawn()
        .map_err(|e| Error::Stack(format!("could not start java: {e}")))?;
    let pid = child
        .id()
        .ok_or_else(|| Error::Stack("Kafka exited at once".into()))? as i32;
    write_file(&dir.join("kafka.pid"), pid.to_string().as_bytes(), 0o644)?;

    let address = format!("127.0.0.1:{}", cfg.kafka_port);
    let died = || {
        if process::alive(pid) {
            return Ok(());
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        Err(Error::Stack(format!(
            "Kafka exited while starting; the end of {}:\n{}",
            log_path.display(),
            process::tail(&log, 20)
        )))
    };
    let addr: SocketAddr = address.parse().expect("a loopback address with a port");
    process::wait_for_port(addr, Duration::from_secs(120), died).await?;
    wait_for_metadata(&address).await?;
    Ok(address)
}

pub async fn down(cfg: &StackConfig) -> Result<()> {
    if let Some(pid) = running_pid(cfg) {
        tracing::info!(pid, "stopping Kafka");
        process::terminate(pid, Duration::from_secs(60)).await;
    }
    Ok(())
}

pub fn running_address(cfg: &StackConfig) -> Result<String> {
    running_pid(cfg)
        .map(|_| {
            format!(
                "127.0.0.1:{}",
                configured_port(cfg, "PLAINTEXT").unwrap_or(cfg.kafka_port)
            )
        })
        .ok_or_else(|| {
            Error::Stack(format!(
                "Kafka of {} is not running: run `reviewflow stack up`",
                cfg.home().display()
            ))
        })
}

/// Our broker is the live java process whose command line names our server.properties.
pub(super) fn running_pid(cfg: &StackConfig) -> Option<i32> {
    let dir = cfg.home().join("kafka");
    let pid: i32 = std::fs::read_to_string(dir.join("kafka.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let properties = dir.join("server.properties");
    let ours = process::cmdline(pid).is_some_and(|c| c.contains(&*properties.to_string_lossy()));
    (ours && process::alive(pid)).then_some(pid)
}

/// The port of a listener (`PLAINTEXT`, `SASL_PLAINTEXT`) of the running broker, which may
/// differ from today's flag.
fn configured_port(cfg: &StackConfig, listener: &str) -> Option<u16> {
    let text = std::fs::read_to_string(cfg.home().join("kafka/server.properties")).ok()?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("advertised.listeners="))?;
    let prefix = format!("{listener}://");
    let entry = line
        .split(',')
        .find_map(|e| e.trim().strip_prefix(prefix.as_str()))?;
    entry.rsplit(':').next()?.trim().parse().ok()
}

/// The user of the SASL listener.
const SASL_USER: &str = "reviewflow";

/// The SASL listener's password, made once and kept beside the broker's configuration.
fn sasl_password(dir: &Path) -> Result<String> {
    let file = dir.join("sasl.password");
    if let Ok(password) = std::fs::read_to_string(&file) {
        if !password.trim().is_empty() {
            return Ok(password.trim().to_owned());
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io_path("create", dir, e))?;
    let password = super::postgres::random_hex(18)?;
    write_file(&file, password.as_bytes(), 0o600)?;
    Ok(password)
}

/// (address, user, password) of the running broker's SASL_PLAINTEXT listener.
pub fn sasl(cfg: &StackConfig) -> Result<(String, String, String)> {
    running_address(cfg)?;
    let port = configured_port(cfg, "SASL_PLAINTEXT").ok_or_else(|| {
        Error::Stack(
            "the running broker has no SASL listener (it was started by an older reviewflow): \
             restart it with `reviewflow stack down` and `reviewflow stack up`"
                .into(),
        )
    })?;
    let password = sasl_password(&cfg.home().join("kafka"))?;
    Ok((format!("127.0.0.1:{port}"), SASL_USER.to_owned(), password))
}

/// (address, root certificate) of the running broker's SASL_SSL listener.
pub fn sasl_ssl(cfg: &StackConfig) -> Result<(String, PathBuf)> {
    running_address(cfg)?;
    let port = configured_port(cfg, "SASL_SSL").ok_or_else(|| {
        Error::Stack(
            "the running broker has no SASL_SSL listener (started by an older reviewflow, or \
             `openssl req` failed): restart it with `reviewflow stack down` and `reviewflow stack up`"
                .into(),
        )
    })?;
    Ok((
        format!("127.0.0.1:{port}"),
        cfg.home().join("kafka/tls/ca.pem"),
    ))
}

/// The broker's TLS key and certificate in one PEM file (Kafka's PEM keystore), made once;
/// the certificate alone is `tls/ca.pem`, the root clients verify with. None when it cannot
/// be made: the broker then starts without its TLS listener.
async fn broker_certificate(dir: &Path) -> Option<PathBuf> {
    let tls = dir.join("tls");
    let keystore = tls.join("broker.pem");
    if keystore.exists() {
        return Some(keystore);
    }
    let made = async {
        std::fs::create_dir_all(&tls).map_err(|e| Error::io_path("create", &tls, e))?;
        let (crt, key) = (tls.join("ca.pem"), tls.join("broker.key"));
        super::self_signed(&crt, &key).await?;
        let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io_path("read", p, e));
        let mut pem = read(&key)?;
        pem.extend(read(&crt)?);
        write_file(&keystore, &pem, 0o600)?;
        let _ = std::fs::remove_file(&key);
        Ok::<_, Error>(())
    };
    match made.await {
        Ok(()) => Some(keystore),
        Err(e) => {
            tracing::warn!(error = %e, "no TLS certificate for the local broker; starting it without its SASL_SSL listener");
            None
        }
    }
}

/// Besides the plaintext listener every part uses, a SASL_PLAINTEXT one (PLAIN, one user)
/// on the port after the controller's and a SASL_SSL one (the same user, over TLS) on the
/// next, to try client authentication and TLS against.
fn server_properties(
    cfg: &StackConfig,
    logs: &Path,
    sasl_password: &str,
    keystore: Option<&Path>,
) -> String {
    let (broker, controller, sasl) = (cfg.kafka_port, cfg.kafka_port + 1, cfg.kafka_port + 2);
    let jaas = format!(
        "org.apache.kafka.common.security.plain.PlainLoginModule required user_{SASL_USER}=\"{sasl_password}\";"
    );
    let (tls_listener, tls_map, tls_settings) = match keystore {
        Some(keystore) => (
            format!(",SASL_SSL://127.0.0.1:{}", cfg.kafka_port + 3),
            ",SASL_SSL:SASL_SSL",
            format!(
                "listener.name.sasl_ssl.ssl.keystore.type=PEM\n\
                 listener.name.sasl_ssl.ssl.keystore.location={}\n\
                 listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN\n\
                 listener.name.sasl_ssl.plain.sasl.jaas.config={jaas}\n",
                keystore.display()
            ),
        ),
        None => (String::new(), "", String::new()),
    };
    format!(
        "# written by `reviewflow stack up`\n\
         process.roles=broker,controller\n\
         node.id=1\n\
         controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
         listeners=PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller},SASL_PLAINTEXT://127.0.0.1:{sasl}{tls_listener}\n\
         advertised.listeners=PLAINTEXT://127.0.0.1:{broker},SASL_PLAINTEXT://127.0.0.1:{sasl}{tls_listener}\n\
         controller.listener.names=CONTROLLER\n\
         inter.broker.listener.name=PLAINTEXT\n\
         listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT{tls_map}\n\
         sasl.enabled.mechanisms=PLAIN\n\
         listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN\n\
         listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas}\n\
         {tls_settings}\
         log.dirs={}\n\
         num.partitions=3\n\
         offsets.topic.replication.factor=1\n\
         offsets.topic.num.partitions=10\n\
         transaction.state.log.replication.factor=1\n\
         transaction.state.log.min.isr=1\n\
         transaction.state.log.num.partitions=10\n\
         share.coordinator.state.topic.replication.factor=1\n\
         share.coordinator.state.topic.min.isr=1\n\
         group.initial.rebalance.delay.ms=0\n\
         auto.create.topics.enable=false\n\
         transaction.max.timeout.ms={TRANSACTION_MAX_TIMEOUT_MS}\n",
        logs.display()
    )
}

/// The longest a Kafka transaction may stay open on the local broker: one minute, where
/// Kafka's default is fifteen. Every transaction reviewflow opens must stay well inside what
/// any broker allows (a snapshot commits in chunks for that reason), and the local stack,
/// which every test runs on, holds them to a low limit so that one that does not is seen.
pub const TRANSACTION_MAX_TIMEOUT_MS: u64 = 60_000;

const LOG4J: &str = "status = warn\n\
appender.out.type = Console\n\
appender.out.name = out\n\
appender.out.layout.type = PatternLayout\n\
appender.out.layout.pattern = [%d] %p %m (%c)%n\n\
rootLogger.level = info\n\
rootLogger.appenderRef.out.ref = out\n\
logger.kafka.name = kafka\n\
logger.kafka.level = warn\n\
logger.ak.name = org.apache.kafka\n\
logger.ak.level = warn\n\
logger.started.name = kafka.server.KafkaRaftServer\n\
logger.started.level = info\n";

/// Once per Kafka version: a throwaway pom whose runtime dependencies are the broker.
async fn fetch_jars(cfg: &StackConfig) -> Result<PathBuf> {
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

async fn format_storage(libs: &Path, properties: &Path) -> Result<()> {
    let mut uuid = java();
    uuid.arg("-cp")
        .arg(classpath(libs))
        .args(["kafka.tools.StorageTool", "random-uuid"]);
    let cluster_id = process::run("kafka-storage random-uuid", &mut uuid).await?;
    let cluster_id = cluster_id
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    let mut format = java();
    format
        .arg("-cp")
        .arg(classpath(libs))
        .args([
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            &cluster_id,
            "-c",
        ])
        .arg(properties);
    process::run("kafka-storage format", &mut format).await?;
    Ok(())
}

/// The broker answers metadata requests, not merely accepts TCP.
async fn wait_for_metadata(address: &str) -> Result<()> {
    let address = address.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &address)
            .set("log_level", "3")
            .create()?;
        let mut last = None;
        for _ in 0..60 {
            match consumer.fetch_metadata(None, Duration::from_secs(2)) {
                Ok(m) if !m.brokers().is_empty() => return Ok(()),
                Ok(_) => {}
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(Error::Stack(format!(
            "Kafka at {address} does not answer metadata requests: {last:?}"
        )))
    })
    .await
    .map_err(|e| Error::Stack(format!("metadata wait panicked: {e}")))?
}

fn java() -> Command {
    let java = std::env::var_os("JAVA_HOME")
        .map(|h| PathBuf::from(h).join("bin/java"))
        .unwrap_or_else(|| PathBuf::from("java"));
    Command::new(java)
}

fn classpath(libs: &Path) -> String {
    format!("{}/*", libs.display())
}
