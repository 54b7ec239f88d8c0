//! The local stack's three-node Kafka cluster (`stack up --brokers 3`), on a stack of its own
//! (own folder and ports): every listener on every node, three copies of every topic with two
//! needed for a write, and a pipeline that loses and doubles nothing while the broker leading
//! a partition of its changes topic is killed with SIGKILL and later brought back.

mod common;

use common::cluster::{self, ClusterStack};
use common::pipeline::Pipeline;

/// Ports no other test's stack uses: the shared one takes 54329/19092, tests/stack.rs
/// 54339/19192, the PostgreSQL 18 run 54349/19292.
const PG_PORT: u16 = 54369;
const KAFKA_PORT: u16 = 19392;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_keep_three_copies_and_a_killed_leader_loses_nothing() {
    // Dropped last: the stages below are killed before the stack stops.
    let stack = ClusterStack::start("brokers", PG_PORT, KAFKA_PORT, 3);
    let node_ports = |first: u16| -> Vec<String> {
        (0..3)
            .map(|n| format!("127.0.0.1:{}", first + 4 * n))
            .collect()
    };
    // Every node has the single broker's listeners: PLAINTEXT, SASL_PLAINTEXT, SASL_SSL.
    let plaintext = node_ports(KAFKA_PORT).join(",");
    for list in [
        &plaintext,
        &node_ports(KAFKA_PORT + 2).join(","),
        &node_ports(KAFKA_PORT + 3).join(","),
    ] {
        assert!(
            stack.up_output.contains(list.as_str()),
            "{list} in {}",
            stack.up_output
        );
    }
    assert_eq!(stack.env("KAFKA_BOOTSTRAP_SERVERS"), plaintext);
    let (code, status) = stack.run(&["stack", "status"]);
    assert_eq!(code, 0, "{status}");
    for (n, address) in node_ports(KAFKA_PORT).iter().enumerate() {
        let line = format!("kafka-{}", n + 1);
        assert!(
            status.lines().any(|l| l.starts_with(&line)
                && l.contains("running")
                && l.contains(address.as_str())),
            "{line} running at {address}: {status}"
        );
    }

    stack.use_for_this_process();
    let mut p = Pipeline::new("brokers3").await;
    // The stages' logs, kept beside the stack's (and purged with it) for a failure to show.
    p.log = Some(stack.home.join("stages.log"));
    let kafka = p.settings.kafka.clone();
    let stages = ["cdc", "fraud", "verdicts", "stats"];
    let mut running: Vec<common::Running> = stages.iter().map(|s| p.spawn(s, None, &[])).collect();
    p.wait_for_snapshot().await;
    let db = p.db().await;
    let mut rng = common::Rng(0xb20_4e25);
    common::write_random(&db, &mut rng, 40).await;
    p.wait_until_caught_up().await;
    p.assert_exact().await;

    // Every topic the pipeline made keeps three copies and needs two for a write, with no
    // replication factor given: the cluster's. So do the group and transaction logs.
    let markers = reviewflow::source::snapshot::marker_topic(&p.topic);
    let topics = [
        p.topic.clone(),
        markers,
        p.output("valid"),
        p.output("fraud"),
        p.output("verdicts"),
        p.output("dead-letters"),
        "__transaction_state".to_string(),
    ];
    for topic in topics
        .iter()
        .map(String::as_str)
        .chain(["__consumer_offsets"])
    {
        let parts = cluster::partitions(&kafka, topic).await;
        assert!(!parts.is_empty(), "{topic} exists");
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(part.replicas.len(), 3, "{topic}[{i}]: {part:?}");
            assert_eq!(part.isr.len(), 3, "{topic}[{i}] all in sync: {part:?}");
        }
    }
    for topic in &topics {
        assert_eq!(
            cluster::topic_setting(&kafka, topic, "min.insync.replicas")
                .await
                .as_deref(),
            Some("2"),
            "{topic}"
        );
    }

    // SIGKILL the node that leads a partition of the changes topic; the writes go on.
    let victim = cluster::leader(&kafka, &p.topic, 0).await;
    assert!((1..=3).contains(&victim), "a leader: {victim}");
    let (code, out) = stack.run(&["stack", "kill-broker", &victim.to_string()]);
    assert_eq!(code, 0, "{out}");
    let (code, status) = stack.run(&["stack", "status"]);
    assert_eq!(code, 3, "a node is down: {status}");
    assert!(
        status.contains(&format!("kafka-{victim}   stopped")),
        "{status}"
    );
    common::write_random(&db, &mut rng, 40).await;
    common::eventually("another node leads the partition", 60, || async {
        let now = cluster::partitions(&kafka, &p.topic).await;
        now.first()
            .is_some_and(|s| s.leader > 0 && s.leader != victim && !s.isr.contains(&victim))
    })
    .await;
    p.wait_until_caught_up().await;
    p.assert_exact().await;

    // Back: it catches up and rejoins every in-sync set; still nothing lost or doubled.
    let (code, out) = stack.run(&["stack", "start-broker", &victim.to_string()]);
    assert_eq!(code, 0, "{out}");
    common::eventually("the restarted node is in sync again", 90, || async {
        cluster::partitions(&kafka, &p.topic)
            .await
            .iter()
            .all(|s| s.isr.len() == 3)
    })
    .await;
    common::write_random(&db, &mut rng, 10).await;
    p.wait_until_caught_up().await;
    p.assert_exact().await;
    p.assert_no_change_filled_in_late().await;
    for (stage, child) in stages.iter().zip(running.iter_mut()) {
        let exited = child.0.as_mut().and_then(|c| c.try_wait().ok().flatten());
        assert!(exited.is_none(), "{stage} exited on its own: {exited:?}");
    }
}
