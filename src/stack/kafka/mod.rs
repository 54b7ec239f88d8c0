//! The local Apache Kafka in KRaft mode, run from the official jars: by default one node
//! (broker and controller in one JVM), or with `--brokers N` a cluster of N such nodes, each
//! with its own folder and ports and all of them voters of one controller quorum. Maven
//! fetches org.apache.kafka:kafka_2.13 and its dependencies from Maven Central once into the
//! cache; the nodes' data lives in the stack folder.

mod jars;
mod properties;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::{process, write_file, StackConfig};
use crate::error::{Error, Result};

pub const KAFKA_VERSION: &str = "4.1.1";

/// Where a cluster's folder records how many nodes it was formatted with.
const SIZE_FILE: &str = "brokers";

/// One node of the local Kafka: its `node.id` (from 1), its folder, and its four ports
/// (broker, controller, SASL_PLAINTEXT, SASL_SSL), the block of four after the previous node's.
#[derive(Clone, Debug)]
pub(super) struct Node {
    pub id: u8,
    dir: PathBuf,
    first_port: u16,
}

impl Node {
    /// Node 1 keeps the single broker's folder (`kafka/`), so a one-node stack is laid out as
    /// it always was; the others live inside it, in `kafka/node-N`, so one delete purges all.
    pub(super) fn new(home: &Path, base_port: u16, id: u8) -> Node {
        let dir = match id {
            1 => home.join("kafka"),
            n => home.join(format!("kafka/node-{n}")),
        };
        let offset = 4 * u16::from(id.saturating_sub(1));
        Node {
            id,
            dir,
            first_port: base_port.saturating_add(offset),
        }
    }

    fn ports(&self) -> [u16; 4] {
        [0, 1, 2, 3].map(|i| self.first_port.saturating_add(i))
    }

    fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    fn properties(&self) -> PathBuf {
        self.dir.join("server.properties")
    }

