//! Settings that would corrupt what cdc writes are refused with the fix named, on the real
//! PostgreSQL and Kafka: the table's replica identity (at start, and when a Relation message
//! shows it mid-stream, with `--new-snapshot` recovering the changes written without before
//! images), the publication (missing, without the table, without an operation, with a row
//! filter or a column list), and a pre-existing changes topic whose cleanup policy or
//! retention is not what cdc needs. Each refusal stops cdc (a non-zero exit, no retry) before
//! anything of it reaches Kafka. A pre-existing partition count is no refusal: cdc writes
//! across it.

mod common;

use std::time::Duration;

use common::pipeline::Pipeline;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use reviewflow::contract::change::Op;

/// A pipeline on its own database whose stages log to a file.
async fn pipeline(name: &str) -> Pipeline {
    let mut p = Pipeline::new(name).await;
    p.log = Some(std::env::temp_dir().join(format!("rf-{name}-{}.log", common::unique())));
    p
}

/// The refusal names each of `needles`.
fn assert_names(logged: &str, needles: &[&str]) {
    for needle in needles {
        assert!(logged.contains(needle), "names {needle:?}: {logged}");
    }
}

async fn slot_exists(p: &Pipeline) -> bool {
    p.db()
        .await
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&p.slot()],
        )
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn replica_identity_default_is_refused_at_start_naming_the_fix() {
    let p = pipeline("refuse_identity").await;
    p.db()
        .await
        .batch_execute("ALTER TABLE reviews REPLICA IDENTITY DEFAULT")
        .await
        .unwrap();
    let logged = p.cdc_refuses(&[]).await;
    assert_names(
        &logged,
        &[
            "REPLICA IDENTITY DEFAULT",
            "ALTER TABLE public.reviews REPLICA IDENTITY FULL",
            "--new-snapshot",
        ],
    );
    assert!(
        !slot_exists(&p).await,
        "refused before the slot was created"
    );
}

/// A table switched to DEFAULT while cdc streams: the next change's Relation message shows it
/// and cdc stops before producing the change. Switched back, the slot still holds that change
/// without its before image, so cdc refuses again, until `--new-snapshot` replaces the slot
/// and restates the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_identity_changed_while_streaming_stops_cdc_and_new_snapshot_recovers() {
    let p = pipeline("refuse_identity_stream").await;
    let db = p.db().await;
    db.batch_execute(
        "INSERT INTO reviews (id, course_id, user_id, rating) VALUES (1, 1, 1, 4.0), (2, 2, 2, 3.0)",
    )
    .await
    .unwrap();
    let log = p.log.as_ref().unwrap();
    let mut cdc = p.spawn_cdc(None).take();
    p.wait_for_snapshot().await;
    db.batch_execute(
        "ALTER TABLE reviews REPLICA IDENTITY DEFAULT; UPDATE reviews SET rating = 1.0 WHERE id = 1",
    )
    .await
    .unwrap();
    let status = tokio::task::spawn_blocking(move || cdc.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "cdc stops on the Relation message");
    assert_names(
        &std::fs::read_to_string(log).unwrap(),
        &[
            "REPLICA IDENTITY DEFAULT",
            "ALTER TABLE public.reviews REPLICA IDENTITY FULL",
            "--new-snapshot",
        ],
    );
    let events = p.events().await;
    assert!(
        events.iter().all(|(_, _, e)| e.op == Op::Read),
        "the update without a before image never reached Kafka: {events:?}"
    );

    db.batch_execute("ALTER TABLE reviews REPLICA IDENTITY FULL")
        .await
        .unwrap();
    let logged = p.cdc_refuses(&[]).await;
    assert_names(&logged, &["--new-snapshot"]);

    // The flag on the command line, as the message says.
    let mut cmd = p.command("cdc");
    cmd.arg("--new-snapshot")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    let _recovering = common::Running(Some(cmd.spawn().unwrap()));
    common::eventually("the table is restated with the edit", 90, || async {
        // Each partition gets the TRUNCATE, then the rows of its courses.
        let mut truncated = std::collections::HashSet::new();
        let mut restated = Vec::new();
        for (partition, _, e) in p.marked_events().await {
            if e.op == Op::Truncate {
                truncated.insert(partition);
            } else if let (true, Some(r)) = (truncated.contains(&partition), &e.after) {
                restated.push((r.id, r.rating.to_string()));
            }
        }
        restated.contains(&(1, "1.0".into())) && restated.contains(&(2, "3.0".into()))
    })
    .await;
    db.batch_execute("UPDATE reviews SET rating = 2.0 WHERE id = 2")
        .await
        .unwrap();
    common::eventually("changes stream again, with before images", 60, || async {
        p.events().await.iter().any(|(_, _, e)| {
            e.op == Op::Update
                && e.before
                    .as_ref()
                    .is_some_and(|b| b.rating.to_string() == "3.0")
                && e.after
                    .as_ref()
                    .is_some_and(|a| a.rating.to_string() == "2.0")
        })
    })
    .await;
}

