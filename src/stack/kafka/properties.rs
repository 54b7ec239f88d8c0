//! What a node of the local Kafka is configured with: its `server.properties` (listeners,
//! quorum, replication, disk limits), the SASL user's password and the TLS keystore that every
//! node of the stack shares, and the log4j configuration.

use std::path::{Path, PathBuf};

use super::super::write_file;
use super::Node;
use crate::error::{Error, Result};

/// The user of the SASL listeners.
pub(super) const SASL_USER: &str = "reviewflow";

/// The SASL listeners' password, made once and kept beside the first node's configuration.
pub(super) fn sasl_password(dir: &Path) -> Result<String> {
    let file = dir.join("sasl.password");
    if let Ok(password) = std::fs::read_to_string(&file) {
        if !password.trim().is_empty() {
            return Ok(password.trim().to_owned());
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io_path("create", dir, e))?;
    let password = super::super::postgres::random_hex(18)?;
    write_file(&file, password.as_bytes(), 0o600)?;
    Ok(password)
}

/// The brokers' TLS key and certificate in one PEM file (Kafka's PEM keystore), made once;
/// the certificate alone is `tls/ca.pem`, the root clients verify with. None when it cannot
/// be made: the brokers then start without their TLS listener.
pub(super) async fn broker_certificate(dir: &Path) -> Option<PathBuf> {
    let tls = dir.join("tls");
    let keystore = tls.join("broker.pem");
    if keystore.exists() {
        return Some(keystore);
    }
    let made = async {
        std::fs::create_dir_all(&tls).map_err(|e| Error::io_path("create", &tls, e))?;
        let (crt, key) = (tls.join("ca.pem"), tls.join("broker.key"));
        super::super::self_signed(&crt, &key).await?;
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
            tracing::warn!(error = %e, "no TLS certificate for the local brokers; starting them without their SASL_SSL listener");
            None
        }
    }
}

/// How many copies of a partition the cluster keeps, and how many must have a write before
/// it is acknowledged (acks=all): three and two once there are three nodes, so one node may
/// die without a write refused or an acknowledged one lost.
pub(super) fn replication(nodes: usize) -> (usize, usize) {
    let factor = nodes.min(3);
    (factor, if factor >= 3 { 2 } else { 1 })
}

/// The configuration of `node`, one of `nodes`. Besides the plaintext listener every part
/// uses, a SASL_PLAINTEXT listener (PLAIN, one user) on the port after the controller's and
/// a SASL_SSL one (the same user, over TLS) on the next, to try client authentication and
/// TLS against. A single node is the one voter of its quorum; in a cluster every node is a
/// voter, so the quorum outlives the death of any one.
pub(super) fn server_properties(
    node: &Node,
    nodes: &[Node],
    sasl_password: &str,
    keystore: Option<&Path>,
) -> String {
    let [broker, controller, sasl, ssl] = node.ports();
    let jaas = format!(
        "org.apache.kafka.common.security.plain.PlainLoginModule required user_{SASL_USER}=\"{sasl_password}\";"
    );
    let (tls_listener, tls_map, tls_settings) = match keystore {
        Some(keystore) => (
            format!(",SASL_SSL://127.0.0.1:{ssl}"),
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
    let quorum = if nodes.len() == 1 {
        format!("controller.quorum.bootstrap.servers=127.0.0.1:{controller}")
    } else {
        let voters: Vec<String> = nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.ports()[1]))
            .collect();
        format!("controller.quorum.voters={}", voters.join(","))
    };
    let (factor, min_isr) = replication(nodes.len());
    format!(
        "# written by `reviewflow stack up`\n\
         process.roles=broker,controller\n\
         node.id={id}\n\
         {quorum}\n\
         listeners=PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller},SASL_PLAINTEXT://127.0.0.1:{sasl}{tls_listener}\n\
         advertised.listeners=PLAINTEXT://127.0.0.1:{broker},SASL_PLAINTEXT://127.0.0.1:{sasl}{tls_listener}\n\
         controller.listener.names=CONTROLLER\n\
         inter.broker.listener.name=PLAINTEXT\n\
         listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT{tls_map}\n\
         sasl.enabled.mechanisms=PLAIN\n\
         listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN\n\
         listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas}\n\
         {tls_settings}\
         log.dirs={logs}\n\
         num.partitions=3\n\
         default.replication.factor={factor}\n\
         min.insync.replicas={min_isr}\n\
         offsets.topic.replication.factor={factor}\n\
         offsets.topic.num.partitions=10\n\
         transaction.state.log.replication.factor={factor}\n\
         transaction.state.log.min.isr={min_isr}\n\
         transaction.state.log.num.partitions=10\n\
         share.coordinator.state.topic.replication.factor={factor}\n\
         share.coordinator.state.topic.min.isr={min_isr}\n\
         {DISK}\
         group.initial.rebalance.delay.ms=0\n\
         auto.create.topics.enable=false\n\
         transaction.max.timeout.ms={TRANSACTION_MAX_TIMEOUT_MS}\n",
        id = node.id,
        logs = node.logs().display(),
    )
}

