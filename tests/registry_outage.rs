//! The schema registry out of reach: cdc registers its schemas through a registry served by
//! `reviewflow api` (SCHEMA_REGISTRY_URL). With the api down, a restarted cdc must say that
//! the registry at that URL is unreachable and keep trying with backoff, without moving the
//! slot; once the api is back it carries on by itself and the pipeline is exact.

mod common;

use std::time::Duration;

use common::pipeline::Pipeline;
use common::Running;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_api(p: &Pipeline, listen: &str) -> Running {
    p.spawn("api", None, &[("API_LISTEN", listen)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_registry_is_named_retried_and_nothing_is_lost() {
    let mut p = Pipeline::new("registry_outage").await;
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}");
    let api = spawn_api(&p, &listen);
    common::wait_healthy(&url, 60).await;
    let registry = [("SCHEMA_REGISTRY_URL", url.as_str())];
    let cdc = p.spawn("cdc", None, &registry);
    p.wait_for_snapshot().await;
    let _stages: Vec<_> = ["fraud", "verdicts", "stats"]
        .iter()
        .map(|s| p.spawn(s, None, &[]))
        .collect();
    let db = p.db().await;
    let mut rng = common::Rng(0x4e6);
    common::write_random(&db, &mut rng, 50).await;
    p.wait_until_caught_up().await;

    // The registry goes away, and cdc starts again (a fresh process knows no schema id).
    drop(api);
    drop(cdc);
    let confirmed_before = slot_confirmed(&p).await;
    let log = std::env::temp_dir().join(format!("rf-registry-outage-{}.log", common::unique()));
    p.log = Some(log.clone());
    let mut cdc = p.spawn("cdc", None, &registry);
    p.log = None;
    common::write_random(&db, &mut rng, 50).await;
    let said = format!("the schema registry at {url} is unreachable");
    common::eventually(
        "cdc says the registry is unreachable, twice",
        60,
        || async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches(&said)
                .count()
                >= 2
        },
    )
    .await;
    assert!(
        cdc.0.as_mut().unwrap().try_wait().unwrap().is_none(),
        "cdc keeps trying while the registry is down"
    );
    assert_eq!(
        slot_confirmed(&p).await,
        confirmed_before,
        "the slot stays where it was"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("retry_in"),
        "it retries with a backoff:\n{text}"
    );

    let _api = spawn_api(&p, &listen);
    common::wait_healthy(&url, 60).await;
    common::write_random(&db, &mut rng, 50).await;
    p.wait_until_caught_up().await;
    p.assert_exact().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.stop(cdc).await;
}

async fn slot_confirmed(p: &Pipeline) -> String {
    p.db()
        .await
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&p.slot()],
        )
        .await
        .unwrap()
        .get(0)
}