#[tokio::test]
async fn a_missing_publication_is_refused_naming_create_publication() {
    let p = pipeline("refuse_no_publication").await;
    let logged = p
        .cdc_refuses(&[("REVIEWFLOW_PUBLICATION", "nowhere")])
        .await;
    assert_names(
        &logged,
        &[
            "publication \"nowhere\" does not exist",
            "CREATE PUBLICATION nowhere FOR TABLE public.reviews",
        ],
    );
}

#[tokio::test]
async fn a_publication_without_the_table_is_refused_naming_add_table() {
    let p = pipeline("refuse_pub_table").await;
    p.db()
        .await
        .batch_execute("ALTER PUBLICATION reviewflow DROP TABLE reviews")
        .await
        .unwrap();
    let logged = p.cdc_refuses(&[]).await;
    assert_names(
        &logged,
        &[
            "does not include table public.reviews",
            "ALTER PUBLICATION reviewflow ADD TABLE public.reviews",
        ],
    );
}

#[tokio::test]
async fn a_publication_without_update_delete_or_truncate_is_refused_naming_each() {
    let p = pipeline("refuse_pub_ops").await;
    let db = p.db().await;
    for (publish, missing) in [
        ("insert", "update, delete, truncate"),
        ("insert, delete, truncate", "update"),
        ("insert, update, truncate", "delete"),
        ("insert, update, delete", "truncate"),
    ] {
        db.batch_execute(&format!(
            "ALTER PUBLICATION reviewflow SET (publish = '{publish}')"
        ))
        .await
        .unwrap();
        let logged = p.cdc_refuses(&[]).await;
        assert_names(
            &logged,
            &[
                &format!("does not publish {missing} of its tables"),
                "ALTER PUBLICATION reviewflow SET (publish = 'insert, update, delete, truncate')",
            ],
        );
    }
    assert!(!slot_exists(&p).await);
}

#[tokio::test]
async fn a_publication_with_a_row_filter_or_a_column_list_is_refused() {
    let p = pipeline("refuse_pub_filter").await;
    let db = p.db().await;
    db.batch_execute("ALTER PUBLICATION reviewflow SET TABLE reviews WHERE (course_id > 10)")
        .await
        .unwrap();
    let logged = p.cdc_refuses(&[]).await;
    assert_names(
        &logged,
        &[
            "publishes only the rows of public.reviews where",
            "ALTER PUBLICATION reviewflow SET TABLE public.reviews (without WHERE)",
        ],
    );
    db.batch_execute(
        "ALTER PUBLICATION reviewflow SET TABLE reviews (id, course_id, user_id, rating, created_at, updated_at)",
    )
    .await
    .unwrap();
    let logged = p.cdc_refuses(&[]).await;
    // Of all the table's columns, however many the migrations give it.
    let columns: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_attribute
             WHERE attrelid = 'reviews'::regclass AND attnum > 0 AND NOT attisdropped",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let published = format!("publishes 6 of the {columns} columns of public.reviews");
    assert_names(&logged, &[published.as_str(), "without a column list"]);
}