/// The longest a Kafka transaction may stay open on the local broker: one minute, where
/// Kafka's default is fifteen. Every transaction reviewflow opens must stay well inside what
/// any broker allows (a snapshot commits in chunks for that reason), and the local stack,
/// which every test runs on, holds them to a low limit so that one that does not is seen.
const TRANSACTION_MAX_TIMEOUT_MS: u64 = 60_000;

/// What bounds the disk a long run takes. The histories (changes, valid, fraud, verdicts)
/// are kept whole by their own topic settings (retention.ms and retention.bytes -1, which
/// win over these), so they grow with the changes made, once per replica. The rest is
/// bounded: a topic without settings of its own (the dead letters, a test's) keeps at most
/// 256 MiB a partition; the compacted internal topics (consumer offsets, transaction state)
/// roll 16 MiB segments, so compaction can reclaim what the active segment would otherwise
/// hold (at the default 100 MiB, ten partitions on each of three nodes held GBs of commits);
/// the KRaft metadata log rolls 16 MiB segments too, so its retention can delete old ones.
const DISK: &str = "log.segment.bytes=67108864\n\
log.retention.bytes=268435456\n\
offsets.topic.segment.bytes=16777216\n\
transaction.state.log.segment.bytes=16777216\n\
metadata.log.segment.bytes=16777216\n";

pub(super) const LOG4J: &str = "status = warn\n\
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

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: u8) -> Vec<Node> {
        (1..=n)
            .map(|id| Node::new(Path::new("/h"), 19392, id))
            .collect()
    }

    #[test]
    fn a_cluster_of_three_keeps_three_copies_and_acknowledges_two() {
        let all = nodes(3);
        let second = server_properties(&all[1], &all, "pw", None);
        for line in [
            "node.id=2",
            "controller.quorum.voters=1@127.0.0.1:19393,2@127.0.0.1:19397,3@127.0.0.1:19401",
            "listeners=PLAINTEXT://127.0.0.1:19396,CONTROLLER://127.0.0.1:19397,SASL_PLAINTEXT://127.0.0.1:19398",
            "log.dirs=/h/kafka/node-2/logs",
            "default.replication.factor=3",
            "min.insync.replicas=2",
            "offsets.topic.replication.factor=3",
            "transaction.state.log.replication.factor=3",
            "transaction.state.log.min.isr=2",
        ] {
            assert!(second.lines().any(|l| l == line), "{line} in:\n{second}");
        }
        assert!(!second.contains("controller.quorum.bootstrap.servers"));
    }

    #[test]
    fn a_single_node_is_its_own_quorum_with_one_copy() {
        let one = nodes(1);
        let text = server_properties(
            &one[0],
            &one,
            "pw",
            Some(Path::new("/h/kafka/tls/broker.pem")),
        );
        for line in [
            "node.id=1",
            "controller.quorum.bootstrap.servers=127.0.0.1:19393",
            "log.dirs=/h/kafka/logs",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "min.insync.replicas=1",
            "advertised.listeners=PLAINTEXT://127.0.0.1:19392,SASL_PLAINTEXT://127.0.0.1:19394,SASL_SSL://127.0.0.1:19395",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(!text.contains("controller.quorum.voters"));
    }
}