    /// The port of a listener (`PLAINTEXT`, `SASL_PLAINTEXT`, `SASL_SSL`) of the node as it
    /// was last started, which may differ from today's flag.
    fn configured_port(&self, listener: &str) -> Option<u16> {
        let text = std::fs::read_to_string(self.properties()).ok()?;
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("advertised.listeners="))?;
        let prefix = format!("{listener}://");
        let entry = line
            .split(',')
            .find_map(|e| e.trim().strip_prefix(prefix.as_str()))?;
        entry.rsplit(':').next()?.trim().parse().ok()
    }

    /// Every port the node listens on as it was last started (today's when never started).
    fn listening_ports(&self) -> Vec<u16> {
        let text = std::fs::read_to_string(self.properties()).unwrap_or_default();
        let configured: Vec<u16> = text
            .lines()
            .find_map(|l| l.strip_prefix("listeners="))
            .map(|line| {
                line.split(',')
                    .filter_map(|e| e.rsplit(':').next()?.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if configured.is_empty() {
            self.ports().to_vec()
        } else {
            configured
        }
    }

    fn address(&self) -> String {
        let port = self.configured_port("PLAINTEXT");
        format!("127.0.0.1:{}", port.unwrap_or(self.first_port))
    }

    /// Our node is the live java process whose command line names its server.properties.
    fn running_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.dir.join("kafka.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let properties = self.properties();
        let ours =
            process::cmdline(pid).is_some_and(|c| c.contains(&*properties.to_string_lossy()));
        (ours && process::alive(pid)).then_some(pid)
    }
}

/// How many nodes the folder's Kafka was formatted with, if it was.
fn formatted_size(home: &Path) -> Option<u8> {
    let dir = home.join("kafka");
    if let Some(n) = std::fs::read_to_string(dir.join(SIZE_FILE))
        .ok()
        .and_then(|t| t.trim().parse().ok())
    {
        return Some(n);
    }
    dir.join("logs/meta.properties").exists().then_some(1)
}

/// The nodes `up` runs: as many as the folder's Kafka was made with, or, for a new folder, as
/// many as `--brokers` asks (one by default). Another count for a folder is refused: a KRaft
/// quorum's voters are fixed when it is formatted.
fn nodes(cfg: &StackConfig) -> Result<Vec<Node>> {
    let home = cfg.home();
    let size = match (formatted_size(&home), cfg.brokers) {
        (Some(made), Some(asked)) if made != asked => {
            return Err(Error::Stack(format!(
                "the Kafka in {} was made with {made} broker(s), not the {asked} that --brokers \
                 (REVIEWFLOW_KAFKA_BROKERS) asks for: run without --brokers (or with --brokers \
                 {made}) to use it, or delete the stack's data with `reviewflow stack down \
                 --purge` and start again with --brokers {asked}",
                home.join("kafka").display()
            )))
        }
        (Some(made), _) => made,
        (None, asked) => asked.unwrap_or(1),
    };
    if u32::from(cfg.kafka_port) + 4 * u32::from(size) > u32::from(u16::MAX) + 1 {
        return Err(Error::Stack(format!(
            "{size} Kafka node(s) take {} ports from {}, past 65535: choose a lower \
             REVIEWFLOW_KAFKA_PORT",
            4 * u32::from(size),
            cfg.kafka_port
        )));
    }
    Ok((1..=size)
        .map(|id| Node::new(&home, cfg.kafka_port, id))
        .collect())
}

/// Refuses what [`nodes`] refuses.
pub(super) fn check(cfg: &StackConfig) -> Result<()> {
    nodes(cfg).map(drop)
}

/// The nodes to stop or show: the folder's, whatever `--brokers` says now.
fn known_nodes(cfg: &StackConfig) -> Vec<Node> {
    let home = cfg.home();
    let size = formatted_size(&home).or(cfg.brokers).unwrap_or(1);
    (1..=size)
        .map(|id| Node::new(&home, cfg.kafka_port, id))
        .collect()
}

fn node(cfg: &StackConfig, id: u8) -> Result<Node> {
    let nodes = known_nodes(cfg);
    let count = nodes.len();
    nodes.into_iter().find(|n| n.id == id).ok_or_else(|| {
        Error::Stack(format!(
            "there is no Kafka node {id}: the stack in {} has {count} (numbered from 1)",
            cfg.home().display()
        ))
    })
}

/// Starts every node that is not running; see [`start`].
pub async fn up(cfg: &StackConfig) -> Result<String> {
    start(cfg, None).await
}

/// Starts the nodes (every one, or only node `only`) that are not running, and waits until
/// each accepts connections and the cluster's metadata lists every running node. Returns the
/// bootstrap list.
pub(super) async fn start(cfg: &StackConfig, only: Option<u8>) -> Result<String> {
    let nodes = nodes(cfg)?;
    if let Some(id) = only {
        node(cfg, id)?;
    }
    let wanted: Vec<&Node> = nodes
        .iter()
        .filter(|n| only.is_none_or(|id| id == n.id) && n.running_pid().is_none())
        .collect();
    if wanted.is_empty() {
        return running_address(cfg);
    }
    for port in wanted.iter().flat_map(|n| n.ports()) {
        if !process::port_free(port) {
            return Err(Error::Stack(format!(
                "port {port} is taken by another program; choose other Kafka ports with REVIEWFLOW_KAFKA_PORT \
                 (each node takes four from it: its broker's, its controller's, then the SASL_PLAINTEXT \
                 and SASL_SSL listeners'; node N starts at that port + 4(N-1))"
            )));
        }
    }
    let libs = jars::fetch(cfg).await?;
    let dir = cfg.home().join("kafka");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io_path("create", &dir, e))?;
    // It holds the SASL users' passwords.
    let password = properties::sasl_password(&dir)?;
    let keystore = properties::broker_certificate(&dir).await;
    write_file(
        &dir.join("log4j2.properties"),
        properties::LOG4J.as_bytes(),
        0o644,
    )?;
    let cluster_id = if nodes.len() > 1 {
        // Before any node is formatted: from now on the folder is a cluster of this size.
        write_file(
            &dir.join(SIZE_FILE),
            nodes.len().to_string().as_bytes(),
            0o644,
        )?;
        Some(cluster_id(&dir, &libs).await?)
    } else {
        None
    };
    let mut formats = Vec::new();
    for node in &wanted {
        let logs = node.logs();
        std::fs::create_dir_all(&logs).map_err(|e| Error::io_path("create", &logs, e))?;
        let text = properties::server_properties(node, &nodes, &password, keystore.as_deref());
        write_file(&node.properties(), text.as_bytes(), 0o600)?;
        if !logs.join("meta.properties").exists() {
            let quorum = match &cluster_id {
                Some(id) => jars::Quorum::Voters { cluster_id: id },
                None => jars::Quorum::Standalone,
            };
            let (libs, properties) = (libs.clone(), node.properties());
            formats.push(async move { jars::format_storage(&libs, &properties, quorum).await });
        }
    }
    futures_util::future::try_join_all(formats).await?;

    // All of them before waiting for any: a node of a cluster opens its broker port only once
    // a majority of the controllers has elected a leader.
    let mut started = Vec::new();
    for node in wanted {
        started.push((node, spawn(cfg, node, &dir, &libs)?));
    }
    for (node, pid) in started {
        let log_path = node.dir.join("kafka.log");
        let died = || {
            if process::alive(pid) {
                return Ok(());
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            Err(Error::Stack(format!(
                "Kafka node {} exited while starting; the end of {}:\n{}",
                node.id,
                log_path.display(),
                process::tail(&log, 20)
            )))
        };
        let addr: SocketAddr = node
            .address()
            .parse()
            .expect("a loopback address with a port");
        process::wait_for_port(addr, Duration::from_secs(120), died).await?;
    }
    let running = nodes.iter().filter(|n| n.running_pid().is_some()).count();
    let address = running_address(cfg)?;
    wait_for_metadata(&address, running).await?;
    Ok(address)
}

/// The cluster's id, made once and kept, so that a node formatted later joins the same cluster.
async fn cluster_id(dir: &Path, libs: &Path) -> Result<String> {
    let file = dir.join("cluster.id");
    if let Ok(id) = std::fs::read_to_string(&file) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_owned());
        }
    }
    let id = jars::random_cluster_id(libs).await?;
    write_file(&file, id.as_bytes(), 0o644)?;
    Ok(id)
}