/// The course_stats reader runs on a publication that deliberately omits truncate, with a
/// table of REPLICA IDENTITY DEFAULT: that is what a compacted topic of current state needs.
/// Publishing truncate there is refused.
#[tokio::test]
async fn the_compacted_reader_needs_no_truncate_and_refuses_one() {
    let p = pipeline("refuse_compacted").await;
    let figures = p.output("course-stats");
    let slot = format!("{}_stats", p.slot());
    let env = [
        ("REVIEWFLOW_TABLE", "course_stats"),
        ("REVIEWFLOW_PUBLICATION", "reviewflow_stats"),
        ("REVIEWFLOW_SLOT", slot.as_str()),
        ("REVIEWFLOW_CHANGES_TOPIC", figures.as_str()),
        ("REVIEWFLOW_COMPACTED_TOPIC", "true"),
    ];
    let reader = p.spawn("cdc", None, &env);
    common::wait_until_slot_exists(&p.url, &slot).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut child = reader.take();
    assert!(
        child.try_wait().unwrap().is_none(),
        "the course_stats reader runs: {}",
        std::fs::read_to_string(p.log.as_ref().unwrap()).unwrap_or_default()
    );
    let _ = child.kill();
    let _ = child.wait();

    p.db()
        .await
        .batch_execute(
            "ALTER PUBLICATION reviewflow_stats SET (publish = 'insert, update, delete, truncate')",
        )
        .await
        .unwrap();
    let logged = p.cdc_refuses(&env).await;
    assert_names(
        &logged,
        &[
            "publishes truncate, which cannot be written to the compacted topic",
            "ALTER PUBLICATION reviewflow_stats SET (publish = 'insert, update, delete')",
        ],
    );
}

/// Creates `topic` as someone else might have, before cdc starts.
async fn precreate(p: &Pipeline, topic: &str, partitions: i32, settings: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> =
        reviewflow::kafka::client_config(&p.settings.kafka)
            .create()
            .unwrap();
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in settings {
        new = new.set(k, v);
    }
    let created = admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    common::eventually("the topic appears", 30, || {
        common::topic_exists(&p.settings.kafka, topic)
    })
    .await;
}

#[tokio::test]
async fn a_compacted_changes_topic_is_refused_naming_the_fix() {
    let p = pipeline("refuse_topic_compact").await;
    precreate(&p, &p.topic, 3, &[("cleanup.policy", "compact")]).await;
    let logged = p.cdc_refuses(&[]).await;
    assert_names(
        &logged,
        &[
            &format!(
                "topic {} has cleanup.policy=compact, but it needs cleanup.policy=delete",
                p.topic
            ),
            &format!(
                "--entity-name {} --add-config cleanup.policy=delete",
                p.topic
            ),
        ],
    );
    assert!(!slot_exists(&p).await);
}

#[tokio::test]
async fn a_changes_topic_with_finite_retention_is_refused_naming_the_fix() {
    let p = pipeline("refuse_topic_retention").await;
    precreate(&p, &p.topic, 3, &[("retention.ms", "604800000")]).await;
    let logged = p.cdc_refuses(&[]).await;
    assert_names(
        &logged,
        &[
            &format!(
                "topic {} has retention.ms=604800000, but it needs retention.ms=-1",
                p.topic
            ),
            "--add-config retention.ms=-1",
        ],
    );
}

/// Not a refusal: a changes topic made beforehand with another count than configured is
/// written across its own count (the snapshot starts that epoch; see tests/partitions_added).
#[tokio::test]
async fn a_changes_topic_made_with_another_partition_count_is_written_across_its_own() {
    let p = pipeline("topic_partitions").await;
    precreate(
        &p,
        &p.topic,
        5,
        &[("retention.ms", "-1"), ("retention.bytes", "-1")],
    )
    .await;
    let cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    p.stop(cdc).await;
    let ends: std::collections::BTreeSet<i32> = p
        .marked_events()
        .await
        .iter()
        .filter(|(_, _, e)| e.op == Op::SnapshotEnd)
        .map(|(partition, _, _)| *partition)
        .collect();
    assert_eq!(ends, (0..5).collect(), "the snapshot ends on each of the 5");
}

#[tokio::test]
async fn a_compacted_reader_refuses_a_topic_that_deletes() {
    let p = pipeline("refuse_topic_delete").await;
    let figures = p.output("course-stats");
    precreate(&p, &figures, 3, &[("cleanup.policy", "delete")]).await;
    let slot = format!("{}_stats", p.slot());
    let logged = p
        .cdc_refuses(&[
            ("REVIEWFLOW_TABLE", "course_stats"),
            ("REVIEWFLOW_PUBLICATION", "reviewflow_stats"),
            ("REVIEWFLOW_SLOT", slot.as_str()),
            ("REVIEWFLOW_CHANGES_TOPIC", figures.as_str()),
            ("REVIEWFLOW_COMPACTED_TOPIC", "true"),
        ])
        .await;
    assert_names(
        &logged,
        &[
            &format!(
                "topic {figures} has cleanup.policy=delete, but it needs cleanup.policy=compact"
            ),
            "--add-config cleanup.policy=compact",
        ],
    );
}
