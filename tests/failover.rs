//! cdc resumes only on the slot its snapshot came from. The snapshot's marker records the
//! server (system identifier and timeline); a session that reaches another server stops and
//! names `--new-snapshot`, which then restates the table and leaves the figures exact. Here
//! the other server is simulated by the marker: one naming another cluster, and one naming
//! an older timeline, as a promoted standby without a synchronized slot would present it.

mod common;

use common::pipeline::Pipeline;
use common::Running;
use reviewflow::registry::Registry;
use reviewflow::source::failover::Server;
use reviewflow::source::snapshot::record_marker;

/// the snapshot had been read there.
async fn recorded_elsewhere(
    name: &str,
    server: impl Fn(Server) -> Server,
) -> (Pipeline, Vec<Running>) {
    let p = Pipeline::new(name).await;
    let db = p.db().await;
    let mut rng = common::Rng(11);
    common::write_random(&db, &mut rng, 30).await;
    let stages: Vec<Running> = ["fraud", "verdicts", "stats"]
        .iter()
        .map(|s| p.spawn(s, None, &[]))
        .collect();
    let cdc = p.spawn_cdc(None);
    p.wait_until_caught_up().await;
    p.stop(cdc).await;
    let mut marker = p.snapshot_marker().await;
    marker.server = Some(server(
        marker.server.clone().expect("the marker names its server"),
    ));
    let registry = Registry::connect(&p.settings).await.unwrap();
    record_marker(&p.settings.kafka, &p.topic, &registry, &marker)
        .await
        .unwrap();
    // Changes the slot holds while cdc is stopped: a resume or a restatement must carry them.
    common::write_random(&db, &mut rng, 30).await;
    (p, stages)
}

async fn refused_then_restated(p: &Pipeline, names: &[&str]) {
    let text = p.cdc_refuses(&[]).await;
    for name in names.iter().chain(&["--new-snapshot"]) {
        assert!(text.contains(name), "cdc's message names {name:?}: {text}");
    }
    let mut cmd = p.command("cdc");
    cmd.arg("--new-snapshot")
        .stdout(std::process::Stdio::null());
    let cdc = Running(Some(cmd.spawn().unwrap()));
    p.wait_until_caught_up().await;
    p.assert_exact().await;
    p.stop(cdc).await;
    p.db()
        .await
        .execute("SELECT pg_drop_replication_slot($1)", &[&p.slot()])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_on_another_cluster_is_refused_and_a_new_snapshot_makes_it_exact() {
    let (p, _stages) = recorded_elsewhere("failover_cluster", |s| Server {
        system_id: format!("{}1", s.system_id),
        ..s
    })
    .await;
    refused_then_restated(&p, &["another database cluster"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_server_without_a_synchronized_slot_is_refused_and_a_new_snapshot_makes_it_exact(
) {
    // The snapshot recorded a timeline this server left: a promotion happened since. On this
    // PostgreSQL the slot was not synchronized to it (no standby synchronizes slots here).
    let (p, _stages) = recorded_elsewhere("failover_timeline", |s| Server {
        timeline: s.timeline + 1,
        ..s
    })
    .await;
    refused_then_restated(&p, &["promoted standby", "not synchronized"]).await;
}
