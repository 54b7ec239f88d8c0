//! `verify`'s check of the figures against hand-made tables: a course_stats that matches the
//! truth passes, and each kind of drift is reported as the figure that drifted. (Its check of
//! the rows runs on real pipelines: tests/lost_change.rs.)

mod common;

use reviewflow::tools::verify::figures;

const SETUP: &str = "
INSERT INTO reviews (id, course_id, user_id, rating, created_at) VALUES
  (1, 10, 1, 4.5, now() - interval '1 day'),
  (2, 10, 2, 0.5, now() - interval '400 days'),
  (3, 10, 3, 5.0, now() - interval '2 days'),     -- judged fraud: not counted
  (4, 20, 4, 1.5, date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '89 days'),
  (5, 20, 5, 3.0, date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '90 days');
INSERT INTO review_verdicts (review_id, version, verdict, score, model) VALUES
  (1, '0/10', 'valid', 0.1, 'm'), (2, '0/10', 'valid', 0, 'm'),
  (3, '0/10', 'valid', 0, 'm'), (3, '0/20', 'fraud', 0.9, 'm'),   -- the newest version decides
  (4, '0/10', 'valid', 0, 'm'), (5, '0/10', 'valid', 0, 'm');
INSERT INTO course_stats (course_id, review_count, rating_sum, stars_0, stars_4, last_review_at,
                          recent_review_count, recent_rating_sum, recent_stars_4)
  SELECT 10, 2, 5.0, 1, 1, created_at, 1, 4.5, 1 FROM reviews WHERE id = 1;
INSERT INTO course_stats (course_id, review_count, rating_sum, stars_1, stars_3, last_review_at,
                          recent_review_count, recent_rating_sum, recent_stars_1)
  SELECT 20, 2, 4.5, 1, 1, max(created_at), 1, 1.5, 1 FROM reviews WHERE course_id = 20;
INSERT INTO course_stats (course_id) VALUES (30);   -- a course whose reviews all went: zeros
";

#[tokio::test]
async fn verify_reports_exactly_the_figures_that_drifted() {
    let url = common::fresh_database("verify").await;
    let db = reviewflow::db::connect(&url).await.unwrap();
    db.batch_execute(SETUP).await.unwrap();

    let report = figures(&db).await.unwrap();
    assert_eq!(report.courses, 3);
    assert!(report.differences.is_empty(), "{:#?}", report.differences);

    db.batch_execute(
        "UPDATE course_stats SET recent_stars_4 = 0, recent_stars_5 = 1 WHERE course_id = 10;
         INSERT INTO course_stats (course_id, review_count, rating_sum, stars_2) VALUES (40, 1, 2.0, 1);",
    )
    .await
    .unwrap();
    let report = figures(&db).await.unwrap();
    let got: Vec<(Option<i64>, &str, &str, &str)> = report
        .differences
        .iter()
        .map(|d| {
            assert_eq!(d.review_id, None, "a figure names no review");
            (
                d.course_id,
                d.figure.as_str(),
                d.expected.as_str(),
                d.actual.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (Some(10), "recent_stars_4", "1", "0"),
            (Some(10), "recent_stars_5", "0", "1"),
            (Some(40), "rating_avg", "null", "2.0000"),
            (Some(40), "rating_sum", "0", "2.0"),
            (Some(40), "review_count", "0", "1"),
            (Some(40), "stars_2", "0", "1"),
        ]
    );
}
