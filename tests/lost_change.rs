//! The oracle has no blind spot: `verify` checks the table itself, so a change the pipeline
//! never saw fails it even when no figure moved (an insert, a text-only edit), and so does a
//! verdict that is missing, judged another image, or is not what the model gives. A delete
//! the pipeline never saw fails it too, even of a review judged fraud (no figure moves), and
//! a delete, an id change and a TRUNCATE it saw leave nothing to report. Rows that
//! cannot count (no course, a rating off the half-star scale, a created_at out of range),
//! written by SQL with every CHECK dropped, are judged fraud with the rules they break, reach
//! no figure, and leave `verify` with nothing to report.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::pipeline::Pipeline;
use common::Running;
use reviewflow::tools::verify::{verify, Difference};
use tokio::sync::Mutex;

/// Three whole pipelines at once would starve a small machine: one at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

fn spawn_workers(p: &Pipeline) -> Vec<Running> {
    ["fraud", "verdicts", "stats"]
        .iter()
        .map(|s| p.spawn(s, None, &[]))
        .collect()
}

async fn started(name: &str) -> (Pipeline, Running, Vec<Running>) {
    let p = Pipeline::new(name).await;
    let cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    let workers = spawn_workers(&p);
    (p, cdc, workers)
}

/// The review-level differences: (review, course, what).
fn of_reviews(differences: &[Difference]) -> BTreeSet<(i64, Option<i64>, String)> {
    differences
        .iter()
        .filter_map(|d| Some((d.review_id?, d.course_id, d.figure.clone())))
        .collect()
}

