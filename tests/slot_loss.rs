//! A lost replication slot: dropped, or invalidated by PostgreSQL (wal_status `lost`, once it
//! fell more than max_slot_wal_keep_size behind). cdc must not create a new slot and carry on
//! as if nothing happened (the changes in between would be skipped): it stops with a non-zero
//! exit and a message saying what happened and what to do. After the operator does it
//! (`cdc --new-snapshot`), the pipeline resumes and the derived tables are exact again.
//!
//! Its own test binary: the invalidation lowers max_slot_wal_keep_size for the whole cluster
//! (ALTER SYSTEM, restored right after), which would invalidate other tests' slots.

mod common;

use common::pipeline::Pipeline;
use common::Running;
use tokio::sync::Mutex;

/// The two tests change the cluster's WAL retention or watch their slot: one at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// The whole pipeline, each stage its own process.
fn spawn_all(p: &Pipeline) -> Vec<Running> {
    ["fraud", "verdicts", "stats"]
        .iter()
        .map(|s| p.spawn(s, None, &[]))
        .collect()
}

async fn slot_status(p: &Pipeline) -> Option<Option<String>> {
    p.db()
        .await
        .query_opt(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
            &[&p.slot()],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

/// Runs the pipeline until caught up and exact, stops cdc, lets `lose` lose the slot while
/// changes are written, and checks the refusal (`expected` in the message), the recovery by
/// `cdc --new-snapshot`, and the exactness after it.
async fn lose_and_recover<F, Fut>(name: &str, expected: &str, lose: F)
where
    F: FnOnce(Pipeline) -> Fut,
    Fut: std::future::Future<Output = Pipeline>,
{
    let _serial = SERIAL.lock().await;
    let p = Pipeline::new(name).await;
    let cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    let _stages = spawn_all(&p);
    let db = p.db().await;
    let mut rng = common::Rng(0x51_07 ^ name.len() as u64);
    common::write_random(&db, &mut rng, 150).await;
    p.wait_until_caught_up().await;
    p.assert_exact().await;
    p.stop(cdc).await;

    // Changes the lost slot will never deliver.
    common::write_random(&db, &mut rng, 100).await;
    let p = lose(p).await;

    let said = p.cdc_refuses(&[]).await;
    for needed in [expected, "--new-snapshot", &p.slot(), "reviewflow verify"] {
        assert!(
            said.contains(needed),
            "cdc's message names {needed:?}:\n{said}"
        );
    }
    let before = slot_status(&p).await;
    assert!(
        before.is_none() || before == Some(Some("lost".into())),
        "cdc created no new slot on its own: {before:?}"
    );

    common::write_random(&db, &mut rng, 50).await;
    // What the message says to do.
    let mut cmd = p.command("cdc");
    cmd.arg("--new-snapshot")
        .stdout(std::process::Stdio::null());
    let cdc = Running(Some(cmd.spawn().unwrap()));
    common::write_random(&db, &mut rng, 100).await;
    p.wait_until_caught_up().await;
    p.assert_exact().await;
    assert_eq!(slot_status(&p).await, Some(Some("reserved".into())));
    // Restarted with the flag still set, a healthy slot is resumed, not snapshotted again.
    p.stop(cdc).await;
    let mut cmd = p.command("cdc");
    cmd.arg("--new-snapshot")
        .stdout(std::process::Stdio::null());
    let cdc = Running(Some(cmd.spawn().unwrap()));
    common::write_random(&db, &mut rng, 50).await;
    p.wait_until_caught_up().await;
    p.assert_exact().await;
    p.stop(cdc).await;
    // Every snapshot opens with a TRUNCATE on each of the three partitions: the first one, and
    // one restatement.
    let truncates: Vec<_> = p
        .marked_events()
        .await
        .into_iter()
        .filter(|(_, _, e)| e.op == reviewflow::contract::change::Op::Truncate)
        .map(|(_, _, e)| e.source.lsn)
        .collect();
    let snapshots: std::collections::HashSet<_> = truncates.iter().collect();
    assert_eq!(
        (truncates.len(), snapshots.len()),
        (6, 2),
        "the table was restated once"
    );
    db.execute("SELECT pg_drop_replication_slot($1)", &[&p.slot()])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_slot_stops_cdc_with_what_to_do_and_a_new_snapshot_makes_it_exact() {
    lose_and_recover("slot_dropped", "is gone", |p| async move {
        p.db()
            .await
            .execute("SELECT pg_drop_replication_slot($1)", &[&p.slot()])
            .await
            .unwrap();
        p
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_stops_cdc_with_what_to_do_and_a_new_snapshot_makes_it_exact() {
    lose_and_recover("slot_invalidated", "wal_status lost", |p| async move {
        let db = p.db().await;
        // Each its own statement: ALTER SYSTEM cannot run in a transaction block.
        db.simple_query("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
            .await
            .unwrap();
        db.simple_query("SELECT pg_reload_conf()").await.unwrap();
        // WAL segments pass and checkpoints remove them, until PostgreSQL gives up the slot.
        let mut lost = false;
        for i in 0..40 {
            db.batch_execute(&format!(
                "CREATE TEMP TABLE IF NOT EXISTS filler (t text);
                 INSERT INTO filler SELECT repeat('x', 1000) || {i} FROM generate_series(1, 2000)"
            ))
            .await
            .unwrap();
            db.simple_query("SELECT pg_switch_wal()").await.unwrap();
            db.simple_query("CHECKPOINT").await.unwrap();
            if slot_status(&p).await == Some(Some("lost".into())) {
                lost = true;
                break;
            }
        }
        db.simple_query("ALTER SYSTEM RESET max_slot_wal_keep_size")
            .await
            .unwrap();
        db.simple_query("SELECT pg_reload_conf()").await.unwrap();
        assert!(
            lost,
            "the slot was invalidated: {:?}",
            slot_status(&p).await
        );
        p
    })
    .await;
}