fn spawn(cfg: &StackConfig, node: &Node, dir: &Path, libs: &Path) -> Result<i32> {
    tracing::info!(node = node.id, port = node.first_port, version = %cfg.kafka_version, "starting Kafka");
    let log_path = node.dir.join("kafka.log");
    let log =
        std::fs::File::create(&log_path).map_err(|e| Error::io_path("create", &log_path, e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| Error::io_path("open", &log_path, e))?;
    let child = jars::java()
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
        .arg(jars::classpath(libs))
        .arg("kafka.Kafka")
        .arg(node.properties())
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
    write_file(
        &node.dir.join("kafka.pid"),
        pid.to_string().as_bytes(),
        0o644,
    )?;
    Ok(pid)
}

/// Stops every node (SIGTERM, then SIGKILL after a minute), all at once.
pub async fn down(cfg: &StackConfig) -> Result<()> {
    let stops = known_nodes(cfg).into_iter().filter_map(|node| {
        let pid = node.running_pid()?;
        tracing::info!(node = node.id, pid, "stopping Kafka");
        Some(process::terminate(pid, Duration::from_secs(60)))
    });
    futures_util::future::join_all(stops).await;
    Ok(())
}

/// Kills node `id` (or every node) with SIGKILL, as a crash would, and waits until it is
/// gone and its ports are free again; nothing is restarted.
pub(super) async fn kill(cfg: &StackConfig, id: Option<u8>) -> Result<()> {
    let nodes = match id {
        Some(id) => vec![node(cfg, id)?],
        None => known_nodes(cfg),
    };
    for node in &nodes {
        if let Some(pid) = node.running_pid() {
            tracing::warn!(node = node.id, pid, "killing Kafka with SIGKILL");
            // SAFETY: a plain signal to a process of this stack.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            process::wait_gone(pid).await;
        }
    }
    // The kernel lets go of a killed process's listening ports a moment after it is gone.
    let ports: Vec<u16> = nodes.iter().flat_map(|n| n.listening_ports()).collect();
    process::wait_ports_free(&ports).await;
    Ok(())
}

/// The bootstrap list of every node (a client finds the live ones), when any node runs.
pub fn running_address(cfg: &StackConfig) -> Result<String> {
    let nodes = known_nodes(cfg);
    if nodes.iter().all(|n| n.running_pid().is_none()) {
        return Err(Error::Stack(format!(
            "Kafka of {} is not running: run `reviewflow stack up`",
            cfg.home().display()
        )));
    }
    Ok(nodes
        .iter()
        .map(Node::address)
        .collect::<Vec<_>>()
        .join(","))
}

/// Each node, running (at its address) or not. A single node is just `kafka`.
pub(super) fn status(cfg: &StackConfig) -> Vec<(String, Result<String>)> {
    let nodes = known_nodes(cfg);
    if nodes.len() == 1 {
        return vec![("kafka".to_string(), running_address(cfg))];
    }
    nodes
        .iter()
        .map(|node| {
            let state = match node.running_pid() {
                Some(_) => Ok(node.address()),
                None => Err(Error::Stack(format!(
                    "Kafka node {} is not running: run `reviewflow stack start-broker {}`",
                    node.id, node.id
                ))),
            };
            (format!("kafka-{}", node.id), state)
        })
        .collect()
}

/// Node 1's process, when it is ours and alive.
pub(super) fn running_pid(cfg: &StackConfig) -> Option<i32> {
    known_nodes(cfg).first()?.running_pid()
}

/// The bootstrap list of one listener of every node, or None when a node has none.
fn listener_addresses(cfg: &StackConfig, listener: &str) -> Option<String> {
    let ports: Option<Vec<String>> = known_nodes(cfg)
        .iter()
        .map(|n| Some(format!("127.0.0.1:{}", n.configured_port(listener)?)))
        .collect();
    Some(ports?.join(","))
}

/// (bootstrap list, user, password) of the running nodes' SASL_PLAINTEXT listeners.
pub fn sasl(cfg: &StackConfig) -> Result<(String, String, String)> {
    running_address(cfg)?;
    let addresses = listener_addresses(cfg, "SASL_PLAINTEXT").ok_or_else(|| {
        Error::Stack(
            "the running broker has no SASL listener (it was started by an older reviewflow): \
             restart it with `reviewflow stack down` and `reviewflow stack up`"
                .into(),
        )
    })?;
    let password = properties::sasl_password(&cfg.home().join("kafka"))?;
    Ok((addresses, properties::SASL_USER.to_owned(), password))
}

/// (bootstrap list, root certificate) of the running nodes' SASL_SSL listeners.
pub fn sasl_ssl(cfg: &StackConfig) -> Result<(String, PathBuf)> {
    running_address(cfg)?;
    let addresses = listener_addresses(cfg, "SASL_SSL").ok_or_else(|| {
        Error::Stack(
            "the running broker has no SASL_SSL listener (started by an older reviewflow, or \
             `openssl req` failed): restart it with `reviewflow stack down` and `reviewflow stack up`"
                .into(),
        )
    })?;
    Ok((addresses, cfg.home().join("kafka/tls/ca.pem")))
}

/// The cluster answers metadata requests listing at least `brokers` brokers (a restarted node
/// is listed once it caught up with the metadata and was unfenced), not merely accepts TCP.
async fn wait_for_metadata(address: &str, brokers: usize) -> Result<()> {
    let address = address.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &address)
            .set("log_level", "3")
            .create()?;
        let mut last = None;
        for _ in 0..120 {
            match consumer.fetch_metadata(None, Duration::from_secs(2)) {
                Ok(m) if m.brokers().len() >= brokers.max(1) => return Ok(()),
                Ok(m) => last = Some(format!("{} of {brokers} brokers listed", m.brokers().len())),
                Err(e) => last = Some(e.to_string()),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(Error::Stack(format!(
            "Kafka at {address} does not answer metadata requests with every node: {}",
            last.unwrap_or_default()
        )))
    })
    .await
    .map_err(|e| Error::Stack(format!("metadata wait panicked: {e}")))?
}