/// `reviewflow verify` on the pipeline's database: exit code and output.
fn cli_verify(p: &Pipeline) -> (i32, String) {
    let out = p.command("verify").output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

const SEED: &str = "
INSERT INTO reviews (id, course_id, user_id, rating, title, content, created_at) VALUES
  (1, 101, 1, 4.5, 'Good', 'a clear and patient course', now() - interval '2 days'),
  (2, 202, 2, 3.5, 'Fine', 'the labs were useful to me', now() - interval '3 days'),
  (3, 202, 3, 4.0, NULL, 'see http://spam.example.com for more', now() - interval '1 day'),
  (4, 303, 4, 2.5, NULL, 'too fast for a beginner like me', now() - interval '5 days')";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_insert_and_a_lost_text_only_edit_fail_verify_naming_both() {
    let _serial = SERIAL.lock().await;
    let (p, cdc, _workers) = started("lost_change").await;
    let db = p.db().await;
    db.batch_execute(SEED).await.unwrap();
    p.wait_until_caught_up().await;
    p.assert_exact().await;

    p.stop(cdc).await;
    // An insert into course 101, a text-only edit of a review of course 202 (only its
    // content and, by the trigger, updated_at change: no figure moves), then the slot moved
    // past both, as if they had been lost.
    db.batch_execute(
        "INSERT INTO reviews (id, course_id, user_id, rating, content, created_at)
             VALUES (9001, 101, 9, 5.0, 'a lost review, never judged', now());
         UPDATE reviews SET content = 'the labs were useful, edited' WHERE id = 2;",
    )
    .await
    .unwrap();
    lose_the_slot_tail(&p, &db).await;

    let _cdc = p.spawn_cdc(None);
    db.batch_execute(
        "INSERT INTO reviews (id, course_id, user_id, rating, content, created_at)
             VALUES (5, 303, 5, 3.0, 'written after the loss, and seen', now())",
    )
    .await
    .unwrap();
    p.wait_until_caught_up().await;

    let report = verify(&p.db().await).await.unwrap();
    assert_eq!(
        of_reviews(&report.differences),
        BTreeSet::from([
            (2, Some(202), "digest".to_string()),
            (9001, Some(101), "verdict".to_string()),
        ]),
        "{:#?}",
        report.differences
    );
    assert_eq!(
        report.differences.len(),
        2,
        "no figure moved: {:#?}",
        report.differences
    );
    let (code, out) = cli_verify(&p);
    assert_eq!(code, 1, "the command fails on a lost change:\n{out}");
    for needed in [
        "review     9001 course      101",
        "review        2 course      202",
    ] {
        assert!(out.contains(needed), "the output names {needed:?}:\n{out}");
    }
    let (_, wrong) = p.current_versions_without_one_verdict().await;
    assert_eq!(
        wrong.iter().map(|w| w.0).collect::<Vec<_>>(),
        [2, 9001],
        "the SQL cross-check sees the same two"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_a_missing_a_stale_a_flipped_and_an_unknown_verdict() {
    let _serial = SERIAL.lock().await;
    let (p, _cdc, _workers) = started("verify_catches").await;
    let db = p.db().await;
    db.batch_execute(SEED).await.unwrap();
    p.wait_until_caught_up().await;
    p.assert_exact().await;
    let (code, out) = cli_verify(&p);
    assert_eq!(code, 0, "{out}");

    db.batch_execute(
        "DELETE FROM review_verdicts WHERE review_id = 1;
         UPDATE review_verdicts SET digest = repeat('0', 64) WHERE review_id = 2;
         UPDATE review_verdicts SET verdict = 'valid' WHERE review_id = 3;
         UPDATE review_verdicts SET model = 'heuristic-v0' WHERE review_id = 4;",
    )
    .await
    .unwrap();
    let report = verify(&db).await.unwrap();
    assert_eq!(
        of_reviews(&report.differences),
        BTreeSet::from([
            (1, Some(101), "verdict".to_string()),
            (2, Some(202), "digest".to_string()),
            (3, Some(202), "verdict".to_string()),
            (4, Some(303), "model".to_string()),
        ]),
        "{:#?}",
        report.differences
    );
    let flipped = report
        .differences
        .iter()
        .find(|d| d.review_id == Some(3))
        .unwrap();
    assert!(
        flipped.expected.starts_with("fraud") && flipped.actual.starts_with("valid"),
        "{flipped:?}"
    );
    // The truth trusts the verdict table: without its verdict review 1 leaves the truth of
    // course 101, and the spam review now counts in that of course 202; course_stats has
    // neither change, so those two courses' figures differ too, and only theirs.
    let figure_courses: BTreeSet<Option<i64>> = report
        .differences
        .iter()
        .filter(|d| d.review_id.is_none())
        .map(|d| d.course_id)
        .collect();
    assert_eq!(figure_courses, BTreeSet::from([Some(101), Some(202)]));
    let (code, out) = cli_verify(&p);
    assert_eq!(code, 1, "{out}");
    for needed in ["review        1", "review        3", "heuristic-v0"] {
        assert!(out.contains(needed), "the output names {needed:?}:\n{out}");
    }
}

/// Advances the slot to the current end of the WAL, as if what cdc has not read were lost.
async fn lose_the_slot_tail(p: &Pipeline, db: &tokio_postgres::Client) {
    let end: tokio_postgres::types::PgLsn = db
        .query_one("SELECT pg_current_wal_lsn()", &[])
        .await
        .unwrap()
        .get(0);
    common::eventually("the slot is advanced past the lost changes", 60, || async {
        // The walsender of the stopped cdc may hold the slot for a moment.
        db.query_one(
            "SELECT pg_replication_slot_advance($1, $2)",
            &[&p.slot(), &end],
        )
        .await
        .is_ok()
    })
    .await;
}

/// The newest verdict of a review, fraud or not.
async fn judged_fraud(db: &tokio_postgres::Client, id: i64) -> bool {
    db.query_one(
        "SELECT verdict = 'fraud' FROM review_verdicts WHERE review_id = $1
         ORDER BY version DESC, position DESC LIMIT 1",
        &[&id],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_delete_of_a_review_judged_fraud_fails_verify_naming_it() {
    let _serial = SERIAL.lock().await;
    let (p, cdc, _workers) = started("lost_delete").await;
    let db = p.db().await;
    db.batch_execute(SEED).await.unwrap();
    p.wait_until_caught_up().await;
    p.assert_exact().await;
    assert!(
        judged_fraud(&db, 3).await,
        "review 3 (a link) is judged fraud"
    );

    p.stop(cdc).await;
    // A fraud-judged review has no figure to move: only its verdict can tell it existed.
    db.batch_execute("DELETE FROM reviews WHERE id = 3")
        .await
        .unwrap();
    lose_the_slot_tail(&p, &db).await;
    let _cdc = p.spawn_cdc(None);
    db.batch_execute(
        "INSERT INTO reviews (id, course_id, user_id, rating, content, created_at)
             VALUES (5, 303, 5, 3.0, 'written after the loss, and seen', now())",
    )
    .await
    .unwrap();
    p.wait_until_caught_up().await;

    let report = verify(&p.db().await).await.unwrap();
    assert_eq!(
        of_reviews(&report.differences),
        BTreeSet::from([(3, Some(202), "delete".to_string())]),
        "{:#?}",
        report.differences
    );
    assert_eq!(
        report.differences.len(),
        1,
        "no figure moved: {:#?}",
        report.differences
    );
    assert!(
        report.differences[0]
            .actual
            .contains("the pipeline did not see the delete"),
        "{:?}",
        report.differences[0]
    );
    let (code, out) = cli_verify(&p);
    assert_eq!(code, 1, "the command fails on a lost delete:\n{out}");
    assert!(
        out.contains("review        3 course      202"),
        "the output names the review and its course:\n{out}"
    );

    // The fix verify's documentation names: a replay from a snapshot, which judges every row
    // that exists and so accounts for every review that does not.
    let mut replay = p.command("replay");
    replay.args(["--from", "snapshot"]);
    let out = tokio::task::spawn_blocking(move || replay.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "replay --from snapshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.wait_until_caught_up().await;
    p.assert_exact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seen_delete_id_change_and_truncate_of_fraud_reviews_leave_verify_exact() {
    let _serial = SERIAL.lock().await;
    let (p, _cdc, _workers) = started("seen_deletes").await;
    let db = p.db().await;
    db.batch_execute(SEED).await.unwrap();
    db.batch_execute(
        "INSERT INTO reviews (id, course_id, user_id, rating, content, created_at)
             VALUES (6, 404, 6, 5.0, 'buy now at http://spam.example.com', now())",
    )
    .await
    .unwrap();
    p.wait_until_caught_up().await;
    p.assert_exact().await;
    for id in [3, 6] {
        assert!(judged_fraud(&db, id).await, "review {id} is judged fraud");
    }

    // A delete, and an id change (the old id is gone as surely), both seen.
    db.batch_execute(
        "DELETE FROM reviews WHERE id = 3;
         UPDATE reviews SET id = 40 WHERE id = 4;",
    )
    .await
    .unwrap();
    p.wait_until_caught_up().await;
    let report = verify(&db).await.unwrap();
    assert!(report.differences.is_empty(), "{:#?}", report.differences);
    assert_eq!(
        report.gone, 2,
        "verify looked at reviews 3 and 4, which are gone"
    );
    p.assert_exact().await;

    // What made them pass: without the deletes recorded, verify names both.
    let deletions = db
        .query(
            "SELECT review_id, course_id FROM review_deletions ORDER BY review_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, Option<i64>>(1)))
        .collect::<Vec<_>>();
    assert_eq!(deletions, [(3, Some(202)), (4, Some(303))]);

    db.batch_execute("TRUNCATE reviews").await.unwrap();
    p.wait_until_caught_up().await;
    let report = verify(&db).await.unwrap();
    assert!(report.differences.is_empty(), "{:#?}", report.differences);
    assert_eq!(report.reviews, 0);
    assert_eq!(report.gone, 6, "reviews 1, 2, 3, 4, 40 and 6 are gone");
    // Review 6 (fraud) has no delete of its own: the TRUNCATE recorded is what covers it.
    let before: String = db
        .query_one("SELECT deleted_before_lsn::text FROM verdicts_state", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(before, "0/0", "the TRUNCATE reached verdicts_state");
    db.batch_execute(
        "UPDATE verdicts_state SET deleted_before_lsn = '0/0', deleted_before_position = 0",
    )
    .await
    .unwrap();
    let report = verify(&db).await.unwrap();
    let named: BTreeSet<i64> = report
        .differences
        .iter()
        .filter(|d| d.figure == "delete")
        .filter_map(|d| d.review_id)
        .collect();
    assert_eq!(
        named,
        BTreeSet::from([1, 2, 6, 40]),
        "without the TRUNCATE, the deletes it stood for are lost: {:#?}",
        report.differences
    );
}

/// Every CHECK and NOT NULL of `reviews` but the key's.
const DROP_CONSTRAINTS: &str = "
DO $$
DECLARE c text;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'reviews'::regclass AND contype = 'c' LOOP
        EXECUTE format('ALTER TABLE reviews DROP CONSTRAINT %I', c);
    END LOOP;
END $$;
ALTER TABLE reviews ALTER COLUMN course_id DROP NOT NULL, ALTER COLUMN user_id DROP NOT NULL,
    ALTER COLUMN rating DROP NOT NULL, ALTER COLUMN created_at DROP NOT NULL,
    ALTER COLUMN updated_at DROP NOT NULL";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_cannot_count_are_judged_fraud_with_their_rules_and_reach_no_figure() {
    let _serial = SERIAL.lock().await;
    let p = Pipeline::new("cannot_count").await;
    let db = p.db().await;
    db.batch_execute(DROP_CONSTRAINTS).await.unwrap();
    let cdc = p.spawn_cdc(None);
    p.wait_for_snapshot().await;
    let _workers = spawn_workers(&p);
    let honest = "'a clear and patient course, well paced'";
    // (id, course_id, rating, created_at, the rules it breaks)
    let rows: &[(i64, &str, &str, &str, &[&str])] = &[
        (11, "NULL", "4.0", "now()", &["no_course"]),
        (12, "7", "'NaN'", "now()", &["rating_off_scale"]),
        (13, "7", "0.0", "now()", &["rating_off_scale"]),
        (14, "7", "7.5", "now()", &["rating_off_scale"]),
        (15, "7", "NULL", "now()", &["rating_off_scale"]),
        (16, "7", "4.0", "'-infinity'", &["created_at_out_of_range"]),
        (17, "7", "4.0", "'infinity'", &["created_at_out_of_range"]),
        (
            18,
            "7",
            "4.0",
            "'0001-01-01 00:00:00+00 BC'",
            &["created_at_out_of_range"],
        ),
        (19, "7", "4.0", "NULL", &["created_at_out_of_range"]),
        (
            20,
            "NULL",
            "'NaN'",
            "'-infinity'",
            &["no_course", "rating_off_scale", "created_at_out_of_range"],
        ),
    ];
    for (id, course, rating, created_at, _) in rows {
        db.batch_execute(&format!(
            "INSERT INTO reviews (id, course_id, user_id, rating, content, created_at)
             VALUES ({id}, {course}, NULL, {rating}, {honest}, {created_at})"
        ))
        .await
        .unwrap();
    }
    // A review that counted, then lost its course: it must leave course 8's figures.
    db.batch_execute(&format!(
        "INSERT INTO reviews (id, course_id, user_id, rating, content, created_at)
             VALUES (21, 8, 1, 3.5, {honest}, now());
         INSERT INTO reviews (id, course_id, user_id, rating, content, created_at)
             VALUES (22, 9, NULL, 4.5, {honest}, now());"
    ))
    .await
    .unwrap();
    p.wait_until_caught_up().await;
    db.batch_execute("UPDATE reviews SET course_id = NULL WHERE id = 21")
        .await
        .unwrap();
    // The canary: a plain review after all of them still reaches course_stats.
    db.batch_execute(&format!(
        "INSERT INTO reviews (id, course_id, user_id, rating, content, created_at)
             VALUES (99, 9, 2, 4.0, {honest}, now())"
    ))
    .await
    .unwrap();
    p.wait_until_caught_up().await;

    for (id, _, _, _, rules) in
        rows.iter()
            .copied()
            .chain([(21, "NULL", "3.5", "now()", ["no_course"].as_slice())])
    {
        let newest = db
            .query_one(
                "SELECT verdict, score, reasons FROM review_verdicts WHERE review_id = $1
                 ORDER BY version DESC, position DESC LIMIT 1",
                &[&id],
            )
            .await
            .unwrap_or_else(|e| panic!("review {id} has a verdict: {e}"));
        let (verdict, score, reasons): (String, f64, Vec<String>) =
            (newest.get(0), newest.get(1), newest.get(2));
        assert_eq!(
            (verdict.as_str(), score, reasons.as_slice()),
            (
                "fraud",
                1.0,
                rules
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .as_slice()
            ),
            "review {id}"
        );
    }
    let figures: Vec<(i64, i64)> = db
        .query(
            "SELECT course_id, review_count FROM course_stats WHERE review_count > 0 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        figures,
        [(9, 2)],
        "only the countable reviews (22, a NULL user_id, and the canary) count"
    );
    p.assert_exact().await;
    let dead = p.output("dead-letters");
    let letters = if common::topic_exists(&p.settings.kafka, &dead).await {
        common::consume_all(&p.settings.kafka, &dead).await.len()
    } else {
        0
    };
    assert_eq!(letters, 0, "no row of reviews became a dead letter");
    // And cdc is still the one that started: no value stopped it.
    let mut cdc = cdc.take();
    assert!(cdc.try_wait().unwrap().is_none(), "cdc is still running");
    let _ = cdc.kill();
    let _ = cdc.wait();
    tokio::time::sleep(Duration::from_millis(10)).await;
}
