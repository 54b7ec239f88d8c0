//! A writer of course moves, shared by the tests of per-course order (course_moves,
//! partitions_added).

use std::time::Duration;

use super::pipeline::Pipeline;

/// One writer: transactions of inserts into `courses` and moves of its own reviews between
/// them (some in the transaction that inserts the review, some with a rating change, some
/// of a review judged fraud).
pub async fn mover(p: &Pipeline, seed: u64, ids: std::ops::Range<i64>, courses: Vec<i64>) {
    let db = p.db().await;
    let mut rng = super::Rng(seed);
    let mut next = ids.start;
    let course = |rng: &mut super::Rng| courses[rng.next(courses.len() as u64) as usize];
    while next < ids.end {
        let mut sql = Vec::new();
        for _ in 0..1 + rng.next(3) {
            let c = course(&mut rng);
            let content = if rng.next(8) == 0 {
                "cheaper at http://spam.example.com"
            } else {
                "honest"
            };
            sql.push(format!(
                "INSERT INTO reviews (id, course_id, user_id, rating, content, created_at)
                 VALUES ({next}, {c}, {next}, {}, '{content} {next}', now() - interval '{} days')",
                (1 + rng.next(10)) as f64 / 2.0,
                [0, 2, 30, 89][rng.next(4) as usize]
            ));
            if rng.next(3) == 0 {
                sql.push(format!(
                    "UPDATE reviews SET course_id = {} WHERE id = {next}",
                    course(&mut rng)
                ));
            }
            next += 1;
        }
        for _ in 0..1 + rng.next(3) {
            let id = ids.start + rng.next((next - ids.start) as u64) as i64;
            let c = course(&mut rng);
            sql.push(match rng.next(20) {
                // A new id as well: the old review ends (its delete is recorded), so later
                // moves of the old id find no row.
                0 => {
                    format!("UPDATE reviews SET id = id + 100000, course_id = {c} WHERE id = {id}")
                }
                1..=6 => format!(
                    "UPDATE reviews SET course_id = {c}, rating = {} WHERE id = {id}",
                    (1 + rng.next(10)) as f64 / 2.0
                ),
                _ => format!("UPDATE reviews SET course_id = {c} WHERE id = {id}"),
            });
        }
        db.batch_execute(&format!("BEGIN; {}; COMMIT", sql.join("; ")))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
