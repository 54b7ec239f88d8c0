//! A private local stack whose Kafka is a cluster (`reviewflow stack up --brokers N`), on its
//! own folder and ports so the shared stack is left alone, stopped and purged when dropped;
//! and what a test of a cluster asks of it: which node leads a partition and which are in
//! sync, which node coordinates a transactional id, and killing and restarting one node.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use reviewflow::config::KafkaSettings;
use reviewflow::stack::StackConfig;

pub struct ClusterStack {
    pub home: PathBuf,
    pub pg_port: u16,
    pub kafka_port: u16,
    /// What `stack up` printed.
    pub up_output: String,
}

impl ClusterStack {
    /// `stack up --brokers <brokers>` on a new folder; panics with its output if it fails.
    pub fn start(name: &str, pg_port: u16, kafka_port: u16, brokers: u8) -> ClusterStack {
        let mut stack = ClusterStack {
            home: std::env::temp_dir().join(format!("rf-{name}-{}", super::unique())),
            pg_port,
            kafka_port,
            up_output: String::new(),
        };
        let (code, out) = stack.run(&["stack", "up", "--brokers", &brokers.to_string()]);
        assert_eq!(code, 0, "stack up --brokers {brokers}: {out}");
        stack.up_output = out;
        stack
    }

    /// `reviewflow <args>` on this stack: exit code and what it printed.
    pub fn run(&self, args: &[&str]) -> (i32, String) {
        run_stack(&self.home, self.pg_port, self.kafka_port, args)
    }

    /// The library's view of this stack, for `reviewflow::stack::kill_broker` and friends.
    pub fn config(&self) -> StackConfig {
        let mut cfg = super::stack_config();
        cfg.home_dir = Some(self.home.clone());
        cfg.pg_port = self.pg_port;
        cfg.kafka_port = self.kafka_port;
        cfg.brokers = None;
        cfg
    }

    /// A variable of `stack env`.
    pub fn env(&self, name: &str) -> String {
        let (code, env) = self.run(&["stack", "env"]);
        assert_eq!(code, 0, "stack env: {env}");
        let line = env
            .lines()
            .find(|l| l.starts_with(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("{name} in {env}"));
        let value = line.split_once('=').unwrap().1;
        value.trim_matches('\'').to_string()
    }

    /// Makes this stack the one `common::settings()` (so `Pipeline`) connects to. Call it
    /// before anything else of the test process reads the settings.
    pub fn use_for_this_process(&self) {
        std::env::set_var("DATABASE_URL", self.env("DATABASE_URL"));
        std::env::set_var(
            "KAFKA_BOOTSTRAP_SERVERS",
            self.env("KAFKA_BOOTSTRAP_SERVERS"),
        );
        std::env::remove_var("SCHEMA_REGISTRY_URL");
    }
}

/// `reviewflow <args>` on the stack in `home` with these ports, none of the shared stack's
/// settings inherited: exit code and what it printed.
pub fn run_stack(home: &Path, pg_port: u16, kafka_port: u16, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reviewflow"))
        .args(args)
        .env("REVIEWFLOW_HOME", home)
        .env("REVIEWFLOW_PG_PORT", pg_port.to_string())
        .env("REVIEWFLOW_KAFKA_PORT", kafka_port.to_string())
        .env_remove("REVIEWFLOW_KAFKA_BROKERS")
        .env_remove("DATABASE_URL")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .output()
        .expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

impl Drop for ClusterStack {
    fn drop(&mut self) {
        // The folder is about to go: a failed test shows what the stages logged last.
        if std::thread::panicking() {
            if let Ok(log) = std::fs::read_to_string(self.home.join("stages.log")) {
                eprintln!(
                    "the stages' log, last lines:\n{}",
                    reviewflow::stack::tail_lines(&log, 60)
                );
            }
        }
        let (code, out) = self.run(&["stack", "down", "--purge"]);
        if code != 0 {
            eprintln!("stack down --purge of {}: {out}", self.home.display());
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// One partition as the cluster's metadata shows it now.
#[derive(Debug, Clone)]
pub struct PartitionState {
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// Every partition of `topic`, in partition order (empty when the metadata has none).
pub async fn partitions(kafka: &KafkaSettings, topic: &str) -> Vec<PartitionState> {
    let (kafka, topic) = (kafka.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = reviewflow::kafka::client_config(&kafka).create().unwrap();
        let Ok(metadata) = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)) else {
            return Vec::new();
        };
        let mut out: Vec<(i32, PartitionState)> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .flat_map(|t| t.partitions())
            .map(|p| {
                let state = PartitionState {
                    leader: p.leader(),
                    replicas: p.replicas().to_vec(),
                    isr: p.isr().to_vec(),
                };
                (p.id(), state)
            })
            .collect();
        out.sort_by_key(|(id, _)| *id);
        out.into_iter().map(|(_, s)| s).collect()
    })
    .await
    .unwrap()
}

/// The node leading `partition` of `topic` (-1 while none does).
pub async fn leader(kafka: &KafkaSettings, topic: &str, partition: usize) -> i32 {
    partitions(kafka, topic)
        .await
        .get(partition)
        .map_or(-1, |p| p.leader)
}

/// The node that coordinates the transactions of `transactional_id`: the leader of its
/// partition of `__transaction_state`, which Kafka picks as the absolute value of the id's
/// Java `String.hashCode` modulo the partition count (-1 while the cluster does not answer).
pub async fn transaction_coordinator(kafka: &KafkaSettings, transactional_id: &str) -> i32 {
    let state = partitions(kafka, "__transaction_state").await;
    if state.is_empty() {
        return -1;
    }
    let hash = transactional_id
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let partition = if hash == i32::MIN { 0 } else { hash.abs() } as usize % state.len();
    state[partition].leader
}

/// The value of `key` in the configuration `topic` has now (its own or the brokers' default).
pub async fn topic_setting(kafka: &KafkaSettings, topic: &str, key: &str) -> Option<String> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        reviewflow::kafka::client_config(kafka).create().unwrap();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await
        .unwrap();
    let config = described.into_iter().next()?.ok()?;
    config.get(key)?.value.clone()
}
